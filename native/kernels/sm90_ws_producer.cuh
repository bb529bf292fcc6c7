// sm90_ws_producer.cuh — the producer warpgroup's work for one tile: one
// thread issues every TMA load (Q once, then K_0, then K_n, V_{n-1} for
// n = 1..N-1, then V_{N-1}: the order in which the consumers need them),
// waiting on each ring slot's empty barrier before refilling it.
#pragma once

#include "sm90_ws_config.cuh"
#include "sm90_ws_pipeline.cuh"
#include "sm90_ws_scheduler.cuh"
#include "sm90_ws_flex.cuh"

namespace flexattn {
namespace ws90 {

using namespace ::flexattn::tiles;

// Producer: one thread. Each tile is kPanels TMA boxes of {64 columns, rows}.
// `tiles` (WsDenseTiles / WsFlexTiles, sm90_ws_flex.cuh) gives kv tile n's
// first column: the consumers walk the same sequence.
template <class Cfg, class Tiles>
__device__ __forceinline__ void producer(const Smem<Cfg>& sm, const void* tmQ, const void* tmK,
                                         const void* tmV, const WsParams& p, const WorkTile& w, const Tiles& tiles) {
  const int n_tiles = tiles.count();
  constexpr int ST = Cfg::kStages;
  const int q0 = w.m_block * Cfg::kBlockM;
  const int bhq = w.b * p.Hq + w.h;
  const int bhk = w.b * p.Hkv + w.h / p.gqa_group;
  mbar_expect_tx(sm.q_full(), Cfg::kQBytes);
#pragma unroll
  for (int c = 0; c < Cfg::kPanels; ++c)
    tma_load_3d(sm.q + c * Cfg::QTile::kPanelBytes, tmQ, sm.q_full(), c * 64, q0, bhq);

  PipeState<ST> ks, vs;   // producer's write positions
  // the kv tile at kv0 into the next slot of the K (v = false) or V ring, once the consumers have released it
  auto load_kv = [&](PipeState<ST>& ps, const void* tm, bool v, int kv0) {
    const u32 full = v ? sm.v_full(ps.index) : sm.k_full(ps.index);
    const u32 tile = v ? sm.v_tile(ps.index) : sm.k_tile(ps.index);
    mbar_wait(v ? sm.v_empty(ps.index) : sm.k_empty(ps.index), ps.phase ^ 1u, (v ? 20 : 10) + ps.index);
    mbar_expect_tx(full, Cfg::kKVBytes);
#pragma unroll
    for (int c = 0; c < Cfg::kPanels; ++c)
      tma_load_3d(tile + c * Cfg::KVTile::kPanelBytes, tm, full, c * 64, kv0, bhk);
    ps.advance();
  };
  auto load_k = [&](int kv0) { load_kv(ks, tmK, false, kv0); };
  auto load_v = [&](int kv0) { load_kv(vs, tmV, true, kv0); };
  if (n_tiles == 0) return;
  int kv_prev = tiles.tile(0).kv0;   // each tile's index is read once (flex: a load; its latency overlaps the waits)
  load_k(kv_prev);
  for (int n = 1; n < n_tiles; ++n) {
    const int kv = tiles.tile(n).kv0;
    load_k(kv);
    load_v(kv_prev);
    kv_prev = kv;
  }
  load_v(kv_prev);
}

}  // namespace ws90
}  // namespace flexattn
