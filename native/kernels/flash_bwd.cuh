// flash_bwd.cuh — flash-attention backward (mma.sync, sm_80+), FlashAttention-2
// style, one template family for SDPA (dense / causal) and FlexAttention
// (block-sparse + mods), deterministic (no atomics anywhere).
//
// With P = exp(s - LSE) recomputed from Q, K and the forward's LSE (s the
// score the softmax saw: mod(scale · q·k)), Delta = rowsum(dO ∘ O),
// dP = dO Vᵀ, dS = P ∘ (dP − Delta) ∘ mod'(scale · q·k):
//   dV = Pᵀ dO,  dK = scale · dSᵀ Q,  dQ = scale · dS K.
// Three kernels, launched in this order on one stream:
//   * preprocess  grid (ceil(Sq/64), Hq, B): Delta and the LSE in the log2
//                 domain (+inf for a fully masked row, LSE = −inf, so that its
//                 P is 0 and the row gives zero gradients) into f32 workspaces.
//   * dK/dV pass  grid (ceil(Skv/BLOCK_N), Hkv, B): one CTA per kv tile; it
//                 walks every query head of the KV head's GQA group and every q
//                 tile that can see the kv tile (causal range, or the block
//                 mask's q-side lists), so the GQA sum happens in registers in a
//                 fixed order.
//   * dQ pass     grid (ceil(Sq/BLOCK_M), Hq, B): one CTA per q tile walking the
//                 forward's kv schedule (KvSchedule of flash_fwd.cuh).
// Masked elements (bounds, causal, mask_mod in partial blocks, a score of −inf,
// a fully masked row) get P = 0 and dS = 0 by selection, so nothing of them is
// read; a NaN elsewhere propagates through P and dS as on the CPU.
// Tile caveat, as in the forward: the mmas multiply masked positions of a
// visited tile by 0, so a NaN/Inf in q, k, v or dO reaches gradients of
// positions in the same tile that do not attend it (0 · NaN = NaN).
//
// Mods: the forward's hooks (flex_score_mod, flex_mask_mod, FlexModArgs) plus,
// with a score mod, its derivative with respect to the score (lib/mods/
// codegen-cuda.ts, generateCudaBackward):
//   __device__ __forceinline__ float flex_score_grad(float score, int b, int h,
//                                   int q_idx, int kv_idx, const FlexModArgs&);
// called with the same (clamped, in-bounds) indices as flex_score_mod.
// With captured-tensor gradients (gradFor; FLEX_GRAD_SITES > 0, codegen-cuda.ts)
// the dK/dV pass also adds dL/d(mod result) · ∂mod/∂t[idx] of every element it
// recomputes into per-warp f32 partial slices (GradWindow below), and a fourth
// kernel, FLEXATTN_BWD_GRAD_REDUCE_KERNEL, sums them in a fixed order into the
// gradients (their dtype) after the dQ pass. Still no atomics.
//
// Instantiation (bottom of this file):
//   FLEXATTN_BWD_PRE_KERNEL(name, HEAD_DIM, DTYPE)
//   FLEXATTN_BWD_DKDV_KERNEL(name, HEAD_DIM, DTYPE, MODE)
//   FLEXATTN_BWD_DQ_KERNEL(name, HEAD_DIM, DTYPE, MODE)
//   FLEXATTN_BWD_DENSE_VARIANTS(HEAD_DIM, DTYPE) -> flexattn_bwd_{pre,dkdv,dq}_d<D>_<dt>[_causal]
// Each kernel <name> has `extern "C" __constant__ int <name>_cfg[8]` (generated/
// flash_bwd_config.cuh, from interface/flash_bwd_params.json).
#pragma once

#include "flash_fwd.cuh"
#include "generated/flash_bwd_params.cuh"
#include "generated/flash_bwd_config.cuh"

namespace flexattn {
namespace flash_bwd {

using namespace ::flexattn::tiles;
using ::flexattn::flash::KvSchedule;
using ::flexattn::flash::TileRef;
using ::flexattn::flash::keep_element;
using ::flexattn::flash::elem_q;
using ::flexattn::flash::elem_kv;
using ::flexattn::flash::kMaskBounds;
using ::flexattn::flash::kMaskCausal;
using ::flexattn::flash::kMaskMod;

// ---------------------------------------------------------------------------
// Tile traits. Both passes use 64 x 64 tiles and 4 warps of 16 rows each (one
// m16 tile per warp: the dK/dV pass keeps two D-wide accumulators per warp).
template <int D>
struct BwdTile {
  static constexpr int kHeadDim = D;
  static constexpr int kBlockM = 64;       // q rows per tile
  static constexpr int kBlockN = 64;       // kv rows per tile
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kStages = 2;        // streamed tiles (Q/dO or K/V) in the cp.async ring
  static constexpr int kKT = D / 16;       // k16 steps over the head dim
  static constexpr int kDT = D / 8;        // n8 tiles over the head dim
  typedef SmemTile<64, D> Tile;
  static constexpr int kTileBytes = Tile::kBytes;
  static_assert(D % 16 == 0, "head dim");
};

// dK/dV pass: K and V resident, Q and dO streamed.
template <int D>
struct DkdvConfig : BwdTile<D> {
  static constexpr int kSmemBytes = (2 + 2 * BwdTile<D>::kStages) * BwdTile<D>::kTileBytes;
};
// dQ pass: Q and dO resident, K and V streamed.
template <int D>
struct DqConfig : BwdTile<D> {
  static constexpr int kSmemBytes = (2 + 2 * BwdTile<D>::kStages) * BwdTile<D>::kTileBytes;
};
// Preprocess: 64 rows per CTA, 16 per warp; no shared memory.
template <int D>
struct PreConfig {
  static constexpr int kHeadDim = D;
  static constexpr int kBlockM = 64;
  static constexpr int kBlockN = 0;
  static constexpr int kThreads = 128;
  static constexpr int kStages = 0;
  static constexpr int kSmemBytes = 0;
};

__device__ __forceinline__ float pos_inf() { return __int_as_float(0x7f800000); }

// Two 16-bit values of one 32-bit word (lo = first element) as f32.
template <class T>
__device__ __forceinline__ void unpack2(u32 w, float& lo, float& hi) {
  if constexpr (T::kIsBf16) {
    lo = __uint_as_float(w << 16);
    hi = __uint_as_float(w & 0xffff0000u);
  } else {
    asm("{ .reg .b16 l, h; mov.b32 {l, h}, %2; cvt.f32.f16 %0, l; cvt.f32.f16 %1, h; }" : "=f"(lo), "=f"(hi) : "r"(w));
  }
}

// ---------------------------------------------------------------------------
// Preprocess: Delta[b,h,i] = rowsum(dO ∘ O) in f32, lse2[b,h,i] = LSE · log2(e)
// (+inf where LSE = −inf: P = exp2(s − +inf) = 0 and the row is skipped).
template <class Cfg, class T>
__device__ __forceinline__ void flash_bwd_pre(const FlashBwdParams& p) {
  constexpr int D = Cfg::kHeadDim;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int h = blockIdx.y, b = blockIdx.z;
  const u16* gO = (const u16*)p.o + (i64)b * p.o_stride_b + (i64)h * p.o_stride_h;
  const u16* gD = (const u16*)p.dout + (i64)b * p.do_stride_b + (i64)h * p.do_stride_h;
  const i64 base = ((i64)b * p.Hq + h) * p.Sq;
  for (int r = 0; r < 16; ++r) {
    const int i = blockIdx.x * Cfg::kBlockM + warp * 16 + r;
    if (i >= p.Sq) break;  // warp-uniform
    const u32* o2 = (const u32*)(gO + (i64)i * p.o_stride_s);
    const u32* d2 = (const u32*)(gD + (i64)i * p.do_stride_s);
    float acc = 0.f;
    for (int c = lane; c < D / 2; c += 32) {
      float o0, o1, g0, g1;
      unpack2<T>(__ldg(o2 + c), o0, o1);
      unpack2<T>(__ldg(d2 + c), g0, g1);
      acc = fmaf(o0, g0, fmaf(o1, g1, acc));
    }
#pragma unroll
    for (int m = 16; m >= 1; m >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, m);
    if (lane == 0) {
      const float l = __ldg(p.lse + (i64)b * p.lse_stride_b + (i64)h * p.lse_stride_h + (i64)i * p.lse_stride_s);
      p.delta[base + i] = acc;
      p.lse2[base + i] = l == neg_inf() ? pos_inf() : l * 1.4426950408889634f;
    }
  }
}

// ---------------------------------------------------------------------------
// One element of both passes: the raw q·k accumulator `qk`, its dP, whether the
// mask keeps it, and its row's lse2 / Delta -> P and dS (the gradient with
// respect to the raw scaled score: score mod's derivative applied). Mods see
// clamped indices qc, kvc, as in the forward.
// `dsm`: the gradient with respect to the mod's result, P ∘ (dP − Delta) (0
// where masked), and `raw` the score the mod saw: what the captured-tensor
// gradients (FLEX_GRAD_SITES) need.
template <class P>
__device__ __forceinline__ void grad_element(float& pv, float& dsv, float& dsm, float& raw, bool& kept, float qk,
                                             float dp, bool keep, float lse2, float delta, const P& p, const FlexModArgs& args,
                                             int b, int h, int qc, int kvc) {
#if FLEX_HAS_SCORE_MOD
  raw = qk * p.scale;
  const float s = flex_score_mod(raw, b, h, qc, kvc, args);
  const float grad = flex_score_grad(raw, b, h, qc, kvc, args);
  const float pr = ex2(fmaf(s, 1.4426950408889634f, -lse2));
  keep = keep & (s != neg_inf());          // a score of -inf is masked (CPU rule)
#else
  (void)args; (void)b; (void)h; (void)qc; (void)kvc;
  raw = qk * p.scale;
  const float pr = ex2(fmaf(qk, p.scale_log2, -lse2));
  const float grad = 1.f;
#endif
  keep = keep & (lse2 != pos_inf());       // fully masked row (or a q row past Sq)
  kept = keep;
  pv = keep ? pr : 0.f;
  dsm = keep ? pr * (dp - delta) : 0.f;
  dsv = keep ? dsm * grad : 0.f;
}

template <class P>
__device__ __forceinline__ void grad_element(float& pv, float& dsv, float qk, float dp, bool keep, float lse2,
                                             float delta, const P& p, const FlexModArgs& args, int b, int h,
                                             int qc, int kvc) {
  float dsm, raw;
  bool kept;
  grad_element(pv, dsv, dsm, raw, kept, qk, dp, keep, lse2, delta, p, args, b, h, qc, kvc);
}

#if defined(FLEX_GRAD_SITES) && FLEX_GRAD_SITES > 0
// ---------------------------------------------------------------------------
// Captured-tensor gradients (gradFor; lib/cuda/gradfor-plan.ts). Each warp of
// a dK/dV CTA owns a slice of `width` f32 partial sums of each gradFor tensor,
// covering elements [lo[cta], lo[cta] + width) (lo from the host's interval
// analysis of the index expressions): part[(cta * kWarps + warp) * width + e - lo].
// No atomics: per element slot the lanes that hit one index are summed by the
// lowest of them in lane order and written by it alone, slots in program order
// (__syncwarp between), warps in their own slices; the reduce kernel adds the
// slices in CTA then warp order. The same inputs give the same bits.
struct GradWindow {
  float* part;  // this warp's slice, element lo at index 0
  int lo, width;
};

// v at index `rel` of `w` (rel < 0: nothing; the whole warp calls it).
__device__ __forceinline__ void grad_warp_add(const GradWindow& w, int rel, float v, int lane) {
  const unsigned peers = __match_any_sync(0xffffffffu, rel);
  if (peers == 0xffffffffu) {
    if (rel < 0) return;  // warp-uniform: every element masked
    // One index for the whole warp (e.g. ALiBi slopes[h]): a fixed butterfly.
#pragma unroll
    for (int m = 16; m >= 1; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    if (lane == 0 && rel < w.width) w.part[rel] += v;
  } else {
    float sum = 0.f;
    // Not unrolled: 32 slots x sites copies of an unrolled loop overwhelm ptxas (sm_90a).
#pragma unroll 1
    for (int src = 0; src < 32; ++src) {
      const float x = __shfl_sync(0xffffffffu, v, src);
      if ((peers >> src) & 1u) sum += x;
    }
    // rel < width always holds (the window bounds every index); the test keeps a bug from writing out of bounds.
    if (rel >= 0 && rel < w.width && lane == __ffs(peers) - 1) w.part[rel] += sum;
  }
  __syncwarp();
}

// Fast accumulation for two index shapes (lib/cuda/gradfor-plan.ts proves the
// class of each site on the IR; the generated flex_grad_site_kind(s) says which
// of them the plan chose: 0 general, 1 uniform, 2 diagonal). Same slices, same
// reduce, still no atomics and a fixed order everywhere, so still the same bits
// for the same inputs (not the general path's bits: another summation order).
//   uniform  (index of b, h only): within one query head every element of the
//            CTA hits one index. Each lane keeps a register sum over the head's
//            q tiles; at the end of the head one xor butterfly (fixed order) and
//            one add by lane 0.
//   diagonal (index base(b, h) + sign · (kv − q), no clamp binding): in one warp
//            step (16 kv rows × 64 q columns of the mma fragment, kv = row0 + g +
//            8r, q = q0 + 8nn + 2t + c) element (r, nn, c) of lane (g, t) lies on
//            diagonal kv − q = row0 − q0 + g − 2t − c + 8(r − nn). Per lane the
//            elements with equal (r − nn, c) share a diagonal: kDiagSlots sums in
//            a lane-private stage in shared memory (added in element order). Then
//            lane L sums diagonals L, L + 32, L + 64 of the step's kDiagSpan from
//            the stage in a fixed (t, c) order and adds each into the slice.
// The general path (grad_warp_add above) does a match_any, 32 shuffles and a
// read-modify-write per element and site.
template <int NT>
struct GradDiag {
  static constexpr int kSlots = 2 * (NT + 1);      // (r − nn + NT − 1) · 2 + c
  static constexpr int kSpan = 8 * NT + 15;        // g − 2t − c + 8(r − nn) ∈ [−(8NT − 1), 15]
  static constexpr int kLow = 8 * NT - 1;          // −(lowest diagonal)
  static_assert(kSpan <= 96, "three diagonals per lane");
  __device__ __forceinline__ static constexpr int slot(int nn, int i) { return ((i >> 1) - nn + NT - 1) * 2 + (i & 1); }
};

struct GradFast {
#if FLEX_GRAD_UNIFORM > 0
  float u[FLEX_GRAD_UNIFORM];  // this lane's sum over the current head
  int ui[FLEX_GRAD_UNIFORM];   // the (head-uniform) flat index
#endif
#if FLEX_GRAD_DIAGONAL > 0
  float* stage;                // this warp's stage: [FLEX_GRAD_DIAGONAL][kSlots][32]
  int di[FLEX_GRAD_DIAGONAL];  // the flat index at kv − q = 0 (base(b, h)); the same in every lane
#endif
};

// Every site's contribution of one element (dsm = 0 where masked); `dslot`:
// the element's GradDiag<NT> slot (compile-time once the element loop is unrolled).
template <int NT>
__device__ __forceinline__ void grad_captured_element(const GradWindow (&win)[FLEX_GRAD_TENSORS], GradFast& f, float dsm,
                                                      float raw, bool kept, int b, int h, int qc, int kvc, int dslot,
                                                      const FlexModArgs& args, int lane) {
  (void)f; (void)dslot;
#pragma unroll
  for (int s = 0; s < FLEX_GRAD_SITES; ++s) {
    int k, idx;
    const float wgt = flex_grad_site(s, raw, b, h, qc, kvc, args, k, idx);
    const float v = kept ? dsm * wgt : 0.f;
#if FLEX_GRAD_UNIFORM > 0
    if (flex_grad_site_kind(s) == 1) {
      f.u[flex_grad_site_slot(s)] += v;
      f.ui[flex_grad_site_slot(s)] = idx;
      continue;
    }
#endif
#if FLEX_GRAD_DIAGONAL > 0
    if (flex_grad_site_kind(s) == 2) {
      f.stage[(flex_grad_site_slot(s) * GradDiag<NT>::kSlots + dslot) * 32 + lane] += v;
      f.di[flex_grad_site_slot(s)] = idx - flex_grad_site_sign(s) * (kvc - qc);
      continue;
    }
#endif
    grad_warp_add(win[k], kept ? idx - win[k].lo : -1, v, lane);
  }
}

// Start of a warp step: the diagonal stages to 0 (after the previous step's readers).
template <int NT>
__device__ __forceinline__ void grad_diag_begin(GradFast& f, int lane) {
  (void)f; (void)lane;
#if FLEX_GRAD_DIAGONAL > 0
  __syncwarp();
#pragma unroll
  for (int x = 0; x < FLEX_GRAD_DIAGONAL * GradDiag<NT>::kSlots; ++x) f.stage[x * 32 + lane] = 0.f;
#endif
}

// End of a warp step: each diagonal summed in a fixed order, one add each into
// the slice. d0 = row0 − q0 (kv − q of diagonal 0).
template <int NT>
__device__ __forceinline__ void grad_diag_end(const GradWindow (&win)[FLEX_GRAD_TENSORS], GradFast& f, int d0, int lane) {
  (void)win; (void)f; (void)d0; (void)lane;
#if FLEX_GRAD_DIAGONAL > 0
  typedef GradDiag<NT> G;
  __syncwarp();  // the stage written by every lane
#pragma unroll
  for (int s = 0; s < FLEX_GRAD_SITES; ++s) {
    if (flex_grad_site_kind(s) != 2) continue;
    const int j = flex_grad_site_slot(s), k = flex_grad_site_tensor(s), sign = flex_grad_site_sign(s);
    const float* st = f.stage + j * G::kSlots * 32;
#pragma unroll
    for (int w = 0; w < 3; ++w) {
      const int dd = lane + 32 * w;
      if (dd < G::kSpan) {
        const int d = dd - G::kLow;
        float sum = 0.f;
#pragma unroll
        for (int tc = 0; tc < 8; ++tc) {
          const int tt = tc >> 1, c = tc & 1;
          const int e = d + 2 * tt + c + 8 * NT;  // = g + 8 (r − nn + NT) >= 1
          const int g = e & 7, m = (e >> 3) - NT;
          if (m >= -(NT - 1) && m <= 1) sum += st[((m + NT - 1) * 2 + c) * 32 + 4 * g + tt];
        }
        const int rel = f.di[j] + sign * (d0 + d) - win[k].lo;
        // Diagonals outside the window hold only masked elements (sum 0): the window bounds every kept index.
        if (rel >= 0 && rel < win[k].width) win[k].part[rel] += sum;
      }
    }
    __syncwarp();  // the next site's adds may hit the same slice elements from other lanes
  }
#endif
}

// Start of a query head's q tiles: the uniform sums to 0.
__device__ __forceinline__ void grad_uniform_begin(GradFast& f) {
  (void)f;
#if FLEX_GRAD_UNIFORM > 0
#pragma unroll
  for (int j = 0; j < FLEX_GRAD_UNIFORM; ++j) { f.u[j] = 0.f; f.ui[j] = -1; }
#endif
}

// End of a query head: each uniform sum over the warp (fixed butterfly), one add by lane 0.
__device__ __forceinline__ void grad_uniform_end(const GradWindow (&win)[FLEX_GRAD_TENSORS], GradFast& f, int lane) {
  (void)win; (void)f; (void)lane;
#if FLEX_GRAD_UNIFORM > 0
#pragma unroll
  for (int s = 0; s < FLEX_GRAD_SITES; ++s) {
    if (flex_grad_site_kind(s) != 1) continue;
    const int j = flex_grad_site_slot(s), k = flex_grad_site_tensor(s);
    float v = f.u[j];
#pragma unroll
    for (int m = 16; m >= 1; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    const int rel = f.ui[j] - win[k].lo;
    if (lane == 0 && rel >= 0 && rel < win[k].width) win[k].part[rel] += v;
  }
  __syncwarp();
#endif
}

// Reduce: dCaptured[k][e] = sum over CTAs (in order) and warps (in order) of
// the slices whose window holds e; grid (ceil(max numel / 256), K).
struct GradReduceConfig {
  static constexpr int kHeadDim = 0;
  static constexpr int kBlockM = 256;  // elements per CTA
  static constexpr int kBlockN = 0;
  static constexpr int kThreads = 256;
  static constexpr int kStages = 0;
  static constexpr int kSmemBytes = 0;
};

template <int WARPS, int BN>
__device__ __forceinline__ void flash_bwd_grad_reduce(const FlashBwdParams& p) {
  const int k = blockIdx.y;
  const FlexGradBuf g = flex_grad_buf(k, p.mod);
  const int e = blockIdx.x * GradReduceConfig::kBlockM + threadIdx.x;
  if (e >= g.numel) return;
  const int ctas = ((p.Skv + BN - 1) / BN) * p.Hkv * p.B;
  float acc = 0.f;
  for (int c = 0; c < ctas; ++c) {
    const int rel = e - __ldg(g.lo + c);
    if (rel >= 0 && rel < g.width) {
      const float* sl = g.part + (i64)c * WARPS * g.width + rel;
#pragma unroll
      for (int w = 0; w < WARPS; ++w) acc += sl[(i64)w * g.width];
    }
  }
  flex_grad_store(k, p.mod, e, acc);
}
#endif

// ---------------------------------------------------------------------------
// Which q tiles a kv tile's CTA visits for one query head (the dK/dV pass):
// tile(i) -> {q0, mask bits}. The transpose of KvSchedule.
struct QTileRef {
  int q0;
  int bits;
};

template <int MODE, int BM, int BN>
struct QSchedule;

template <int BM, int BN>
struct QSchedule<::flexattn::flash::kDense, BM, BN> {
  int n, sq, extra;
  __device__ __forceinline__ QSchedule(const FlashBwdParams& p, int, int, int, bool kv_tail) {
    sq = p.Sq;
    n = (sq + BM - 1) / BM;
    extra = kv_tail ? kMaskBounds : 0;
  }
  __device__ __forceinline__ int count() const { return n; }
  __device__ __forceinline__ QTileRef tile(int i) const {
    QTileRef t;
    t.q0 = i * BM;
    t.bits = extra | (t.q0 + BM > sq ? kMaskBounds : 0);
    return t;
  }
};

// Top-left causal (kv <= q): q tiles from the one holding row kv0 on.
template <int BM, int BN>
struct QSchedule<::flexattn::flash::kCausal, BM, BN> {
  int n, sq, first, kv0, extra;
  __device__ __forceinline__ QSchedule(const FlashBwdParams& p, int, int, int kv0_, bool kv_tail) {
    sq = p.Sq;
    kv0 = kv0_;
    first = kv0 / BM;
    const int total = (sq + BM - 1) / BM;
    n = kv0 < sq ? total - first : 0;
    extra = kv_tail ? kMaskBounds : 0;
  }
  __device__ __forceinline__ int count() const { return n; }
  __device__ __forceinline__ QTileRef tile(int i) const {
    QTileRef t;
    t.q0 = (first + i) * BM;
    t.bits = extra | (t.q0 + BM > sq ? kMaskBounds : 0) | (kv0 + BN - 1 > t.q0 ? kMaskCausal : 0);
    return t;
  }
};

// BlockMask q-side (transposed) lists of the kv block: full blocks first
// (score_mod only), then partial (mask_mod applied); a q block of bm_q_block
// rows is walked as bm_q_block / BM tiles.
template <int BM, int BN>
struct QSchedule<::flexattn::flash::kBlockSparse, BM, BN> {
  const int* full_idx;
  const int* part_idx;
  int n_full_tiles, n, sq, qb, tpb, extra;
  __device__ __forceinline__ QSchedule(const FlashBwdParams& p, int b, int h, int kv0, bool kv_tail) {
    const int kvb = kv0 / p.bm_kv_block;
    const long long nb = (long long)b * p.bm_qnum_stride_b + (long long)h * p.bm_qnum_stride_h + kvb;
    const long long ib = (long long)b * p.bm_qidx_stride_b + (long long)h * p.bm_qidx_stride_h +
                         (long long)kvb * p.bm_qidx_stride_kvb;
    qb = p.bm_q_block;
    tpb = qb / BM;
    sq = p.Sq;
    const int nfull = p.full_q_num_blocks ? ldg_i32(p.full_q_num_blocks + nb) : 0;
    const int npart = p.q_num_blocks ? ldg_i32(p.q_num_blocks + nb) : 0;
    full_idx = p.full_q_indices ? p.full_q_indices + ib : nullptr;
    part_idx = p.q_indices ? p.q_indices + ib : nullptr;
    n_full_tiles = nfull * tpb;
    n = (nfull + npart) * tpb;
    extra = kv_tail ? kMaskBounds : 0;
  }
  __device__ __forceinline__ int count() const { return n; }
  __device__ __forceinline__ QTileRef tile(int i) const {
    QTileRef t;
    const bool full = i < n_full_tiles;
    const int j = full ? i : i - n_full_tiles;
    const int jb = j / tpb;
    const int blk = ldg_i32((full ? full_idx : part_idx) + jb);
    t.q0 = blk * qb + (j - jb * tpb) * BM;
    t.bits = extra | (t.q0 + BM > sq ? kMaskBounds : 0) | (!full && FLEX_HAS_MASK_MOD ? kMaskMod : 0);
    return t;
  }
};

// 16-bit accumulator rows -> global, times `mul` (rows >= valid are dropped).
template <class T, int DT>
__device__ __forceinline__ void store_rows(const RtAcc<1, DT>& acc, u16* g, i64 stride, int row0, int valid,
                                           float mul, int lane) {
  const int gr = lane >> 2, t = lane & 3;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + gr + 8 * r;
    if (row < valid) {
      u16* out = g + (i64)row * stride + 2 * t;
#pragma unroll
      for (int d = 0; d < DT; ++d)
        st_global_u32(out + d * 8, T::pack2(acc.c[0][d][2 * r] * mul, acc.c[0][d][2 * r + 1] * mul));
    }
  }
}

// ---------------------------------------------------------------------------
// dK/dV pass. Per warp: 16 kv rows; per q tile Sᵀ = K Qᵀ and dPᵀ = V dOᵀ
// (16 x 64), then dV += Pᵀ dO and dK += dSᵀ Q with Pᵀ / dSᵀ straight from the
// accumulators into A fragments.
template <class Cfg, class T, int MODE>
__device__ __forceinline__ void flash_bwd_dkdv(const FlashBwdParams& p) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, NTH = Cfg::kThreads, KT = Cfg::kKT, DT = Cfg::kDT;
  constexpr int NT = BM / 8, PK = BM / 16;
  typedef typename Cfg::Tile Tile;
  constexpr int TB = Cfg::kTileBytes;

  extern __shared__ __align__(128) unsigned char smem[];
  const u32 sK = smem_u32(smem), sV = sK + TB;
  const u32 sQ = sV + TB;                 // kStages tiles of Q
  const u32 sDO = sQ + Cfg::kStages * TB; // kStages tiles of dO

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int hk = blockIdx.y, b = blockIdx.z;
  const int kv0 = blockIdx.x * BN;
  const int row0 = kv0 + warp * 16;       // first kv row of this warp
  const int Sq = p.Sq, Skv = p.Skv;
  const bool kv_tail = kv0 + BN > Skv;
  const FlexModArgs args = p.mod;
#if defined(FLEX_GRAD_SITES) && FLEX_GRAD_SITES > 0
  GradWindow gwin[FLEX_GRAD_TENSORS];
  {
    const int cta = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
#pragma unroll
    for (int k = 0; k < FLEX_GRAD_TENSORS; ++k) {
      const FlexGradBuf gb = flex_grad_buf(k, args);
      gwin[k].width = gb.width;
      gwin[k].lo = __ldg(gb.lo + cta);
      gwin[k].part = gb.part + ((i64)cta * Cfg::kWarps + warp) * gb.width;
    }
  }
  GradFast gfast;
#if FLEX_GRAD_DIAGONAL > 0
  static_assert(GradDiag<NT>::kSlots * 32 * 4 * Cfg::kWarps == 9216, "DIAG_STAGE_BYTES of lib/cuda/gradfor-plan.ts");
  __shared__ float gstage[Cfg::kWarps][FLEX_GRAD_DIAGONAL * GradDiag<NT>::kSlots * 32];
  gfast.stage = gstage[warp];
#endif
#endif

  const u16* gK = (const u16*)p.k + (i64)b * p.k_stride_b + (i64)hk * p.k_stride_h + (i64)kv0 * p.k_stride_s;
  const u16* gV = (const u16*)p.v + (i64)b * p.v_stride_b + (i64)hk * p.v_stride_h + (i64)kv0 * p.v_stride_s;
  Tile::template load_async<NTH>(sK, gK, p.k_stride_s, Skv - kv0, tid);
  Tile::template load_async<NTH>(sV, gV, p.v_stride_s, Skv - kv0, tid);
  cp_async_commit();

  RtAcc<1, DT> dk, dv;
  dk.zero();
  dv.zero();

  for (int hh = 0; hh < p.gqa_group; ++hh) {
    const int h = hk * p.gqa_group + hh;
    QSchedule<MODE, BM, BN> sched(p, b, h, kv0, kv_tail);
    const int n = sched.count();
    if (n == 0) continue;  // CTA-uniform
    const u16* gQ = (const u16*)p.q + (i64)b * p.q_stride_b + (i64)h * p.q_stride_h;
    const u16* gDO = (const u16*)p.dout + (i64)b * p.do_stride_b + (i64)h * p.do_stride_h;
    const float* rl = p.lse2 + ((i64)b * p.Hq + h) * Sq;
    const float* rd = p.delta + ((i64)b * p.Hq + h) * Sq;
    const i64 qs = p.q_stride_s, ds = p.do_stride_s;
#if defined(FLEX_GRAD_SITES) && FLEX_GRAD_SITES > 0
    grad_uniform_begin(gfast);
#endif

    QTileRef cur = sched.tile(0);
    Tile::template load_async<NTH>(sQ, gQ + (i64)cur.q0 * qs, qs, Sq - cur.q0, tid);
    Tile::template load_async<NTH>(sDO, gDO + (i64)cur.q0 * ds, ds, Sq - cur.q0, tid);
    cp_async_commit();
    for (int it = 0; it < n; ++it) {
      const int slot = it & 1;
      QTileRef nxt = cur;
      if (it + 1 < n) {
        nxt = sched.tile(it + 1);
        const u32 o = (u32)((slot ^ 1) * TB);
        Tile::template load_async<NTH>(sQ + o, gQ + (i64)nxt.q0 * qs, qs, Sq - nxt.q0, tid);
        Tile::template load_async<NTH>(sDO + o, gDO + (i64)nxt.q0 * ds, ds, Sq - nxt.q0, tid);
      }
      cp_async_commit();
      cp_async_wait<1>();
      __syncthreads();

      const u32 tQ = sQ + slot * TB, tDO = sDO + slot * TB;
      const u32 lbA = opaque(Tile::lane_base_A(lane));
      const u32 lbNK = opaque(Tile::lane_base_nk(lane));
      const u32 lbKN = opaque(Tile::lane_base_kn(lane));

      // Sᵀ = K Qᵀ, dPᵀ = V dOᵀ
      RtAcc<1, NT> st, dpt;
      st.zero();
      dpt.zero();
#pragma unroll
      for (int k = 0; k < KT; ++k) {
        u32 ka[4], va[4];
        Tile::ldA(ka, sK, lbA, warp * 16, k);
        Tile::ldA(va, sV, lbA, warp * 16, k);
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
          u32 qb[4], db[4];
          Tile::ldB_nk(qb, tQ, lbNK, np * 16, k);
          Tile::ldB_nk(db, tDO, lbNK, np * 16, k);
          T::mma(st.c[0][2 * np], ka, qb[0], qb[1]);
          T::mma(st.c[0][2 * np + 1], ka, qb[2], qb[3]);
          T::mma(dpt.c[0][2 * np], va, db[0], db[1]);
          T::mma(dpt.c[0][2 * np + 1], va, db[2], db[3]);
        }
      }

      // P and dS (rows kv, columns q)
#if defined(FLEX_GRAD_SITES) && FLEX_GRAD_SITES > 0
      grad_diag_begin<NT>(gfast, lane);
#endif
#pragma unroll
      for (int nn = 0; nn < NT; ++nn)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int kv = elem_q(row0, 0, g, i), q = elem_kv(cur.q0, nn, t, i);
          const int qc = imin(q, Sq - 1), kvc = imin(kv, Skv - 1);
          const float l2 = q < Sq ? __ldg(rl + qc) : pos_inf();
          const float dl = __ldg(rd + qc);
          const bool keep = cur.bits ? keep_element(p, args, b, h, q, kv, qc, kvc, cur.bits, Skv) : true;
          float dsm, raw;
          bool kept;
          const float qk = st.c[0][nn][i];
          grad_element(st.c[0][nn][i], dpt.c[0][nn][i], dsm, raw, kept, qk, dpt.c[0][nn][i], keep, l2, dl, p, args, b,
                       h, qc, kvc);
#if defined(FLEX_GRAD_SITES) && FLEX_GRAD_SITES > 0
          grad_captured_element<NT>(gwin, gfast, dsm, raw, kept, b, h, qc, kvc, GradDiag<NT>::slot(nn, i), args, lane);
#else
          (void)dsm; (void)raw; (void)kept;
#endif
        }
#if defined(FLEX_GRAD_SITES) && FLEX_GRAD_SITES > 0
      grad_diag_end<NT>(gwin, gfast, row0 - cur.q0, lane);
#endif

      // dV += Pᵀ dO, dK += dSᵀ Q
      RtA<1, PK> pa, sa;
      acc_to_A<T>(pa, st);
      acc_to_A<T>(sa, dpt);
#pragma unroll
      for (int k = 0; k < PK; ++k)
#pragma unroll
        for (int dp = 0; dp < DT / 2; ++dp) {
          u32 ob[4], qb[4];
          Tile::ldB_kn(ob, tDO, lbKN, k * 16, dp);
          Tile::ldB_kn(qb, tQ, lbKN, k * 16, dp);
          T::mma(dv.c[0][2 * dp], pa.a[0][k], ob[0], ob[1]);
          T::mma(dv.c[0][2 * dp + 1], pa.a[0][k], ob[2], ob[3]);
          T::mma(dk.c[0][2 * dp], sa.a[0][k], qb[0], qb[1]);
          T::mma(dk.c[0][2 * dp + 1], sa.a[0][k], qb[2], qb[3]);
        }
      __syncthreads();  // this slot is refilled two iterations on
      cur = nxt;
    }
#if defined(FLEX_GRAD_SITES) && FLEX_GRAD_SITES > 0
    grad_uniform_end(gwin, gfast, lane);
#endif
  }
  cp_async_wait<0>();

  u16* gdk = (u16*)p.dk + (i64)b * p.dk_stride_b + (i64)hk * p.dk_stride_h;
  u16* gdv = (u16*)p.dv + (i64)b * p.dv_stride_b + (i64)hk * p.dv_stride_h;
  store_rows<T, DT>(dk, gdk, p.dk_stride_s, row0, Skv, p.scale, lane);
  store_rows<T, DT>(dv, gdv, p.dv_stride_s, row0, Skv, 1.f, lane);
}

// ---------------------------------------------------------------------------
// dQ pass. Per warp: 16 q rows; per kv tile S = Q Kᵀ, dP = dO Vᵀ, then
// dQ += dS K.
template <class Cfg, class T, int MODE>
__device__ __forceinline__ void flash_bwd_dq(const FlashBwdParams& p) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, NTH = Cfg::kThreads, KT = Cfg::kKT, DT = Cfg::kDT;
  constexpr int NT = BN / 8, PK = BN / 16;
  typedef typename Cfg::Tile Tile;
  constexpr int TB = Cfg::kTileBytes;

  extern __shared__ __align__(128) unsigned char smem[];
  const u32 sQ = smem_u32(smem), sDO = sQ + TB;
  const u32 sK = sDO + TB;                 // kStages tiles of K
  const u32 sV = sK + Cfg::kStages * TB;   // kStages tiles of V

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int m_block = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int hk = h / p.gqa_group;
  const int q0 = m_block * BM;
  const int row0 = q0 + warp * 16;
  const int Sq = p.Sq, Skv = p.Skv;
  const bool q_tail = q0 + BM > Sq;
  const FlexModArgs args = p.mod;

  const u16* gQ = (const u16*)p.q + (i64)b * p.q_stride_b + (i64)h * p.q_stride_h + (i64)q0 * p.q_stride_s;
  const u16* gDO = (const u16*)p.dout + (i64)b * p.do_stride_b + (i64)h * p.do_stride_h + (i64)q0 * p.do_stride_s;
  const u16* gK = (const u16*)p.k + (i64)b * p.k_stride_b + (i64)hk * p.k_stride_h;
  const u16* gV = (const u16*)p.v + (i64)b * p.v_stride_b + (i64)hk * p.v_stride_h;
  const i64 ks = p.k_stride_s, vs = p.v_stride_s;
  Tile::template load_async<NTH>(sQ, gQ, p.q_stride_s, Sq - q0, tid);
  Tile::template load_async<NTH>(sDO, gDO, p.do_stride_s, Sq - q0, tid);

  KvSchedule<MODE, BM, BN> sched(p, b, h, m_block, q0, q_tail);
  const int n = sched.count();
  TileRef cur = sched.tile(0);
  if (n > 0) {
    Tile::template load_async<NTH>(sK, gK + (i64)cur.kv0 * ks, ks, Skv - cur.kv0, tid);
    Tile::template load_async<NTH>(sV, gV + (i64)cur.kv0 * vs, vs, Skv - cur.kv0, tid);
  }
  cp_async_commit();

  // This thread's rows g and g + 8: lse2 (+inf past Sq) and Delta.
  const i64 rb = ((i64)b * p.Hq + h) * Sq;
  float l2[2], dl[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int q = row0 + g + 8 * r;
    l2[r] = q < Sq ? __ldg(p.lse2 + rb + q) : pos_inf();
    dl[r] = q < Sq ? __ldg(p.delta + rb + q) : 0.f;
  }

  RtAcc<1, DT> dq;
  dq.zero();
  for (int it = 0; it < n; ++it) {
    const int slot = it & 1;
    TileRef nxt = cur;
    if (it + 1 < n) {
      nxt = sched.tile(it + 1);
      const u32 o = (u32)((slot ^ 1) * TB);
      Tile::template load_async<NTH>(sK + o, gK + (i64)nxt.kv0 * ks, ks, Skv - nxt.kv0, tid);
      Tile::template load_async<NTH>(sV + o, gV + (i64)nxt.kv0 * vs, vs, Skv - nxt.kv0, tid);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();

    const u32 tK = sK + slot * TB, tV = sV + slot * TB;
    const u32 lbA = opaque(Tile::lane_base_A(lane));
    const u32 lbNK = opaque(Tile::lane_base_nk(lane));
    const u32 lbKN = opaque(Tile::lane_base_kn(lane));

    // S = Q Kᵀ, dP = dO Vᵀ
    RtAcc<1, NT> s, dpa;
    s.zero();
    dpa.zero();
#pragma unroll
    for (int k = 0; k < KT; ++k) {
      u32 qa[4], oa[4];
      Tile::ldA(qa, sQ, lbA, warp * 16, k);
      Tile::ldA(oa, sDO, lbA, warp * 16, k);
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        u32 kb[4], vb[4];
        Tile::ldB_nk(kb, tK, lbNK, np * 16, k);
        Tile::ldB_nk(vb, tV, lbNK, np * 16, k);
        T::mma(s.c[0][2 * np], qa, kb[0], kb[1]);
        T::mma(s.c[0][2 * np + 1], qa, kb[2], kb[3]);
        T::mma(dpa.c[0][2 * np], oa, vb[0], vb[1]);
        T::mma(dpa.c[0][2 * np + 1], oa, vb[2], vb[3]);
      }
    }

#pragma unroll
    for (int nn = 0; nn < NT; ++nn)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int q = elem_q(row0, 0, g, i), kv = elem_kv(cur.kv0, nn, t, i);
        const int qc = imin(q, Sq - 1), kvc = imin(kv, Skv - 1);
        const bool keep = cur.bits ? keep_element(p, args, b, h, q, kv, qc, kvc, cur.bits, Skv) : true;
        float pv;
        grad_element(pv, dpa.c[0][nn][i], s.c[0][nn][i], dpa.c[0][nn][i], keep, l2[i >> 1], dl[i >> 1], p, args, b, h,
                     qc, kvc);
      }

    // dQ += dS K
    RtA<1, PK> sa;
    acc_to_A<T>(sa, dpa);
#pragma unroll
    for (int k = 0; k < PK; ++k)
#pragma unroll
      for (int dp = 0; dp < DT / 2; ++dp) {
        u32 kb[4];
        Tile::ldB_kn(kb, tK, lbKN, k * 16, dp);
        T::mma(dq.c[0][2 * dp], sa.a[0][k], kb[0], kb[1]);
        T::mma(dq.c[0][2 * dp + 1], sa.a[0][k], kb[2], kb[3]);
      }
    __syncthreads();
    cur = nxt;
  }
  cp_async_wait<0>();

  u16* gdq = (u16*)p.dq + (i64)b * p.dq_stride_b + (i64)h * p.dq_stride_h;
  store_rows<T, DT>(dq, gdq, p.dq_stride_s, row0, Sq, p.scale, lane);
}

}  // namespace flash_bwd
}  // namespace flexattn

// ---------------------------------------------------------------------------
// Instantiation macros (nvcc precompiled and NVRTC JIT alike).
#define FLEXATTN_BWD_KERNEL_CFG_(NAME, CFG, BODY)                                                   \
  extern "C" __constant__ int NAME##_cfg[::flexattn::kFlashBwdCfgInts] = {FLEXATTN_BWD_CFG_VALUES(CFG)}; \
  extern "C" __global__ void __launch_bounds__(CFG::kThreads)                                        \
      NAME(const __grid_constant__ ::flexattn::FlashBwdParams p) {                                   \
    BODY;                                                                                            \
  }

#define FLEXATTN_BWD_PRE_KERNEL(NAME, HEAD_DIM, DTYPE)                                  \
  FLEXATTN_BWD_KERNEL_CFG_(NAME, ::flexattn::flash_bwd::PreConfig<HEAD_DIM>,              \
      (::flexattn::flash_bwd::flash_bwd_pre<::flexattn::flash_bwd::PreConfig<HEAD_DIM>,   \
                                            ::flexattn::tiles::DTYPE>(p)))

#define FLEXATTN_BWD_DKDV_KERNEL(NAME, HEAD_DIM, DTYPE, MODE)                              \
  FLEXATTN_BWD_KERNEL_CFG_(NAME, ::flexattn::flash_bwd::DkdvConfig<HEAD_DIM>,                \
      (::flexattn::flash_bwd::flash_bwd_dkdv<::flexattn::flash_bwd::DkdvConfig<HEAD_DIM>,    \
          ::flexattn::tiles::DTYPE, ::flexattn::flash::MODE>(p)))

#define FLEXATTN_BWD_DQ_KERNEL(NAME, HEAD_DIM, DTYPE, MODE)                                \
  FLEXATTN_BWD_KERNEL_CFG_(NAME, ::flexattn::flash_bwd::DqConfig<HEAD_DIM>,                  \
      (::flexattn::flash_bwd::flash_bwd_dq<::flexattn::flash_bwd::DqConfig<HEAD_DIM>,        \
          ::flexattn::tiles::DTYPE, ::flexattn::flash::MODE>(p)))

// The gradFor reduce (FLEX_GRAD_SITES > 0: only in a generated module with gradFor).
#define FLEXATTN_BWD_GRAD_REDUCE_KERNEL(NAME)                                                  \
  FLEXATTN_BWD_KERNEL_CFG_(NAME, ::flexattn::flash_bwd::GradReduceConfig,                        \
      (::flexattn::flash_bwd::flash_bwd_grad_reduce<::flexattn::flash_bwd::BwdTile<32>::kWarps,  \
          ::flexattn::flash_bwd::BwdTile<32>::kBlockN>(p)))

#define FLEXATTN_BWD_DENSE_VARIANTS(HEAD_DIM, DTYPE)                                                   \
  FLEXATTN_BWD_PRE_KERNEL(flexattn_bwd_pre_d##HEAD_DIM##_##DTYPE, HEAD_DIM, DTYPE)                     \
  FLEXATTN_BWD_DKDV_KERNEL(flexattn_bwd_dkdv_d##HEAD_DIM##_##DTYPE, HEAD_DIM, DTYPE, kDense)           \
  FLEXATTN_BWD_DKDV_KERNEL(flexattn_bwd_dkdv_d##HEAD_DIM##_##DTYPE##_causal, HEAD_DIM, DTYPE, kCausal) \
  FLEXATTN_BWD_DQ_KERNEL(flexattn_bwd_dq_d##HEAD_DIM##_##DTYPE, HEAD_DIM, DTYPE, kDense)               \
  FLEXATTN_BWD_DQ_KERNEL(flexattn_bwd_dq_d##HEAD_DIM##_##DTYPE##_causal, HEAD_DIM, DTYPE, kCausal)

// Every precompiled dense variant: head dims 32, 64, 96, 128; bf16 and f16.
#define FLEXATTN_BWD_ALL_DENSE()                                                    \
  FLEXATTN_BWD_DENSE_VARIANTS(32, bf16) FLEXATTN_BWD_DENSE_VARIANTS(32, f16)        \
  FLEXATTN_BWD_DENSE_VARIANTS(64, bf16) FLEXATTN_BWD_DENSE_VARIANTS(64, f16)        \
  FLEXATTN_BWD_DENSE_VARIANTS(96, bf16) FLEXATTN_BWD_DENSE_VARIANTS(96, f16)        \
  FLEXATTN_BWD_DENSE_VARIANTS(128, bf16) FLEXATTN_BWD_DENSE_VARIANTS(128, f16)
