// rows q % 5 == 0 fully masked: output 0, LSE -inf
#include "flex_common.cuh"
#define FLEX_HAS_SCORE_MOD 0
#define FLEX_HAS_MASK_MOD 1
__device__ __forceinline__ bool flex_mask_mod(int b, int h, int q, int kv, const FlexModArgs& a) {
  return (kv <= q) & ((q % 5) != 0);
}
#include "../../native/kernels/flash_fwd_sm90.cuh"
FLEXATTN_FWD_KERNEL(flexattn_flex_holes_d128_bf16, 128, bf16, kBlockSparse)
FLEXATTN_FWD_SM90_KERNEL(flexattn_flex_holes_d128_bf16_sm90, 128, bf16, kBlockSparse)
