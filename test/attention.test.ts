// attention(): one spec, two implementations. Every case that makes sense for
// both runs for both (describe.each over 'sdpa' and 'flex') against the
// double-precision oracle with an explicit keep predicate, and the two
// implementations are compared with each other. CPU reference backend.
import { afterEach, describe, expect, it } from 'vitest';
import {
  Tensor, attention, explainAttention, attentionCacheStats, clearAttentionCache, configureAttentionCache, maskMod,
  alibiSlopes, docIdsFromOffsets, fromBf16, param, InvalidArgumentError, ShapeError, DTypeError, DisposedError, scoreMod,
  type AttentionSpec, type ImageSpan,
} from '../lib/index.js';
import { randnArray, referenceAttention, relError } from './reference.js';

const cpu = { device: 'cpu' as const };
type Impl = 'sdpa' | 'flex';
type Keep = (b: number, h: number, q: number, kv: number) => boolean;

interface Dims { B: number; Hq: number; Hkv: number; Sq: number; Skv: number; D: number }

/** bf16 CPU tensors plus the exact float values the oracle sees. */
function inputs(d: Dims, seed: number) {
  const mk = (H: number, S: number, s: number) => {
    const t = Tensor.fromHost(randnArray(d.B * H * S * d.D, s), [d.B, H, S, d.D], 'bf16', cpu);
    return { t, f: fromBf16(t.hostStorage() as Uint16Array) };
  };
  const q = mk(d.Hq, d.Sq, seed), k = mk(d.Hkv, d.Skv, seed + 1), v = mk(d.Hkv, d.Skv, seed + 2);
  return { q: q.t, k: k.t, v: v.t, qf: q.f, kf: k.f, vf: v.f };
}

interface Case {
  name: string;
  dims: Dims;
  /** Builds the spec (tensors it captures are created here). */
  spec: () => Omit<AttentionSpec, 'impl'>;
  keep?: Keep;
  scoreMod?: (s: number, b: number, h: number, q: number, kv: number) => number;
}

const base: Dims = { B: 2, Hq: 4, Hkv: 2, Sq: 160, Skv: 160, D: 32 };

// Packed documents, one layout per batch element (a one-token document included).
const docOffsets = [[0, 37, 100, 101, 130], [0, 64, 65]];
const docHost = new Int32Array(base.B * base.Sq);
docOffsets.forEach((o, b) => docHost.set(docIdsFromOffsets(o, base.Sq), b * base.Sq));
const doc = (b: number, i: number) => docHost[b * base.Sq + i]!;

const spans: ImageSpan[] = [{ start: 10, length: 40 }, { start: 90, length: 33 }];
const inSameSpan = (list: readonly ImageSpan[], q: number, kv: number) =>
  list.some((s) => q >= s.start && q < s.start + s.length && kv >= s.start && kv < s.start + s.length);
const perBatchSpans: ImageSpan[][] = [spans, [{ start: 0, length: 16 }, { start: 150, length: 10 }]];

// Mixture-of-transformers style: 0 = text (causal), 1 = image (bidirectional within
// its modality run), 2 = audio (sees only audio, causally); captured modality ids.
const modHost = Int32Array.from({ length: base.Sq }, (_, i) => (i >= 20 && i < 70 ? 1 : i >= 110 && i < 140 ? 2 : 0));
function modalityMask(ids: Tensor) {
  return maskMod(({ q, kv }) => {
    const mq = ids.at(q), mk = ids.at(kv);
    const text = mq.eq(0).and(kv.le(q)).and(mk.ne(2));
    const image = mq.eq(1).and(mk.eq(1).or(kv.le(q).and(mk.ne(2))));
    const audio = mq.eq(2).and(mk.eq(2)).and(kv.le(q));
    return text.or(image).or(audio);
  });
}
const modalityKeep: Keep = (_b, _h, q, kv) => {
  const mq = modHost[q]!, mk = modHost[kv]!;
  if (mq === 0) return kv <= q && mk !== 2;
  if (mq === 1) return mk === 1 || (kv <= q && mk !== 2);
  return mk === 2 && kv <= q;
};

// A runtime param inside a mask (spec.params): a kernel argument, part of the cache key.
const maskW = param('w', 'int');

const cases: Case[] = [
  { name: 'plain (no mask)', dims: base, spec: () => ({}) },
  { name: 'causal', dims: base, spec: () => ({ isCausal: true }), keep: (_b, _h, q, kv) => kv <= q },
  { name: 'GQA 8:1, causal, odd length', dims: { ...base, B: 1, Hq: 8, Hkv: 1, Sq: 77, Skv: 77 },
    spec: () => ({ isCausal: true }), keep: (_b, _h, q, kv) => kv <= q },
  { name: 'packed documents (docIds [B, S], causal)', dims: base,
    spec: () => ({ isCausal: true, docIds: Tensor.fromHost(docHost, [base.B, base.Sq], 'i32', cpu) }),
    keep: (b, _h, q, kv) => kv <= q && doc(b, q) === doc(b, kv) },
  { name: 'packed documents (docIds [S], bidirectional)', dims: base,
    spec: () => ({ docIds: Tensor.fromHost(docHost.subarray(0, base.Sq), [base.Sq], 'i32', cpu) }),
    keep: (_b, _h, q, kv) => doc(0, q) === doc(0, kv) },
  { name: 'sliding window 24', dims: base, spec: () => ({ isCausal: true, slidingWindow: 24 }),
    keep: (_b, _h, q, kv) => kv <= q && q - kv < 24 },
  { name: 'sliding window {window: 17, lookahead: 5}', dims: base, spec: () => ({ slidingWindow: { window: 17, lookahead: 5 } }),
    keep: (_b, _h, q, kv) => q - kv < 17 && kv - q <= 5 },
  { name: 'sliding window within documents', dims: base,
    spec: () => ({ isCausal: true, slidingWindow: 20, docIds: Tensor.fromHost(docHost, [base.B, base.Sq], 'i32', cpu) }),
    keep: (b, _h, q, kv) => kv <= q && q - kv < 20 && doc(b, q) === doc(b, kv) },
  { name: 'prefix LM 50', dims: base, spec: () => ({ prefixLM: 50 }), keep: (_b, _h, q, kv) => kv < 50 || kv <= q },
  { name: 'image spans (shared)', dims: base, spec: () => ({ imageSpans: spans }),
    keep: (_b, _h, q, kv) => kv <= q || inSameSpan(spans, q, kv) },
  { name: 'image spans (per batch element)', dims: base, spec: () => ({ imageSpans: perBatchSpans, isCausal: true }),
    keep: (b, _h, q, kv) => kv <= q || inSameSpan(perBatchSpans[b]!, q, kv) },
  { name: 'cross-attention Sq < Skv, no mask', dims: { ...base, Sq: 50, Skv: 210 }, spec: () => ({}) },
  { name: 'cross-attention Sq > Skv with GQA, custom scale', dims: { ...base, Hq: 4, Hkv: 1, Sq: 190, Skv: 33 },
    spec: () => ({ scale: 0.3 }) },
  { name: 'cross-attention with a key-padding maskMod (per batch)', dims: { ...base, Sq: 40, Skv: 150 },
    spec: () => {
      const lens = Tensor.fromHost(new Int32Array([150, 97]), [2], 'i32', cpu);
      return { maskMod: maskMod(({ b, kv }) => kv.lt(lens.at(b))) };
    },
    keep: (b, _h, _q, kv) => kv < (b === 0 ? 150 : 97) },
  { name: 'custom maskMod: per-modality rule over captured modality ids (mixture of transformers)', dims: base,
    spec: () => ({ maskMod: modalityMask(Tensor.fromHost(modHost, [base.Sq], 'i32', cpu)) }), keep: modalityKeep },
  { name: 'custom maskMod reading the head (per-head windows) with a param', dims: base,
    spec: () => ({ maskMod: maskMod(({ h, q, kv }) => kv.le(q).and(q.sub(kv).lt(h.add(1).mul(maskW)))), params: { w: 9 } }),
    keep: (_b, h, q, kv) => kv <= q && q - kv < (h + 1) * 9 },
];

async function run(c: Case, impl: Impl, seed: number) {
  const x = inputs(c.dims, seed);
  const out = await attention(x.q, x.k, x.v, { ...c.spec(), impl, enableGQA: true, returnLse: true });
  return { x, out: await out.out.toFloat32(), lse: await out.lse.toFloat32() };
}

function oracle(c: Case, x: ReturnType<typeof inputs>, scale?: number) {
  return referenceAttention({ ...c.dims, Dv: c.dims.D, q: x.qf, k: x.kf, v: x.vf, scale: scale ?? 1 / Math.sqrt(c.dims.D),
    ...(c.keep ? { keep: c.keep } : {}), ...(c.scoreMod ? { scoreMod: c.scoreMod } : {}) });
}

afterEach(() => configureAttentionCache({ maxEntries: 32, maxDenseBytes: 2 ** 30 }));

describe.each(['sdpa', 'flex'] as const)('attention impl %s (cpu) vs the oracle', (impl) => {
  it.each(cases.map((c, i) => [c.name, c, i] as const))('%s', async (_name, c, i) => {
    const { x, out, lse } = await run(c, impl, 100 + i);
    const spec = c.spec();
    const ref = oracle(c, x, spec.scale);
    expect(relError(out, ref.out)).toBeLessThan(1e-2);
    for (let r = 0; r < lse.length; r++) {
      if (ref.lse[r] === -Infinity) expect(lse[r]).toBe(-Infinity);
      else expect(Math.abs(lse[r]! - ref.lse[r]!)).toBeLessThan(1e-3 * Math.max(1, Math.abs(ref.lse[r]!)));
    }
  });

  it('document packing from docIds is exactly the block-diagonal causal result (each document run alone)', async () => {
    const S = 200, D = 32, H = 2;
    const offsets = [0, 37, 100, 101, 170];
    const ids = docIdsFromOffsets(offsets, S);
    const mk = (seed: number) => Tensor.fromHost(randnArray(H * S * D, seed), [1, H, S, D], 'f32', cpu);
    const q = mk(1), k = mk(2), v = mk(3);
    const docIds = Tensor.fromHost(ids, [1, S], 'i32', cpu);
    const packed = await (await attention(q, k, v, { impl, isCausal: true, docIds })).toFloat32();
    const bounds = [...offsets, S];
    for (let i = 0; i < offsets.length; i++) {
      const s = bounds[i]!, len = bounds[i + 1]! - s;
      const alone = await (await attention(q.narrow(2, s, len), k.narrow(2, s, len), v.narrow(2, s, len), { impl, isCausal: true })).toFloat32();
      for (let h = 0; h < H; h++) {
        const got = packed.subarray((h * S + s) * D, (h * S + s + len) * D);
        const want = alone.subarray(h * len * D, (h + 1) * len * D);
        let maxDiff = 0;
        for (let j = 0; j < want.length; j++) maxDiff = Math.max(maxDiff, Math.abs(got[j]! - want[j]!));
        expect(maxDiff, `document ${i} head ${h}`).toBeLessThan(1e-6);
      }
    }
    // No leakage at all: rewriting another document's keys and values changes nothing, bit for bit.
    const k2 = await k.toFloat32(), v2 = await v.toFloat32();
    for (let h = 0; h < H; h++) for (let t = 37; t < 100; t++) for (let d = 0; d < D; d++) {
      k2[(h * S + t) * D + d] = 100; v2[(h * S + t) * D + d] = -1000;
    }
    const again = await (await attention(q, Tensor.fromHost(k2, [1, H, S, D], 'f32', cpu), Tensor.fromHost(v2, [1, H, S, D], 'f32', cpu),
      { impl, isCausal: true, docIds })).toFloat32();
    for (let h = 0; h < H; h++) for (let t = 0; t < S; t++) {
      if (t >= 37 && t < 100) continue;
      for (let d = 0; d < D; d++) expect(again[(h * S + t) * D + d]).toBe(packed[(h * S + t) * D + d]);
    }
  });

  it('the mask is built once and reused from the cache', async () => {
    clearAttentionCache();
    const x = inputs(base, 7);
    const docIds = Tensor.fromHost(docHost, [base.B, base.Sq], 'i32', cpu);
    const spec: AttentionSpec = { impl, isCausal: true, docIds, enableGQA: true };
    const a = await (await attention(x.q, x.k, x.v, spec) as Tensor).toFloat32();
    expect(attentionCacheStats()).toMatchObject({ entries: 1, misses: 1, hits: 0, builds: 1 });
    for (let i = 0; i < 3; i++) await attention(x.q, x.k, x.v, spec);
    expect(attentionCacheStats()).toMatchObject({ entries: 1, misses: 1, hits: 3, builds: 1 });
    const st = attentionCacheStats();
    if (impl === 'sdpa') expect(st.denseBytes).toBe(base.B * base.Sq * base.Skv); // [B, 1, Sq, Skv] bool
    else expect(st.denseBytes).toBe(0);
    // docIds are keyed by identity: equal values in a new tensor build a new mask
    const b = await (await attention(x.q, x.k, x.v, { ...spec, docIds: Tensor.fromHost(docHost, [base.B, base.Sq], 'i32', cpu) }) as Tensor).toFloat32();
    expect(attentionCacheStats()).toMatchObject({ entries: 2, builds: 2 });
    expect(b).toEqual(a);
    // another shape or another window is another entry; plain causal needs no mask at all
    await attention(x.q, x.k, x.v, { impl, isCausal: true, slidingWindow: 8, enableGQA: true });
    await attention(x.q, x.k, x.v, { impl, isCausal: true, slidingWindow: 9, enableGQA: true });
    await attention(x.q, x.k, x.v, { impl, isCausal: true, slidingWindow: 9, enableGQA: true });
    expect(attentionCacheStats()).toMatchObject({ entries: 4, builds: 4 });
    if (impl === 'sdpa') {
      await attention(x.q, x.k, x.v, { impl, isCausal: true, enableGQA: true });
      expect(attentionCacheStats().builds).toBe(4);
    }
    clearAttentionCache();
    expect(attentionCacheStats()).toMatchObject({ entries: 0, builds: 0, hits: 0 });
  });

  it('LRU: at most maxEntries masks; in-flight calls survive eviction', async () => {
    clearAttentionCache();
    configureAttentionCache({ maxEntries: 2 });
    const x = inputs({ ...base, B: 1 }, 8);
    for (const w of [4, 5, 6]) await attention(x.q, x.k, x.v, { impl, slidingWindow: w, enableGQA: true });
    expect(attentionCacheStats()).toMatchObject({ entries: 2, evictions: 1 });
    await attention(x.q, x.k, x.v, { impl, slidingWindow: 6, enableGQA: true }); // most recent: still there
    expect(attentionCacheStats()).toMatchObject({ entries: 2, builds: 3 });
    await attention(x.q, x.k, x.v, { impl, slidingWindow: 4, enableGQA: true }); // evicted: rebuilt
    expect(attentionCacheStats()).toMatchObject({ builds: 4 });
    // clearing while calls are in flight: they complete with the right result
    const want = await (await attention(x.q, x.k, x.v, { impl, slidingWindow: 11, enableGQA: true })).toFloat32();
    const pending = [12, 11, 13].map((w) => attention(x.q, x.k, x.v, { impl, slidingWindow: w, enableGQA: true }));
    clearAttentionCache();
    const got = await Promise.all(pending);
    expect(await got[1]!.toFloat32()).toEqual(want);
  });

  it('params of a custom mask are part of the key; maxDenseBytes bounds the dense masks', async () => {
    clearAttentionCache();
    const x = inputs({ ...base, B: 1 }, 9);
    const m = maskMod(({ q, kv }) => q.sub(kv).abs().le(maskW));
    const r3 = await attention(x.q, x.k, x.v, { impl, maskMod: m, params: { w: 3 }, enableGQA: true }) as Tensor;
    const r9 = await attention(x.q, x.k, x.v, { impl, maskMod: m, params: { w: 9 }, enableGQA: true }) as Tensor;
    await attention(x.q, x.k, x.v, { impl, maskMod: maskMod(({ q, kv }) => q.sub(kv).abs().le(maskW)), params: { w: 3 }, enableGQA: true });
    expect(attentionCacheStats()).toMatchObject({ builds: 2, hits: 1 }); // a re-traced equal mask hits
    expect(relError(await r3.toFloat32(), await r9.toFloat32())).toBeGreaterThan(1e-2);
    await expect(attention(x.q, x.k, x.v, { impl, maskMod: m, enableGQA: true })).rejects.toThrow(/params\.w/);
    if (impl === 'sdpa') {
      configureAttentionCache({ maxDenseBytes: base.Sq * base.Skv }); // room for one [1, 1, Sq, Skv] mask
      expect(attentionCacheStats().entries).toBe(1);
      await attention(x.q, x.k, x.v, { impl, slidingWindow: 3, enableGQA: true });
      expect(attentionCacheStats()).toMatchObject({ entries: 1, denseBytes: base.Sq * base.Skv });
    }
    clearAttentionCache();
  });
});

describe('sdpa and flex agree (bf16 tolerance)', () => {
  it.each(cases.map((c, i) => [c.name, c, i] as const))('%s', async (_name, c, i) => {
    const a = await run(c, 'sdpa', 300 + i);
    const b = await run(c, 'flex', 300 + i);
    expect(relError(a.out, b.out)).toBeLessThan(1e-2);
  });
});

describe('score mods (flex only)', () => {
  const d = base;
  it('softcap (Gemma 2) and ALiBi (Float32Array or tensor) match the oracle under flex and auto', async () => {
    const x = inputs(d, 40);
    const slopes = alibiSlopes(d.Hq);
    const specs: [AttentionSpec, (s: number, b: number, h: number, q: number, kv: number) => number][] = [
      [{ softcap: 2 }, (s) => 2 * Math.tanh(s / 2)],
      [{ alibiSlopes: slopes }, (s, _b, h, q, kv) => s + slopes[h]! * (kv - q)],
      [{ alibiSlopes: Tensor.fromHost(slopes, [d.Hq], 'f32', cpu), softcap: 3 }, (s, _b, h, q, kv) => 3 * Math.tanh((s + slopes[h]! * (kv - q)) / 3)],
    ];
    for (const [spec, sm] of specs) {
      for (const impl of ['flex', 'auto'] as const) {
        const seen: string[] = [];
        const r = await attention(x.q, x.k, x.v, { ...spec, impl, isCausal: true, enableGQA: true, onChoice: (c) => seen.push(c.impl) });
        expect(seen).toEqual(['flex']);
        const ref = referenceAttention({ ...d, Dv: d.D, q: x.qf, k: x.kf, v: x.vf, scale: 1 / Math.sqrt(d.D),
          keep: (_b, _h, q, kv) => kv <= q, scoreMod: sm });
        expect(relError(await (r as Tensor).toFloat32(), ref.out)).toBeLessThan(1e-2);
      }
    }
  });
  it('under impl sdpa: a typed error naming the option and pointing at impl flex', async () => {
    const x = inputs(d, 41);
    for (const spec of [{ softcap: 30 }, { alibiSlopes: alibiSlopes(d.Hq) }, { scoreMod: scoreMod(({ score }) => score.mul(2)) }]) {
      const name = Object.keys(spec)[0]!;
      const p = attention(x.q, x.k, x.v, { ...spec, enableGQA: true });
      await expect(p).rejects.toThrow(InvalidArgumentError);
      await expect(attention(x.q, x.k, x.v, { ...spec, impl: 'sdpa', enableGQA: true })).rejects.toThrow(new RegExp(`spec\\.${name}: expected impl: 'flex'`));
    }
  });
});

describe('explainAttention and FLEXATTN_KERNEL_FAMILY=sm90ws', () => {
  it('names the sm90ws family for maskless sdpa and flex with Sq, Skv >= 128, and says why it is not used below that', () => {
    const before = process.env.FLEXATTN_KERNEL_FAMILY;
    try {
      const big = { q: [1, 8, 1531, 128], k: [1, 2, 4096, 128] };
      delete process.env.FLEXATTN_KERNEL_FAMILY;
      expect(explainAttention({ isCausal: true }, big).reason).not.toMatch(/sm90ws/);
      process.env.FLEXATTN_KERNEL_FAMILY = 'sm90ws';
      expect(explainAttention({ isCausal: true, enableGQA: true }, big).reason).toMatch(/family sm90ws.*FLEXATTN_UNVERIFIED_GPU_PATHS=1\) runs it/);
      expect(explainAttention({ enableGQA: true }, { q: [1, 8, 77, 64], k: [1, 2, 4096, 64] }).reason)
        .toMatch(/sm90ws.*not used for Sq=77, Skv=4096.*sm90 kernel/);
      // flex: the family too, with what it does not do (no 64x64 schedule, segmented grid, CTA order)
      expect(explainAttention({ impl: 'flex', isCausal: true, enableGQA: true }, big).reason)
        .toMatch(/family sm90ws.* runs it \(flex: it walks the 128×128 block mask's own lists.*no 64×64 schedule, segmented document grid or CTA order/);
      delete process.env.FLEXATTN_KERNEL_FAMILY;
      expect(explainAttention({ impl: 'flex', isCausal: true }, big).reason).not.toMatch(/sm90ws/);
    } finally {
      if (before === undefined) delete process.env.FLEXATTN_KERNEL_FAMILY;
      else process.env.FLEXATTN_KERNEL_FAMILY = before;
    }
  });
});

describe("impl 'auto'", () => {
  it('picks sdpa for plain / causal / cross-attention, flex for masks beyond causal and score mods, and reports why', async () => {
    expect(explainAttention({ impl: 'auto' })).toMatchObject({ impl: 'sdpa', requested: 'auto' });
    expect(explainAttention({ impl: 'auto', isCausal: true })).toMatchObject({ impl: 'sdpa', reason: expect.stringMatching(/causal/) });
    expect(explainAttention({ impl: 'auto', slidingWindow: 128 })).toMatchObject({ impl: 'flex', reason: expect.stringMatching(/slidingWindow/) });
    expect(explainAttention({ impl: 'auto', prefixLM: 4 }).impl).toBe('flex');
    expect(explainAttention({ impl: 'auto', imageSpans: spans }).impl).toBe('flex');
    expect(explainAttention({ impl: 'auto', maskMod: modalityMask(Tensor.fromHost(modHost, [base.Sq], 'i32', cpu)) }).impl).toBe('flex');
    expect(explainAttention({ impl: 'auto', softcap: 50 })).toMatchObject({ impl: 'flex', reason: expect.stringMatching(/softcap/) });
    expect(explainAttention({})).toMatchObject({ impl: 'sdpa', requested: 'sdpa' });
    expect(explainAttention({ impl: 'flex' })).toMatchObject({ impl: 'flex', requested: 'flex' });
    expect(() => explainAttention({ softcap: 50 })).toThrow(/spec.softcap/);
    const docIds = Tensor.fromHost(docHost, [base.B, base.Sq], 'i32', cpu);
    expect(() => explainAttention({ impl: 'auto', docIds }, { q: [2, 4, 100, 32], k: [2, 4, 100, 32] })).toThrow(ShapeError);

    const x = inputs(base, 50);
    const choices: string[] = [];
    const onChoice = (c: { impl: string }) => choices.push(c.impl);
    await attention(x.q, x.k, x.v, { impl: 'auto', isCausal: true, enableGQA: true, onChoice });
    await attention(x.q, x.k, x.v, { impl: 'auto', isCausal: true, docIds, enableGQA: true, onChoice });
    expect(choices).toEqual(['sdpa', 'flex']);
  });
});

describe('bad input: typed errors naming the option; the process keeps working', () => {
  const x = inputs(base, 60);
  const call = (spec: unknown) => (typeof spec === 'object'
    ? attention(x.q, x.k, x.v, { enableGQA: true, ...(spec as AttentionSpec) })
    : attention(x.q, x.k, x.v, spec as AttentionSpec));
  const ids = (data: Int32Array, shape: number[], dtype: 'i32' | 'f32' = 'i32') =>
    dtype === 'i32' ? Tensor.fromHost(data, shape, 'i32', cpu) : Tensor.fromHost(Float32Array.from(data), shape, 'f32', cpu);

  it.each([
    ['unknown impl', { impl: 'triton' }, InvalidArgumentError, /spec\.impl: expected 'sdpa', 'flex' or 'auto'/],
    ['unknown spec key', { causal: true }, InvalidArgumentError, /spec\.causal: expected one of the known spec options/],
    ['docIds of dtype f32', { docIds: ids(docHost, [2, 160], 'f32') }, DTypeError, /spec\.docIds: expected dtype i32/],
    ['docIds of the wrong length', { docIds: ids(docHost.subarray(0, 150), [150]) }, ShapeError, /spec\.docIds: expected length 160/],
    ['docIds of the wrong batch size', { docIds: ids(new Int32Array(480), [3, 160]) }, ShapeError, /spec\.docIds: expected batch size 2/],
    ['docIds of rank 3', { docIds: ids(docHost, [2, 1, 160]) }, ShapeError, /spec\.docIds/],
    ['docIds not a tensor', { docIds: docHost }, InvalidArgumentError, /spec\.docIds: expected a Tensor/],
    ['negative window', { slidingWindow: -4 }, InvalidArgumentError, /spec\.slidingWindow: expected a positive integer/],
    ['zero window', { slidingWindow: 0 }, InvalidArgumentError, /spec\.slidingWindow/],
    ['non-integer window', { slidingWindow: { window: 2.5 } }, InvalidArgumentError, /spec\.slidingWindow\.window/],
    ['negative lookahead', { slidingWindow: { window: 8, lookahead: -1 } }, InvalidArgumentError, /spec\.slidingWindow\.lookahead/],
    ['lookahead with isCausal', { isCausal: true, slidingWindow: { window: 8, lookahead: 2 } }, InvalidArgumentError, /spec\.slidingWindow\.lookahead/],
    ['negative prefixLM', { prefixLM: -1 }, InvalidArgumentError, /spec\.prefixLM/],
    ['overlapping image spans', { imageSpans: [{ start: 0, length: 10 }, { start: 5, length: 10 }] }, InvalidArgumentError,
      /spec\.imageSpans: expected non-overlapping image spans/],
    ['image span past the sequence', { imageSpans: [{ start: 150, length: 11 }] }, InvalidArgumentError, /spec\.imageSpans\[0\]: expected a span inside the sequence/],
    ['image span with a negative start', { imageSpans: [{ start: -1, length: 3 }] }, InvalidArgumentError, /spec\.imageSpans\[0\]\.start/],
    ['per-batch spans for the wrong batch size', { imageSpans: [[{ start: 0, length: 3 }]] }, ShapeError, /spec\.imageSpans: expected one span list per batch/],
    ['softcap not positive', { impl: 'flex', softcap: 0 }, InvalidArgumentError, /spec\.softcap/],
    ['alibi slopes of the wrong length', { impl: 'flex', alibiSlopes: new Float32Array(3) }, ShapeError, /spec\.alibiSlopes: expected 4 slopes/],
    ['maskMod that is a function', { maskMod: () => true }, InvalidArgumentError, /spec\.maskMod/],
    ['isCausal not a boolean', { isCausal: 1 }, InvalidArgumentError, /spec\.isCausal/],
    ['unknown backend', { backend: 'tpu' }, InvalidArgumentError, /spec\.backend/],
    ['spec not an object', 'causal', InvalidArgumentError, /spec: expected an attention spec object/],
  ] as const)('%s', async (_name, spec, type, message) => {
    await expect(call(spec)).rejects.toThrow(type);
    await expect(call(spec)).rejects.toThrow(message);
  });

  it('docIds need self-attention (Sq == Skv); a disposed docIds tensor is named', async () => {
    const y = inputs({ ...base, Sq: 40 }, 61);
    await expect(attention(y.q, y.k, y.v, { enableGQA: true, docIds: Tensor.fromHost(docHost, [2, 160], 'i32', cpu) }))
      .rejects.toThrow(/spec\.docIds: expected self-attention \(Sq == Skv\)/);
    const d = Tensor.fromHost(docHost, [2, 160], 'i32', cpu);
    d.dispose();
    await expect(call({ docIds: d })).rejects.toThrow(DisposedError);
    const ok = await call({ impl: 'flex', isCausal: true, docIds: Tensor.fromHost(docHost, [2, 160], 'i32', cpu) });
    expect((await (ok as Tensor).toFloat32()).some(Number.isNaN)).toBe(false);
  });
});
