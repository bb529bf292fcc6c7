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

// f32 -> bf16 bits, round to nearest even; NaN keeps its sign and becomes quiet
// (the same bits as lib/dtype.ts f32ToBf16Bits).
inline uint16_t F32ToBf16Bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);  // no overflow: u <= 0xff800000
}

// f32 -> IEEE binary16 bits, round to nearest even, subnormals, overflow to
// Inf, NaN quiet with the top payload bits (the same bits as lib/dtype.ts
// f32ToF16Bits).
inline uint16_t F32ToF16Bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((u >> 23) & 0xffu);
  uint32_t mant = u & 0x7fffffu;
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0u));
  const int32_t e = exp - 127 + 15;
  if (e >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    const uint32_t shift = static_cast<uint32_t>(14 - e);
    const uint32_t halfway = 1u << (shift - 1);
    const uint32_t rem = mant & ((1u << shift) - 1u);
    uint32_t h = mant >> shift;
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;  // may round into the smallest normal: correct
    return static_cast<uint16_t>(sign | h);
  }
  const uint32_t rem = mant & 0x1fffu;
  uint32_t h = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent, up to Inf: correct
  return static_cast<uint16_t>(sign | h);
}

// Writes n floats to element offset `off` of a contiguous kBF16/kF16/kF32 array.
inline void StoreRow(void* dst, DType dt, int64_t off, const float* src, int64_t n) {
  switch (dt) {
    case kBF16: {
      uint16_t* p = static_cast<uint16_t*>(dst) + off;
      for (int64_t i = 0; i < n; ++i) p[i] = F32ToBf16Bits(src[i]);
      break;
    }
    case kF16: {
      uint16_t* p = static_cast<uint16_t*>(dst) + off;
      for (int64_t i = 0; i < n; ++i) p[i] = F32ToF16Bits(src[i]);
      break;
    }
    default: std::memcpy(static_cast<float*>(dst) + off, src, size_t(n) * sizeof(float)); break;
  }
}

// True once the optional stop flag was set by another thread. A relaxed load is
// enough: the flag only ever goes 0 -> 1 and guards no other data.
inline bool StopRequested(const int32_t* flag) { return flag && __atomic_load_n(flag, __ATOMIC_RELAXED) != 0; }

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
// scanBlockMask = false skips the O(blocks) walk over the block mask's index
// arrays (the binding runs that part in the worker, off the main thread).
void ValidateAttentionArgs(const CpuAttentionArgs& args, bool scanBlockMask = true);

}  // namespace flexattn::cpu
