// Internals of the CPU reference backend shared by attention.cc, host_view.cc
// and register.cc (not part of the public C++ contract in attention.h).
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cpu/attention.h"

namespace flexattn::cpu {

// std::invalid_argument that remembers which argument was wrong, so the
// binding can build InvalidArgumentError(argument, expected, received).
struct ArgError : std::invalid_argument {
  std::string argument, expected, received;
  ArgError(const std::string& arg, const std::string& exp, const std::string& rec = "")
      : std::invalid_argument(arg + ": expected " + exp + (rec.empty() ? "" : ", got " + rec)),
        argument(arg), expected(exp), received(rec) {}
};

// Exact bf16 -> f32 (bf16 is the top half of an f32: NaN/Inf/subnormals map exactly).
inline float Bf16ToF32(uint16_t bits) {
  uint32_t u = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Exact IEEE binary16 -> f32, including subnormals, infinities and NaN payloads.
inline float F16ToF32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);  // Inf (man == 0) or NaN (payload kept)
  } else if (exp == 0) {
    if (man == 0) {
      u = sign;  // +-0
    } else {
      float f = float(man) * 5.9604644775390625e-8f;  // man * 2^-24, exact
      std::memcpy(&u, &f, 4);
      u |= sign;
    }
  } else {
    u = sign | ((exp + 112u) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Bytes per element of a dtype (0 for an unknown code).
int DTypeSize(int dtype);
// "bf16", "f16", "f32", "i32", "bool" or "dtype code N".
std::string DTypeName(int dtype);
// "[2, 8, 77, 64]".
std::string ShapeString(const HostView& v);

// Element at element offset `off` of data with dtype dt, as float (bool: 0/1).
inline float ReadFloat(const void* data, DType dt, int64_t off) {
  switch (dt) {
    case kBF16: return Bf16ToF32(static_cast<const uint16_t*>(data)[off]);
    case kF16: return F16ToF32(static_cast<const uint16_t*>(data)[off]);
    case kF32: return static_cast<const float*>(data)[off];
    case kI32: return static_cast<float>(static_cast<const int32_t*>(data)[off]);
    case kBool: return static_cast<const uint8_t*>(data)[off] ? 1.0f : 0.0f;
  }
  return 0.0f;
}

// dst[i] = view element at (base + i * stride) as float, for i in [0, n).
void LoadRow(const HostView& v, int64_t base, int64_t stride, int64_t n, float* dst);

// Lowest and highest element offsets touched by a view (0, -1 when empty).
void OffsetRange(const HostView& v, int64_t* lo, int64_t* hi);

// Threads used when numThreads is 0: CPUs this process may run on
// (sched_getaffinity), else std::thread::hardware_concurrency(), at least 1.
int DefaultThreads();

// Checks everything Attention() relies on; throws ArgError naming the argument.
void ValidateAttentionArgs(const CpuAttentionArgs& args);

}  // namespace flexattn::cpu
