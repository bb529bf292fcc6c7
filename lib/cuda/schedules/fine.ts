/**
 * The 64×64 schedule of a block mask: the same masked positions as the mask's
 * own lists at the Hopper d128 kernels' tile, so a 64-row query block skips
 * the 64-wide kv tiles its own rows never keep.
 *
 * Derived from the mask, never stored on it: the children of an empty block
 * are empty, those of a full block full, and only the children of partial
 * blocks are classified, from the mask mod (analytically for built-ins, else
 * by the blockmask classifiers on the GPU). A block is then full iff its
 * children are and empty iff they all are, so the schedule lists exactly the
 * mask's positions. Made on the first launch that walks it, once per (mask,
 * mask params), since a mod's classes depend on its params.
 * Internal: not exported from the package.
 * @module
 */
import { classifyAnalytic } from '../../blockmask/analytic.js';
import { classifyModTiles } from '../../blockmask/classify.js';
import { expandClasses } from '../../blockmask/cpu.js';
import { jitLauncher } from '../../blockmask/gpu.js';
import { PARTIAL } from '../../blockmask/layout.js';
import { BlockMask, type BlockMaskMethod } from '../../blockmask/mask.js';
import { analyticPred } from '../../blockmask/mods-adapter.js';
import { InternalError } from '../../errors.js';
import type { MaskMod } from '../../mods/ir.js';
import { SCHEDULE_BLOCK } from '../tiles.js';
import { paramsKey } from './params-key.js';
import { adoptMask, derived, forgetDerived, peekDerived } from './store.js';

/** A schedule being built, and the mask once it is. */
interface Pending { readonly promise: Promise<BlockMask>; mask?: BlockMask }

function fineKey(bm: BlockMask, params: Readonly<Record<string, number>>): string {
  return `fine|${paramsKey(bm.maskMod, params)}`;
}

/**
 * The 64×64 schedule of `bm` (a mask with a mask mod whose classes are its
 * mod's at `params`, on CUDA device `deviceIndex`), built once per params.
 * `readMod` gives the mod as the calling op reads it (its handles on the
 * captured tensors). A failure rejects this call and is retried by the next.
 */
export function fineSchedule(bm: BlockMask, params: Readonly<Record<string, number>>, deviceIndex: number,
  readMod: () => MaskMod): Promise<BlockMask> {
  const key = fineKey(bm, params);
  const p = derived<Pending>(bm, key, () => {
    const pending: Pending = { promise: buildFineSchedule(bm, params, deviceIndex, readMod) };
    pending.promise.then((m) => { pending.mask = m; }, () => forgetDerived(bm, key, pending));
    return pending;
  });
  return p.promise;
}

/** The 64×64 schedule of `bm` for `params` if a launch has built it (synchronous: a launch claims its tensors at once). */
export function builtFineSchedule(bm: BlockMask, params: Readonly<Record<string, number>>): BlockMask | undefined {
  return peekDerived<Pending>(bm, fineKey(bm, params))?.mask;
}

async function buildFineSchedule(bm: BlockMask, params: Readonly<Record<string, number>>, deviceIndex: number,
  readMod: () => MaskMod): Promise<BlockMask> {
  const mod = bm.maskMod;
  if (!mod) throw new InternalError('a 64x64 schedule needs a mask mod');
  const F = SCHEDULE_BLOCK;
  const { qLen, kvLen } = bm;
  const fQB = Math.ceil(qLen / F), fKVB = Math.ceil(kvLen / F);
  const pred = analyticPred(mod);
  let grid: Uint8Array;
  let method: BlockMaskMethod;
  if (pred) {
    // Exact at any block size: one plane, shared by every (b, h).
    grid = classifyAnalytic(pred, qLen, kvLen, F, F);
    method = 'analytic';
  } else {
    const gpu = jitLauncher() !== null && deviceIndex >= 0;
    grid = await refinePartialBlocks(bm, readMod(), params, deviceIndex, gpu);
    method = gpu ? 'gpu' : 'cpu';
  }
  const fine = BlockMask.fromClasses(grid, {
    dims: { B: bm.B, H: bm.H, QB: fQB, KVB: fKVB }, qLen, kvLen, blockSize: [F, F], maskMod: mod,
    device: bm.device, method, ...(bm.params ? { params: bm.params } : {}),
  });
  adoptMask(bm, fine);
  return fine;
}

/**
 * Classes at 64×64 of a mask whose blocks are multiples of 64: children of
 * partial blocks from the mod, the others from their parent. One shared plane
 * when the mod reads neither b nor h (the mask's planes are then its one
 * plane repeated), else `B·H` planes.
 */
async function refinePartialBlocks(bm: BlockMask, mod: MaskMod, params: Readonly<Record<string, number>>,
  deviceIndex: number, gpu: boolean): Promise<Uint8Array> {
  const F = SCHEDULE_BLOCK;
  const { B, H, qLen, kvLen } = bm;
  const QB = bm.numQBlocks, KVB = bm.numKvBlocks;
  const rq = bm.blockSize[0] / F, rk = bm.blockSize[1] / F;
  const fQB = Math.ceil(qLen / F), fKVB = Math.ceil(kvLen / F);
  const cplane = QB * KVB, fplane = fQB * fKVB;
  const coarse = bm.classes();
  const parentOf = (t: number): number => Math.floor(Math.floor(t / fKVB) / rq) * KVB + Math.floor((t % fKVB) / rk);
  // The 64x64 tiles under a partial block of any plane: the only ones the mod decides.
  const visit = new Uint8Array(fplane);
  for (let g = 0; g < B * H; g++) {
    for (let t = 0; t < fplane; t++) if (coarse[g * cplane + parentOf(t)] === PARTIAL) visit[t] = 1;
  }
  const tiles: number[] = [];
  for (let t = 0; t < fplane; t++) if (visit[t]) tiles.push(t);
  const list = Int32Array.from(tiles);
  const { cls, Bn, Hn } = await classifyModTiles({
    mod, params, B, H, qLen, kvLen, bq: F, bkv: F, gpu, deviceIndex, prefilter: true, tiles: list,
  });
  const slot = new Int32Array(fplane).fill(-1);
  list.forEach((t, j) => { slot[t] = j; });
  const L = list.length;
  // The mod's plane (b, h) -> a mask plane it is exact for: b and h where the mod reads them, else 0.
  const out = new Uint8Array(Bn * Hn * fplane);
  for (let mb = 0; mb < Bn; mb++) {
    for (let mh = 0; mh < Hn; mh++) {
      const mg = mb * Hn + mh, g = mb * H + mh;
      for (let t = 0; t < fplane; t++) {
        const c = coarse[g * cplane + parentOf(t)]!;
        out[mg * fplane + t] = c === PARTIAL ? cls[mg * L + slot[t]!]! : c;
      }
    }
  }
  return Bn * Hn === 1 ? out : expandClasses(out, Bn, Hn, B, H, fplane);
}
