// The document-causal mask on a segmented grid (FlashFwdParams.tile_starts: tiles restart at every
// document start). Every listed tile then lies inside one document pair whose ids are equal, so the
// ids conjunct of flex_doc.cu is true on all of it and only `kv <= q` is left to evaluate: the output
// equals flex_doc's on that grid (segments phase); launched on a uniform grid it would be wrong.
#include "flex_common.cuh"
#define FLEX_HAS_SCORE_MOD 0
#define FLEX_HAS_MASK_MOD 1
#define FLEX_SEGMENTED_GRID 1
__device__ __forceinline__ bool flex_mask_mod(int b, int h, int q, int kv, const FlexModArgs& a) { return kv <= q; }
#include "../../native/kernels/flash_fwd_sm90.cuh"
FLEX_INSTANTIATE_SPARSE(docseg)
