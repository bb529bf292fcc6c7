/**
 * The mods' side of a flex launch: their generated CUDA (made once per
 * (scoreMod, maskMod) pair), their captured tensors on the launch device, and
 * the packed `FlexModArgs` bytes. Also the dense SDPA mask as a score mod.
 * Internal: not exported from the package.
 * @module
 */
import { InvalidArgumentError } from '../errors.js';
import { itemSize } from '../dtype.js';
import {
  generateCuda, packArgs, scoreMod as makeScoreMod, where, type CapturedTensorLike, type CudaModCode, type MaskMod, type ScoreMod,
} from '../mods/index.js';
import type { Hold } from '../ownership.js';
import { Tensor } from '../tensor.js';

// Traced mods are immutable, so their generated CUDA (string building + a
// SHA-256 of the source) is made once per (scoreMod, maskMod) pair, not per call.
const NO_MOD = {};
const codeCache = new WeakMap<object, WeakMap<object, CudaModCode>>();

/** The generated CUDA of a (scoreMod, maskMod) pair. */
export function modCode(score: ScoreMod | undefined, mask: MaskMod | undefined): CudaModCode {
  let inner = codeCache.get(score ?? NO_MOD);
  if (!inner) codeCache.set(score ?? NO_MOD, (inner = new WeakMap()));
  let code = inner.get(mask ?? NO_MOD);
  if (!code) inner.set(mask ?? NO_MOD, (code = generateCuda(score, mask)));
  return code;
}

/** Device address of a tensor view's first element. */
export function ptr(t: Tensor): bigint {
  return t.buffer().ptr + BigInt(t.offset * itemSize(t.dtype));
}

/**
 * Captured tensors on the launch device: `tensors` for packing, `temps` to free after launch.
 * A tensor the call holds is read through its handle (the user may have disposed theirs).
 */
export async function capturedOnDevice(code: CudaModCode, device: string, hold: Hold | undefined): Promise<{ tensors: Tensor[]; temps: Tensor[] }> {
  const tensors: Tensor[] = [];
  const temps: Tensor[] = [];
  for (const [i, c] of code.tensors.entries()) {
    const t = hold ? hold.get(c as CapturedTensorLike) : c as CapturedTensorLike;
    if (!(t instanceof Tensor)) throw new InvalidArgumentError(`captured tensor #${i}`, 'a flexattn Tensor', typeof t);
    t.assertAlive(`captured tensor #${i}`);
    if (t.device === device) tensors.push(t);
    else {
      const copy = await t.toDevice(device as `cuda:${number}`);
      tensors.push(copy);
      temps.push(copy);
    }
  }
  return { tensors, temps };
}

/** The `FlexModArgs` bytes: captured tensors' addresses, strides and shapes, and the params. */
export function packMod(code: CudaModCode, tensors: Tensor[], params: Record<string, number>): Uint8Array {
  return packArgs(code.layout, {
    tensorPtrs: tensors.map(ptr),
    tensorStrides: tensors.map((t) => [...t.strides]),
    tensorShapes: tensors.map((t) => [...t.shape]),
    params,
  });
}

/** A dense SDPA mask as a score mod: additive masks add, bool masks send masked scores to -inf. */
export function maskAsScoreMod(mask: Tensor): ScoreMod {
  if (mask.dtype === 'bool') {
    return makeScoreMod(({ score, b, h, q, kv }) => where(mask.at(b, h, q, kv), score, -Infinity));
  }
  return makeScoreMod(({ score, b, h, q, kv }) => score.add(mask.at(b, h, q, kv)));
}
