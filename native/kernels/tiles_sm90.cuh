// tiles_sm90.cuh — Hopper (sm_90a) tile vocabulary for the wgmma forward kernel:
//   * Sw128Tile<ROWS, D>  a [ROWS x D] 16-bit tile in shared memory in wgmma's
//                         128-byte-swizzled layout: D is split into panels of 64
//                         columns (128 B per row); panel p holds all ROWS rows at
//                         128 B stride; 8 rows form one 1024-byte swizzle atom
//                         whose 16-byte chunks are permuted by chunk ^ (row & 7).
//                         Filled with cp.async; read by wgmma through descriptors.
//   * warpgroup ops       fence / commit / wait, and operand fences that keep the
//                         compiler from moving accumulator accesses across them.
//   * GEMM steps          issue_qk (SS) / issue_pv (RS) over Sw128Tile operands.
// Requires sm_90a (wgmma is arch-specific); see flash_fwd_sm90.cuh.
#pragma once

#include "tiles.cuh"
#include "wgmma_ops.cuh"

namespace flexattn {
namespace sm90 {

using namespace ::flexattn::tiles;

// wgmma shared-memory matrix descriptor, 128-byte swizzle (PTX ISA "Matrix
// Descriptor Format"): start >> 4 in bits 0-13, leading byte offset >> 4 in
// 16-29, stride byte offset >> 4 in 32-45, swizzle mode 1 (128 B) in 62-63.
// Atoms must start on 1024-byte boundaries (base offset 0).
__device__ __forceinline__ u64 sw128_desc(u32 smem_addr, u32 lbo_bytes, u32 sbo_bytes) {
  return (u64)((smem_addr & 0x3FFFF) >> 4) | ((u64)(lbo_bytes >> 4) << 16) |
         ((u64)(sbo_bytes >> 4) << 32) | (1ull << 62);
}

template <int ROWS, int D>
struct Sw128Tile {
  static_assert(D % 64 == 0, "128-byte swizzled panels need a head dim multiple of 64");
  static_assert(ROWS % 8 == 0, "whole swizzle atoms");
  static constexpr int kPanels = D / 64;
  static constexpr int kPanelBytes = ROWS * 128;
  static constexpr int kBytes = kPanels * kPanelBytes;
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row

  static __device__ __forceinline__ u32 offset(int row, int chunk) {
    return (u32)((chunk >> 3) * kPanelBytes + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
  }

  // All NTHREADS threads copy rows [0, ROWS) of g (row stride `stride`
  // elements); rows >= valid_rows are zero-filled. A whole tile in bounds (the
  // common case: every tile but a sequence's last) takes unpredicated copies:
  // per row one 64-bit add and the copy, instead of a bounds test and two
  // pointer selects as well (measured: kernel-notes.md).
  template <int NTHREADS>
  static __device__ __forceinline__ void load_async(u32 base, const u16* g, i64 stride, int valid_rows, int tid) {
    static_assert(NTHREADS % kChunks == 0 && ROWS % (NTHREADS / kChunks) == 0, "even split");
    constexpr int kStep = NTHREADS / kChunks;
    const int ch = tid % kChunks, r0 = tid / kChunks;
    const u16* src = g + (i64)r0 * stride + ch * 8;
    const u32 dst = base + offset(r0, ch);   // kStep % 8 == 0: row i's offset is dst + i * kStep * 128
    static_assert(kStep % 8 == 0, "rows of one thread share a swizzle phase");
    if (valid_rows >= ROWS) {
#pragma unroll
      for (int i = 0; i < ROWS / kStep; ++i) {
        cp_async16(dst + i * kStep * 128, src);
        src += kStep * stride;
      }
      return;
    }
#pragma unroll
    for (int i = 0; i < ROWS / kStep; ++i) {
      const int r = r0 + i * kStep;
      const bool ok = r < valid_rows;
      cp_async16(dst + i * kStep * 128, ok ? src : g, ok);
      src += kStep * stride;
    }
  }

  // Operand that is K-major (rows = M or N, columns = the reduction dim):
  // rows [row0, row0 + 64 or N), reduction columns [16 k, 16 k + 16).
  static __device__ __forceinline__ u64 desc_k_major(u32 base, int row0, int k) {
    return sw128_desc(base + (k >> 2) * kPanelBytes + row0 * 128 + (k & 3) * 32, 16, 1024);
  }
  // Operand that is N-major (rows = the reduction dim, columns = N): reduction
  // rows [16 k, 16 k + 16), all D columns (panels kPanelBytes apart).
  static __device__ __forceinline__ u64 desc_mn_major(u32 base, int k) {
    return sw128_desc(base + k * 16 * 128, kPanelBytes, 1024);
  }
};

// The generated wgmma wrappers (wgmma_ops.cuh) of a dtype tag.
template <class T> struct WgOps;
template <> struct WgOps<bf16> { typedef ::flexattn::wgmma::ops_bf16 type; };
template <> struct WgOps<f16> { typedef ::flexattn::wgmma::ops_f16 type; };

__device__ __forceinline__ void warpgroup_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void warpgroup_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void warpgroup_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(N) : "memory"); }
// cp.async writes are generic-proxy; wgmma reads through the async proxy.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// Pin accumulator registers around asynchronous wgmma: no access may be moved
// across the fence (the registers are in flight between mma_async and wait).
template <int N>
__device__ __forceinline__ void fence_operands(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// ---------------------------------------------------------------------------
// Warpgroup GEMM steps shared by the Hopper forwards (flash_fwd_sm90.cuh and
// the warp-specialised sm90_ws_consumer.cuh). Cfg provides kBlockN, kHeadDim,
// kKT (= D / 16), kPK (= BN / 16), QTile and KVTile (Sw128Tile); Ops is
// WgOps<T>::type.

// The wgmma of an N-wide accumulator (S: N = BLOCK_N; O: N = head dim).
template <int N, class Ops>
__device__ __forceinline__ void mma_ss(float (&d)[N / 2], u64 da, u64 db, int scale_d) {
  if constexpr (N == 64) Ops::ss64(d, da, db, scale_d);
  else if constexpr (N == 128) Ops::ss128(d, da, db, scale_d);
  else Ops::ss176(d, da, db, scale_d);
}
template <int N, class Ops>
__device__ __forceinline__ void mma_rs(float (&d)[N / 2], const u32 (&a)[4], u64 db, int scale_d) {
  if constexpr (N == 64) Ops::rs64(d, a, db, scale_d);
  else Ops::rs128(d, a, db, scale_d);
}

// S = Q[rows 64 wg .. + 63] · K_tileᵀ (wgmma SS), issued and committed; the caller waits.
template <class Cfg, class Ops>
__device__ __forceinline__ void issue_qk(float (&s)[Cfg::kBlockN / 2], u32 sQ, int wg, u32 tK) {
  warpgroup_fence();
#pragma unroll
  for (int k = 0; k < Cfg::kKT; ++k)
    mma_ss<Cfg::kBlockN, Ops>(s, Cfg::QTile::desc_k_major(sQ, wg * 64, k), Cfg::KVTile::desc_k_major(tK, 0, k), k > 0);
  warpgroup_commit();
}
// O += P · V_tile (wgmma RS: P from registers as k16 A fragments), issued and committed.
template <class Cfg, class Ops>
__device__ __forceinline__ void issue_pv(float (&o)[Cfg::kHeadDim / 2], const u32 (&pa)[Cfg::kPK][4], u32 tV) {
  warpgroup_fence();
#pragma unroll
  for (int k = 0; k < Cfg::kPK; ++k) mma_rs<Cfg::kHeadDim, Ops>(o, pa[k], Cfg::KVTile::desc_mn_major(tV, k), 1);
  warpgroup_commit();
}

}  // namespace sm90
}  // namespace flexattn
