// Document-causal mask as the code generator emits it (documentMask(ids); build.sh writes
// build/gen_doc_mod.cuh with gen_doc_mod.mjs), for an A/B against flex_doc.cu's hand-written
// mask (kernel-notes run 13). FlexModArgs: t0 (8), t0_s0, t0_n0, t0_s1, t0_n1 (4 each).
#include "build/gen_doc_mod.cuh"
#include "../../native/kernels/flash_fwd_sm90.cuh"
FLEXATTN_FWD_SM90_KERNEL(flexattn_flex_docgen_d128_bf16_sm90, 128, bf16, kBlockSparse)
