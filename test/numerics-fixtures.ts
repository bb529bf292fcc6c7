/**
 * Shared by test/numerics.test.ts (CPU backend) and test/gpu/numerics.test.ts:
 * an oracle written from PyTorch's NaN/Inf semantics, inputs with NaN/±Inf
 * planted at chosen places, and the element-wise comparison the CPU tests use.
 *
 * The semantics (PyTorch's flex_attention / SDPA math, fp32 arithmetic):
 *  - a masked key (mask_mod false, bool mask false, causal, block not listed)
 *    never contributes, whatever its k or v hold;
 *  - a score of −∞ (from a score mod, an additive −∞ mask, or −∞ in q·k) is the
 *    same as a masked key; NaN + −∞ is NaN, so an additive −∞ does not hide a
 *    NaN score;
 *  - any NaN score among the row's keys makes the whole row NaN (torch.max
 *    propagates NaN), and its LSE NaN;
 *  - a +∞ score gives exp(∞ − ∞) = NaN: a NaN row;
 *  - a row whose every key is masked (or −∞) gives exactly 0 and LSE −∞;
 *  - otherwise out = Σ p·v / Σ p, so NaN or ±∞ in one element of v reaches
 *    that column of the rows attending the key (and no other column).
 */
import { expect } from 'vitest';
import { randnArray, relError } from './reference.js';

export interface Problem {
  B: number; Hq: number; Hkv: number; Sq: number; Skv: number; D: number;
  scale: number;
  /** [B, Hq, Sq, D], [B, Hkv, Skv, D], [B, Hkv, Skv, D], already rounded to the input dtype. */
  q: Float32Array; k: Float32Array; v: Float32Array;
  /** false masks (b, h, q, kv): mask_mod, bool mask, causal, blocks. */
  keep?: (b: number, h: number, q: number, kv: number) => boolean;
  /** score_mod on the scaled score. */
  mod?: (s: number, b: number, h: number, q: number, kv: number) => number;
  /** additive mask, added after the score mod. */
  bias?: (b: number, h: number, q: number, kv: number) => number;
}

/** out [B, Hq, Sq, D] and LSE [B, Hq, Sq] (natural log) in double precision. */
export function oracle(p: Problem): { out: Float64Array; lse: Float64Array } {
  const { B, Hq, Hkv, Sq, Skv, D } = p;
  const out = new Float64Array(B * Hq * Sq * D);
  const lse = new Float64Array(B * Hq * Sq);
  const s = new Float64Array(Skv);
  for (let b = 0; b < B; b++) for (let h = 0; h < Hq; h++) {
    const hk = Math.floor(h / (Hq / Hkv));
    for (let i = 0; i < Sq; i++) {
      const row = (b * Hq + h) * Sq + i;
      let m = -Infinity, nan = false;
      for (let j = 0; j < Skv; j++) {
        s[j] = -Infinity;
        if (p.keep && !p.keep(b, h, i, j)) continue;
        let dot = 0;
        const qo = row * D, ko = ((b * Hkv + hk) * Skv + j) * D;
        for (let d = 0; d < D; d++) dot += p.q[qo + d]! * p.k[ko + d]!;
        let x = dot * p.scale;
        if (p.mod) x = p.mod(x, b, h, i, j);
        if (p.bias) x += p.bias(b, h, i, j);
        s[j] = x;
        if (Number.isNaN(x)) nan = true;
        else if (x > m) m = x;
      }
      if (nan) {
        lse[row] = NaN;
        out.fill(NaN, row * D, (row + 1) * D);
        continue;
      }
      if (m === -Infinity) { lse[row] = -Infinity; continue; } // nothing kept: 0 (already), LSE -inf
      let sum = 0;
      const acc = new Float64Array(D);
      for (let j = 0; j < Skv; j++) {
        if (s[j] === -Infinity) continue; // masked, or a -inf score: never contributes
        const e = Math.exp(s[j]! - m); // +inf score: exp(inf - inf) = NaN
        sum += e;
        const vo = ((b * Hkv + hk) * Skv + j) * D;
        for (let d = 0; d < D; d++) acc[d] += e * p.v[vo + d]!;
      }
      lse[row] = m + Math.log(sum);
      for (let d = 0; d < D; d++) out[row * D + d] = acc[d]! / sum;
    }
  }
  return { out, lse };
}

/** Shape of a [B, H, S, D] array and an element index into it. */
export function at(H: number, S: number, D: number, b: number, h: number, s: number, d = 0): number {
  return ((b * H + h) * S + s) * D + d;
}

/** Seeded random q, k, v (f32) for the problem's dims. */
export function randomQkv(B: number, Hq: number, Hkv: number, Sq: number, Skv: number, D: number, seed: number) {
  return {
    q: randnArray(B * Hq * Sq * D, seed),
    k: randnArray(B * Hkv * Skv * D, seed + 1),
    v: randnArray(B * Hkv * Skv * D, seed + 2),
  };
}

/** Per-row summary: 'nan' (every element NaN), 'zero' (every element exactly 0), 'finite', or 'mixed'. */
export function rowKind(out: ArrayLike<number>, row: number, D: number): 'nan' | 'zero' | 'finite' | 'mixed' {
  let nan = 0, zero = 0, fin = 0;
  for (let d = 0; d < D; d++) {
    const x = out[row * D + d]!;
    if (Number.isNaN(x)) nan++;
    else if (x === 0) zero++;
    if (Number.isFinite(x)) fin++;
  }
  return nan === D ? 'nan' : zero === D ? 'zero' : fin === D ? 'finite' : 'mixed';
}

/** Counts of what the oracle expects, so a test can prove it exercised each case. */
export function census(out: Float64Array, lse: Float64Array, D: number) {
  let nanRows = 0, zeroRows = 0, finiteRows = 0, nonFinite = 0;
  for (let r = 0; r < lse.length; r++) {
    if (Number.isNaN(lse[r]!)) nanRows++;
    else if (lse[r] === -Infinity) zeroRows++;
    else if (rowKind(out, r, D) === 'finite') finiteRows++;
  }
  for (const x of out) if (!Number.isFinite(x)) nonFinite++;
  return { nanRows, zeroRows, finiteRows, nonFinite };
}

/**
 * got equals the oracle element by element: the same NaN positions, the same
 * infinities, exact zeros where it expects 0 (fully masked rows), finite
 * values within `tol` (relative, over all finite entries). LSE alike.
 */
export function expectOracle(got: { out: Float32Array; lse?: Float32Array }, want: { out: Float64Array; lse: Float64Array },
  tol: number, label: string): void {
  expect(got.out.length, label).toBe(want.out.length);
  const a: number[] = [], b: number[] = [];
  let bad = -1;
  for (let i = 0; i < want.out.length && bad < 0; i++) {
    const w = want.out[i]!, g = got.out[i]!;
    let ok: boolean;
    if (Number.isNaN(w)) ok = Number.isNaN(g);
    else if (!Number.isFinite(w)) ok = g === w;
    else if (w === 0) ok = g === 0;
    else {
      ok = Number.isFinite(g);
      a.push(g);
      b.push(w);
    }
    if (!ok) bad = i;
  }
  expect(bad, bad < 0 ? label : `${label}: out[${bad}] = ${got.out[bad]}, want ${want.out[bad]}`).toBe(-1);
  if (a.length) expect(relError(a, b), label).toBeLessThan(tol);
  if (!got.lse) return;
  let badL = -1;
  for (let i = 0; i < want.lse.length && badL < 0; i++) {
    const w = want.lse[i]!, g = got.lse[i]!;
    const ok = Number.isNaN(w) ? Number.isNaN(g) : !Number.isFinite(w) ? g === w : Math.abs(g - w) < 1e-4 * Math.max(1, Math.abs(w));
    if (!ok) badL = i;
  }
  expect(badL, badL < 0 ? label : `${label}: lse[${badL}] = ${got.lse[badL]}, want ${want.lse[badL]}`).toBe(-1);
}
