// flash_fwd.cuh — flash-attention forward (mma.sync, sm_80+), one template
// family for SDPA (dense / causal) and FlexAttention (block-sparse + mods).
//
//   O[b,h,q,:] = softmax_kv( mod(scale * Q[b,h,q,:]·K[b,h/g,kv,:]) ) · V[b,h/g,kv,:]
//   LSE[b,h,q] = log(sum_kv exp(...))   (natural log, f32, optional)
//
// Structure (so the Hopper path can reuse the policy half):
//   * FlashFwdParams      — the one by-value kernel parameter (generated/flash_fwd_params.cuh).
//   * FwdConfig<D>        — per-head-dim tile traits.
//   * KvSchedule<MODE>    — which kv tiles a q block visits, and which of
//                           them need per-element masking (DENSE / CAUSAL /
//                           BLOCK_SPARSE); knows nothing about mma.
//   * flash_fwd<...>      — the tile-compute core: cp.async K/V pipeline,
//                           S = Q·Kᵀ, mods + mask, online softmax, O += P·V.
//
// Mod hooks (code generator output, prepended before this header):
//   struct FlexModArgs { ... };                                  // POD
//   __device__ __forceinline__ float flex_score_mod(float score, int b, int h,
//                                   int q_idx, int kv_idx, const FlexModArgs&);
//   __device__ __forceinline__ bool  flex_mask_mod(int b, int h, int q_idx,
//                                   int kv_idx, const FlexModArgs&);
//   #define FLEX_HAS_SCORE_MOD 0|1
//   #define FLEX_HAS_MASK_MOD  0|1
//   #define FLEX_MASK_MOD_READS_MEMORY 0|1   (optional: mask_mod loads captured data)
//   #define FLEX_SEGMENTED_GRID 0|1   (optional: launched on a segmented grid,
//                                      p.tile_starts; Hopper block-sparse only)
// `score` is the scaled q·k. Mods are called with in-bounds indices only
// (q < Sq, kv < Skv; tail elements get clamped indices and are discarded),
// but also for elements that end up masked, so they must be pure. The kernel
// calls them unconditionally across a tile: write boolean logic with & / |
// (not && / ||) and index conversions as (float)kv - (float)q, so loads and
// conversions that depend only on q or only on kv CSE to one per row/column.
// mask_mod runs on partial blocks only. With neither macro defined
// (precompiled dense kernels) identity defaults are used.
//
// Instantiation (see the bottom of this file):
//   FLEXATTN_FWD_KERNEL(name, HEAD_DIM, DTYPE, MODE)   DTYPE: bf16 | f16,
//                     MODE: kDense | kCausal | kBlockSparse
//   FLEXATTN_FWD_DENSE_VARIANTS(HEAD_DIM, DTYPE) -> flexattn_fwd_d<D>_<dt>
//                                                   flexattn_fwd_d<D>_<dt>_causal
// Each kernel <name> comes with `extern "C" __constant__ int <name>_cfg[8]`
// = {threads, dynamic smem bytes, BLOCK_M, BLOCK_N, head dim, stages,
//    sizeof(FlashFwdParams), offsetof(FlashFwdParams, mod)} (generated/
// flash_fwd_config.cuh, from interface/flash_fwd_params.json): read it with
// cuModuleGetGlobal; launch grid (ceil(Sq/BLOCK_M), Hq, B), block (threads),
// dynamic smem as given (raise CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
// when > 48 KB).
#pragma once

#include "tiles.cuh"
#include "generated/flash_fwd_config.cuh"
#include "generated/tile_config.cuh"

// ---------------------------------------------------------------------------
// identity defaults when no mod fragment was prepended
#if !defined(FLEX_HAS_SCORE_MOD) && !defined(FLEX_HAS_MASK_MOD)
struct FlexModArgs {
  unsigned long long unused;
};
#endif
#ifndef FLEX_HAS_SCORE_MOD
#define FLEX_HAS_SCORE_MOD 0
#endif
#ifndef FLEX_HAS_MASK_MOD
#define FLEX_HAS_MASK_MOD 0
#endif
#ifndef FLEX_MASK_MOD_READS_MEMORY
#define FLEX_MASK_MOD_READS_MEMORY 0
#endif
#ifndef FLEX_SEGMENTED_GRID
#define FLEX_SEGMENTED_GRID 0
#endif

// ---------------------------------------------------------------------------
// Kernel parameter block FlashFwdParams (after FlexModArgs: it ends with one),
// its <name>_cfg array, tile constants and the kv-entry encoding: generated from
// native/kernels/interface/*.json by scripts/gen-kernel-interface.mjs (the
// layout table and static_asserts are in the generated headers).
#include "generated/flash_fwd_params.cuh"

namespace flexattn {
namespace flash {

using namespace ::flexattn::tiles;

// ---------------------------------------------------------------------------
// Per-head-dim tile traits. MT = m16 tiles per warp (2: each K/V fragment read
// from shared memory feeds two mmas, halving ldmatrix traffic per flop).
template <int BM, int BN, int NW, int STAGES, bool Q_IN_REGS>
struct TileShape {
  static constexpr int kBlockM = BM;     // query rows per CTA
  static constexpr int kBlockN = BN;     // kv rows per pipeline stage
  static constexpr int kWarps = NW;
  static constexpr int kThreads = NW * 32;
  static constexpr int kStages = STAGES; // K/V stages in the cp.async ring
  static constexpr bool kQInRegs = Q_IN_REGS;
};

// Default shape per head dim: interface/tiles.json (sm80Tile), chosen by
// measurement (figures: bench/results/kernel-notes.md, "Figures from the
// native/ comments"): two m16 tiles per warp beat one because the loop is
// ldmatrix-bound; d64 takes a 128-wide kv tile. d32/d96/d256: compile- and correctness-checked, not yet
// timed. For flex kernels whose mods keep many captured values live (e.g.
// document ids), the one-m16-tile shape (sm80SmallTile) avoids spills.
template <int D> struct FwdConfigFor {
  typedef ::flexattn::iface::Sm80Tile<D> T;  // tiles.json sm80Tile
  typedef TileShape<T::kBlockM, T::kBlockN, T::kWarps, T::kStages, T::kQInRegs> type;
};

template <int D, class Shape = typename FwdConfigFor<D>::type>
struct FwdConfig : Shape {
  static constexpr int kHeadDim = D;
  static constexpr int kMT = Shape::kBlockM / (16 * Shape::kWarps);  // m16 tiles / warp
  static constexpr int kNT = Shape::kBlockN / 8;                     // n8 tiles of S
  static constexpr int kKT = D / 16;                                 // k16 steps of Q·Kᵀ
  static constexpr int kDT = D / 8;                                  // n8 tiles of O
  static constexpr int kPK = Shape::kBlockN / 16;                    // k16 steps of P·V
  typedef SmemTile<Shape::kBlockM, D> QTile;
  typedef SmemTile<Shape::kBlockN, D> KVTile;
  static constexpr int kSmemQ = QTile::kBytes;
  static constexpr int kSmemKV = KVTile::kBytes;
  static constexpr int kSmemBytes = kSmemQ + 2 * Shape::kStages * kSmemKV;
  static_assert(Shape::kBlockM % (16 * Shape::kWarps) == 0, "BLOCK_M / warps");
  static_assert(Shape::kBlockN % 16 == 0 && D % 16 == 0, "tile shape");
  static_assert(Shape::kStages >= 2, "pipeline needs >= 2 stages");
};

// ---------------------------------------------------------------------------
// KV iteration policies. tile(i) -> {kv start, mask bits}; count() tiles.
enum FwdMode { kDense = 0, kCausal = 1, kBlockSparse = 2 };

enum MaskBits {
  kMaskBounds = 1,  // some kv >= the tile's end (or q >= Sq when mods read captured data)
  kMaskCausal = 2,  // tile straddles the diagonal: keep kv <= q
  kMaskMod = 4,     // partial block: apply mask_mod
  kTileLenShift = 8 // bits >> 8: a short tile's own column count (< BN; 0: not short)
};

// A kv tile: its first column and mask bits. In schedules built with kSegments
// a tile cut short (by Skv or, on a segmented grid, by the next tile's start)
// carries kMaskBounds and its length in bits >> kTileLenShift (kept in `bits`
// rather than a third field: the Hopper kernels hold a ring of these at the
// 168-register cap); elsewhere the length bits are 0 and the tile ends at Skv.
struct TileRef {
  int kv0;
  int bits;
};

__device__ __forceinline__ int bounds_bits(int kv0, int kv_end, int bn) {
  return kv0 + bn > kv_end ? kMaskBounds | ((kv_end - kv0) << kTileLenShift) : 0;
}
// Exclusive end of a tile's own columns for the kMaskBounds test: a short tile's
// recorded length, else Skv (kMaskBounds may also come from a query tail alone).
__device__ __forceinline__ int tile_end(int kv0, int bits, int skv) {
  const int len = bits >> kTileLenShift;
  return len != 0 ? kv0 + len : skv;
}

// ---------------------------------------------------------------------------
// Which (query block, head, batch) this CTA computes. The grid is
// ceil(Sq/BLOCK_M) x Hq x B; its linear index is re-ordered as
//   head group (outer) -> query block, last first -> head in the group,
// so that the heaviest query blocks (the last ones under a causal or document
// mask) of a few heads start together instead of once per head, which keeps
// the longest CTAs out of the final wave. A group is as many heads as one wave
// of CTAs (ctas_per_sm: 2, or the kernel's occupancy when higher) covers
// whole, and at most FLEXATTN_L2_BUDGET_MB of K/V:
// the CTAs running at once then share K/V tiles in L2 as in the plain order.
// (Larger budgets help long sequences but hurt short causal ones, whose many
// heads then no longer share anything in L2; figures in kernel-notes.md.)
// Dense (non-causal) CTAs all cost the same and keep one head at a time
// (grouped = false). A block-sparse launch may instead pass p.cta_order,
// built on the host from the BlockMask's per-row block counts: longest rows
// first within groups of heads (measured: kernel-notes.md).
#ifndef FLEXATTN_L2_BUDGET_MB
#define FLEXATTN_L2_BUDGET_MB 8
#endif
#ifndef FLEXATTN_WAVE_CTAS_PER_SM
#define FLEXATTN_WAVE_CTAS_PER_SM 2
#endif
struct WorkTile {
  int m_block, h, b;
};
__device__ __forceinline__ WorkTile work_tile(const FlashFwdParams& p, int row_bytes, bool grouped,  // row: D elements
                                              int ctas_per_sm = FLEXATTN_WAVE_CTAS_PER_SM) {
  // 32-bit index math (the host keeps a grid below 2^31 CTAs); the group size
  // is a heuristic, so float is exact enough for it.
  const unsigned nM = gridDim.x, BH = gridDim.y * gridDim.z;
  const unsigned L = blockIdx.x + nM * (blockIdx.y + gridDim.y * blockIdx.z);
  if (p.cta_order != nullptr) {
    // Host-computed order (block-sparse launches, lib/cuda/schedules/cta-order.ts):
    // the heaviest query blocks of a group of heads first. Entry = work index
    // m_block + nM * (h + Hq * b).
    const unsigned e = __ldg(p.cta_order + L), bh = e / nM;
    WorkTile w;
    w.m_block = (int)(e - bh * nM);
    w.h = (int)(bh % gridDim.y);
    w.b = (int)(bh / gridDim.y);
    return w;
  }
  unsigned G = 1;   // heads per group
  if (grouped) {
    unsigned nsm;
    asm("mov.u32 %0, %%nsmid;" : "=r"(nsm));
    const unsigned wave = ctas_per_sm > 0 ? (unsigned)ctas_per_sm * nsm / nM : BH;
    // K + V bytes per query head (the heads of a GQA group share one K/V head).
    const float kv_head = 2.f * (float)p.Skv * (float)row_bytes / (float)(p.gqa_group > 0 ? p.gqa_group : 1);
    const float fit = (float)FLEXATTN_L2_BUDGET_MB * 1048576.f / fmaxf(kv_head, 1.f);
    G = wave < BH ? wave : BH;
    if (fit < (float)G) G = (unsigned)fit;
    if (G < 1) G = 1;
  }
  const unsigned g = L / (G * nM), r = L - g * G * nM;
  const unsigned gs = BH - g * G < G ? BH - g * G : G;    // the last group may be smaller
  const unsigned bh = g * G + r % gs;
  WorkTile w;
  w.m_block = (int)(nM - 1 - r / gs);
  w.h = (int)(bh % gridDim.y);
  w.b = (int)(bh / gridDim.y);
  return w;
}

// The segmented grid's tile starts of batch b (FlashFwdParams only: the
// backward's parameter block has none, its schedules walk the uniform grid).
__device__ __forceinline__ const int* tile_starts_of(const FlashFwdParams& p, int b) {
  return p.tile_starts ? p.tile_starts + (long long)b * p.tile_starts_stride_b : nullptr;
}
template <class P>
__device__ __forceinline__ const int* tile_starts_of(const P&, int) { return nullptr; }

// The schedules (and keep_element / masked_score below) take any parameter
// block with the forward's field names for dims, scale and the kv-side block
// lists: the backward's dQ pass walks kv tiles with them too (flash_bwd.cuh).
// kSegments: the launch may pass a segmented grid (p.tile_starts; the Hopper
// kernels). Without it the schedule compiles as before (the mma.sync kernels
// sit at 255 registers and spill with any extra live value).
template <int MODE, int BM, int BN, bool kSegments = false>
struct KvSchedule;

template <int BM, int BN, bool kSegments>
struct KvSchedule<kDense, BM, BN, kSegments> {
  int n, skv, extra;
  template <class P>
  __device__ __forceinline__ KvSchedule(const P& p, int, int, int, int q0, bool q_tail) {
    skv = p.Skv;
    n = (skv + BN - 1) / BN;
    extra = q_tail && (FLEX_HAS_SCORE_MOD) ? kMaskBounds : 0;
  }
  __device__ __forceinline__ int count() const { return n; }
  __device__ __forceinline__ TileRef tile(int i) const {
    TileRef t;
    t.kv0 = i * BN;
    t.bits = extra | (t.kv0 + BN > skv ? kMaskBounds : 0);
    return t;
  }
};

// Top-left aligned causal (PyTorch SDPA is_causal): keep kv <= q.
template <int BM, int BN, bool kSegments>
struct KvSchedule<kCausal, BM, BN, kSegments> {
  int n, skv, q0, extra;
  template <class P>
  __device__ __forceinline__ KvSchedule(const P& p, int, int, int, int q0_, bool q_tail) {
    skv = p.Skv;
    q0 = q0_;
    const int q_last = imin(q0 + BM, p.Sq);            // exclusive
    const int kv_end = imin(skv, q_last);              // kv <= q_last - 1
    n = kv_end > 0 ? (kv_end + BN - 1) / BN : 0;
    extra = q_tail && (FLEX_HAS_SCORE_MOD) ? kMaskBounds : 0;
  }
  __device__ __forceinline__ int count() const { return n; }
  __device__ __forceinline__ TileRef tile(int i) const {
    TileRef t;
    t.kv0 = i * BN;
    t.bits = extra | (t.kv0 + BN > skv ? kMaskBounds : 0) |
             (t.kv0 + BN - 1 > q0 ? kMaskCausal : 0);
    return t;
  }
};

// PyTorch BlockMask: full blocks first (score_mod only), then partial blocks
// (score_mod + mask_mod). A mask block of bm_kv_block columns is walked as
// bm_kv_block / BN kernel tiles. With p.tile_starts (a segmented grid, block =
// tile = 64) row m_block is query tile m_block and each list entry is a tile's
// kv entry, kv_start * 128 + length (interface/tiles.json kvEntry: one load
// per tile, as for the uniform grid); a tile shorter than BN masks the columns
// past its end, which belong to the next tile.
template <int BM, int BN, bool kSegments>
struct KvSchedule<kBlockSparse, BM, BN, kSegments> {
  const int* full_idx;
  const int* part_idx;
  const int* ts;
  int n_full_tiles, n, skv, kvb, tpb_shift, tpb, extra;
  template <class P>
  __device__ __forceinline__ KvSchedule(const P& p, int b, int h, int m_block, int q0, bool q_tail) {
    ts = kSegments ? tile_starts_of(p, b) : nullptr;
    const int qb = ts ? m_block : q0 / p.bm_q_block;
    const long long nb = (long long)b * p.bm_num_stride_b + (long long)h * p.bm_num_stride_h + qb;
    const long long ib = (long long)b * p.bm_idx_stride_b + (long long)h * p.bm_idx_stride_h +
                         (long long)qb * p.bm_idx_stride_qb;
    kvb = p.bm_kv_block;
    tpb = kvb / BN;
    // tiles per block is a power of two in practice (128 / 64): a shift then
    // replaces the integer division in tile(), once per kv tile.
    tpb_shift = (tpb & (tpb - 1)) == 0 ? __ffs(tpb) - 1 : -1;
    skv = p.Skv;
    const int nfull = p.full_kv_num_blocks ? ldg_i32(p.full_kv_num_blocks + nb) : 0;
    const int npart = p.kv_num_blocks ? ldg_i32(p.kv_num_blocks + nb) : 0;
    full_idx = p.full_kv_indices ? p.full_kv_indices + ib : nullptr;
    part_idx = p.kv_indices ? p.kv_indices + ib : nullptr;
    n_full_tiles = nfull * tpb;
    n = (nfull + npart) * tpb;
    extra = q_tail && (FLEX_HAS_SCORE_MOD || FLEX_HAS_MASK_MOD) ? kMaskBounds : 0;
  }
  __device__ __forceinline__ int count() const { return n; }
  __device__ __forceinline__ TileRef tile(int i) const {
    TileRef t;
    if (i >= n) {  // pipeline look-ahead past the end: touch no index array
      t.kv0 = 0;
      t.bits = 0;
      return t;
    }
    const bool full = i < n_full_tiles;
    const int j = full ? i : i - n_full_tiles;
    const int jb = tpb_shift >= 0 ? j >> tpb_shift : j / tpb;
    const int blk = ldg_i32((full ? full_idx : part_idx) + jb);
    if constexpr (kSegments) {
      int kv_end = skv;
      if (ts) {
        t.kv0 = ::flexattn::iface::kv_entry_start(blk);
        kv_end = t.kv0 + ::flexattn::iface::kv_entry_length(blk);
      } else {
        t.kv0 = blk * kvb + (j - jb * tpb) * BN;
      }
      t.bits = extra | bounds_bits(t.kv0, kv_end, BN) | (!full && FLEX_HAS_MASK_MOD ? kMaskMod : 0);
    } else {
      t.kv0 = blk * kvb + (j - jb * tpb) * BN;
      t.bits = extra | (t.kv0 + BN > skv ? kMaskBounds : 0) | (!full && FLEX_HAS_MASK_MOD ? kMaskMod : 0);
    }
    return t;
  }
};

// ---------------------------------------------------------------------------
// Element (m, n, i) of a thread's accumulator tile (the mma.sync C layout,
// also wgmma's per warp): its query row and kv column.
__device__ __forceinline__ int elem_q(int row0, int m, int g, int i) { return row0 + m * 16 + g + ((i >> 1) << 3); }
__device__ __forceinline__ int elem_kv(int kv0, int n, int t, int i) { return kv0 + n * 8 + 2 * t + (i & 1); }

// Whether a masked tile (bits != 0) keeps element (q, kv): bounds, causal
// diagonal, mask_mod. Mods are evaluated unconditionally on clamped (always
// in-bounds) indices qc, kvc and combined with non-short-circuit &: loads of
// captured tensors that depend only on q (or only on kv) then CSE across the
// tile (one per row / column instead of one per element).
template <class P>
__device__ __forceinline__ bool keep_element(const P& p, const FlexModArgs& args, int b, int h,
                                             int q, int kv, int qc, int kvc, int bits, int kv_end) {
  bool keep = true;
  if (bits & kMaskBounds) keep = (kv < kv_end) & (q < p.Sq);
  if (bits & kMaskCausal) keep = keep & (kv <= q);
#if FLEX_HAS_MASK_MOD
  keep = keep & (flex_mask_mod(b, h, qc, kvc, args) | ((bits & kMaskMod) == 0));
#else
  (void)args; (void)b; (void)h; (void)qc; (void)kvc;
#endif
  return keep;
}

// The score of one element of a masked tile (clamped indices qc, kvc for the mod).
template <class P>
__device__ __forceinline__ float masked_score(float x, const P& p, const FlexModArgs& args, int b, int h,
                                              int qc, int kvc, bool premul) {
#if FLEX_HAS_SCORE_MOD
  (void)premul;
  return flex_score_mod(x * p.scale, b, h, qc, kvc, args) * 1.4426950408889634f;
#else
  (void)args; (void)b; (void)h; (void)qc; (void)kvc;
  return premul ? x * p.scale_log2 : x;
#endif
}

// ---------------------------------------------------------------------------
// Score post-processing for one S tile (raw q·k in `s`), in place: masked
// elements -> -inf; with a score mod x = mod(scale * qk) * log2(e) (log2
// domain); without one the raw q·k is kept (the softmax folds scale·log2(e)
// into its exp2 FFMA) unless `premul` (scale <= 0, where max does not commute
// with the scaling).
// kTileEnd: tiles may be short of BN by more than Skv (segmented grids, see
// TileRef); the bounds test then reads the tile's own end from `bits`.
template <class Cfg, bool kTileEnd = false>
__device__ __forceinline__ void score_tile(RtAcc<Cfg::kMT, Cfg::kNT>& s, const FlashFwdParams& p,
                                           const FlexModArgs& args, int b, int h, int row0,
                                           int kv0, int bits, bool premul, int lane) {
  const int g = lane >> 2, t = lane & 3;
  if (bits == 0) {  // interior tile: no per-element predicate
#if !FLEX_HAS_SCORE_MOD
    if (!premul) return;  // raw q·k domain: scale folded into the exp2 FFMA
#endif
#pragma unroll
    for (int m = 0; m < Cfg::kMT; ++m)
#pragma unroll
      for (int n = 0; n < Cfg::kNT; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#if FLEX_HAS_SCORE_MOD
          const int q = row0 + m * 16 + g + ((i >> 1) << 3);
          const int kv = kv0 + n * 8 + 2 * t + (i & 1);
          s.c[m][n][i] = flex_score_mod(s.c[m][n][i] * p.scale, b, h, q, kv, args) * 1.4426950408889634f;
#else
          s.c[m][n][i] *= p.scale_log2;
#endif
        }
    return;
  }
  // The predicate is keep_element's, written out: the mma.sync kernels sit at
  // 255 registers and their spills move with the shape of this code.
  const int Sq = p.Sq, Skv = p.Skv, kv_end = kTileEnd ? tile_end(kv0, bits, Skv) : Skv;
#pragma unroll
  for (int m = 0; m < Cfg::kMT; ++m)
#pragma unroll
    for (int n = 0; n < Cfg::kNT; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int q = row0 + m * 16 + g + ((i >> 1) << 3);
        const int kv = kv0 + n * 8 + 2 * t + (i & 1);
        const int qc = imin(q, Sq - 1), kvc = imin(kv, Skv - 1);
        bool keep = true;
        if (bits & kMaskBounds) keep = (kv < kv_end) & (q < Sq);
        if (bits & kMaskCausal) keep = keep & (kv <= q);
        float x = s.c[m][n][i];
#if FLEX_HAS_SCORE_MOD
        x = flex_score_mod(x * p.scale, b, h, qc, kvc, args) * 1.4426950408889634f;
#else
        if (premul) x *= p.scale_log2;
#endif
#if FLEX_HAS_MASK_MOD
        keep = keep & (flex_mask_mod(b, h, qc, kvc, args) | ((bits & kMaskMod) == 0));
#endif
        s.c[m][n][i] = keep ? x : neg_inf();
      }
}

// The mask of one masked S tile (bits != 0) as one bit per accumulator
// element, bit ((m * NT + n) * 4 + i) of keep.w[] (keep_element of each; the
// wgmma kernel evaluates it while the tensor cores compute S, see
// flash_fwd_sm90.cuh).
template <class Cfg>
struct KeepBits {
  static constexpr int kWords = (Cfg::kMT * Cfg::kNT * 4 + 31) / 32;
  u32 w[kWords];
  __device__ __forceinline__ bool get(int e) const { return (w[e >> 5] >> (e & 31)) & 1u; }
};

// Calls f(m, n, i, e) for every element of a thread's S tile (unrolled);
// e = (m * NT + n) * 4 + i is the element's bit in KeepBits.
template <class Cfg, class F>
__device__ __forceinline__ void for_each_elem(F&& f) {
#pragma unroll
  for (int m = 0; m < Cfg::kMT; ++m)
#pragma unroll
    for (int n = 0; n < Cfg::kNT; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) f(m, n, i, (m * Cfg::kNT + n) * 4 + i);
}

// kInterior: the caller checked bits == kMaskMod (a partial block inside both
// bounds), so only the mask mod is evaluated, on unclamped indices.
template <class Cfg, bool kInterior = false>
__device__ __forceinline__ void mask_bits(KeepBits<Cfg>& keep, const FlashFwdParams& p, const FlexModArgs& args,
                                          int b, int h, int row0, int kv0, int bits, int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int j = 0; j < KeepBits<Cfg>::kWords; ++j) keep.w[j] = 0;
  for_each_elem<Cfg>([&](int m, int n, int i, int e) {
    const int q = elem_q(row0, m, g, i), kv = elem_kv(kv0, n, t, i);
    bool k;
    if constexpr (kInterior) {
#if FLEX_HAS_MASK_MOD
      k = flex_mask_mod(b, h, q, kv, args);
#else
      k = true;
#endif
    } else {
      k = keep_element(p, args, b, h, q, kv, imin(q, p.Sq - 1), imin(kv, p.Skv - 1), bits, tile_end(kv0, bits, p.Skv));
    }
    keep.w[e >> 5] |= (u32)k << (e & 31);
  });
}

// score_tile for a masked tile whose mask is already in `keep`.
template <class Cfg>
__device__ __forceinline__ void score_tile_keep(RtAcc<Cfg::kMT, Cfg::kNT>& s, const FlashFwdParams& p,
                                                const FlexModArgs& args, int b, int h, int row0, int kv0,
                                                const KeepBits<Cfg>& keep, bool premul, int lane) {
  const int g = lane >> 2, t = lane & 3;
  for_each_elem<Cfg>([&](int m, int n, int i, int e) {
    const int qc = imin(elem_q(row0, m, g, i), p.Sq - 1), kvc = imin(elem_kv(kv0, n, t, i), p.Skv - 1);
    const float x = masked_score(s.c[m][n][i], p, args, b, h, qc, kvc, premul);
    s.c[m][n][i] = keep.get(e) ? x : neg_inf();
  });
}

// score_tile for a partial block inside both bounds (bits == kMaskMod, the
// common masked tile of a block-sparse launch): the indices need no clamp and
// no bounds or diagonal test, so each element costs its mask mod and a select.
template <class Cfg>
__device__ __forceinline__ void score_tile_mask_only(RtAcc<Cfg::kMT, Cfg::kNT>& s, const FlashFwdParams& p,
                                                     const FlexModArgs& args, int b, int h, int row0, int kv0,
                                                     bool premul, int lane) {
  const int g = lane >> 2, t = lane & 3;
  for_each_elem<Cfg>([&](int m, int n, int i, int) {
    const int q = elem_q(row0, m, g, i), kv = elem_kv(kv0, n, t, i);
#if FLEX_HAS_MASK_MOD
    const bool keep = flex_mask_mod(b, h, q, kv, args);
#else
    const bool keep = true;
#endif
    const float x = masked_score(s.c[m][n][i], p, args, b, h, q, kv, premul);
    s.c[m][n][i] = keep ? x : neg_inf();
  });
}

// ---------------------------------------------------------------------------
// Row-wise steps shared by both kernel families (flash_fwd_sm90.cuh too): per
// warp MT m16 tiles, rows g and g+8 of each quad-owned (the mma.sync C layout,
// which is also wgmma's accumulator layout per warp).

// Online softmax over one S tile: s becomes P (exp2 domain, unnormalised),
// alpha the factor that rescales O and l for the new row maxima.
template <int MT, int NT>
__device__ __forceinline__ void online_softmax(RtAcc<MT, NT>& s, float (&row_max)[MT][2], float (&row_sum)[MT][2],
                                               float (&alpha)[MT][2], float dom) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = row_max[m][r];
#pragma unroll
      for (int n = 0; n < NT; ++n) mx = fmaxf(mx, fmaxf(s.c[m][n][2 * r], s.c[m][n][2 * r + 1]));
      mx = quad_max(mx);
      // fully masked so far: no NaN from -inf - -inf. (mx is never NaN: fmaxf drops
      // NaN scores, whose p = ex2(NaN) still makes the row NaN through l and O.)
      const float m_use = mx == neg_inf() ? 0.f : mx;
      const float m_dom = m_use * dom;
      alpha[m][r] = ex2((row_max[m][r] - m_use) * dom);  // -inf (first tile) -> 0
      row_max[m][r] = mx;
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const float p0 = ex2(fmaf(s.c[m][n][2 * r], dom, -m_dom));
        const float p1 = ex2(fmaf(s.c[m][n][2 * r + 1], dom, -m_dom));
        s.c[m][n][2 * r] = p0;
        s.c[m][n][2 * r + 1] = p1;
        sum += p0 + p1;
      }
      row_sum[m][r] = row_sum[m][r] * alpha[m][r] + sum;  // thread-partial; quad-reduced at the end
    }
}

template <int MT, int DT>
__device__ __forceinline__ void rescale_rows(RtAcc<MT, DT>& o, const float (&alpha)[MT][2]) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int d = 0; d < DT; ++d) {
      o.c[m][d][0] *= alpha[m][0];
      o.c[m][d][1] *= alpha[m][0];
      o.c[m][d][2] *= alpha[m][1];
      o.c[m][d][3] *= alpha[m][1];
    }
}

// Epilogue: O / l in the output dtype, LSE = (m + log2 l) * ln 2 (natural log).
// Numerics (PyTorch's): l == 0 only when every score of the row was -inf (all
// keys masked, or -inf from a mod): O = 0 exactly and LSE -inf, written as
// constants rather than O * 0, since O may hold 0 * NaN from a NaN v in a tile
// the row visited. Any other l is used as is: a NaN score (NaN in q or k, from a
// mod, or +inf - +inf) makes l NaN, hence O and LSE NaN. (row_max ignores NaN in
// fmaxf, but p = ex2(NaN) already carried the NaN into l.)
// Tile caveat: P·V multiplies masked positions of a visited tile by p = 0, so a
// NaN or Inf in v also reaches (as 0 * NaN = NaN) rows of the same q tile that
// do not attend that key, in that column only; rows whose tiles never cover the
// key are unaffected. PyTorch's fused kernels behave the same.
template <class T, int MT, int DT>
__device__ __forceinline__ void store_output(const RtAcc<MT, DT>& o, const float (&row_max)[MT][2],
                                             const float (&row_sum)[MT][2], const FlashFwdParams& p, int b, int h,
                                             int row0, float dom, int lane, int q_end) {
  const int g = lane >> 2, t = lane & 3;
  u16* gO = (u16*)p.o + (i64)b * p.o_stride_b + (i64)h * p.o_stride_h;
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float l = quad_sum(row_sum[m][r]);
      const bool empty = l == 0.f;   // fully masked; NaN l is not empty
      const float inv = 1.f / l;
      const int q = row0 + m * 16 + g + 8 * r;
      if (q < q_end) {
        u16* orow = gO + (i64)q * p.o_stride_s + 2 * t;
#pragma unroll
        for (int d = 0; d < DT; ++d)
          st_global_u32(orow + d * 8, T::pack2(empty ? 0.f : o.c[m][d][2 * r] * inv,
                                               empty ? 0.f : o.c[m][d][2 * r + 1] * inv));
        if (p.lse != nullptr && t == 0) {
          const float mx = row_max[m][r];
          p.lse[((i64)b * p.Hq + h) * p.Sq + q] =
              empty ? neg_inf() : (mx * dom + lg2(l)) * 0.6931471805599453f;
        }
      }
    }
}

// ---------------------------------------------------------------------------
// The kernel body.
template <class Cfg, class T, int MODE>
__device__ __forceinline__ void flash_fwd(const FlashFwdParams& p) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, NTH = Cfg::kThreads, ST = Cfg::kStages;
  constexpr int MT = Cfg::kMT, NT = Cfg::kNT, KT = Cfg::kKT, DT = Cfg::kDT, PK = Cfg::kPK;
  typedef typename Cfg::QTile QTile;
  typedef typename Cfg::KVTile KVTile;

  extern __shared__ __align__(128) unsigned char smem[];
  const u32 sQ = smem_u32(smem);
  const u32 sK = sQ + Cfg::kSmemQ;                       // ST stages of K
  const u32 sV = sK + ST * Cfg::kSmemKV;                  // ST stages of V

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const WorkTile w = work_tile(p, Cfg::kHeadDim * (int)sizeof(T), MODE != kDense);
  const int m_block = w.m_block, h = w.h, b = w.b;
  const int hk = h / p.gqa_group;
  const int q0 = m_block * BM;
  const bool q_tail = q0 + BM > p.Sq;
  const int row0 = q0 + warp * (MT * 16);                // first query row of this warp

  const u16* gQ = (const u16*)p.q + (i64)b * p.q_stride_b + (i64)h * p.q_stride_h + (i64)q0 * p.q_stride_s;
  const u16* gK = (const u16*)p.k + (i64)b * p.k_stride_b + (i64)hk * p.k_stride_h;
  const u16* gV = (const u16*)p.v + (i64)b * p.v_stride_b + (i64)hk * p.v_stride_h;
  const i64 ks = p.k_stride_s, vs = p.v_stride_s;
  const int Skv = p.Skv;
  const FlexModArgs args = p.mod;

  // Softmax domain: values leaving score_tile are x, and exp2 is taken of
  // x * dom - max * dom. Without a score mod x is the raw q·k and dom =
  // scale·log2(e) (one FFMA per element); with one (or scale <= 0) x is
  // already in the log2 domain and dom = 1.
  const bool premul = FLEX_HAS_SCORE_MOD ? true : !(p.scale_log2 > 0.f);
  const float dom = premul ? 1.f : p.scale_log2;

  // ---- prologue: Q first (independent of the schedule's index loads), then
  // the first ST-1 K/V tiles in flight
  QTile::template load_async<NTH>(sQ, gQ, p.q_stride_s, p.Sq - q0, tid);
  KvSchedule<MODE, BM, BN> sched(p, b, h, m_block, q0, q_tail);
  const int n_tiles = sched.count();
  TileRef ring[ST];   // ring[s] = tile (it + s); rotated with constant indices
#pragma unroll
  for (int s = 0; s < ST; ++s) ring[s] = sched.tile(s < n_tiles ? s : 0);
#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    if (s < n_tiles) {
      const int kv0 = ring[s].kv0;
      KVTile::template load_async<NTH>(sK + s * Cfg::kSmemKV, gK + (i64)kv0 * ks, ks, Skv - kv0, tid);
      KVTile::template load_async<NTH>(sV + s * Cfg::kSmemKV, gV + (i64)kv0 * vs, vs, Skv - kv0, tid);
    }
    cp_async_commit();
  }

  RtAcc<MT, DT> o;
  o.zero();
  float row_max[MT][2], row_sum[MT][2];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int r = 0; r < 2; ++r) { row_max[m][r] = neg_inf(); row_sum[m][r] = 0.f; }

  RtA<Cfg::kQInRegs ? MT : 1, Cfg::kQInRegs ? KT : 1> qreg;
  if (Cfg::kQInRegs) {
    cp_async_wait<ST - 2>();
    __syncthreads();
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int k = 0; k < KT; ++k)
        QTile::ldA(qreg.a[Cfg::kQInRegs ? m : 0][Cfg::kQInRegs ? k : 0], sQ, QTile::lane_base_A(lane),
                   warp * MT * 16 + m * 16, k);
  }

  for (int it = 0; it < n_tiles; ++it) {
    cp_async_wait<ST - 2>();
    __syncthreads();  // tile `it` visible to all; slot (it-1)%ST free
    {
      const int nxt = it + ST - 1;
      if (nxt < n_tiles) {
        const int slot = nxt % ST;
        const int kv0 = ring[ST - 1].kv0;
        KVTile::template load_async<NTH>(sK + slot * Cfg::kSmemKV, gK + (i64)kv0 * ks, ks, Skv - kv0, tid);
        KVTile::template load_async<NTH>(sV + slot * Cfg::kSmemKV, gV + (i64)kv0 * vs, vs, Skv - kv0, tid);
      }
      cp_async_commit();
    }
    const TileRef cur = ring[0];
#pragma unroll
    for (int s = 0; s < ST - 1; ++s) ring[s] = ring[s + 1];
    ring[ST - 1] = sched.tile(it + ST < n_tiles ? it + ST : 0);   // index load overlaps compute

    const int slot = it % ST;
    const u32 tK = sK + slot * Cfg::kSmemKV, tV = sV + slot * Cfg::kSmemKV;
    const u32 lbK = opaque(KVTile::lane_base_nk(lane));
    const u32 lbV = opaque(KVTile::lane_base_kn(lane));
    const u32 lbQ = opaque(QTile::lane_base_A(lane));

    // ---- S = Q · Kᵀ  (16*MT x BN per warp)
    RtAcc<MT, NT> s;
    s.zero();
#pragma unroll
    for (int k = 0; k < KT; ++k) {
      u32 qa[MT][4];
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (Cfg::kQInRegs) {
#pragma unroll
          for (int i = 0; i < 4; ++i) qa[m][i] = qreg.a[Cfg::kQInRegs ? m : 0][Cfg::kQInRegs ? k : 0][i];
        } else {
          QTile::ldA(qa[m], sQ, lbQ, warp * MT * 16 + m * 16, k);
        }
      }
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        u32 kb[4];
        KVTile::ldB_nk(kb, tK, lbK, np * 16, k);
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          T::mma(s.c[m][2 * np], qa[m], kb[0], kb[1]);
          T::mma(s.c[m][2 * np + 1], qa[m], kb[2], kb[3]);
        }
      }
    }

    // ---- mods + mask, into the log2 domain
    score_tile<Cfg>(s, p, args, b, h, row0, cur.kv0, cur.bits, premul, lane);

    // ---- online softmax, then O rescaled (unconditionally: a warp-vote skip
    // measured slower on d64 — the branch splits the block ptxas interleaves
    // with the P·V mmas)
    float alpha[MT][2];
    online_softmax<MT, NT>(s, row_max, row_sum, alpha, dom);
    rescale_rows<MT, DT>(o, alpha);

    // ---- O += P · V   (P stays in registers: C fragments -> A fragments)
    RtA<MT, PK> pa;
    acc_to_A<T>(pa, s);
#pragma unroll
    for (int k = 0; k < PK; ++k)
#pragma unroll
      for (int dp = 0; dp < DT / 2; ++dp) {
        u32 vb[4];
        KVTile::ldB_kn(vb, tV, lbV, k * 16, dp);
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          T::mma(o.c[m][2 * dp], pa.a[m][k], vb[0], vb[1]);
          T::mma(o.c[m][2 * dp + 1], pa.a[m][k], vb[2], vb[3]);
        }
      }
  }
  cp_async_wait<0>();

  store_output<T, MT, DT>(o, row_max, row_sum, p, b, h, row0, dom, lane, p.Sq);
}

}  // namespace flash
}  // namespace flexattn

// ---------------------------------------------------------------------------
// Instantiation macros (nvcc precompiled and NVRTC JIT alike).
#define FLEXATTN_FWD_KERNEL_CFG(NAME, CFG, DTYPE, MODE)                                          \
  extern "C" __constant__ int NAME##_cfg[::flexattn::kFlashFwdCfgInts] = {                      \
      FLEXATTN_FWD_CFG_VALUES(CFG)};                                                             \
  extern "C" __global__ void __launch_bounds__(CFG::kThreads)                                    \
      NAME(const __grid_constant__ ::flexattn::FlashFwdParams p) {                               \
    ::flexattn::flash::flash_fwd<CFG, ::flexattn::tiles::DTYPE, ::flexattn::flash::MODE>(p);     \
  }

#define FLEXATTN_FWD_KERNEL(NAME, HEAD_DIM, DTYPE, MODE) \
  FLEXATTN_FWD_KERNEL_CFG(NAME, ::flexattn::flash::FwdConfig<HEAD_DIM>, DTYPE, MODE)

// Explicit tile shape (the JIT may pick one per mod): BM x BN, warps, stages, Q-in-registers.
#define FLEXATTN_FWD_KERNEL_SHAPE(NAME, HEAD_DIM, DTYPE, MODE, BM, BN, WARPS, STAGES, QREGS)   \
  typedef ::flexattn::flash::FwdConfig<HEAD_DIM,                                               \
      ::flexattn::flash::TileShape<BM, BN, WARPS, STAGES, QREGS>> NAME##_config_t;             \
  FLEXATTN_FWD_KERNEL_CFG(NAME, NAME##_config_t, DTYPE, MODE)

#define FLEXATTN_FWD_DENSE_VARIANTS(HEAD_DIM, DTYPE)                                   \
  FLEXATTN_FWD_KERNEL(flexattn_fwd_d##HEAD_DIM##_##DTYPE, HEAD_DIM, DTYPE, kDense)    \
  FLEXATTN_FWD_KERNEL(flexattn_fwd_d##HEAD_DIM##_##DTYPE##_causal, HEAD_DIM, DTYPE, kCausal)

// Every precompiled dense variant: flexattn_fwd_d{32,64,96,128,256}_{bf16,f16}[_causal]
#define FLEXATTN_FWD_ALL_DENSE()                                                        \
  FLEXATTN_FWD_DENSE_VARIANTS(32, bf16) FLEXATTN_FWD_DENSE_VARIANTS(32, f16)            \
  FLEXATTN_FWD_DENSE_VARIANTS(64, bf16) FLEXATTN_FWD_DENSE_VARIANTS(64, f16)            \
  FLEXATTN_FWD_DENSE_VARIANTS(96, bf16) FLEXATTN_FWD_DENSE_VARIANTS(96, f16)            \
  FLEXATTN_FWD_DENSE_VARIANTS(128, bf16) FLEXATTN_FWD_DENSE_VARIANTS(128, f16)          \
  FLEXATTN_FWD_DENSE_VARIANTS(256, bf16) FLEXATTN_FWD_DENSE_VARIANTS(256, f16)
