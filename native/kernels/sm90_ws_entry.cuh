// sm90_ws_entry.cuh — the library's entry point for the warp-specialised Hopper
// forward (family `sm90ws`, lib/cuda/plan.ts; NOT yet run on a GPU, guarded by
// requireVerifiedGpuPath): dense or causal without mods, or flex (block mask and
// generated mods, sm90_ws_flex.cuh), bf16/f16, D 64 or 128.
// One by-value parameter, WsFwdArgs: the three tensor maps (encoded on the host,
// native/addon/tensor_map.cc) and WsParams. The grid is 1-D: num_m_blocks · Hq · B
// CTAs of 384 threads (sm90_ws_scheduler.cuh maps a CTA to its work tile).
//
// Instantiation: FLEXATTN_FWD_SM90WS_KERNEL(name, HEAD_DIM, DTYPE, CAUSAL) with
// the tile of WsTileFor<HEAD_DIM>. <name>_cfg has the forward's 8-int layout
// (interface/flash_fwd_params.json config): its paramBytes slot is
// sizeof(WsFwdArgs) and its modOffset slot the offset of WsParams in it.
// FLEXATTN_FWD_SM90WS_FLEX_KERNEL(name, HEAD_DIM, DTYPE): the flex kernel (below).
#pragma once

#include "sm90_ws_kernel.cuh"

namespace flexattn {
namespace ws90 {

// Tensor maps first: each 128-byte aligned, as TMA requires of its descriptor
// (the kernel reads them in place, in parameter space).
struct alignas(128) WsFwdArgs {
  TmaDesc tm_q, tm_k, tm_v;
  WsParams p;
};
constexpr int kWsFwdParamsOffset = 3 * (int)sizeof(TmaDesc);
#ifndef __CUDACC_RTC__  // NVRTC has no __builtin_offsetof
static_assert(__builtin_offsetof(WsFwdArgs, p) == kWsFwdParamsOffset, "WsFwdArgs: WsParams after the three maps");
#endif

// Library tile per head dim: 128 x 128, two K/V stages (the harness's
// ws_d{64,128}_* kernels; _s3 and _n176 stay harness variants until measured).
template <int D> struct WsTileFor { typedef WsConfig<D, 128, 2> type; };

}  // namespace ws90
}  // namespace flexattn

// One entry: the tile of WsTileFor<D>, <name>_cfg, and the kernel taking ARGS
// (WsFwdArgs or WsFlexArgs) by value, OFFSET in the cfg's modOffset slot; MODE
// (0 dense, 1 causal, 2 flex) and the block-mask and FlexModArgs pointers F, MOD
// (null for dense / causal) go to ws_fwd.
#define FLEXATTN_WS90_ENTRY(NAME, D, DTYPE, ARGS, OFFSET, MODE, F, MOD)                                           \
  typedef ::flexattn::ws90::WsTileFor<D>::type NAME##_cfg_t;                                                       \
  extern "C" __constant__ int NAME##_cfg[8] = {NAME##_cfg_t::kThreads, NAME##_cfg_t::kSmemBytes,                 \
                                               NAME##_cfg_t::kBlockM,  NAME##_cfg_t::kBlockN,                    \
                                               D,                      NAME##_cfg_t::kStages,                    \
                                               (int)sizeof(::flexattn::ws90::ARGS), OFFSET};                     \
  extern "C" __global__ void __launch_bounds__(384, 1) NAME(const __grid_constant__ ::flexattn::ws90::ARGS a) {  \
    FLEXATTN_WS90_BODY(NAME##_cfg_t, DTYPE, MODE, &a.tm_q, &a.tm_k, &a.tm_v, a.p, F, MOD)                        \
  }

#define FLEXATTN_FWD_SM90WS_KERNEL(NAME, D, DTYPE, CAUSAL) \
  FLEXATTN_WS90_ENTRY(NAME, D, DTYPE, WsFwdArgs, ::flexattn::ws90::kWsFwdParamsOffset, (CAUSAL) ? 1 : 0, nullptr, nullptr)

// FlexAttention (MODE 2: block mask + the generated mods in front of this
// header): one by-value WsFlexArgs (sm90_ws_flex.cuh); <name>_cfg's modOffset
// slot is the offset of its FlexModArgs (WsParams at 3 maps, WsBlockMask at
// kWsFlexMaskOffset).
#define FLEXATTN_FWD_SM90WS_FLEX_KERNEL(NAME, D, DTYPE) \
  FLEXATTN_WS90_ENTRY(NAME, D, DTYPE, WsFlexArgs, ::flexattn::ws90::kWsFlexModOffset, 2, &a.bm, &a.mod)
