// Document-causal mask as the code generator emits it (lib/mods/codegen-cuda.ts, documentMask(ids)),
// for an A/B against flex_doc.cu's hand-written mask (kernel-notes run 13).
// flexattn generated mods
// mask: ((t0[b, q] == t0[b, kv]) && (kv <= q))
#ifndef FLEX_MOD_HELPERS_DEFINED
#define FLEX_MOD_HELPERS_DEFINED
__device__ __forceinline__ float flex_bits2f(unsigned u) { float y; asm("mov.b32 %0, %1;" : "=f"(y) : "r"(u)); return y; }
__device__ __forceinline__ float flex_ex2(float x) { float y; asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float flex_lg2(float x) { float y; asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float flex_tanh(float x) { float y; asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float flex_sqrt(float x) { float y; asm("sqrt.rn.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float flex_floor(float x) { float y; asm("cvt.rmi.f32.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float flex_fabs(float x) { float y; asm("abs.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float flex_fmin(float a, float b) { float y; asm("min.NaN.f32 %0, %1, %2;" : "=f"(y) : "f"(a), "f"(b)); return y; }
__device__ __forceinline__ float flex_fmax(float a, float b) { float y; asm("max.NaN.f32 %0, %1, %2;" : "=f"(y) : "f"(a), "f"(b)); return y; }
__device__ __forceinline__ int flex_f2i(float x) { int y; asm("cvt.rzi.s32.f32 %0, %1;" : "=r"(y) : "f"(x)); return y; }
__device__ __forceinline__ float flex_exp(float x) { return flex_ex2(x * 1.44269504088896341f); }
__device__ __forceinline__ float flex_log(float x) { return flex_lg2(x) * 0.693147180559945309f; }
__device__ __forceinline__ float flex_sigmoid(float x) { return 1.0f / (1.0f + flex_exp(-x)); }
__device__ __forceinline__ float flex_ffloordiv(float a, float b) { return flex_floor(a / b); }
__device__ __forceinline__ float flex_fmod(float a, float b) { return a - b * flex_floor(a / b); }
__device__ __forceinline__ float flex_bf16(unsigned short s) { return flex_bits2f(((unsigned)s) << 16); }
__device__ __forceinline__ float flex_f16(unsigned short s) { float y; asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(y) : "h"(s)); return y; }
__device__ __forceinline__ int flex_iadd(int a, int b) { return (int)((unsigned)a + (unsigned)b); }
__device__ __forceinline__ int flex_isub(int a, int b) { return (int)((unsigned)a - (unsigned)b); }
__device__ __forceinline__ int flex_imul(int a, int b) { return (int)((unsigned)a * (unsigned)b); }
__device__ __forceinline__ int flex_ineg(int a) { return (int)(0u - (unsigned)a); }
__device__ __forceinline__ int flex_iabs(int a) { return a < 0 ? flex_ineg(a) : a; }
__device__ __forceinline__ int flex_imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int flex_imax(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ int flex_ifloordiv(int a, int b) {
  if (b == 0) return 0;
  if (b == -1) return flex_ineg(a);
  int q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
__device__ __forceinline__ int flex_imod(int a, int b) {
  if (b == 0 || b == -1) return 0;
  int r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
// In [0, n); 0 when n <= 0 (an empty tensor, read through flex_src's zero word).
__device__ __forceinline__ int flex_clamp(int i, int n) { return flex_imax(0, flex_imin(i, n - 1)); }
// Captured-tensor reads are unconditional loads: an empty tensor reads 0 from
// flex_zeros instead of branching around the load, so loads of one address
// (e.g. slopes[h], ids[b, kv] across rows) stay in one basic block and CSE.
__device__ const unsigned int flex_zeros[2] = {0u, 0u};
template <class T> __device__ __forceinline__ const T* flex_src(const T* p, bool ok) { return ok ? p : reinterpret_cast<const T*>(flex_zeros); }
#endif

#define FLEX_HAS_SCORE_MOD 0
#define FLEX_HAS_MASK_MOD 1
#define FLEX_MASK_MOD_READS_MEMORY 1
struct FlexModArgs {
  const int* t0; // i32, rank 2
  int t0_s0;
  int t0_n0;
  int t0_s1;
  int t0_n1;
};
__device__ __forceinline__ float flex_score_mod(float score, int b, int h, int q_idx, int kv_idx, const FlexModArgs& args) {
  (void)b; (void)h; (void)q_idx; (void)kv_idx; (void)args;
  return score;
}
__device__ __forceinline__ bool flex_mask_mod(int b, int h, int q_idx, int kv_idx, const FlexModArgs& args) {
  (void)b; (void)h; (void)q_idx; (void)kv_idx; (void)args;
  const int v0 = b;
  const int v1 = q_idx;
  const int v2 = flex_src(args.t0, args.t0_n0 > 0 && args.t0_n1 > 0)[flex_clamp(v0, args.t0_n0) * args.t0_s0 + flex_clamp(v1, args.t0_n1) * args.t0_s1];
  const int v3 = kv_idx;
  const int v4 = flex_src(args.t0, args.t0_n0 > 0 && args.t0_n1 > 0)[flex_clamp(v0, args.t0_n0) * args.t0_s0 + flex_clamp(v3, args.t0_n1) * args.t0_s1];
  const bool v5 = v2 == v4;
  const bool v6 = v3 <= v1;
  const bool v7 = (bool)(v5 & v6);
  return v7;
}

#include "../../native/kernels/flash_fwd_sm90.cuh"
FLEXATTN_FWD_SM90_KERNEL(flexattn_flex_docgen_d128_bf16_sm90, 128, bf16, kBlockSparse)
