// Bytecode VM for traced score_mod / mask_mod programs (the CPU reference
// backend's way of running user mods). Programs come from lib/mods/bytecode.ts
// (`encodeProgram`), i.e. a NativeModProgram JS object:
//   { code: Int32Array, consts: Float64Array, params: Float64Array,
//     tensors: [{ data: TypedArray, dtype (bf16=0,f16=1,f32=2,i32=3,bool=4),
//                 shape: number[], strides: number[] (elements) }] }
// Semantics match the JS interpreter (lib/mods/interpret.ts): f32 float ops
// (computed in double and rounded to float after every op), int32 wrapping int
// ops, Python floor semantics for floorDiv/mod (x//0 = x%0 = 0), float->int
// truncating/saturating with NaN -> 0. Captured-tensor indices are clamped per
// dimension to [0, size-1]; a tensor with a zero-sized dimension reads as 0.
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace flexattn::cpu {

class ModVm {
 public:
  // Parses a NativeModProgram JS object. Copies code/consts/params and the
  // captured tensors' data (so the JS objects need not outlive it). Validates
  // every register/slot/const/param reference and tensor extent. Throws
  // Napi::Error on malformed input.
  static std::shared_ptr<const ModVm> FromJs(const Napi::Object& program);

  // score_mod(score, b, h, q, kv). Thread-safe. For a mask program returns score.
  float Score(float score, int b, int h, int q, int kv) const;
  // mask_mod(b, h, q, kv). Thread-safe. For a score program returns true.
  bool Mask(int b, int h, int q, int kv) const;

  bool IsMask() const { return kind_ == 1; }

  struct Tensor {
    int dtype = 2;
    int rank = 0;
    bool empty = false;
    int64_t shape[8] = {0};
    int64_t strides[8] = {0};
    std::vector<uint8_t> bytes;
  };

 private:
  ModVm() = default;
  union Cell { float f; int32_t i; };
  void Run(Cell* regs) const;

  int kind_ = 0;
  int numRegs_ = 0;
  int retReg_ = 0;
  std::vector<int32_t> code_;  // instruction words only
  std::vector<double> consts_;
  std::vector<double> params_;
  std::vector<Tensor> tensors_;
};

}  // namespace flexattn::cpu
