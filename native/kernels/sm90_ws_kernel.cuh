// sm90_ws_kernel.cuh — Hopper (sm_90a) forward with warp specialisation
// (issue 20; NOT yet run on a GPU). FA3's published design is the model; the
// code is ours and reuses the library's wgmma wrappers (wgmma_ops.cuh) and
// 128-byte-swizzle descriptors (tiles_sm90.cuh). This file only wires the
// parts together; each has its own header:
//   sm90_ws_config.cuh     WsConfig (shape), WsParams, named barriers, Smem map
//   sm90_ws_pipeline.cuh   mbarrier / TMA / named-barrier / setmaxnreg, PipeState
//   sm90_ws_scheduler.cuh  work tile of a CTA, kv tile count
//   sm90_ws_producer.cuh   the TMA producer
//   sm90_ws_softmax.cuh    mask, online softmax, O rescale, P packing
//   sm90_ws_consumer.cuh   the consumer mainloop (wgmma SS / RS, ping-pong)
//   sm90_ws_epilogue.cuh   O / l and LSE to global memory
//   sm90_ws_flex.cuh       block-mask tile sequence and mods (flex kernels)
//
// CTA = 3 warpgroups, tile 128 query rows x BN keys:
//   warpgroup 0  producer   setmaxnreg 24; one thread issues every TMA load:
//                           Q once (both 64-row halves), then K_0, then
//                           K_n, V_{n-1} for n = 1..N-1, then V_{N-1}: the order
//                           in which the consumers need them.
//   warpgroups 1, 2  consumers (64 query rows each), setmaxnreg 240:
//                           S = Q·Kᵀ (wgmma SS), online softmax in registers,
//                           O += P·V (wgmma RS: P from registers).
// Shared memory (1024-aligned): Q [128 x D] | K ring [ST][BN x D] | V ring
// [ST][BN x D] | mbarriers. Every tile is in the Sw128Tile layout (64-column
// panels, 128 B rows, 16 B chunks xor (row & 7)), which is exactly what a TMA
// box of {64 columns, rows} with CU_TENSOR_MAP_SWIZZLE_128B writes to a
// 1024-aligned destination; the wgmma descriptors of tiles_sm90.cuh read it.
// Tensor maps are 3-D {D, S, B*H} so rows past S (tail tiles) are zero-filled
// by the copy engine and never read a neighbouring head.
//
// Synchronisation:
//   q_full              producer -> consumers (tx bytes of Q)
//   k_full[s], v_full[s]  producer -> consumers (expect-tx: one tile's bytes)
//   k_empty[s], v_empty[s] consumers -> producer (one arrive per consumer warp)
//   named barriers kBarSchedWG0/1: ping-pong — a consumer waits on its own id
//   before issuing its GEMMs and arrives on the other's after issuing them, so
//   one warpgroup's softmax runs under the other's tensor-core work.
// Inside a consumer (intra-warpgroup overlap): tile n's S = Q·K_nᵀ is issued,
// then O is rescaled and P_{n-1}·V_{n-1} issued; the softmax of S_n runs while
// P·V is in flight.
//
// -DWS_DEBUG_TIMEOUT bounds every mbarrier wait (sm90_ws_pipeline.cuh).
#pragma once

#include "sm90_ws_config.cuh"
#include "sm90_ws_pipeline.cuh"
#include "sm90_ws_scheduler.cuh"
#include "sm90_ws_producer.cuh"
#include "sm90_ws_consumer.cuh"
#include "sm90_ws_flex.cuh"

namespace flexattn {
namespace ws90 {

using namespace ::flexattn::tiles;

// MODE 0 dense, 1 causal, 2 block-sparse with mods (f, mod: the parameter
// block's WsBlockMask and FlexModArgs, sm90_ws_flex.cuh; null otherwise).
template <class Cfg, int MODE> struct WsTilesFor { typedef WsDenseTiles<Cfg, MODE == 1> type; };
template <class Cfg> struct WsTilesFor<Cfg, 2> { typedef WsFlexTiles<Cfg> type; };
template <class Cfg>
__device__ __forceinline__ WsDenseTiles<Cfg, false> make_tiles(const WsDenseTiles<Cfg, false>*, const WsParams& p,
                                                               const WsBlockMask*, const WorkTile& w) { return {p, w.m_block}; }
template <class Cfg>
__device__ __forceinline__ WsDenseTiles<Cfg, true> make_tiles(const WsDenseTiles<Cfg, true>*, const WsParams& p,
                                                              const WsBlockMask*, const WorkTile& w) { return {p, w.m_block}; }
template <class Cfg>
__device__ __forceinline__ WsFlexTiles<Cfg> make_tiles(const WsFlexTiles<Cfg>*, const WsParams&, const WsBlockMask* f,
                                                       const WorkTile& w) { return {*f, w.b, w.h, w.m_block}; }

template <class Cfg, class T, int MODE>
__device__ __forceinline__ void ws_fwd(const void* tmQ, const void* tmK, const void* tmV,
                                       const WsParams& p, const WsBlockMask* f, const FlexModArgs* mod) {
  typedef typename WsTilesFor<Cfg, MODE>::type Tiles;
  extern __shared__ __align__(1024) unsigned char smem[];
  const Smem<Cfg> sm(smem_u32(smem));
  const int tid = threadIdx.x;
  const int role = tid >> 7;   // 0 producer, 1 / 2 consumers
  // block-sparse: last query block first too (the heavy rows of causal-like masks start in the first wave)
  const WorkTile w = tile_scheduler<MODE != 0>(p, blockIdx.x);
  const Tiles tiles = make_tiles<Cfg>((const Tiles*)nullptr, p, f, w);
  const int n_tiles = tiles.count();

  if (tid == 0) {
    mbar_init(sm.q_full(), 1);
#pragma unroll
    for (int s = 0; s < Cfg::kStages; ++s) {
      mbar_init(sm.k_full(s), 1);
      mbar_init(sm.v_full(s), 1);
      mbar_init(sm.k_empty(s), kConsumerThreads / 32);   // one arrive per consumer warp
      mbar_init(sm.v_empty(s), kConsumerThreads / 32);
    }
    mbar_init_fence();   // inits visible to the async proxy
    tma_prefetch_map(tmQ);
    tma_prefetch_map(tmK);
    tma_prefetch_map(tmV);
  }
  __syncthreads();

  if (role == 0) {
    setmaxnreg_dec<Cfg::kProducerRegs>();
    if (tid == 0) producer<Cfg>(sm, tmQ, tmK, tmV, p, w, tiles);
  } else {
    setmaxnreg_inc<Cfg::kConsumerRegs>();
    // consumer 0 may issue first: pre-arrive on its own scheduling barrier
    if (role == 1 && n_tiles > 0) named_arrive(kBarSchedWG0, kConsumerThreads);
    consumer<Cfg, T, MODE>(sm, p, w, tiles, f, mod, role - 1, tid & 127);
  }
}

}  // namespace ws90
}  // namespace flexattn

// The kernel body where sm_90a features exist, else a trap (a module built for
// another arch still links; the planner never launches it there).
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ != 900 || !defined(__CUDA_ARCH_FEAT_SM90_ALL))
#define FLEXATTN_WS90_BODY(CFG, DTYPE, MODE, TMQ, TMK, TMV, P, F, MOD) __trap();
#else
#define FLEXATTN_WS90_BODY(CFG, DTYPE, MODE, TMQ, TMK, TMV, P, F, MOD) \
  ::flexattn::ws90::ws_fwd<CFG, ::flexattn::tiles::DTYPE, MODE>(TMQ, TMK, TMV, P, F, MOD);
#endif
