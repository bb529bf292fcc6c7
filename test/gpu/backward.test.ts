// The CUDA backward (native/kernels/flash_bwd.cuh through lib/cuda/run-backward.ts)
// against the CPU backward (float64 inside; backend 'cpu' on f32 copies of the
// same rounded inputs and of the GPU forward's out and LSE), on random data,
// with the gradients' memory poisoned with NaN first (an unwritten element shows).
//
// Accuracy, FlashAttention's rule: on sampled rows of dq, dk and dv
//   max|grad − ref64| ≤ 2 · max|grad_pt − ref64| + 1e-3 · max|ref64|
// where grad_pt is the computation done the PyTorch way in the input dtype, in
// JS here: scores in f32 from the rounded inputs, P = exp(s − LSE), dP = dO·vᵀ and
// dS = P(dP − Delta)·mod' each rounded to the dtype, sums in f32, the gradient
// rounded. Every element is also held to the CPU backward as a whole (same NaN
// positions, relative error ≤ 2e-2). Determinism: a second run gives the same bits.
import { expect, it } from 'vitest';
import {
  NotImplementedError, Tensor, alibi, andMasks, attention, causal, createBlockMask, documentMask, flexAttention,
  flexAttentionBackward, maskMod, relativeBias, scaledDotProductAttention, scaledDotProductAttentionBackward, slidingWindow,
  softcap, type DType, type MaskMod, type ScoreMod,
} from '../../lib/index.js';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../../lib/dtype.js';
import { bindHost } from '../../lib/mods/interpret.js';
import { Expr, ScoreMod as ScoreModClass } from '../../lib/mods/ir.js';
import { differentiateScoreMod } from '../../lib/mods/grad.js';
import { describeGpu } from '../gpu-gate.js';
import { randnArray, rejection, relError } from '../reference.js';

const gpu = { device: 'cuda:0' as const };
const cpu = { device: 'cpu' as const };
const fr = Math.fround;
const bits = (x: Float32Array) => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length));

/** Fills the allocator's cached block of this size with NaN so unwritten outputs show. */
function poison(numel: number, dtype: DType): void {
  Tensor.fromHost(new Uint16Array(numel).fill(0x7fc0), [numel], dtype === 'f32' ? 'bf16' : dtype, gpu).dispose();
}

interface Case {
  name: string; dtype: 'bf16' | 'f16';
  B: number; Hq: number; Hkv: number; Sq: number; Skv: number; D: number;
  /** SDPA (dense / isCausal) instead of flex. */
  sdpa?: boolean; isCausal?: boolean;
  scoreMod?: ScoreMod; mask?: MaskMod;
  /** Put a NaN at this flat index of q. */
  nanInQ?: number;
  seed: number;
}

interface Data { q: Float32Array; k: Float32Array; v: Float32Array; g: Float32Array }

/** Rounded random inputs as f32 (what the GPU sees) and as GPU tensors of the case's dtype. */
function inputs(c: Case): { host: Data; dev: { q: Tensor; k: Tensor; v: Tensor; g: Tensor } } {
  const mk = (n: number, seed: number, shape: number[], nanAt?: number) => {
    const a = randnArray(n, seed);
    if (nanAt !== undefined) a[nanAt] = NaN;
    const b = c.dtype === 'bf16' ? Uint16Array.from(a, f32ToBf16Bits) : Uint16Array.from(a, f32ToF16Bits);
    const f = Float32Array.from(b, c.dtype === 'bf16' ? bf16BitsToF32 : f16BitsToF32);
    return { f, t: Tensor.fromHost(b, shape, c.dtype, gpu) };
  };
  const qs = [c.B, c.Hq, c.Sq, c.D], ks = [c.B, c.Hkv, c.Skv, c.D];
  const n = (s: number[]) => s.reduce((x, y) => x * y, 1);
  const q = mk(n(qs), c.seed, qs, c.nanInQ), k = mk(n(ks), c.seed + 1, ks), v = mk(n(ks), c.seed + 2, ks), g = mk(n(qs), c.seed + 3, qs);
  return { host: { q: q.f, k: k.f, v: v.f, g: g.f }, dev: { q: q.t, k: k.t, v: v.t, g: g.t } };
}

const cpuF32 = (a: Float32Array, shape: number[]) => Tensor.fromHost(a, shape, 'f32', cpu);

type Grads = { dq: Float32Array; dk: Float32Array; dv: Float32Array };

async function gpuForward(c: Case, d: { q: Tensor; k: Tensor; v: Tensor }) {
  const enableGQA = c.Hq !== c.Hkv;
  if (c.sdpa) return scaledDotProductAttention(d.q, d.k, d.v, { isCausal: !!c.isCausal, enableGQA, returnLse: true });
  const blockMask = c.mask ? await createBlockMask(c.mask, c.B, 1, c.Sq, c.Skv, gpu) : undefined;
  const r = await flexAttention(d.q, d.k, d.v, { scoreMod: c.scoreMod, blockMask, enableGQA, returnLse: true });
  return { out: r.out, lse: r.lse!, blockMask };
}

async function gpuBackward(c: Case, d: { q: Tensor; k: Tensor; v: Tensor; g: Tensor }, out: Tensor, lse: Tensor, blockMask: unknown) {
  const enableGQA = c.Hq !== c.Hkv;
  const nq = c.B * c.Hq * c.Sq * c.D, nk = c.B * c.Hkv * c.Skv * c.D;
  poison(nq, c.dtype); poison(nk, c.dtype); poison(nk, c.dtype);
  const g = c.sdpa
    ? await scaledDotProductAttentionBackward(d.q, d.k, d.v, out, lse, d.g, { isCausal: !!c.isCausal, enableGQA })
    : await flexAttentionBackward(d.q, d.k, d.v, out, lse, d.g,
      { scoreMod: c.scoreMod, blockMask: blockMask as never, enableGQA });
  expect(g.dq.device).toBe('cuda:0');
  expect(g.dq.dtype).toBe(c.dtype);
  const r: Grads = { dq: await g.dq.toFloat32(), dk: await g.dk.toFloat32(), dv: await g.dv.toFloat32() };
  g.dq.dispose(); g.dk.dispose(); g.dv.dispose();
  return r;
}

/** The CPU backward (float64 inside) on f32 copies of the same values. */
async function cpuBackward(c: Case, h: Data, out: Float32Array, lse: Float32Array): Promise<Grads> {
  const qs = [c.B, c.Hq, c.Sq, c.D], ks = [c.B, c.Hkv, c.Skv, c.D];
  const q = cpuF32(h.q, qs), k = cpuF32(h.k, ks), v = cpuF32(h.v, ks), g = cpuF32(h.g, qs);
  const o = cpuF32(out, qs), l = cpuF32(lse, [c.B, c.Hq, c.Sq]);
  const enableGQA = c.Hq !== c.Hkv;
  const r = c.sdpa
    ? await scaledDotProductAttentionBackward(q, k, v, o, l, g, { isCausal: !!c.isCausal, enableGQA, backend: 'cpu' })
    : await flexAttentionBackward(q, k, v, o, l, g, {
      scoreMod: c.scoreMod, enableGQA, backend: 'cpu',
      ...(c.mask ? { blockMask: await createBlockMask(c.mask, c.B, 1, c.Sq, c.Skv, cpu) } : {}),
    });
  return { dq: await r.dq.toFloat32(), dk: await r.dk.toFloat32(), dv: await r.dv.toFloat32() };
}

type Fn4 = (b: number, h: number, q: number, kv: number) => boolean;
type Fn5 = (s: number, b: number, h: number, q: number, kv: number) => number;

/** The case's mods as JS closures (the IR's interpreter), the score mod's derivative from lib/mods/grad.ts. */
async function jsMods(c: Case): Promise<{ keep: Fn4; f: Fn5; df: Fn5 }> {
  const keep: Fn4 = c.sdpa
    ? (c.isCausal ? (_b, _h, i, j) => j <= i : () => true)
    : c.mask ? (c.mask.toJs(await bindHost(c.mask)) as Fn4) : () => true;
  if (!c.scoreMod) return { keep, f: (s) => s, df: () => 1 };
  const f = c.scoreMod.toJs(await bindHost(c.scoreMod)) as Fn5;
  const gm = new ScoreModClass('score', new Expr(differentiateScoreMod(c.scoreMod.expr.node, true, []).dScore));
  const df = gm.toJs(await bindHost(gm)) as Fn5;
  return { keep, f, df };
}

/**
 * The PyTorch-way gradients (see the file comment) of dq row (b, h, i) and of
 * dk / dv row (b, hk, j).
 */
function ptRows(c: Case, h: Data, out: Float32Array, lse: Float32Array, m: { keep: Fn4; f: Fn5; df: Fn5 }) {
  const { Hq, Hkv, Sq, Skv, D } = c, group = Hq / Hkv, scale = 1 / Math.sqrt(D);
  const rd = c.dtype === 'bf16' ? (x: number) => bf16BitsToF32(f32ToBf16Bits(x)) : (x: number) => f16BitsToF32(f32ToF16Bits(x));
  const qRow = (b: number, hh: number, i: number) => ((b * Hq + hh) * Sq + i) * D;
  const kRow = (b: number, hk: number, j: number) => ((b * Hkv + hk) * Skv + j) * D;
  const dot = (a: Float32Array, ia: number, x: Float32Array, ix: number) => {
    let s = 0;
    for (let d = 0; d < D; d++) s = fr(s + fr(a[ia + d]! * x[ix + d]!));
    return s;
  };
  const delta = (b: number, hh: number, i: number) => dot(h.g, qRow(b, hh, i), out, qRow(b, hh, i));
  // P and dS of pair (b, hh, i, j), or null when masked
  const pair = (b: number, hh: number, i: number, j: number): [number, number] | null => {
    const L = lse[(b * Hq + hh) * Sq + i]!;
    if (L === -Infinity || !m.keep(b, hh, i, j)) return null;
    const hk = Math.floor(hh / group);
    const raw = fr(dot(h.q, qRow(b, hh, i), h.k, kRow(b, hk, j)) * fr(scale));
    const s = fr(m.f(raw, b, hh, i, j));
    if (s === -Infinity) return null;
    const P = rd(Math.exp(s - L));
    const dP = rd(dot(h.g, qRow(b, hh, i), h.v, kRow(b, hk, j)));
    return [P, rd(fr(fr(P * fr(dP - delta(b, hh, i))) * fr(m.df(raw, b, hh, i, j))))];
  };
  return {
    dq(b: number, hh: number, i: number): Float32Array {
      const acc = new Float32Array(D), hk = Math.floor(hh / group);
      for (let j = 0; j < Skv; j++) {
        const r = pair(b, hh, i, j);
        if (!r) continue;
        for (let d = 0; d < D; d++) acc[d] = fr(acc[d]! + fr(r[1] * h.k[kRow(b, hk, j) + d]!));
      }
      return acc.map((x) => rd(x * scale));
    },
    dkv(b: number, hk: number, j: number): { dk: Float32Array; dv: Float32Array } {
      const dk = new Float32Array(D), dv = new Float32Array(D);
      for (let hh = hk * group; hh < (hk + 1) * group; hh++) for (let i = 0; i < Sq; i++) {
        const r = pair(b, hh, i, j);
        if (!r) continue;
        for (let d = 0; d < D; d++) {
          dk[d] = fr(dk[d]! + fr(r[1] * h.q[qRow(b, hh, i) + d]!));
          dv[d] = fr(dv[d]! + fr(r[0] * h.g[qRow(b, hh, i) + d]!));
        }
      }
      return { dk: dk.map((x) => rd(x * scale)), dv: dv.map(rd) };
    },
  };
}

/** Rows to sample: the ends, the middle and a few random ones. */
function sampleRows(n: number, seed: number): number[] {
  const s = new Set([0, 1, n - 1, n >> 1, (seed * 7919) % n, (seed * 104729 + 13) % n, (seed * 31 + 5) % n]);
  return [...s].filter((i) => i >= 0 && i < n);
}

/** Same NaN positions, then relative error over the finite entries. */
function compareAll(got: Float32Array, want: Float32Array, tol: number, what: string): void {
  expect(got.length).toBe(want.length);
  let mismatch = -1;
  const a: number[] = [], b: number[] = [];
  for (let i = 0; i < want.length; i++) {
    if (Number.isNaN(got[i]!) !== Number.isNaN(want[i]!)) { if (mismatch < 0) mismatch = i; continue; }
    if (!Number.isNaN(want[i]!)) { a.push(got[i]!); b.push(want[i]!); }
  }
  expect(mismatch, mismatch < 0 ? '' : `${what}: NaN mismatch at ${mismatch}: got ${got[mismatch]}, want ${want[mismatch]}`).toBe(-1);
  // Relative to the reference, with an RMS floor of 1e-4: where the exact gradient is 0 (Sq = 1 under a
  // top-left causal mask: one key, P = 1, dS = dP − Delta = 0) the GPU keeps a rounding residual.
  let den = 0;
  for (const x of b) den += x * x;
  const floor = 1e-4 * Math.sqrt(b.length);
  const err = a.length ? relError(a, b) * Math.max(Math.sqrt(den), 1e-30) / Math.max(Math.sqrt(den), floor) : 0;
  expect(err, `${what} relative error`).toBeLessThan(tol);
}

/** FlashAttention's rule on one sampled row. */
function ruleOnRow(got: Float32Array, pt: Float32Array, ref: Float32Array, off: number, what: string): void {
  let eg = 0, ep = 0, mx = 0;
  for (let d = 0; d < pt.length; d++) {
    const r = ref[off + d]!;
    if (Number.isNaN(r)) continue;
    eg = Math.max(eg, Math.abs(got[off + d]! - r));
    ep = Math.max(ep, Math.abs(pt[d]! - r));
    mx = Math.max(mx, Math.abs(r));
  }
  expect(eg, `${what}: GPU error ${eg} vs PyTorch-way ${ep} (max |ref| ${mx})`).toBeLessThanOrEqual(2 * ep + 1e-3 * mx + 1e-6);
}

async function runCase(c: Case, opts: { twice?: boolean } = {}): Promise<{ got: Grads; ref: Grads; lse: Float32Array }> {
  const { host, dev } = inputs(c);
  const f = await gpuForward(c, dev);
  const [out, lse] = [await f.out.toFloat32(), await f.lse.toFloat32()];
  const got = await gpuBackward(c, dev, f.out, f.lse, (f as { blockMask?: unknown }).blockMask);
  if (opts.twice) {
    const again = await gpuBackward(c, dev, f.out, f.lse, (f as { blockMask?: unknown }).blockMask);
    for (const key of ['dq', 'dk', 'dv'] as const) expect(bits(again[key]), `${key} bit-identical on a second run`).toEqual(bits(got[key]));
  }
  const ref = await cpuBackward(c, host, out, lse);
  for (const key of ['dq', 'dk', 'dv'] as const) compareAll(got[key], ref[key], 2e-2, `${c.name} ${key}`);
  const pt = ptRows(c, host, out, lse, await jsMods(c));
  const D = c.D;
  for (const [b, hh] of [[0, 0], [c.B - 1, c.Hq - 1]] as const) {
    for (const i of sampleRows(c.Sq, c.seed)) {
      ruleOnRow(got.dq, pt.dq(b, hh, i), ref.dq, ((b * c.Hq + hh) * c.Sq + i) * D, `${c.name} dq[${b},${hh},${i}]`);
    }
  }
  for (const [b, hk] of [[0, 0], [c.B - 1, c.Hkv - 1]] as const) {
    for (const j of sampleRows(c.Skv, c.seed + 1)) {
      const r = pt.dkv(b, hk, j), off = ((b * c.Hkv + hk) * c.Skv + j) * D;
      ruleOnRow(got.dk, r.dk, ref.dk, off, `${c.name} dk[${b},${hk},${j}]`);
      ruleOnRow(got.dv, r.dv, ref.dv, off, `${c.name} dv[${b},${hk},${j}]`);
    }
  }
  for (const t of [f.out, f.lse, dev.q, dev.k, dev.v, dev.g]) t.dispose();
  return { got, ref, lse };
}

const T = 600_000;

describeGpu('CUDA backward vs the CPU backward (FlashAttention accuracy rule)', () => {
  const slopes = Tensor.fromHost(Float32Array.from({ length: 8 }, (_, i) => 2 ** (-(i + 1))), [8], 'f32', cpu);
  const table = Tensor.fromHost(randnArray(8 * 301, 5), [8, 301], 'f32', cpu);

  const cases: Case[] = [
    { name: 'sdpa dense bf16 d64 S77 B2', dtype: 'bf16', B: 2, Hq: 4, Hkv: 4, Sq: 77, Skv: 77, D: 64, sdpa: true, seed: 1 },
    { name: 'sdpa causal bf16 d128 S1531 GQA 8/2', dtype: 'bf16', B: 1, Hq: 8, Hkv: 2, Sq: 1531, Skv: 1531, D: 128, sdpa: true, isCausal: true, seed: 2 },
    { name: 'sdpa causal f16 d64 S1', dtype: 'f16', B: 1, Hq: 2, Hkv: 2, Sq: 1, Skv: 1, D: 64, sdpa: true, isCausal: true, seed: 3 },
    { name: 'sdpa causal f16 d64 Sq1 Skv77', dtype: 'f16', B: 1, Hq: 2, Hkv: 1, Sq: 1, Skv: 77, D: 64, sdpa: true, isCausal: true, seed: 4 },
    { name: 'sdpa cross-attention f16 d128 Sq77 Skv1531 GQA 8/2', dtype: 'f16', B: 1, Hq: 8, Hkv: 2, Sq: 77, Skv: 1531, D: 128, sdpa: true, seed: 5 },
    { name: 'sdpa causal bf16 d64 Sq1531 Skv77', dtype: 'bf16', B: 1, Hq: 2, Hkv: 2, Sq: 1531, Skv: 77, D: 64, sdpa: true, isCausal: true, seed: 6 },
    { name: 'sdpa causal bf16 d32 S77', dtype: 'bf16', B: 1, Hq: 2, Hkv: 1, Sq: 77, Skv: 77, D: 32, sdpa: true, isCausal: true, seed: 7 },
    { name: 'sdpa dense f16 d96 Sq77 Skv130', dtype: 'f16', B: 1, Hq: 2, Hkv: 2, Sq: 77, Skv: 130, D: 96, sdpa: true, seed: 8 },
    { name: 'flex causal blockmask bf16 d64 S1531 GQA 8/2', dtype: 'bf16', B: 1, Hq: 8, Hkv: 2, Sq: 1531, Skv: 1531, D: 64, mask: causal(), seed: 9 },
    { name: 'flex sliding window + softcap bf16 d128 S1531 GQA 8/2', dtype: 'bf16', B: 1, Hq: 8, Hkv: 2, Sq: 1531, Skv: 1531, D: 128,
      mask: slidingWindow(200), scoreMod: softcap(20), seed: 10 },
    { name: 'flex ALiBi, no mask, f16 d64 Sq77 Skv1531 GQA 8/2', dtype: 'f16', B: 1, Hq: 8, Hkv: 2, Sq: 77, Skv: 1531, D: 64,
      scoreMod: alibi(slopes), seed: 11 },
    { name: 'flex relative bias + causal f16 d128 S301', dtype: 'f16', B: 1, Hq: 8, Hkv: 8, Sq: 301, Skv: 301, D: 128,
      mask: causal(), scoreMod: relativeBias(table), seed: 12 },
  ];
  for (const c of cases) it(c.name, async () => { await runCase(c); }, T);

  it('document mask (causal, 3 documents per batch) + ALiBi, bf16 d128 S1531 B2 GQA 8/2', async () => {
    const S = 1531;
    const ids = Tensor.fromHost(Int32Array.from({ length: 2 * S }, (_, i) => {
      const p = i % S, b = Math.floor(i / S);
      return b === 0 ? (p < 400 ? 0 : p < 1000 ? 1 : 2) : (p < 77 ? 0 : p < 700 ? 1 : 2);
    }), [2, S], 'i32', cpu);
    await runCase({ name: 'document', dtype: 'bf16', B: 2, Hq: 8, Hkv: 2, Sq: S, Skv: S, D: 128,
      mask: andMasks(causal(), documentMask(ids)), scoreMod: alibi(slopes), seed: 13 });
  }, T);

  it('a fully masked row (LSE -inf) gets zero dq; the others match', async () => {
    const c: Case = { name: 'masked row', dtype: 'bf16', B: 1, Hq: 2, Hkv: 2, Sq: 77, Skv: 77, D: 64,
      mask: maskMod(({ q, kv }) => q.ne(3).and(kv.le(q))), seed: 14 };
    const { got, lse } = await runCase(c);
    expect(lse[3]).toBe(-Infinity);
    for (const hh of [0, 1]) {
      const row = got.dq.subarray((hh * 77 + 3) * 64, (hh * 77 + 4) * 64);
      expect(Array.from(row).every((x) => x === 0)).toBe(true);
    }
  }, T);

  it('a NaN in q propagates as on the CPU (its dq row, every dk/dv row of its head; nothing else)', async () => {
    const c: Case = { name: 'NaN', dtype: 'bf16', B: 1, Hq: 2, Hkv: 2, Sq: 77, Skv: 77, D: 64, sdpa: true, nanInQ: 5 * 64 + 7, seed: 15 };
    const { got } = await runCase(c);   // NaN positions are compared with the CPU's there
    expect(Number.isNaN(got.dq[5 * 64]!)).toBe(true);
    expect(Number.isNaN(got.dq[6 * 64]!)).toBe(false);
    expect(Number.isNaN(got.dk[0]!) && Number.isNaN(got.dv[76 * 64]!)).toBe(true);
    expect(got.dk.subarray(77 * 64).every((x) => Number.isFinite(x))).toBe(true);
  }, T);

  it('deterministic: dq, dk, dv bit-identical run after run (flex, GQA, softcap, sliding window)', async () => {
    await runCase({ name: 'determinism', dtype: 'bf16', B: 1, Hq: 8, Hkv: 2, Sq: 1531, Skv: 1531, D: 64,
      mask: slidingWindow(300), scoreMod: softcap(30), seed: 16 }, { twice: true });
  }, T);

  it("strided q/k/v ([B, S, H, D] storage) give the contiguous inputs' gradients", async () => {
    const B = 1, S = 77, H = 4, D = 64;
    const mk = (seed: number) => Tensor.fromHost(randnArray(B * S * H * D, seed), [B, S, H, D], 'f32', cpu).to('bf16');
    const [q, k, v, g] = await Promise.all([1, 2, 3, 4].map((s) => mk(s).toDevice('cuda')));
    const t = (x: Tensor) => x.transpose(1, 2);
    const f = await scaledDotProductAttention(t(q!), t(k!), t(v!), { isCausal: true, returnLse: true });
    const a = await scaledDotProductAttentionBackward(t(q!), t(k!), t(v!), f.out, f.lse!, t(g!), { isCausal: true });
    const [cq, ck, cv, cg] = [q!, k!, v!, g!].map((x) => t(x).contiguous());
    const b = await scaledDotProductAttentionBackward(cq!, ck!, cv!, f.out, f.lse!, cg!, { isCausal: true });
    for (const key of ['dq', 'dk', 'dv'] as const) expect(bits(await a[key].toFloat32())).toEqual(bits(await b[key].toFloat32()));
  }, T);
});

describeGpu('CUDA backward through the API', () => {
  const S = 77, D = 64;
  const host = (seed: number, H = 4) => Tensor.fromHost(randnArray(H * S * D, seed), [1, H, S, D], 'f32', cpu).to('bf16');

  it("attention(..., { requiresGrad }) on CUDA matches the same spec on the CPU backend", async () => {
    const [cq, ck, cv, cg] = [1, 2, 3, 4].map((s) => host(s));
    const [q, k, v, g] = await Promise.all([cq!, ck!, cv!, cg!].map((t) => t.toDevice('cuda')));
    for (const impl of ['flex', 'sdpa'] as const) {
      const spec = { impl, isCausal: true, requiresGrad: true as const, ...(impl === 'flex' ? { softcap: 30 } : {}) };
      const a = await attention(q!, k!, v!, spec);
      const ga = await a.backward(g!);
      const c = await attention(cq!, ck!, cv!, { ...spec, backend: 'cpu' });
      const gc = await c.backward(cg!);
      for (const key of ['dq', 'dk', 'dv'] as const) {
        expect(ga[key].device).toBe('cuda:0');
        expect(relError(await ga[key].toFloat32(), await gc[key].toFloat32()), `${impl} ${key}`).toBeLessThan(2e-2);
      }
    }
  }, T);

  it('a bool attnMask on CUDA matches the CPU backend', async () => {
    const [cq, ck, cv, cg] = [1, 2, 3, 4].map((s) => host(s));
    const keep = Uint8Array.from({ length: S * S }, (_, i) => ((i * 2654435761) >>> 7) % 3 !== 0 || i % (S + 1) === 0 ? 1 : 0);
    const cm = Tensor.fromHost(keep, [1, 1, S, S], 'bool', cpu);
    const [q, k, v, g, m] = await Promise.all([cq!, ck!, cv!, cg!, cm].map((t) => t.toDevice('cuda')));
    const f = await scaledDotProductAttention(q!, k!, v!, { attnMask: m!, returnLse: true });
    const a = await scaledDotProductAttentionBackward(q!, k!, v!, f.out, f.lse!, g!, { attnMask: m! });
    const [o, l] = await Promise.all([f.out, f.lse!].map(async (t) => t.toDevice('cpu')));
    const b = await scaledDotProductAttentionBackward(cq!, ck!, cv!, o!, l!, cg!, { attnMask: cm, backend: 'cpu' });
    for (const key of ['dq', 'dk', 'dv'] as const) {
      expect(relError(await a[key].toFloat32(), await b[key].toFloat32()), key).toBeLessThan(2e-2);
    }
  }, T);

  it('head dim 256 on CUDA: NotImplementedError at the call (gradFor runs: test/gpu/backward-gradfor.test.ts)', async () => {
    const big = (seed: number) => Tensor.fromHost(randnArray(2 * 5 * 256, seed), [1, 2, 5, 256], 'f32', cpu).to('bf16').toDevice('cuda');
    const [q2, k2, v2] = await Promise.all([big(1), big(2), big(3)]);
    const f2 = await flexAttention(q2!, k2!, v2!, { returnLse: true });
    expect(await rejection(flexAttentionBackward(q2!, k2!, v2!, f2.out, f2.lse!, f2.out))).toBeInstanceOf(NotImplementedError);
  }, T);

  it("backend 'cpu' with CUDA tensors: the gradients on the GPU, the same bits as from CPU tensors (incl. dCaptured)", async () => {
    const table = Tensor.fromHost(randnArray(4 * 2 * S, 9), [4, 2 * S], 'f32', cpu);
    const cq = host(1), ck = host(2), cv = host(3), cg = host(4);
    const mod = relativeBias(table);
    const bmC = await createBlockMask(causal(), 1, 1, S, S, { device: 'cpu' });
    const fc = await flexAttention(cq, ck, cv, { scoreMod: mod, blockMask: bmC, returnLse: true, backend: 'cpu' });
    const want = await flexAttentionBackward(cq, ck, cv, fc.out, fc.lse!, cg, { scoreMod: mod, blockMask: bmC, gradFor: [table], backend: 'cpu' });
    const [q, k, v, g, out, lse] = await Promise.all([cq, ck, cv, cg, fc.out, fc.lse!].map((t) => t.toDevice('cuda')));
    const bmG = await createBlockMask(causal(), 1, 1, S, S, { device: 'cuda' });
    const got = await flexAttentionBackward(q!, k!, v!, out!, lse!, g!, { scoreMod: mod, blockMask: bmG, gradFor: [table], backend: 'cpu' });
    expect(got.dq.device).toBe(q!.device);
    expect(got.dq.dtype).toBe('bf16');
    for (const key of ['dq', 'dk', 'dv'] as const) expect(bits(await got[key].toFloat32())).toEqual(bits(await want[key].toFloat32()));
    expect(bits(await got.dCaptured[0]!.toFloat32())).toEqual(bits(await want.dCaptured[0]!.toFloat32()));
  });
});
