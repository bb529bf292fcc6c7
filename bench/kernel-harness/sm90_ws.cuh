// sm90_ws.cuh — the harness's entry points for the warp-specialised Hopper
// forward (issue 20; not yet run on a GPU). The kernel itself is the library's
// (native/kernels/sm90_ws_kernel.cuh and the parts it lists); what stays here is
// harness-specific: extern "C" kernels named for run_sm90_ws.py, taking cuda.h's
// CUtensorMap, and their <name>_cfg arrays.
#pragma once

#include <cuda.h>   // CUtensorMap (the runner encodes it with cuTensorMapEncodeTiled)

#include "../../native/kernels/sm90_ws_kernel.cuh"

static_assert(sizeof(CUtensorMap) == sizeof(::flexattn::ws90::TmaDesc) && alignof(CUtensorMap) == alignof(::flexattn::ws90::TmaDesc),
              "the kernel's opaque view of a tensor map");

// NAME_cfg = {threads, smem bytes, block M, block N, head dim, stages} for the runner.
#define WS90_KERNEL(NAME, D, BN, ST, DTYPE, CAUSAL)                                                       \
  typedef ::flexattn::ws90::WsConfig<D, BN, ST> NAME##_cfg_t;                                             \
  extern "C" __constant__ int NAME##_cfg[6] = {NAME##_cfg_t::kThreads, NAME##_cfg_t::kSmemBytes, 128, BN, \
                                               D, ST};                                                   \
  extern "C" __global__ void __launch_bounds__(384, 1)                                                    \
      NAME(const __grid_constant__ CUtensorMap tmQ, const __grid_constant__ CUtensorMap tmK,              \
           const __grid_constant__ CUtensorMap tmV, const __grid_constant__ ::flexattn::ws90::WsParams p) { \
    FLEXATTN_WS90_BODY(NAME##_cfg_t, DTYPE, (CAUSAL) ? 1 : 0, &tmQ, &tmK, &tmV, p, nullptr, nullptr)          \
  }
