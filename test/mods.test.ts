import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, ModError } from '../lib/errors.js';
import {
  Expr, MaskMod, ScoreMod, alibi, alibiSlopes, andMasks, bindHost, causal, composeScoreMods, docIdsFromOffsets,
  documentMask, encodeProgram, evaluateReference, fullMask, generateCuda, imageBlocks, imageBlocksFromIds,
  imageIdsFromSpans, logitClip, maskMod, notMask, orMasks, packArgs, param, prefixLM, relativeBias, runBytecode,
  lift, scoreMod, slidingWindow, softcap, tensorAt, where,
} from '../lib/mods/index.js';
import { modArgs } from '../lib/mods/ir.js';
import { fakeEnv, hostTensor, mulberry32, randomMod, randomTensor } from './random-mods.js';

const fr = Math.fround;
const same = (a: number, b: number): boolean => Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b)) || (a === 0 && b === 0);

function thrown(fn: () => unknown): Error {
  try { fn(); } catch (e) { return e as Error; }
  throw new Error('expected a throw');
}

describe('expression builder', () => {
  const s = scoreMod(({ score }) => score); // ensure tracing works at all
  it('traces a trivial score mod', () => {
    expect(s).toBeInstanceOf(ScoreMod);
    expect(s.toString()).toBe('scoreMod((score, b, h, q, kv) => score)');
  });

  it('types and promotion', () => {
    // Outside a trace (inside one, the discarded expressions would be refused as dangling).
    ((fn: (a: typeof modArgs) => unknown) => fn(modArgs))(({ score, b, q, kv }) => {
      expect(q.add(1).type).toBe('int');
      expect(q.add(1.5).type).toBe('float');
      expect(q.add(score).type).toBe('float');
      expect(score.add(2).type).toBe('float');
      expect(q.div(2).type).toBe('float');
      expect(q.floorDiv(2).type).toBe('int');
      expect(q.mod(2).type).toBe('int');
      expect(score.mod(2).type).toBe('float');
      expect(q.exp().type).toBe('float');
      expect(q.neg().type).toBe('int');
      expect(q.lt(kv).type).toBe('bool');
      expect(q.lt(0.5).type).toBe('bool');
      expect(q.lt(kv).eq(true).type).toBe('bool');
      expect(score.toInt().type).toBe('int');
      expect(q.lt(kv).toFloat().type).toBe('float');
      expect(where(b.eq(0), q, score).type).toBe('float');
      expect(where(b.eq(0), q, 3).type).toBe('int');
      expect(q.where(b.eq(0), kv).type).toBe('int');
      expect(where(b.eq(0), true, q.lt(1)).type).toBe('bool');
      expect(param('x').type).toBe('float');
      expect(param('n', 'int').type).toBe('int');
      return score;
    });
  });

  it('type errors are ModError at definition time naming the expression', () => {
    const e1 = thrown(() => maskMod(({ q, kv }) => q.lt(kv).add(1)));
    expect(e1).toBeInstanceOf(ModError);
    expect((e1 as ModError).expression).toBe('(q < kv).add(1)');
    expect(e1.message).toMatch(/add: operand 1 .* is Bool/);
    const e2 = thrown(() => scoreMod(({ score, q }) => where(q.add(1), score, 0)));
    expect(e2).toBeInstanceOf(ModError);
    expect(e2.message).toMatch(/condition must be Bool, got Int/);
    expect((e2 as ModError).expression).toContain('where((q + 1), score, 0)');
    expect(thrown(() => maskMod(({ q }) => q.add(1)))).toBeInstanceOf(ModError);
    expect(thrown(() => maskMod(({ q }) => q.add(1))).message).toMatch(/must return a Bool, got Int/);
    expect(thrown(() => scoreMod(({ q, kv }) => q.lt(kv))).message).toMatch(/Float score, got Bool/);
    expect(thrown(() => maskMod(({ q, kv }) => q.and(kv)))).toBeInstanceOf(ModError);
    expect(thrown(() => maskMod(({ q }) => q.not()))).toBeInstanceOf(ModError);
    expect(thrown(() => maskMod(({ q }) => q.lt(kvBad())))).toBeInstanceOf(ModError);
    expect(thrown(() => scoreMod(({ score, b }) => where(b.eq(0), score, b.eq(1))))).toBeInstanceOf(ModError);
    expect(thrown(() => maskMod(({ q }) => q.lt(1).eq(1)))).toBeInstanceOf(ModError);
    expect(thrown(() => param('bad name'))).toBeInstanceOf(ModError);
    expect(thrown(() => scoreMod(({ score }) => score.add(param('x')).add(param('x', 'int'))))).toBeInstanceOf(ModError);
    expect(thrown(() => scoreMod((() => Promise.resolve(1)) as never)).message).toMatch(/Promise/);
    expect(thrown(() => scoreMod((() => ({})) as never))).toBeInstanceOf(ModError);
  });
  function kvBad(): never { return {} as never; }

  it('tensor.at: rank and index type checked; dtypes map to types', () => {
    const t = hostTensor(new Float32Array(6), [2, 3], 'f32');
    const e = thrown(() => scoreMod(({ score, h }) => score.add(tensorAt(t, [h]))));
    expect(e).toBeInstanceOf(ModError);
    expect(e.message).toMatch(/rank-2 tensor \[2, 3\] needs 2 indices, got 1/);
    expect((e as ModError).expression).toBe('tensor<f32[2, 3]>[h]');
    expect(thrown(() => scoreMod(({ score, h }) => score.add(tensorAt(t, [h, score]))))).toBeInstanceOf(ModError);
    const i = hostTensor(new Int32Array(2), [2], 'i32');
    const bo = hostTensor(new Uint8Array(2), [2], 'bool');
    const bf = hostTensor(new Uint16Array(2), [2], 'bf16');
    const { h } = modArgs;
    expect(tensorAt(i, [h]).type).toBe('int');
    expect(tensorAt(bo, [h]).type).toBe('bool');
    expect(tensorAt(bf, [0]).type).toBe('float');
  });

  it('mods record tensors and params in slot order', () => {
    const a = hostTensor(new Float32Array(4), [4], 'f32');
    const b = hostTensor(new Int32Array(4), [4], 'i32');
    const m = scoreMod(({ score, h, q }) => score.mul(param('s')).add(tensorAt(a, [tensorAt(b, [q])])).add(tensorAt(a, [h])).add(param('o', 'int')));
    expect(m.tensors).toEqual([b, a]);
    expect(m.tensors.length).toBe(2);
    expect(m.params).toEqual([{ name: 's', type: 'float' }, { name: 'o', type: 'int' }]);
    expect(m.ir.tensors.map((t) => t.dtype).sort()).toEqual(['f32', 'i32']);
  });
});

describe('hash and printing', () => {
  it('same structure, different tensors/param values: same hash; different constants: different hash', () => {
    const t1 = hostTensor(new Float32Array([1, 2]), [2], 'f32');
    const t2 = hostTensor(new Float32Array([5, 6, 7]), [3], 'f32');
    const mk = (t: typeof t1, c: number): ScoreMod => scoreMod(({ score, h }) => score.add(tensorAt(t, [h]).mul(c)).add(param('p')));
    expect(mk(t1, 2).hash).toBe(mk(t2, 2).hash);
    expect(mk(t1, 2).hash).not.toBe(mk(t1, 3).hash);
    expect(mk(t1, 0.1).hash).not.toBe(mk(t1, 0.2).hash);
    const t3 = hostTensor(new Uint16Array(2), [2], 'bf16');
    expect(mk(t1, 2).hash).not.toBe(mk(t3 as never, 2).hash);
    expect(causal().hash).toBe(causal().hash);
    expect(causal().hash).toBe(maskMod(({ q, kv }) => kv.le(q)).hash);
    expect(causal().hash).not.toBe(maskMod(({ q, kv }) => q.ge(kv)).hash);
    expect(slidingWindow(4).hash).not.toBe(slidingWindow(5).hash);
    expect(causal().hash).toMatch(/^[0-9a-f]{32}$/);
  });

  it('prints readably', () => {
    expect(causal().toString()).toBe('maskMod((b, h, q, kv) => (kv <= q))');
    const slopes = hostTensor(new Float32Array(4), [4], 'f32');
    expect(alibi(slopes).toString()).toBe('scoreMod((score, b, h, q, kv) => (score + (t0[h] * (float(kv) - float(q)))))');
    expect(softcap(30).toString()).toBe('scoreMod((score, b, h, q, kv) => (30.0 * tanh((score * 0.033333335))))');
    expect(scoreMod(({ score }) => score.add(param('bias'))).toString()).toContain('$bias');
  });

  it('deep chains do not overflow and printing is bounded', () => {
    const m = scoreMod(({ score }) => { let x = score; for (let i = 0; i < 20000; i++) x = x.add(1); return x; });
    expect(m.ir.nodes.length).toBeGreaterThan(20000);
    const dag = scoreMod(({ score }) => { let x = score; for (let i = 0; i < 60; i++) x = x.add(x); return x; });
    expect(dag.ir.nodes.length).toBe(61);
    expect(dag.toString().length).toBeLessThan(10000);
  });
});

describe('int / float semantics', () => {
  const ev = (fn: (a: { q: Expr; kv: Expr }) => Expr, q: number, kv: number): number => {
    const m = scoreMod(({ q: qq, kv: kk }) => fn({ q: qq, kv: kk }).toFloat());
    return m.toJs()(0, 0, 0, q, kv);
  };
  it('python floor division and modulo', () => {
    const cases: [number, number][] = [[7, 2], [-7, 2], [7, -2], [-7, -2], [0, 3], [5, 0], [-2147483648, -1], [-2147483648, 3], [2147483647, -1]];
    for (const [a, b] of cases) {
      const fd = ev(({ q, kv }) => q.floorDiv(kv), a, b);
      const md = ev(({ q, kv }) => q.mod(kv), a, b);
      const pyFd = b === 0 ? 0 : b === -1 ? (-a) | 0 : Math.floor(a / b);
      const pyMd = b === 0 || b === -1 ? 0 : a - b * Math.floor(a / b);
      expect([a, b, fd]).toEqual([a, b, fr(pyFd)]);
      expect([a, b, md]).toEqual([a, b, fr(pyMd)]);
    }
  });
  it('an int is never -0 (found by the differential test: JS -4 % 2 is -0)', () => {
    const m = scoreMod(({ q, kv }) => lift(1).div(q.mod(kv).toFloat()));
    expect(m.toJs()(0, 0, 0, -4, 2)).toBe(Infinity);
    expect(evaluateReference(m.ir, fakeEnv([]), { b: 0, h: 0, q: -4, kv: 2 })).toBe(Infinity);
    const p = scoreMod(({ score }) => lift(1).div(param('n', 'int').toFloat()).add(score));
    expect(p.toJs({ tensors: [], params: { n: -0 } })(0, 0, 0, 0, 0)).toBe(Infinity);
  });
  it('int32 wrapping and float->int conversion', () => {
    expect(ev(({ q }) => q.add(1), 2147483647, 0)).toBe(fr(-2147483648));
    expect(ev(({ q, kv }) => q.mul(kv), 65536, 65536)).toBe(0);
    expect(ev(({ q }) => q.neg(), -2147483648, 0)).toBe(fr(-2147483648));
    const toI = (x: number): number => scoreMod(({ score }) => score.toInt().toFloat()).toJs()(x, 0, 0, 0, 0);
    expect(toI(-2.7)).toBe(-2);
    expect(toI(1e20)).toBe(fr(2147483647));
    expect(toI(-1e20)).toBe(fr(-2147483648));
    expect(toI(NaN)).toBe(0);
  });
  it('float ops round to f32', () => {
    const f = scoreMod(({ score }) => score.mul(0.1).add(1e-8)).toJs();
    expect(f(3, 0, 0, 0, 0)).toBe(fr(fr(3 * fr(0.1)) + fr(1e-8)));
    expect(scoreMod(({ score }) => score.sigmoid()).toJs()(0, 0, 0, 0, 0)).toBe(0.5);
    expect(scoreMod(({ score }) => score.min(NaN)).toJs()(1, 0, 0, 0, 0)).toBeNaN();
  });
});

describe('params', () => {
  it('missing or bad values are InvalidArgumentError naming the param', async () => {
    const m = scoreMod(({ score }) => score.add(param('offset')).mul(param('k', 'int')));
    const e = thrown(() => m.toJs({ tensors: [], params: { offset: 1 } }));
    expect(e).toBeInstanceOf(InvalidArgumentError);
    expect((e as InvalidArgumentError).argument).toBe('params.k');
    expect(thrown(() => m.toJs({ tensors: [], params: { offset: 1, k: 1.5 } }))).toBeInstanceOf(InvalidArgumentError);
    await expect(bindHost(m, {})).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(thrown(() => encodeProgram(m, [], { k: 2 }))).toBeInstanceOf(InvalidArgumentError);
    const f = m.toJs({ tensors: [], params: { offset: 0.5, k: 3 } });
    expect(f(1, 0, 0, 0, 0)).toBe(4.5);
  });
});

// ---------------------------------------------------------------------------
// Built-ins vs brute force

function checkMask(m: MaskMod, env: ReturnType<typeof fakeEnv>, pred: (b: number, h: number, q: number, kv: number) => boolean,
  dims: { B: number; H: number; S: number }, seed = 1, samples = 3000): void {
  const f = m.toJs(env);
  const rng = mulberry32(seed);
  for (let i = 0; i < samples; i++) {
    const b = Math.floor(rng() * dims.B), h = Math.floor(rng() * dims.H);
    const q = Math.floor(rng() * dims.S), kv = Math.floor(rng() * dims.S);
    const want = pred(b, h, q, kv);
    if (f(b, h, q, kv) !== want) throw new Error(`${m.toString()} at b=${b} h=${h} q=${q} kv=${kv}: expected ${want}`);
    expect(evaluateReference(m.ir, env, { b, h, q, kv })).toBe(want ? 1 : 0);
    expect(runBytecode(encodeProgram(m, env.tensors, env.params as Record<string, number>), 0, b, h, q, kv)).toBe(want ? 1 : 0);
  }
}

function checkScore(m: ScoreMod, env: ReturnType<typeof fakeEnv>, ref: (s: number, b: number, h: number, q: number, kv: number) => number,
  dims: { B: number; H: number; S: number }, seed = 2, samples = 1000): void {
  const f = m.toJs(env);
  const prog = encodeProgram(m, env.tensors, env.params as Record<string, number>);
  const rng = mulberry32(seed);
  for (let i = 0; i < samples; i++) {
    const s = fr(rng() * 40 - 20);
    const b = Math.floor(rng() * dims.B), h = Math.floor(rng() * dims.H);
    const q = Math.floor(rng() * dims.S), kv = Math.floor(rng() * dims.S);
    const want = ref(s, b, h, q, kv);
    const got = f(s, b, h, q, kv);
    expect(Math.abs(got - want)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(want)));
    expect(runBytecode(prog, s, b, h, q, kv)).toBe(got);
  }
}

describe('built-ins', () => {
  const dims = { B: 2, H: 3, S: 40 };
  const none = fakeEnv([]);
  it('causal / full / slidingWindow / prefixLM', () => {
    checkMask(causal(), none, (_b, _h, q, kv) => kv <= q, dims);
    checkMask(fullMask(), none, () => true, dims);
    checkMask(slidingWindow(5), none, (_b, _h, q, kv) => kv <= q && q - kv < 5, dims);
    checkMask(slidingWindow(4, { lookahead: 2 }), none, (_b, _h, q, kv) => kv <= q + 2 && q - kv < 4, dims);
    checkMask(prefixLM(7), none, (_b, _h, q, kv) => kv < 7 || kv <= q, dims);
    expect(causal().analytic).toEqual({ kind: 'causal' });
    expect(slidingWindow(4, { lookahead: 2 }).analytic).toEqual({ kind: 'sliding', window: 4, lookahead: 2 });
    expect(prefixLM(7).analytic).toEqual({ kind: 'prefix', n: 7 });
    expect(thrown(() => slidingWindow(0))).toBeInstanceOf(InvalidArgumentError);
    expect(thrown(() => prefixLM(-1))).toBeInstanceOf(InvalidArgumentError);
  });

  it('documentMask ([B,S] and [S], causal or not) and docIdsFromOffsets', () => {
    const ids1 = docIdsFromOffsets([0, 5, 6, 20], 40);
    expect(Array.from(ids1.slice(0, 8))).toEqual([0, 0, 0, 0, 0, 1, 2, 2]);
    const ids2 = docIdsFromOffsets([0, 13], 40);
    const t2 = hostTensor(Int32Array.from([...ids1, ...ids2]), [2, 40], 'i32');
    const id = (b: number, x: number): number => (b === 0 ? ids1[x]! : ids2[x]!);
    checkMask(documentMask(t2), fakeEnv([t2]), (b, _h, q, kv) => id(b, q) === id(b, kv) && kv <= q, dims);
    checkMask(documentMask(t2, { causal: false }), fakeEnv([t2]), (b, _h, q, kv) => id(b, q) === id(b, kv), dims);
    const t1 = hostTensor(ids1, [40], 'i32');
    checkMask(documentMask(t1), fakeEnv([t1]), (_b, _h, q, kv) => ids1[q] === ids1[kv] && kv <= q, dims);
    expect(documentMask(t1).analytic).toBeUndefined();
    expect(thrown(() => documentMask(hostTensor(new Float32Array(4), [4], 'f32')))).toBeInstanceOf(InvalidArgumentError);
  });

  it('imageBlocks (shared and per-batch spans) and imageBlocksFromIds', () => {
    const spans = [{ start: 3, length: 6 }, { start: 20, length: 10 }];
    const ids = imageIdsFromSpans(spans, 40);
    const img = (x: number): number => ids[x]!;
    const rule = (q: number, kv: number, im: (x: number) => number): boolean => kv <= q || (im(q) >= 0 && im(q) === im(kv));
    checkMask(imageBlocks(spans, { seqLen: 40 }), none, (_b, _h, q, kv) => rule(q, kv, img), dims);
    const spansB = [spans, [{ start: 0, length: 4 }]];
    const idsB = spansB.map((s) => imageIdsFromSpans(s, 40));
    checkMask(imageBlocks(spansB), none, (b, _h, q, kv) => rule(q, kv, (x) => idsB[b]![x]!), dims);
    const t = hostTensor(Int32Array.from([...idsB[0]!, ...idsB[1]!]), [2, 40], 'i32');
    checkMask(imageBlocksFromIds(t), fakeEnv([t]), (b, _h, q, kv) => rule(q, kv, (x) => idsB[b]![x]!), dims);
    expect(imageBlocks(spans).analytic).toEqual({ kind: 'or', parts: [{ kind: 'causal' },
      { kind: 'boxes', boxes: [{ q0: 3, q1: 9, kv0: 3, kv1: 9 }, { q0: 20, q1: 30, kv0: 20, kv1: 30 }] }] });
    expect(thrown(() => imageBlocks([{ start: 0, length: 5 }, { start: 3, length: 2 }]))).toBeInstanceOf(InvalidArgumentError);
    expect(thrown(() => imageBlocks([{ start: 38, length: 5 }], { seqLen: 40 }))).toBeInstanceOf(InvalidArgumentError);
  });

  it('and / or / not compositions', () => {
    const sw = slidingWindow(6);
    const pl = prefixLM(3);
    checkMask(andMasks(causal(), sw), none, (_b, _h, q, kv) => kv <= q && q - kv < 6, dims);
    checkMask(orMasks(sw, pl), none, (_b, _h, q, kv) => (kv <= q && q - kv < 6) || kv < 3 || kv <= q, dims);
    checkMask(notMask(causal()), none, (_b, _h, q, kv) => kv > q, dims);
    checkMask(andMasks(), none, () => true, dims);
    checkMask(orMasks(), none, () => false, dims);
    expect(andMasks(causal(), sw).analytic).toEqual({ kind: 'and', parts: [{ kind: 'causal' }, sw.analytic] });
    expect(notMask(causal()).analytic).toEqual({ kind: 'not', part: { kind: 'causal' } });
    expect(andMasks(causal()).hash).toBe(causal().hash);
    const ids = hostTensor(docIdsFromOffsets([0, 10], 40), [40], 'i32');
    const m = andMasks(causal(), documentMask(ids, { causal: false }));
    expect(m.analytic).toBeUndefined();
    checkMask(m, fakeEnv([ids]), (_b, _h, q, kv) => kv <= q && (q < 10) === (kv < 10), dims);
    expect(thrown(() => andMasks(softcap(3) as never))).toBeInstanceOf(ModError);
  });

  it('alibi / softcap / logitClip / relativeBias / composeScoreMods', () => {
    const slopesArr = alibiSlopes(3);
    expect(alibiSlopes(8)[0]).toBeCloseTo(0.5);
    const slopes = hostTensor(slopesArr, [3], 'f32');
    checkScore(alibi(slopes), fakeEnv([slopes]), (s, _b, h, q, kv) => s + slopesArr[h]! * (kv - q), dims);
    checkScore(softcap(5), none, (s) => 5 * Math.tanh(s / 5), dims);
    const capped = scoreMod(({ score }) => score).toJs();
    expect(capped(1, 0, 0, 0, 0)).toBe(1);
    const mx = hostTensor(Float32Array.from([1, 2.5, 10]), [3], 'f32');
    checkScore(logitClip(mx), fakeEnv([mx]), (s, _b, h) => Math.min(Math.max(s, -mx.data[h]!), mx.data[h]!), dims);
    checkScore(logitClip(3), none, (s) => Math.min(Math.max(s, -3), 3), dims);
    const R = 21;
    const tab = randomTensor(mulberry32(9), 'f32', [3, R]);
    const tabAt = (h: number, i: number): number => tab.data[h * R + Math.min(Math.max(i, 0), R - 1)]!;
    checkScore(relativeBias(tab), fakeEnv([tab]), (s, _b, h, q, kv) => s + tabAt(h, q - kv + 10), dims);
    checkScore(relativeBias(tab, { offset: 3 }), fakeEnv([tab]), (s, _b, h, q, kv) => s + tabAt(h, q - kv + 3), dims);
    const comp = composeScoreMods(alibi(slopes), softcap(5));
    expect(comp.tensors).toEqual([slopes]);
    checkScore(comp, fakeEnv([slopes]), (s, _b, h, q, kv) => 5 * Math.tanh((s + slopesArr[h]! * (kv - q)) / 5), dims);
    const withParam = softcap(param('cap'));
    checkScore(withParam, fakeEnv([], { cap: 7 }), (s) => 7 * Math.tanh(s / 7), dims);
    expect(thrown(() => softcap(0))).toBeInstanceOf(InvalidArgumentError);
    expect(thrown(() => alibi(hostTensor(new Int32Array(3), [3], 'i32')))).toBeInstanceOf(InvalidArgumentError);
  });

  it('captured bf16/f16 tensors decode; out-of-range indices clamp', () => {
    const bf = hostTensor(Uint16Array.from([0x3f80, 0xc000, 0x4049]), [3], 'bf16'); // 1, -2, 3.140625
    const hf = hostTensor(Uint16Array.from([0x3c00, 0xc000, 0x0001]), [3], 'f16'); // 1, -2, 2^-24
    const m = scoreMod(({ score, q }) => score.add(tensorAt(bf, [q])).add(tensorAt(hf, [q]).mul(1000)));
    const env = fakeEnv(m.tensors);
    const f = m.toJs(env);
    expect(f(0, 0, 0, 0, 0)).toBe(1001);
    expect(f(0, 0, 0, 1, 0)).toBe(-2002);
    expect(f(0, 0, 0, 2, 0)).toBe(fr(3.140625 + fr(2 ** -24 * 1000)));
    expect(f(0, 0, 0, 99, 0)).toBe(f(0, 0, 0, 2, 0));
    expect(f(0, 0, 0, -5, 0)).toBe(1001);
  });

  it('bindHost fetches captured tensors', async () => {
    const ids = hostTensor(Int32Array.from([0, 0, 1, 1]), [4], 'i32');
    const m = documentMask(ids);
    const env = await bindHost(m);
    expect(env.tensors[0]!.strides).toEqual([1]);
    const f = m.toJs(env);
    expect(f(0, 0, 1, 0)).toBe(true);
    expect(f(0, 0, 2, 1)).toBe(false);
  });
});

describe('random programs', () => {
  it('JS closure == recursive reference == bytecode emulation (200 mask + 200 score programs)', () => {
    const rng = mulberry32(12345);
    for (let n = 0; n < 400; n++) {
      const kind = n % 2 ? 'score' : 'mask';
      const r = randomMod(rng, { kind, depth: 1 + (n % 6) });
      const f = r.mod.toJs(r.env) as (...a: number[]) => number | boolean;
      const prog = encodeProgram(r.mod, r.env.tensors, r.params);
      for (let i = 0; i < 25; i++) {
        const s = fr((rng() - 0.5) * 50);
        const b = Math.floor(rng() * 4), h = Math.floor(rng() * 8);
        const q = Math.floor((rng() - 0.2) * 300), kv = Math.floor((rng() - 0.2) * 300);
        const want = evaluateReference(r.mod.ir, r.env, { score: s, b, h, q, kv });
        const got = kind === 'mask' ? (f(b, h, q, kv) ? 1 : 0) : (f(s, b, h, q, kv) as number);
        const vm = runBytecode(prog, s, b, h, q, kv);
        if (!same(got, want) || !same(vm, want)) {
          throw new Error(`mismatch for ${r.mod.toString()}\nargs ${[s, b, h, q, kv]}: js ${got} ref ${want} vm ${vm}`);
        }
      }
    }
  });

  it('layouts pack', () => {
    const t = hostTensor(new Float32Array(8), [2, 4], 'f32');
    const ids = hostTensor(new Int32Array(4), [4], 'i32');
    const code = generateCuda(
      scoreMod(({ score, h, q }) => score.add(tensorAt(t, [h, q])).mul(param('scale'))),
      maskMod(({ q }) => tensorAt(ids, [q]).ne(param('pad', 'int'))));
    expect(code.layout.fields.map((f) => `${f.name}:${f.kind}@${f.offset}`)).toEqual([
      't0:ptr@0', 't1:ptr@8', 't0_s0:i32@16', 't0_n0:i32@20', 't0_s1:i32@24', 't0_n1:i32@28', 't1_s0:i32@32', 't1_n0:i32@36',
      'p0:f32@40', 'p1:i32@44']);
    expect(code.layout.size).toBe(48);
    expect(code.tensors).toEqual([t, ids]);
    const bytes = packArgs(code.layout, { tensorPtrs: [0x1000n, 0x2000n], tensorStrides: [[4, 1], [1]], tensorShapes: [[2, 4], [4]],
      params: { scale: 0.5, pad: -1 } });
    const dv = new DataView(bytes.buffer);
    expect(dv.getBigUint64(8, true)).toBe(0x2000n);
    expect(dv.getInt32(16, true)).toBe(4);
    expect(dv.getInt32(28, true)).toBe(4);
    expect(dv.getFloat32(40, true)).toBe(0.5);
    expect(dv.getInt32(44, true)).toBe(-1);
    // strides that do not fit 32-bit index arithmetic are refused, naming the tensor
    expect(() => packArgs(code.layout, { tensorPtrs: [1n, 2n], tensorStrides: [[2 ** 31, 1], [1]], tensorShapes: [[2, 4], [4]],
      params: { scale: 1, pad: 0 } })).toThrow(/captured tensor #0/);
    expect(thrown(() => packArgs(code.layout, { tensorPtrs: [1n, 2n], tensorStrides: [[4, 1], [1]], tensorShapes: [[2, 4], [4]], params: { scale: 1 } })))
      .toBeInstanceOf(InvalidArgumentError);
    const empty = generateCuda();
    expect(empty.layout).toEqual({ size: 4, align: 4, fields: [] });
    expect(empty.source).toContain('#define FLEX_HAS_SCORE_MOD 0');
    expect(empty.source).toContain('int _unused;');
  });
});

describe('misc', () => {
  it('x.where(cond, other) follows PyTorch; a Bool receiver with a numeric cond gets a hint', () => {
    const f = scoreMod(({ score, q, kv }) => score.where(kv.le(q), -Infinity)).toJs();
    expect(f(2, 0, 0, 3, 1)).toBe(2);
    expect(f(2, 0, 0, 1, 3)).toBe(-Infinity);
    const e = thrown(() => scoreMod(({ score, q, kv }) => kv.le(q).where(score, 0)));
    expect(e).toBeInstanceOf(ModError);
    expect(e.message).toMatch(/free function where\(cond, a, b\)/);
  });
  it('a maskMod cannot read score', () => {
    const sm = softcap(3);
    expect(thrown(() => maskMod(() => sm.expr.gt(0)))).toBeInstanceOf(ModError);
  });
});
