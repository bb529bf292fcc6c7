// sm90_ws.cuh — harness-only Hopper forward with warp specialisation (issue 20,
// first step; NOT in the library and not yet run on a GPU). FA3's published
// design is the model; the code is ours and reuses the library's wgmma
// wrappers (wgmma_ops.cuh) and 128-byte-swizzle descriptors (tiles_sm90.cuh).
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
// -DWS_DEBUG_TIMEOUT: every mbarrier wait polls with test_wait and traps after
// 2^26 polls (printing block, thread and barrier), so a deadlock fails fast.
#pragma once

#include <cuda.h>   // CUtensorMap (the host encodes it with cuTensorMapEncodeTiled)

#include "../../native/kernels/tiles_sm90.cuh"

namespace flexattn {
namespace ws90 {

using namespace ::flexattn::tiles;
using ::flexattn::sm90::Sw128Tile;

// ---------------------------------------------------------------------------
// Kernel parameters other than the tensor maps (the runner packs this struct:
// run_sm90_ws.py WS_PARAMS, keep the two in step).
struct WsParams {
  void* o;                 // [B, Hq, Sq, D] contiguous, same dtype as q
  float* lse;              // [B, Hq, Sq] natural log, -inf for an empty row; may be null
  int B, Hq, Hkv, Sq, Skv;
  int gqa_group;           // Hq / Hkv
  float scale_log2;        // softmax scale * log2(e)
  int num_m_blocks;        // ceil(Sq / 128)
  int group_heads;         // tile scheduler: (b, h) pairs per group (see tile_scheduler)
  int pad_;
};

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
  static_assert(BN_ == 64 || BN_ == 128, "BLOCK_N 64 or 128 (wgmma n and the TMA box)");
  static_assert(kSmemBytes <= 232448, "sm_90 opt-in shared memory per block is 227 KB");
};

// ---------------------------------------------------------------------------
// mbarrier / TMA / named barrier / setmaxnreg primitives (PTX ISA 8.x, sm_90).
__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(u32 bar, u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u32 bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ bool mbar_try_wait(u32 bar, u32 parity) {
  u32 ok;
#ifdef WS_DEBUG_TIMEOUT
  // non-blocking test: the poll count bounds the wall time (~seconds)
  asm volatile("{\n.reg .pred p;\nmbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}"
               : "=r"(ok) : "r"(bar), "r"(parity) : "memory");
#else
  asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}"
               : "=r"(ok) : "r"(bar), "r"(parity) : "memory");
#endif
  return ok != 0;
}
// Wait until the phase of parity `parity` of `bar` has completed. `tag` names
// the barrier in the debug build's trap message.
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity, int tag) {
#ifdef WS_DEBUG_TIMEOUT
  for (u32 polls = 0; !mbar_try_wait(bar, parity); ++polls) {
    if (polls == (1u << 26)) {
      printf("sm90_ws: mbarrier wait timed out: block %d thread %d barrier tag %d parity %u\n",
             (int)blockIdx.x, (int)threadIdx.x, tag, parity);
      __trap();
    }
  }
#else
  (void)tag;
  while (!mbar_try_wait(bar, parity)) {
  }
#endif
}
// 3-D tiled TMA load into shared memory, completing `bytes` on `bar`.
__device__ __forceinline__ void tma_load_3d(u32 dst, const CUtensorMap* map, u32 bar, int c0, int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];"
      ::"r"(dst), "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(bar) : "memory");
}
__device__ __forceinline__ void tma_prefetch_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(map) : "memory");
}
__device__ __forceinline__ void named_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void named_arrive(int id, int count) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(count) : "memory");
}
template <int N> __device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(N)); }
template <int N> __device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(N)); }

template <int N>
__device__ __forceinline__ void fence_u32(u32 (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
}

// ---------------------------------------------------------------------------
// Pipeline state: ring slot and the parity of the phase the slot is in.
// Consumers wait on full[index] for `phase`; the producer waits on
// empty[index] for phase ^ 1 (a fresh barrier's "previous" phase counts as
// complete, so the first ST waits pass at once).
template <int ST>
struct PipeState {
  int index = 0;
  u32 phase = 0;
  __device__ __forceinline__ void advance() {
    if (++index == ST) { index = 0; phase ^= 1u; }
  }
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

// ---------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------
// Producer: one thread. Each tile is kPanels TMA boxes of {64 columns, rows}.
template <class Cfg, bool kCausal>
__device__ __forceinline__ void producer(const Smem<Cfg>& sm, const CUtensorMap* tmQ, const CUtensorMap* tmK,
                                         const CUtensorMap* tmV, const WsParams& p, const WorkTile& w, int n_tiles) {
  constexpr int ST = Cfg::kStages;
  const int q0 = w.m_block * Cfg::kBlockM;
  const int bhq = w.b * p.Hq + w.h;
  const int bhk = w.b * p.Hkv + w.h / p.gqa_group;
  mbar_expect_tx(sm.q_full(), Cfg::kQBytes);
#pragma unroll
  for (int c = 0; c < Cfg::kPanels; ++c)
    tma_load_3d(sm.q + c * Cfg::QTile::kPanelBytes, tmQ, sm.q_full(), c * 64, q0, bhq);

  PipeState<ST> ks, vs;   // producer's write positions
  auto load_k = [&](int n) {
    mbar_wait(sm.k_empty(ks.index), ks.phase ^ 1u, 10 + ks.index);
    mbar_expect_tx(sm.k_full(ks.index), Cfg::kKVBytes);
#pragma unroll
    for (int c = 0; c < Cfg::kPanels; ++c)
      tma_load_3d(sm.k_tile(ks.index) + c * Cfg::KVTile::kPanelBytes, tmK, sm.k_full(ks.index), c * 64,
                  n * Cfg::kBlockN, bhk);
    ks.advance();
  };
  auto load_v = [&](int n) {
    mbar_wait(sm.v_empty(vs.index), vs.phase ^ 1u, 20 + vs.index);
    mbar_expect_tx(sm.v_full(vs.index), Cfg::kKVBytes);
#pragma unroll
    for (int c = 0; c < Cfg::kPanels; ++c)
      tma_load_3d(sm.v_tile(vs.index) + c * Cfg::KVTile::kPanelBytes, tmV, sm.v_full(vs.index), c * 64,
                  n * Cfg::kBlockN, bhk);
    vs.advance();
  };
  if (n_tiles == 0) return;
  load_k(0);
  for (int n = 1; n < n_tiles; ++n) {
    load_k(n);
    load_v(n - 1);
  }
  load_v(n_tiles - 1);
}

// ---------------------------------------------------------------------------
// Consumer pieces (one warpgroup, 64 query rows; accumulators in the wgmma
// m64nN layout: warp w of the group holds rows 16 w + g and 16 w + g + 8,
// element 4 j + i at column 8 j + 2 t + (i & 1), row + 8 (i >> 1)).
template <int N, class Ops>
__device__ __forceinline__ void mma_ss(float (&d)[N / 2], u64 da, u64 db, int scale_d) {
  if constexpr (N == 64) Ops::ss64(d, da, db, scale_d);
  else Ops::ss128(d, da, db, scale_d);
}
template <int N, class Ops>
__device__ __forceinline__ void mma_rs(float (&d)[N / 2], const u32 (&a)[4], u64 db, int scale_d) {
  if constexpr (N == 64) Ops::rs64(d, a, db, scale_d);
  else Ops::rs128(d, a, db, scale_d);
}

// S = Q[rows of this warpgroup] · K_tileᵀ, issued and committed (not waited).
template <class Cfg, class Ops>
__device__ __forceinline__ void issue_qk(float (&s)[Cfg::kBlockN / 2], u32 sQ, int wg, u32 tK) {
  ::flexattn::sm90::warpgroup_fence();
#pragma unroll
  for (int k = 0; k < Cfg::kKT; ++k)
    mma_ss<Cfg::kBlockN, Ops>(s, Cfg::QTile::desc_k_major(sQ, wg * 64, k), Cfg::KVTile::desc_k_major(tK, 0, k), k > 0);
  ::flexattn::sm90::warpgroup_commit();
}
// O += P · V_tile (P from registers), issued and committed.
template <class Cfg, class Ops>
__device__ __forceinline__ void issue_pv(float (&o)[Cfg::kHeadDim / 2], const u32 (&pa)[Cfg::kPK][4], u32 tV) {
  ::flexattn::sm90::warpgroup_fence();
#pragma unroll
  for (int k = 0; k < Cfg::kPK; ++k) mma_rs<Cfg::kHeadDim, Ops>(o, pa[k], Cfg::KVTile::desc_mn_major(tV, k), 1);
  ::flexattn::sm90::warpgroup_commit();
}

// Scale (when the scale is not positive: max does not commute with it) and
// mask one S tile in place: kv >= Skv, and kv > q under causal, -> -inf.
template <class Cfg, bool kCausal>
__device__ __forceinline__ void mask_tile(float (&s)[Cfg::kBlockN / 2], int row0, int kv0, int Skv, bool premul,
                                          float scale_log2, bool need_mask, int lane) {
  if (premul) {
#pragma unroll
    for (int i = 0; i < Cfg::kBlockN / 2; ++i) s[i] *= scale_log2;
  }
  if (!need_mask) return;
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int j = 0; j < Cfg::kNT; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int kv = kv0 + 8 * j + 2 * t + (i & 1);
      const int q = row0 + g + 8 * (i >> 1);
      bool keep = kv < Skv;
      if (kCausal) keep = keep && kv <= q;
      if (!keep) s[4 * j + i] = neg_inf();
    }
}

// Online softmax over one tile for the thread's two rows: new row max, the
// factor alpha that rescales what O holds, P = exp2(S·dom − max·dom) in
// place, thread-partial row sums (quad-reduced in the epilogue).
template <int NT>
__device__ __forceinline__ void online_softmax(float (&s)[NT * 4], float (&row_max)[2], float (&row_sum)[2],
                                               float (&alpha)[2], float dom) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = row_max[r];
#pragma unroll
    for (int j = 0; j < NT; ++j) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * r], s[4 * j + 2 * r + 1]));
    mx = quad_max(mx);
    const float m_use = mx == neg_inf() ? 0.f : mx;   // fully masked so far: no -inf - -inf
    const float m_dom = m_use * dom;
    alpha[r] = ex2((row_max[r] - m_use) * dom);       // first tile: ex2(-inf) = 0
    row_max[r] = mx;
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const float p0 = ex2(fmaf(s[4 * j + 2 * r], dom, -m_dom));
      const float p1 = ex2(fmaf(s[4 * j + 2 * r + 1], dom, -m_dom));
      s[4 * j + 2 * r] = p0;
      s[4 * j + 2 * r + 1] = p1;
      sum += p0 + p1;
    }
    row_sum[r] = row_sum[r] * alpha[r] + sum;
  }
}

template <int DT>
__device__ __forceinline__ void rescale_o(float (&o)[DT * 4], const float (&alpha)[2]) {
#pragma unroll
  for (int j = 0; j < DT; ++j) {
    o[4 * j + 0] *= alpha[0];
    o[4 * j + 1] *= alpha[0];
    o[4 * j + 2] *= alpha[1];
    o[4 * j + 3] *= alpha[1];
  }
}

// P (f32 accumulators) -> the RS wgmma's A fragments (16-bit pairs).
template <class T, int PK>
__device__ __forceinline__ void p_to_a(u32 (&pa)[PK][4], const float (&s)[PK * 8]) {
#pragma unroll
  for (int k = 0; k < PK; ++k) {
    pa[k][0] = T::pack2(s[8 * k + 0], s[8 * k + 1]);
    pa[k][1] = T::pack2(s[8 * k + 2], s[8 * k + 3]);
    pa[k][2] = T::pack2(s[8 * k + 4], s[8 * k + 5]);
    pa[k][3] = T::pack2(s[8 * k + 6], s[8 * k + 7]);
  }
}

// Epilogue: O / l from registers (rows < Sq), LSE = (max·dom + log2 l)·ln 2.
template <class T, int DT>
__device__ __forceinline__ void store_output(const float (&o)[DT * 4], const float (&row_max)[2],
                                             const float (&row_sum)[2], const WsParams& p, int b, int h, int row0,
                                             float dom, int lane) {
  const int g = lane >> 2, t = lane & 3;
  u16* gO = (u16*)p.o + ((i64)b * p.Hq + h) * (i64)p.Sq * (DT * 8);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float l = quad_sum(row_sum[r]);
    const bool empty = l == 0.f;   // fully masked row (Skv = 0); NaN l is not empty
    const float inv = 1.f / l;
    const int q = row0 + g + 8 * r;
    if (q < p.Sq) {
      u16* orow = gO + (i64)q * (DT * 8) + 2 * t;
#pragma unroll
      for (int j = 0; j < DT; ++j)
        st_global_u32(orow + 8 * j, T::pack2(empty ? 0.f : o[4 * j + 2 * r] * inv, empty ? 0.f : o[4 * j + 2 * r + 1] * inv));
      if (p.lse != nullptr && t == 0)
        p.lse[((i64)b * p.Hq + h) * p.Sq + q] = empty ? neg_inf() : (row_max[r] * dom + lg2(l)) * 0.6931471805599453f;
    }
  }
}

// One consumer warpgroup (cw = 0 or 1): rows q0 + 64 cw .. + 63.
template <class Cfg, class T, class Ops, bool kCausal>
__device__ __forceinline__ void consumer(const Smem<Cfg>& sm, const WsParams& p, const WorkTile& w, int n_tiles,
                                         int cw, int tid_in_wg) {
  constexpr int ST = Cfg::kStages, BN = Cfg::kBlockN, NT = Cfg::kNT, DT = Cfg::kDT, PK = Cfg::kPK;
  namespace wg_ = ::flexattn::sm90;
  const int lane = tid_in_wg & 31, warp = tid_in_wg >> 5;
  const int wg_row0 = w.m_block * Cfg::kBlockM + cw * 64;   // first row of this warpgroup
  const int row0 = wg_row0 + warp * 16;                     // first row of this warp
  const int Skv = p.Skv;
  const bool premul = !(p.scale_log2 > 0.f);
  const float dom = premul ? 1.f : p.scale_log2;
  const int my_bar = cw == 0 ? kBarSchedWG0 : kBarSchedWG1;
  const int other_bar = cw == 0 ? kBarSchedWG1 : kBarSchedWG0;
  // A tile needs the per-element mask when it reaches past Skv or, causal,
  // past this warpgroup's first row.
  auto need_mask = [&](int kv0) { return kv0 + BN > Skv || (kCausal && kv0 + BN - 1 > wg_row0); };
  auto release = [&](u32 bar) {   // one arrive per warp once its wgmma reads are done
    __syncwarp();
    if (lane == 0) mbar_arrive(bar);
  };

  float o[DT * 4];
#pragma unroll
  for (int i = 0; i < DT * 4; ++i) o[i] = 0.f;
  float row_max[2] = {neg_inf(), neg_inf()}, row_sum[2] = {0.f, 0.f}, alpha[2] = {1.f, 1.f};
  float s[NT * 4];
  u32 pa[PK][4];

  mbar_wait(sm.q_full(), 0, 1);
  if (n_tiles > 0) {
    PipeState<ST> ks, vs;   // consumer read positions
    // tile 0: S_0, softmax, P_0
    mbar_wait(sm.k_full(ks.index), ks.phase, 30 + ks.index);
    named_sync(my_bar, kConsumerThreads);
    issue_qk<Cfg, Ops>(s, sm.q, cw, sm.k_tile(ks.index));
    named_arrive(other_bar, kConsumerThreads);
    wg_::warpgroup_wait<0>();
    wg_::fence_operands(s);
    release(sm.k_empty(ks.index));
    ks.advance();
    mask_tile<Cfg, kCausal>(s, row0, 0, Skv, premul, p.scale_log2, need_mask(0), lane);
    online_softmax<NT>(s, row_max, row_sum, alpha, dom);
    p_to_a<T, PK>(pa, s);

    for (int n = 1; n < n_tiles; ++n) {
      const int kv0 = n * BN;
      mbar_wait(sm.k_full(ks.index), ks.phase, 30 + ks.index);
      named_sync(my_bar, kConsumerThreads);
      wg_::fence_operands(s);
      issue_qk<Cfg, Ops>(s, sm.q, cw, sm.k_tile(ks.index));   // S_n
      rescale_o<DT>(o, alpha);                                  // O *= alpha_{n-1}, under S_n
      mbar_wait(sm.v_full(vs.index), vs.phase, 40 + vs.index);
      wg_::fence_operands(o);
      issue_pv<Cfg, Ops>(o, pa, sm.v_tile(vs.index));           // O += P_{n-1} V_{n-1}
      named_arrive(other_bar, kConsumerThreads);
      wg_::warpgroup_wait<1>();                                 // S_n done; P·V may run on
      wg_::fence_operands(s);
      release(sm.k_empty(ks.index));
      ks.advance();
      mask_tile<Cfg, kCausal>(s, row0, kv0, Skv, premul, p.scale_log2, need_mask(kv0), lane);
      online_softmax<NT>(s, row_max, row_sum, alpha, dom);
      wg_::warpgroup_wait<0>();                                 // P_{n-1} V_{n-1} done
      wg_::fence_operands(o);
      fence_u32<PK>(pa);                                        // pa stayed live while P·V read it
      release(sm.v_empty(vs.index));
      vs.advance();
      p_to_a<T, PK>(pa, s);
    }
    // last tile's P·V
    rescale_o<DT>(o, alpha);
    mbar_wait(sm.v_full(vs.index), vs.phase, 40 + vs.index);
    wg_::fence_operands(o);
    issue_pv<Cfg, Ops>(o, pa, sm.v_tile(vs.index));
    wg_::warpgroup_wait<0>();
    wg_::fence_operands(o);
    fence_u32<PK>(pa);
    release(sm.v_empty(vs.index));
  }
  store_output<T, DT>(o, row_max, row_sum, p, w.b, w.h, row0, dom, lane);
}

template <class T> struct WgOps;
template <> struct WgOps<bf16> { typedef ::flexattn::wgmma::ops_bf16 type; };
template <> struct WgOps<f16> { typedef ::flexattn::wgmma::ops_f16 type; };

// ---------------------------------------------------------------------------
template <class Cfg, class T, bool kCausal>
__device__ __forceinline__ void ws_fwd(const CUtensorMap* tmQ, const CUtensorMap* tmK, const CUtensorMap* tmV,
                                       const WsParams& p) {
  extern __shared__ __align__(1024) unsigned char smem[];
  const Smem<Cfg> sm(smem_u32(smem));
  const int tid = threadIdx.x;
  const int role = tid >> 7;   // 0 producer, 1 / 2 consumers
  const WorkTile w = tile_scheduler<kCausal>(p, blockIdx.x);
  const int n_tiles = kv_tile_count<Cfg, kCausal>(p, w.m_block);

  if (tid == 0) {
    mbar_init(sm.q_full(), 1);
#pragma unroll
    for (int s = 0; s < Cfg::kStages; ++s) {
      mbar_init(sm.k_full(s), 1);
      mbar_init(sm.v_full(s), 1);
      mbar_init(sm.k_empty(s), kConsumerThreads / 32);   // one arrive per consumer warp
      mbar_init(sm.v_empty(s), kConsumerThreads / 32);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");   // inits visible to the async proxy
    tma_prefetch_map(tmQ);
    tma_prefetch_map(tmK);
    tma_prefetch_map(tmV);
  }
  __syncthreads();

  if (role == 0) {
    setmaxnreg_dec<Cfg::kProducerRegs>();
    if (tid == 0) producer<Cfg, kCausal>(sm, tmQ, tmK, tmV, p, w, n_tiles);
  } else {
    setmaxnreg_inc<Cfg::kConsumerRegs>();
    // consumer 0 may issue first: pre-arrive on its own scheduling barrier
    if (role == 1) named_arrive(kBarSchedWG0, kConsumerThreads);
    consumer<Cfg, T, typename WgOps<T>::type, kCausal>(sm, p, w, n_tiles, role - 1, tid & 127);
  }
}

}  // namespace ws90
}  // namespace flexattn

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ != 900 || !defined(__CUDA_ARCH_FEAT_SM90_ALL))
#define WS90_BODY(CFG, DTYPE, CAUSAL) __trap();
#else
#define WS90_BODY(CFG, DTYPE, CAUSAL) \
  ::flexattn::ws90::ws_fwd<CFG, ::flexattn::tiles::DTYPE, CAUSAL>(&tmQ, &tmK, &tmV, p);
#endif

// NAME_cfg = {threads, smem bytes, block M, block N, head dim, stages} for the runner.
#define WS90_KERNEL(NAME, D, BN, ST, DTYPE, CAUSAL)                                                       \
  typedef ::flexattn::ws90::WsConfig<D, BN, ST> NAME##_cfg_t;                                             \
  extern "C" __constant__ int NAME##_cfg[6] = {NAME##_cfg_t::kThreads, NAME##_cfg_t::kSmemBytes, 128, BN, \
                                               D, ST};                                                   \
  extern "C" __global__ void __launch_bounds__(384, 1)                                                    \
      NAME(const __grid_constant__ CUtensorMap tmQ, const __grid_constant__ CUtensorMap tmK,              \
           const __grid_constant__ CUtensorMap tmV, const __grid_constant__ ::flexattn::ws90::WsParams p) { \
    WS90_BODY(NAME##_cfg_t, DTYPE, CAUSAL)                                                                \
  }
