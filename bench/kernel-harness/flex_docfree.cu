// Timing bound only (wrong output): the document BlockMask's partial tiles with a mask mod that keeps
// everything, so a partial tile costs what a full one does. docgen phase: how much of doc's time the
// mask evaluation takes (kernel-notes run 13 addendum).
#include "flex_common.cuh"
#define FLEX_HAS_SCORE_MOD 0
#define FLEX_HAS_MASK_MOD 1
#define FLEX_MASK_MOD_READS_MEMORY 1
__device__ __forceinline__ bool flex_mask_mod(int, int, int, int, const FlexModArgs&) { return true; }
#include "../../native/kernels/flash_fwd_sm90.cuh"
FLEXATTN_FWD_SM90_KERNEL(flexattn_flex_docfree_d128_bf16_sm90, 128, bf16, kBlockSparse)
