#include "flex_common.cuh"
#define FLEX_HAS_SCORE_MOD 1
#define FLEX_HAS_MASK_MOD 1
__device__ __forceinline__ float flex_score_mod(float s, int b, int h, int q, int kv, const FlexModArgs& a) {
  float t;
  asm("tanh.approx.f32 %0, %1;" : "=f"(t) : "f"(s * (1.f / a.softcap)));
  return a.softcap * t;
}
__device__ __forceinline__ bool flex_mask_mod(int b, int h, int q, int kv, const FlexModArgs& a) { return kv <= q; }
#include "../../native/kernels/flash_fwd_sm90.cuh"
FLEX_INSTANTIATE_SPARSE(softcap)
// score mod with the analytic schedules (no block mask)
FLEXATTN_FWD_KERNEL(flexattn_flex_softcap_dense_d128_bf16, 128, bf16, kDense)
FLEXATTN_FWD_KERNEL(flexattn_flex_softcap_causal_d128_bf16, 128, bf16, kCausal)
