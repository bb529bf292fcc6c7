/**
 * The kv range a decode tile must read, from the structure of its mask mod.
 *
 * A row tile of the decode kernel holds query positions [qa, qb]. For a mask
 * whose position structure is known — a built-in's analytic predicate
 * (lib/blockmask/mods-adapter.ts `analyticPred`: causal, slidingWindow,
 * prefixLM, boxes and their and/or/not), else the position comparisons read
 * off the mask's IR (lib/blockmask/envelope.ts, the `upper` bound the mask
 * implies) — the keys any of those rows can see lie in one interval, the
 * hull of the predicate over q in [qa, qb]. The kernel reads only the kv
 * tiles that meet it and still applies the mask mod to every element it
 * reads, so a hull that is larger than needed costs bandwidth, never
 * correctness; it must never be smaller (test/cuda-kv-range.test.ts).
 *
 * The hull is computed on the device (positions depend on each sequence's
 * length, read from device memory) by a small postfix program in
 * DecodeParams.kv_range, which this module builds. {@link kvRangeHull} is the
 * same evaluation on the host: the planner uses it to size split-KV by the
 * reduced work, and the tests check it against point evaluation.
 * Internal: not exported from the package.
 * @module
 */
import { envelope } from '../blockmask/envelope.js';
import type { Pred } from '../blockmask/analytic.js';
import { analyticPred } from '../blockmask/mods-adapter.js';
import type { MaskMod } from '../mods/index.js';

/** Op codes of the program (decode.cuh's kv_hull reads the same numbers). Each op is 5 ints: code, a, b, c, d. */
export const KV_OP = Object.freeze({
  /** lo <= q - kv <= hi: kv in [qa - hi, qb - lo]. a = lo, b = hi. */
  band: 1,
  /** kv < a. */
  kvLt: 2,
  /** q < a: every kv if qa < a, none otherwise. */
  qLt: 3,
  /** a <= q < b && c <= kv < d. */
  box: 4,
  /** Every kv (a const true, or a part whose hull is not tracked). */
  all: 5,
  /** No kv. */
  none: 6,
  /** Pops a intervals, pushes their intersection. */
  and: 7,
  /** Pops a intervals, pushes their hull. */
  or: 8,
});

/** Ops a program may hold (DecodeParams.kv_range is 80 ints). */
export const KV_RANGE_MAX_OPS = 16;
const INTS_PER_OP = 5;

/**
 * Bounds are clamped to ±2^30 (positions are below 2^30, so a bound beyond
 * that is unbounded); the kernel evaluates in 64 bits.
 */
export const KV_RANGE_INF = 2 ** 30;
const clamp = (x: number): number => (x >= KV_RANGE_INF ? KV_RANGE_INF : x <= -KV_RANGE_INF ? -KV_RANGE_INF : Math.trunc(x));

/** The position predicate the range is taken from: analytic for built-ins, else the IR's upper envelope; null when nothing is known. */
export function rangePred(mod: MaskMod): Pred | null {
  const exact = analyticPred(mod);
  if (exact) return exact;
  const { upper } = envelope(mod.ir);
  return upper.t === 'const' && upper.value ? null : upper;
}

/**
 * The postfix program of `pred`'s kv hull, or an empty array when it bounds
 * nothing (no structure, a `not` over a non-constant part, or more than
 * {@link KV_RANGE_MAX_OPS} ops): the kernel then reads the whole sequence.
 */
export function kvRangeProgram(pred: Pred | null): Int32Array {
  if (!pred) return new Int32Array(0);
  const ops: number[][] = [];
  const emit = (p: Pred): void => {
    switch (p.t) {
      case 'band': ops.push([KV_OP.band, clamp(p.lo), clamp(p.hi), 0, 0]); return;
      case 'kvLt': ops.push([KV_OP.kvLt, clamp(p.n), 0, 0, 0]); return;
      case 'qLt': ops.push([KV_OP.qLt, clamp(p.n), 0, 0, 0]); return;
      case 'box': ops.push([KV_OP.box, clamp(p.q0), clamp(p.q1), clamp(p.kv0), clamp(p.kv1)]); return;
      case 'const': ops.push([p.value ? KV_OP.all : KV_OP.none, 0, 0, 0, 0]); return;
      case 'not':
        // The hull of a complement is not an interval of the part's: only constants are tracked.
        ops.push([p.c.t === 'const' && p.c.value ? KV_OP.none : KV_OP.all, 0, 0, 0, 0]);
        return;
      case 'and': case 'or':
        if (p.c.length === 0) { ops.push([p.t === 'and' ? KV_OP.all : KV_OP.none, 0, 0, 0, 0]); return; }
        for (const c of p.c) emit(c);
        if (p.c.length > 1) ops.push([p.t === 'and' ? KV_OP.and : KV_OP.or, p.c.length, 0, 0, 0]);
        return;
    }
  };
  emit(pred);
  if (ops.length > KV_RANGE_MAX_OPS) return new Int32Array(0);
  if (ops.length === 1 && ops[0]![0] === KV_OP.all) return new Int32Array(0);
  return Int32Array.from(ops.flat());
}

const NONE = new Int32Array(0);
const programs = new WeakMap<MaskMod, Int32Array>();

/** The program for a mask mod (empty without one or without known structure); built once per mod (mods are immutable). */
export function kvRangeOf(mod: MaskMod | undefined | null): Int32Array {
  if (!mod) return NONE;
  let prog = programs.get(mod);
  if (!prog) programs.set(mod, (prog = kvRangeProgram(rangePred(mod))));
  return prog;
}

/**
 * kv interval [lo, hi) that rows at query positions qa..qb (qa <= qb) can see
 * under `prog`, within [0, n): the host twin of decode.cuh's kv_hull (same
 * arithmetic). lo >= hi means no key. An empty program gives [0, n).
 */
export function kvRangeHull(prog: Int32Array, qa: number, qb: number, n: number): [number, number] {
  const ops = prog.length / INTS_PER_OP;
  if (ops === 0) return [0, n];
  const lo: number[] = [], hi: number[] = [];  // inclusive; empty when lo > hi
  const BIG = 2 * KV_RANGE_INF;
  for (let k = 0; k < ops; k++) {
    const o = k * INTS_PER_OP;
    const code = prog[o]!, a = prog[o + 1]!, b = prog[o + 2]!, c = prog[o + 3]!, d = prog[o + 4]!;
    switch (code) {
      case KV_OP.band: lo.push(qa - b); hi.push(qb - a); if (a > b) { lo[lo.length - 1] = 1; hi[hi.length - 1] = 0; } break;
      case KV_OP.kvLt: lo.push(-BIG); hi.push(a - 1); break;
      case KV_OP.qLt: if (qa < a) { lo.push(-BIG); hi.push(BIG); } else { lo.push(1); hi.push(0); } break;
      case KV_OP.box:
        if (qb >= a && qa < b && a < b) { lo.push(c); hi.push(d - 1); } else { lo.push(1); hi.push(0); }
        break;
      case KV_OP.all: lo.push(-BIG); hi.push(BIG); break;
      case KV_OP.none: lo.push(1); hi.push(0); break;
      case KV_OP.and: case KV_OP.or: {
        let l = code === KV_OP.and ? -BIG : BIG, h = code === KV_OP.and ? BIG : -BIG;
        for (let j = 0; j < a; j++) {
          const x = lo.pop()!, y = hi.pop()!;
          if (code === KV_OP.and) { l = Math.max(l, x); h = Math.min(h, y); } else if (x <= y) { l = Math.min(l, x); h = Math.max(h, y); }
        }
        if (l > h) { l = 1; h = 0; }
        lo.push(l); hi.push(h);
        break;
      }
      default: return [0, n];
    }
  }
  const l = Math.max(0, lo[0]!), h = Math.min(n, hi[0]! + 1);
  return l < h ? [l, h] : [0, 0];
}

/**
 * The most kv tokens one row tile reads, for the split planner: over the row
 * tiles of a sequence of n keys and m query tokens (rows token-major, G heads
 * per token, BM rows a tile), with the causal bound and the mask's hull.
 * Positions: n - m + i (endAligned) or i.
 */
export function maxTileKvWork(prog: Int32Array, a: {
  n: number; m: number; G: number; BM: number; causal: boolean; endAligned: boolean;
}): number {
  const { n, m, G, BM } = a;
  if (m <= 0 || n <= 0) return 0;
  const pos0 = a.endAligned ? n - m : 0;
  const tiles = Math.ceil((m * G) / BM);
  // A long chunked prefill has thousands of tiles: an estimate from at most
  // about 64 of them, spread over the rows and including the last, is enough.
  const step = Math.max(1, Math.ceil(tiles / 64));
  let most = 0;
  for (let t = 0; ; t = Math.min(tiles - 1, t + step)) {
    const iFirst = Math.floor((t * BM) / G), iLast = Math.floor((Math.min(m * G, (t + 1) * BM) - 1) / G);
    let total = n;
    if (a.causal) total = Math.max(0, Math.min(n, pos0 + iLast + 1));
    const [lo, hi] = kvRangeHull(prog, pos0 + iFirst, pos0 + iLast, total);
    most = Math.max(most, hi - lo);
    if (most >= n || t === tiles - 1) break;
  }
  return most;
}
