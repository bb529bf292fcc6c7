// sm90_ws_flex.cuh — FlexAttention on the warp-specialised Hopper forward
// (family sm90ws, MODE kBlockSparse; NOT yet run on a GPU): the block-mask
// part of the parameter block, the kv tile sequence of a query block and the
// mods applied to one S tile.
//
// Tile sequence: the producer and both consumers construct the same
// flash::KvSchedule<kBlockSparse, 128, BN> (flash_fwd.cuh) from WsBlockMask and
// walk it in the same order (full blocks first, then partial ones), so every
// ring slot holds the tile the consumers expect. The BlockMask's own lists are
// walked: the planner sends a mask here only when its block sizes are
// multiples of 128 (one 128-row query tile inside one mask row, one or more
// 128-column kv tiles per mask block). createBlockMask on a GPU derives those
// 128x128 lists from a 64x64 classification, so they are exact for the mod.
// No 64x64 fine schedule, segmented grid or host CTA order here (lib/cuda/plan.ts).
//
// Mods: the element semantics are flash::keep_element / masked_score (shared
// with the other forward kernels): score_mod on every element (clamped
// indices on tiles with kMaskBounds), mask_mod on partial tiles, kv >= Skv and
// q >= Sq masked on bounds tiles.
#pragma once

#include "flash_fwd.cuh"        // FlexModArgs, KvSchedule, keep_element, masked_score
#include "generated/sm90_ws_block_mask.cuh"   // WsBlockMask (interface/sm90_ws_block_mask.json): FlashFwdParams's field names
#include "sm90_ws_config.cuh"
#include "sm90_ws_pipeline.cuh"    // TmaDesc
#include "sm90_ws_scheduler.cuh"   // kv_tile_count

namespace flexattn {
namespace ws90 {

using namespace ::flexattn::tiles;

// The flex kernel's one parameter: the dense kernel's (maps + WsParams), then
// the block mask, then the generated FlexModArgs (its offset is the
// <name>_cfg modOffset slot).
struct alignas(128) WsFlexArgs {
  TmaDesc tm_q, tm_k, tm_v;
  WsParams p;
  WsBlockMask bm;
  FlexModArgs mod;
};
constexpr int kWsFlexMaskOffset = 3 * (int)sizeof(TmaDesc) + (int)sizeof(WsParams);
constexpr int kWsFlexModOffset =
    (kWsFlexMaskOffset + (int)sizeof(WsBlockMask) + (int)alignof(FlexModArgs) - 1) & ~((int)alignof(FlexModArgs) - 1);
#ifndef __CUDACC_RTC__
static_assert(__builtin_offsetof(WsFlexArgs, bm) == kWsFlexMaskOffset, "WsFlexArgs: block mask after WsParams");
static_assert(__builtin_offsetof(WsFlexArgs, mod) == kWsFlexModOffset, "WsFlexArgs: FlexModArgs last");
#endif

// kv tiles of a dense / causal query block: 0 .. n-1, every one BN wide.
template <class Cfg, bool kCausal>
struct WsDenseTiles {
  int n;
  __device__ __forceinline__ WsDenseTiles(const WsParams& p, int m_block) : n(kv_tile_count<Cfg, kCausal>(p, m_block)) {}
  __device__ __forceinline__ int count() const { return n; }
  __device__ __forceinline__ ::flexattn::flash::TileRef tile(int i) const { return {i * Cfg::kBlockN, 0}; }
};

// kv tiles of a flex query block (128 rows): with a block mask its full
// blocks, then its partial ones; without one (no list pointers: a score mod
// alone) every kv tile, all full. tile(i).bits: kMaskBounds (kv tail, or a
// query tail with mods: the mods then get clamped indices), kMaskMod (partial
// block with a mask mod); 0 = score_mod only.
template <class Cfg>
struct WsFlexTiles {
  ::flexattn::flash::KvSchedule<::flexattn::flash::kBlockSparse, Cfg::kBlockM, Cfg::kBlockN, false> s;
  int dense_n;   // > 0: no block mask, this many tiles
  __device__ __forceinline__ WsFlexTiles(const WsBlockMask& f, int b, int h, int m_block)
      : s(f, b, h, m_block, m_block * Cfg::kBlockM, m_block * Cfg::kBlockM + Cfg::kBlockM > f.Sq) {
    dense_n = f.kv_num_blocks == nullptr && f.full_kv_num_blocks == nullptr ? (f.Skv + Cfg::kBlockN - 1) / Cfg::kBlockN : 0;
  }
  __device__ __forceinline__ int count() const { return dense_n > 0 ? dense_n : s.count(); }
  __device__ __forceinline__ ::flexattn::flash::TileRef tile(int i) const {
    if (dense_n > 0) {
      const int kv0 = i * Cfg::kBlockN;
      return {kv0, s.extra | (kv0 + Cfg::kBlockN > s.skv ? ::flexattn::flash::kMaskBounds : 0)};
    }
    return s.tile(i);
  }
};

// Mods on one S tile (raw q·k, wgmma m64nBN layout: element 4 j + i at row
// row0 + g + 8 (i >> 1), column kv0 + 8 j + 2 t + (i & 1)), in place: the
// values leave in the softmax domain of `premul` (true with a score mod: x =
// mod(scale·qk)·log2 e; without one as mask_tile: raw unless premul).
template <class Cfg>
__device__ __forceinline__ void flex_tile(float (&s)[Cfg::kBlockN / 2], const WsBlockMask& f, const FlexModArgs& args,
                                          int b, int h, int row0, int kv0, int bits, bool premul, int lane) {
  const int g = lane >> 2, t = lane & 3;
  if (bits == 0) {   // full block inside both bounds: score_mod only, unclamped indices
#if !FLEX_HAS_SCORE_MOD
    if (!premul) return;
#endif
#pragma unroll
    for (int j = 0; j < Cfg::kNT; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int q = row0 + g + 8 * (i >> 1), kv = kv0 + 8 * j + 2 * t + (i & 1);
        s[4 * j + i] = ::flexattn::flash::masked_score(s[4 * j + i], f, args, b, h, q, kv, premul);
      }
    return;
  }
  const int Sq = f.Sq, Skv = f.Skv;
#pragma unroll
  for (int j = 0; j < Cfg::kNT; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int q = row0 + g + 8 * (i >> 1), kv = kv0 + 8 * j + 2 * t + (i & 1);
      const int qc = imin(q, Sq - 1), kvc = imin(kv, Skv - 1);
      const bool keep = ::flexattn::flash::keep_element(f, args, b, h, q, kv, qc, kvc, bits, Skv);
      const float x = ::flexattn::flash::masked_score(s[4 * j + i], f, args, b, h, qc, kvc, premul);
      s[4 * j + i] = keep ? x : neg_inf();
    }
}

}  // namespace ws90
}  // namespace flexattn
