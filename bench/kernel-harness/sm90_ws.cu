// Hopper warp-specialised forward (sm90_ws.cuh): TMA producer warpgroup, two
// consumer warpgroups in ping-pong. Harness only (issue 20); run_sm90_ws.py
// checks and times these. Names: ws_d<D>_<dtype>[_causal][_s<stages>].
#include "sm90_ws.cuh"

#define WS_PAIR(D, DT, BN, ST, TAG)                          \
  WS90_KERNEL(ws_d##D##_##DT##TAG, D, BN, ST, DT, false)     \
  WS90_KERNEL(ws_d##D##_##DT##_causal##TAG, D, BN, ST, DT, true)

WS_PAIR(128, bf16, 128, 2, )
WS_PAIR(128, f16, 128, 2, )
WS_PAIR(64, bf16, 128, 2, )
WS_PAIR(64, f16, 128, 2, )
WS_PAIR(128, bf16, 128, 3, _s3)   // 3-stage K/V ring: 224 KB of shared memory
WS_PAIR(128, bf16, 176, 2, _n176)  // FA3's non-causal d128 tile: 128 x 176, 208 KB of shared memory
