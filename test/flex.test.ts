// flexAttention on the CPU reference backend against a brute-force dense
// evaluation of the same mods (JS interpreter + double-precision attention).
import { describe, expect, it } from 'vitest';
import {
  Tensor, flexAttention, createBlockMask, causal, slidingWindow, prefixLM, documentMask, andMasks, orMasks, notMask,
  softcap, alibi, alibiSlopes, relativeBias, logitClip, composeScoreMods, scoreMod, maskMod, param, ShapeError, InvalidArgumentError,
  type MaskMod, type ScoreMod,
} from '../lib/index.js';
import { bindHost } from '../lib/mods/index.js';
import { mulberry32, randomMod } from './random-mods.js';
import { randnArray, referenceAttention, relError } from './reference.js';

const cpu = { device: 'cpu' as const };

interface Case { B: number; Hq: number; Hkv: number; Sq: number; Skv: number; D: number; block: number }

async function check(c: Case, mask: MaskMod | undefined, sm: ScoreMod | undefined, seed: number,
  params: Record<string, number> = {}, tol = 2e-5) {
  const q = randnArray(c.B * c.Hq * c.Sq * c.D, seed), k = randnArray(c.B * c.Hkv * c.Skv * c.D, seed + 1);
  const v = randnArray(c.B * c.Hkv * c.Skv * c.D, seed + 2);
  const bm = mask ? await createBlockMask(mask, c.B, c.Hq, c.Sq, c.Skv, { blockSize: c.block, device: 'cpu', params }) : undefined;
  const res = await flexAttention(
    Tensor.fromHost(q, [c.B, c.Hq, c.Sq, c.D], 'f32', cpu), Tensor.fromHost(k, [c.B, c.Hkv, c.Skv, c.D], 'f32', cpu),
    Tensor.fromHost(v, [c.B, c.Hkv, c.Skv, c.D], 'f32', cpu),
    { ...(bm ? { blockMask: bm } : {}), ...(sm ? { scoreMod: sm } : {}), enableGQA: true, returnLse: true, params });
  const keep = mask ? mask.toJs(await bindHost(mask, params)) : undefined;
  const mod = sm ? sm.toJs(await bindHost(sm, params)) : undefined;
  const ref = referenceAttention({ ...c, Dv: c.D, q, k, v, scale: 1 / Math.sqrt(c.D),
    ...(keep ? { keep } : {}), ...(mod ? { scoreMod: mod } : {}) });
  const out = await res.out.toHost() as Float32Array;
  const lse = await res.lse!.toHost() as Float32Array;
  // Random score mods may legitimately produce NaN (e.g. log of a negative score):
  // then both sides must agree on where; everything else is compared numerically.
  const finite: number[] = [];
  for (let i = 0; i < out.length; i++) {
    expect(Number.isNaN(out[i]!)).toBe(Number.isNaN(ref.out[i]!));
    if (!Number.isNaN(ref.out[i]!)) finite.push(i);
  }
  if (finite.length > 0) expect(relError(finite.map((i) => out[i]!), finite.map((i) => ref.out[i]!))).toBeLessThan(tol);
  for (let i = 0; i < lse.length; i++) {
    if (ref.lse[i] === -Infinity || Number.isNaN(ref.lse[i])) expect(lse[i]).toBe(ref.lse[i]);
    else expect(Math.abs(lse[i]! - ref.lse[i]!)).toBeLessThan(1e-3 * Math.max(1, Math.abs(ref.lse[i]!)));
  }
  return { out, ref, finite: finite.length };
}

describe('flexAttention (cpu) equals a dense evaluation of the same mods', () => {
  const base: Case = { B: 2, Hq: 4, Hkv: 2, Sq: 77, Skv: 77, D: 32, block: 16 };

  it('no mask, no score mod: plain attention', () => check({ ...base, Sq: 33, Skv: 50 }, undefined, undefined, 1));
  it('causal', () => check(base, causal(), undefined, 2));
  it('sliding window with look-ahead, odd lengths', () => check({ ...base, Sq: 130, Skv: 130 }, slidingWindow(20, { lookahead: 3 }), undefined, 3));
  it('prefix LM', () => check(base, prefixLM(21), undefined, 4));
  it('document mask from random doc ids (packed sequences)', async () => {
    const r = mulberry32(5);
    const ids = new Int32Array(base.B * base.Sq);
    for (let b = 0; b < base.B; b++) { let d = 0; for (let s = 0; s < base.Sq; s++) { if (r() < 0.08) d++; ids[b * base.Sq + s] = d; } }
    await check(base, documentMask(Tensor.fromHost(ids, [base.B, base.Sq], 'i32', cpu)), undefined, 5);
  });
  it('and / or / not compositions', async () => {
    await check(base, andMasks(causal(), notMask(slidingWindow(5))), undefined, 6);
    await check(base, orMasks(prefixLM(9), slidingWindow(7)), undefined, 7);
  });
  it('score mods: softcap, ALiBi, relative bias, logit clip, composed', async () => {
    const slopes = Tensor.fromHost(alibiSlopes(base.Hq), [base.Hq], 'f32', cpu);
    await check(base, causal(), softcap(2), 8);
    await check(base, causal(), alibi(slopes), 9);
    const table = Tensor.fromHost(randnArray(base.Hq * 31, 10), [base.Hq, 31], 'f32', cpu);
    await check(base, undefined, relativeBias(table), 11);
    const clip = Tensor.fromHost(new Float32Array([0.5, 1, 2, 4]), [base.Hq], 'f32', cpu);
    await check(base, slidingWindow(30), composeScoreMods(logitClip(clip), softcap(3)), 12);
  });
  it('user mods with params: changing a param changes the result without a new mod', async () => {
    const m = maskMod(({ q, kv }) => q.sub(kv).abs().le(param('w', 'int')));
    const s = scoreMod(({ score, h }) => score.mul(param('t')).add(h.toFloat().mul(0.1)));
    const a = await check(base, m, s, 13, { w: 3, t: 0.5 });
    const b = await check(base, m, s, 13, { w: 9, t: 2 });
    expect(relError(a.out, b.out)).toBeGreaterThan(1e-3);
  });
  it('fully masked rows: output 0 and LSE -inf', async () => {
    const m = maskMod(({ q, kv }) => q.lt(10).and(kv.le(q)));
    const { out } = await check({ ...base, B: 1 }, m, undefined, 14);
    for (let i = 0; i < base.D; i++) expect(out[20 * base.D + i]).toBe(0);
  });
  it('30 random score and mask mods, GQA, odd lengths, block sizes 16 and 32', async () => {
    const r = mulberry32(99);
    let informative = 0;
    for (let i = 0; i < 30; i++) {
      const c: Case = { B: 1 + (i % 2), Hq: 4, Hkv: i % 3 === 0 ? 1 : 2, Sq: 17 + ((i * 37) % 90), Skv: 9 + ((i * 53) % 120),
        D: 16, block: i % 2 ? 16 : 32 };
      const sm = randomMod(r, { kind: 'score', depth: 4 });
      const mm = randomMod(r, { kind: 'mask', depth: 4 });
      // random captured tensors are host-only fakes; the CPU path reads them through toHost()
      const { finite } = await check(c, mm.mod as MaskMod, sm.mod as ScoreMod, 1000 + i, { ...sm.params, ...mm.params }, 1e-4);
      if (finite > 0) informative++;
    }
    // Some random score mods overflow to NaN everywhere; most must not, or the test proves little.
    expect(informative).toBeGreaterThanOrEqual(20);
  });
});

describe('flexAttention argument checks', () => {
  it('names the argument and keeps working', async () => {
    const q = Tensor.randn([1, 2, 40, 16], 'f32', cpu);
    const bm = await createBlockMask(causal(), 1, 1, 32, 32, { device: 'cpu' });
    await expect(flexAttention(q, q, q, { blockMask: bm })).rejects.toThrow(/options.blockMask: expected a mask for qLen=40/);
    await expect(flexAttention(q, q, q, { scoreMod: causal() as never })).rejects.toThrow(/options.scoreMod/);
    await expect(flexAttention(q, q, q, { blockMask: {} as never })).rejects.toThrow(InvalidArgumentError);
    const bm3 = await createBlockMask(causal(), 3, 1, 40, 40, { device: 'cpu' });
    await expect(flexAttention(q, q, q, { blockMask: bm3 })).rejects.toThrow(ShapeError);
    const s = scoreMod(({ score }) => score.mul(param('t')));
    await expect(flexAttention(q, q, q, { scoreMod: s })).rejects.toThrow(/params.t/);
    const ok = await flexAttention(q, q, q, { scoreMod: s, params: { t: 1 } });
    expect(ok.out.shape).toEqual([1, 2, 40, 16]);
  });
});
