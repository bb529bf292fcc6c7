#include "flex_common.cuh"
#define FLEX_HAS_SCORE_MOD 0
#define FLEX_HAS_MASK_MOD 1
#ifndef FLEX_MASK_MOD_READS_MEMORY
#define FLEX_MASK_MOD_READS_MEMORY 1
#endif
__device__ __forceinline__ bool flex_mask_mod(int b, int h, int q, int kv, const FlexModArgs& a) {
  const int* d = a.doc + b * a.doc_stride_b;
  return (kv <= q) & (d[q] == d[kv]);
}
#include "../../native/kernels/flash_fwd_sm90.cuh"
FLEX_INSTANTIATE_SPARSE(doc)
