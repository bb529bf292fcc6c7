// Shared FlexModArgs for the hand-written test fragments (stands in for the
// code generator's output). Layout (32 bytes): doc (8) slopes (8)
// doc_stride_b (8) softcap (4) window (4).
#pragma once
struct FlexModArgs {
  const int* doc;           // [B, S] document ids
  const float* slopes;      // [Hq] ALiBi slopes
  long long doc_stride_b;
  float softcap;
  int window;
};
#define FLEX_INSTANTIATE_SPARSE(TAG)                                                      \
  FLEXATTN_FWD_KERNEL(flexattn_flex_##TAG##_d128_bf16, 128, bf16, kBlockSparse)          \
  FLEXATTN_FWD_KERNEL(flexattn_flex_##TAG##_d64_bf16, 64, bf16, kBlockSparse)            \
  FLEXATTN_FWD_KERNEL(flexattn_flex_##TAG##_d128_f16, 128, f16, kBlockSparse)            \
  FLEXATTN_FWD_KERNEL_SHAPE(flexattn_flex_##TAG##_d128_bf16_alt1, 128, bf16, kBlockSparse, 64, 64, 4, 2, true) \
  FLEXATTN_FWD_KERNEL_SHAPE(flexattn_flex_##TAG##_d128_bf16_alt3, 128, bf16, kBlockSparse, 128, 32, 4, 3, false) \
  FLEXATTN_FWD_SM90_KERNEL(flexattn_flex_##TAG##_d128_bf16_sm90, 128, bf16, kBlockSparse)                 \
  FLEXATTN_FWD_SM90_KERNEL(flexattn_flex_##TAG##_d64_bf16_sm90, 64, bf16, kBlockSparse)                   \
  FLEXATTN_FWD_SM90_KERNEL(flexattn_flex_##TAG##_d128_f16_sm90, 128, f16, kBlockSparse)                  
