// sm90_ws_pipeline.cuh — the synchronisation primitives of the warp-specialised
// Hopper kernels (sm_90a; PTX ISA 8.x): mbarrier init / expect-tx / arrive /
// wait, 3-D tiled TMA loads, named barriers, setmaxnreg, and PipeState (ring
// slot + phase parity). Shared by the forward (sm90_ws_kernel.cuh) and meant
// for the decode and backward kernels that will follow the same pattern.
//
// -DWS_DEBUG_TIMEOUT: every mbarrier wait polls with test_wait and gives up after
// 2^26 polls, recording block, thread and barrier in ws_debug_timeout, so a
// deadlock ends the kernel within seconds and is reported by the runner
// (bench/kernel-harness/run_sm90_ws.py).
//
// Self-contained apart from tiles.cuh (NVRTC compiles it with no toolkit
// headers): a tensor map is passed as an opaque 128-byte, 128-aligned
// __grid_constant__ parameter (TmaDesc) and used only through its address.
#pragma once

#include "tiles.cuh"

namespace flexattn {
namespace ws90 {

using namespace ::flexattn::tiles;

// The device-side view of a CUtensorMap (cuda.h: 128-byte aligned, 128 bytes,
// opaque). The host encodes it with cuTensorMapEncodeTiled.
struct alignas(128) TmaDesc {
  unsigned long long opaque[16];
};

__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
// Make barrier inits visible to the async proxy (TMA completes on them).
__device__ __forceinline__ void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
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
#ifdef WS_DEBUG_TIMEOUT
// Debug record of the first wait that timed out: {count, block, thread, tag * 2 + parity}. The runner
// zeroes it before and reads it after each launch of the debug build (run_sm90_ws.py).
extern "C" __device__ int ws_debug_timeout[4];
__device__ int ws_debug_timeout[4];
#endif
// Wait until the phase of parity `parity` of `bar` has completed. `tag` names the barrier in the debug
// build's record. Debug build: after 2^26 polls (or once any thread of the grid has timed out) the wait
// records itself and gives up, so the kernel ends within seconds with a wrong result instead of hanging
// (no printf / trap: a call would serialise the wgmma pipeline, ptxas C7510, and a trap loses the record).
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity, int tag) {
#ifdef WS_DEBUG_TIMEOUT
  for (u32 polls = 1; !mbar_try_wait(bar, parity); ++polls) {
    if (polls == (1u << 26) || ((polls & 1023u) == 0 && *(volatile int*)&ws_debug_timeout[0] != 0)) {
      if (atomicAdd(&ws_debug_timeout[0], 1) == 0) {
        ws_debug_timeout[1] = (int)blockIdx.x;
        ws_debug_timeout[2] = (int)threadIdx.x;
        ws_debug_timeout[3] = tag * 2 + (int)parity;
      }
      return;
    }
  }
#else
  (void)tag;
  while (!mbar_try_wait(bar, parity)) {
  }
#endif
}
// 3-D tiled TMA load of the box at {c0, c1, c2} into shared memory, completing its bytes on `bar`.
__device__ __forceinline__ void tma_load_3d(u32 dst, const void* map, u32 bar, int c0, int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];"
      ::"r"(dst), "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(bar) : "memory");
}
__device__ __forceinline__ void tma_prefetch_map(const void* map) {
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

// Pin fragment registers (e.g. the RS wgmma's A operand) until the wgmma that
// reads them has been waited for: no access may move across the fence.
template <int N>
__device__ __forceinline__ void fence_u32(u32 (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
}

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

}  // namespace ws90
}  // namespace flexattn
