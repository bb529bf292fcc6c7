/**
 * Float64 oracles for the backward pass: a double-precision evaluator of the
 * mod IR (so score mods can be differentiated numerically without f32
 * rounding), the analytic softmax backward with the score mod's derivative
 * taken by central differences, and finite differences of the f64 forward
 * loss `L = Σ dOut ∘ out` (test/reference.ts's referenceAttention).
 */
import type { ModBase } from '../lib/mods/index.js';
import { ifloordiv, imod } from '../lib/mods/interpret.js';
import { referenceAttention, type RefInput } from './reference.js';

/** Host data of a captured tensor in f64 (contiguous), in the mod's slot order. */
export type F64Tensor = { data: Float64Array | Int32Array | Uint8Array; shape: readonly number[] };

/** Evaluates a mod's linear IR in double precision (no f32 rounding); bools are 0/1. */
export function f64Mod(mod: ModBase, tensors: readonly F64Tensor[], params: Record<string, number> = {}):
  (score: number, b: number, h: number, q: number, kv: number) => number {
  const p = mod.ir;
  const strides = tensors.map((t) => {
    const s: number[] = []; let acc = 1;
    for (let d = t.shape.length - 1; d >= 0; d--) { s[d] = acc; acc *= t.shape[d]!; }
    return s;
  });
  const vals = new Float64Array(p.nodes.length);
  return (score, b, h, q, kv) => {
    const argv: Record<string, number> = { score, b, h, q, kv };
    p.nodes.forEach((n, i) => {
      const [a = 0, x = 0, c = 0] = n.args.map((j) => vals[j]!);
      const F = n.type === 'float';
      let r: number;
      switch (n.op) {
        case 'const': r = n.value!; break;
        case 'arg': r = argv[n.name!]!; break;
        case 'param': r = params[n.name!]!; break;
        case 'load': {
          const t = tensors[n.slot!]!;
          let off = 0;
          n.args.forEach((j, d) => { const ix = Math.min(Math.max(vals[j]!, 0), t.shape[d]! - 1); off += ix * strides[n.slot!]![d]!; });
          r = t.data[off]!;
          break;
        }
        case 'add': r = F ? a + x : (a + x) | 0; break;
        case 'sub': r = F ? a - x : (a - x) | 0; break;
        case 'mul': r = F ? a * x : Math.imul(a, x); break;
        case 'div': r = a / x; break;
        case 'floorDiv': r = F ? Math.floor(a / x) : ifloordiv(a, x); break;
        case 'mod': r = F ? a - x * Math.floor(a / x) : imod(a, x); break;
        case 'min': r = Number.isNaN(a) || Number.isNaN(x) ? NaN : Math.min(a, x); break;
        case 'max': r = Number.isNaN(a) || Number.isNaN(x) ? NaN : Math.max(a, x); break;
        case 'neg': r = F ? -a : (-a) | 0; break;
        case 'abs': r = Math.abs(a); break;
        case 'exp': r = Math.exp(a); break;
        case 'exp2': r = 2 ** a; break;
        case 'log': r = Math.log(a); break;
        case 'tanh': r = Math.tanh(a); break;
        case 'sigmoid': r = 1 / (1 + Math.exp(-a)); break;
        case 'sqrt': r = Math.sqrt(a); break;
        case 'lt': r = a < x ? 1 : 0; break;
        case 'le': r = a <= x ? 1 : 0; break;
        case 'gt': r = a > x ? 1 : 0; break;
        case 'ge': r = a >= x ? 1 : 0; break;
        case 'eq': r = a === x ? 1 : 0; break;
        case 'ne': r = a !== x ? 1 : 0; break;
        case 'and': r = a && x ? 1 : 0; break;
        case 'or': r = a || x ? 1 : 0; break;
        case 'not': r = a ? 0 : 1; break;
        case 'where': r = a ? x : c; break;
        case 'toFloat': r = a; break;
        case 'toInt': r = Number.isNaN(a) ? 0 : Math.trunc(Math.min(Math.max(a, -2147483648), 2147483647)); break;
      }
      vals[i] = r;
    });
    return vals[p.root]!;
  };
}

/** Central difference of f at x in f64 (step relative to |x|). */
export function centralDiff(f: (x: number) => number, x: number, rel = 1e-6): number {
  const h = rel * Math.max(1, Math.abs(x));
  return (f(x + h) - f(x - h)) / (2 * h);
}

/** Σ dOut ∘ out of the f64 forward. */
export function loss(r: RefInput, dOut: ArrayLike<number>): number {
  const { out } = referenceAttention(r);
  let s = 0;
  for (let i = 0; i < out.length; i++) s += dOut[i]! * out[i]!;
  return s;
}

/**
 * Analytic f64 backward (dq, dk, dv) of referenceAttention: P from the f64
 * forward, dS = P (dP − rowsum(dO ∘ O)), chained through the score mod's
 * derivative taken numerically in f64.
 */
export function referenceBackward(r: RefInput, dOut: ArrayLike<number>): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { out, lse } = referenceAttention(r);
  const { B, Hq, Hkv, Sq, Skv, D, Dv, scale } = r;
  const group = Hq / Hkv;
  const dq = new Float64Array(B * Hq * Sq * D), dk = new Float64Array(B * Hkv * Skv * D), dv = new Float64Array(B * Hkv * Skv * Dv);
  for (let b = 0; b < B; b++) for (let h = 0; h < Hq; h++) {
    const hk = Math.floor(h / group);
    for (let i = 0; i < Sq; i++) {
      const row = (b * Hq + h) * Sq + i;
      if (lse[row] === -Infinity) continue;
      const qo = row * D, oo = row * Dv;
      let delta = 0;
      for (let d = 0; d < Dv; d++) delta += dOut[oo + d]! * out[oo + d]!;
      for (let j = 0; j < Skv; j++) {
        if (r.keep && !r.keep(b, h, i, j)) continue;
        const ko = ((b * Hkv + hk) * Skv + j) * D, vo = ((b * Hkv + hk) * Skv + j) * Dv;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += r.q[qo + d]! * r.k[ko + d]!;
        const raw = dot * scale;
        const s = r.scoreMod ? r.scoreMod(raw, b, h, i, j) : raw;
        if (s === -Infinity) continue;
        const p = Math.exp(s - lse[row]!);
        let dp = 0;
        for (let d = 0; d < Dv; d++) dp += dOut[oo + d]! * r.v[vo + d]!;
        const dS = p * (dp - delta);
        const g = dS * (r.scoreMod ? centralDiff((x) => r.scoreMod!(x, b, h, i, j), raw) : 1);
        for (let d = 0; d < D; d++) {
          dq[qo + d] += g * scale * r.k[ko + d]!;
          dk[ko + d] += g * scale * r.q[qo + d]!;
        }
        for (let d = 0; d < Dv; d++) dv[vo + d] += p * dOut[oo + d]!;
      }
    }
  }
  return { dq, dk, dv };
}

/** Finite-difference gradient of `f` with respect to every element of `x` (x is restored). */
export function fdGradient(f: () => number, x: Float64Array, eps = 1e-5): Float64Array {
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const x0 = x[i]!;
    x[i] = x0 + eps; const up = f();
    x[i] = x0 - eps; const down = f();
    x[i] = x0;
    g[i] = (up - down) / (2 * eps);
  }
  return g;
}

/** max |a − b| / (max |b| + floor): a scale-aware worst-case error. */
export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-6): number {
  let worst = 0, scale = floor;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (Number.isNaN(d)) return NaN;
    worst = Math.max(worst, d);
  }
  return worst / scale;
}
