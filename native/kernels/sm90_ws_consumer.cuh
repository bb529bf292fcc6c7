// sm90_ws_consumer.cuh — one consumer warpgroup's mainloop (64 query rows):
// S = Q·Kᵀ by wgmma SS, online softmax in registers, O += P·V by wgmma RS (P
// from registers), ping-ponged with the other consumer through named barriers
// and releasing each K/V ring slot once its wgmma reads are done.
#pragma once

#include "sm90_ws_config.cuh"
#include "sm90_ws_pipeline.cuh"
#include "sm90_ws_scheduler.cuh"
#include "sm90_ws_softmax.cuh"
#include "sm90_ws_flex.cuh"
#include "sm90_ws_epilogue.cuh"

namespace flexattn {
namespace ws90 {

using namespace ::flexattn::tiles;
using ::flexattn::sm90::WgOps;
using ::flexattn::sm90::issue_qk;
using ::flexattn::sm90::issue_pv;

// One consumer warpgroup (cw = 0 or 1): rows q0 + 64 cw .. + 63. MODE: 0
// dense, 1 causal, 2 block-sparse with mods (f and mod then point at the
// parameter block's WsBlockMask and FlexModArgs; null otherwise). `tiles` is
// the producer's sequence (sm90_ws_flex.cuh).
template <class Cfg, class T, int MODE, class Tiles>
__device__ __forceinline__ void consumer(const Smem<Cfg>& sm, const WsParams& p, const WorkTile& w, const Tiles& tiles,
                                         const WsBlockMask* f, const FlexModArgs* mod, int cw, int tid_in_wg) {
  constexpr bool kCausal = MODE == 1, kFlex = MODE == 2;
  const int n_tiles = tiles.count();
  constexpr int ST = Cfg::kStages, BN = Cfg::kBlockN, NT = Cfg::kNT, DT = Cfg::kDT, PK = Cfg::kPK;
  namespace wg_ = ::flexattn::sm90;
  typedef typename WgOps<T>::type Ops;
  const int lane = tid_in_wg & 31, warp = tid_in_wg >> 5;
  const int wg_row0 = w.m_block * Cfg::kBlockM + cw * 64;   // first row of this warpgroup
  const int row0 = wg_row0 + warp * 16;                     // first row of this warp
  const int Skv = p.Skv;
  // With a score mod the values leave flex_tile as mod(scale·qk)·log2 e (as flash_fwd's score_tile).
  const bool premul = (kFlex && FLEX_HAS_SCORE_MOD) ? true : !(p.scale_log2 > 0.f);
  const float dom = premul ? 1.f : p.scale_log2;
  const int my_bar = cw == 0 ? kBarSchedWG0 : kBarSchedWG1;
  const int other_bar = cw == 0 ? kBarSchedWG1 : kBarSchedWG0;
  // A tile needs the per-element mask when it reaches past Skv or, causal,
  // past this warpgroup's first row.
  auto need_mask = [&](int kv0) { return kv0 + BN > Skv || (kCausal && kv0 + BN - 1 > wg_row0); };
  // Ping-pong hand-over after this warpgroup's GEMMs of tile `n` are issued. Consumer 1's last hand-over
  // is skipped: consumer 0 never waits for it, and every arrive is then matched by a sync.
  auto hand_over = [&](int n) {
    if (cw == 0 || n + 1 < n_tiles) named_arrive(other_bar, kConsumerThreads);
  };
  // Scale, mods and mask of the S tile `cur` in place (flex: flex_tile; dense / causal: mask_tile).
  auto score = [&](float (&sv)[NT * 4], const ::flexattn::flash::TileRef& cur) {
    if constexpr (kFlex) flex_tile<Cfg>(sv, *f, *mod, w.b, w.h, row0, cur.kv0, cur.bits, premul, lane);
    else mask_tile<Cfg, kCausal>(sv, row0, cur.kv0, Skv, premul, p.scale_log2, need_mask(cur.kv0), lane);
  };
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
    const ::flexattn::flash::TileRef t0 = tiles.tile(0);   // index load overlaps the wait
    mbar_wait(sm.k_full(ks.index), ks.phase, 30 + ks.index);
    named_sync(my_bar, kConsumerThreads);
    issue_qk<Cfg, Ops>(s, sm.q, cw, sm.k_tile(ks.index));
    hand_over(0);
    wg_::warpgroup_wait<0>();
    wg_::fence_operands(s);
    release(sm.k_empty(ks.index));
    ks.advance();
    score(s, t0);
    online_softmax<NT>(s, row_max, row_sum, alpha, dom);
    p_to_a<T, PK>(pa, s);

    for (int n = 1; n < n_tiles; ++n) {
      const ::flexattn::flash::TileRef cur = tiles.tile(n);
      mbar_wait(sm.k_full(ks.index), ks.phase, 30 + ks.index);
      named_sync(my_bar, kConsumerThreads);
      wg_::fence_operands(s);
      issue_qk<Cfg, Ops>(s, sm.q, cw, sm.k_tile(ks.index));   // S_n
      rescale_o<DT>(o, alpha);                                  // O *= alpha_{n-1}, under S_n
      mbar_wait(sm.v_full(vs.index), vs.phase, 40 + vs.index);
      wg_::fence_operands(o);
      issue_pv<Cfg, Ops>(o, pa, sm.v_tile(vs.index));           // O += P_{n-1} V_{n-1}
      hand_over(n);
      wg_::warpgroup_wait<1>();                                 // S_n done; P·V may run on
      wg_::fence_operands(s);
      release(sm.k_empty(ks.index));
      ks.advance();
      score(s, cur);
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

}  // namespace ws90
}  // namespace flexattn
