/**
 * Position-only bounds of an arbitrary mask mod, read off its IR: `lower`
 * implies the mask and the mask implies `upper`, where both are predicate
 * trees over (q, kv) built from the mask's own position comparisons (e.g. the
 * `kv <= q` inside a causal document mask); data-dependent parts become
 * false (lower) / true (upper). Tiles where `upper` is empty are empty and
 * tiles where `lower` is full are full without evaluating the mask, so the
 * evaluator (GPU kernel or host) only visits the undecided tiles.
 * Internal: not exported from the package.
 * @module
 */
import { InternalError } from '../errors.js';
import type { MaskMod, ModProgram } from '../mods/ir.js';
import { classifyAnalytic, type Pred } from './analytic.js';
import { EMPTY, FULL } from './layout.js';

interface Lin { cq: number; ckv: number; c0: number }

const LIMIT = 2 ** 30;
const T: Pred = { t: 'const', value: true };
const F: Pred = { t: 'const', value: false };

function isConst(p: Pred, v: boolean): boolean { return p.t === 'const' && p.value === v; }

function and(a: Pred, b: Pred): Pred {
  if (isConst(a, false) || isConst(b, false)) return F;
  if (isConst(a, true)) return b;
  if (isConst(b, true)) return a;
  return { t: 'and', c: [a, b] };
}
function or(a: Pred, b: Pred): Pred {
  if (isConst(a, true) || isConst(b, true)) return T;
  if (isConst(a, false)) return b;
  if (isConst(b, false)) return a;
  return { t: 'or', c: [a, b] };
}
function not(a: Pred): Pred {
  if (a.t === 'const') return { t: 'const', value: !a.value };
  return { t: 'not', c: a };
}

/** `x < n` for x = q or kv. */
function lessThan(axis: 'q' | 'kv', n: number): Pred {
  return axis === 'q' ? { t: 'qLt', n } : { t: 'kvLt', n };
}

/** Exact predicate for `lin op 0`, or null when not position-only in a form we handle. */
function comparison(l: Lin, op: string): Pred | null {
  let { cq, ckv, c0 } = l;
  if (Math.abs(c0) >= LIMIT) return null;
  // Normalise so that the leading non-zero coefficient is positive.
  const flip = cq < 0 || (cq === 0 && ckv < 0);
  if (flip) {
    cq = -cq; ckv = -ckv; c0 = -c0;
    op = ({ lt: 'gt', le: 'ge', gt: 'lt', ge: 'le', eq: 'eq', ne: 'ne' } as Record<string, string>)[op]!;
  }
  // Now x op -c0 with x one of: q - kv (cq=1,ckv=-1), q (1,0), kv (0,1), 0 (0,0).
  const k = -c0;
  const range = (lo: number, hi: number, mk: (lo: number, hi: number) => Pred): Pred => {
    switch (op) {
      case 'lt': return mk(lo, k - 1);
      case 'le': return mk(lo, k);
      case 'gt': return mk(k + 1, hi);
      case 'ge': return mk(k, hi);
      case 'eq': return mk(k, k);
      case 'ne': return not(mk(k, k));
      default: throw new InternalError(`envelope: op ${op}`);
    }
  };
  const INF = Number.POSITIVE_INFINITY;
  if (cq === 1 && ckv === -1) return range(-INF, INF, (lo, hi) => ({ t: 'band', lo, hi }));
  if ((cq === 1 && ckv === 0) || (cq === 0 && ckv === 1)) {
    const axis = cq === 1 ? 'q' : 'kv';
    // lo <= x <= hi  as  not(x < lo) and x < hi + 1
    return range(-INF, INF, (lo, hi) => and(
      Number.isFinite(lo) ? not(lessThan(axis, lo)) : T,
      Number.isFinite(hi) ? lessThan(axis, hi + 1) : T));
  }
  if (cq === 0 && ckv === 0) {
    const v = op === 'lt' ? 0 < k : op === 'le' ? 0 <= k : op === 'gt' ? 0 > k : op === 'ge' ? 0 >= k : op === 'eq' ? k === 0 : k !== 0;
    return { t: 'const', value: v };
  }
  return null;
}

/** `{ lower, upper }` bounds of a mask program (see the module doc). */
export function envelope(p: ModProgram): { lower: Pred; upper: Pred } {
  const lin: (Lin | null)[] = [];
  const lo: Pred[] = [], up: Pred[] = [];
  p.nodes.forEach((n, i) => {
    lin[i] = null;
    lo[i] = F;
    up[i] = T;
    const a = n.args.map((x) => lin[x] ?? null);
    if (n.type === 'int') {
      switch (n.op) {
        case 'arg': if (n.name === 'q') lin[i] = { cq: 1, ckv: 0, c0: 0 }; else if (n.name === 'kv') lin[i] = { cq: 0, ckv: 1, c0: 0 }; break;
        case 'const': lin[i] = { cq: 0, ckv: 0, c0: n.value! }; break;
        case 'add': if (a[0] && a[1]) lin[i] = { cq: a[0].cq + a[1].cq, ckv: a[0].ckv + a[1].ckv, c0: a[0].c0 + a[1].c0 }; break;
        case 'sub': if (a[0] && a[1]) lin[i] = { cq: a[0].cq - a[1].cq, ckv: a[0].ckv - a[1].ckv, c0: a[0].c0 - a[1].c0 }; break;
        case 'neg': if (a[0]) lin[i] = { cq: -a[0].cq, ckv: -a[0].ckv, c0: -a[0].c0 }; break;
        default: break;
      }
      const l = lin[i];
      // Keep only forms that cannot wrap around int32 for positions below 2^30.
      if (l && (Math.abs(l.cq) > 1 || Math.abs(l.ckv) > 1 || Math.abs(l.c0) >= LIMIT)) lin[i] = null;
      return;
    }
    if (n.type !== 'bool') return;
    switch (n.op) {
      case 'const': lo[i] = up[i] = { t: 'const', value: !!n.value }; break;
      case 'lt': case 'le': case 'gt': case 'ge': case 'eq': case 'ne': {
        const [x, y] = n.args.map((j) => lin[j] ?? null);
        if (x && y && p.nodes[n.args[0]!]!.type === 'int') {
          const c = comparison({ cq: x.cq - y.cq, ckv: x.ckv - y.ckv, c0: x.c0 - y.c0 }, n.op);
          if (c) { lo[i] = c; up[i] = c; }
        }
        break;
      }
      case 'and': lo[i] = and(lo[n.args[0]!]!, lo[n.args[1]!]!); up[i] = and(up[n.args[0]!]!, up[n.args[1]!]!); break;
      case 'or': lo[i] = or(lo[n.args[0]!]!, lo[n.args[1]!]!); up[i] = or(up[n.args[0]!]!, up[n.args[1]!]!); break;
      case 'not': lo[i] = not(up[n.args[0]!]!); up[i] = not(lo[n.args[0]!]!); break;
      default: break; // loads, where, bool eq/ne: unknown
    }
  });
  return { lower: lo[p.root]!, upper: up[p.root]! };
}

/**
 * Pre-classification of one [QB, KVB] plane from the envelope: EMPTY / FULL
 * where decided, 255 where the mask must be evaluated. Returns null when the
 * envelope decides nothing (no position-only structure).
 */
export function preclassify(mod: MaskMod, qLen: number, kvLen: number, bq: number, bkv: number):
  { grid: Uint8Array; undecided: Int32Array } | null {
  const { lower, upper } = envelope(mod.ir);
  if (isConst(upper, true) && isConst(lower, false)) return null;
  const QB = Math.ceil(qLen / bq), KVB = Math.ceil(kvLen / bkv);
  const up = isConst(upper, true) ? null : classifyAnalytic(upper, qLen, kvLen, bq, bkv);
  const lo = isConst(lower, false) ? null : classifyAnalytic(lower, qLen, kvLen, bq, bkv);
  const grid = new Uint8Array(QB * KVB);
  let n = 0;
  for (let i = 0; i < grid.length; i++) {
    if (up && up[i] === EMPTY) grid[i] = EMPTY;
    else if (lo && lo[i] === FULL) grid[i] = FULL;
    else { grid[i] = 255; n++; }
  }
  const undecided = new Int32Array(n);
  let j = 0;
  for (let i = 0; i < grid.length; i++) if (grid[i] === 255) undecided[j++] = i;
  return { grid, undecided };
}
