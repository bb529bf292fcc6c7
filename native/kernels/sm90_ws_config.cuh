// sm90_ws_config.cuh — the warp-specialised Hopper forward's compile-time
// shape (WsConfig: tile, ring depth, register split, shared-memory budget), its
// by-value parameters other than the tensor maps (WsParams, generated from
// interface/sm90_ws_params.json), the named-barrier
// ids and the CTA's shared-memory map (Smem).
#pragma once

#include "generated/sm90_ws_params.cuh"   // WsParams (interface/sm90_ws_params.json)
#include "tiles_sm90.cuh"

namespace flexattn {
namespace ws90 {

using namespace ::flexattn::tiles;
using ::flexattn::sm90::Sw128Tile;

// Named barrier ids (0 is __syncthreads). Counts: both consumer warpgroups.
enum NamedBarrier : int { kBarSchedWG0 = 1, kBarSchedWG1 = 2 };
constexpr int kConsumerThreads = 256;

template <int D_, int BN_, int ST_>
struct WsConfig {
  static constexpr int kHeadDim = D_, kBlockM = 128, kBlockN = BN_, kStages = ST_;
  static constexpr int kThreads = 384;                  // producer + 2 consumer warpgroups
  static constexpr int kProducerRegs = 24, kConsumerRegs = 240;
  typedef Sw128Tile<kBlockM, D_> QTile;
  typedef Sw128Tile<BN_, D_> KVTile;
  static constexpr int kPanels = D_ / 64;               // TMA boxes per tile (64 columns = 128 B each)
  static constexpr int kQBytes = QTile::kBytes, kKVBytes = KVTile::kBytes;
  static constexpr int kNT = BN_ / 8, kDT = D_ / 8, kKT = D_ / 16, kPK = BN_ / 16;
  static constexpr int kBarOffset = kQBytes + 2 * ST_ * kKVBytes;
  static constexpr int kBarBytes = 8 * (1 + 4 * ST_);
  static constexpr int kSmemBytes = kBarOffset + kBarBytes + 1024;   // + alignment slack
  static_assert(D_ == 64 || D_ == 128, "head dim 64 or 128");
  static_assert(BN_ == 64 || BN_ == 128 || BN_ == 176, "BLOCK_N 64, 128 or 176 (wgmma n and the TMA box)");
  static_assert(kSmemBytes <= 232448, "sm_90 opt-in shared memory per block is 227 KB");
};

// Shared-memory map of one CTA.
template <class Cfg>
struct Smem {
  u32 q, k, v, bars;
  __device__ __forceinline__ explicit Smem(u32 base) {
    q = (base + 1023u) & ~1023u;   // swizzle atoms and TMA destinations: 1024-byte aligned
    k = q + Cfg::kQBytes;
    v = k + Cfg::kStages * Cfg::kKVBytes;
    bars = q + Cfg::kBarOffset;
  }
  __device__ __forceinline__ u32 k_tile(int s) const { return k + s * Cfg::kKVBytes; }
  __device__ __forceinline__ u32 v_tile(int s) const { return v + s * Cfg::kKVBytes; }
  __device__ __forceinline__ u32 q_full() const { return bars; }
  __device__ __forceinline__ u32 k_full(int s) const { return bars + 8 * (1 + s); }
  __device__ __forceinline__ u32 k_empty(int s) const { return bars + 8 * (1 + Cfg::kStages + s); }
  __device__ __forceinline__ u32 v_full(int s) const { return bars + 8 * (1 + 2 * Cfg::kStages + s); }
  __device__ __forceinline__ u32 v_empty(int s) const { return bars + 8 * (1 + 3 * Cfg::kStages + s); }
};

}  // namespace ws90
}  // namespace flexattn
