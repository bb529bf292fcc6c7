#include "flex_common.cuh"
#define FLEX_HAS_SCORE_MOD 0
#define FLEX_HAS_MASK_MOD 1
__device__ __forceinline__ bool flex_mask_mod(int b, int h, int q, int kv, const FlexModArgs& a) { return kv <= q; }
#include "../../native/kernels/flash_fwd_sm90.cuh"
FLEX_INSTANTIATE_SPARSE(causal)
