// decode_bulk.cuh — harness-only Hopper (sm_90a) variant of the decode kernel
// (native/kernels/decode.cuh) whose K/V tiles arrive by bulk asynchronous copies
// (cp.async.bulk ... mbarrier::complete_tx::bytes) issued by a producer warp into
// an ST-stage shared ring with full/empty mbarriers per stage. Everything else —
// work split, GQA row packing, kv walk (dense hull / block sparse), mods and masks,
// online softmax, the warps' merge, split-KV partials for the same combine kernel —
// is decode_attn's, reached through decode.cuh's helpers; the body differs from
// decode_attn only in where a tile comes from and in the barriers.
//
// Why one 1-D bulk copy per token row (D*2 = 256 bytes at D 128), not one per tile:
// the consumers read K and V with ldmatrix, whose 8 row addresses of a phase must fall
// in 8 distinct 16-byte bank groups. A whole contiguous tile copied as one linear
// range has 256-byte rows (every row of a phase on the same banks: 8-way conflicts on
// every K and V fragment), and a 1-D copy cannot swizzle. Per-row copies land each row
// at a 272-byte pitch (17 chunks: SmemTile's padded layout), conflict-free, and the
// same code serves the paged pool, where a head's token row is the only contiguous
// unit anyway (stride Hkv*D*2), through the same page-table lookup as load_kv_tile.
// A 2-D/3-D tensor map with 128-byte swizzle would cut the op count (2 per K tile of
// a contiguous cache) but needs a CUtensorMap per K/V built on the host for every
// cache layout and a kernel parameter DecodeParams does not have; it is the next
// step if the row copies turn out issue-bound (128 copies per 64-token tile: 4 per
// producer lane).
//
// Rows past the tile's end (kv >= hi) get no copy: the producer zero-fills them with
// shared stores (a V row of garbage could hold NaN, and P = 0 times NaN is NaN), as
// cp.async's zero-fill does in decode.cuh, and the full barrier expects only the
// copied bytes.
//
// Threads: W consumer warps (decode_attn's warps: each a BN/W-column slice of every
// tile) + one producer warp. Consumers synchronise among themselves with named
// barrier 1 (the producer leaves after its last tile). DEC_DEBUG_TIMEOUT: every
// mbarrier wait gives up after ~2^26 polls (or once another thread of the grid has),
// recording {count, block, thread, tag*2+parity} in ws_debug_timeout (sm90_ws_pipeline.cuh), so a deadlock
// ends the kernel with a wrong answer instead of a hang (no trap/printf in the loop).
#pragma once

#include "../../native/kernels/decode.cuh"
#if defined(DEC_DEBUG_TIMEOUT) && !defined(WS_DEBUG_TIMEOUT)
#define WS_DEBUG_TIMEOUT  // bounded mbarrier waits (sm90_ws_pipeline.cuh)
#endif
#include "../../native/kernels/sm90_ws_pipeline.cuh"

namespace flexattn {
namespace decode_bulk {

using namespace ::flexattn::tiles;
using namespace ::flexattn::decode;

// ---------------------------------------------------------------------------
// mbarrier primitives: the warp-specialised kernels' (sm90_ws_pipeline.cuh; its debug build is this
// file's DEC_DEBUG_TIMEOUT, recording in ws_debug_timeout). Bulk copies and fences below.
using ::flexattn::ws90::mbar_arrive;
using ::flexattn::ws90::mbar_expect_tx;
using ::flexattn::ws90::mbar_init;
using ::flexattn::ws90::mbar_init_fence;
using ::flexattn::ws90::mbar_wait;
// One contiguous global range into shared memory; completion counted on `bar` in bytes.
// (shared::cluster with this CTA's own address: a launch without clusters is a cluster of one.)
__device__ __forceinline__ void bulk_g2s(u32 dst, const void* src, u32 bytes, u32 bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
               ::"r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
template <int NTH>
__device__ __forceinline__ void consumer_sync() { asm volatile("bar.sync 1, %0;" ::"n"(NTH) : "memory"); }

// ---------------------------------------------------------------------------
// ROWS x D 16-bit rows at a pitch of D*2 + 16 bytes (an odd number of 16-byte chunks:
// the 8 rows of an ldmatrix phase hit 8 distinct bank groups), so each row can be one
// linear bulk copy. Same ldmatrix interface as SmemTile (whose D 128 rows are swizzled).
template <int ROWS, int D>
struct PadTile {
  static constexpr int kRows = ROWS;
  static constexpr int kChunks = D / 8;
  static constexpr int kRowBytes = D * 2 + 16;
  static constexpr int kBytes = ROWS * kRowBytes;
  static_assert(((kRowBytes / 16) & 1) == 1, "odd chunk pitch");
  static __device__ __forceinline__ u32 offset(int row, int chunk) { return (u32)(row * kRowBytes + chunk * 16); }
  static __device__ __forceinline__ u32 at(u32 lb, int r0, int cp) { return lb + (u32)(cp * 32 + r0 * kRowBytes); }
  static __device__ __forceinline__ u32 lane_base_nk(int lane) { return offset((lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1); }
  static __device__ __forceinline__ u32 lane_base_kn(int lane) { return offset((lane & 7) + (((lane >> 3) & 1) << 3), lane >> 4); }
  static __device__ __forceinline__ void ldB_nk(u32 (&r)[4], u32 tile, u32 lb, int n0, int kt) { ldsm_x4(r, tile + at(lb, n0, kt)); }
  static __device__ __forceinline__ void ldB_kn(u32 (&r)[4], u32 tile, u32 lb, int k0, int np) { ldsm_x4_trans(r, tile + at(lb, k0, np)); }
};

// Tile config: the fields of decode.cuh's DecodeConfig (and <name>_cfg's), with
// kThreads = consumers + the producer warp and the padded K/V ring.
template <int D, int BM, int BN, int W, int ST>
struct BulkCfg {
  static constexpr int kHeadDim = D, kBlockM = BM, kBlockN = BN, kWarps = W, kStages = ST;
  static constexpr int kConsumers = 32 * W;
  static constexpr int kThreads = kConsumers + 32;
  static constexpr int kMT = BM / 16, kWarpN = BN / W, kNT = kWarpN / 8, kPK = kWarpN / 16, kKT = D / 16, kDT = D / 8;
  typedef SmemTile<BM, D> QTile;
  typedef PadTile<BN, D> KVTile;
  static constexpr int kRowBytes = D * 2;  // one token row of one head in global memory: one bulk copy
  static constexpr int kSmemQ = QTile::kBytes;
  static constexpr int kSmemKV = KVTile::kBytes;
  static constexpr int kSmemPipe = kSmemQ + 2 * ST * kSmemKV;
  static constexpr int kSmemMerge = (2 * W * BM + 2 * BM + W * BM * D) * 4;
  static constexpr int kSmemBytes = kSmemPipe > kSmemMerge ? kSmemPipe : kSmemMerge;
  static_assert(BM % 16 == 0 && kWarpN % 16 == 0 && D % 16 == 0, "decode tile shape");
  static_assert(kConsumers % (D / 8) == 0, "a Q row's chunks must divide the consumer threads");
  static_assert(BN % 32 == 0, "the producer lanes take BN / 32 rows each");
  static_assert(kRowBytes % 16 == 0 && (kSmemQ % 16) == 0, "bulk copies move 16-byte multiples to 16-byte aligned addresses");
  static_assert(kSmemBytes <= 232448, "sm_90 opt-in shared memory per block is 227 KB");
};

// ---------------------------------------------------------------------------
// The producer warp: for each kv tile, wait for the slot to be free, zero the rows
// past the tile's end, announce the bytes on the slot's full barrier (lane 0), then
// each lane copies rows lane, lane + 32, ... of K and of V.
template <class Cfg>
__device__ __forceinline__ void produce(const DecodeParams& p, const KvWalk& walk, int n_tiles, u32 sK, u32 sV,
                                        u32 full0, u32 empty0, const u16* gK, const u16* gV, const int* pt, int seq,
                                        int lane) {
  constexpr int BN = Cfg::kBlockN, ST = Cfg::kStages, RB = Cfg::kRowBytes;
  typedef typename Cfg::KVTile KVTile;
  const int lps = p.log2_page_size;
  const int pmask = lps >= 31 ? 0x7fffffff : (1 << lps) - 1;
#pragma unroll 1
  for (int it = 0; it < n_tiles; ++it) {
    const int slot = it % ST;
    const u32 full = full0 + 8 * slot, empty = empty0 + 8 * slot;
    if (it >= ST) mbar_wait(empty, (u32)((it / ST - 1) & 1), 1);
    const KvStep st = kv_step<BN>(walk, it);
    const int nvalid = st.hi > st.kv0 ? imin(BN, st.hi - st.kv0) : 0;
    const u32 tK = sK + slot * Cfg::kSmemKV, tV = sV + slot * Cfg::kSmemKV;
    if (nvalid < BN) {  // a tail tile: zero the rows no copy fills (generic stores; a later bulk write follows a proxy fence)
      for (int r = nvalid + lane; r < BN; r += 32)
#pragma unroll
        for (int c = 0; c < KVTile::kChunks; ++c) {
          asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};" ::"r"(tK + KVTile::offset(r, c)), "r"(0) : "memory");
          asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};" ::"r"(tV + KVTile::offset(r, c)), "r"(0) : "memory");
        }
      fence_proxy_async_smem();
    }
    __syncwarp();
    if (lane == 0) mbar_expect_tx(full, (u32)(nvalid * 2 * RB));  // the one arrival of this phase
    __syncwarp();
    // A tile inside one page (contiguous KV; pages of >= BN tokens) costs one table load.
    const bool one_page = (st.kv0 >> lps) == ((st.kv0 + BN - 1) >> lps);
    const i64 page0 = pt ? (i64)ldg_i32(pt + (st.kv0 >> lps)) : (i64)seq;
#pragma unroll
    for (int i = 0; i < BN / 32; ++i) {
      const int r = lane + 32 * i, kv = st.kv0 + r;
      if (r < nvalid) {
        const i64 page = one_page || !pt ? page0 : (i64)ldg_i32(pt + (kv >> lps));
        const i64 in_page = (i64)(kv & pmask);
        bulk_g2s(tK + KVTile::offset(r, 0), gK + page * p.k_page_stride + in_page * p.k_token_stride, RB, full);
        bulk_g2s(tV + KVTile::offset(r, 0), gV + page * p.v_page_stride + in_page * p.v_token_stride, RB, full);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// The kernel body (decode_attn with the loads above; no fused combine).
template <class Cfg, class T>
__device__ __forceinline__ void decode_attn_bulk(const DecodeParams& p) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, NC = Cfg::kConsumers, ST = Cfg::kStages, NW = Cfg::kWarps;
  constexpr int MT = Cfg::kMT, NT = Cfg::kNT, KT = Cfg::kKT, DT = Cfg::kDT, PK = Cfg::kPK, WN = Cfg::kWarpN, D = Cfg::kHeadDim;
  typedef typename Cfg::QTile QTile;
  typedef typename Cfg::KVTile KVTile;

  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ __align__(8) unsigned long long bars[2 * ST];  // full[ST], empty[ST]
  const u32 sQ = smem_u32(smem);
  const u32 sK = sQ + Cfg::kSmemQ;
  const u32 sV = sK + ST * Cfg::kSmemKV;
  const u32 full0 = smem_u32(bars), empty0 = full0 + 8 * ST;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int S = p.num_splits;
  const Work w = work_of(p, S);
  const Seq sq = seq_of(p, w.seq);
  const TileRows tr = tile_rows<BM>(p, w.hk, w.tile, sq.m);
  if (tr.rows_here <= 0) return;  // the whole CTA, before any barrier
  const int rows_here = tr.rows_here;
  const int i_first = row_of(tr, 0).i, i_last = row_of(tr, rows_here - 1).i;

  // ---- the kv tiles of this row tile and split (decode_attn's walk)
  KvWalk walk;
  walk.sparse = p.kv_num_blocks != nullptr || p.full_kv_num_blocks != nullptr;
  walk.n = sq.n;
  int n_tiles;
  if (!walk.sparse) {
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

  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < ST; ++s) {
      mbar_init(full0 + 8 * s, 1);    // the producer's expect_tx arrival (+ the copies' bytes)
      mbar_init(empty0 + 8 * s, NW);  // one arrival per consumer warp
    }
    mbar_init_fence();
  }
  __syncthreads();  // the last barrier of all threads: from here the producer warp runs on its own

  if (warp == NW) {
    produce<Cfg>(p, walk, n_tiles, sK, sV, full0, empty0, gK, gV, pt, w.seq, lane);
    return;
  }

  // ================= consumers (NC threads, named barrier 1)
  const FlexModArgs args = p.mod;
  (void)args;
  const bool premul = FLEX_HAS_SCORE_MOD ? true : !(p.scale_log2 > 0.f);
  const float dom = premul ? 1.f : p.scale_log2;

  load_rows_async<NC, QTile>(sQ, (const u16*)p.q, [&](int r) -> const u16* {
    if (r >= rows_here) return nullptr;
    const Row x = row_of(tr, r);
    return gQ + (i64)(sq.tok0 + x.i) * p.q_stride_tok + (i64)x.h * p.q_stride_h;
  }, tid);
  cp_async_commit();

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
  cp_async_wait<0>();
  consumer_sync<NC>();
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int k = 0; k < KT; ++k) QTile::ldA(qreg.a[m][k], sQ, QTile::lane_base_A(lane), m * 16, k);

#pragma unroll 1
  for (int it = 0; it < n_tiles; ++it) {
    const int slot = it % ST;
    mbar_wait(full0 + 8 * slot, (u32)((it / ST) & 1), 0);
    const u32 tK = sK + slot * Cfg::kSmemKV, tV = sV + slot * Cfg::kSmemKV;
    const u32 lbK = opaque(KVTile::lane_base_nk(lane));
    const u32 lbV = opaque(KVTile::lane_base_kn(lane));
    const KvStep step = kv_step<BN>(walk, it);
    const int kv0 = step.kv0, kv_hi = step.hi;
    const int c0 = warp * WN;

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
            keep = keep & (flex_mask_mod(w.seq, head[m][rr], pos[m][rr], kvc, args) | !step.mod);
#endif
            (void)kvc;
            s.c[m][n][i] = keep ? x : neg_inf();
          }
    }

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
    // this warp is done with the slot (its ldmatrix results are in registers)
    __syncwarp();
    if (lane == 0) mbar_arrive(empty0 + 8 * slot);
  }
  consumer_sync<NC>();  // every tile consumed (so every copy landed): the ring's memory is free for the merge

  // ---- merge the warps (decode_attn's)
  float* sMax = (float*)smem;
  float* sSum = sMax + NW * BM;
  float* sRowL = sSum + NW * BM;
  float* sRowM = sRowL + BM;
  float* sO = sRowM + BM;
  float lsum[MT][2];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      lsum[m][rr] = quad_sum(row_sum[m][rr]);
      const int r = m * 16 + g + 8 * rr;
      if (t == 0) {
        sMax[warp * BM + r] = row_max[m][rr] * dom;
        sSum[warp * BM + r] = lsum[m][rr];
      }
    }
  consumer_sync<NC>();
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
      const float f = ex2(row_max[m][rr] * dom - Mu);
      float* orow = sO + (warp * BM + r) * D + 2 * t;
#pragma unroll
      for (int d = 0; d < DT; ++d) {
        orow[d * 8] = f == 0.f ? 0.f : o.c[m][d][2 * rr] * f;
        orow[d * 8 + 1] = f == 0.f ? 0.f : o.c[m][d][2 * rr + 1] * f;
      }
    }
  consumer_sync<NC>();

  // ---- store: the output (and LSE) rows, or this split's partials for the combine kernel
  const bool split = S > 1;
  float* ws_o = split ? p.ws_o + ((i64)w.cta * S + w.split) * BM * D : nullptr;
  for (int e = tid; e < BM * D / 2; e += NC) {
    const int r = e / (D / 2), d = 2 * (e - r * (D / 2));
    if (r >= rows_here) continue;
    const float L = sRowL[r];
    const bool empty = L == 0.f;
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
}

}  // namespace decode_bulk
}  // namespace flexattn

// dec_d128_<NAME>: bf16, D 128, BLOCK_M 16 (+ its _cfg, the same 8 ints as the other decode kernels).
#define DEC_BULK(NAME, BN, W, ST, MINB)                                                                          \
  typedef ::flexattn::decode_bulk::BulkCfg<128, 16, BN, W, ST> Cfg_##NAME;                                     \
  extern "C" __constant__ int dec_d128_##NAME##_cfg[::flexattn::kDecodeCfgInts] = {                            \
      FLEXATTN_DECODE_CFG_VALUES(Cfg_##NAME)};                                                                 \
  extern "C" __global__ void __launch_bounds__(Cfg_##NAME::kThreads, MINB)                                     \
      dec_d128_##NAME(const __grid_constant__ ::flexattn::DecodeParams p) {                                    \
    ::flexattn::decode_bulk::decode_attn_bulk<Cfg_##NAME, ::flexattn::tiles::bf16>(p);                         \
  }
