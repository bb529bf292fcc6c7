/**
 * The LSE merge of lse-merge.ts on a GPU: one small NVRTC kernel, one warp
 * per row. The lanes read both LSEs, compute the weights, update the row's
 * Dv fp32 accumulator elements, and lane 0 writes the merged LSE after a
 * `__syncwarp` (every lane has read the old one by then).
 *
 * The source is self-contained and kept here, not in native/kernels: the
 * kernel is JIT-only (never in the fatbin), so the addon needs no rebuild to
 * carry it. Its parameter block is small and packed below; the kernel checks
 * the size it was given (`static_assert` on the struct, `_cfg` reports it and
 * the packer checks against it).
 * Internal: not exported from the package.
 * @module
 */
import { InternalError } from '../errors.js';
import { loadKernel, loadedKernel, type KernelEntry, type KernelSpec } from '../jit.js';
import { ptr } from '../cuda/mod-code.js';
import type { Tensor } from '../tensor.js';

const KERNEL = 'flexattn_lse_merge';
const PARAM_BYTES = 120;
const THREADS = 256;

const SOURCE = String.raw`
struct LseMergeParams {
  unsigned long long acc, accLse, part, partLse;
  long long ob, oh, os, od;
  long long lb, lh, ls;
  int B, H, S, Sc, Dv, rowOffset, partDtype, pad;
};
static_assert(sizeof(LseMergeParams) == ${PARAM_BYTES}, "LseMergeParams layout");

extern "C" __constant__ int ${KERNEL}_cfg[8] = {${THREADS}, 0, 0, 0, 0, 0, ${PARAM_BYTES}, ${PARAM_BYTES}};

__device__ __forceinline__ float lse_merge_load(const void* p, long long i, int dtype) {
  if (dtype == 0) return reinterpret_cast<const float*>(p)[i];
  const unsigned short bits = reinterpret_cast<const unsigned short*>(p)[i];
  if (dtype == 1) return __int_as_float(((unsigned int)bits) << 16);
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(bits));
  return f;
}

extern "C" __global__ void __launch_bounds__(${THREADS}) ${KERNEL}(const LseMergeParams p) {
  const int lane = threadIdx.x & 31;
  const long long rows = (long long)p.B * p.H * p.Sc;
  const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
  float* acc = reinterpret_cast<float*>(p.acc);
  float* accLse = reinterpret_cast<float*>(p.accLse);
  const float* partLse = reinterpret_cast<const float*>(p.partLse);
  for (long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
    const int s = (int)(r % p.Sc);
    const long long bh = r / p.Sc;
    const int h = (int)(bh % p.H), b = (int)(bh / p.H);
    const long long row = bh * p.S + p.rowOffset + s;
    const float la = accLse[row];
    const float lp = partLse[b * p.lb + h * p.lh + s * p.ls];
    // NaN propagates; a side with LSE -inf contributes nothing (its output is not read).
    float merged, wa, wp;
    const bool nan = la != la || lp != lp;
    const bool skipA = la == -__int_as_float(0x7f800000), skipP = lp == -__int_as_float(0x7f800000);
    if (nan) { merged = la + lp; wa = merged; wp = merged; }
    else if (skipP) { merged = la; wa = 1.f; wp = 0.f; }
    else if (skipA) { merged = lp; wa = 0.f; wp = 1.f; }
    else {
      const float m = la > lp ? la : lp;
      merged = m + logf(expf(la - m) + expf(lp - m));
      wa = expf(la - merged);
      wp = expf(lp - merged);
    }
    const long long src = b * p.ob + h * p.oh + s * p.os;
    for (int d = lane; d < p.Dv; d += 32) {
      const float x = skipA && !nan ? 0.f : wa * acc[row * p.Dv + d];
      const float y = skipP && !nan ? 0.f : wp * lse_merge_load((const void*)p.part, src + d * p.od, p.partDtype);
      acc[row * p.Dv + d] = x + y;
    }
    __syncwarp();
    if (lane == 0) accLse[row] = merged;
  }
}
`;

const SPEC: KernelSpec = { kernel: KERNEL, source: SOURCE };
const DTYPE: Record<string, number> = { f32: 0, bf16: 1, f16: 2 };

/** @internal The merge kernel of `device`, loaded (or compiled by NVRTC) once; await before {@link launchLseMerge}. */
export function lseMergeKernel(device: number): Promise<KernelEntry> {
  return loadKernel(device, SPEC);
}

/** @internal The kernel's CUDA source (compile-checked by the tests with nvcc where present). */
export const lseMergeSource = SOURCE;

/** @internal Enqueues the merge of `p` into `acc`/`accLse` (the kernel must be loaded: {@link lseMergeKernel}). */
export function launchLseMerge(acc: Tensor, accLse: Tensor, p: { out: Tensor; lse: Tensor; rowOffset: number }): void {
  const entry = loadedKernel(acc.deviceIndex, KERNEL);
  if (!entry) throw new InternalError('the LSE merge kernel was not loaded before its launch (await lseMergeKernel first)');
  if (entry.cfg.paramBytes !== PARAM_BYTES) throw new InternalError(`LSE merge parameter block: kernel ${entry.cfg.paramBytes} bytes, packer ${PARAM_BYTES}`);
  const code = DTYPE[p.out.dtype];
  if (code === undefined) throw new InternalError(`LSE merge of a ${p.out.dtype} partial`);
  const [B, H, S, Dv] = acc.shape as [number, number, number, number];
  const Sc = p.out.shape[2]!;
  const rows = B * H * Sc;
  if (rows === 0 || Dv === 0) return;
  const buf = new Uint8Array(PARAM_BYTES);
  const dv = new DataView(buf.buffer);
  [ptr(acc), ptr(accLse), ptr(p.out), ptr(p.lse)].forEach((x, i) => dv.setBigUint64(8 * i, x, true));
  [...p.out.strides, ...p.lse.strides].forEach((x, i) => dv.setBigInt64(32 + 8 * i, BigInt(x), true));
  [B, H, S, Sc, Dv, p.rowOffset, code, 0].forEach((x, i) => dv.setInt32(88 + 4 * i, x, true));
  const warpsPerCta = THREADS / 32;
  const ctas = Math.min(65535, Math.ceil(rows / warpsPerCta));
  entry.handle.launch([ctas, 1, 1], [THREADS, 1, 1], 0, buf);
}
