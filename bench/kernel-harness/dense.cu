// Dense/causal variants as precompiled.cu would instantiate them (no mods),
// plus alternative tile shapes for tuning (suffix _alt*).
#include "../../native/kernels/flash_fwd.cuh"

FLEXATTN_FWD_ALL_DENSE()

// tuning alternatives
namespace fa = ::flexattn::flash;
typedef fa::FwdConfig<128, fa::TileShape<64, 64, 4, 2, true>> D128_A1;    // MT=1, Q in regs
typedef fa::FwdConfig<128, fa::TileShape<128, 64, 8, 2, true>> D128_A2;   // 8 warps MT=1
typedef fa::FwdConfig<128, fa::TileShape<128, 32, 4, 3, false>> D128_A3;  // BN=32, 3 stages
typedef fa::FwdConfig<64, fa::TileShape<128, 64, 8, 3, true>> D64_A1;     // 8 warps MT=1
typedef fa::FwdConfig<64, fa::TileShape<64, 64, 4, 3, true>> D64_A2;      // MT=1
typedef fa::FwdConfig<64, fa::TileShape<128, 64, 4, 3, true>> D64_A3;     // run-1..3 default (BN=64, Q regs)
FLEXATTN_FWD_KERNEL_CFG(flexattn_fwd_d128_bf16_alt1, D128_A1, bf16, kDense)
FLEXATTN_FWD_KERNEL_CFG(flexattn_fwd_d128_bf16_causal_alt1, D128_A1, bf16, kCausal)
FLEXATTN_FWD_KERNEL_CFG(flexattn_fwd_d128_bf16_alt2, D128_A2, bf16, kDense)
FLEXATTN_FWD_KERNEL_CFG(flexattn_fwd_d128_bf16_causal_alt2, D128_A2, bf16, kCausal)
FLEXATTN_FWD_KERNEL_CFG(flexattn_fwd_d128_bf16_alt3, D128_A3, bf16, kDense)
FLEXATTN_FWD_KERNEL_CFG(flexattn_fwd_d128_bf16_causal_alt3, D128_A3, bf16, kCausal)
FLEXATTN_FWD_KERNEL_CFG(flexattn_fwd_d64_bf16_alt1, D64_A1, bf16, kDense)
FLEXATTN_FWD_KERNEL_CFG(flexattn_fwd_d64_bf16_causal_alt1, D64_A1, bf16, kCausal)
FLEXATTN_FWD_KERNEL_CFG(flexattn_fwd_d64_bf16_alt2, D64_A2, bf16, kDense)
FLEXATTN_FWD_KERNEL_CFG(flexattn_fwd_d64_bf16_causal_alt2, D64_A2, bf16, kCausal)
FLEXATTN_FWD_KERNEL_CFG(flexattn_fwd_d64_bf16_alt3, D64_A3, bf16, kDense)
FLEXATTN_FWD_KERNEL_CFG(flexattn_fwd_d64_bf16_causal_alt3, D64_A3, bf16, kCausal)
