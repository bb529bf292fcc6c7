// Shared device helpers for flexattn kernels. Self-contained: no toolkit
// header is included, so NVRTC compiles it with no include path (only the
// driver and libnvrtc are needed at run time), and nvcc compiles the same
// text for the precompiled fatbin. Requires sm_80+ (bf16 conversions).
#pragma once

#ifndef FLEXATTN_COMMON_CUH
#define FLEXATTN_COMMON_CUH

#define FA_DEVICE __device__ __forceinline__

// Fixed-width integer types (no <cstdint> under NVRTC).
typedef unsigned char fa_u8;
typedef unsigned short fa_u16;
typedef int fa_i32;
typedef unsigned int fa_u32;
typedef long long fa_i64;
typedef unsigned long long fa_u64;

// Storage types: raw bits, converted with the helpers below.
typedef unsigned short bf16_t;  // bfloat16 bits
typedef unsigned short f16_t;   // IEEE half bits
typedef unsigned int bf16x2_t;  // two bf16: low half = first element
typedef unsigned int f16x2_t;

// Dtype codes shared with the host (lib/native.ts DTYPE_CODE).
#define FA_DTYPE_BF16 0
#define FA_DTYPE_F16 1
#define FA_DTYPE_F32 2
#define FA_DTYPE_I32 3
#define FA_DTYPE_BOOL 4

// ---- scalar conversions ------------------------------------------------------
FA_DEVICE float bf16_to_f32(bf16_t h) { return __uint_as_float(((fa_u32)h) << 16); }

FA_DEVICE bf16_t f32_to_bf16(float f) {  // round to nearest even, NaN preserved
  fa_u16 r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return r;
}

FA_DEVICE float f16_to_f32(f16_t h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

FA_DEVICE f16_t f32_to_f16(float f) {  // round to nearest even
  fa_u16 r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return r;
}

// ---- packed conversions (two values per 32-bit register) -----------------------
// lo goes to bits [0,16), hi to bits [16,32) (memory order lo, hi).
FA_DEVICE bf16x2_t f32x2_to_bf16x2(float lo, float hi) {
  fa_u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

FA_DEVICE f16x2_t f32x2_to_f16x2(float lo, float hi) {
  fa_u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

FA_DEVICE void bf16x2_to_f32x2(bf16x2_t v, float& lo, float& hi) {
  lo = __uint_as_float(v << 16);
  hi = __uint_as_float(v & 0xffff0000u);
}

FA_DEVICE void f16x2_to_f32x2(f16x2_t v, float& lo, float& hi) {
  lo = f16_to_f32((f16_t)(v & 0xffffu));
  hi = f16_to_f32((f16_t)(v >> 16));
}

// ---- fast math helpers -------------------------------------------------------------
FA_DEVICE float fa_exp2(float x) {  // ex2.approx: the softmax workhorse
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

FA_DEVICE float fa_rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// ---- generic load/store by dtype code (for utility kernels) -------------------------
FA_DEVICE float fa_load_f32(const void* base, fa_i64 i, int dtype) {
  switch (dtype) {
    case FA_DTYPE_BF16: return bf16_to_f32(((const bf16_t*)base)[i]);
    case FA_DTYPE_F16: return f16_to_f32(((const f16_t*)base)[i]);
    case FA_DTYPE_F32: return ((const float*)base)[i];
    case FA_DTYPE_I32: return (float)((const fa_i32*)base)[i];
    default: return ((const fa_u8*)base)[i] ? 1.0f : 0.0f;
  }
}

FA_DEVICE void fa_store_f32(void* base, fa_i64 i, int dtype, float v) {
  switch (dtype) {
    case FA_DTYPE_BF16: ((bf16_t*)base)[i] = f32_to_bf16(v); break;
    case FA_DTYPE_F16: ((f16_t*)base)[i] = f32_to_f16(v); break;
    case FA_DTYPE_F32: ((float*)base)[i] = v; break;
    case FA_DTYPE_I32: ((fa_i32*)base)[i] = (v != v) ? 0 : (fa_i32)v; break;  // truncation, NaN -> 0
    default: ((fa_u8*)base)[i] = (v != 0.0f) ? 1 : 0; break;
  }
}

FA_DEVICE int fa_dtype_size(int dtype) {
  return dtype == FA_DTYPE_BOOL ? 1 : (dtype == FA_DTYPE_F32 || dtype == FA_DTYPE_I32) ? 4 : 2;
}

#endif  // FLEXATTN_COMMON_CUH
