// flash_fwd_sm90.cuh — the Hopper (sm_90a) flash-attention forward: the same
// contract, parameter block, kv schedules (dense / causal / block-sparse) and
// mod hooks as flash_fwd.cuh, with both matrix products on wgmma:
//
//   per warpgroup (64 query rows):   S  = Q · Kᵀ   wgmma m64nBNk16, A and B from smem
//                                    P  = online-softmax(mods(S))   (registers)
//                                    O += P · V    wgmma m64nDk16,  A = P from registers,
//                                                  B = V from smem (N-major)
//
// The accumulators live spread over the 128 threads of a warpgroup (an
// m64nN tile costs N/2 registers per thread), which is what lifts the
// mma.sync kernel's register ceiling (16 rows x D per warp). Q, K and V sit in
// 128-byte-swizzled panels (tiles_sm90.cuh) filled by cp.async from every
// thread; the K/V ring is ST stages deep (or, SPLIT_V, a K ring and one V slot
// filled while Q·Kᵀ and the softmax run). A CTA is NWG warpgroups stacked on
// the query axis sharing each K/V tile.
//
// Instantiation: FLEXATTN_FWD_SM90_KERNEL(name, HEAD_DIM, DTYPE, MODE) with the
// default shape for the head dim, or FLEXATTN_FWD_SM90_KERNEL_SHAPE(name,
// D, DTYPE, MODE, NWG, BN, STAGES[, SPLIT_V[, MINB]]). Same <name>_cfg[8] and
// launch contract as flash_fwd.cuh (grid ceil(Sq/BLOCK_M) x Hq x B). Head dims
// 64 and 128.
#pragma once

#include "flash_fwd.cuh"
#include "tiles_sm90.cuh"

namespace flexattn {
namespace flash_sm90 {

using namespace ::flexattn::tiles;
using ::flexattn::sm90::Sw128Tile;
using ::flexattn::flash::KvSchedule;
using ::flexattn::flash::TileRef;

using ::flexattn::sm90::WgOps;
using ::flexattn::sm90::issue_qk;
using ::flexattn::sm90::issue_pv;

template <int D, int NWG, int BN, int STAGES, bool SPLIT_V = false, int MINB = 0>
struct FwdConfigSm90 {
  static constexpr int kHeadDim = D;
  static constexpr int kWarpgroups = NWG;
  static constexpr int kBlockM = 64 * NWG;
  static constexpr int kBlockN = BN;
  static constexpr int kWarps = 4 * NWG;
  static constexpr int kThreads = 128 * NWG;
  static constexpr int kStages = STAGES;
  // SPLIT_V: K keeps the STAGES-deep ring, V a single slot loaded at the top of
  // each tile (it lands while Q·Kᵀ and the softmax run), so a d128 CTA fits
  // 65 KB of shared memory and three CTAs share an SM.
  static constexpr bool kSplitV = SPLIT_V;
  static constexpr int kVStages = SPLIT_V ? 1 : STAGES;
  // __launch_bounds__ minimum CTAs per SM; 0 = no hint (ptxas then allocates as
  // before: an explicit 1 raised the register count and was slower at d64).
  static constexpr int kMinBlocks = MINB;
  static constexpr int kMT = 1;           // m16 tiles per warp (score_tile's view)
  static constexpr int kNT = BN / 8;      // n8 tiles of S per warp
  static constexpr int kDT = D / 8;       // n8 tiles of O per warp
  static constexpr int kKT = D / 16;      // k16 steps of Q·Kᵀ
  static constexpr int kPK = BN / 16;     // k16 steps of P·V
  typedef Sw128Tile<kBlockM, D> QTile;
  typedef Sw128Tile<BN, D> KVTile;
  static constexpr int kSmemQ = QTile::kBytes;
  static constexpr int kSmemKV = KVTile::kBytes;
  // + 1024: the kernel aligns its base up to a swizzle-atom boundary.
  static constexpr int kSmemBytes = kSmemQ + (STAGES + kVStages) * kSmemKV + 1024;
  static_assert(D == 64 || D == 128, "wgmma path: head dim 64 or 128");
  static_assert(BN == 64 || BN == 128, "wgmma path: BLOCK_N 64 or 128");
  static_assert(STAGES >= 2, "pipeline needs >= 2 stages");
};

// Defaults (interface/tiles.json sm90Tile; measured on H100, figures in
// bench/results/kernel-notes.md): one warpgroup (64 query rows) per CTA. At
// d128 V keeps one slot so that a CTA needs 65 KB of shared memory and three
// CTAs share an SM (168 registers): more warps to hide the short kv loops of
// windows and documents (faster on the flex patterns, dense non-causal and
// short causal; long causal unchanged). d64 keeps two CTAs with a K/V ring
// (three measured slower there).
template <int D> struct FwdConfigSm90For {
  typedef ::flexattn::iface::Sm90Tile<D> T;  // tiles.json sm90Tile
  typedef FwdConfigSm90<D, T::kWarpgroups, T::kBlockN, T::kStages, T::kSplitV, T::kMinBlocks> type;
  static_assert(type::kBlockM == T::kBlockM, "sm90 tile: 64 query rows per warpgroup");
};

// ---------------------------------------------------------------------------
// The kernel body.
template <class Cfg, class T, int MODE>
__device__ __forceinline__ void flash_fwd_sm90(const FlashFwdParams& p) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, NTH = Cfg::kThreads, ST = Cfg::kStages;
  constexpr int NT = Cfg::kNT, DT = Cfg::kDT, PK = Cfg::kPK;
  typedef typename Cfg::QTile QTile;
  typedef typename Cfg::KVTile KVTile;
  typedef typename WgOps<T>::type Ops;
  namespace wg_ = ::flexattn::sm90;

  extern __shared__ __align__(1024) unsigned char smem[];
  const u32 sQ = (smem_u32(smem) + 1023u) & ~1023u;      // swizzle atoms: 1024-byte aligned
  const u32 sK = sQ + Cfg::kSmemQ;
  const u32 sV = sK + ST * Cfg::kSmemKV;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wg = warp >> 2;                                // warpgroup: 64 query rows
  const ::flexattn::flash::WorkTile w = ::flexattn::flash::work_tile(
      p, Cfg::kHeadDim * (int)sizeof(T), MODE != ::flexattn::flash::kDense,
      Cfg::kMinBlocks > FLEXATTN_WAVE_CTAS_PER_SM ? Cfg::kMinBlocks : FLEXATTN_WAVE_CTAS_PER_SM);
  const int m_block = w.m_block, h = w.h, b = w.b;
  const int hk = h / p.gqa_group;
  // A segmented grid (p.tile_starts: document masks, 64x64 tiles; kernels built
  // with FLEX_SEGMENTED_GRID) gives each query tile its own start; rows from
  // q_end on belong to the next tile and are not stored.
  constexpr bool kSegments = MODE == ::flexattn::flash::kBlockSparse && FLEX_SEGMENTED_GRID;
  const int* ts = kSegments && p.tile_starts ? p.tile_starts + (i64)b * p.tile_starts_stride_b : nullptr;
  const int q0 = ts ? ldg_i32(ts + m_block) : m_block * BM;
  const int q_end = ts ? ldg_i32(ts + m_block + 1) : p.Sq;
  const bool q_tail = q0 + BM > p.Sq;
  const int row0 = q0 + warp * 16;                         // this warp's first query row

  const u16* gQ = (const u16*)p.q + (i64)b * p.q_stride_b + (i64)h * p.q_stride_h + (i64)q0 * p.q_stride_s;
  const u16* gK = (const u16*)p.k + (i64)b * p.k_stride_b + (i64)hk * p.k_stride_h;
  const u16* gV = (const u16*)p.v + (i64)b * p.v_stride_b + (i64)hk * p.v_stride_h;
  const i64 ks = p.k_stride_s, vs = p.v_stride_s;
  const int Skv = p.Skv;
  const FlexModArgs args = p.mod;
  const bool premul = FLEX_HAS_SCORE_MOD ? true : !(p.scale_log2 > 0.f);
  const float dom = premul ? 1.f : p.scale_log2;
  auto load_k = [&](int slot, int kv0) {
    KVTile::template load_async<NTH>(sK + slot * Cfg::kSmemKV, gK + (i64)kv0 * ks, ks, Skv - kv0, tid);
  };
  auto load_v = [&](int slot, int kv0) {
    KVTile::template load_async<NTH>(sV + slot * Cfg::kSmemKV, gV + (i64)kv0 * vs, vs, Skv - kv0, tid);
  };

  QTile::template load_async<NTH>(sQ, gQ, p.q_stride_s, p.Sq - q0, tid);
  KvSchedule<MODE, BM, BN, kSegments> sched(p, b, h, m_block, q0, q_tail);
  const int n_tiles = sched.count();

  RtAcc<1, DT> o;
  o.zero();
  float row_max[1][2] = {{neg_inf(), neg_inf()}}, row_sum[1][2] = {{0.f, 0.f}}, alpha[1][2];
  float (&oacc)[DT * 4] = reinterpret_cast<float (&)[DT * 4]>(o.c[0]);

  // cp.async groups, oldest first, at the top of tile `it`: K/V(it) ..
  // K/V(it+ST-2) — with SPLIT_V only the K tiles; V(it) is issued below, once
  // P·V(it-1) has freed the slot, and waited for just before P·V(it).
  TileRef ring[ST];   // ring[s] = tile (it + s)
#pragma unroll
  for (int s = 0; s < ST; ++s) ring[s] = sched.tile(s < n_tiles ? s : 0);
#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    if (s < n_tiles) {
      load_k(s, ring[s].kv0);
      if constexpr (!Cfg::kSplitV) load_v(s, ring[s].kv0);
    }
    cp_async_commit();
  }
  // A mask mod that reads captured tensors (document ids, ...) is evaluated
  // into bits between issuing Q·Kᵀ and waiting for it: the loads overlap the
  // tensor cores and the ids are not live next to S. Measured (figures in
  // kernel-notes.md): a win for document masks; for arithmetic masks the split
  // costs time (causal, softcap, ALiBi), so those keep the fused score_tile.
  // A partial block inside both bounds (bits == kMaskMod, most masked tiles of
  // a block-sparse launch) skips the clamps and the bounds / diagonal tests
  // (a win for sliding windows). With a score mod the second path measured
  // slower on ALiBi (registers at the 168 cap), so those kernels keep the
  // general score_tile.
  constexpr bool kMaskOnlyPath = MODE == ::flexattn::flash::kBlockSparse && FLEX_HAS_MASK_MOD && !FLEX_HAS_SCORE_MOD;
  constexpr bool kMaskBits = MODE == ::flexattn::flash::kBlockSparse && FLEX_HAS_MASK_MOD && FLEX_MASK_MOD_READS_MEMORY;
  ::flexattn::flash::KeepBits<Cfg> keep;
  for (int it = 0; it < n_tiles; ++it) {
    cp_async_wait<ST - 2>();
    wg_::fence_proxy_async();   // cp.async data -> wgmma (async proxy)
    __syncthreads();            // tile `it` visible; slot (it-1)%ST (and the V slot) free
    if constexpr (Cfg::kSplitV) {
      load_v(0, ring[0].kv0);
      cp_async_commit();
      if (it + ST - 1 < n_tiles) load_k((it + ST - 1) % ST, ring[ST - 1].kv0);
    } else if (it + ST - 1 < n_tiles) {
      load_k((it + ST - 1) % ST, ring[ST - 1].kv0);
      load_v((it + ST - 1) % ST, ring[ST - 1].kv0);
    }
    cp_async_commit();
    const TileRef cur = ring[0];
#pragma unroll
    for (int s = 0; s < ST - 1; ++s) ring[s] = ring[s + 1];
    ring[ST - 1] = sched.tile(it + ST < n_tiles ? it + ST : 0);   // index load overlaps compute
    const int slot = it % ST;

    RtAcc<1, NT> s;
    float (&sacc)[NT * 4] = reinterpret_cast<float (&)[NT * 4]>(s.c[0]);
    issue_qk<Cfg, Ops>(sacc, sQ, wg, sK + slot * Cfg::kSmemKV);
    const bool interior = cur.bits == ::flexattn::flash::kMaskMod;
    if constexpr (kMaskBits) {
      if (interior) ::flexattn::flash::mask_bits<Cfg, true>(keep, p, args, b, h, row0, cur.kv0, cur.bits, lane);
      else if (cur.bits) ::flexattn::flash::mask_bits<Cfg>(keep, p, args, b, h, row0, cur.kv0, cur.bits, lane);
    }
    wg_::warpgroup_wait<0>();
    wg_::fence_operands(sacc);
    if constexpr (kMaskBits) {
      if (cur.bits) ::flexattn::flash::score_tile_keep<Cfg>(s, p, args, b, h, row0, cur.kv0, keep, premul, lane);
      else ::flexattn::flash::score_tile<Cfg, kSegments>(s, p, args, b, h, row0, cur.kv0, 0, premul, lane);
    } else if (kMaskOnlyPath && interior) {
      ::flexattn::flash::score_tile_mask_only<Cfg>(s, p, args, b, h, row0, cur.kv0, premul, lane);
    } else {
      ::flexattn::flash::score_tile<Cfg, kSegments>(s, p, args, b, h, row0, cur.kv0, cur.bits, premul, lane);
    }
    ::flexattn::flash::online_softmax<1, NT>(s, row_max, row_sum, alpha, dom);
    ::flexattn::flash::rescale_rows<1, DT>(o, alpha);
    RtA<1, PK> pa;
    acc_to_A<T>(pa, s);
    if constexpr (Cfg::kSplitV) {
      cp_async_wait<1>();         // V(it) landed (K(it+ST-1), issued after it, may be in flight)
      wg_::fence_proxy_async();
      __syncthreads();
    }
    wg_::fence_operands(oacc);
    issue_pv<Cfg, Ops>(oacc, pa.a[0], sV + (Cfg::kSplitV ? 0 : slot) * Cfg::kSmemKV);
    wg_::warpgroup_wait<0>();
    wg_::fence_operands(oacc);
  }
  cp_async_wait<0>();

  ::flexattn::flash::store_output<T, 1, DT>(o, row_max, row_sum, p, b, h, row0, dom, lane, q_end);
}

}  // namespace flash_sm90
}  // namespace flexattn

// wgmma is sm_90a-only: other targets get a trapping stub (the host never
// launches it there: lib/cuda/plan.ts picks this family only on 9.0).
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ != 900 || !defined(__CUDA_ARCH_FEAT_SM90_ALL))
#define FLEXATTN_SM90_BODY(CFG, DTYPE, MODE) __trap();
#else
#define FLEXATTN_SM90_BODY(CFG, DTYPE, MODE) \
  ::flexattn::flash_sm90::flash_fwd_sm90<CFG, ::flexattn::tiles::DTYPE, ::flexattn::flash::MODE>(p);
#endif

#define FLEXATTN_FWD_SM90_KERNEL_CFG(NAME, CFG, DTYPE, MODE)                                     \
  extern "C" __constant__ int NAME##_cfg[::flexattn::kFlashFwdCfgInts] = {                      \
      FLEXATTN_FWD_CFG_VALUES(CFG)};                                                             \
  extern "C" __global__ void __launch_bounds__(CFG::kThreads, CFG::kMinBlocks)                \
      NAME(const __grid_constant__ ::flexattn::FlashFwdParams p) {                               \
    FLEXATTN_SM90_BODY(CFG, DTYPE, MODE)                                                         \
  }

#define FLEXATTN_FWD_SM90_KERNEL(NAME, HEAD_DIM, DTYPE, MODE) \
  FLEXATTN_FWD_SM90_KERNEL_CFG(NAME, ::flexattn::flash_sm90::FwdConfigSm90For<HEAD_DIM>::type, DTYPE, MODE)

// ...: NWG, BN, STAGES[, SPLIT_V[, MINB]] (FwdConfigSm90's parameters after D).
#define FLEXATTN_FWD_SM90_KERNEL_SHAPE(NAME, HEAD_DIM, DTYPE, MODE, ...)                          \
  typedef ::flexattn::flash_sm90::FwdConfigSm90<HEAD_DIM, __VA_ARGS__> NAME##_config_t;         \
  FLEXATTN_FWD_SM90_KERNEL_CFG(NAME, NAME##_config_t, DTYPE, MODE)

#define FLEXATTN_FWD_SM90_DENSE_VARIANTS(HEAD_DIM, DTYPE)                                         \
  FLEXATTN_FWD_SM90_KERNEL(flexattn_fwd_sm90_d##HEAD_DIM##_##DTYPE, HEAD_DIM, DTYPE, kDense)     \
  FLEXATTN_FWD_SM90_KERNEL(flexattn_fwd_sm90_d##HEAD_DIM##_##DTYPE##_causal, HEAD_DIM, DTYPE, kCausal)

// Every precompiled Hopper dense variant: flexattn_fwd_sm90_d{64,128}_{bf16,f16}[_causal]
#define FLEXATTN_FWD_SM90_ALL_DENSE()                                                              \
  FLEXATTN_FWD_SM90_DENSE_VARIANTS(64, bf16) FLEXATTN_FWD_SM90_DENSE_VARIANTS(64, f16)             \
  FLEXATTN_FWD_SM90_DENSE_VARIANTS(128, bf16) FLEXATTN_FWD_SM90_DENSE_VARIANTS(128, f16)
