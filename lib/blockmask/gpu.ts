/**
 * GPU block classification: a generated kernel (the mods' CUDA fragment plus
 * a classify kernel) where one warp owns one (b, h, q-block, kv-block) tile,
 * evaluates mask_mod over its elements 128 at a time and stops as soon as a
 * warp vote has seen both a true and a false. Output: one byte per block
 * (0 empty, 1 partial, 2 full); nothing of size Q×KV is ever allocated.
 * Internal: not exported from the package.
 * @module
 */
import { itemSize, type DType } from '../dtype.js';
import { FlexAttnError, InternalError } from '../errors.js';
import { generateCuda, packArgs, type CudaModCode } from '../mods/codegen-cuda.js';
import type { CapturedTensorLike, MaskMod } from '../mods/ir.js';
import { native, type NativeDeviceBuffer } from '../native.js';
import { Tensor } from '../tensor.js';
import { packBlockMaskClassifyParams } from '../cuda/generated/blockmask-classify-params.js';

/** The JIT launcher the addon provides (see the lead's native/jit). */
type JitLaunch = (device: number, source: string, kernelName: string,
  grid: [number, number, number], block: [number, number, number], sharedBytes: number, params: Uint8Array) => void;

/** The addon's JIT launcher, or null when this build has none. */
export function jitLauncher(): JitLaunch | null {
  try {
    const n = native() as unknown as { jitLaunch?: JitLaunch };
    return typeof n.jitLaunch === 'function' ? n.jitLaunch.bind(n) : null;
  } catch {
    return null;
  }
}

export const KERNEL_NAME = 'flexattn_blockmask_classify';
const WARPS_PER_CTA = 8;

const codeCache = new WeakMap<MaskMod, { code: CudaModCode; source: string; words: number }>();

/** @internal The complete kernel source for `mod` (exported for tests and inspection). */
export function kernelSource(mod: MaskMod): { code: CudaModCode; source: string; words: number } {
  const hit = codeCache.get(mod);
  if (hit) return hit;
  const code = generateCuda(undefined, mod);
  const words = Math.max(1, Math.ceil(code.layout.size / 8));
  const source = `${code.source}
// ---- flexattn block-mask classification ----
#include "generated/blockmask_classify_params.cuh"
static __device__ __forceinline__ bool flexattn_bm_any(bool p) {
  unsigned r;
  asm volatile("{\\n .reg .pred fbmA, fbmV;\\n setp.ne.u32 fbmA, %1, 0;\\n vote.sync.any.pred fbmV, fbmA, 0xffffffff;\\n selp.u32 %0, 1, 0, fbmV;\\n}"
               : "=r"(r) : "r"((unsigned)p));
  return r != 0u;
}
extern "C" __global__ void __launch_bounds__(${WARPS_PER_CTA * 32}) ${KERNEL_NAME}(const ::flexattn::FlexBlockMaskParams<${words}> p) {
  const FlexModArgs& args = *reinterpret_cast<const FlexModArgs*>(&p.mod[0]);
  const int lane = (int)(threadIdx.x & 31u);
  const long long tileLL = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  if (tileLL >= (long long)p.numTiles) return;  // uniform per warp
  const int li = (int)(tileLL % p.L);
  const int g = (int)(tileLL / p.L);
  const int tile = p.tiles ? reinterpret_cast<const int*>(p.tiles)[li] : li;
  const int kvb = tile % p.KVB;
  const int qb = tile / p.KVB;
  const int h = g % p.Hn;
  const int b = g / p.Hn + p.b0;
  int q0, qe, k0, ke;
  bool anyF;
  if (p.starts) {
    // A segmented tile is classified on its own rows and columns only.
    const int* st = reinterpret_cast<const int*>(p.starts);
    q0 = st[qb]; qe = st[qb + 1]; k0 = st[kvb]; ke = st[kvb + 1];
    anyF = false;
  } else {
    q0 = qb * p.bq; k0 = kvb * p.bkv;
    qe = (q0 + p.bq < p.qLen) ? q0 + p.bq : p.qLen;
    ke = (k0 + p.bkv < p.kvLen) ? k0 + p.bkv : p.kvLen;
    // PyTorch pads the mask with False past the end: an overhanging tile is never full.
    anyF = (q0 + p.bq > p.qLen) || (k0 + p.bkv > p.kvLen);
  }
  bool anyT = false;
  const int w = ke - k0;
  const int n = (qe - q0) * w;
  for (int base = 0; base < n; base += 128) {
    bool st = false, sf = false;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int i = base + u * 32 + lane;
      if (i < n) {
        const int r = i / w;
        const bool m = flex_mask_mod(b, h, q0 + r, k0 + (i - r * w), args);
        st = st || m;
        sf = sf || !m;
      }
    }
    const bool vt = flexattn_bm_any(st);
    const bool vf = flexattn_bm_any(sf);
    anyT = anyT || vt;
    anyF = anyF || vf;
    if (anyT && anyF) break;
  }
  if (lane == 0) {
    reinterpret_cast<unsigned char*>(p.out)[tileLL] = (unsigned char)(anyT ? (anyF ? 1 : 2) : 0);
  }
}
`;
  const entry = { code, source, words };
  codeCache.set(mod, entry);
  return entry;
}

function isTensor(t: CapturedTensorLike): t is CapturedTensorLike & Tensor {
  return t instanceof Tensor;
}

/** A segmented grid for {@link classifyGpu}: one batch row's tile starts (see lib/cuda/schedules/segments.ts). */
export interface SegmentedGrid {
  /** `nM + 1` ascending tile starts, the last equal to the sequence length; rows and columns share them. */
  starts: Int32Array;
  /** Batch index the plane is evaluated at. */
  b: number;
}

/**
 * Classifies the tiles of `Bn × Hn` (batch, head) pairs on GPU `deviceIndex`
 * (Bn/Hn are 1 when the mask does not read b/h) and returns the class bytes
 * on the host: [Bn,Hn,QB,KVB], or [Bn,Hn,L] for the L plane tiles listed in
 * `tiles` (`qb * KVB + kvb`) when given. With `grid` the tiles are those of a
 * segmented grid (QB = KVB = its tile count, Bn = 1, batch `grid.b`).
 */
export async function classifyGpu(
  mod: MaskMod, params: Readonly<Record<string, number>> | undefined, deviceIndex: number,
  Bn: number, Hn: number, qLen: number, kvLen: number, bq: number, bkv: number,
  tiles: Int32Array | null = null, grid: SegmentedGrid | null = null,
): Promise<Uint8Array> {
  const launch = jitLauncher();
  if (!launch) throw new FlexAttnError('createBlockMask: this build of the native addon has no JIT launcher (jitLaunch); use device \'cpu\'');
  const { code, source, words } = kernelSource(mod);
  if (grid && Bn !== 1) throw new InternalError('a segmented grid is classified one batch row at a time');
  const QB = grid ? grid.starts.length - 1 : Math.ceil(qLen / bq), KVB = grid ? QB : Math.ceil(kvLen / bkv);
  const L = tiles ? tiles.length : QB * KVB;
  const numTiles = Bn * Hn * L;
  if (numTiles === 0) return new Uint8Array(0);
  if (numTiles > 2 ** 31 - 1) throw new FlexAttnError(`createBlockMask: ${numTiles} blocks is too many for one launch`);

  // Captured tensors must live on this GPU; copy the others for the duration of the launch.
  const temps: Tensor[] = [];
  const ptrs: bigint[] = [], strides: number[][] = [], shapes: number[][] = [];
  let out: NativeDeviceBuffer | undefined;
  try {
    for (const t of code.tensors) {
      let dev: Tensor;
      if (isTensor(t) && t.isCuda && t.deviceIndex === deviceIndex) {
        dev = t;
      } else {
        const host = await t.toHost();
        dev = Tensor.fromHost(host, t.shape, t.dtype as DType, { device: `cuda:${deviceIndex}` });
        temps.push(dev);
      }
      ptrs.push(dev.buffer('maskMod captured tensor').ptr + BigInt(dev.offset * itemSize(dev.dtype)));
      strides.push([...dev.strides]);
      shapes.push([...dev.shape]);
    }
    const modBytes = packArgs(code.layout, { tensorPtrs: ptrs, tensorStrides: strides, tensorShapes: shapes, params });
    out = native().alloc(deviceIndex, Math.max(numTiles, 1));
    let tilesPtr = 0n;
    if (tiles) {
      const tt = Tensor.fromHost(tiles, [tiles.length], 'i32', { device: `cuda:${deviceIndex}` });
      temps.push(tt);
      tilesPtr = tt.buffer('tiles').ptr;
    }
    let startsPtr = 0n;
    if (grid) {
      const st = Tensor.fromHost(grid.starts, [grid.starts.length], 'i32', { device: `cuda:${deviceIndex}` });
      temps.push(st);
      startsPtr = st.buffer('starts').ptr;
    }
    const pbuf = packBlockMaskClassifyParams({
      out: out.ptr, tiles: tilesPtr, Bn, Hn, QB, KVB, qLen, kvLen, bq, bkv, numTiles, L,
      starts: startsPtr, b0: grid ? grid.b : 0, mod: modBytes, modWords: words,
    });
    const threads = WARPS_PER_CTA * 32;
    const ctas = Math.ceil(numTiles / WARPS_PER_CTA);
    launch(deviceIndex, source, KERNEL_NAME, [ctas, 1, 1], [threads, 1, 1], 0, pbuf);
    const ab = await native().copyDtoH(out, 0, numTiles);
    return new Uint8Array(ab);
  } finally {
    out?.dispose();
    for (const t of temps) t.dispose();
  }
}
