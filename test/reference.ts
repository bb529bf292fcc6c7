/**
 * Brute-force attention in double precision: the plainest possible oracle
 * for the native CPU backend and, through it, the GPU kernels.
 */
export interface RefInput {
  q: Float64Array | Float32Array; k: Float64Array | Float32Array; v: Float64Array | Float32Array;
  B: number; Hq: number; Hkv: number; Sq: number; Skv: number; D: number; Dv: number;
  scale: number;
  /** keep(b, h, qi, kj) -> false masks the pair. */
  keep?: (b: number, h: number, q: number, kv: number) => boolean;
  /** additive bias or score modification on the scaled score */
  scoreMod?: (s: number, b: number, h: number, q: number, kv: number) => number;
}

/** Contiguous [B,Hq,Sq,Dv] output and [B,Hq,Sq] LSE (natural log). */
export function referenceAttention(r: RefInput): { out: Float64Array; lse: Float64Array } {
  const out = new Float64Array(r.B * r.Hq * r.Sq * r.Dv);
  const lse = new Float64Array(r.B * r.Hq * r.Sq);
  const group = r.Hq / r.Hkv;
  const s = new Float64Array(r.Skv);
  for (let b = 0; b < r.B; b++) for (let h = 0; h < r.Hq; h++) {
    const hk = Math.floor(h / group);
    for (let i = 0; i < r.Sq; i++) {
      let m = -Infinity;
      for (let j = 0; j < r.Skv; j++) {
        if (r.keep && !r.keep(b, h, i, j)) { s[j] = -Infinity; continue; }
        let dot = 0;
        const qo = ((b * r.Hq + h) * r.Sq + i) * r.D, ko = ((b * r.Hkv + hk) * r.Skv + j) * r.D;
        for (let d = 0; d < r.D; d++) dot += r.q[qo + d]! * r.k[ko + d]!;
        let sc = dot * r.scale;
        if (r.scoreMod) sc = r.scoreMod(sc, b, h, i, j);
        s[j] = sc;
        if (sc > m || Number.isNaN(sc)) m = Number.isNaN(m) ? m : sc; // NaN propagates, as torch.max
      }
      const row = (b * r.Hq + h) * r.Sq + i;
      if (m === -Infinity) { lse[row] = -Infinity; continue; }
      let sum = 0;
      for (let j = 0; j < r.Skv; j++) { const e = Math.exp(s[j]! - m); s[j] = e; sum += e; }
      lse[row] = m + Math.log(sum);
      for (let j = 0; j < r.Skv; j++) {
        const p = s[j]! / sum;
        if (p === 0) continue;
        const vo = ((b * r.Hkv + hk) * r.Skv + j) * r.Dv;
        for (let d = 0; d < r.Dv; d++) out[row * r.Dv + d] += p * r.v[vo + d]!;
      }
    }
  }
  return { out, lse };
}

/** ‖a − b‖ / ‖b‖ (NaN anywhere gives NaN). */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

/** Seeded uniform PRNG (mulberry32), shared with the mods' random program generator. */
export { mulberry32 as rng } from './random-mods.js';
import { mulberry32 as rng } from './random-mods.js';

/** n standard normals from a seeded generator. */
export function randnArray(n: number, seed: number): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u1 = Math.max(r(), 1e-12), u2 = r();
    out[i] = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
  return out;
}

/** What `p` rejects with (tests then check its class, code and cause); fails if `p` resolves. */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}
