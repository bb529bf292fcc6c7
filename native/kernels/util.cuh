// Utility kernels: random normal fill and strided dtype cast. Compiled by nvcc
// (precompiled.cu) and by NVRTC (module "util": `#include "util.cuh"`).
#pragma once
#ifndef FLEXATTN_UTIL_CUH
#define FLEXATTN_UTIL_CUH

#include "common.cuh"

// ---- Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3")
struct fa_philox4 {
  fa_u32 x, y, z, w;
};

FA_DEVICE fa_philox4 fa_philox4x32_10(fa_philox4 c, fa_u32 k0, fa_u32 k1) {
  const fa_u32 M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  const fa_u32 W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma unroll
  for (int r = 0; r < 10; r++) {
    fa_u32 hi0 = __umulhi(M0, c.x), lo0 = M0 * c.x;
    fa_u32 hi1 = __umulhi(M1, c.z), lo1 = M1 * c.z;
    fa_philox4 n;
    n.x = hi1 ^ c.y ^ k0;
    n.y = lo1;
    n.z = hi0 ^ c.w ^ k1;
    n.w = lo0;
    c = n;
    k0 += W0;
    k1 += W1;
  }
  return c;
}

// Uniform in (0, 1] from the top 24 bits (never 0, so log() is finite).
FA_DEVICE float fa_uniform_pos(fa_u32 x) { return (float)((x >> 8) + 1u) * (1.0f / 16777216.0f); }
// Uniform in [0, 1).
FA_DEVICE float fa_uniform(fa_u32 x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

// Box-Muller: two independent N(0, 1) samples from two uniforms.
FA_DEVICE void fa_box_muller(fa_u32 a, fa_u32 b, float& z0, float& z1) {
  float u1 = fa_uniform_pos(a);
  float u2 = fa_uniform(b);
  float r = sqrtf(-2.0f * logf(u1));
  float s, c;
  sincospif(2.0f * u2, &s, &c);
  z0 = r * c;
  z1 = r * s;
}

struct alignas(16) fa_f32x4 {
  float x, y, z, w;
};

// dst[i] ~ N(0, 1) for i in [0, n), written as dtype (bf16/f16/f32).
// Element 4g+j comes from Philox block g: counter (g, subsequence), key seed,
// so the values do not depend on the launch configuration.
extern "C" __global__ void flexattn_randn(void* dst, fa_i64 n, int dtype, fa_u64 seed, fa_u64 subsequence) {
  const fa_u32 k0 = (fa_u32)seed, k1 = (fa_u32)(seed >> 32);
  const fa_i64 groups = (n + 3) / 4;
  for (fa_i64 g = (fa_i64)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += (fa_i64)gridDim.x * blockDim.x) {
    fa_philox4 c;
    c.x = (fa_u32)g;
    c.y = (fa_u32)((fa_u64)g >> 32);
    c.z = (fa_u32)subsequence;
    c.w = (fa_u32)(subsequence >> 32);
    fa_philox4 r = fa_philox4x32_10(c, k0, k1);
    float v[4];
    fa_box_muller(r.x, r.y, v[0], v[1]);
    fa_box_muller(r.z, r.w, v[2], v[3]);
    const fa_i64 base = g * 4;
    if (base + 3 < n && dtype == FA_DTYPE_F32 && ((((fa_u64)dst) + base * 4) & 15) == 0) {
      fa_f32x4 q;
      q.x = v[0]; q.y = v[1]; q.z = v[2]; q.w = v[3];
      *(fa_f32x4*)((float*)dst + base) = q;
    } else {
#pragma unroll
      for (int j = 0; j < 4; j++) {
        if (base + j < n) fa_store_f32(dst, base + j, dtype, v[j]);
      }
    }
  }
}

// ---- strided cast ----------------------------------------------------------------
// The parameter block is described in native/kernels/interface/cast_params.json;
// the host (native/addon/tensor_kernels.cc) fills the same generated struct.
#include "generated/cast_params.cuh"

// dst[i] = cast(src[multi-index of i in row-major order over shape]).
extern "C" __global__ void flexattn_cast_strided(::flexattn::CastParams p) {
  const void* src = (const void*)p.src;
  void* dst = (void*)p.dst;
  const int ssz = fa_dtype_size(p.srcDtype);
  const bool same = p.srcDtype == p.dstDtype;
  for (fa_i64 i = (fa_i64)blockIdx.x * blockDim.x + threadIdx.x; i < p.numel; i += (fa_i64)gridDim.x * blockDim.x) {
    fa_i64 rem = i, off = 0;
    for (int d = p.rank - 1; d >= 0; d--) {
      fa_i64 s = p.shape[d];
      fa_i64 idx = rem % s;
      rem /= s;
      off += idx * p.strides[d];
    }
    if (same) {
      // Bit-exact copy (i32 stays exact, NaN payloads preserved).
      if (ssz == 4) ((fa_u32*)dst)[i] = ((const fa_u32*)src)[off];
      else if (ssz == 2) ((fa_u16*)dst)[i] = ((const fa_u16*)src)[off];
      else ((fa_u8*)dst)[i] = ((const fa_u8*)src)[off] ? 1 : 0;
    } else if (p.srcDtype == FA_DTYPE_I32 && p.dstDtype == FA_DTYPE_BOOL) {
      ((fa_u8*)dst)[i] = ((const fa_i32*)src)[off] != 0 ? 1 : 0;
    } else {
      fa_store_f32(dst, i, p.dstDtype, fa_load_f32(src, off, p.srcDtype));
    }
  }
}

#endif  // FLEXATTN_UTIL_CUH
