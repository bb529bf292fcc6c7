// Hopper wgmma forward (flash_fwd_sm90.cuh): default shapes and tuning
// alternatives, dense/causal plus the flex patterns' mods (tests in run_sm90.py).
#include "../../native/kernels/flash_fwd_sm90.cuh"

#define SM90_DENSE(D, DT)                                                                  \
  FLEXATTN_FWD_SM90_KERNEL(sm90_d##D##_##DT, D, DT, kDense)                                \
  FLEXATTN_FWD_SM90_KERNEL(sm90_d##D##_##DT##_causal, D, DT, kCausal)
SM90_DENSE(128, bf16)
SM90_DENSE(64, bf16)
SM90_DENSE(128, f16)
SM90_DENSE(64, f16)

#define SM90_ALT(TAG, D, ...)                                                                  \
  FLEXATTN_FWD_SM90_KERNEL_SHAPE(sm90_d##D##_bf16_##TAG, D, bf16, kDense, __VA_ARGS__)          \
  FLEXATTN_FWD_SM90_KERNEL_SHAPE(sm90_d##D##_bf16_causal_##TAG, D, bf16, kCausal, __VA_ARGS__)
SM90_ALT(w1n64s3, 128, 1, 64, 3)
SM90_ALT(w1n64s2, 128, 1, 64, 2)   // K/V ring, 2 CTAs/SM (the d128 default before run 10)
SM90_ALT(w2n64s2, 128, 2, 64, 2)
SM90_ALT(w2n128s2, 128, 2, 128, 2)
SM90_ALT(w2n128s2, 64, 2, 128, 2)
SM90_ALT(w2n64s3, 64, 2, 64, 3)
SM90_ALT(w1n128s2v3, 64, 1, 128, 2, true, 3)
