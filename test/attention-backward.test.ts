// CPU backward (flexAttentionBackward / scaledDotProductAttentionBackward)
// against float64 oracles on random data: finite differences of the f64
// forward loss elementwise on small cases, and the analytic f64 backward
// (itself checked against those differences) on odd lengths, GQA,
// cross-attention and masks; fully masked rows, -inf scores and NaN.
import { describe, expect, it } from 'vitest';
import {
  Tensor, causal, documentMask, maskMod, prefixLM, scaledDotProductAttention, scaledDotProductAttentionBackward, scoreMod,
  slidingWindow, where,
} from '../lib/index.js';
import { fdGradient, maxRelErr, referenceBackward } from './backward-reference.js';
import { randTensor, runFlexCase, type FlexCase } from './backward-harness.js';

const TOL_F32 = 2e-5;

async function expectMatchesReference(c: FlexCase): Promise<void> {
  await matchesReference(c);
}

async function matchesReference(c: FlexCase, tol = TOL_F32) {
  const r = await runFlexCase(c);
  expect(maxRelErr(r.dq, r.ref.dq), 'dq').toBeLessThanOrEqual(tol);
  expect(maxRelErr(r.dk, r.ref.dk), 'dk').toBeLessThanOrEqual(tol);
  expect(maxRelErr(r.dv, r.ref.dv), 'dv').toBeLessThanOrEqual(tol);
  // gradients are not trivially zero
  expect(Math.max(...r.ref.dq.map(Math.abs))).toBeGreaterThan(1e-3);
  return r;
}

describe('flexAttentionBackward against finite differences of the f64 forward', () => {
  it.each([
    ['plain', { Sq: 7, Skv: 5, D: 4 }],
    ['GQA, cross-attention, Dv != D, causal block mask', { Hq: 4, Hkv: 2, Sq: 6, Skv: 9, D: 4, Dv: 3, maskMod: causal(), blockSize: 4 }],
  ] as const)('%s: every element of dq, dk, dv', async (_, c) => {
    const r = await runFlexCase(c as FlexCase);
    const fq = fdGradient(r.lossNow, r.refInput.q as Float64Array);
    const fk = fdGradient(r.lossNow, r.refInput.k as Float64Array);
    const fv = fdGradient(r.lossNow, r.refInput.v as Float64Array);
    // the analytic f64 oracle is the finite differences' (to their precision) ...
    expect(maxRelErr(r.ref.dq, fq)).toBeLessThan(1e-7);
    expect(maxRelErr(r.ref.dk, fk)).toBeLessThan(1e-7);
    expect(maxRelErr(r.ref.dv, fv)).toBeLessThan(1e-7);
    // ... and the native backward matches both
    expect(maxRelErr(r.dq, fq)).toBeLessThan(TOL_F32);
    expect(maxRelErr(r.dk, fk)).toBeLessThan(TOL_F32);
    expect(maxRelErr(r.dv, fv)).toBeLessThan(TOL_F32);
  });
});

describe('flexAttentionBackward against the f64 backward', () => {
  it.each([1, 7, 77])('odd length Sq = %i (Skv = 7 and Sq)', async (S) => {
    await expectMatchesReference({ Sq: S, Skv: 7, D: 8, seed: S });
    if (S > 1) await expectMatchesReference({ Sq: S, D: 8, seed: S + 1 });
  });
  it('Skv = 1: dq = dk = 0 (p = 1 whatever the score) and dv = sum of dOut over the rows', async () => {
    const r = await runFlexCase({ Sq: 5, Skv: 1, D: 4 });
    expect(r.dq.every((x) => x === 0) && r.dk.every((x) => x === 0)).toBe(true);
    expect(maxRelErr(r.dv, r.ref.dv)).toBeLessThan(TOL_F32);
    expect(Math.max(...r.ref.dv.map(Math.abs))).toBeGreaterThan(0.1);
  });
  it('GQA (4 query heads per KV head), batch 2', () => expectMatchesReference({ B: 2, Hq: 8, Hkv: 2, Sq: 13, D: 8 }));
  it('cross-attention Sq < Skv and Sq > Skv', async () => {
    await expectMatchesReference({ Sq: 7, Skv: 77, D: 8 });
    await expectMatchesReference({ Sq: 77, Skv: 7, D: 8, Dv: 5 });
  });
  it('causal block mask, odd lengths and partial blocks', () => expectMatchesReference({ Sq: 77, D: 8, maskMod: causal() }));
  it('causal cross-attention Sq > Skv through the block mask', () => expectMatchesReference({ Sq: 40, Skv: 23, D: 8, maskMod: causal() }));
  it('sliding window', () => expectMatchesReference({ Sq: 77, D: 8, maskMod: slidingWindow(9), blockSize: 8 }));
  it('document mask (docIds, causal inside each document)', async () => {
    const ids = Int32Array.from({ length: 77 }, (_, i) => (i < 20 ? 0 : i < 21 ? 1 : i < 60 ? 2 : 3));
    const docIds = Tensor.fromHost(ids, [77], 'i32', { device: 'cpu' });
    await expectMatchesReference({ Sq: 77, D: 8, maskMod: documentMask(docIds) });
  });
  it('prefix LM', () => expectMatchesReference({ Sq: 33, D: 8, maskMod: prefixLM(10), blockSize: 8 }));
  it('a maskMod that is not block aligned (per head)', () =>
    expectMatchesReference({ Hq: 3, Sq: 29, D: 8, maskMod: maskMod(({ h, q, kv }) => q.sub(kv).mod(h.add(2)).ne(1)), blockSize: 8 }));
  it('-inf from the score mod is a masked position (same gradients as the causal mask)', async () => {
    const c = { Sq: 21, D: 8, seed: 3 };
    const a = await runFlexCase({ ...c, scoreMod: scoreMod(({ score, q, kv }) => where(kv.gt(q), -Infinity, score)) });
    const b = await runFlexCase({ ...c, maskMod: causal() });
    expect(maxRelErr(a.dq, b.dq)).toBeLessThan(1e-6);
    expect(maxRelErr(a.dk, b.dk)).toBeLessThan(1e-6);
    expect(maxRelErr(a.dv, b.dv)).toBeLessThan(1e-6);
  });
  it.each(['bf16', 'f16'] as const)('%s inputs: gradients in the input dtype within its tolerance', async (dtype) => {
    const r = await runFlexCase({ Hq: 4, Hkv: 2, Sq: 33, D: 16, dtype, maskMod: causal() });
    for (const g of [r.grads.dq, r.grads.dk, r.grads.dv]) expect(g.dtype).toBe(dtype);
    const tol = dtype === 'bf16' ? 2e-2 : 4e-3;
    expect(maxRelErr(r.dq, r.ref.dq)).toBeLessThan(tol);
    expect(maxRelErr(r.dk, r.ref.dk)).toBeLessThan(tol);
    expect(maxRelErr(r.dv, r.ref.dv)).toBeLessThan(tol);
  });
});

describe('masked rows and NaN', () => {
  it('fully masked rows get exactly zero gradients; the rest match the oracle', async () => {
    // queries 0..3 see nothing
    const r = await matchesReference({ Sq: 19, D: 8, maskMod: maskMod(({ q, kv }) => q.ge(4).and(kv.le(q))), blockSize: 4 });
    const lse = await r.inputs.lse.toFloat32();
    for (let h = 0; h < 2; h++) for (let i = 0; i < 4; i++) {
      expect(lse[h * 19 + i]).toBe(-Infinity);
      for (let d = 0; d < 8; d++) expect(Object.is(r.dq[(h * 19 + i) * 8 + d], 0)).toBe(true);
    }
  });

  it('a NaN in q poisons its dq row and every dk/dv row it attends to, not the other dq rows (as PyTorch)', async () => {
    const S = 9, D = 4;
    const q = await randTensor([1, 1, S, D], 'f32', 1), k = await randTensor([1, 1, S, D], 'f32', 2);
    const v = await randTensor([1, 1, S, D], 'f32', 3), g = await randTensor([1, 1, S, D], 'f32', 4);
    const qh = await q.t.toFloat32();
    qh[5 * D + 1] = NaN;
    const qn = Tensor.fromHost(qh, [1, 1, S, D], 'f32', { device: 'cpu' });
    const { out, lse } = await scaledDotProductAttention(qn, k.t, v.t, { isCausal: true, returnLse: true });
    const { dq, dk, dv } = await scaledDotProductAttentionBackward(qn, k.t, v.t, out, lse, g.t, { isCausal: true });
    const [a, b, c] = await Promise.all([dq.toFloat32(), dk.toFloat32(), dv.toFloat32()]);
    for (let i = 0; i < S; i++) {
      const row = (x: Float32Array) => Array.from(x.subarray(i * D, (i + 1) * D));
      expect(row(a).every(Number.isNaN), `dq row ${i}`).toBe(i === 5);
      if (i !== 5) expect(row(a).every(Number.isFinite)).toBe(true);
      // row 5 attends to kv 0..5 (causal)
      expect(row(b).every(Number.isNaN), `dk row ${i}`).toBe(i <= 5);
      expect(row(c).every(Number.isNaN), `dv row ${i}`).toBe(i <= 5);
    }
  });

  it('a NaN in v poisons dq and dk everywhere it is seen, but not dv (dv does not read v)', async () => {
    const S = 6, D = 4;
    const q = await randTensor([1, 1, S, D], 'f32', 1), k = await randTensor([1, 1, S, D], 'f32', 2);
    const v = await randTensor([1, 1, S, D], 'f32', 3), g = await randTensor([1, 1, S, D], 'f32', 4);
    const vh = await v.t.toFloat32();
    vh[0] = NaN;
    const vn = Tensor.fromHost(vh, [1, 1, S, D], 'f32', { device: 'cpu' });
    const { out, lse } = await scaledDotProductAttention(q.t, k.t, vn, { returnLse: true });
    const r = await scaledDotProductAttentionBackward(q.t, k.t, vn, out, lse, g.t);
    expect((await r.dq.toFloat32()).every(Number.isNaN)).toBe(true);
    expect((await r.dk.toFloat32()).every(Number.isNaN)).toBe(true);
    expect((await r.dv.toFloat32()).every(Number.isFinite)).toBe(true);
  });
});

describe('scaledDotProductAttentionBackward', () => {
  async function sdpaCase(opts: { isCausal?: boolean; mask?: 'bool' | 'additive' }, Sq = 23, Skv = 17) {
    const B = 2, Hq = 4, Hkv = 2, D = 8;
    const q = await randTensor([B, Hq, Sq, D], 'f32', 1), k = await randTensor([B, Hkv, Skv, D], 'f32', 2);
    const v = await randTensor([B, Hkv, Skv, D], 'f32', 3), g = await randTensor([B, Hq, Sq, D], 'f32', 4);
    let attnMask: Tensor | undefined, keep: ((b: number, h: number, i: number, j: number) => boolean) | undefined;
    let add: Float32Array | undefined;
    if (opts.mask === 'bool') {
      const m = Uint8Array.from({ length: Sq * Skv }, (_, x) => ((x * 7919) % 5 !== 0 ? 1 : 0));
      attnMask = Tensor.fromHost(m, [Sq, Skv], 'bool', { device: 'cpu' });
      keep = (_b, _h, i, j) => m[i * Skv + j] === 1;
    } else if (opts.mask === 'additive') {
      add = randnArray32(Hq * Sq * Skv);
      attnMask = Tensor.fromHost(add, [1, Hq, Sq, Skv], 'f32', { device: 'cpu' });
    } else if (opts.isCausal) keep = (_b, _h, i, j) => j <= i;
    const fwd = { enableGQA: true, ...(opts.isCausal ? { isCausal: true } : {}), ...(attnMask ? { attnMask } : {}) };
    const { out, lse } = await scaledDotProductAttention(q.t, k.t, v.t, { ...fwd, returnLse: true });
    const r = await scaledDotProductAttentionBackward(q.t, k.t, v.t, out, lse, g.t, fwd);
    const ref = referenceBackward({
      q: q.f64, k: k.f64, v: v.f64, B, Hq, Hkv, Sq, Skv, D, Dv: D, scale: 1 / Math.sqrt(D),
      ...(keep ? { keep } : {}), ...(add ? { scoreMod: (s: number, _b: number, h: number, i: number, j: number) => s + add![(h * Sq + i) * Skv + j]! } : {}),
    }, g.f64);
    expect(maxRelErr(await r.dq.toFloat32(), ref.dq)).toBeLessThan(TOL_F32);
    expect(maxRelErr(await r.dk.toFloat32(), ref.dk)).toBeLessThan(TOL_F32);
    expect(maxRelErr(await r.dv.toFloat32(), ref.dv)).toBeLessThan(TOL_F32);
  }
  it('unmasked, GQA, cross-attention', () => sdpaCase({}));
  it('isCausal (top-left), Sq > Skv and Sq < Skv', async () => { await sdpaCase({ isCausal: true }); await sdpaCase({ isCausal: true }, 9, 31); });
  it('bool attnMask (broadcast over B and H)', () => sdpaCase({ mask: 'bool' }));
  it('additive float attnMask', () => sdpaCase({ mask: 'additive' }));
});

function randnArray32(n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 2);
}
