// CPU reference attention (the oracle for GPU tests and the fallback backend).
// fp32 math for every input dtype; multi-threaded over (batch, head, q-row
// blocks). Dense SDPA semantics, plus optional flex hooks (score_mod /
// mask_mod evaluated by the mod VM, block-sparse iteration from a BlockMask).
#pragma once
#include <cstdint>
#include <exception>
#include <functional>
#include <vector>

namespace flexattn::cpu {

enum DType : int { kBF16 = 0, kF16 = 1, kF32 = 2, kI32 = 3, kBool = 4 };

// A strided view of host memory (element strides; 0 = broadcast).
struct HostView {
  const void* data = nullptr;
  DType dtype = kF32;
  int rank = 0;
  int64_t shape[8] = {0};
  int64_t strides[8] = {0};
  // Reads element at the given multi-index as float (or double for i32).
  double At(const int64_t* idx) const;
};

// Block-sparse structure in PyTorch's BlockMask layout (q-side arrays only;
// B/H dims are 1 when broadcast).
struct CpuBlockMask {
  int B = 1, H = 1, numQBlocks = 0, numKvBlocks = 0;
  int qBlock = 128, kvBlock = 128;
  const int32_t* kvNumBlocks = nullptr;      // [B,H,QB]
  const int32_t* kvIndices = nullptr;        // [B,H,QB,KVB]
  const int32_t* fullKvNumBlocks = nullptr;  // [B,H,QB] or null
  const int32_t* fullKvIndices = nullptr;    // [B,H,QB,KVB] or null
};

// score_mod(score, b, h, q, kv) -> score ; mask_mod(b, h, q, kv) -> keep.
// Must be thread-safe (called concurrently from worker threads).
using ScoreModFn = std::function<float(float, int, int, int, int)>;
using MaskModFn = std::function<bool(int, int, int, int)>;

struct CpuAttentionArgs {
  HostView q, k, v;          // [B,Hq,Sq,D], [B,Hkv,Skv,D], [B,Hkv,Skv,Dv]
  float scale = 1.0f;
  bool isCausal = false;     // top-left aligned, like PyTorch SDPA
  bool hasMask = false;      // dense attn mask, broadcastable to [B,Hq,Sq,Skv]
  HostView mask;             // kBool: true = keep; float: additive
  ScoreModFn scoreMod;       // optional
  MaskModFn maskMod;         // optional (applied in partial blocks, or everywhere without a block mask)
  const CpuBlockMask* blockMask = nullptr;  // optional
  // Outputs (contiguous): out [B,Hq,Sq,Dv] in outDtype, lse [B,Hq,Sq] f32 natural log.
  // bf16/f16 outputs are the f32 results rounded to nearest even (NaN stays
  // NaN), bit for bit what lib/dtype.ts's f32ToBf16Bits / f32ToF16Bits give,
  // so the caller needs no conversion pass of its own.
  void* out = nullptr;
  DType outDtype = kF32;     // kBF16, kF16 or kF32
  float* lse = nullptr;      // optional
  int numThreads = 0;        // 0 = hardware concurrency
  // Optional stop flag, set (nonzero) by another thread: the job then throws
  // Cancelled at its next chunk; out and lse are left partly written.
  const int32_t* cancel = nullptr;
};

// Thrown by Attention() when args.cancel was set before the job finished.
struct Cancelled : std::exception {
  const char* what() const noexcept override { return "cpu attention cancelled"; }
};

// Fully masked rows give out = 0 and lse = -inf (PyTorch flex semantics and
// SDPA's safe softmax). Throws std::invalid_argument on inconsistent args,
// Cancelled when stopped through args.cancel.
void Attention(const CpuAttentionArgs& args);

}  // namespace flexattn::cpu
