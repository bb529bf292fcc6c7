/**
 * Random mod generator for differential tests (JS interpreter vs reference,
 * CUDA codegen vs CPU, native VM vs JS) and the reliability soak. Deterministic
 * for a given seed. A test helper, not part of the library: tsconfig.json
 * compiles it to dist/test/random-mods.js (not packaged) so that
 * scripts/reliability/ can load it beside dist/lib.
 * @module
 */
import { f32ToBf16Bits } from '../lib/dtype.js';
import type { CapturedDType, CapturedTensorLike, Expr, ModProgram, Op, ValueType } from '../lib/mods/ir.js';
import { lift, maskMod, param, scoreMod, tensorAt, where, type MaskMod, type ScoreMod } from '../lib/mods/ir.js';
import type { HostEnv, HostTensor } from '../lib/mods/interpret.js';

export { mulberry32 } from '../lib/prng.js';

/** A host-only captured tensor (device 'cpu'); `toHost()` returns its data. */
export interface FakeTensor extends CapturedTensorLike {
  readonly data: Uint16Array | Float32Array | Int32Array | Uint8Array;
}

function contiguous(shape: readonly number[]): number[] {
  const s: number[] = [];
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]!; }
  return s;
}

/** Wraps host data as a capturable tensor (contiguous; bf16/f16 as raw bits). */
export function hostTensor(data: Uint16Array | Float32Array | Int32Array | Uint8Array, shape: readonly number[], dtype: CapturedDType): FakeTensor {
  return {
    data, shape: [...shape], strides: contiguous(shape), offset: 0, dtype, device: 'cpu',
    toHost: async () => data,
  };
}

/** The host env of fake tensors (no await needed). */
export function fakeEnv(tensors: readonly CapturedTensorLike[], params: Record<string, number> = {}): HostEnv {
  return {
    tensors: tensors.map((t): HostTensor => ({ data: (t as FakeTensor).data, dtype: t.dtype, shape: t.shape, strides: contiguous(t.shape) })),
    params,
  };
}


/** A random fake tensor of the given dtype and shape (values in a small range). */
export function randomTensor(rng: () => number, dtype: CapturedDType, shape: readonly number[]): FakeTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const vals = Array.from({ length: n }, () => rng() * 8 - 4);
  switch (dtype) {
    case 'f32': return hostTensor(Float32Array.from(vals), shape, dtype);
    case 'bf16': return hostTensor(Uint16Array.from(vals.map(f32ToBf16Bits)), shape, dtype);
    case 'f16': // random finite halves: sign, exponent 5..20, mantissa
      return hostTensor(Uint16Array.from(vals.map(() => ((rng() < 0.5 ? 0x8000 : 0) | ((5 + Math.floor(rng() * 16)) << 10) | Math.floor(rng() * 1024)))), shape, dtype);
    case 'i32': return hostTensor(Int32Array.from(vals.map((v) => Math.round(v * 2))), shape, dtype);
    case 'bool': return hostTensor(Uint8Array.from(vals.map((v) => (v > 0 ? 1 : 0))), shape, dtype);
  }
}

/** Options of {@link randomMod}. */
export interface RandomModOptions {
  kind: 'score' | 'mask';
  /** Maximum expression depth (default 5). */
  depth?: number;
  /** Allow captured tensors (default true). */
  tensors?: boolean;
  /** Allow runtime params (default true). */
  params?: boolean;
  /**
   * Wider coverage for differential tests (default false, which keeps the mods
   * that existing seeded tests were written against): float constants include
   * NaN, ±Infinity, -0 and extremes; captured tensors have rank 1 to 3, and with
   * {@link RandomModOptions.emptyTensors} sometimes a zero-sized dimension.
   */
  wide?: boolean;
  /** With `wide`: some captured tensors have a zero-sized dimension (they read as 0). */
  emptyTensors?: boolean;
  /**
   * Makes the captured tensor the mod reads from the generated host data (e.g. a
   * device copy for the CUDA backend); default: the host-only {@link FakeTensor}.
   * `tensors` of the result still lists the host fakes, in creation order.
   */
  capture?: (fake: FakeTensor) => CapturedTensorLike;
}

/** A random mod plus the fake tensors and param values it needs. */
export interface RandomMod {
  mod: ScoreMod | MaskMod;
  tensors: FakeTensor[];
  params: Record<string, number>;
  /** Host data of the mod's captured tensors in slot order (from the fakes). */
  env: HostEnv;
}

const INT_CONSTS = [0, 1, 2, 3, -1, -2, 5, 7, 16, 100, -128, 2147483647, -2147483648];
const FLOAT_CONSTS = [0.5, -1.5, 2, 0.1, 3.75, -0.25, 1e-3, 30, 1e6];
const FLOAT_CONSTS_WIDE = [...FLOAT_CONSTS, NaN, Infinity, -0, 0, 3.4e38, 1e-40, 2147483648, 16777217];

type Args = { score: Expr; b: Expr; h: Expr; q: Expr; kv: Expr };
/** A generated expression: rebuilt from the same decisions on every trace (a mod is traced twice). */
type Build = (a: Args) => Expr;

/**
 * Generates a random, well-typed mod. Every IR op can appear (const, arg, param,
 * load of each captured dtype, every arithmetic, comparison, logical and
 * conversion op, where on numeric and Bool branches), nested up to `depth`.
 * All random decisions are drawn first; the traced function only replays them,
 * so it is deterministic as tracing requires.
 */
export function randomMod(rng: () => number, opts: RandomModOptions): RandomMod {
  const maxDepth = opts.depth ?? 5;
  const useT = opts.tensors ?? true;
  const useP = opts.params ?? true;
  const wide = opts.wide ?? false;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;
  const tensors: FakeTensor[] = [];
  const params: Record<string, number> = {};
  const isScore = opts.kind === 'score';
  const floatConsts = wide ? FLOAT_CONSTS_WIDE : FLOAT_CONSTS;
  const lit = (v: number | boolean): Build => () => lift(v);
  const arg = (n: keyof Args): Build => (a) => a[n];
  const fakeOf = new Map<CapturedTensorLike, FakeTensor>();

  // The order of rng() calls below is part of the seeded tests' contract: keep it.
  const gen = (t: ValueType, depth: number): Build => {
    const leaf = depth <= 0 || rng() < 0.2;
    if (leaf) {
      const r = rng();
      if (t === 'bool') {
        if (r < 0.2) return lit(rng() < 0.5);
        const x = gen('int', 1), y = gen('int', 0);
        return (a) => x(a).lt(y(a));
      }
      if (t === 'int') {
        if (r < 0.55) return arg(pick(['b', 'h', 'q', 'kv'] as const));
        if (r < 0.85 || !useP) return lit(pick(INT_CONSTS));
        const name = `pi${Object.keys(params).length}`;
        params[name] = pick([0, 3, -7, 1000]);
        return () => param(name, 'int');
      }
      if (r < 0.4 && isScore) return arg('score');
      if (r < 0.75 || !useP) return lit(rng() < 0.5 ? pick(floatConsts) : -pick(floatConsts));
      const name = `pf${Object.keys(params).length}`;
      params[name] = pick([0.5, -2.25, 1e-2]);
      return () => param(name, 'float');
    }
    const d = depth - 1;
    const r = rng();
    if (useT && r < 0.08 && tensors.length < 4) {
      const dtype: CapturedDType = t === 'int' ? 'i32' : t === 'bool' ? 'bool' : pick(['f32', 'bf16', 'f16'] as const);
      const rank = 1 + Math.floor(rng() * (wide ? 3 : 2));
      const shape = Array.from({ length: rank }, () => (wide && opts.emptyTensors && rng() < 0.1 ? 0 : 1 + Math.floor(rng() * 5)));
      const tt = randomTensor(rng, dtype, shape);
      tensors.push(tt);
      const captured = opts.capture ? opts.capture(tt) : tt;
      fakeOf.set(captured, tt);
      const idx = shape.map(() => gen('int', Math.min(d, 2)));
      return (a) => tensorAt(captured, idx.map((f) => f(a)));
    }
    if (r < 0.15) {
      const c = gen('bool', d), x = gen(t, d), y = gen(t, d);
      return (a) => where(c(a), x(a), y(a));
    }
    if (t === 'bool') {
      const k = rng();
      if (k < 0.35) {
        const nt: ValueType = rng() < 0.5 ? 'int' : 'float';
        const x = gen(nt, d);
        const y = gen(rng() < 0.8 ? nt : 'int', d);
        const op = pick(['lt', 'le', 'gt', 'ge', 'eq', 'ne'] as const);
        return (a) => x(a)[op](y(a));
      }
      if (k < 0.8) {
        const x = gen('bool', d), op = pick(['and', 'or'] as const), y = gen('bool', d);
        return (a) => x(a)[op](y(a));
      }
      if (k < 0.9) { const x = gen('bool', d), y = gen('bool', d); return (a) => x(a).eq(y(a)); }
      const x = gen('bool', d);
      return (a) => x(a).not();
    }
    if (t === 'int') {
      const k = rng();
      if (k < 0.6) {
        const x = gen('int', d), op = pick(['add', 'sub', 'mul', 'floorDiv', 'mod', 'min', 'max'] as const), y = gen('int', d);
        return (a) => x(a)[op](y(a));
      }
      if (k < 0.75) { const x = gen('int', d), op = pick(['neg', 'abs'] as const); return (a) => x(a)[op](); }
      if (k < 0.9) { const x = gen('float', d); return (a) => x(a).toInt(); }
      const x = gen('bool', d);
      return (a) => x(a).toInt();
    }
    const k = rng();
    if (k < 0.45) {
      const x = gen('float', d);
      const y = gen(rng() < 0.8 ? 'float' : 'int', d);
      const op = pick(['add', 'sub', 'mul', 'div', 'min', 'max', 'floorDiv', 'mod'] as const);
      return (a) => x(a)[op](y(a));
    }
    if (k < 0.75) {
      const x = gen(rng() < 0.8 ? 'float' : 'int', d);
      const op = pick(['neg', 'abs', 'exp', 'exp2', 'log', 'tanh', 'sigmoid', 'sqrt'] as const);
      return (a) => x(a)[op]();
    }
    if (k < 0.9) { const x = gen('int', d); return (a) => x(a).toFloat(); }
    const x = gen('bool', d);
    return (a) => x(a).toFloat();
  };
  const build = gen(isScore ? 'float' : 'bool', maxDepth);
  const mod = isScore
    ? scoreMod((a) => build(a))
    : maskMod((a) => build({ b: a.b, h: a.h, q: a.q, kv: a.kv, score: lift(0) }));
  const fakes = mod.tensors.map((t) => fakeOf.get(t)!);
  return { mod, tensors, params, env: fakeEnv(fakes, params) };
}

const DISCONTINUOUS_FLOAT = new Set<Op>(['floorDiv', 'mod', 'lt', 'le', 'gt', 'ge', 'eq', 'ne']);

/**
 * Whether no float op of `p` jumps with its inputs (float floorDiv / mod /
 * comparisons, float → int). A mod with such an op is ill-conditioned for a
 * GPU/CPU comparison: scores that differ in their last bit (summation order)
 * can land on either side of a step, e.g. `0.001 % score³` is finite on one
 * side and NaN at score³ = 0, so only structurally continuous mods are held
 * to an accuracy rule (test/gpu/mods-diff.test.ts, the reliability soak).
 */
export function structurallyContinuous(p: ModProgram): boolean {
  return p.nodes.every((n) => {
    const operand = n.args.length ? p.nodes[n.args[0]!]!.type : n.type;
    if (DISCONTINUOUS_FLOAT.has(n.op) && (n.type === 'float' || operand === 'float')) return false;
    if (n.op === 'toInt' && operand === 'float') return false;
    return true;
  });
}
