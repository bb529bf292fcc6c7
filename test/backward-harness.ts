/**
 * Runs one flex/SDPA backward case on the CPU backend and the f64 oracles of
 * test/backward-reference.ts on the same (random) data.
 */
import {
  Tensor, createBlockMask, flexAttention, flexAttentionBackward, type DType, type FlexAttentionGradients, type MaskMod, type ScoreMod,
} from '../lib/index.js';
import { bindHost } from '../lib/mods/index.js';
import { f64Mod, loss, referenceBackward, type F64Tensor } from './backward-reference.js';
import { randnArray, type RefInput } from './reference.js';

export interface FlexCase {
  B?: number; Hq?: number; Hkv?: number; Sq: number; Skv?: number; D?: number; Dv?: number;
  seed?: number; dtype?: DType; scale?: number;
  scoreMod?: ScoreMod;
  maskMod?: MaskMod;
  /** Block size of the block mask built from maskMod (default 16, so small cases have several blocks). */
  blockSize?: number;
  gradFor?: Tensor[];
  params?: Record<string, number>;
}

export interface FlexRun {
  grads: FlexAttentionGradients;
  /** Host copies of the gradients (f32). */
  dq: Float32Array; dk: Float32Array; dv: Float32Array; dCaptured: Float32Array[];
  ref: { dq: Float64Array; dk: Float64Array; dv: Float64Array };
  refInput: RefInput;
  dOut: Float64Array;
  /** f64 host data of the score mod's captured tensors (slot order): mutate and call lossNow() for finite differences. */
  modTensors: F64Tensor[];
  lossNow: () => number;
  inputs: { q: Tensor; k: Tensor; v: Tensor; out: Tensor; lse: Tensor; dOutT: Tensor };
}

/** Random tensor in `dtype` plus its exact values in f64. */
export async function randTensor(shape: number[], dtype: DType, seed: number, mul = 1): Promise<{ t: Tensor; f64: Float64Array }> {
  const n = shape.reduce((a, b) => a * b, 1);
  const f32 = randnArray(n, seed).map((x) => x * mul);
  const base = Tensor.fromHost(f32, shape, 'f32', { device: 'cpu' });
  const t = dtype === 'f32' ? base : base.to(dtype);
  if (t !== base) base.dispose();
  return { t, f64: Float64Array.from(await t.toFloat32()) };
}

async function f64Tensors(mod: { tensors: readonly unknown[] } | undefined): Promise<F64Tensor[]> {
  if (!mod) return [];
  return Promise.all((mod.tensors as Tensor[]).map(async (t) => ({
    shape: t.shape,
    data: t.dtype === 'i32' ? new Int32Array(await t.toHost() as Int32Array)
      : t.dtype === 'bool' ? new Uint8Array(await t.toHost() as Uint8Array) : Float64Array.from(await t.toFloat32()),
  })));
}

export async function runFlexCase(c: FlexCase): Promise<FlexRun> {
  const B = c.B ?? 1, Hq = c.Hq ?? 2, Hkv = c.Hkv ?? Hq, Sq = c.Sq, Skv = c.Skv ?? Sq, D = c.D ?? 8, Dv = c.Dv ?? D;
  const dtype = c.dtype ?? 'f32', seed = c.seed ?? 1;
  const scale = c.scale ?? 1 / Math.sqrt(D);
  const q = await randTensor([B, Hq, Sq, D], dtype, seed);
  const k = await randTensor([B, Hkv, Skv, D], dtype, seed + 1);
  const v = await randTensor([B, Hkv, Skv, Dv], dtype, seed + 2);
  const g = await randTensor([B, Hq, Sq, Dv], dtype, seed + 3);
  const blockMask = c.maskMod
    ? await createBlockMask(c.maskMod, B, 1, Sq, Skv, { device: 'cpu', blockSize: c.blockSize ?? 16, ...(c.params ? { params: c.params } : {}) })
    : undefined;
  const opts = {
    enableGQA: Hq !== Hkv, scale,
    ...(c.scoreMod ? { scoreMod: c.scoreMod } : {}), ...(blockMask ? { blockMask } : {}), ...(c.params ? { params: c.params } : {}),
  };
  const { out, lse } = await flexAttention(q.t, k.t, v.t, { ...opts, returnLse: true, backend: 'cpu' });
  const grads = await flexAttentionBackward(q.t, k.t, v.t, out, lse!, g.t, { ...opts, ...(c.gradFor ? { gradFor: c.gradFor } : {}), backend: 'cpu' });
  const modTensors = await f64Tensors(c.scoreMod);
  const keep = c.maskMod ? c.maskMod.toJs(await bindHost(c.maskMod, c.params)) : undefined;
  const refInput: RefInput = {
    q: q.f64, k: k.f64, v: v.f64, B, Hq, Hkv, Sq, Skv, D, Dv, scale,
    ...(keep ? { keep } : {}),
    ...(c.scoreMod ? { scoreMod: f64Mod(c.scoreMod, modTensors, c.params) } : {}),
  };
  return {
    grads,
    dq: await grads.dq.toFloat32(), dk: await grads.dk.toFloat32(), dv: await grads.dv.toFloat32(),
    dCaptured: await Promise.all(grads.dCaptured.map((t) => t.toFloat32())),
    ref: referenceBackward(refInput, g.f64),
    refInput, dOut: g.f64, modTensors,
    lossNow: () => loss(refInput, g.f64),
    inputs: { q: q.t, k: k.t, v: v.t, out, lse: lse!, dOutT: g.t },
  };
}
