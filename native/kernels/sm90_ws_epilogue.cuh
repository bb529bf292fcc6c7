// sm90_ws_epilogue.cuh — a consumer's epilogue: O / l from registers to global
// memory (rows < Sq) and the log-sum-exp.
#pragma once

#include "sm90_ws_config.cuh"

namespace flexattn {
namespace ws90 {

using namespace ::flexattn::tiles;

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

}  // namespace ws90
}  // namespace flexattn
