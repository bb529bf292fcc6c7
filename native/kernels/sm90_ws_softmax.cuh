// sm90_ws_softmax.cuh — register-side steps of the consumer between the two
// GEMMs, on accumulators in the wgmma m64nN layout (warp w of a warpgroup holds
// rows 16 w + g and 16 w + g + 8; element 4 j + i at column 8 j + 2 t + (i & 1),
// row + 8 (i >> 1)): scale and mask an S tile, the online softmax, rescaling O
// and packing P into the RS wgmma's A fragments.
#pragma once

#include "tiles.cuh"

namespace flexattn {
namespace ws90 {

using namespace ::flexattn::tiles;

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

}  // namespace ws90
}  // namespace flexattn
