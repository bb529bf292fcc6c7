/**
 * CPU evaluation of mods: a JS compiler (IR → closure via `new Function`, used by
 * CPU block-mask creation and tests) and a straightforward recursive reference
 * evaluator. Float ops are rounded through `Math.fround` after every operation
 * (f32 semantics), Int ops wrap like int32.
 * @module
 */
import { bf16BitsToF32, f16BitsToF32 } from '../dtype.js';
import { InvalidArgumentError } from '../errors.js';
import type { CapturedDType, CapturedTensorLike, LinearNode, ModProgram, ParamInfo } from './ir-types.js';
import { f32ToInt, resolveParams } from './scalars.js';

// What this file needs of a traced mod, structurally: the tracer (ir.ts) builds
// its `toJs` on this file, so this file cannot import the tracer's classes.
/** A traced mod's program, captured tensors and params (a `ScoreMod` or `MaskMod`). */
interface TracedMod {
  readonly kind: 'score' | 'mask';
  readonly ir: ModProgram;
  readonly tensors: readonly CapturedTensorLike[];
  readonly params: readonly ParamInfo[];
}
type MaskModLike = TracedMod & { readonly kind: 'mask' };
type ScoreModLike = TracedMod & { readonly kind: 'score' };

/** Host data of one captured tensor (element strides relative to `data`). */
export interface HostTensor {
  readonly data: Uint16Array | Float32Array | Int32Array | Uint8Array;
  readonly dtype: CapturedDType;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
}

/** Everything needed to evaluate a mod on the host. */
export interface HostEnv {
  /** Captured tensors in the mod's slot order. */
  readonly tensors: readonly HostTensor[];
  /** Runtime param values by name. */
  readonly params?: Readonly<Record<string, number>>;
}

/** `(b, h, q, kv) => keep` */
export type MaskFn = (b: number, h: number, q: number, kv: number) => boolean;
/** `(score, b, h, q, kv) => score` */
export type ScoreFn = (score: number, b: number, h: number, q: number, kv: number) => number;

function contiguousStrides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]!; }
  return s;
}

/**
 * Fetches the host data of a mod's captured tensors (`toHost()`, contiguous) and
 * checks `params`; the result feeds {@link toJs} and `encodeProgram`.
 * Throws InvalidArgumentError naming a missing param.
 */
export async function bindHost(mod: TracedMod, params?: Readonly<Record<string, number>>): Promise<HostEnv> {
  resolveParams(mod.params, params);
  const tensors = await Promise.all(mod.tensors.map(async (t) => ({
    data: await t.toHost(), dtype: t.dtype, shape: [...t.shape], strides: contiguousStrides(t.shape),
  })));
  return { tensors, params: { ...(params ?? {}) } };
}

// --- f16 / bf16: the exact widening helpers from lib/dtype.ts -------------
/** bf16 bits → number (exact). */
export const bf16ToF32 = bf16BitsToF32;
/** f16 bits → number (exact). */
export const f16ToF32 = f16BitsToF32;

// --- scalar semantics shared by both evaluators ------------------------------
/** Python floor division on int32 (x // 0 = 0). */
export function ifloordiv(a: number, b: number): number {
  if (b === 0) return 0;
  if (b === -1) return (-a) | 0;
  return Math.floor(a / b) | 0;
}
/** Python modulo on int32 (x % 0 = 0). */
export function imod(a: number, b: number): number {
  if (b === 0 || b === -1) return 0;
  const r = a % b;
  // `| 0` also turns JS's -0 (from -4 % 2) into the int 0: an int has no -0, and a
  // leaked one would flip the sign of a later float(x) (1 / float(-4 % 2) = -Infinity).
  return r !== 0 && (r < 0) !== (b < 0) ? (r + b) | 0 : r | 0;
}
const fr = Math.fround;
/** f32 floor division. */
export function ffloordiv(a: number, b: number): number { return fr(Math.floor(fr(a / b))); }
/** f32 Python modulo `a - b*floor(a/b)`. */
export function fmodPy(a: number, b: number): number { return fr(a - fr(b * fr(Math.floor(fr(a / b))))); }
/** f32 min/max propagating NaN. */
export function fmin(a: number, b: number): number { return Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(a, b); }
export function fmax(a: number, b: number): number { return Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a, b); }
export function sigmoid(x: number): number { return fr(1 / (1 + Math.exp(-x))); }

function readElem(t: HostTensor, idx: readonly number[]): number {
  let off = 0;
  for (let d = 0; d < idx.length; d++) {
    const n = t.shape[d]!;
    if (n <= 0) return 0;
    const i = idx[d]! < 0 ? 0 : idx[d]! >= n ? n - 1 : idx[d]!;
    off += i * t.strides[d]!;
  }
  const raw = t.data[off] ?? 0;
  switch (t.dtype) {
    case 'bf16': return bf16ToF32(raw);
    case 'f16': return f16ToF32(raw);
    case 'f32': return raw;
    case 'i32': return raw | 0;
    case 'bool': return raw !== 0 ? 1 : 0;
  }
}

function checkEnv(p: ModProgram, env: HostEnv): number[] {
  if (!env || !Array.isArray(env.tensors) || env.tensors.length !== p.tensors.length) {
    throw new InvalidArgumentError('env.tensors', `${p.tensors.length} captured tensor(s) in slot order`, `${env?.tensors?.length ?? 'none'}`);
  }
  p.tensors.forEach((info, i) => {
    const t = env.tensors[i]!;
    if (t.dtype !== info.dtype || t.shape.length !== info.rank || t.strides.length !== info.rank) {
      throw new InvalidArgumentError(`env.tensors[${i}]`, `a rank-${info.rank} ${info.dtype} tensor`, `rank ${t.shape.length} ${t.dtype}`);
    }
  });
  return resolveParams(p.params, env.params);
}

/** Evaluates one node given already evaluated operand values (the reference semantics). */
export function evalOp(n: LinearNode, v: readonly number[], env: HostEnv, paramVals: readonly number[], p: ModProgram,
  argv: Readonly<Record<string, number>>): number {
  const [a = 0, b = 0, c = 0] = v;
  const F = n.type === 'float';
  switch (n.op) {
    case 'const': return n.value!;
    case 'arg': return argv[n.name!]!;
    case 'param': return paramVals[p.params.findIndex((x) => x.name === n.name)]!;
    case 'load': return readElem(env.tensors[n.slot!]!, v);
    case 'add': return F ? fr(a + b) : (a + b) | 0;
    case 'sub': return F ? fr(a - b) : (a - b) | 0;
    case 'mul': return F ? fr(a * b) : Math.imul(a, b);
    case 'div': return fr(a / b);
    case 'floorDiv': return F ? ffloordiv(a, b) : ifloordiv(a, b);
    case 'mod': return F ? fmodPy(a, b) : imod(a, b);
    case 'min': return F ? fmin(a, b) : Math.min(a, b);
    case 'max': return F ? fmax(a, b) : Math.max(a, b);
    case 'neg': return F ? -a : (-a) | 0;
    case 'abs': return F ? Math.abs(a) : Math.abs(a) | 0;
    case 'exp': return fr(Math.exp(a));
    case 'exp2': return fr(2 ** a);
    case 'log': return fr(Math.log(a));
    case 'tanh': return fr(Math.tanh(a));
    case 'sigmoid': return sigmoid(a);
    case 'sqrt': return fr(Math.sqrt(a));
    case 'lt': return a < b ? 1 : 0;
    case 'le': return a <= b ? 1 : 0;
    case 'gt': return a > b ? 1 : 0;
    case 'ge': return a >= b ? 1 : 0;
    case 'eq': return a === b ? 1 : 0;
    case 'ne': return a !== b ? 1 : 0;
    case 'and': return a && b ? 1 : 0;
    case 'or': return a || b ? 1 : 0;
    case 'not': return a ? 0 : 1;
    case 'where': return a ? b : c;
    case 'toFloat': return fr(a);
    case 'toInt': return f32ToInt(a);
  }
}

/**
 * Straightforward recursive evaluator over the linear IR (no compilation); the
 * oracle the compiled closure and the native VM are tested against. Bool results
 * are 0/1.
 */
export function evaluateReference(p: ModProgram, env: HostEnv, args: { score?: number; b: number; h: number; q: number; kv: number }): number {
  const paramVals = checkEnv(p, env);
  const argv = { score: fr(args.score ?? 0), b: args.b, h: args.h, q: args.q, kv: args.kv };
  const rec = (i: number): number => {
    const n = p.nodes[i]!;
    return evalOp(n, n.args.map(rec), env, paramVals, p, argv);
  };
  return rec(p.root);
}

function jsNum(v: number): string {
  if (Object.is(v, -0)) return '-0';
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return 'Infinity';
  if (v === -Infinity) return '-Infinity';
  return String(v);
}

/** Generates the body of the JS closure for a program. @internal */
export function jsSource(p: ModProgram): string {
  const L: string[] = [];
  const r = (i: number): string => `v${i}`;
  p.nodes.forEach((n, i) => {
    const [a, b, c] = n.args.map(r);
    const F = n.type === 'float';
    let e: string;
    switch (n.op) {
      case 'const': e = jsNum(n.value!); break;
      case 'arg': e = n.name === 'score' ? 'fr(score)' : n.name!; break;
      case 'param': e = `P${p.params.findIndex((x) => x.name === n.name)}`; break;
      case 'load': {
        const s = n.slot!;
        const rank = p.tensors[s]!.rank;
        const parts: string[] = [];
        for (let d = 0; d < rank; d++) parts.push(`clamp(${n.args.map(r)[d]}, N${s}_${d}) * S${s}_${d}`);
        const off = parts.length ? parts.join(' + ') : '0';
        const dt = p.tensors[s]!.dtype;
        const raw = `(E${s} ? 0 : (T${s}[${off}] ?? 0))`;
        e = dt === 'bf16' ? `bf(${raw})` : dt === 'f16' ? `hf(${raw})` : dt === 'i32' ? `(${raw} | 0)` : dt === 'bool' ? `(${raw} !== 0 ? 1 : 0)` : raw;
        break;
      }
      case 'add': e = F ? `fr(${a} + ${b})` : `(${a} + ${b}) | 0`; break;
      case 'sub': e = F ? `fr(${a} - ${b})` : `(${a} - ${b}) | 0`; break;
      case 'mul': e = F ? `fr(${a} * ${b})` : `Math.imul(${a}, ${b})`; break;
      case 'div': e = `fr(${a} / ${b})`; break;
      case 'floorDiv': e = F ? `ffloordiv(${a}, ${b})` : `ifloordiv(${a}, ${b})`; break;
      case 'mod': e = F ? `fmodPy(${a}, ${b})` : `imod(${a}, ${b})`; break;
      case 'min': e = F ? `fmin(${a}, ${b})` : `(${a} < ${b} ? ${a} : ${b})`; break;
      case 'max': e = F ? `fmax(${a}, ${b})` : `(${a} > ${b} ? ${a} : ${b})`; break;
      case 'neg': e = F ? `-${a}` : `(-${a}) | 0`; break;
      case 'abs': e = F ? `Math.abs(${a})` : `Math.abs(${a}) | 0`; break;
      case 'exp': e = `fr(Math.exp(${a}))`; break;
      case 'exp2': e = `fr(2 ** ${a})`; break;
      case 'log': e = `fr(Math.log(${a}))`; break;
      case 'tanh': e = `fr(Math.tanh(${a}))`; break;
      case 'sigmoid': e = `sigmoid(${a})`; break;
      case 'sqrt': e = `fr(Math.sqrt(${a}))`; break;
      case 'lt': e = `(${a} < ${b} ? 1 : 0)`; break;
      case 'le': e = `(${a} <= ${b} ? 1 : 0)`; break;
      case 'gt': e = `(${a} > ${b} ? 1 : 0)`; break;
      case 'ge': e = `(${a} >= ${b} ? 1 : 0)`; break;
      case 'eq': e = `(${a} === ${b} ? 1 : 0)`; break;
      case 'ne': e = `(${a} !== ${b} ? 1 : 0)`; break;
      case 'and': e = `(${a} & ${b})`; break;
      case 'or': e = `(${a} | ${b})`; break;
      case 'not': e = `(${a} ^ 1)`; break;
      case 'where': e = `(${a} ? ${b} : ${c})`; break;
      case 'toFloat': e = `fr(${a})`; break;
      case 'toInt': e = `f2i(${a})`; break;
    }
    L.push(`const v${i} = ${e};`);
  });
  L.push(p.kind === 'mask' ? `return ${r(p.root)} !== 0;` : `return ${r(p.root)};`);
  return L.join('\n');
}

/** Compiles a program to a closure bound to `env`. @internal */
export function compileJs(p: ModProgram, env: HostEnv): MaskFn | ScoreFn {
  const paramVals = checkEnv(p, env);
  const names: string[] = ['fr', 'bf', 'hf', 'ifloordiv', 'imod', 'ffloordiv', 'fmodPy', 'fmin', 'fmax', 'sigmoid', 'f2i', 'clamp'];
  const vals: unknown[] = [fr, bf16ToF32, f16ToF32, ifloordiv, imod, ffloordiv, fmodPy, fmin, fmax, sigmoid, f32ToInt,
    (i: number, n: number) => (i < 0 ? 0 : i >= n ? n - 1 : i)];
  p.tensors.forEach((_, s) => {
    const t = env.tensors[s]!;
    names.push(`T${s}`, `E${s}`);
    vals.push(t.data, t.shape.some((x) => x <= 0));
    t.shape.forEach((n, d) => { names.push(`N${s}_${d}`, `S${s}_${d}`); vals.push(n, t.strides[d]); });
  });
  paramVals.forEach((v, i) => { names.push(`P${i}`); vals.push(v); });
  const sig = p.kind === 'mask' ? 'b, h, q, kv' : 'score, b, h, q, kv';
  const body = `return function ${p.kind}Mod(${sig}) {\n${jsSource(p)}\n};`;
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  const factory = new Function(...names, body) as (...a: unknown[]) => MaskFn | ScoreFn;
  return factory(...vals);
}

/** Compiles a mask mod to `(b, h, q, kv) => boolean` evaluated with `env`'s host data. */
export function toJs(mod: MaskModLike, env?: HostEnv): MaskFn;
/** Compiles a score mod to `(score, b, h, q, kv) => number` (f32-rounded) evaluated with `env`'s host data. */
export function toJs(mod: ScoreModLike, env?: HostEnv): ScoreFn;
export function toJs(mod: TracedMod, env?: HostEnv): MaskFn | ScoreFn;
export function toJs(mod: TracedMod, env: HostEnv = { tensors: [] }): MaskFn | ScoreFn {
  return compileJs(mod.ir, env);
}
