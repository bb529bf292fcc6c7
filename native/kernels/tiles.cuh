// tiles.cuh — a small vocabulary of tile primitives for the mma.sync (sm_80+)
// attention kernels: PTX wrappers (cp.async, ldmatrix, mma.m16n8k16, cvt,
// ex2/tanh), dtype tags, swizzled shared-memory tiles and register tiles.
//
// Self-contained: no toolkit headers (NVRTC compiles this with no include
// path and -default-device). Everything lives in flexattn::tiles so that it
// cannot collide with common.cuh / util.cuh.
//
// Fragment conventions (PTX ISA, mma.m16n8k16, 16-bit A/B, f32 C/D);
// lane = 4*g + t (g = lane/4 in 0..7, t = lane%4 in 0..3):
//   A (16x16, row-major)  a[0]=(g,   2t..2t+1)   a[1]=(g+8, 2t..2t+1)
//                         a[2]=(g, 2t+8..2t+9)   a[3]=(g+8, 2t+8..2t+9)
//   B (16x8, "col")       b[0]=(k=2t..2t+1, n=g) b[1]=(k=2t+8..2t+9, n=g)
//   C (16x8, f32)         c[0..1]=(g, 2t..2t+1)  c[2..3]=(g+8, 2t..2t+1)
#pragma once

#ifndef FLEXATTN_TILES_CUH
#define FLEXATTN_TILES_CUH

namespace flexattn {
namespace tiles {

typedef unsigned int u32;
typedef unsigned short u16;
typedef long long i64;
typedef unsigned long long u64;

// ---------------------------------------------------------------------------
// dtype tags: 16-bit storage (raw bits), f32 compute.
struct bf16 {
  static constexpr bool kIsBf16 = true;
  // {lo, hi} -> one 32-bit register holding two bf16 (lo in the low half).
  static __device__ __forceinline__ u32 pack2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

struct f16 {
  static constexpr bool kIsBf16 = false;
  static __device__ __forceinline__ u32 pack2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

// ---------------------------------------------------------------------------
// scalar math (approximate SFU versions; inputs already in the log2 domain)
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float lg2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float tanh_approx(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
// read-only (non-coherent) global load, e.g. block-mask indices
__device__ __forceinline__ int ldg_i32(const int* p) {
  int v;
  asm("ld.global.nc.b32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}

// quad (4 lanes holding one accumulator row) reductions
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
  return x;
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  x += __shfl_xor_sync(0xffffffffu, x, 2);
  return x;
}

// ---------------------------------------------------------------------------
// shared memory addressing, cp.async, ldmatrix
__device__ __forceinline__ u32 smem_u32(const void* p) {
  u32 r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
}

// 16-byte global->shared copy; when !pred nothing is read and the 16 bytes are
// zero-filled (src-size 0). `src` must still be a valid-looking address.
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, bool pred) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
               :: "r"(dst), "l"(src), "r"(pred ? 16 : 0) : "memory");
}
// Unpredicated form, for rows known to be in bounds.
__device__ __forceinline__ void cp_async16(u32 dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory"); }

__device__ __forceinline__ void ldsm_x4(u32 (&r)[4], u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(u32 (&r)[4], u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

__device__ __forceinline__ void st_global_u32(void* p, u32 v) {
  asm volatile("st.global.b32 [%0], %1;" :: "l"(p), "r"(v) : "memory");
}

// ---------------------------------------------------------------------------
// Shared tile: ROWS x D 16-bit elements, row-major, in 16-byte chunks.
// Rows of a power-of-two >= 8 chunks (D = 64, 128, 256) are XOR-swizzled (the low
// three chunk bits ^= row % 8: the 8 rows an ldmatrix phase reads land in 8
// distinct 16-byte bank groups); other widths (D = 32, 96) are padded by one
// chunk per row (odd chunk stride: also conflict-free).
template <int ROWS, int D>
struct SmemTile {
  static constexpr int kRows = ROWS;
  static constexpr int kChunks = D / 8;                  // 16-byte chunks per row
  static constexpr bool kSwizzle = (kChunks % 8) == 0 && (kChunks & (kChunks - 1)) == 0;
  static constexpr int kRowBytes = kSwizzle ? D * 2 : D * 2 + 16;
  static constexpr int kBytes = ROWS * kRowBytes;
  static_assert(D % 16 == 0, "head dim must be a multiple of 16");

  static __device__ __forceinline__ u32 offset(int row, int chunk) {
    const int c = kSwizzle ? (chunk ^ (row & 7)) : chunk;
    return (u32)(row * kRowBytes + c * 16);
  }

  // Cooperative async load of rows [0, ROWS) from `g` (row stride `stride`
  // elements); rows >= valid_rows are zero-filled and never read.
  template <int NTHREADS>
  static __device__ __forceinline__ void load_async(u32 base, const u16* g, i64 stride,
                                                    int valid_rows, int tid) {
    constexpr int kStep = NTHREADS / kChunks;            // rows per pass (when whole)
    if constexpr (NTHREADS % kChunks == 0 && ROWS % kStep == 0 && (!kSwizzle || kStep % 8 == 0)) {
      // each thread owns one chunk column; the swizzle phase repeats every
      // pass, so per-pass addresses are base + constant
      const int ch = tid % kChunks, r0 = tid / kChunks;
      const u16* src = g + (i64)r0 * stride + ch * 8;
      const u32 dst = base + offset(r0, ch);
#pragma unroll
      for (int i = 0; i < ROWS / kStep; ++i) {
        const bool ok = r0 + i * kStep < valid_rows;
        cp_async16(dst + i * kStep * kRowBytes, ok ? src : g, ok);
        src += kStep * stride;
      }
    } else {
      constexpr int kTotal = ROWS * kChunks;
      static_assert(kTotal % NTHREADS == 0, "tile chunks must divide evenly among threads");
#pragma unroll
      for (int i = 0; i < kTotal / NTHREADS; ++i) {
        const int c = tid + i * NTHREADS;
        const int row = c / kChunks, ch = c % kChunks;
        const bool ok = row < valid_rows;
        cp_async16(base + offset(row, ch), g + (ok ? (i64)row * stride + ch * 8 : 0), ok);
      }
    }
  }

  // ldmatrix addressing. A lane's address for fragment (row block r0, chunk
  // pair cp) is lane_base ^ (32*cp) + r0*kRowBytes for swizzled rows (chunk
  // pair bits and the row%8 swizzle both live in the chunk field; r0 % 8 == 0
  // keeps the swizzle phase), + instead of ^ for padded rows. So each call
  // costs one LOP/IADD on a per-iteration base instead of a hoisted register
  // per (row block, chunk pair).
  static __device__ __forceinline__ u32 at(u32 lane_base, int r0, int cp) {
    return kSwizzle ? ((lane_base ^ (u32)(cp * 32)) + (u32)(r0 * kRowBytes))
                    : (lane_base + (u32)(cp * 32 + r0 * kRowBytes));
  }
  static __device__ __forceinline__ u32 lane_base(int row, int chunk) { return offset(row, chunk); }
  // A fragments (16x16, rows r0.., k16 step kt): lane row = lane%16, chunk = lane/16
  static __device__ __forceinline__ u32 lane_base_A(int lane) { return offset(lane & 15, lane >> 4); }
  // B fragments from a [n][k] tile (K): two n8 tiles x k16
  static __device__ __forceinline__ u32 lane_base_nk(int lane) {
    return offset((lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1);
  }
  // B fragments from a [k][n] tile (V, transposing ldmatrix): k16 x two n8 tiles
  static __device__ __forceinline__ u32 lane_base_kn(int lane) {
    return offset((lane & 7) + (((lane >> 3) & 1) << 3), lane >> 4);
  }

  // A fragment (16x16) of rows row0..row0+15, columns 16*kt..16*kt+15.
  static __device__ __forceinline__ void ldA(u32 (&a)[4], u32 tile, u32 lb, int row0, int kt) {
    ldsm_x4(a, tile + at(lb, row0, kt));
  }
  // B fragments of two n8 tiles (rows n0..n0+15 as n) for k16 step kt, tile
  // stored [n][k] (e.g. K): r[0..1] -> n-tile 0, r[2..3] -> n-tile 1.
  static __device__ __forceinline__ void ldB_nk(u32 (&r)[4], u32 tile, u32 lb, int n0, int kt) {
    ldsm_x4(r, tile + at(lb, n0, kt));
  }
  // B fragments of two n8 tiles (columns 16*np..16*np+15 as n) for the k16
  // step of rows k0..k0+15, tile stored [k][n] (e.g. V): transposing ldmatrix.
  static __device__ __forceinline__ void ldB_kn(u32 (&r)[4], u32 tile, u32 lb, int k0, int np) {
    ldsm_x4_trans(r, tile + at(lb, k0, np));
  }
};

// Hide a value's provenance from the optimiser (stops loop-invariant hoisting
// of everything derived from it, which would otherwise pin registers).
__device__ __forceinline__ u32 opaque(u32 x) {
  asm volatile("" : "+r"(x));
  return x;
}

// ---------------------------------------------------------------------------
// Register tiles. An accumulator tile of MT x NT (16x8) mma tiles per warp.
template <int MT, int NT>
struct RtAcc {
  float c[MT][NT][4];
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) c[m][n][i] = 0.f;
  }
};

// A-operand tile: MT x KT (16x16) fragments.
template <int MT, int KT>
struct RtA {
  u32 a[MT][KT][4];
};

// C fragments (f32, 16 x 16*KT per m-tile) -> A fragments of dtype T: the P
// matrix of attention goes straight from the S accumulator into the P·V mma.
template <class T, int MT, int NT>
__device__ __forceinline__ void acc_to_A(RtA<MT, NT / 2>& dst, const RtAcc<MT, NT>& src) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int k = 0; k < NT / 2; ++k) {
      dst.a[m][k][0] = T::pack2(src.c[m][2 * k][0], src.c[m][2 * k][1]);
      dst.a[m][k][1] = T::pack2(src.c[m][2 * k][2], src.c[m][2 * k][3]);
      dst.a[m][k][2] = T::pack2(src.c[m][2 * k + 1][0], src.c[m][2 * k + 1][1]);
      dst.a[m][k][3] = T::pack2(src.c[m][2 * k + 1][2], src.c[m][2 * k + 1][3]);
    }
}

}  // namespace tiles
}  // namespace flexattn

#endif  // FLEXATTN_TILES_CUH
