// Decode kernel (native/kernels/decode.cuh) as precompiled, plus alternative
// tiles for tuning: dec_d128_m<BM>n<BN>w<warps>s<stages> (+ the combine).
// (The load-hint twins of the 2026-12-07 sweep, -DFLEXATTN_DECODE_L2_PREFETCH=256, used a decode.cuh with that macro; it was not adopted.)
#include "../../native/kernels/decode.cuh"

FLEXATTN_DECODE_ALL()

namespace dh {
template <int BM, int BN, int W, int ST>
struct Tile {
  static constexpr int kBlockM = BM, kBlockN = BN, kWarps = W, kStages = ST;
};
}  // namespace dh

#define DEC_ALT(BM, BN, W, ST)                                                                                   \
  typedef ::flexattn::decode::DecodeConfig<128, dh::Tile<BM, BN, W, ST>> Cfg_m##BM##n##BN##w##W##s##ST;          \
  extern "C" __constant__ int dec_d128_m##BM##n##BN##w##W##s##ST##_cfg[::flexattn::kDecodeCfgInts] = {           \
      FLEXATTN_DECODE_CFG_VALUES(Cfg_m##BM##n##BN##w##W##s##ST)};                                                \
  extern "C" __global__ void __launch_bounds__(Cfg_m##BM##n##BN##w##W##s##ST::kThreads, 1)                       \
      dec_d128_m##BM##n##BN##w##W##s##ST(const __grid_constant__ ::flexattn::DecodeParams p) {                   \
    ::flexattn::decode::decode_attn<Cfg_m##BM##n##BN##w##W##s##ST, ::flexattn::tiles::bf16>(p);                \
  }

DEC_ALT(16, 64, 4, 4)
DEC_ALT(16, 64, 4, 2)
DEC_ALT(16, 128, 4, 2)
DEC_ALT(16, 128, 8, 2)
DEC_ALT(16, 128, 8, 3)
DEC_ALT(16, 64, 2, 3)
DEC_ALT(16, 32, 2, 4)
DEC_ALT(16, 32, 2, 6)

// Deeper pipelines at one CTA per SM, and the fused combine (the last split CTA merges; no combine launch).
DEC_ALT(16, 64, 4, 5)
DEC_ALT(16, 64, 4, 6)

#define DEC_FUSED(NAME, CFG, MINB)                                                                \
  extern "C" __constant__ int NAME##_cfg[::flexattn::kDecodeCfgInts] = {FLEXATTN_DECODE_CFG_VALUES(CFG)}; \
  extern "C" __global__ void __launch_bounds__(CFG::kThreads, MINB) NAME(const __grid_constant__ ::flexattn::DecodeParams p) { \
    ::flexattn::decode::decode_attn<CFG, ::flexattn::tiles::bf16, true>(p);                      \
  }
DEC_FUSED(dec_d128_default_fc, ::flexattn::decode::DecodeConfig<128>, 2)
DEC_FUSED(dec_d128_m16n64w4s6_fc, Cfg_m16n64w4s6, 1)
DEC_FUSED(dec_d128_m16n64w4s4_fc, Cfg_m16n64w4s4, 1)

// Hopper bulk-copy variants (decode_bulk.cuh: a producer warp's cp.async.bulk row copies into an ST-stage
// mbarrier ring; the same combine kernel). sm_90a only; BLOCK_N 64 with 4 consumer warps, or 32 with 2.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 || !defined(__CUDA_ARCH__)
#include "decode_bulk.cuh"
DEC_BULK(bulk_s3, 64, 4, 3, 2)      // 108.5 KB: two CTAs per SM
DEC_BULK(bulk_s4, 64, 4, 4, 1)      // 143 KB
DEC_BULK(bulk_s6, 64, 4, 6, 1)      // 208 KB
DEC_BULK(bulk_n32s8, 32, 2, 8, 1)   // 140 KB: 8 stages of 32 tokens
#endif
