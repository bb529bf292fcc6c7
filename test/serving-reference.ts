/**
 * Test helpers for the serving API: a float64 reference of attention over a
 * ragged batch (logical positions as in lib/serving/paged-kv.ts), and a
 * "ledger" that remembers what each sequence of a KvCache should hold, so
 * tests compare the cache's answers against values that never went through
 * the cache.
 */
import { bf16BitsToF32, f32ToBf16Bits } from '../lib/dtype.js';
import { Tensor } from '../lib/tensor.js';
import type { KvCache, SequenceId } from '../lib/serving/kv-cache.js';
import { rng } from './reference.js';

/** One sequence of a ragged batch: n KV tokens [n, Hkv, D] and m query tokens. */
export interface RefSeq { k: Float64Array; v: Float64Array; n: number; m: number }

export interface RaggedRefInput {
  /** Packed q [T, Hq, D]. */
  q: ArrayLike<number>;
  seqs: RefSeq[];
  Hq: number; Hkv: number; D: number;
  scale: number;
  causal: boolean;
  keep?: (b: number, h: number, q: number, kv: number) => boolean;
  scoreMod?: (s: number, b: number, h: number, q: number, kv: number) => number;
}

/** out [T, Hq, D], lse [T, Hq] in float64 (masked rows 0 / -inf, NaN propagating). */
export function raggedReference(r: RaggedRefInput): { out: Float64Array; lse: Float64Array } {
  const T = r.seqs.reduce((a, s) => a + s.m, 0);
  const out = new Float64Array(T * r.Hq * r.D), lse = new Float64Array(T * r.Hq);
  const G = r.Hq / r.Hkv;
  let t = 0;
  r.seqs.forEach((sq, b) => {
    const sc = new Float64Array(sq.n);
    for (let i = 0; i < sq.m; i++, t++) {
      const pos = sq.n - sq.m + i;
      const hi = r.causal ? Math.max(0, Math.min(sq.n, pos + 1)) : sq.n;
      for (let h = 0; h < r.Hq; h++) {
        const hk = Math.floor(h / G), row = t * r.Hq + h;
        let m = -Infinity, nan = false;
        for (let j = 0; j < hi; j++) {
          if (r.keep && !r.keep(b, h, pos, j)) { sc[j] = -Infinity; continue; }
          let dot = 0;
          for (let d = 0; d < r.D; d++) dot += r.q[row * r.D + d]! * sq.k[(j * r.Hkv + hk) * r.D + d]!;
          let s = dot * r.scale;
          if (r.scoreMod) s = r.scoreMod(s, b, h, pos, j);
          sc[j] = s;
          if (Number.isNaN(s)) nan = true;
          else if (s > m) m = s;
        }
        if (nan) { lse[row] = NaN; out.fill(NaN, row * r.D, (row + 1) * r.D); continue; }
        if (m === -Infinity) { lse[row] = -Infinity; continue; }
        let sum = 0;
        for (let j = 0; j < hi; j++) sum += sc[j] === -Infinity ? 0 : Math.exp(sc[j]! - m);
        lse[row] = m + Math.log(sum);
        for (let j = 0; j < hi; j++) {
          if (sc[j] === -Infinity) continue;
          const p = Math.exp(sc[j]! - m) / sum;
          for (let d = 0; d < r.D; d++) out[row * r.D + d] += p * sq.v[(j * r.Hkv + hk) * r.D + d]!;
        }
      }
    }
  });
  return { out, lse };
}

/** n random bf16 values (as raw bits and as the numbers they hold), never 0. */
export function randomBf16(n: number, seed: number, scaleBy = 1): { bits: Uint16Array; vals: Float64Array } {
  const r = rng(seed);
  const bits = new Uint16Array(n), vals = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let x = (r() * 2 - 1) * scaleBy;
    if (x === 0) x = 0.25;
    bits[i] = f32ToBf16Bits(x);
    vals[i] = bf16BitsToF32(bits[i]!);
  }
  return { bits, vals };
}

/** Concatenates float64 arrays. */
export function concat(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/**
 * Appends through a cache while remembering what each sequence holds: random
 * bf16 tokens, packed per call in the order of `seqs`.
 */
export class Ledger {
  readonly k = new Map<SequenceId, Float64Array[]>();
  readonly v = new Map<SequenceId, Float64Array[]>();
  #seed: number;
  constructor(readonly cache: KvCache, seed: number) { this.#seed = seed; }

  newSequence(): SequenceId {
    const s = this.cache.newSequence();
    this.k.set(s, []);
    this.v.set(s, []);
    return s;
  }

  fork(seq: SequenceId): SequenceId {
    const s = this.cache.fork(seq);
    this.k.set(s, [...this.k.get(seq)!]);
    this.v.set(s, [...this.v.get(seq)!]);
    return s;
  }

  free(seq: SequenceId): void {
    this.cache.free(seq);
    this.k.delete(seq);
    this.v.delete(seq);
  }

  /** Random new tokens [T, Hkv, D] for `tokens[i]` of `seqs[i]`, as tensors on the cache's device (not yet appended). */
  tokens(seqs: SequenceId[], tokens: number[]): { k: Tensor; v: Tensor; commit: () => void } {
    const row = this.cache.numKvHeads * this.cache.headDim;
    const T = tokens.reduce((a, b) => a + b, 0);
    const kr = randomBf16(T * row, this.#seed++), vr = randomBf16(T * row, this.#seed++);
    const shape = [T, this.cache.numKvHeads, this.cache.headDim];
    const k = Tensor.fromHost(kr.bits, shape, 'bf16', { device: this.cache.device });
    const v = Tensor.fromHost(vr.bits, shape, 'bf16', { device: this.cache.device });
    return {
      k, v,
      commit: () => {
        let o = 0;
        seqs.forEach((s, i) => {
          const n = tokens[i]! * row;
          this.k.get(s)!.push(kr.vals.slice(o, o + n));
          this.v.get(s)!.push(vr.vals.slice(o, o + n));
          o += n;
        });
      },
    };
  }

  /** Appends random tokens and remembers them. */
  async append(seqs: SequenceId[], tokens: number[]): Promise<void> {
    const t = this.tokens(seqs, tokens);
    try {
      await this.cache.append(seqs, t.k, t.v, { tokens });
      t.commit();
    } finally {
      t.k.dispose();
      t.v.dispose();
    }
  }

  /** What `seq` should hold, with m query tokens, for raggedReference. */
  refSeq(seq: SequenceId, m: number): RefSeq {
    const k = concat(this.k.get(seq)!), v = concat(this.v.get(seq)!);
    return { k, v, n: k.length / (this.cache.numKvHeads * this.cache.headDim), m };
  }
}

/** Packed random bf16 queries [T, Hq, D] on `device`, with their values. */
export function randomQueries(T: number, Hq: number, D: number, seed: number, device: string = 'cpu'): { q: Tensor; vals: Float64Array } {
  const r = randomBf16(T * Hq * D, seed);
  return { q: Tensor.fromHost(r.bits, [T, Hq, D], 'bf16', { device: device as 'cpu' }), vals: r.vals };
}

/** Max |a - b| over elements where both are finite, and whether non-finite values sit in the same places. */
export function compare(a: ArrayLike<number>, b: ArrayLike<number>): { maxAbs: number; sameNonFinite: boolean } {
  let maxAbs = 0, same = true;
  for (let i = 0; i < b.length; i++) {
    const x = a[i]!, y = b[i]!;
    if (Number.isFinite(x) && Number.isFinite(y)) maxAbs = Math.max(maxAbs, Math.abs(x - y));
    else if (!(Object.is(x, y) || (Number.isNaN(x) && Number.isNaN(y)))) same = false;
  }
  return { maxAbs, sameNonFinite: same };
}
