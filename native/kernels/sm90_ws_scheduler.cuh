// sm90_ws_scheduler.cuh — which work tile (query block, head, batch) a CTA of
// the warp-specialised forward owns, and how many kv tiles it visits.
#pragma once

#include "sm90_ws_config.cuh"

namespace flexattn {
namespace ws90 {

using namespace ::flexattn::tiles;

// Tile scheduler (non-persistent: one CTA per work tile, 1-D grid in the
// order the hardware dispatches). Work is split into groups of G (b, h)
// pairs; within a group query blocks go last-first for causal (longest first:
// the heaviest CTAs start in the first wave) with the group's heads innermost,
// so the K/V of G heads is what a wave keeps in L2. Non-causal: first-first.
struct WorkTile {
  int m_block, h, b;
};
template <bool kCausal>
__device__ __forceinline__ WorkTile tile_scheduler(const WsParams& p, int linear) {
  const int nM = p.num_m_blocks, BH = p.B * p.Hq, G = p.group_heads;
  const int g0 = (linear / (G * nM)) * G;
  const int Gg = min(G, BH - g0);
  const int r = linear - g0 * nM;
  const int mi = r / Gg, bh = g0 + (r - mi * Gg);
  WorkTile w;
  w.m_block = kCausal ? nM - 1 - mi : mi;
  w.b = bh / p.Hq;
  w.h = bh - w.b * p.Hq;
  return w;
}

// kv tiles a query block visits: all of Skv, or (causal, top-left: kv <= q)
// up to its last row.
template <class Cfg, bool kCausal>
__device__ __forceinline__ int kv_tile_count(const WsParams& p, int m_block) {
  int kv_end = p.Skv;
  if (kCausal) kv_end = min(kv_end, (m_block + 1) * Cfg::kBlockM);
  return (kv_end + Cfg::kBlockN - 1) / Cfg::kBlockN;
}

}  // namespace ws90
}  // namespace flexattn
