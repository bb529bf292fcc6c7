// KV-sharded decoding on G virtual ranks (CPU backend) equals pagedAttention
// on one KvCache holding every token; the LSE merge on its own (issue 22).
import { describe, expect, it } from 'vitest';
import {
  Tensor, KvCache, pagedAttention, ShardedKvCache, shardedPagedAttention, createVirtualTransport,
  softcap, slidingWindow, scoreMod, ShapeError, UnknownSequenceError, type MaskMod, type ScoreMod,
} from '../lib/index.js';
import { mergeInto, mergeWeights, emptyAccumulator } from '../lib/parallel/lse-merge.js';
import { randnArray } from './reference.js';

const cpu = { device: 'cpu' as const };

interface Case {
  G: number; lens: number[]; m: number; Hq?: number; Hkv?: number; D?: number; chunk?: number; pageSize?: number;
  causal?: boolean; maskMod?: MaskMod; scoreMod?: ScoreMod; dtype?: 'f32' | 'bf16';
}

async function check(c: Case): Promise<void> {
  const Hq = c.Hq ?? 4, Hkv = c.Hkv ?? 2, D = c.D ?? 16, pageSize = c.pageSize ?? 8, dtype = c.dtype ?? 'f32';
  const total = c.lens.reduce((a, b) => a + b, 0);
  const one = new KvCache({ pageSize, numPages: Math.ceil(total / pageSize) + c.lens.length + 4, numKvHeads: Hkv, headDim: D, dtype, device: 'cpu' });
  const t = createVirtualTransport({ size: c.G, device: 'cpu' });
  const sh = new ShardedKvCache({ transport: t, chunkTokens: c.chunk ?? 32, pageSize, numPages: Math.ceil(total / pageSize) + 4 * c.lens.length + 8,
    numKvHeads: Hkv, headDim: D, dtype });
  const seed = c.G * 1000 + total;
  const k = Tensor.fromHost(randnArray(total * Hkv * D, seed), [total, Hkv, D], dtype, cpu);
  const v = Tensor.fromHost(randnArray(total * Hkv * D, seed + 1), [total, Hkv, D], dtype, cpu);
  const a = c.lens.map(() => one.newSequence());
  const s = c.lens.map(() => sh.newSequence());
  // Two appends (the prompt, then the rest) so appends that cross chunk boundaries are exercised.
  const first = c.lens.map((n) => Math.floor(n / 2));
  const rest = c.lens.map((n, i) => n - first[i]!);
  const rows = (counts: number[], off: number[]) => {
    const ks: Tensor[] = [], vs: Tensor[] = [];
    let start = 0;
    counts.forEach((n, i) => { ks.push(k.narrow(0, start + off[i]!, n)); vs.push(v.narrow(0, start + off[i]!, n)); start += c.lens[i]!; });
    const cat = (xs: Tensor[]) => {
      const n = xs.reduce((p, x) => p + x.shape[0]!, 0);
      const out = Tensor.empty([n, Hkv, D], dtype, cpu);
      let o = 0;
      for (const x of xs) { if (x.shape[0]! > 0) out.narrow(0, o, x.shape[0]!).copyFrom(x); o += x.shape[0]!; }
      return out;
    };
    return [cat(ks), cat(vs)] as const;
  };
  for (const [counts, off] of [[first, c.lens.map(() => 0)], [rest, first]] as const) {
    const [kk, vv] = rows(counts, off);
    await one.append(a, kk, vv, { tokens: counts });
    await sh.append(s, kk, vv, { tokens: counts });
  }
  expect(s.map((x) => sh.length(x))).toEqual(c.lens);
  const m = c.lens.map((n) => Math.min(c.m, n));
  const T = m.reduce((p, x) => p + x, 0);
  const q = Tensor.fromHost(randnArray(T * Hq * D, seed + 2), [T, Hq, D], dtype, cpu);
  const opts = { queryTokens: m, ...(c.causal === false ? { causal: false } : {}),
    ...(c.maskMod ? { maskMod: c.maskMod } : {}), ...(c.scoreMod ? { scoreMod: c.scoreMod } : {}), returnLse: true as const };
  const ref = await pagedAttention(q, one, { seqs: a, ...opts });
  const got = await shardedPagedAttention(q, sh, { seqs: s, ...opts });
  expect(got.out).toHaveLength(c.G);
  const [r, rl] = await Promise.all([ref.out.toFloat32(), ref.lse.toFloat32()]);
  expect(r.some((x) => Math.abs(x) > 0.1)).toBe(true);
  for (let i = 0; i < c.G; i++) {
    const [o, l] = await Promise.all([got.out[i]!.toFloat32(), got.lse![i]!.toFloat32()]);
    let d = 0, dl = 0;
    for (let j = 0; j < r.length; j++) { const x = Math.abs(o[j]! - r[j]!); if (!(x <= d)) d = x; }
    for (let j = 0; j < rl.length; j++) { if (rl[j] === l[j]) continue; const x = Math.abs(l[j]! - rl[j]!); if (!(x <= dl)) dl = x; }
    expect(d).toBeLessThan(dtype === 'f32' ? 2e-5 : 2e-2);
    expect(dl).toBeLessThan(dtype === 'f32' ? 2e-5 : 1e-2);
  }
  sh.dispose();
  one.dispose();
}

describe('shardedPagedAttention on virtual ranks equals pagedAttention on one cache', () => {
  for (const G of [1, 2, 3, 4]) {
    it(`G = ${G}: causal, 1 and 4 query tokens, sequences of 1 to 3000 tokens (GQA 4/2)`, async () => {
      await check({ G, lens: [1, 33, 3000, 70], m: 1, chunk: 64 });
      await check({ G, lens: [5, 3000, 130, 2], m: 4, chunk: 64 });
    });
    it(`G = ${G}: softcap, sliding window, a relative score mod, bf16`, async () => {
      await check({ G, lens: [3, 200, 97], m: 4, scoreMod: softcap(3) });
      await check({ G, lens: [150, 31, 1], m: 4, maskMod: slidingWindow(40) });
      const rel = scoreMod(({ score, b, q, kv }) => score.add(q.sub(kv).toFloat().mul(0.01)).add(b.toFloat().mul(0.3)));
      await check({ G, lens: [64, 65, 9], m: 2, scoreMod: rel, causal: false });
      await check({ G, lens: [100, 7], m: 4, dtype: 'bf16', chunk: 16 });
    });
  }
});

describe('LSE merge', () => {
  it('weights: logaddexp, −∞ sides, NaN', () => {
    const w = mergeWeights(Math.log(2), Math.log(6));
    expect(w.lse).toBeCloseTo(Math.log(8), 12);
    expect(w.wAcc).toBeCloseTo(0.25, 12);
    expect(w.wPart).toBeCloseTo(0.75, 12);
    expect(mergeWeights(-Infinity, 1)).toEqual({ lse: 1, wAcc: 0, wPart: 1 });
    expect(mergeWeights(1, -Infinity)).toEqual({ lse: 1, wAcc: 1, wPart: 0 });
    expect(mergeWeights(-Infinity, -Infinity).lse).toBe(-Infinity);
    expect(Number.isNaN(mergeWeights(NaN, 1).lse)).toBe(true);
    expect(Number.isNaN(mergeWeights(1, NaN).lse)).toBe(true);
  });
  it('merges into an fp32 accumulator: rows offset, masked parts read nothing, NaN propagates', async () => {
    const { acc, lse } = emptyAccumulator(1, 1, 4, 2, 'cpu');
    // Part 1 at rows 0..1; part 2 at rows 1..2 with row 2 fully masked but garbage (NaN) in its output.
    const p1 = { out: Tensor.fromHost(new Float32Array([1, 2, 3, 4]), [1, 1, 2, 2], 'f32', cpu),
      lse: Tensor.fromHost(new Float32Array([0, Math.log(3)]), [1, 1, 2], 'f32', cpu), rowOffset: 0 };
    const p2 = { out: Tensor.fromHost(new Float32Array([7, 8, NaN, NaN]), [1, 1, 2, 2], 'f32', cpu),
      lse: Tensor.fromHost(new Float32Array([Math.log(1), -Infinity]), [1, 1, 2], 'f32', cpu), rowOffset: 1 };
    mergeInto(acc, lse, p1);
    mergeInto(acc, lse, p2);
    const o = await acc.toFloat32(), l = await lse.toFloat32();
    expect(Array.from(o.slice(0, 2))).toEqual([1, 2]);
    expect(o[2]).toBeCloseTo(0.75 * 3 + 0.25 * 7, 6);
    expect(o[3]).toBeCloseTo(0.75 * 4 + 0.25 * 8, 6);
    expect(Array.from(o.slice(4))).toEqual([0, 0, 0, 0]);
    expect(l[1]).toBeCloseTo(Math.log(4), 6);
    expect(l[2]).toBe(-Infinity);
    expect(l[3]).toBe(-Infinity);
    // A NaN LSE (a NaN score on one device) poisons the merged row.
    mergeInto(acc, lse, { out: Tensor.fromHost(new Float32Array([1, 1]), [1, 1, 1, 2], 'f32', cpu),
      lse: Tensor.fromHost(new Float32Array([NaN]), [1, 1, 1], 'f32', cpu), rowOffset: 0 });
    const o2 = await acc.toFloat32();
    expect(Number.isNaN(o2[0]!) && Number.isNaN(o2[1]!)).toBe(true);
    expect(Number.isNaN((await lse.toFloat32())[0]!)).toBe(true);
    // bf16 partials are widened; strided partials read through their strides.
    const bf = Tensor.fromHost(new Float32Array([5, 6, 9, 9]), [1, 1, 2, 2], 'bf16', cpu).transpose(2, 3).transpose(2, 3);
    mergeInto(acc, lse, { out: bf.narrow(2, 0, 1), lse: Tensor.fromHost(new Float32Array([0]), [1, 1, 1], 'f32', cpu), rowOffset: 3 });
    expect(Array.from((await acc.toFloat32()).slice(6))).toEqual([5, 6]);
  });
});

describe('ShardedKvCache: distribution and bad input', () => {
  it('round-robin chunks: place() and local lengths', async () => {
    const t = createVirtualTransport({ size: 3, device: 'cpu' });
    const sh = new ShardedKvCache({ transport: t, chunkTokens: 4, pageSize: 2, numPages: 64, numKvHeads: 1, headDim: 2, dtype: 'f32' });
    expect(sh.place(0)).toEqual({ rank: 0, local: 0 });
    expect(sh.place(5)).toEqual({ rank: 1, local: 1 });
    expect(sh.place(13)).toEqual({ rank: 0, local: 5 });
    const s = sh.newSequence();
    const k = Tensor.fromHost(Float32Array.from({ length: 30 }, (_, i) => i), [15, 1, 2], 'f32', cpu);
    await sh.append([s], k, k, { tokens: [15] });
    expect([0, 1, 2].map((i) => sh.localLength(s, i))).toEqual([7, 4, 4]);
    // Rank 0 holds tokens 0..3 and 12..14.
    const pool = await sh.caches[0]!.keys.toFloat32();
    const page = sh.caches[0]!.pageTable(sh.localSequence(s, 0));
    const tok = (l: number) => pool[(page[Math.floor(l / 2)]! * 2 + (l % 2)) * 2]!;
    expect([0, 1, 2, 3, 4, 5, 6].map(tok)).toEqual([0, 2, 4, 6, 24, 26, 28]);
    await expect(shardedPagedAttention(Tensor.zeros([2, 1, 2], 'f32', cpu), sh, { seqs: [s], queryTokens: [1] })).rejects.toThrow(ShapeError);
    await expect(shardedPagedAttention([Tensor.zeros([1, 1, 2], 'f32', cpu)], sh, { seqs: [s], queryTokens: [1] })).rejects.toThrow(/3 tensors/);
    expect(() => sh.length(99)).toThrow(UnknownSequenceError);
    sh.free(s);
    expect(() => sh.length(s)).toThrow(UnknownSequenceError);
    sh.dispose();
  });
});
