// CPU reference backward pass of attention (dense SDPA and flex): dq, dk, dv
// and the gradients of captured tensors of score_mod, from q, k, v, the
// forward's out and LSE, and dOut. The same kept-position rules as the forward
// (attention.h); fp32 inputs of any float dtype, fp64 accumulation.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "cpu/attention.h"

namespace flexattn::cpu {

// The gradient of one captured tensor (flattened, contiguous): for every kept
// (b, h, q, kv) and each site s, grad[index_s(...)] += dS * weight_s(...), where
// dS is the gradient with respect to score_mod's result. index_s returns the
// clamped flat element index as a float (exact: numel <= 2^24).
struct CapturedGradArgs {
  int64_t numel = 0;
  DType dtype = kF32;  // of the gradient written (the captured tensor's dtype)
  void* out = nullptr;  // numel elements of dtype, contiguous
  struct Site {
    ScoreModFn index;
    ScoreModFn weight;
  };
  std::vector<Site> sites;
};

struct CpuBackwardArgs {
  HostView q, k, v;   // [B,Hq,Sq,D], [B,Hkv,Skv,D], [B,Hkv,Skv,Dv]
  HostView out, dOut; // [B,Hq,Sq,Dv], q's dtype
  HostView lse;       // [B,Hq,Sq] f32, natural log (the forward's)
  float scale = 1.0f;
  bool isCausal = false;
  bool hasMask = false;
  HostView mask;      // rank 4, shape [B,Hq,Sq,Skv] (stride 0 = broadcast); bool keep or float additive
  ScoreModFn scoreMod;   // optional
  ScoreModFn scoreGrad;  // d score_mod / d score; required with scoreMod
  MaskModFn maskMod;     // optional (partial blocks, or everywhere without a block mask)
  const CpuBlockMask* blockMask = nullptr;
  // Outputs (contiguous, gradDtype): dq [B,Hq,Sq,D], dk [B,Hkv,Skv,D], dv [B,Hkv,Skv,Dv].
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  DType gradDtype = kF32;
  std::vector<CapturedGradArgs> captured;
  int numThreads = 0;
  const int32_t* cancel = nullptr;  // as CpuAttentionArgs::cancel
};

// Checks everything AttentionBackward relies on; throws ArgError naming the
// argument. scanBlockMask as for ValidateAttentionArgs.
void ValidateBackwardArgs(const CpuBackwardArgs& args, bool scanBlockMask = true);

// Bit-identical results for any thread count and run after run. A row with
// LSE -inf (fully masked) gets zero gradients and contributes none; masked
// positions (and scores of -inf) contribute nothing and their v is not read;
// NaN in the inputs propagates as the math gives it. Throws Cancelled when
// stopped through args.cancel (outputs then partly written).
void AttentionBackward(const CpuBackwardArgs& args);

}  // namespace flexattn::cpu
