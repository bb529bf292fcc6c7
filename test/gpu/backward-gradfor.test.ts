// Captured-tensor gradients (gradFor) of the CUDA backward (flash_bwd.cuh's
// per-warp partial slices + reduce, lib/cuda/gradfor-plan.ts) against the CPU
// backward (float64 inside) on f32 copies of the same rounded inputs and of
// the GPU forward's out and LSE, on random data (captured tensors too: never
// all zero), with the outputs' memory poisoned with NaN first. Checked:
// dCaptured and dq/dk/dv within 2e-2 relative error of the CPU's, no NaN, the
// captured gradient's shape/dtype/device, and the same bits over two runs.
// Each case runs on both accumulation paths of the plan (lib/cuda/gradfor-plan.ts:
// the fast one for uniform / diagonal indices, and FLEXATTN_GRADFOR_FAST=0, the
// general one): each against the CPU and run to run, and the two against each
// other (dq the same bits, dk/dv within rounding: the paths differ only in the captured sums).
import { expect, it } from 'vitest';
import {
  InvalidArgumentError, Tensor, alibi, andMasks, causal, composeScoreMods, createBlockMask, flexAttention, flexAttentionBackward,
  relativeBias, scoreMod, slidingWindow, type DType, type MaskMod, type ScoreMod,
} from '../../lib/index.js';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../../lib/dtype.js';
import { describeGpu } from '../gpu-gate.js';
import { randnArray, rejection, relError } from '../reference.js';
import { gradForSites, scoreModGradient } from '../../lib/backward/mod-programs.js';
import { planGradFor } from '../../lib/cuda/gradfor-plan.js';
import { gradForPathSwitches } from '../../lib/cuda/switches.js';

// The CUDA gradFor path is off by default until a GPU run has verified it (lib/cuda/switches.ts,
// requireVerifiedGpuPath); this suite is that verification, so it turns the path on for itself.
process.env.FLEXATTN_UNVERIFIED_GPU_PATHS ??= '1';

const gpu = { device: 'cuda:0' as const };
const cpu = { device: 'cpu' as const };
const T = 240_000;
const bits = (x: Float32Array) => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length));

function poison(numel: number, dtype: DType): void {
  if (numel > 0) Tensor.fromHost(new Uint16Array(numel).fill(0x7fc0), [numel], dtype === 'f32' ? 'bf16' : dtype, gpu).dispose();
}

/**
 * alibi, headscale: uniform index (h); relbias: diagonal (q − kv + Skv − 1), revbias diagonal the other way
 * (kv − q + Sq − 1); narrowbias: a table narrower than the index range (clamps bind: general).
 */
type Kind = 'alibi' | 'relbias' | 'headscale' | 'revbias' | 'narrowbias';
const CLASS_OF: Record<Kind, string> = { alibi: 'uniform', headscale: 'uniform', relbias: 'diagonal', revbias: 'diagonal', narrowbias: 'general' };
interface Case {
  name: string; dtype: 'bf16' | 'f16';
  B: number; Hq: number; Hkv: number; Sq: number; Skv: number; D: number;
  /** Captured tensors, each with its dtype. */
  mods: ReadonlyArray<{ kind: Kind; dtype: 'f32' | 'bf16' | 'f16' }>;
  mask?: 'causal' | 'sliding';
  seed: number;
}

const round = (dtype: 'bf16' | 'f16', a: Float32Array) => {
  const b = dtype === 'bf16' ? Uint16Array.from(a, f32ToBf16Bits) : Uint16Array.from(a, f32ToF16Bits);
  return { bits: b, f: Float32Array.from(b, dtype === 'bf16' ? bf16BitsToF32 : f16BitsToF32) };
};

/** One captured tensor's random values (same rounded values on both devices). */
function captured(c: Case, kind: Kind, dtype: 'f32' | 'bf16' | 'f16', seed: number): { shape: number[]; host: Float32Array } {
  const shape = kind === 'relbias' || kind === 'revbias' ? [c.Hq, c.Sq + c.Skv - 1] : kind === 'narrowbias' ? [c.Hq, 33] : [c.Hq];
  const n = shape.reduce((a, b) => a * b, 1);
  let a = randnArray(n, seed);
  if (kind === 'alibi') a = a.map((x) => 0.05 * x);       // slopes: small (the score grows with |kv - q|)
  if (kind === 'headscale') a = a.map((x) => 1 + 0.3 * x);
  if (kind === 'relbias' || kind === 'revbias' || kind === 'narrowbias') a = a.map((x) => 0.5 * x);
  return { shape, host: dtype === 'f32' ? a : round(dtype, a).f };
}

function toTensor(a: Float32Array, shape: number[], dtype: DType, where: typeof gpu | typeof cpu): Tensor {
  const t = Tensor.fromHost(a, shape, 'f32', where);
  if (dtype === 'f32') return t;
  const r = t.to(dtype);
  t.dispose();
  return r;
}

function modOf(c: Case, tensors: readonly Tensor[]): ScoreMod {
  const parts = c.mods.map((m, i) => {
    const t = tensors[i]!;
    if (m.kind === 'alibi') return alibi(t);
    if (m.kind === 'relbias') return relativeBias(t, { offset: c.Skv - 1 }); // index q - kv + Skv - 1 in [0, Sq + Skv - 2]
    if (m.kind === 'revbias') return scoreMod(({ score, h, q, kv }) => score.add(t.at(h, kv.sub(q).add(c.Sq - 1))));
    if (m.kind === 'narrowbias') return relativeBias(t);                      // index q - kv + 16, clamped to [0, 32]
    return scoreMod(({ score, h }) => score.mul(t.at(h)));
  });
  return parts.length === 1 ? parts[0]! : composeScoreMods(...parts);
}

function maskOf(c: Case): MaskMod | undefined {
  if (c.mask === 'causal') return causal();
  if (c.mask === 'sliding') return andMasks(causal(), slidingWindow(97));
  return undefined;
}

/**
 * Relative error with an RMS floor of 1e-4 per element in the denominator: where the exact gradient is 0
 * (Skv = 1: one key, P = 1, dS = dP − Delta = 0) the GPU keeps a rounding residual that a plain relative
 * error would divide by ~0 (as backward.test.ts's compareAll).
 */
function flooredError(got: Float32Array, want: Float32Array): number {
  let den = 0;
  for (const x of want) den += x * x;
  const floor = 1e-4 * Math.sqrt(want.length);
  return relError(got, want) * Math.max(Math.sqrt(den), 1e-30) / Math.max(Math.sqrt(den), floor);
}

interface Run { dq: Float32Array; dk: Float32Array; dv: Float32Array; dCap: Float32Array[] }

async function check(c: Case): Promise<void> {
  const qs = [c.B, c.Hq, c.Sq, c.D], ks = [c.B, c.Hkv, c.Skv, c.D];
  const n = (s: number[]) => s.reduce((x, y) => x * y, 1);
  const rin = (shape: number[], seed: number) => round(c.dtype, randnArray(n(shape), seed));
  const hq = rin(qs, c.seed), hk = rin(ks, c.seed + 1), hv = rin(ks, c.seed + 2), hg = rin(qs, c.seed + 3);
  const dev = (r: { bits: Uint16Array }, shape: number[]) => Tensor.fromHost(r.bits, shape, c.dtype, gpu);
  const q = dev(hq, qs), k = dev(hk, ks), v = dev(hv, ks), g = dev(hg, qs);
  const caps = c.mods.map((m, i) => ({ ...m, ...captured(c, m.kind, m.dtype, c.seed + 10 + i) }));
  const capG = caps.map((x) => toTensor(x.host, x.shape, x.dtype, gpu));
  const capC = caps.map((x) => toTensor(x.host, x.shape, x.dtype, cpu));
  const modG = modOf(c, capG), modC = modOf(c, capC);
  const mask = maskOf(c);
  const enableGQA = c.Hq !== c.Hkv;
  const bmG = mask ? await createBlockMask(mask, c.B, 1, c.Sq, c.Skv, gpu) : undefined;
  const { out, lse } = await flexAttention(q, k, v, { scoreMod: modG, blockMask: bmG, enableGQA, returnLse: true });

  // Which path the plan takes for this case (the suite sets FLEXATTN_UNVERIFIED_GPU_PATHS=1): fast where a site can.
  const grad = scoreModGradient(modG, capG, capG.map((_, i) => `g${i}`));
  const plan = planGradFor(gradForSites(grad, capG), capG.map((t) => t.numel), { B: c.B, Hq: c.Hq, Hkv: c.Hkv, Sq: c.Sq, Skv: c.Skv, D: c.D, Dv: c.D },
    'options.gradFor', gradForPathSwitches());
  expect(plan.tensors.map((t) => t.classes[0]!.kind), plan.reason).toEqual(c.mods.map((m) => CLASS_OF[m.kind]));
  const fastAllowed = process.env.FLEXATTN_GRADFOR_FAST !== '0';
  expect(plan.path).toBe(fastAllowed && c.mods.some((m) => CLASS_OF[m.kind] !== 'general') ? 'fast' : 'general');

  const runGpu = async (): Promise<Run> => {
    poison(n(qs), c.dtype); poison(n(ks), c.dtype); poison(n(ks), c.dtype);
    for (const x of caps) poison(n(x.shape), x.dtype);
    const r = await flexAttentionBackward(q, k, v, out, lse!, g, { scoreMod: modG, blockMask: bmG, enableGQA, gradFor: capG });
    expect(r.dCaptured.length).toBe(caps.length);
    r.dCaptured.forEach((t, i) => {
      expect(t.shape).toEqual(caps[i]!.shape);
      expect(t.dtype).toBe(caps[i]!.dtype);
      expect(t.device).toBe('cuda:0');
    });
    const res: Run = {
      dq: await r.dq.toFloat32(), dk: await r.dk.toFloat32(), dv: await r.dv.toFloat32(),
      dCap: await Promise.all(r.dCaptured.map((t) => t.toFloat32())),
    };
    for (const t of [r.dq, r.dk, r.dv, ...r.dCaptured]) t.dispose();
    return res;
  };
  const a = await runGpu();
  const b = await runGpu();
  // The general path for the same call (a separately generated module): its own two runs.
  const prev = process.env.FLEXATTN_GRADFOR_FAST;
  process.env.FLEXATTN_GRADFOR_FAST = '0';
  let ga: Run, gb: Run;
  try {
    ga = await runGpu();
    gb = await runGpu();
  } finally {
    if (prev === undefined) delete process.env.FLEXATTN_GRADFOR_FAST; else process.env.FLEXATTN_GRADFOR_FAST = prev;
  }

  const f32 = (x: Float32Array, shape: number[]) => Tensor.fromHost(x, shape, 'f32', cpu);
  const bmC = mask ? await createBlockMask(mask, c.B, 1, c.Sq, c.Skv, cpu) : undefined;
  const want = await flexAttentionBackward(f32(hq.f, qs), f32(hk.f, ks), f32(hv.f, ks),
    f32(await out.toFloat32(), qs), f32(await lse!.toFloat32(), [c.B, c.Hq, c.Sq]), f32(hg.f, qs),
    { scoreMod: modC, blockMask: bmC, enableGQA, gradFor: capC, backend: 'cpu' });

  for (const [path, r1, r2] of [['fast', a, b], ['general', ga, gb]] as const) {
    for (const key of ['dq', 'dk', 'dv'] as const) {
      const ref = await want[key].toFloat32();
      expect(r1[key].some(Number.isNaN), `${path}: ${key} has NaN`).toBe(false);
      expect(flooredError(r1[key], ref), `${path}: ${key}`).toBeLessThan(2e-2);
      expect(bits(r2[key]), `${path}: ${key} deterministic`).toEqual(bits(r1[key]));
    }
    for (const [i, x] of caps.entries()) {
      const ref = await want.dCaptured[i]!.toFloat32();
      const got = r1.dCap[i]!;
      // One key per row: softmax is constant, so every score gradient (and dq, dk, dCaptured) is exactly 0.
      if (c.Skv > 1) expect(ref.some((y) => y !== 0), `dCaptured[${i}] reference not all zero`).toBe(true);
      expect(got.some(Number.isNaN), `${path}: dCaptured[${i}] (${x.kind}) has NaN`).toBe(false);
      expect(flooredError(got, ref), `${path}: dCaptured[${i}] (${x.kind}, ${x.dtype})`).toBeLessThan(2e-2);
      expect(bits(r2.dCap[i]!), `${path}: dCaptured[${i}] deterministic`).toEqual(bits(got));
    }
  }
  // Fast vs general: the path only changes the captured sums (another order: f32 close, a 16-bit gradient may
  // round one ulp apart). dq comes from the same dQ kernel code: the same bits. dk/dv share the dK/dV kernel's
  // arithmetic, but it is another compile (FMA contraction could in principle differ): within rounding.
  expect(bits(a.dq), 'dq: fast = general').toEqual(bits(ga.dq));
  for (const key of ['dk', 'dv'] as const) expect(flooredError(a[key], ga[key]), `${key}: fast vs general`).toBeLessThan(1e-3);
  for (const [i, x] of caps.entries()) {
    expect(flooredError(a.dCap[i]!, ga.dCap[i]!), `dCaptured[${i}] (${x.kind}, ${x.dtype}): fast vs general`)
      .toBeLessThan(x.dtype === 'f32' ? 1e-4 : 1e-2);
    if (CLASS_OF[x.kind] === 'general') expect(bits(a.dCap[i]!), `dCaptured[${i}] general site: same code both ways`).toEqual(bits(ga.dCap[i]!));
  }
  for (const t of [q, k, v, g, out, lse!, ...capG]) t.dispose();
}

const CASES: Case[] = [
  { name: 'ALiBi slopes [H] f32, causal, GQA 4/2, S 77', dtype: 'bf16', B: 1, Hq: 4, Hkv: 2, Sq: 77, Skv: 77, D: 64,
    mods: [{ kind: 'alibi', dtype: 'f32' }], mask: 'causal', seed: 100 },
  { name: 'relative bias [H, Sq+Skv-1] f32, no mask, Sq 77 ≠ Skv 1531, f16', dtype: 'f16', B: 2, Hq: 2, Hkv: 2, Sq: 77, Skv: 1531, D: 64,
    mods: [{ kind: 'relbias', dtype: 'f32' }], seed: 200 },
  { name: 'relative bias bf16 table, causal, GQA 4/1, S 1531, D 96', dtype: 'bf16', B: 2, Hq: 4, Hkv: 1, Sq: 1531, Skv: 1531, D: 96,
    mods: [{ kind: 'relbias', dtype: 'bf16' }], mask: 'causal', seed: 300 },
  { name: 'per-head scale [H] f16, sliding window, S 1531, D 128', dtype: 'f16', B: 1, Hq: 3, Hkv: 3, Sq: 1531, Skv: 1531, D: 128,
    mods: [{ kind: 'headscale', dtype: 'f16' }], mask: 'sliding', seed: 400 },
  { name: 'all three at once, S 1, D 32 (every gradient but dv exactly 0)', dtype: 'bf16', B: 2, Hq: 2, Hkv: 1, Sq: 1, Skv: 1, D: 32,
    mods: [{ kind: 'alibi', dtype: 'f32' }, { kind: 'relbias', dtype: 'f32' }, { kind: 'headscale', dtype: 'bf16' }], seed: 500 },
  { name: 'all three at once, Sq 1, Skv 77, D 32, GQA 2/1', dtype: 'bf16', B: 2, Hq: 2, Hkv: 1, Sq: 1, Skv: 77, D: 32,
    mods: [{ kind: 'alibi', dtype: 'f32' }, { kind: 'relbias', dtype: 'f32' }, { kind: 'headscale', dtype: 'bf16' }], seed: 550 },
  { name: 'reversed diagonal table[h, kv - q + Sq - 1] f32, causal, GQA 4/2, Sq 1531 ≠ Skv 1531 - 77, D 64', dtype: 'bf16',
    B: 1, Hq: 4, Hkv: 2, Sq: 1531, Skv: 1454, D: 64, mods: [{ kind: 'revbias', dtype: 'f32' }], mask: 'causal', seed: 700 },
  { name: 'general: a narrow table (clamps bind) next to ALiBi and a diagonal table, S 77, D 128', dtype: 'bf16',
    B: 2, Hq: 2, Hkv: 2, Sq: 77, Skv: 77, D: 128,
    mods: [{ kind: 'narrowbias', dtype: 'f32' }, { kind: 'alibi', dtype: 'f32' }, { kind: 'relbias', dtype: 'f32' }], seed: 800 },
  { name: 'general alone: a narrow table, no mask, Sq 1531, Skv 77, D 32', dtype: 'f16', B: 1, Hq: 2, Hkv: 1, Sq: 1531, Skv: 77, D: 32,
    mods: [{ kind: 'narrowbias', dtype: 'f32' }], seed: 900 },
  { name: 'all three at once, causal, Sq 1531 ≠ Skv 77, f16', dtype: 'f16', B: 1, Hq: 2, Hkv: 2, Sq: 1531, Skv: 77, D: 64,
    mods: [{ kind: 'alibi', dtype: 'f32' }, { kind: 'relbias', dtype: 'f16' }, { kind: 'headscale', dtype: 'f32' }], mask: 'causal', seed: 600 },
];

describeGpu('CUDA backward: captured-tensor gradients (gradFor) vs the CPU backward', () => {
  for (const c of CASES) it(c.name, () => check(c), T);

  it('a captured tensor on the CPU: its gradient comes back on the CPU', async () => {
    const S = 77;
    const mk = (seed: number) => Tensor.fromHost(round('bf16', randnArray(2 * S * 64, seed)).bits, [1, 2, S, 64], 'bf16', gpu);
    const q = mk(1), k = mk(2), v = mk(3), g = mk(4);
    const slopesHost = randnArray(2, 5).map((x) => 0.05 * x);
    const sG = Tensor.fromHost(slopesHost, [2], 'f32', cpu);
    const { out, lse } = await flexAttention(q, k, v, { scoreMod: alibi(sG), returnLse: true });
    const r = await flexAttentionBackward(q, k, v, out, lse!, g, { scoreMod: alibi(sG), gradFor: [sG] });
    expect(r.dCaptured[0]!.device).toBe('cpu');
    const r2 = await flexAttentionBackward(q, k, v, out, lse!, g, { scoreMod: alibi(sG), gradFor: [sG], backend: 'cpu' });
    expect(relError(await r.dCaptured[0]!.toFloat32(), await r2.dCaptured[0]!.toFloat32())).toBeLessThan(2e-2);
  }, T);

  it('partial sums over 1 GiB: InvalidArgumentError naming options.gradFor, at the call', async () => {
    // A table read through an index tensor: the analysis cannot bound a tile's window (the whole table each).
    const S = 4096, N = 2 ** 22;
    const mk = (seed: number) => Tensor.fromHost(round('bf16', randnArray(S * 64, seed)).bits, [1, 1, S, 64], 'bf16', gpu);
    const q = mk(1), k = mk(2), v = mk(3);
    const ids = Tensor.fromHost(Int32Array.from({ length: S }, (_, i) => (i * 977) % N), [S], 'i32', gpu);
    const table = Tensor.fromHost(new Float32Array(N).fill(0.01), [N], 'f32', gpu);
    const mod = scoreMod(({ score, kv }) => score.add(table.at(ids.at(kv))));
    const { out, lse } = await flexAttention(q, k, v, { scoreMod: mod, returnLse: true });
    const e = await rejection(flexAttentionBackward(q, k, v, out, lse!, out, { scoreMod: mod, gradFor: [table] }));
    expect(e).toBeInstanceOf(InvalidArgumentError);
    expect((e as InvalidArgumentError).argument).toBe('options.gradFor');
    expect((e as Error).message).toMatch(/1 GiB/);
  }, T);
});
