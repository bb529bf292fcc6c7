// decode.cuh — decode / ragged-batch attention (mma.sync, sm_80+): a few query
// tokens per sequence against a long KV that is paged, contiguous or packed,
// for a whole ragged batch in one launch, plus the split-KV combine.
//
//   O[tok, h, :] = softmax_kv( mod(scale * Q[tok, h, :]·K[s, j, h/G, :]) ) · V[s, j, h/G, :]
//
// Addressing (DecodeParams, generated/decode_params.cuh from
// interface/decode_params.json): sequence s has n KV tokens (seq_lens[s] or
// uniform_kv_len) and m query tokens (query_start[s+1] - query_start[s], or
// uniform_q_len); KV token j lives in page page_table[s][j >> log2_page_size]
// (page s without a table). The host side (lib/cuda/run-ragged.ts) expresses
// paged caches, contiguous [B,S,H,D] KV and packed varlen KV this way.
//
// GQA packing: the rows of one CTA's tile are (query token i, head g of the
// KV head's group of G = Hq / Hkv query heads), row R = i * G + g, so each KV
// byte a CTA loads serves every query head that reads it. A sequence has
// ceil(m * G / BLOCK_M) row tiles (any m: decode, speculative decoding and
// chunked prefill take the same path); a block-sparse launch cuts rows into
// segments first (TileRows).
//
// Inside a CTA the warps split each kv tile by columns (BLOCK_N / warps each),
// every warp holding all BLOCK_M rows with its own online-softmax state; the
// warps' partial (max, sum, O) merge through shared memory at the end.
// Split-KV: with num_splits > 1 the kv range of a tile is cut into num_splits
// chunks (whole kv tiles), one CTA each; every CTA writes its normalised f32
// partial O and log2-sum-exp to the workspace and flexattn_decode_combine_*
// merges them (grid: one CTA per row tile).
//
// What a tile reads. Dense: kv [lo, hi) with hi bounded by causal (the last
// row's position) and both ends by the mask's hull over the tile's positions
// (kv_hull: DecodeParams.kv_range, a postfix program lib/cuda/kv-range.ts
// builds from the mask's position structure), lo aligned down to BLOCK_N; the
// mask mod is still applied to every element read, so the answer is exact and
// only tiles no row can see are skipped. Split-KV cuts that reduced range.
// Block sparse (kv_num_blocks / full_kv_num_blocks set; flexAttention with a
// BlockMask): the lists of the tile's block-mask row — full blocks without the
// mask mod, then partial blocks with it, as flash_fwd.cuh's kBlockSparse — each
// block walked as ceil(kv_block / BLOCK_N) tiles clipped to its end; split-KV
// cuts the list of tile steps. Rows are grouped so a tile never spans two
// block-mask rows (TileRows: one q block per segment, one head per segment
// when the mask has heads).
//
// Positions as the mods see them: b = s, h = query head, q = n - m + i
// (end_aligned) or i, kv = j. causal keeps kv <= q. Mods come from the same
// generated fragment as the forward kernels (flash_fwd.cuh's contract: called
// with in-bounds indices only, pure, evaluated unconditionally). Numerics as
// the forward kernel's epilogue: a row with every key masked gives 0 and LSE
// -inf; a NaN score makes the row NaN (and its LSE); the tile caveat of
// store_output (a NaN in V reaches masked rows of the same tile) holds too.
//
// Grid: x = ((s * Hkv + hk) * row_tiles + tile) * num_splits + split (1-D, so
// no 65535 limit), block = threads, dynamic smem from <name>_cfg (same 8 ints
// as the forward kernels'). CTAs of row tiles past a sequence's rows return.
#pragma once

#include "flash_fwd.cuh"
#include "generated/decode_params.cuh"
#include "generated/decode_config.cuh"

namespace flexattn {
namespace decode {

using namespace ::flexattn::tiles;

// ---------------------------------------------------------------------------
// Tile traits (interface/tiles.json decodeTile).
template <int D, class Tile = ::flexattn::iface::DecodeTile<D>>
struct DecodeConfig {
  static constexpr int kHeadDim = D;
  static constexpr int kBlockM = Tile::kBlockM;
  static constexpr int kBlockN = Tile::kBlockN;
  static constexpr int kWarps = Tile::kWarps;
  static constexpr int kThreads = 32 * Tile::kWarps;
  static constexpr int kStages = Tile::kStages;
  static constexpr int kMT = kBlockM / 16;        // m16 tiles: every warp holds every row
  static constexpr int kWarpN = kBlockN / kWarps;  // kv columns of a tile per warp
  static constexpr int kNT = kWarpN / 8;           // n8 tiles of S per warp
  static constexpr int kPK = kWarpN / 16;          // k16 steps of P·V per warp
  static constexpr int kKT = D / 16;
  static constexpr int kDT = D / 8;
  typedef SmemTile<kBlockM, D> QTile;
  typedef SmemTile<kBlockN, D> KVTile;
  static constexpr int kSmemQ = QTile::kBytes;
  static constexpr int kSmemKV = KVTile::kBytes;
  static constexpr int kSmemPipe = kSmemQ + 2 * kStages * kSmemKV;
  // The warps' merge reuses the pipeline's memory: per-warp row max and sum, then per-warp f32 O.
  static constexpr int kSmemMerge = (2 * kWarps * kBlockM + 2 * kBlockM + kWarps * kBlockM * D) * 4;
  static constexpr int kSmemBytes = kSmemPipe > kSmemMerge ? kSmemPipe : kSmemMerge;
  static_assert(kBlockM % 16 == 0 && kWarpN % 16 == 0 && D % 16 == 0, "decode tile shape");
  static_assert(kThreads % (D / 8) == 0, "a row's 16-byte chunks must divide the threads");
  static_assert(kStages >= 2, "pipeline needs >= 2 stages");
};

// The combine kernel's config (same <name>_cfg fields; no pipeline).
template <int D>
struct CombineConfig {
  static constexpr int kHeadDim = D;
  static constexpr int kBlockM = ::flexattn::iface::DecodeTile<D>::kBlockM;
  static constexpr int kBlockN = 0;
  static constexpr int kThreads = 128;
  static constexpr int kStages = 0;
  static constexpr int kSmemBytes = 0;
};

// ---------------------------------------------------------------------------
// Which sequence, KV head, row tile and split a CTA computes.
struct Work {
  int seq, hk, tile, split, cta;  // cta: the (seq, hk, tile) index of the workspace
};
__device__ __forceinline__ Work work_of(const DecodeParams& p, int splits) {
  const unsigned L = blockIdx.x;
  Work w;
  w.split = (int)(L % (unsigned)splits);
  w.cta = (int)(L / (unsigned)splits);
  const unsigned rest = (unsigned)w.cta / (unsigned)p.row_tiles;
  w.tile = w.cta - (int)rest * p.row_tiles;
  w.hk = (int)(rest % (unsigned)p.Hkv);
  w.seq = (int)(rest / (unsigned)p.Hkv);
  return w;
}

// A sequence's lengths: n KV tokens, m query tokens from row tok0, the first query token's position.
struct Seq {
  int n, m, tok0, pos0;
};
__device__ __forceinline__ Seq seq_of(const DecodeParams& p, int s) {
  Seq q;
  q.n = p.seq_lens ? ldg_i32(p.seq_lens + s) : p.uniform_kv_len;
  if (p.query_start) {
    q.tok0 = ldg_i32(p.query_start + s);
    q.m = ldg_i32(p.query_start + s + 1) - q.tok0;
  } else {
    q.tok0 = 0;
    q.m = p.uniform_q_len;
  }
  q.pos0 = p.end_aligned ? q.n - q.m : 0;
  return q;
}

// The rows of one row tile. A (sequence, KV head)'s rows are cut into segments
// — pack_heads heads of the GQA group x the query tokens of one segment
// (seg_tokens: a block mask's q block; otherwise every token) — and each
// segment into seg_tiles tiles of BLOCK_M rows, so every row of a tile shares
// one block-mask row (query block, and head when the mask has heads). Without
// a block mask there is one segment of all G heads: row R = i * G + g.
struct TileRows {
  int i0;         // first query token of the segment
  int h0;         // first query head of the segment
  int gm;         // heads in the segment (pack_heads)
  int r0;         // this tile's first segment-local row
  int rows_here;  // rows of this tile (<= 0: past the sequence's rows)
  int qseg;       // the segment's token index (= the block mask's q block)
};
template <int BM>
__device__ __forceinline__ TileRows tile_rows(const DecodeParams& p, int hk, int tile, int m) {
  TileRows t;
  const int per_group = p.q_segments * p.seg_tiles;
  const int go = tile / per_group, rest = tile - go * per_group;
  t.qseg = rest / p.seg_tiles;
  const int sub = rest - t.qseg * p.seg_tiles;
  t.gm = p.pack_heads;
  t.h0 = hk * p.gqa_group + go * t.gm;
  t.i0 = t.qseg * p.seg_tokens;  // 0 for the single segment (seg_tokens = 2^30)
  const int tokens = imin(p.seg_tokens, m - t.i0);
  t.r0 = sub * BM;
  t.rows_here = tokens <= 0 ? 0 : imin(BM, tokens * t.gm - t.r0);
  return t;
}

// Row r of a tile (r < rows_here): query token and head.
struct Row {
  int i, h;
};
__device__ __forceinline__ Row row_of(const TileRows& t, int r) {
  const int rr = t.r0 + r;
  Row x;
  const int di = rr / t.gm;
  x.i = t.i0 + di;
  x.h = t.h0 + (rr - di * t.gm);
  return x;
}

// kv interval [lo, hi) within [0, n) that rows at positions qa..qb can see:
// the postfix program of DecodeParams.kv_range (built by lib/cuda/kv-range.ts,
// whose kvRangeHull is this evaluation on the host; op codes there). A
// superset of the mask's support: the mask mod is still applied per element.
__device__ __forceinline__ void kv_hull(const DecodeParams& p, int qa, int qb, int n, int& lo_out, int& hi_out) {
  lo_out = 0;
  hi_out = n;
  const int ops = p.kv_range_ops;
  if (ops <= 0) return;
  constexpr int kMax = (int)(sizeof(DecodeParams::kv_range) / sizeof(int)) / 5;
  constexpr long long BIG = 1ll << 31;
  long long lo[kMax], hi[kMax];  // inclusive bounds; lo > hi is empty
  int sp = 0;
#pragma unroll 1
  for (int k = 0; k < ops && k < kMax; ++k) {
    const int* o = p.kv_range + 5 * k;
    const int code = o[0];
    const long long a = o[1], b = o[2], c = o[3], d = o[4];
    long long l = 1, h = 0;
    switch (code) {
      case 1: if (a <= b) { l = qa - b; h = qb - a; } break;                      // band: a <= q - kv <= b
      case 2: l = -BIG; h = a - 1; break;                                            // kv < a
      case 3: if (qa < a) { l = -BIG; h = BIG; } break;                              // q < a
      case 4: if (qb >= a && qa < b && a < b) { l = c; h = d - 1; } break;          // box
      case 5: l = -BIG; h = BIG; break;                                              // all
      case 6: break;                                                                 // none
      case 7: case 8: {                                                              // and / or of a parts
        const bool conj = code == 7;
        l = conj ? -BIG : BIG;
        h = conj ? BIG : -BIG;
        for (int j = 0; j < (int)a && sp > 0; ++j) {
          --sp;
          const long long x = lo[sp], y = hi[sp];
          if (conj) { l = x > l ? x : l; h = y < h ? y : h; }
          else if (x <= y) { l = x < l ? x : l; h = y > h ? y : h; }
        }
        if (l > h) { l = 1; h = 0; }
        break;
      }
      default: return;  // unknown op: the whole sequence
    }
    if (sp < kMax) { lo[sp] = l; hi[sp] = h; ++sp; }
  }
  if (sp <= 0) return;
  const long long l = lo[0] < 0 ? 0 : lo[0];
  const long long h = hi[0] + 1 > n ? (long long)n : hi[0] + 1;
  if (l < h) { lo_out = (int)l; hi_out = (int)h; }
  else { lo_out = 0; hi_out = 0; }
}

// The kv tiles a CTA walks. Dense: BLOCK_N tiles from kv_lo to kv_hi. Block
// sparse: the block mask's full blocks, then its partial ones (mask mod
// applied), each walked as ceil(kv_block / BLOCK_N) tiles ending at the block's
// end — flash_fwd.cuh's kBlockSparse order — from tile step `first` on.
struct KvWalk {
  const int* full_idx;
  const int* part_idx;
  int kv_lo, kv_hi;           // dense range
  int first, count;           // this CTA's steps
  int n_full_steps, tpb, kvb, n;
  bool sparse;
};
struct KvStep {
  int kv0, hi;
  bool mod;  // apply the mask mod (partial block, or any dense tile)
};
template <int BN>
__device__ __forceinline__ KvStep kv_step(const KvWalk& w, int it) {
  KvStep s;
  if (!w.sparse) {
    s.kv0 = w.kv_lo + it * BN;
    s.hi = w.kv_hi;
    s.mod = true;
    return s;
  }
  const int j = w.first + it;
  const bool full = j < w.n_full_steps;
  const int jj = full ? j : j - w.n_full_steps;
  const int jb = jj / w.tpb;
  const int blk = ldg_i32((full ? w.full_idx : w.part_idx) + jb);
  const int start = blk * w.kvb;
  s.kv0 = start + (jj - jb * w.tpb) * BN;
  s.hi = imin(w.n, start + w.kvb);
  s.mod = !full;
  return s;
}

// Cooperative cp.async of ROWS x D 16-bit rows whose addresses come from
// row_ptr(row) (nullptr: zero-filled, nothing read) into a swizzled SmemTile.
template <int NTH, class Tile, class RowPtr>
__device__ __forceinline__ void load_rows_async(u32 base, const u16* dummy, RowPtr&& row_ptr, int tid) {
  constexpr int kChunks = Tile::kChunks, kStep = NTH / kChunks;
  static_assert(Tile::kRows % kStep == 0, "tile rows must divide among the threads' passes");
  const int ch = tid % kChunks, r0 = tid / kChunks;
#pragma unroll
  for (int i = 0; i < Tile::kRows / kStep; ++i) {
    const int row = r0 + i * kStep;
    const u16* src = row_ptr(row);
    cp_async16(base + Tile::offset(row, ch), src ? src + ch * 8 : dummy, src != nullptr);
  }
}

// K and V rows of one kv tile [kv0, kv0 + BN) below kv_hi, through the page table.
template <class Cfg>
__device__ __forceinline__ void load_kv_tile(const DecodeParams& p, u32 sK, u32 sV, const u16* gK, const u16* gV,
                                             const int* pt, int seq, int kv0, int kv_hi, int tid) {
  typedef typename Cfg::KVTile KVTile;
  constexpr int NTH = Cfg::kThreads, kChunks = KVTile::kChunks, kStep = NTH / kChunks;
  const int lps = p.log2_page_size;
  const int pmask = lps >= 31 ? 0x7fffffff : (1 << lps) - 1;
  // A tile inside one page (contiguous KV; pages of >= BLOCK_N tokens) costs one table load.
  const bool one_page = (kv0 >> lps) == ((kv0 + Cfg::kBlockN - 1) >> lps);
  const i64 page0 = pt ? (i64)ldg_i32(pt + (kv0 >> lps)) : (i64)seq;
  const int ch = tid % kChunks, r0 = tid / kChunks;
#pragma unroll
  for (int i = 0; i < Cfg::kBlockN / kStep; ++i) {
    const int row = r0 + i * kStep, kv = kv0 + row;
    const bool ok = kv < kv_hi;
    const u16* ks = gK;
    const u16* vs = gV;
    if (ok) {
      const i64 page = one_page || !pt ? page0 : (i64)ldg_i32(pt + (kv >> lps));
      const i64 in_page = (i64)(kv & pmask);
      ks = gK + page * p.k_page_stride + in_page * p.k_token_stride + ch * 8;
      vs = gV + page * p.v_page_stride + in_page * p.v_token_stride + ch * 8;
    }
    cp_async16(sK + KVTile::offset(row, ch), ks, ok);
    cp_async16(sV + KVTile::offset(row, ch), vs, ok);
  }
}

template <class Cfg, class T>
__device__ __forceinline__ void combine_partials(const DecodeParams& p, const Work& w, const Seq& sq, const TileRows& tr,
                                                 int S, float* sW, float* sL, float* sM);

// Where a fused split launch keeps its arrival counters: one int per row tile
// after the LSE partials (the workspace is sized for them; zero before the
// first launch, and every completed launch leaves them at zero).
__device__ __forceinline__ int* split_counters(const DecodeParams& p, int block_m) {
  return reinterpret_cast<int*>(p.ws_lse + (i64)gridDim.x * block_m);
}

// ---------------------------------------------------------------------------
// The attention kernel body. kFusedCombine: with splits, the last CTA of a row
// tile to finish merges the partials itself (no combine launch).
template <class Cfg, class T, bool kFusedCombine = false>
__device__ __forceinline__ void decode_attn(const DecodeParams& p) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, NTH = Cfg::kThreads, ST = Cfg::kStages, NW = Cfg::kWarps;
  constexpr int MT = Cfg::kMT, NT = Cfg::kNT, KT = Cfg::kKT, DT = Cfg::kDT, PK = Cfg::kPK, WN = Cfg::kWarpN, D = Cfg::kHeadDim;
  typedef typename Cfg::QTile QTile;
  typedef typename Cfg::KVTile KVTile;

  extern __shared__ __align__(128) unsigned char smem[];
  const u32 sQ = smem_u32(smem);
  const u32 sK = sQ + Cfg::kSmemQ;
  const u32 sV = sK + ST * Cfg::kSmemKV;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int S = p.num_splits;
  const Work w = work_of(p, S);
  const Seq sq = seq_of(p, w.seq);
  const TileRows tr = tile_rows<BM>(p, w.hk, w.tile, sq.m);
  if (tr.rows_here <= 0) return;  // a row tile past this sequence's rows (the grid is sized for the longest)
  const int rows_here = tr.rows_here;
  const int i_first = row_of(tr, 0).i, i_last = row_of(tr, rows_here - 1).i;

  // The kv tiles of this row tile, then this split's share of them.
  KvWalk walk;
  walk.sparse = p.kv_num_blocks != nullptr || p.full_kv_num_blocks != nullptr;
  walk.n = sq.n;
  int n_tiles;
  if (!walk.sparse) {
    // Dense: causal bounds the end at the last row's position; the mask's hull
    // (kv_range) bounds both ends. The start is aligned down to a tile so tiles
    // stay BLOCK_N-aligned (pages, splits); the mask mod masks what it adds.
    int kv_total = sq.n;
    if (p.causal) {
      kv_total = imin(sq.n, sq.pos0 + i_last + 1);
      if (kv_total < 0) kv_total = 0;
    }
    int r_lo = 0, r_hi = kv_total;
    kv_hull(p, sq.pos0 + i_first, sq.pos0 + i_last, kv_total, r_lo, r_hi);
    r_lo = r_lo / BN * BN;
    const int len = r_hi > r_lo ? r_hi - r_lo : 0;
    const int chunk = S > 1 ? ((len + S - 1) / S + BN - 1) / BN * BN : len;
    walk.kv_lo = r_lo + imin(len, w.split * chunk);
    walk.kv_hi = r_lo + imin(len, w.split * chunk + chunk);
    n_tiles = (walk.kv_hi - walk.kv_lo + BN - 1) / BN;
    walk.first = 0;
  } else {
    // Block sparse: the lists of this tile's block-mask row (batch, head when
    // the mask has heads, query block = the tile's segment).
    const long long nb = (long long)w.seq * p.bm_num_stride_b + (long long)tr.h0 * p.bm_num_stride_h + tr.qseg;
    const long long ib = (long long)w.seq * p.bm_idx_stride_b + (long long)tr.h0 * p.bm_idx_stride_h +
                         (long long)tr.qseg * p.bm_idx_stride_qb;
    const int nfull = p.full_kv_num_blocks ? ldg_i32(p.full_kv_num_blocks + nb) : 0;
    const int npart = p.kv_num_blocks ? ldg_i32(p.kv_num_blocks + nb) : 0;
    walk.full_idx = p.full_kv_indices ? p.full_kv_indices + ib : nullptr;
    walk.part_idx = p.kv_indices ? p.kv_indices + ib : nullptr;
    walk.kvb = p.bm_kv_block;
    walk.tpb = (walk.kvb + BN - 1) / BN;
    walk.n_full_steps = nfull * walk.tpb;
    const int steps = (nfull + npart) * walk.tpb;
    const int chunk = (steps + S - 1) / S;
    walk.first = imin(steps, w.split * chunk);
    n_tiles = imin(steps, walk.first + chunk) - walk.first;
    walk.kv_lo = 0;
    walk.kv_hi = sq.n;
  }

  const u16* gQ = (const u16*)p.q + (i64)w.seq * p.q_stride_seq;
  const u16* gK = (const u16*)p.k + (i64)w.hk * p.k_head_stride;
  const u16* gV = (const u16*)p.v + (i64)w.hk * p.v_head_stride;
  const int* pt = p.page_table ? p.page_table + (i64)w.seq * p.page_table_stride : nullptr;
  const FlexModArgs args = p.mod;
  (void)args;
  const bool premul = FLEX_HAS_SCORE_MOD ? true : !(p.scale_log2 > 0.f);
  const float dom = premul ? 1.f : p.scale_log2;

  // ---- prologue: Q rows (gathered: token-major, heads of the group adjacent), then ST-1 K/V tiles
  load_rows_async<NTH, QTile>(sQ, (const u16*)p.q, [&](int r) -> const u16* {
    if (r >= rows_here) return nullptr;
    const Row x = row_of(tr, r);
    return gQ + (i64)(sq.tok0 + x.i) * p.q_stride_tok + (i64)x.h * p.q_stride_h;
  }, tid);
#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    if (s < n_tiles) {
      const KvStep st = kv_step<BN>(walk, s);
      load_kv_tile<Cfg>(p, sK + s * Cfg::kSmemKV, sV + s * Cfg::kSmemKV, gK, gV, pt, w.seq, st.kv0, st.hi, tid);
    }
    cp_async_commit();
  }

  // This thread's rows (m16 tile m, half rr: row m*16 + g + 8*rr): position and head for the
  // mods, with rows past the tile clamped to its last row (their results are never stored).
  int pos[MT][2], head[MT][2];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const Row x = row_of(tr, imin(m * 16 + g + 8 * rr, rows_here - 1));
      pos[m][rr] = sq.pos0 + x.i;
      head[m][rr] = x.h;
    }
  const int pos_min = sq.pos0 + i_first;

  RtAcc<MT, DT> o;
  o.zero();
  float row_max[MT][2], row_sum[MT][2];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int r = 0; r < 2; ++r) { row_max[m][r] = neg_inf(); row_sum[m][r] = 0.f; }

  RtA<MT, KT> qreg;
  cp_async_wait<ST - 2>();
  __syncthreads();
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int k = 0; k < KT; ++k) QTile::ldA(qreg.a[m][k], sQ, QTile::lane_base_A(lane), m * 16, k);

  for (int it = 0; it < n_tiles; ++it) {
    cp_async_wait<ST - 2>();
    __syncthreads();  // tile `it` visible to all; slot (it-1)%ST free
    {
      const int nxt = it + ST - 1;
      if (nxt < n_tiles) {
        const int slot = nxt % ST;
        const KvStep st = kv_step<BN>(walk, nxt);
        load_kv_tile<Cfg>(p, sK + slot * Cfg::kSmemKV, sV + slot * Cfg::kSmemKV, gK, gV, pt, w.seq, st.kv0, st.hi, tid);
      }
      cp_async_commit();
    }
    const int slot = it % ST;
    const u32 tK = sK + slot * Cfg::kSmemKV, tV = sV + slot * Cfg::kSmemKV;
    const u32 lbK = opaque(KVTile::lane_base_nk(lane));
    const u32 lbV = opaque(KVTile::lane_base_kn(lane));
    const KvStep step = kv_step<BN>(walk, it);
    const int kv0 = step.kv0, kv_hi = step.hi;
    const int c0 = warp * WN;  // this warp's first column of the tile

    // ---- S = Q · Kᵀ over this warp's columns
    RtAcc<MT, NT> s;
    s.zero();
#pragma unroll
    for (int k = 0; k < KT; ++k)
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        u32 kb[4];
        KVTile::ldB_nk(kb, tK, lbK, c0 + np * 16, k);
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          T::mma(s.c[m][2 * np], qreg.a[m][k], kb[0], kb[1]);
          T::mma(s.c[m][2 * np + 1], qreg.a[m][k], kb[2], kb[3]);
        }
      }

    // ---- mods and masks (bounds, causal diagonal, mask mod), into the softmax domain
    const bool bounds = kv0 + BN > kv_hi;
    const bool diag = p.causal && kv0 + BN - 1 > pos_min;
    if (bounds || diag || FLEX_HAS_MASK_MOD || FLEX_HAS_SCORE_MOD || premul) {
      const int kv_clamp = sq.n - 1;
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int rr = i >> 1;
            const int kv = kv0 + c0 + n * 8 + 2 * t + (i & 1);
            const int kvc = imin(kv, kv_clamp);
            bool keep = true;
            if (bounds) keep = kv < kv_hi;
            if (diag) keep = keep & (kv <= pos[m][rr]);
            float x = s.c[m][n][i];
#if FLEX_HAS_SCORE_MOD
            x = flex_score_mod(x * p.scale, w.seq, head[m][rr], pos[m][rr], kvc, args) * 1.4426950408889634f;
#else
            if (premul) x *= p.scale_log2;
#endif
#if FLEX_HAS_MASK_MOD
            // Non-short-circuit: the mod is evaluated unconditionally (the forward kernels' contract).
            keep = keep & (flex_mask_mod(w.seq, head[m][rr], pos[m][rr], kvc, args) | !step.mod);
#endif
            (void)kvc;
            s.c[m][n][i] = keep ? x : neg_inf();
          }
    }

    // ---- online softmax (per warp), O rescaled, O += P · V over this warp's kv rows
    float alpha[MT][2];
    ::flexattn::flash::online_softmax<MT, NT>(s, row_max, row_sum, alpha, dom);
    ::flexattn::flash::rescale_rows<MT, DT>(o, alpha);
    RtA<MT, PK> pa;
    acc_to_A<T>(pa, s);
#pragma unroll
    for (int k = 0; k < PK; ++k)
#pragma unroll
      for (int dp = 0; dp < DT / 2; ++dp) {
        u32 vb[4];
        KVTile::ldB_kn(vb, tV, lbV, c0 + k * 16, dp);
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          T::mma(o.c[m][2 * dp], pa.a[m][k], vb[0], vb[1]);
          T::mma(o.c[m][2 * dp + 1], pa.a[m][k], vb[2], vb[3]);
        }
      }
  }
  cp_async_wait<0>();
  __syncthreads();  // the pipeline's shared memory is free for the merge

  // ---- merge the warps: row maxima and sums (log2 domain), then the scaled O
  float* sMax = (float*)smem;          // [NW][BM]
  float* sSum = sMax + NW * BM;        // [NW][BM]
  float* sRowL = sSum + NW * BM;       // [BM]: the row's merged sum
  float* sRowM = sRowL + BM;           // [BM]: the row's merged max (log2 domain, 0 when empty)
  float* sO = sRowM + BM;              // [NW][BM][D]
  float lsum[MT][2];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      lsum[m][rr] = quad_sum(row_sum[m][rr]);
      const int r = m * 16 + g + 8 * rr;
      if (t == 0) {
        sMax[warp * BM + r] = row_max[m][rr] * dom;  // -inf stays -inf (dom > 0)
        sSum[warp * BM + r] = lsum[m][rr];
      }
    }
  __syncthreads();
  if (tid < BM) {
    float M = neg_inf();
#pragma unroll
    for (int x = 0; x < NW; ++x) M = fmaxf(M, sMax[x * BM + tid]);
    const float Mu = M == neg_inf() ? 0.f : M;
    float L = 0.f;
#pragma unroll
    for (int x = 0; x < NW; ++x) L += ex2(sMax[x * BM + tid] - Mu) * sSum[x * BM + tid];
    sRowL[tid] = L;
    sRowM[tid] = Mu;
  }
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int r = m * 16 + g + 8 * rr;
      float M = neg_inf();
#pragma unroll
      for (int x = 0; x < NW; ++x) M = fmaxf(M, sMax[x * BM + r]);
      const float Mu = M == neg_inf() ? 0.f : M;
      const float f = ex2(row_max[m][rr] * dom - Mu);  // this warp's weight (0 for a warp that kept nothing)
      float* orow = sO + (warp * BM + r) * D + 2 * t;
#pragma unroll
      for (int d = 0; d < DT; ++d) {
        orow[d * 8] = f == 0.f ? 0.f : o.c[m][d][2 * rr] * f;
        orow[d * 8 + 1] = f == 0.f ? 0.f : o.c[m][d][2 * rr + 1] * f;
      }
    }
  __syncthreads();

  // ---- store: the output (and LSE) rows, or this split's partials
  const bool split = S > 1;
  float* ws_o = split ? p.ws_o + ((i64)w.cta * S + w.split) * BM * D : nullptr;
  for (int e = tid; e < BM * D / 2; e += NTH) {
    const int r = e / (D / 2), d = 2 * (e - r * (D / 2));
    if (r >= rows_here) continue;
    const float L = sRowL[r];
    const bool empty = L == 0.f;  // every key masked; a NaN L is not empty
    const float inv = 1.f / L;
    float a0 = 0.f, a1 = 0.f;
#pragma unroll
    for (int x = 0; x < NW; ++x) {
      a0 += sO[(x * BM + r) * D + d];
      a1 += sO[(x * BM + r) * D + d + 1];
    }
    a0 = empty ? 0.f : a0 * inv;
    a1 = empty ? 0.f : a1 * inv;
    if (split) {
      ws_o[r * D + d] = a0;
      ws_o[r * D + d + 1] = a1;
    } else {
      const Row x = row_of(tr, r);
      u16* orow = (u16*)p.o + (i64)w.seq * p.o_stride_seq + (i64)(sq.tok0 + x.i) * p.o_stride_tok + (i64)x.h * p.o_stride_h;
      st_global_u32(orow + d, T::pack2(a0, a1));
    }
  }
  if (tid < rows_here) {
    const float L = sRowL[tid];
    const float lse2 = L == 0.f ? neg_inf() : sRowM[tid] + lg2(L);
    if (split) {
      p.ws_lse[((i64)w.cta * S + w.split) * BM + tid] = lse2;
    } else if (p.lse != nullptr) {
      const Row x = row_of(tr, tid);
      p.lse[(i64)w.seq * p.lse_stride_seq + (i64)(sq.tok0 + x.i) * p.lse_stride_tok + (i64)x.h * p.lse_stride_h] =
          lse2 * 0.6931471805599453f;
    }
  }
  if (kFusedCombine && split) {
    // Arrival: this CTA's partials are visible device-wide before it counts
    // itself. The last of the S CTAs merges all partials in split order, so the
    // result does not depend on which one came last, and resets the counter.
    __shared__ int s_last;
    __threadfence();
    __syncthreads();
    if (tid == 0) {
      int* count = split_counters(p, BM) + w.cta;
      const int prev = atomicAdd(count, 1);
      s_last = prev == S - 1;
      if (prev == S - 1) atomicExch(count, 0);
    }
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    float* f = (float*)smem;  // the merge's shared memory is free again
    combine_partials<Cfg, T>(p, w, sq, tr, S, f, f + S * BM, f + S * BM + BM);
  }
}

// ---------------------------------------------------------------------------
// The merge itself, for the row tile `w` (sequence, KV head, tile) whose S
// partials sit in the workspace; shared by the combine kernel and by a fused
// launch's last CTA of a row tile. sW: [S][BM] floats, sL/sM: [BM] floats of
// shared memory. Partials are read with ld.global.cg: in the fused path they
// were written by other CTAs of this launch (L1 is not coherent across SMs).
template <class Cfg, class T>
__device__ __forceinline__ void combine_partials(const DecodeParams& p, const Work& w, const Seq& sq, const TileRows& tr,
                                                 int S, float* sW, float* sL, float* sM) {
  constexpr int BM = Cfg::kBlockM, D = Cfg::kHeadDim, NTH = Cfg::kThreads;
  const int tid = threadIdx.x;
  const int rows_here = tr.rows_here;
  const float* wl = p.ws_lse + (i64)w.cta * S * BM;
  const float* wo = p.ws_o + (i64)w.cta * S * BM * D;
  if (tid < BM) {
    float M = neg_inf();
    bool nan = false;
    for (int x = 0; x < S; ++x) {
      const float l = __ldcg(wl + x * BM + tid);
      nan |= l != l;
      M = fmaxf(M, l);
    }
    const float Mu = M == neg_inf() ? 0.f : M;
    float L = 0.f;
    for (int x = 0; x < S; ++x) {
      const float wx = ex2(__ldcg(wl + x * BM + tid) - Mu);
      sW[x * BM + tid] = wx;
      L += wx;
    }
    sL[tid] = nan ? __int_as_float(0x7fffffff) : L;
    sM[tid] = Mu;
  }
  __syncthreads();
  for (int e = tid; e < BM * D / 2; e += NTH) {
    const int r = e / (D / 2), d = 2 * (e - r * (D / 2));
    if (r >= rows_here) continue;
    const float L = sL[r];
    float a0 = 0.f, a1 = 0.f;
    for (int x = 0; x < S; ++x) {
      const float wx = sW[x * BM + r];
      if (wx != 0.f) {  // an empty split's O is 0 (a NaN weight still reads and poisons)
        const float2 ov = __ldcg(reinterpret_cast<const float2*>(wo + (x * BM + r) * D + d));
        a0 += wx * ov.x;
        a1 += wx * ov.y;
      }
    }
    const bool empty = L == 0.f;
    const float inv = 1.f / L;
    const Row x = row_of(tr, r);
    u16* orow = (u16*)p.o + (i64)w.seq * p.o_stride_seq + (i64)(sq.tok0 + x.i) * p.o_stride_tok + (i64)x.h * p.o_stride_h;
    st_global_u32(orow + d, T::pack2(empty ? 0.f : a0 * inv, empty ? 0.f : a1 * inv));
  }
  if (tid < rows_here && p.lse != nullptr) {
    const float L = sL[tid];
    const Row x = row_of(tr, tid);
    p.lse[(i64)w.seq * p.lse_stride_seq + (i64)(sq.tok0 + x.i) * p.lse_stride_tok + (i64)x.h * p.lse_stride_h] =
        L == 0.f ? neg_inf() : (sM[tid] + lg2(L)) * 0.6931471805599453f;
  }
}

// Split-KV combine: out = sum_x 2^(lse_x - M) O_x / sum_x 2^(lse_x - M), one CTA per
// (sequence, KV head, row tile); grid x = ((s * Hkv + hk) * row_tiles + tile).
// A NaN partial makes the row NaN; a row every split found empty gives 0 and LSE -inf.
template <class Cfg, class T>
__device__ __forceinline__ void decode_combine(const DecodeParams& p) {
  constexpr int BM = Cfg::kBlockM;
  __shared__ float sW[::flexattn::iface::kDecodeMaxSplits * BM];
  __shared__ float sL[BM], sM[BM];
  const Work w = work_of(p, 1);
  const Seq sq = seq_of(p, w.seq);
  const TileRows tr = tile_rows<BM>(p, w.hk, w.tile, sq.m);
  if (tr.rows_here <= 0) return;
  combine_partials<Cfg, T>(p, w, sq, tr, imin(p.num_splits, ::flexattn::iface::kDecodeMaxSplits), sW, sL, sM);
}

}  // namespace decode
}  // namespace flexattn

// ---------------------------------------------------------------------------
// Instantiation (nvcc precompiled and NVRTC JIT alike). With mods prepended,
// FLEXATTN_DECODE_KERNEL makes a flex decode kernel; the combine never reads
// the mods and is precompiled once per head dim and dtype.
#define FLEXATTN_DECODE_KERNEL(NAME, HEAD_DIM, DTYPE)                                                  \
  extern "C" __constant__ int NAME##_cfg[::flexattn::kDecodeCfgInts] = {                              \
      FLEXATTN_DECODE_CFG_VALUES(::flexattn::decode::DecodeConfig<HEAD_DIM>)};                         \
  extern "C" __global__ void __launch_bounds__(::flexattn::decode::DecodeConfig<HEAD_DIM>::kThreads, 2) \
      NAME(const __grid_constant__ ::flexattn::DecodeParams p) {                                       \
    ::flexattn::decode::decode_attn<::flexattn::decode::DecodeConfig<HEAD_DIM>, ::flexattn::tiles::DTYPE>(p); \
  }

#define FLEXATTN_DECODE_COMBINE_KERNEL(NAME, HEAD_DIM, DTYPE)                                          \
  extern "C" __constant__ int NAME##_cfg[::flexattn::kDecodeCfgInts] = {                              \
      FLEXATTN_DECODE_CFG_VALUES(::flexattn::decode::CombineConfig<HEAD_DIM>)};                        \
  extern "C" __global__ void __launch_bounds__(::flexattn::decode::CombineConfig<HEAD_DIM>::kThreads)  \
      NAME(const __grid_constant__ ::flexattn::DecodeParams p) {                                       \
    ::flexattn::decode::decode_combine<::flexattn::decode::CombineConfig<HEAD_DIM>, ::flexattn::tiles::DTYPE>(p); \
  }

#define FLEXATTN_DECODE_VARIANTS(HEAD_DIM, DTYPE)                                            \
  FLEXATTN_DECODE_KERNEL(flexattn_decode_d##HEAD_DIM##_##DTYPE, HEAD_DIM, DTYPE)             \
  FLEXATTN_DECODE_COMBINE_KERNEL(flexattn_decode_combine_d##HEAD_DIM##_##DTYPE, HEAD_DIM, DTYPE)

// Every precompiled decode kernel: flexattn_decode[_combine]_d{64,128}_{bf16,f16}
#define FLEXATTN_DECODE_ALL()                                                                \
  FLEXATTN_DECODE_VARIANTS(64, bf16) FLEXATTN_DECODE_VARIANTS(64, f16)                       \
  FLEXATTN_DECODE_VARIANTS(128, bf16) FLEXATTN_DECODE_VARIANTS(128, f16)
