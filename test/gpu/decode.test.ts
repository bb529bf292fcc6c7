// The decode / ragged kernel (native/kernels/decode.cuh) against a float64 JS
// reference on random data: flexAttention / SDPA with few query tokens (which
// take it), and runRaggedAttentionCuda over paged (random page order, slack
// poisoned with NaN), contiguous [B,S,H,D] and packed varlen KV. Outputs are
// poisoned before each run (the allocator hands them a NaN-filled block).
// The kv range (masks of known structure) and the block-sparse walk (a
// BlockMask through flexAttention) are checked by putting NaN in K and V
// wherever the kernel must not read: a NaN value in any tile the kernel
// visits reaches the row (0 · NaN), so a tile read outside the range or
// outside the lists fails the comparison; a range or walk that missed a
// visible key fails it too.
import { expect, it } from 'vitest';
import {
  BlockMask, Tensor, andMasks, causal, createBlockMask, flexAttention, jitStatus, maskMod, orMasks, prefixLM, scaledDotProductAttention,
  slidingWindow, softcap, DTypeError, InvalidArgumentError, ShapeError, type DType, type MaskMod, type ScoreMod,
} from '../../lib/index.js';
import { DECODE_TILE } from '../../lib/cuda/plan-decode.js';
import { fromBf16, fromF16, toBf16, toF16 } from '../../lib/dtype.js';
import { runDecodeContiguous, runRaggedAttentionCuda } from '../../lib/cuda/run-ragged.js';
import type { RaggedKv } from '../../lib/serving/paged-kv.js';
import { describeGpu } from '../gpu-gate.js';
import { randnArray, referenceAttention, rng } from '../reference.js';
import { compare as compareWith } from '../gpu-compare.js';

const gpu = { device: 'cuda:0' as const };
const TOL = 1e-2;

/** Fills the allocator's cached block of this size with NaN so unwritten outputs show. */
function poison(numel: number, dtype: DType): void {
  Tensor.fromHost(new Uint16Array(numel).fill(0x7fc0), [numel], dtype === 'f32' ? 'bf16' : dtype, gpu).dispose();
  Tensor.fromHost(new Float32Array(numel).fill(NaN), [numel], 'f32', gpu).dispose();
}

/** Values as the GPU sees them (rounded to dtype), so the reference starts from the same inputs. */
function rounded(a: Float32Array, dtype: DType): Float32Array {
  return dtype === 'f16' ? fromF16(toF16(a)) : fromBf16(toBf16(a));
}
function randn(n: number, seed: number, dtype: DType, scale = 1): Float32Array {
  const a = randnArray(n, seed);
  if (scale !== 1) for (let i = 0; i < n; i++) a[i]! *= scale;
  return rounded(a, dtype);
}

function compare(got: Float32Array, want: Float64Array, tol = TOL, what = 'out'): number {
  return compareWith(got, want, tol, what);
}

function compareLse(got: Float32Array, want: Float64Array): void {
  expect(got.length).toBe(want.length);
  let bad = -1;
  for (let i = 0; i < want.length && bad < 0; i++) {
    const w = want[i]!, g = got[i]!;
    const ok = Number.isNaN(w) ? Number.isNaN(g) : !Number.isFinite(w) ? g === w : Math.abs(g - w) < 2e-2 * Math.max(1, Math.abs(w));
    if (!ok) bad = i;
  }
  expect(bad, bad < 0 ? '' : `LSE at ${bad}: got ${got[bad]}, want ${want[bad]}`).toBe(-1);
}

async function decodeKernelsLoaded(): Promise<string[]> {
  return (await jitStatus()).map((k) => k.kernel).filter((k) => k.startsWith('flexattn_decode'));
}

// ---------------------------------------------------------------------------
// Ragged batches: the float64 reference and the three KV layouts.

interface SeqSpec { n: number; m: number }

interface RaggedRefIn {
  q: Float32Array;                 // [T, Hq, D]
  k: Float32Array[]; v: Float32Array[];  // per sequence [n, Hkv, D]
  seqs: SeqSpec[]; Hq: number; Hkv: number; D: number; scale: number; causal: boolean;
  scoreMod?: (s: number, b: number, h: number, q: number, kv: number) => number;
  keep?: (b: number, h: number, q: number, kv: number) => boolean;
}

/** out [T, Hq, D] and LSE [T, Hq]: query token i of sequence s at position n - m + i (end-aligned). */
function raggedReference(r: RaggedRefIn): { out: Float64Array; lse: Float64Array } {
  const T = r.seqs.reduce((a, s) => a + s.m, 0);
  const { Hq, Hkv, D } = r;
  const G = Hq / Hkv;
  const out = new Float64Array(T * Hq * D), lse = new Float64Array(T * Hq);
  let t0 = 0;
  r.seqs.forEach((sq, s) => {
    const sc = new Float64Array(sq.n);
    for (let i = 0; i < sq.m; i++) {
      const pos = sq.n - sq.m + i, row = t0 + i;
      for (let h = 0; h < Hq; h++) {
        const hk = Math.floor(h / G);
        let mx = -Infinity;
        for (let j = 0; j < sq.n; j++) {
          if ((r.causal && j > pos) || (r.keep && !r.keep(s, h, pos, j))) { sc[j] = -Infinity; continue; }
          let dot = 0;
          const qo = (row * Hq + h) * D, ko = (j * Hkv + hk) * D;
          for (let d = 0; d < D; d++) dot += r.q[qo + d]! * r.k[s]![ko + d]!;
          let x = dot * r.scale;
          if (r.scoreMod) x = r.scoreMod(x, s, h, pos, j);
          sc[j] = x;
          if (x > mx || Number.isNaN(x)) mx = Number.isNaN(mx) ? mx : x;
        }
        const o = (row * Hq + h) * D;
        if (mx === -Infinity) { lse[row * Hq + h] = -Infinity; continue; }
        let sum = 0;
        for (let j = 0; j < sq.n; j++) { sc[j] = Math.exp(sc[j]! - mx); sum += sc[j]!; }
        lse[row * Hq + h] = mx + Math.log(sum);
        for (let j = 0; j < sq.n; j++) {
          const p = sc[j]! / sum;
          if (p === 0) continue;
          const vo = (j * Hkv + hk) * D;
          for (let d = 0; d < D; d++) out[o + d] += p * r.v[s]![vo + d]!;
        }
      }
    }
    t0 += sq.m;
  });
  return { out, lse };
}

interface Batch { seqs: SeqSpec[]; Hq: number; Hkv: number; D: number; dtype: DType; seed: number }

function hostBatch(b: Batch) {
  const T = b.seqs.reduce((a, s) => a + s.m, 0);
  const k = b.seqs.map((s, i) => randn(s.n * b.Hkv * b.D, b.seed * 100 + 2 * i, b.dtype));
  const v = b.seqs.map((s, i) => randn(s.n * b.Hkv * b.D, b.seed * 100 + 2 * i + 1, b.dtype));
  const q = randn(T * b.Hq * b.D, b.seed * 100 + 99, b.dtype);
  const queryStartHost = new Int32Array(b.seqs.length + 1);
  b.seqs.forEach((s, i) => { queryStartHost[i + 1] = queryStartHost[i]! + s.m; });
  const seqLensHost = Int32Array.from(b.seqs.map((s) => s.n));
  return { T, q, k, v, queryStartHost, seqLensHost };
}

type Host = ReturnType<typeof hostBatch>;

function lengths(b: Batch, h: Host): Pick<RaggedKv, 'seqLens' | 'queryStart' | 'numSeqs' | 'maxSeqLen' | 'maxQueryTokens' | 'seqLensHost' | 'queryStartHost'> {
  return {
    seqLens: Tensor.fromHost(h.seqLensHost, [b.seqs.length], 'i32', gpu),
    queryStart: Tensor.fromHost(h.queryStartHost, [b.seqs.length + 1], 'i32', gpu),
    numSeqs: b.seqs.length, maxSeqLen: Math.max(0, ...b.seqs.map((s) => s.n)), maxQueryTokens: Math.max(0, ...b.seqs.map((s) => s.m)),
    seqLensHost: h.seqLensHost, queryStartHost: h.queryStartHost,
  };
}

/** A paged pool in random page order; page slack and unused pages hold NaN (the kernel must never read them). */
function pagedKv(b: Batch, h: Host, pageSize: number, seed: number): RaggedKv {
  const { Hkv, D } = b;
  const pagesPer = b.seqs.map((s) => Math.ceil(s.n / pageSize));
  const total = pagesPer.reduce((a, x) => a + x, 0) + 3;
  const r = rng(seed);
  const order = [...Array(total).keys()];
  for (let i = total - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); [order[i], order[j]] = [order[j]!, order[i]!]; }
  const maxPages = Math.max(1, ...pagesPer);
  const table = new Int32Array(b.seqs.length * maxPages).fill(-1);
  let next = 0;
  pagesPer.forEach((np, s) => { for (let p = 0; p < np; p++) table[s * maxPages + p] = order[next++]!; });
  const pool = (src: Float32Array[]) => {
    const a = new Float32Array(total * pageSize * Hkv * D).fill(NaN);
    b.seqs.forEach((sq, s) => {
      for (let j = 0; j < sq.n; j++) {
        const page = table[s * maxPages + Math.floor(j / pageSize)]!;
        a.set(src[s]!.subarray(j * Hkv * D, (j + 1) * Hkv * D), (page * pageSize + (j % pageSize)) * Hkv * D);
      }
    });
    return Tensor.fromHost(a, [total, pageSize, Hkv, D], b.dtype, gpu);
  };
  return {
    k: pool(h.k), v: pool(h.v), pageSize, pageStride: pageSize * Hkv * D, tokenStride: Hkv * D, headStride: D,
    pageTable: Tensor.fromHost(table, [b.seqs.length, maxPages], 'i32', gpu), ...lengths(b, h),
  };
}

/** Contiguous [B, S, H, D] KV (S = longest sequence, NaN beyond each length): page b is sequence b. */
function contiguousKv(b: Batch, h: Host): RaggedKv {
  const { Hkv, D } = b;
  const S = Math.max(1, ...b.seqs.map((s) => s.n));
  const pack = (src: Float32Array[]) => {
    const a = new Float32Array(b.seqs.length * S * Hkv * D).fill(NaN);
    src.forEach((x, s) => a.set(x, s * S * Hkv * D));
    return Tensor.fromHost(a, [b.seqs.length, S, Hkv, D], b.dtype, gpu);
  };
  return {
    k: pack(h.k), v: pack(h.v), pageSize: 2 ** 30, pageStride: S * Hkv * D, tokenStride: Hkv * D, headStride: D,
    pageTable: Tensor.fromHost(Int32Array.from(b.seqs.map((_, s) => s)), [b.seqs.length, 1], 'i32', gpu), ...lengths(b, h),
  };
}

/** Packed varlen [Tk, H, D] KV: table[s][0] = cuSeqlensK[s], pageStride = tokenStride. */
function varlenKv(b: Batch, h: Host): RaggedKv {
  const { Hkv, D } = b;
  const cu = [0];
  for (const s of b.seqs) cu.push(cu.at(-1)! + s.n);
  const pack = (src: Float32Array[]) => {
    const a = new Float32Array(Math.max(1, cu.at(-1)!) * Hkv * D);
    src.forEach((x, s) => a.set(x, cu[s]! * Hkv * D));
    return Tensor.fromHost(a, [Math.max(1, cu.at(-1)!), Hkv, D], b.dtype, gpu);
  };
  return {
    k: pack(h.k), v: pack(h.v), pageSize: 2 ** 30, pageStride: Hkv * D, tokenStride: Hkv * D, headStride: D,
    pageTable: Tensor.fromHost(Int32Array.from(cu.slice(0, -1)), [b.seqs.length, 1], 'i32', gpu), ...lengths(b, h),
  };
}

function disposeKv(kv: RaggedKv): void {
  for (const t of [kv.k, kv.v, kv.pageTable, kv.seqLens, kv.queryStart]) t.dispose();
}

interface RunOpts {
  causal: boolean; numSplits?: number; scoreMod?: ScoreMod; maskMod?: MaskMod;
  refScore?: RaggedRefIn['scoreMod']; refKeep?: RaggedRefIn['keep'];
  mutateQ?: (q: Float32Array) => void;
}

/** Runs one ragged case on `kv` and compares output and LSE with the float64 reference. */
async function raggedCase(b: Batch, h: Host, kv: RaggedKv, o: RunOpts): Promise<{ out: Float32Array; lse: Float32Array; ref: ReturnType<typeof raggedReference> }> {
  const scale = 1 / Math.sqrt(b.D);
  const qHost = h.q.slice();
  o.mutateQ?.(qHost);
  const q = Tensor.fromHost(qHost, [h.T, b.Hq, b.D], b.dtype, gpu);
  poison(h.T * b.Hq * b.D, b.dtype);
  const res = await runRaggedAttentionCuda(q, kv, {
    scale, causal: o.causal, returnLse: true,
    ...(o.numSplits !== undefined ? { numSplits: o.numSplits } : {}),
    ...(o.scoreMod ? { scoreMod: o.scoreMod } : {}), ...(o.maskMod ? { maskMod: o.maskMod } : {}),
  });
  expect(res.out.shape).toEqual([h.T, b.Hq, b.D]);
  expect(res.lse!.shape).toEqual([h.T, b.Hq]);
  const out = await res.out.toFloat32(), lse = await res.lse!.toFloat32();
  const ref = raggedReference({
    q: qHost, k: h.k, v: h.v, seqs: b.seqs, Hq: b.Hq, Hkv: b.Hkv, D: b.D, scale, causal: o.causal,
    ...(o.refScore ? { scoreMod: o.refScore } : {}), ...(o.refKeep ? { keep: o.refKeep } : {}),
  });
  compare(out, ref.out);
  compareLse(lse, ref.lse);
  for (const t of [q, res.out, res.lse!]) t.dispose();
  return { out, lse, ref };
}

const capRef = (c: number) => (s: number) => c * Math.tanh(s / c);
const windowRef = (w: number) => (_b: number, _h: number, q: number, kv: number) => q - kv < w && kv <= q;

describeGpu('decode kernel: flexAttention / SDPA with few query tokens', () => {
  interface Dims { B: number; Hq: number; Hkv: number; Sq: number; Skv: number; D: number }
  const cases: (Dims & { dtype: DType })[] = [
    { B: 2, Hq: 32, Hkv: 8, Sq: 1, Skv: 77, D: 128, dtype: 'bf16' },      // GQA 4
    { B: 1, Hq: 8, Hkv: 1, Sq: 4, Skv: 1531, D: 128, dtype: 'bf16' },     // GQA 8
    { B: 3, Hq: 4, Hkv: 4, Sq: 16, Skv: 1, D: 128, dtype: 'bf16' },       // MHA, one key
    { B: 1, Hq: 8, Hkv: 2, Sq: 1, Skv: 32768, D: 128, dtype: 'bf16' },    // long: split-KV
    { B: 2, Hq: 16, Hkv: 4, Sq: 16, Skv: 1531, D: 64, dtype: 'f16' },     // d64 f16, 4 row tiles
    { B: 2, Hq: 8, Hkv: 8, Sq: 4, Skv: 77, D: 64, dtype: 'bf16' },        // MHA d64
  ];

  function host(d: Dims, dtype: DType, seed: number) {
    return {
      q: randn(d.B * d.Hq * d.Sq * d.D, seed, dtype), k: randn(d.B * d.Hkv * d.Skv * d.D, seed + 1, dtype),
      v: randn(d.B * d.Hkv * d.Skv * d.D, seed + 2, dtype),
    };
  }
  const ref = (d: Dims, h: ReturnType<typeof host>, extra: Partial<Parameters<typeof referenceAttention>[0]> = {}) =>
    referenceAttention({ ...d, Dv: d.D, q: h.q, k: h.k, v: h.v, scale: 1 / Math.sqrt(d.D), ...extra });

  it('flexAttention (no block mask) and SDPA (dense, top-left causal) match float64; the decode kernel ran', async () => {
    for (const [i, c] of cases.entries()) {
      const h = host(c, c.dtype, 10 + i);
      const q = Tensor.fromHost(h.q, [c.B, c.Hq, c.Sq, c.D], c.dtype, gpu);
      const k = Tensor.fromHost(h.k, [c.B, c.Hkv, c.Skv, c.D], c.dtype, gpu);
      const v = Tensor.fromHost(h.v, [c.B, c.Hkv, c.Skv, c.D], c.dtype, gpu);
      poison(c.B * c.Hq * c.Sq * c.D, c.dtype);
      const f = await flexAttention(q, k, v, { enableGQA: true, returnLse: true });
      const want = ref(c, h);
      compare(await f.out.toFloat32(), want.out, TOL, `flex ${JSON.stringify(c)}`);
      compareLse(await f.lse!.toFloat32(), want.lse);
      poison(c.B * c.Hq * c.Sq * c.D, c.dtype);
      const s = await scaledDotProductAttention(q, k, v, { enableGQA: true, isCausal: true, returnLse: true });
      const wantC = ref(c, h, { keep: (_b, _h, qi, kj) => kj <= qi });
      compare(await s.out.toFloat32(), wantC.out, TOL, `sdpa causal ${JSON.stringify(c)}`);
      compareLse(await s.lse.toFloat32(), wantC.lse);
      for (const t of [q, k, v, f.out, f.lse!, s.out, s.lse]) t.dispose();
    }
    const loaded = await decodeKernelsLoaded();
    expect(loaded).toContain('flexattn_decode_d128_bf16');
    expect(loaded).toContain('flexattn_decode_d64_f16');
    expect(loaded.some((n) => n.startsWith('flexattn_decode_combine_'))).toBe(true);  // the 32k case split
  }, 300_000);

  it('split-KV on and off give the same answer (forced 1, 3 and 64 splits)', async () => {
    const d = { B: 2, Hq: 16, Hkv: 4, Sq: 3, Skv: 1531, D: 128 };
    const h = host(d, 'bf16', 40);
    const q = Tensor.fromHost(h.q, [d.B, d.Hq, d.Sq, d.D], 'bf16', gpu);
    const k = Tensor.fromHost(h.k, [d.B, d.Hkv, d.Skv, d.D], 'bf16', gpu);
    const v = Tensor.fromHost(h.v, [d.B, d.Hkv, d.Skv, d.D], 'bf16', gpu);
    const want = ref(d, h, { keep: (_b, _h, qi, kj) => kj <= qi + 700 });
    const windowed = maskMod(({ q: qi, kv }) => kv.le(qi.add(700)));
    for (const numSplits of [1, 3, 64]) {
      poison(d.B * d.Hq * d.Sq * d.D, 'bf16');
      const r = await runDecodeContiguous({
        q, k, v, dims: { ...d, Dv: d.D }, scale: 1 / Math.sqrt(d.D), returnLse: true, causal: false,
        maskMod: windowed, params: {}, numSplits,
      });
      compare(await r.out.toFloat32(), want.out, TOL, `splits ${numSplits}`);
      compareLse(await r.lse!.toFloat32(), want.lse);
      r.out.dispose(); r.lse!.dispose();
    }
    for (const t of [q, k, v]) t.dispose();
  }, 120_000);

  it('softcap through flexAttention, a dense bool mask through SDPA, strided [B,S,H,D] KV', async () => {
    const d = { B: 2, Hq: 32, Hkv: 8, Sq: 4, Skv: 1531, D: 128 };
    const h = host(d, 'bf16', 50);
    // [B, S, H, D] storage viewed as [B, H, S, D]
    const bshd = (a: Float32Array, H: number, S: number) => {
      const o = new Float32Array(a.length);
      for (let b = 0; b < d.B; b++) for (let hh = 0; hh < H; hh++) for (let s = 0; s < S; s++) {
        o.set(a.subarray(((b * H + hh) * S + s) * d.D, ((b * H + hh) * S + s + 1) * d.D), ((b * S + s) * H + hh) * d.D);
      }
      return Tensor.fromHost(o, [d.B, S, H, d.D], 'bf16', gpu).transpose(1, 2);
    };
    const q = bshd(h.q, d.Hq, d.Sq), k = bshd(h.k, d.Hkv, d.Skv), v = bshd(h.v, d.Hkv, d.Skv);
    poison(d.B * d.Hq * d.Sq * d.D, 'bf16');
    const f = await flexAttention(q, k, v, { enableGQA: true, returnLse: true, scoreMod: softcap(20) });
    const wantCap = ref(d, h, { scoreMod: capRef(20) });
    compare(await f.out.toFloat32(), wantCap.out, TOL, 'softcap');
    compareLse(await f.lse!.toFloat32(), wantCap.lse);
    const keep = (_b: number, hh: number, qi: number, kj: number) => (kj * 7 + qi * 3 + hh) % 5 !== 0;
    const maskHost = new Uint8Array(d.Hq * d.Sq * d.Skv);
    for (let hh = 0; hh < d.Hq; hh++) for (let qi = 0; qi < d.Sq; qi++) for (let kj = 0; kj < d.Skv; kj++) {
      maskHost[(hh * d.Sq + qi) * d.Skv + kj] = keep(0, hh, qi, kj) ? 1 : 0;
    }
    const mask = Tensor.fromHost(maskHost, [1, d.Hq, d.Sq, d.Skv], 'bool', gpu);
    poison(d.B * d.Hq * d.Sq * d.D, 'bf16');
    const s = await scaledDotProductAttention(q, k, v, { enableGQA: true, attnMask: mask, returnLse: true });
    const wantMask = ref(d, h, { keep });
    compare(await s.out.toFloat32(), wantMask.out, TOL, 'dense bool mask');
    compareLse(await s.lse.toFloat32(), wantMask.lse);
    for (const t of [q, k, v, mask, f.out, f.lse!, s.out, s.lse]) t.dispose();
  }, 120_000);

  it('NaN in a query row poisons that row only; no keys gives 0 and LSE -inf', async () => {
    const d = { B: 1, Hq: 8, Hkv: 2, Sq: 4, Skv: 77, D: 128 };
    const h = host(d, 'bf16', 60);
    h.q.fill(NaN, (1 * d.Sq + 2) * d.D, (1 * d.Sq + 2) * d.D + 5);  // head 1, token 2
    const q = Tensor.fromHost(h.q, [d.B, d.Hq, d.Sq, d.D], 'bf16', gpu);
    const k = Tensor.fromHost(h.k, [d.B, d.Hkv, d.Skv, d.D], 'bf16', gpu);
    const v = Tensor.fromHost(h.v, [d.B, d.Hkv, d.Skv, d.D], 'bf16', gpu);
    const f = await flexAttention(q, k, v, { enableGQA: true, returnLse: true });
    const out = await f.out.toFloat32(), lse = await f.lse!.toFloat32();
    const want = ref(d, h);
    compare(out, want.out);
    expect(Number.isNaN(lse[1 * d.Sq + 2]!)).toBe(true);
    expect(Number.isNaN(out[(1 * d.Sq + 2) * d.D]!)).toBe(true);
    expect(Number.isNaN(out[(1 * d.Sq + 1) * d.D]!)).toBe(false);
    // Skv = 0: every row empty.
    const k0 = Tensor.empty([d.B, d.Hkv, 0, d.D], 'bf16', gpu), v0 = Tensor.empty([d.B, d.Hkv, 0, d.D], 'bf16', gpu);
    poison(d.B * d.Hq * d.Sq * d.D, 'bf16');
    const e = await flexAttention(q, k0, v0, { enableGQA: true, returnLse: true });
    expect([...await e.out.toFloat32()].every((x) => x === 0)).toBe(true);
    expect([...await e.lse!.toFloat32()].every((x) => x === -Infinity)).toBe(true);
    for (const t of [q, k, v, k0, v0, f.out, f.lse!, e.out, e.lse!]) t.dispose();
  }, 60_000);

});

describeGpu('decode kernel: runRaggedAttentionCuda over ragged batches', () => {
  const mixed: SeqSpec[] = [{ n: 1, m: 1 }, { n: 77, m: 4 }, { n: 1531, m: 16 }, { n: 5000, m: 3 }, { n: 16, m: 16 }];

  it('paged KV (page 16 and 128, random page order, NaN slack): causal, GQA 4 and 8, splits on and off', async () => {
    for (const [Hq, Hkv] of [[32, 8], [8, 1]] as const) {
      const b: Batch = { seqs: mixed, Hq, Hkv, D: 128, dtype: 'bf16', seed: Hq + Hkv };
      const h = hostBatch(b);
      for (const pageSize of [16, 128]) {
        const kv = pagedKv(b, h, pageSize, pageSize + Hq);
        for (const numSplits of [1, 5, undefined]) await raggedCase(b, h, kv, { causal: true, ...(numSplits ? { numSplits } : {}) });
        disposeKv(kv);
      }
    }
  }, 600_000);

  it('softcap and a sliding window see logical positions (q = n - m + i); d64 f16; MHA', async () => {
    const b: Batch = { seqs: mixed, Hq: 8, Hkv: 8, D: 64, dtype: 'f16', seed: 7 };
    const h = hostBatch(b);
    const kv = pagedKv(b, h, 16, 3);
    await raggedCase(b, h, kv, { causal: true, scoreMod: softcap(30), refScore: capRef(30), maskMod: slidingWindow(200), refKeep: windowRef(200) });
    await raggedCase(b, h, kv, { causal: true, numSplits: 7, maskMod: slidingWindow(33), refKeep: windowRef(33) });
    disposeKv(kv);
  }, 300_000);

  it('chunked prefill (300 query tokens) then decode on the same cache', async () => {
    const b: Batch = { seqs: [{ n: 1000, m: 300 }, { n: 64, m: 1 }], Hq: 16, Hkv: 4, D: 128, dtype: 'bf16', seed: 11 };
    const h = hostBatch(b);
    const kv = pagedKv(b, h, 64, 5);
    await raggedCase(b, h, kv, { causal: true });
    disposeKv(kv);
    const b2: Batch = { ...b, seqs: [{ n: 1001, m: 1 }, { n: 65, m: 1 }], seed: 12 };
    const h2 = hostBatch(b2);
    const kv2 = pagedKv(b2, h2, 64, 6);
    await raggedCase(b2, h2, kv2, { causal: true, numSplits: 4 });
    disposeKv(kv2);
  }, 300_000);

  it('contiguous [B,S,H,D] and packed varlen KV; non-causal', async () => {
    const b: Batch = { seqs: [{ n: 77, m: 2 }, { n: 1531, m: 1 }, { n: 5, m: 5 }], Hq: 32, Hkv: 4, D: 128, dtype: 'bf16', seed: 21 };
    const h = hostBatch(b);
    for (const make of [contiguousKv, varlenKv]) {
      const kv = make(b, h);
      await raggedCase(b, h, kv, { causal: false });
      await raggedCase(b, h, kv, { causal: true, numSplits: 3 });
      disposeKv(kv);
    }
  }, 300_000);

  it('fully masked rows give 0 and LSE -inf, NaN rows stay NaN, with and without splits', async () => {
    const b: Batch = { seqs: [{ n: 300, m: 2 }, { n: 77, m: 3 }, { n: 1531, m: 1 }], Hq: 8, Hkv: 2, D: 128, dtype: 'bf16', seed: 31 };
    const h = hostBatch(b);
    const kv = pagedKv(b, h, 16, 9);
    const notSeq1 = maskMod(({ b: s }) => s.ne(1));
    for (const numSplits of [1, 4]) {
      const r = await raggedCase(b, h, kv, { causal: true, numSplits, maskMod: notSeq1, refKeep: (s) => s !== 1 });
      for (let t = 2; t < 5; t++) for (let hh = 0; hh < b.Hq; hh++) {
        expect(r.lse[t * b.Hq + hh]).toBe(-Infinity);
        expect(r.out.subarray((t * b.Hq + hh) * b.D, (t * b.Hq + hh + 1) * b.D).every((x) => x === 0)).toBe(true);
      }
      // row 5 (sequence 2's only token), head 2: NaN in q
      const n = await raggedCase(b, h, kv, { causal: true, numSplits, mutateQ: (q) => q.fill(NaN, (5 * b.Hq + 2) * b.D, (5 * b.Hq + 2) * b.D + 1) });
      expect(Number.isNaN(n.lse[5 * b.Hq + 2]!)).toBe(true);
      expect(Number.isNaN(n.lse[5 * b.Hq + 3]!)).toBe(false);
    }
    disposeKv(kv);
  }, 300_000);

  it('bad input: typed errors naming the argument', async () => {
    const b: Batch = { seqs: [{ n: 20, m: 2 }], Hq: 8, Hkv: 2, D: 128, dtype: 'bf16', seed: 41 };
    const h = hostBatch(b);
    const kv = pagedKv(b, h, 16, 1);
    const q = Tensor.fromHost(h.q, [h.T, b.Hq, b.D], 'bf16', gpu);
    const o = { scale: 0.1, causal: true, returnLse: false };
    const q32 = Tensor.fromHost(h.q, [h.T, b.Hq, b.D], 'f32', gpu);
    await expect(runRaggedAttentionCuda(q32, kv, o)).rejects.toThrow(DTypeError);
    await expect(runRaggedAttentionCuda(q, { ...kv, pageSize: 24 }, o)).rejects.toThrow(/kv.pageSize/);
    await expect(runRaggedAttentionCuda(q, { ...kv, pageSize: 24 }, o)).rejects.toThrow(InvalidArgumentError);
    const q7 = Tensor.fromHost(randn(h.T * 7 * b.D, 1, 'bf16'), [h.T, 7, b.D], 'bf16', gpu);
    await expect(runRaggedAttentionCuda(q7, kv, o)).rejects.toThrow(ShapeError);
    await expect(runRaggedAttentionCuda(q, { ...kv, queryStartHost: Int32Array.from([0, 3]) }, o)).rejects.toThrow(/kv.queryStartHost/);
    await expect(runRaggedAttentionCuda(q, { ...kv, maxQueryTokens: 1 }, o)).rejects.toThrow(/maxQueryTokens/);
    await expect(runRaggedAttentionCuda(q, { ...kv, tokenStride: 129 }, o)).rejects.toThrow(/multiples of 8/);
    // the process keeps working
    const ok = await runRaggedAttentionCuda(q, kv, o);
    expect(ok.out.shape).toEqual([h.T, b.Hq, b.D]);
    for (const t of [q, q32, q7, ok.out]) t.dispose();
    disposeKv(kv);
  }, 60_000);
});

// ---------------------------------------------------------------------------
// The kv range: only tiles some row of a tile can see are read.

/** NaN in K and V of sequence s at the tokens `bad(s, j)` says the kernel must not read. */
function poisonTokens(b: Batch, h: Host, bad: (s: number, j: number) => boolean): number {
  const row = b.Hkv * b.D;
  let n = 0;
  b.seqs.forEach((sq, s) => {
    for (let j = 0; j < sq.n; j++) {
      if (!bad(s, j)) continue;
      h.k[s]!.fill(NaN, j * row, (j + 1) * row);
      h.v[s]!.fill(NaN, j * row, (j + 1) * row);
      n++;
    }
  });
  return n;
}

describeGpu('decode kernel: kv range from the mask mod (tiles outside it are never read)', () => {
  const seqs: SeqSpec[] = [{ n: 1, m: 1 }, { n: 77, m: 4 }, { n: 1531, m: 16 }, { n: 32768, m: 1 }, { n: 5000, m: 3 }, { n: 200, m: 2 }];

  it('sliding windows smaller and larger than a tile, paged (page 16 / 128: windows cross pages) and contiguous, splits on and off', async () => {
    const D = 128, BN = DECODE_TILE[D]!.BN;
    for (const [wi, w] of [1, 33, 100, 4096, 40000].entries()) {
      const b: Batch = { seqs, Hq: 8, Hkv: 2, D, dtype: 'bf16', seed: 70 + wi };
      const h = hostBatch(b);
      // Below the first row's window, aligned down to a tile: no row of any tile sees it.
      const poisoned = poisonTokens(b, h, (s, j) => {
        const { n, m } = b.seqs[s]!;
        return j < Math.floor(Math.max(0, n - m - w + 1) / BN) * BN;
      });
      if (w === 4096) expect(poisoned).toBeGreaterThan(32768 - 4096 - BN);  // the 32k sequence: 7/8 of it is NaN
      const o = { causal: true, maskMod: slidingWindow(w), refKeep: windowRef(w) };
      const p16 = pagedKv(b, h, 16, 100 + wi);
      await raggedCase(b, h, p16, { ...o, numSplits: 1 });
      await raggedCase(b, h, p16, o);  // planned splits (on the reduced range)
      disposeKv(p16);
      const p128 = pagedKv(b, h, 128, 200 + wi);
      await raggedCase(b, h, p128, { ...o, numSplits: 5 });
      disposeKv(p128);
      const c = contiguousKv(b, h);
      await raggedCase(b, h, c, { ...o, numSplits: 3 });
      disposeKv(c);
    }
  }, 600_000);

  it('compositions: causal ∧ window, window ∧ prefix LM (NaN below the hull), prefix ∨ window (whole range, exact); GQA 4, d64 f16', async () => {
    const D = 64, BN = DECODE_TILE[D]!.BN;
    const cases: { mod: MaskMod; keep: (b: number, h: number, q: number, kv: number) => boolean; lo: (q: number) => number }[] = [
      { mod: andMasks(causal(), slidingWindow(130)), keep: (_b, _h, q, kv) => kv <= q && q - kv < 130, lo: (q) => q - 129 },
      { mod: andMasks(slidingWindow(70), prefixLM(20)), keep: (_b, _h, q, kv) => q - kv < 70 && kv <= q && (kv < 20 || kv <= q), lo: (q) => q - 69 },
      { mod: orMasks(prefixLM(50), slidingWindow(40)), keep: (_b, _h, q, kv) => kv < 50 || kv <= q || (q - kv < 40 && kv <= q), lo: () => 0 },
    ];
    for (const [ci, c] of cases.entries()) {
      const b: Batch = { seqs, Hq: 16, Hkv: 4, D, dtype: 'f16', seed: 80 + ci };
      const h = hostBatch(b);
      poisonTokens(b, h, (s, j) => {
        const { n, m } = b.seqs[s]!;
        return j < Math.floor(Math.max(0, c.lo(n - m)) / BN) * BN;
      });
      const kv = pagedKv(b, h, 16, 300 + ci);
      for (const numSplits of [1, 4]) await raggedCase(b, h, kv, { causal: false, numSplits, maskMod: c.mod, refKeep: c.keep });
      disposeKv(kv);
    }
  }, 600_000);

  it('top-left positions (flex / SDPA path): a window with lookahead bounds the end, a shifted band the start; Skv 1/77/1531/32768', async () => {
    const D = 128, BN = DECODE_TILE[D]!.BN;
    // q - kv in [-1099, -1000]: a user mask (no descriptor) bounded through its IR.
    const shifted = maskMod(({ q, kv }) => kv.ge(q.add(1000)).and(kv.lt(q.add(1100))));
    const mods: { mod: MaskMod; keep: (q: number, kv: number) => boolean; lo: (q: number) => number; hi: (q: number) => number }[] = [
      { mod: slidingWindow(3, { lookahead: 5 }), keep: (q, kv) => q - kv < 3 && kv - q <= 5, lo: (q) => q - 2, hi: (q) => q + 6 },
      { mod: slidingWindow(200, { lookahead: 90 }), keep: (q, kv) => q - kv < 200 && kv - q <= 90, lo: (q) => q - 199, hi: (q) => q + 91 },
      { mod: shifted, keep: (q, kv) => kv >= q + 1000 && kv < q + 1100, lo: (q) => q + 1000, hi: (q) => q + 1100 },
    ];
    const shapes = [
      { B: 2, Hq: 8, Hkv: 2, Sq: 1, Skv: 1 }, { B: 1, Hq: 32, Hkv: 8, Sq: 3, Skv: 77 },
      { B: 2, Hq: 16, Hkv: 2, Sq: 16, Skv: 1531 }, { B: 1, Hq: 8, Hkv: 8, Sq: 5, Skv: 32768 },
    ];
    for (const [si, sh] of shapes.entries()) {
      const d = { ...sh, D };
      const q = randn(d.B * d.Hq * d.Sq * D, 400 + si, 'bf16');
      for (const [mi, m] of mods.entries()) {
        const k = randn(d.B * d.Hkv * d.Skv * D, 500 + si * 7 + mi, 'bf16'), v = randn(d.B * d.Hkv * d.Skv * D, 600 + si * 7 + mi, 'bf16');
        const cut = Math.floor(Math.max(0, m.lo(0)) / BN) * BN, end = Math.min(d.Skv, m.hi(d.Sq - 1));
        for (let bh = 0; bh < d.B * d.Hkv; bh++) for (let j = 0; j < d.Skv; j++) {
          if (j < cut || j >= end) { k.fill(NaN, (bh * d.Skv + j) * D, (bh * d.Skv + j + 1) * D); v.fill(NaN, (bh * d.Skv + j) * D, (bh * d.Skv + j + 1) * D); }
        }
        const want = referenceAttention({ ...d, Dv: D, q, k, v, scale: 1 / Math.sqrt(D), keep: (_b, _h, qi, kj) => m.keep(qi, kj) });
        const tq = Tensor.fromHost(q, [d.B, d.Hq, d.Sq, D], 'bf16', gpu);
        const tk = Tensor.fromHost(k, [d.B, d.Hkv, d.Skv, D], 'bf16', gpu), tv = Tensor.fromHost(v, [d.B, d.Hkv, d.Skv, D], 'bf16', gpu);
        for (const numSplits of [1, 3, undefined]) {
          poison(d.B * d.Hq * d.Sq * D, 'bf16');
          const r = await runDecodeContiguous({
            q: tq, k: tk, v: tv, dims: { ...d, Dv: D }, scale: 1 / Math.sqrt(D), returnLse: true, causal: false,
            maskMod: m.mod, params: {}, ...(numSplits ? { numSplits } : {}),
          });
          compare(await r.out.toFloat32(), want.out, TOL, `${JSON.stringify(d)} mod ${mi} splits ${numSplits}`);
          compareLse(await r.lse!.toFloat32(), want.lse);
          r.out.dispose(); r.lse!.dispose();
        }
        for (const t of [tq, tk, tv]) t.dispose();
      }
    }
  }, 600_000);
});

// ---------------------------------------------------------------------------
// flexAttention with a BlockMask and few query tokens: the decode kernel walks its lists.

interface Lists { num: Int32Array; idx: Int32Array; fnum: Int32Array; fidx: Int32Array }

/** Random disjoint partial / full lists per (b, h, q block) row; `emptyRow` gets none. */
function randomLists(rows: number, KVB: number, seed: number, emptyRow = -1): Lists {
  const r = rng(seed);
  const l: Lists = { num: new Int32Array(rows), idx: new Int32Array(rows * KVB), fnum: new Int32Array(rows), fidx: new Int32Array(rows * KVB) };
  for (let row = 0; row < rows; row++) {
    const perm = [...Array(KVB).keys()];
    for (let i = KVB - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); [perm[i], perm[j]] = [perm[j]!, perm[i]!]; }
    const np = row === emptyRow ? 0 : Math.floor(r() * (KVB + 1) * 0.5);
    const nf = row === emptyRow ? 0 : Math.floor(r() * (KVB - np + 1) * 0.6);
    const part = perm.slice(0, np).sort((a, c) => a - c), full = perm.slice(np, np + nf).sort((a, c) => a - c);
    l.num[row] = np; l.fnum[row] = nf;
    l.idx.set([...part, ...perm.slice(np)], row * KVB);
    l.fidx.set([...full, ...perm.slice(0, np), ...perm.slice(np + nf)], row * KVB);
  }
  return l;
}

/** keep(b, h, i, j) of a block mask as PyTorch defines it: full blocks all, partial blocks by the mask mod, others none. */
function listKeep(l: Lists, Bm: number, Hm: number, QB: number, KVB: number, bs: readonly [number, number],
  mod: ((b: number, h: number, q: number, kv: number) => boolean) | null) {
  const cls = new Uint8Array(Bm * Hm * QB * KVB);  // 1 partial, 2 full
  for (let row = 0; row < Bm * Hm * QB; row++) {
    for (let j = 0; j < l.num[row]!; j++) cls[row * KVB + l.idx[row * KVB + j]!] = 1;
    for (let j = 0; j < l.fnum[row]!; j++) cls[row * KVB + l.fidx[row * KVB + j]!] = 2;
  }
  const at = (b: number, h: number, i: number, kj: number) =>
    cls[(((Bm === 1 ? 0 : b) * Hm + (Hm === 1 ? 0 : h)) * QB + Math.floor(i / bs[0])) * KVB + Math.floor(kj / bs[1])]!;
  return {
    keep: (b: number, h: number, i: number, kj: number) => { const c = at(b, h, i, kj); return c === 2 || (c === 1 && (!mod || mod(b, h, i, kj))); },
    listed: (b: number, h: number, i: number, kj: number) => at(b, h, i, kj) !== 0,
  };
}

describeGpu('decode kernel: flexAttention with a BlockMask (block-sparse walk)', () => {
  // Masks some elements of a partial block, so a kernel that skips the mod there (or applies it in full blocks) differs.
  const modExpr = maskMod(({ b, h, q, kv }) => kv.mul(7).add(q.mul(3)).add(h).add(b).mod(5).ne(0));
  const modRef = (b: number, h: number, q: number, kv: number) => (kv * 7 + q * 3 + h + b) % 5 !== 0;

  interface Case { B: number; Hq: number; Hkv: number; Sq: number; Skv: number; D: number; bs: [number, number]; Bm: number; Hm: number; dtype: DType }
  const cases: Case[] = [
    { B: 2, Hq: 32, Hkv: 8, Sq: 1, Skv: 1531, D: 128, bs: [128, 128], Bm: 1, Hm: 1, dtype: 'bf16' },   // broadcast mask, GQA 4
    { B: 2, Hq: 16, Hkv: 2, Sq: 16, Skv: 1531, D: 128, bs: [4, 64], Bm: 2, Hm: 1, dtype: 'bf16' },    // 4 q blocks per tile span, per batch
    { B: 1, Hq: 8, Hkv: 2, Sq: 3, Skv: 77, D: 128, bs: [2, 32], Bm: 1, Hm: 8, dtype: 'bf16' },        // per head (one head per tile), kv block < tile
    { B: 2, Hq: 8, Hkv: 8, Sq: 5, Skv: 1531, D: 64, bs: [8, 256], Bm: 2, Hm: 8, dtype: 'f16' },       // MHA, kv block > tile
    { B: 1, Hq: 8, Hkv: 1, Sq: 1, Skv: 32768, D: 128, bs: [128, 128], Bm: 1, Hm: 1, dtype: 'bf16' },  // long and sparse: split-KV
    { B: 1, Hq: 4, Hkv: 2, Sq: 2, Skv: 1, D: 128, bs: [128, 128], Bm: 1, Hm: 4, dtype: 'bf16' },      // one key
  ];

  it('matches float64 (full blocks without the mask mod, partial with it, unlisted blocks NaN and never read); B/H broadcast; splits on and off', async () => {
    for (const [ci, c] of cases.entries()) {
      const QB = Math.ceil(c.Sq / c.bs[0]), KVB = Math.ceil(c.Skv / c.bs[1]);
      const rows = c.Bm * c.Hm * QB;
      const lists = randomLists(rows, KVB, 900 + ci, ci === 1 ? 0 : -1);
      const G = c.Hq / c.Hkv;
      const q = randn(c.B * c.Hq * c.Sq * c.D, 700 + ci, c.dtype);
      const k = randn(c.B * c.Hkv * c.Skv * c.D, 710 + ci, c.dtype), v = randn(c.B * c.Hkv * c.Skv * c.D, 720 + ci, c.dtype);
      const { keep, listed } = listKeep(lists, c.Bm, c.Hm, QB, KVB, c.bs, modRef);
      // NaN in every kv block no (query head of the group, query token) of the batch lists.
      for (let b = 0; b < c.B; b++) for (let hk = 0; hk < c.Hkv; hk++) for (let j = 0; j < c.Skv; j++) {
        let any = false;
        for (let g = 0; g < G && !any; g++) for (let i = 0; i < c.Sq && !any; i++) any = listed(b, hk * G + g, i, j);
        if (!any) { const o = ((b * c.Hkv + hk) * c.Skv + j) * c.D; k.fill(NaN, o, o + c.D); v.fill(NaN, o, o + c.D); }
      }
      const want = referenceAttention({ ...c, Dv: c.D, q, k, v, scale: 1 / Math.sqrt(c.D), keep });
      const bm = await BlockMask.fromKvBlocks(
        { data: lists.num, shape: [c.Bm, c.Hm, QB] }, { data: lists.idx, shape: [c.Bm, c.Hm, QB, KVB] },
        { data: lists.fnum, shape: [c.Bm, c.Hm, QB] }, { data: lists.fidx, shape: [c.Bm, c.Hm, QB, KVB] },
        { qLen: c.Sq, kvLen: c.Skv, blockSize: c.bs, maskMod: modExpr, device: 'cuda:0' });
      const tq = Tensor.fromHost(q, [c.B, c.Hq, c.Sq, c.D], c.dtype, gpu);
      const tk = Tensor.fromHost(k, [c.B, c.Hkv, c.Skv, c.D], c.dtype, gpu), tv = Tensor.fromHost(v, [c.B, c.Hkv, c.Skv, c.D], c.dtype, gpu);
      poison(c.B * c.Hq * c.Sq * c.D, c.dtype);
      const before = ci === 0 ? await jitStatus() : [];
      const f = await flexAttention(tq, tk, tv, { blockMask: bm, enableGQA: true, returnLse: true });
      if (ci === 0) {
        // this mod's first use: flexAttention compiled a decode kernel for it, and no forward flex kernel
        const after = await jitStatus();
        const count = (l: typeof after, prefix: string) => l.filter((x) => x.kernel.startsWith(prefix)).length;
        expect(count(after, 'flexattn_decode_flex_')).toBe(count(before, 'flexattn_decode_flex_') + 1);
        expect(count(after, 'flexattn_flex_')).toBe(count(before, 'flexattn_flex_'));
      }
      compare(await f.out.toFloat32(), want.out, TOL, `flex case ${ci}`);
      compareLse(await f.lse!.toFloat32(), want.lse);
      for (const numSplits of [1, 3, 64]) {
        poison(c.B * c.Hq * c.Sq * c.D, c.dtype);
        const r = await runDecodeContiguous({
          q: tq, k: tk, v: tv, dims: { ...c, Dv: c.D }, scale: 1 / Math.sqrt(c.D), returnLse: true, causal: false,
          maskMod: modExpr, blockMask: bm, params: {}, numSplits,
        });
        compare(await r.out.toFloat32(), want.out, TOL, `case ${ci} splits ${numSplits}`);
        compareLse(await r.lse!.toFloat32(), want.lse);
        r.out.dispose(); r.lse!.dispose();
      }
      if (ci === 1) {
        // batch 0's first q block lists nothing: its rows are 0 with LSE -inf
        const lse = await f.lse!.toFloat32();
        for (let h = 0; h < c.Hq; h++) for (let i = 0; i < c.bs[0]; i++) expect(lse[h * c.Sq + i]).toBe(-Infinity);
      }
      for (const t of [tq, tk, tv, f.out, f.lse!]) t.dispose();
      bm.dispose();
    }
  }, 600_000);

  it('createBlockMask masks (sliding window, causal, no mask mod) take the decode kernel and match float64', async () => {
    const d = { B: 2, Hq: 32, Hkv: 8, Sq: 4, Skv: 1531, D: 128 };
    const q = randn(d.B * d.Hq * d.Sq * d.D, 800, 'bf16');
    const k = randn(d.B * d.Hkv * d.Skv * d.D, 801, 'bf16'), v = randn(d.B * d.Hkv * d.Skv * d.D, 802, 'bf16');
    const tq = Tensor.fromHost(q, [d.B, d.Hq, d.Sq, d.D], 'bf16', gpu);
    const tk = Tensor.fromHost(k, [d.B, d.Hkv, d.Skv, d.D], 'bf16', gpu), tv = Tensor.fromHost(v, [d.B, d.Hkv, d.Skv, d.D], 'bf16', gpu);
    const masks: [MaskMod, (b: number, h: number, qi: number, kj: number) => boolean, number | [number, number]][] = [
      [causal(), (_b, _h, qi, kj) => kj <= qi, 128],
      [slidingWindow(2, { lookahead: 300 }), (_b, _h, qi, kj) => qi - kj < 2 && kj - qi <= 300, [2, 64]],
    ];
    for (const [mod, keep, blockSize] of masks) {
      const bm = await createBlockMask(mod, 1, 1, d.Sq, d.Skv, { blockSize, device: 'cuda:0' });
      poison(d.B * d.Hq * d.Sq * d.D, 'bf16');
      const f = await flexAttention(tq, tk, tv, { blockMask: bm, enableGQA: true, returnLse: true });
      const want = referenceAttention({ ...d, Dv: d.D, q, k, v, scale: 1 / Math.sqrt(d.D), keep });
      compare(await f.out.toFloat32(), want.out, TOL, mod.toString());
      compareLse(await f.lse!.toFloat32(), want.lse);
      f.out.dispose(); f.lse!.dispose(); bm.dispose();
    }
    // no mask mod: partial blocks keep everything (PyTorch's noop mask)
    const KVB = Math.ceil(d.Skv / 128);
    const lists = randomLists(1, KVB, 77);
    const bm = await BlockMask.fromKvBlocks({ data: lists.num, shape: [1, 1, 1] }, { data: lists.idx, shape: [1, 1, 1, KVB] },
      { data: lists.fnum, shape: [1, 1, 1] }, { data: lists.fidx, shape: [1, 1, 1, KVB] }, { qLen: d.Sq, kvLen: d.Skv, device: 'cuda:0' });
    const { keep } = listKeep(lists, 1, 1, 1, KVB, [128, 128], null);
    const f = await flexAttention(tq, tk, tv, { blockMask: bm, enableGQA: true, returnLse: true });
    const want = referenceAttention({ ...d, Dv: d.D, q, k, v, scale: 1 / Math.sqrt(d.D), keep });
    compare(await f.out.toFloat32(), want.out, TOL, 'no mask mod');
    compareLse(await f.lse!.toFloat32(), want.lse);
    for (const t of [tq, tk, tv, f.out, f.lse!]) t.dispose();
    bm.dispose();
  }, 300_000);
});
