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
  generateCuda, packArgs, scoreMod as makeScoreMod, where, type CapturedTensorLike, type CudaModCode, type GradBufValues, type GradForCode,
  type IrNode, type MaskMod, type ScoreMod,
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

const backwardCodeCache = new WeakMap<object, WeakMap<object, CudaModCode>>();

/**
 * The generated CUDA of a (scoreMod, maskMod) pair for the backward kernels:
 * the forward's mods plus `flex_score_grad`, the score mod's derivative
 * `dScore` (lib/mods/grad.ts; a function of the score mod alone, so cached
 * with it).
 */
export function backwardModCode(score: ScoreMod | undefined, mask: MaskMod | undefined, dScore: IrNode | undefined,
  gradFor?: GradForCode): CudaModCode {
  // With gradFor the code depends on which tensors are asked for: made per call
  // (string building and a hash; the JIT's memory cache still finds the module).
  if (gradFor && gradFor.tensors.length > 0) return generateCuda(score, mask, dScore, gradFor);
  let inner = backwardCodeCache.get(score ?? NO_MOD);
  if (!inner) backwardCodeCache.set(score ?? NO_MOD, (inner = new WeakMap()));
  let code = inner.get(mask ?? NO_MOD);
  if (!code) inner.set(mask ?? NO_MOD, (code = generateCuda(score, mask, dScore)));
  return code;
}

/** Device address of a tensor view's first element. */
export function ptr(t: Tensor): bigint {
  const base = t.devicePtr();
  return t.offset === 0 ? base : base + BigInt(t.offset * itemSize(t.dtype));
}

/** A launch's captured tensors: `tensors` for packing, `temps` (copies made for it) to free after launch. */
export interface Captured { readonly tensors: readonly Tensor[]; readonly temps: readonly Tensor[] }

function capturedTensor(c: CapturedTensorLike, i: number, hold: Hold | undefined): Tensor {
  const t = hold ? hold.get(c) : c;
  if (!(t instanceof Tensor)) throw new InvalidArgumentError(`captured tensor #${i}`, 'a flexattn Tensor', typeof t);
  t.assertAlive(`captured tensor #${i}`);
  return t;
}

/**
 * The mods' captured tensors when every one is already on `device` (no copy
 * needed: the launch can go ahead synchronously), else undefined.
 * A tensor the call holds is read through its handle (the user may have disposed theirs).
 */
export function capturedHere(code: CudaModCode, device: string, hold: Hold | undefined): Captured | undefined {
  const n = code.tensors.length;
  if (n === 0) return NONE;
  const tensors: Tensor[] = [];
  for (let i = 0; i < n; i++) {
    const t = capturedTensor(code.tensors[i] as CapturedTensorLike, i, hold);
    if (t.device !== device) return undefined;
    tensors.push(t);
  }
  return { tensors, temps: [] };
}

const NONE: Captured = Object.freeze({ tensors: Object.freeze([]) as readonly Tensor[], temps: Object.freeze([]) as readonly Tensor[] });

/** Captured tensors on the launch device, copying those that live elsewhere (see {@link capturedHere}). */
export async function capturedOnDevice(code: CudaModCode, device: string, hold: Hold | undefined): Promise<Captured> {
  const tensors: Tensor[] = [];
  const temps: Tensor[] = [];
  for (const [i, c] of code.tensors.entries()) {
    const t = capturedTensor(c as CapturedTensorLike, i, hold);
    if (t.device === device) tensors.push(t);
    else {
      const copy = await t.toDevice(device as `cuda:${number}`);
      tensors.push(copy);
      temps.push(copy);
    }
  }
  return { tensors, temps };
}

/** The `FlexModArgs` bytes: captured tensors' addresses, strides and shapes, the params (and gradFor's buffers). */
export function packMod(code: CudaModCode, tensors: readonly Tensor[], params: Record<string, number>,
  gradBufs?: readonly GradBufValues[]): Uint8Array {
  return packArgs(code.layout, {
    tensorPtrs: tensors.map(ptr),
    tensorStrides: tensors.map((t) => [...t.strides]),
    tensorShapes: tensors.map((t) => [...t.shape]),
    params,
    ...(gradBufs ? { gradBufs } : {}),
  });
}

/** A dense SDPA mask as a score mod: additive masks add, bool masks send masked scores to -inf. */
export function maskAsScoreMod(mask: Tensor): ScoreMod {
  if (mask.dtype === 'bool') {
    return makeScoreMod(({ score, b, h, q, kv }) => where(mask.at(b, h, q, kv), score, -Infinity));
  }
  return makeScoreMod(({ score, b, h, q, kv }) => score.add(mask.at(b, h, q, kv)));
}
