/**
 * The serving API on the CPU backend against a float64 reference: KvCache
 * (ragged append, random page order, fork with copy on write, free and
 * reuse), pagedAttention (GQA, softcap, sliding window, chunked prefill then
 * decode, returnLse, NaN and fully masked rows), varlenAttention, and every
 * bad input a typed error with the cache unchanged.
 */
import { describe, expect, it } from 'vitest';
import {
  AbortError, DTypeError, DisposedError, InvalidArgumentError, KvCacheFullError, ShapeError, UnknownSequenceError,
} from '../lib/errors.js';
import { f32ToBf16Bits } from '../lib/dtype.js';
import { slidingWindow, softcap, maskMod, scoreMod } from '../lib/mods/index.js';
import { KvCache, type SequenceId } from '../lib/serving/kv-cache.js';
import { pagedAttention } from '../lib/serving/paged-attention.js';
import { varlenAttention } from '../lib/serving/varlen-attention.js';
import { Tensor } from '../lib/tensor.js';
import { rejection, rng } from './reference.js';
import { Ledger, compare, raggedReference, randomBf16, randomQueries, type RefSeq } from './serving-reference.js';

const TOL = 1.5e-2; // bf16 output rounding (|out| < 1) plus f32 accumulation

function cache(pageSize: number, numPages: number, Hkv = 2, D = 32): KvCache {
  return new KvCache({ pageSize, numPages, numKvHeads: Hkv, headDim: D, dtype: 'bf16', device: 'cpu' });
}

/** Appends in small interleaved random chunks (and frees a scratch sequence) so that page tables come out of order. */
async function fill(led: Ledger, seqs: SequenceId[], lengths: number[], seed: number): Promise<void> {
  const r = rng(seed);
  const left = [...lengths];
  const scratch = led.newSequence();
  while (left.some((n) => n > 0)) {
    const pick: SequenceId[] = [], toks: number[] = [];
    seqs.forEach((s, i) => {
      if (left[i]! > 0 && r() < 0.7) {
        const t = Math.min(left[i]!, 1 + Math.floor(r() * 3 * led.cache.pageSize));
        pick.push(s);
        toks.push(t);
        left[i]! -= t;
      }
    });
    if (r() < 0.3) { pick.push(scratch); toks.push(1 + Math.floor(r() * led.cache.pageSize)); }
    if (pick.length) await led.append(pick, toks);
  }
  led.free(scratch);
}

function outOfOrder(c: KvCache, seqs: SequenceId[]): boolean {
  return seqs.some((s) => c.pageTable(s).some((p, i, a) => i > 0 && p !== a[i - 1]! + 1));
}

async function check(out: Tensor, ref: Float64Array, tol = TOL): Promise<void> {
  const got = await out.toFloat32();
  const c = compare(got, ref);
  expect(c.sameNonFinite).toBe(true);
  expect(c.maxAbs).toBeLessThan(tol);
}

/** Runs pagedAttention on the CPU and the float64 reference over the ledger's values. */
async function paged(led: Ledger, seqs: SequenceId[], queryTokens: number[], Hq: number, opts: {
  scoreMod?: ReturnType<typeof softcap>; maskMod?: ReturnType<typeof slidingWindow>; causal?: boolean;
  keep?: (b: number, h: number, q: number, kv: number) => boolean;
  ref?: (s: number, b: number, h: number, q: number, kv: number) => number; seed?: number;
} = {}): Promise<void> {
  const c = led.cache, D = c.headDim;
  const T = queryTokens.reduce((a, b) => a + b, 0);
  const { q, vals } = randomQueries(T, Hq, D, opts.seed ?? 7);
  const res = await pagedAttention(q, c, {
    seqs, queryTokens, returnLse: true, backend: 'cpu',
    ...(opts.scoreMod ? { scoreMod: opts.scoreMod } : {}), ...(opts.maskMod ? { maskMod: opts.maskMod } : {}),
    ...(opts.causal !== undefined ? { causal: opts.causal } : {}),
  });
  expect(res.out.shape).toEqual([T, Hq, D]);
  expect(res.lse.shape).toEqual([T, Hq]);
  const ref = raggedReference({
    q: vals, seqs: seqs.map((s, i) => led.refSeq(s, queryTokens[i]!)), Hq, Hkv: c.numKvHeads, D,
    scale: 1 / Math.sqrt(D), causal: opts.causal ?? true,
    ...(opts.keep ? { keep: opts.keep } : {}), ...(opts.ref ? { scoreMod: opts.ref } : {}),
  });
  await check(res.out, ref.out);
  const lse = compare(await res.lse.toFloat32(), ref.lse);
  expect(lse.sameNonFinite).toBe(true);
  expect(lse.maxAbs).toBeLessThan(1e-3);
  q.dispose();
  res.out.dispose();
  res.lse.dispose();
}

describe('pagedAttention on the CPU backend vs a float64 reference', () => {
  it.each([16, 128])('a ragged batch in random page order, page %i, lengths 1 to 5000, GQA 4', async (P) => {
    const c = cache(P, Math.ceil(9000 / P) + 40);
    const led = new Ledger(c, 100 + P);
    const lengths = [1, 77, 5000, 300, 16, 129];
    const seqs = lengths.map(() => led.newSequence());
    await fill(led, seqs, lengths, P);
    expect(seqs.map((s) => c.length(s))).toEqual(lengths);
    expect(outOfOrder(c, seqs)).toBe(true);
    // decode (1 query token each), plus speculative rows (4) for two of them
    await paged(led, seqs, [1, 1, 1, 1, 1, 1], 8);
    await paged(led, seqs, [1, 4, 1, 4, 1, 1], 8, { seed: 9 });
    c.dispose();
  });

  it('softcap and a sliding window see logical positions (decode = prefill)', async () => {
    const c = cache(16, 200);
    const led = new Ledger(c, 5);
    const seqs = [led.newSequence(), led.newSequence(), led.newSequence()];
    await fill(led, seqs, [40, 1531, 200], 3);
    const w = 64;
    await paged(led, seqs, [1, 1, 1], 4, { scoreMod: softcap(0.5), ref: (s) => 0.5 * Math.tanh(s / 0.5) });
    await paged(led, seqs, [1, 3, 1], 4, { maskMod: slidingWindow(w), keep: (_b, _h, q, kv) => q - kv < w && kv <= q });
    // chunked rows: the window slides with each query's absolute position
    await paged(led, seqs, [40, 100, 7], 4, {
      maskMod: slidingWindow(w), scoreMod: softcap(0.5),
      keep: (_b, _h, q, kv) => q - kv < w && kv <= q, ref: (s) => 0.5 * Math.tanh(s / 0.5),
    });
    c.dispose();
  });

  it('mods get b = index in seqs, h = query head, q = absolute position, kv = position in the sequence', async () => {
    const c = cache(16, 60);
    const led = new Ledger(c, 8);
    const seqs = [led.newSequence(), led.newSequence()];
    await fill(led, seqs, [50, 90], 4);
    // A bias that depends on every index (small so softmax stays informative).
    const bias = scoreMod(({ score, b, h, q, kv }) => score.add(b.mul(0.25)).add(h.mul(0.125)).add(q.sub(kv).mul(0.01)));
    const odd = maskMod(({ b, q, kv }) => kv.add(b).mod(3).ne(0).or(kv.eq(q)));
    await paged(led, [seqs[1]!, seqs[0]!], [5, 2], 4, {
      scoreMod: bias, maskMod: odd,
      ref: (s, b, h, q, kv) => s + b * 0.25 + h * 0.125 + (q - kv) * 0.01,
      keep: (b, _h, q, kv) => (kv + b) % 3 !== 0 || kv === q,
    });
    c.dispose();
  });

  it('chunked prefill then decode gives what one prefill of the whole sequence gives', async () => {
    const c = cache(16, 80);
    const led = new Ledger(c, 21);
    const s = led.newSequence();
    const D = c.headDim, Hq = 4;
    const { vals } = randomQueries(301, Hq, D, 3);
    const rows: Float32Array[] = [];
    for (const [start, len] of [[0, 128], [128, 128], [256, 44], [300, 1]] as const) {
      await led.append([s], [len]);
      const qv = vals.slice(start * Hq * D, (start + len) * Hq * D);
      const q = Tensor.fromHost(Uint16Array.from(qv, (x) => f32ToBf16Bits(x)), [len, Hq, D], 'bf16', { device: 'cpu' });
      const out = await pagedAttention(q, c, { seqs: [s], queryTokens: [len], backend: 'cpu' });
      rows.push(await out.toFloat32());
      q.dispose();
      out.dispose();
    }
    const all = new Float32Array(rows.reduce((a, r) => a + r.length, 0));
    let o = 0;
    for (const r of rows) { all.set(r, o); o += r.length; }
    const ref = raggedReference({ q: vals, seqs: [led.refSeq(s, 301)], Hq, Hkv: 2, D, scale: 1 / Math.sqrt(D), causal: true });
    const cmp = compare(all, ref.out);
    expect(cmp.sameNonFinite).toBe(true);
    expect(cmp.maxAbs).toBeLessThan(TOL);
    c.dispose();
  });

  it('causal: false lets every query token see all cached tokens', async () => {
    const c = cache(16, 40);
    const led = new Ledger(c, 31);
    const seqs = [led.newSequence(), led.newSequence()];
    await fill(led, seqs, [33, 200], 6);
    await paged(led, seqs, [33, 9], 4, { causal: false });
    c.dispose();
  });

  it('NaN in a key poisons exactly the rows that see it; a fully masked row gives 0 and LSE -inf', async () => {
    const c = cache(16, 20, 1, 32);
    const led = new Ledger(c, 41);
    const s = led.newSequence();
    await led.append([s], [40]);
    // Poison token 30's key in place (page table -> pool).
    const page = c.pageTable(s)[1]!;
    const pool = c.keys.hostStorage() as Uint16Array;
    pool[(page * 16 + 14) * 32 + 5] = 0x7fc0;
    led.k.get(s)![0]![30 * 32 + 5] = NaN;
    await paged(led, [s], [20], 2); // rows at positions 20..29 finite, 30..39 NaN
    const q = randomQueries(3, 2, 32, 1).q;
    const none = maskMod(({ kv }) => kv.lt(0));
    const r = await pagedAttention(q, c, { seqs: [s], queryTokens: [3], maskMod: none, returnLse: true, backend: 'cpu' });
    expect([...await r.out.toFloat32()].every((x) => x === 0)).toBe(true);
    expect([...await r.lse.toFloat32()].every((x) => x === -Infinity)).toBe(true);
    c.dispose();
  });

  it('q may be disposed right after the call (the call holds it)', async () => {
    const c = cache(16, 10);
    const led = new Ledger(c, 51);
    const s = led.newSequence();
    await led.append([s], [20]);
    const { q, vals } = randomQueries(1, 4, 32, 2);
    const p = pagedAttention(q, c, { seqs: [s], queryTokens: [1], backend: 'cpu' });
    q.dispose();
    const ref = raggedReference({ q: vals, seqs: [led.refSeq(s, 1)], Hq: 4, Hkv: 2, D: 32, scale: 1 / Math.sqrt(32), causal: true });
    await check(await p, ref.out);
    c.dispose();
  });
});

describe('KvCache: fork, copy on write, free and reuse', () => {
  it('fork shares pages; the first write into a shared page copies it; both sequences keep their own tokens', async () => {
    const c = cache(16, 30);
    const led = new Ledger(c, 61);
    const a = led.newSequence();
    await led.append([a], [20]);
    const before = c.stats();
    const b = led.fork(a);
    expect(c.pageTable(b)).toEqual(c.pageTable(a));
    expect(c.stats().freePages).toBe(before.freePages); // fork takes no page
    expect(c.stats().sharedPages).toBe(2);
    expect(c.pagesNeeded([a, b], [3, 5])).toBe(2); // in one call, each would copy the shared last page
    await led.append([a], [3]);
    expect(c.pageTable(a)[0]).toBe(c.pageTable(b)[0]); // full page still shared
    expect(c.pageTable(a)[1]).not.toBe(c.pageTable(b)[1]); // partial page copied
    expect(c.pagesNeeded([b], [5])).toBe(0); // b now holds its last page alone: written in place
    await led.append([b], [5]);
    expect(c.length(a)).toBe(23);
    expect(c.length(b)).toBe(25);
    await paged(led, [a, b], [4, 6], 4);
    const c2 = led.fork(b);
    await led.append([c2, a], [30, 1]);
    await paged(led, [a, b, c2], [1, 1, 31], 4);
    c.dispose();
  });

  it('free gives pages back (a shared page only when its last holder goes) and they are reused', async () => {
    const c = cache(16, 12);
    const led = new Ledger(c, 71);
    const a = led.newSequence();
    await led.append([a], [64]);
    const b = led.fork(a);
    expect(c.stats().freePages).toBe(8);
    led.free(a);
    expect(c.stats().freePages).toBe(8);
    expect(() => c.length(a)).toThrow(UnknownSequenceError);
    const d = led.newSequence();
    await led.append([d], [128]);
    expect(c.stats().freePages).toBe(0);
    led.free(b);
    expect(c.stats().freePages).toBe(4);
    const e = led.newSequence();
    await led.append([e], [60]);
    await paged(led, [d, e], [2, 3], 2);
    expect(c.stats()).toMatchObject({ usedPages: 12, sharedPages: 0, sequences: 2, tokens: 188 });
    c.dispose();
  });

  it('pages freed while a CPU attention call reads them are not reused until it ends', async () => {
    const c = cache(16, 64, 2, 32);
    const led = new Ledger(c, 81);
    const a = led.newSequence();
    await led.append([a], [1024]);
    const { q, vals } = randomQueries(64, 4, 32, 5);
    const ref = raggedReference({ q: vals, seqs: [led.refSeq(a, 64)], Hq: 4, Hkv: 2, D: 32, scale: 1 / Math.sqrt(32), causal: true });
    const p = pagedAttention(q, c, { seqs: [a], queryTokens: [64], backend: 'cpu' });
    c.free(a);
    expect(c.stats()).toMatchObject({ freePages: 0, pendingPages: 64 });
    const b = c.newSequence();
    const t = led.tokens([b], [16]);
    const err = await rejection(c.append([b], t.k, t.v, { tokens: [16] }));
    expect(err).toBeInstanceOf(KvCacheFullError);
    expect((err as Error).message).toMatch(/64 more are freed once/);
    await check(await p, ref.out);
    expect(c.stats()).toMatchObject({ freePages: 64, pendingPages: 0 });
    await c.append([b], t.k, t.v, { tokens: [16] });
    expect(c.length(b)).toBe(16);
    c.dispose();
  });
});

/** Everything observable about a cache, to check that a failed call changed nothing. */
async function snapshot(c: KvCache, seqs: SequenceId[]): Promise<unknown> {
  const k = await c.keys.toHost(), v = await c.values.toHost();
  let hash = 0;
  for (const x of [k, v]) for (let i = 0; i < x.length; i++) hash = (hash * 31 + x[i]!) | 0;
  return { stats: c.stats(), seqs: seqs.map((s) => [c.has(s), c.has(s) ? c.length(s) : -1, c.has(s) ? c.pageTable(s) : []]), hash };
}

describe('bad input: typed errors, cache unchanged', () => {
  async function setup() {
    const c = cache(16, 8);
    const led = new Ledger(c, 91);
    const a = led.newSequence(), b = led.newSequence();
    await led.append([a, b], [20, 30]);
    const freed = led.newSequence();
    led.free(freed);
    return { c, led, a, b, freed };
  }

  it('append: unknown, freed or repeated sequences, counts that do not add up, wrong shapes, dtypes, full cache', async () => {
    const { c, led, a, b, freed } = await setup();
    const other = cache(16, 4);
    const foreign = other.newSequence();
    const snap = await snapshot(c, [a, b]);
    const t = led.tokens([a, b], [3, 2]);
    const cases: [() => Promise<void>, new (...x: never[]) => Error, RegExp][] = [
      [() => c.append([a, freed], t.k, t.v, { tokens: [3, 2] }), UnknownSequenceError, /seqs\[1\].*freed/],
      [() => c.append([a, foreign], t.k, t.v, { tokens: [3, 2] }), UnknownSequenceError, /seqs\[1\]/],
      [() => c.append([a, 12345678], t.k, t.v, { tokens: [3, 2] }), UnknownSequenceError, /seqs\[1\]/],
      [() => c.append([a, a], t.k, t.v, { tokens: [3, 2] }), InvalidArgumentError, /seqs\[1\].*each sequence once/],
      [() => c.append([a, b], t.k, t.v, { tokens: [3, 3] }), ShapeError, /options.tokens.*adding up to k.shape\[0\] = 5/],
      [() => c.append([a, b], t.k, t.v, { tokens: [5] }), ShapeError, /options.tokens.*2 token counts/],
      [() => c.append([a, b], t.k, t.v, { tokens: [6, -1] }), InvalidArgumentError, /options.tokens\[1\]/],
      [() => c.append([a, b], t.k, t.v, {} as never), InvalidArgumentError, /options.tokens/],
      [() => c.append([a, b], t.k, t.v, { tokens: [3, 2], tokenz: 1 } as never), InvalidArgumentError, /options.tokenz/],
      [() => c.append([a, b], t.k.reshape(5, 1, 64), t.v, { tokens: [3, 2] }), ShapeError, /^k: .*\[T, 2, 32\]/],
      [() => c.append([a, b], t.k, t.v.narrow(0, 0, 4), { tokens: [3, 2] }), ShapeError, /^v/],
      [() => c.append([a, b], t.k.to('f32'), t.v, { tokens: [3, 2] }), DTypeError, /k: expected dtype bf16/],
      [() => c.append([a, b], t.k, 'v' as never, { tokens: [3, 2] }), InvalidArgumentError, /^v: expected a Tensor/],
    ];
    for (const [call, cls, msg] of cases) {
      const e = await rejection(call());
      expect(e).toBeInstanceOf(cls);
      expect((e as Error).message).toMatch(msg);
    }
    expect(await snapshot(c, [a, b])).toEqual(snap);
    // Full: 8 pages, 2 + 2 taken; 5 more tokens for a fit its page, 70 for b need 4 + ... > 4 free.
    const big = led.tokens([a, b], [5, 70]);
    const full = await rejection(c.append([a, b], big.k, big.v, { tokens: [5, 70] })) as KvCacheFullError;
    expect(full).toBeInstanceOf(KvCacheFullError);
    expect(full.code).toBe('ERR_FLEXATTN_KV_CACHE_FULL');
    expect(full.freePages).toBe(4);
    expect(full.neededPages).toBe(5);
    expect(full.message).toMatch(/needs 5 free pages, the cache has 4 free of 8/);
    expect(await snapshot(c, [a, b])).toEqual(snap);
    // An aborted signal: nothing written either.
    const ac = new AbortController();
    ac.abort();
    expect(await rejection(c.append([a, b], t.k, t.v, { tokens: [3, 2], signal: ac.signal }))).toBeInstanceOf(AbortError);
    expect(await snapshot(c, [a, b])).toEqual(snap);
    // And the cache still works.
    t.commit();
    await c.append([a, b], t.k, t.v, { tokens: [3, 2] });
    await paged(led, [a, b], [1, 1], 4);
    other.dispose();
    c.dispose();
    expect(() => c.newSequence()).toThrow(DisposedError);
  });

  it('pagedAttention: bad sequences, counts, shapes, dtypes, options', async () => {
    const { c, a, b, freed } = await setup();
    const snap = await snapshot(c, [a, b]);
    const q = randomQueries(3, 4, 32, 1).q;
    const cases: [() => Promise<unknown>, new (...x: never[]) => Error, RegExp][] = [
      [() => pagedAttention(q, c, { seqs: [a, freed], queryTokens: [2, 1] }), UnknownSequenceError, /options.seqs\[1\]/],
      [() => pagedAttention(q, c, { seqs: [a, b], queryTokens: [2, 2] }), ShapeError, /q.shape\[0\] = 3/],
      [() => pagedAttention(q, c, { seqs: [a, b], queryTokens: [3] }), ShapeError, /options.queryTokens/],
      [() => pagedAttention(q, c, { seqs: [a], queryTokens: [3.5] } as never), InvalidArgumentError, /queryTokens\[0\]/],
      [() => pagedAttention(randomQueries(25, 4, 32, 1).q, c, { seqs: [a], queryTokens: [25] }), ShapeError, /at most 20/],
      [() => pagedAttention(randomQueries(3, 3, 32, 1).q, c, { seqs: [a], queryTokens: [3] }), ShapeError, /multiple of the cache's 2 KV heads/],
      [() => pagedAttention(randomQueries(3, 4, 16, 1).q, c, { seqs: [a], queryTokens: [3] }), ShapeError, /head dim 32/],
      [() => pagedAttention(q.to('f32'), c, { seqs: [a], queryTokens: [3] }), DTypeError, /dtype bf16/],
      [() => pagedAttention(q.reshape(3, 4, 32, 1), c, { seqs: [a], queryTokens: [3] }), ShapeError, /3-D/],
      [() => pagedAttention(q, c, { seqs: [a], queryTokens: [3], causal: 1 } as never), InvalidArgumentError, /options.causal/],
      [() => pagedAttention(q, c, { seqs: [a], queryTokens: [3], isCausal: true } as never), InvalidArgumentError, /options.isCausal/],
      [() => pagedAttention(q, c, { seqs: [a], queryTokens: [3], scoreMod: slidingWindow(3) } as never), InvalidArgumentError, /a MaskMod/],
      [() => pagedAttention(q, c, { seqs: [a], queryTokens: [3], backend: 'cuda' }), InvalidArgumentError, /backend/],
      [() => pagedAttention(q, {} as never, { seqs: [a], queryTokens: [3] }), InvalidArgumentError, /^cache/],
    ];
    for (const [call, cls, msg] of cases) {
      const e = await rejection(call());
      expect(e).toBeInstanceOf(cls);
      expect((e as Error).message).toMatch(msg);
    }
    const ac = new AbortController();
    ac.abort();
    expect(await rejection(pagedAttention(q, c, { seqs: [a], queryTokens: [3], signal: ac.signal }))).toBeInstanceOf(AbortError);
    expect(await snapshot(c, [a, b])).toEqual(snap);
    c.dispose();
  });

  it('constructor options are checked', () => {
    const ok = { pageSize: 16, numPages: 4, numKvHeads: 2, headDim: 32, device: 'cpu' as const };
    expect(() => new KvCache({ ...ok, pageSize: 0 })).toThrow(/options.pageSize/);
    expect(() => new KvCache({ ...ok, numPages: 1.5 })).toThrow(/options.numPages/);
    expect(() => new KvCache({ ...ok, dtype: 'i32' as never })).toThrow(DTypeError);
    expect(() => new KvCache({ ...ok, pagesize: 16 } as never)).toThrow(/options.pagesize/);
    const c = new KvCache(ok);
    expect(c.stats()).toMatchObject({ numPages: 4, freePages: 4, usedPages: 0, bytes: 2 * 4 * 16 * 2 * 32 * 2 });
    c.dispose();
  });
});

describe('varlenAttention on the CPU backend vs a float64 reference', () => {
  /** Packed random k, v for sequences of lengths `nk`, and q for `nq`. */
  function packed(nq: number[], nk: number[], Hq: number, Hkv: number, D: number, seed: number) {
    const Tq = nq.reduce((a, b) => a + b, 0), Tk = nk.reduce((a, b) => a + b, 0);
    const q = randomBf16(Tq * Hq * D, seed), k = randomBf16(Tk * Hkv * D, seed + 1), v = randomBf16(Tk * Hkv * D, seed + 2);
    const cuQ = [0], cuK = [0];
    nq.forEach((n) => cuQ.push(cuQ.at(-1)! + n));
    nk.forEach((n) => cuK.push(cuK.at(-1)! + n));
    const seqs: RefSeq[] = nk.map((n, s) => ({
      k: k.vals.slice(cuK[s]! * Hkv * D, cuK[s + 1]! * Hkv * D), v: v.vals.slice(cuK[s]! * Hkv * D, cuK[s + 1]! * Hkv * D), n, m: nq[s]!,
    }));
    return {
      q: Tensor.fromHost(q.bits, [Tq, Hq, D], 'bf16', { device: 'cpu' }),
      k: Tensor.fromHost(k.bits, [Tk, Hkv, D], 'bf16', { device: 'cpu' }),
      v: Tensor.fromHost(v.bits, [Tk, Hkv, D], 'bf16', { device: 'cpu' }),
      qv: q.vals, kBits: k.bits, vBits: v.bits, cuQ, cuK, seqs,
    };
  }

  it.each([false, true])('self-attention of packed sequences 1, 77, 300, 5 (isCausal %s), GQA 2', async (isCausal) => {
    const lens = [1, 77, 300, 5];
    const p = packed(lens, lens, 4, 2, 32, 11);
    const r = await varlenAttention(p.q, p.k, p.v, { cuSeqlensQ: p.cuQ, cuSeqlensK: Int32Array.from(p.cuK), isCausal, returnLse: true });
    const ref = raggedReference({ q: p.qv, seqs: p.seqs, Hq: 4, Hkv: 2, D: 32, scale: 1 / Math.sqrt(32), causal: isCausal });
    await check(r.out, ref.out);
    expect(compare(await r.lse.toFloat32(), ref.lse).maxAbs).toBeLessThan(1e-3);
  });

  it('cross-attention lengths (end-aligned causal), an empty sequence, mods, strided k/v', async () => {
    const nq = [3, 0, 50, 10], nk = [40, 7, 50, 4];
    const p = packed(nq, nk, 2, 1, 64, 21);
    // k and v interleaved in one [Tk, 2, Hkv, D] tensor: same strides, read in place.
    const Tk = p.k.shape[0]!;
    const both = new Uint16Array(Tk * 2 * 64);
    for (let t = 0; t < Tk; t++) {
      both.set(p.kBits.subarray(t * 64, (t + 1) * 64), (t * 2) * 64);
      both.set(p.vBits.subarray(t * 64, (t + 1) * 64), (t * 2 + 1) * 64);
    }
    const kv = Tensor.fromHost(both, [Tk, 2, 1, 64], 'bf16', { device: 'cpu' });
    const k = kv.select(1, 0), v = kv.select(1, 1);
    expect(k.strides[0]).toBe(128);
    const out = await varlenAttention(p.q, k, v, {
      cuSeqlensQ: p.cuQ, cuSeqlensK: p.cuK, isCausal: true, scoreMod: softcap(0.5), maskMod: slidingWindow(16),
    });
    const ref = raggedReference({
      q: p.qv, seqs: p.seqs, Hq: 2, Hkv: 1, D: 64, scale: 1 / 8, causal: true,
      keep: (_b, _h, q, kv2) => q - kv2 < 16 && kv2 <= q, scoreMod: (s) => 0.5 * Math.tanh(s / 0.5),
    });
    await check(out, ref.out);
    // different strides for k and v: copied to a common layout first
    const out2 = await varlenAttention(p.q, k, p.v, { cuSeqlensQ: p.cuQ, cuSeqlensK: p.cuK, isCausal: true, scoreMod: softcap(0.5), maskMod: slidingWindow(16) });
    await check(out2, ref.out);
    // a query with no visible key (position n - m + i < 0 when m > n): 0
    const r3 = await varlenAttention(p.q.narrow(0, 0, 3), p.k.narrow(0, 0, 2), p.v.narrow(0, 0, 2), { cuSeqlensQ: [0, 3], cuSeqlensK: [0, 2], isCausal: true, returnLse: true });
    const lse3 = await r3.lse.toFloat32();
    expect(lse3[0]).toBe(-Infinity);
    expect(Number.isFinite(lse3[2]!)).toBe(true);
  });

  it('bad offsets and shapes are typed errors', async () => {
    const p = packed([2, 3], [4, 5], 2, 2, 32, 31);
    const base = { cuSeqlensQ: p.cuQ, cuSeqlensK: p.cuK };
    const cases: [unknown, new (...x: never[]) => Error, RegExp][] = [
      [varlenAttention(p.q, p.k, p.v, { ...base, cuSeqlensQ: [0, 2, 4] }), ShapeError, /cuSeqlensQ.*last offset of 5/],
      [varlenAttention(p.q, p.k, p.v, { ...base, cuSeqlensK: [1, 4, 9] }), InvalidArgumentError, /starting at 0/],
      [varlenAttention(p.q, p.k, p.v, { ...base, cuSeqlensK: [0, 6, 4, 9] }), InvalidArgumentError, /non-decreasing/],
      [varlenAttention(p.q, p.k, p.v, { ...base, cuSeqlensK: [0, 9] }), ShapeError, /3 offsets/],
      [varlenAttention(p.q, p.k, p.v, { ...base, cuSeqlensQ: 'x' as never }), InvalidArgumentError, /cuSeqlensQ/],
      [varlenAttention(p.q, p.k.to('f32'), p.v, base), DTypeError, /^k/],
      [varlenAttention(p.q, p.k, p.v.narrow(0, 0, 8), base), ShapeError, /^v/],
      [varlenAttention(p.q.narrow(1, 0, 1), p.k, p.v, base), ShapeError, /GQA/],
      [varlenAttention(p.q, p.k, p.v, { ...base, causal: true } as never), InvalidArgumentError, /options.causal/],
    ];
    for (const [call, cls, msg] of cases) {
      const e = await rejection(call as Promise<unknown>);
      expect(e).toBeInstanceOf(cls);
      expect((e as Error).message).toMatch(msg);
    }
  });
});

describe('serving exports', () => {
  it('the package exports the serving API', async () => {
    const m = await import('../lib/index.js');
    expect(m.KvCache).toBe(KvCache);
    expect(m.pagedAttention).toBe(pagedAttention);
    expect(m.varlenAttention).toBe(varlenAttention);
    expect(new m.KvCacheFullError('x', 2, 1).code).toBe('ERR_FLEXATTN_KV_CACHE_FULL');
  });
});
