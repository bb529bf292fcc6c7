/**
 * Analytic block classification for masks that are boolean combinations of
 * position-only predicates (causal, sliding window, prefix). Each block is
 * classified in O(1) when every predicate is constant on it, otherwise row
 * by row with breakpoints (O(block rows)), so the whole mask costs
 * O(QB·KVB + Q·atoms) and never touches Q×KV elements.
 * Internal: not exported from the package.
 * @module
 */
import { EMPTY, FULL, PARTIAL } from './layout.js';

/**
 * A position-only predicate tree over (q, kv):
 * - `band`: `lo <= q - kv <= hi` (either bound may be ±Infinity);
 * - `kvLt` / `qLt`: `kv < n` / `q < n`;
 * - `box`: `q0 <= q < q1 && kv0 <= kv < kv1`;
 * - `const`: always `value`;
 * - `and` / `or` / `not`.
 */
export type Pred =
  | { t: 'band'; lo: number; hi: number }
  | { t: 'kvLt'; n: number }
  | { t: 'qLt'; n: number }
  | { t: 'box'; q0: number; q1: number; kv0: number; kv1: number }
  | { t: 'const'; value: boolean }
  | { t: 'and'; c: Pred[] }
  | { t: 'or'; c: Pred[] }
  | { t: 'not'; c: Pred };

/** Block-level verdict: 0 all false, 2 all true, 1 mixed (exact for atoms), -1 undecided (combinations). */
type Verdict = 0 | 1 | 2 | -1;

/** Point evaluation. */
export function evalPred(p: Pred, q: number, kv: number): boolean {
  switch (p.t) {
    case 'band': { const d = q - kv; return d >= p.lo && d <= p.hi; }
    case 'kvLt': return kv < p.n;
    case 'qLt': return q < p.n;
    case 'box': return q >= p.q0 && q < p.q1 && kv >= p.kv0 && kv < p.kv1;
    case 'const': return p.value;
    case 'and': for (const c of p.c) if (!evalPred(c, q, kv)) return false; return true;
    case 'or': for (const c of p.c) if (evalPred(c, q, kv)) return true; return false;
    case 'not': return !evalPred(p.c, q, kv);
  }
}

/** Classification of `p` on the rectangle [q0,q1]×[k0,k1] (inclusive). */
function verdict(p: Pred, q0: number, q1: number, k0: number, k1: number): Verdict {
  switch (p.t) {
    case 'band': {
      const dmin = q0 - k1, dmax = q1 - k0;
      if (dmax < p.lo || dmin > p.hi || p.lo > p.hi) return EMPTY;
      if (dmin >= p.lo && dmax <= p.hi) return FULL;
      return PARTIAL;
    }
    case 'kvLt': return k1 < p.n ? FULL : k0 >= p.n ? EMPTY : PARTIAL;
    case 'qLt': return q1 < p.n ? FULL : q0 >= p.n ? EMPTY : PARTIAL;
    case 'box':
      if (q1 < p.q0 || q0 >= p.q1 || k1 < p.kv0 || k0 >= p.kv1 || p.q0 >= p.q1 || p.kv0 >= p.kv1) return EMPTY;
      return q0 >= p.q0 && q1 < p.q1 && k0 >= p.kv0 && k1 < p.kv1 ? FULL : PARTIAL;
    case 'const': return p.value ? FULL : EMPTY;
    case 'and': {
      let allFull = true;
      for (const c of p.c) {
        const v = verdict(c, q0, q1, k0, k1);
        if (v === EMPTY) return EMPTY;
        if (v !== FULL) allFull = false;
      }
      return allFull ? FULL : -1;
    }
    case 'or': {
      let allEmpty = true;
      for (const c of p.c) {
        const v = verdict(c, q0, q1, k0, k1);
        if (v === FULL) return FULL;
        if (v !== EMPTY) allEmpty = false;
      }
      return allEmpty ? EMPTY : -1;
    }
    case 'not': {
      const v = verdict(p.c, q0, q1, k0, k1);
      return v === FULL ? EMPTY : v === EMPTY ? FULL : v === PARTIAL ? PARTIAL : -1;
    }
  }
}

/** kv positions (for a fixed q) where some atom of `p` may change value, pushed into `out`. */
function breakpoints(p: Pred, q: number, out: number[]): void {
  switch (p.t) {
    case 'band':
      if (Number.isFinite(p.hi)) out.push(q - p.hi);
      if (Number.isFinite(p.lo)) out.push(q - p.lo + 1);
      return;
    case 'kvLt': out.push(p.n); return;
    case 'box': out.push(p.kv0, p.kv1); return;
    case 'qLt': case 'const': return;
    case 'and': case 'or': for (const c of p.c) breakpoints(c, q, out); return;
    case 'not': breakpoints(p.c, q, out); return;
  }
}

/** Exact classification of an undecided block, row by row; early exit once both values are seen. */
function rowClassify(p: Pred, q0: number, q1: number, k0: number, k1: number): 0 | 1 | 2 {
  let sawT = false, sawF = false;
  const bps: number[] = [];
  for (let q = q0; q <= q1; q++) {
    bps.length = 0;
    bps.push(k0);
    breakpoints(p, q, bps);
    for (const x of bps) {
      if (x < k0 || x > k1) continue;
      if (evalPred(p, q, x)) sawT = true; else sawF = true;
      if (sawT && sawF) return PARTIAL;
    }
  }
  return sawT ? (sawF ? PARTIAL : FULL) : EMPTY;
}

/**
 * kv positions where an atom's block verdict may change along a row of blocks
 * whose queries span [q0, q1] (the thresholds of its conditions).
 */
function thresholds(p: Pred, q0: number, q1: number, out: number[]): void {
  switch (p.t) {
    case 'band':
      if (Number.isFinite(p.hi)) out.push(q0 - p.hi, q1 - p.hi);
      if (Number.isFinite(p.lo)) out.push(q0 - p.lo, q1 - p.lo);
      return;
    case 'kvLt': out.push(p.n); return;
    case 'box': out.push(p.kv0, p.kv1); return;
    case 'qLt': case 'const': return;
    case 'and': case 'or': for (const c of p.c) thresholds(c, q0, q1, out); return;
    case 'not': thresholds(p.c, q0, q1, out); return;
  }
}

/**
 * Classifies every block of a [QB, KVB] grid for `p` (PyTorch semantics: the
 * mask is padded with false beyond qLen/kvLen, so a block overhanging the end
 * is never full). Returns a Uint8Array of 0/1/2, row-major [QB, KVB].
 *
 * Per block row, the blocks next to an atom threshold are "special"; between
 * two special blocks every atom's verdict is constant, so the combined verdict
 * is computed once and the run filled (only undecided runs are resolved block
 * by block). Cost: O(QB·(atoms + KVB/fill)) plus the undecided blocks.
 */
export function classifyAnalytic(p: Pred, qLen: number, kvLen: number, bq: number, bkv: number): Uint8Array {
  const QB = Math.ceil(qLen / bq), KVB = Math.ceil(kvLen / bkv);
  const out = new Uint8Array(QB * KVB);
  const th: number[] = [];
  const specials: number[] = [];
  const blockOf = (c: number) => {
    const k0 = c * bkv;
    return [k0, Math.min(k0 + bkv, kvLen) - 1] as const;
  };
  const exact = (q0: number, q1: number, c: number): number => {
    const [k0, k1] = blockOf(c);
    let v = verdict(p, q0, q1, k0, k1);
    // PARTIAL from verdict() is exact (it only comes from atoms); -1 needs a closer look.
    if (v === -1) v = rowClassify(p, q0, q1, k0, k1);
    return v;
  };
  for (let r = 0; r < QB; r++) {
    const q0 = r * bq, q1 = Math.min(q0 + bq, qLen) - 1;
    const rowOff = r * KVB;
    th.length = 0;
    thresholds(p, q0, q1, th);
    specials.length = 0;
    specials.push(0, KVB - 1);
    for (const x of th) {
      const c = Math.floor(x / bkv);
      for (let d = -1; d <= 1; d++) if (c + d >= 0 && c + d < KVB) specials.push(c + d);
    }
    specials.sort((a, b) => a - b);
    let prev = -1;
    for (let i = 0; i < specials.length; i++) {
      const c = specials[i]!;
      if (c === prev) continue;
      // The run strictly between the previous special block and this one.
      if (c > prev + 1) {
        const s = prev + 1;
        const [k0, k1] = blockOf(s);
        const v = verdict(p, q0, q1, k0, k1);
        if (v !== -1) out.fill(v, rowOff + s, rowOff + c);
        else for (let x = s; x < c; x++) out[rowOff + x] = exact(q0, q1, x);
      }
      out[rowOff + c] = exact(q0, q1, c);
      prev = c;
    }
    // Overhanging blocks are never full (PyTorch pads the mask with False).
    if (q0 + bq > qLen) {
      for (let c = 0; c < KVB; c++) if (out[rowOff + c] === FULL) out[rowOff + c] = PARTIAL;
    } else if ((KVB - 1) * bkv + bkv > kvLen && out[rowOff + KVB - 1] === FULL) {
      out[rowOff + KVB - 1] = PARTIAL;
    }
  }
  return out;
}
