/**
 * Block classification of a mask mod that has no analytic form: the
 * position-only part of the mask pre-decides what it can, the rest is
 * evaluated by the generated GPU kernel or on the host. Shared by
 * createBlockMask (every tile) and by the launch layer's finer schedules
 * (only the tiles it asks for).
 * Internal: not exported from the package.
 * @module
 */
import type { MaskMod } from '../mods/ir.js';
import { classifyBruteForce } from './cpu.js';
import { preclassify } from './envelope.js';
import { classifyGpu } from './gpu.js';
import { argUse, hostMaskFn } from './mods-adapter.js';

/** One classification of a mask mod's tiles. */
export interface ClassifyRequest {
  /** The mod as the evaluators read it (e.g. through a call's handles on its captured tensors). */
  mod: MaskMod;
  params: Readonly<Record<string, number>> | undefined;
  /** Batch / head extents of the mask; the mod's own planes are 1 where it does not read b / h. */
  B: number;
  H: number;
  qLen: number;
  kvLen: number;
  bq: number;
  bkv: number;
  /** Evaluate on GPU `deviceIndex` (else on the host). */
  gpu: boolean;
  deviceIndex: number;
  /** Pre-decide tiles from the mask's position comparisons (see {@link preclassify}). */
  prefilter: boolean;
  /** Plane tiles `qb * KVB + kvb` to classify (default: all). */
  tiles?: Int32Array | null;
  /** Called after each step that awaited (abort checks). */
  checkpoint?: () => void;
}

/**
 * Classes of the requested tiles for the mod's own `Bn × Hn` planes:
 * `[Bn, Hn, L]` for `L` requested tiles (`[Bn, Hn, QB, KVB]` when all are).
 */
export async function classifyModTiles(r: ClassifyRequest): Promise<{ cls: Uint8Array; Bn: number; Hn: number }> {
  const use = argUse(r.mod);
  const Bn = use.b ? r.B : 1, Hn = use.h ? r.H : 1;
  const { qLen, kvLen, bq, bkv } = r;
  const plane = Math.ceil(qLen / bq) * Math.ceil(kvLen / bkv);
  const want = r.tiles ?? null;
  const L = want ? want.length : plane;
  // Position-only structure of the mask (e.g. the causal part of a document mask)
  // decides many tiles without evaluating it; only the rest is visited.
  const pre = r.prefilter && qLen < 2 ** 30 && kvLen < 2 ** 30 ? preclassify(r.mod, qLen, kvLen, bq, bkv) : null;
  let visit: Int32Array | null = want;
  if (pre) visit = want ? want.filter((t) => pre.grid[t] === 255) : pre.undecided;
  let got: Uint8Array;
  if (r.gpu) {
    got = await classifyGpu(r.mod, r.params, r.deviceIndex, Bn, Hn, qLen, kvLen, bq, bkv, visit);
  } else {
    const fn = await hostMaskFn(r.mod, r.params);
    r.checkpoint?.();
    got = classifyBruteForce(fn, Bn, Hn, qLen, kvLen, bq, bkv, visit);
  }
  r.checkpoint?.();
  if (!pre) return { cls: got, Bn, Hn };
  // Merge the evaluated tiles into the pre-decided ones, plane by plane.
  const V = visit!.length;
  const cls = new Uint8Array(Bn * Hn * L);
  for (let g = 0; g < Bn * Hn; g++) {
    const o = g * L;
    let v = 0;
    for (let j = 0; j < L; j++) {
      const t = want ? want[j]! : j;
      cls[o + j] = pre.grid[t] === 255 ? got[g * V + v++]! : pre.grid[t]!;
    }
  }
  return { cls, Bn, Hn };
}
