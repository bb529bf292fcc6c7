/**
 * Random mod generator for differential tests (JS interpreter vs reference,
 * CUDA codegen vs CPU, native VM vs JS). Deterministic for a given seed.
 * Internal: not exported from the package.
 * @module
 */
import { f32ToBf16Bits } from '../dtype.js';
import type { CapturedDType, CapturedTensorLike, Expr, ValueType } from './ir.js';
import { lift, maskMod, param, scoreMod, tensorAt, where, type MaskMod, type ScoreMod } from './ir.js';
import type { HostEnv, HostTensor } from './interpret.js';

/** Small deterministic PRNG (mulberry32) returning floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

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
}

/** A random mod plus the fake tensors and param values it needs. */
export interface RandomMod {
  mod: ScoreMod | MaskMod;
  tensors: FakeTensor[];
  params: Record<string, number>;
  env: HostEnv;
}

const INT_CONSTS = [0, 1, 2, 3, -1, -2, 5, 7, 16, 100, -128, 2147483647, -2147483648];
const FLOAT_CONSTS = [0.5, -1.5, 2, 0.1, 3.75, -0.25, 1e-3, 30, 1e6];

/** Generates a random, well-typed mod. */
export function randomMod(rng: () => number, opts: RandomModOptions): RandomMod {
  const maxDepth = opts.depth ?? 5;
  const useT = opts.tensors ?? true;
  const useP = opts.params ?? true;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;
  const tensors: FakeTensor[] = [];
  const params: Record<string, number> = {};
  const isScore = opts.kind === 'score';
  let args!: { score: Expr; b: Expr; h: Expr; q: Expr; kv: Expr };

  const gen = (t: ValueType, depth: number): Expr => {
    const leaf = depth <= 0 || rng() < 0.2;
    if (leaf) {
      const r = rng();
      if (t === 'bool') return r < 0.2 ? lift(rng() < 0.5) : gen('int', 1).lt(gen('int', 0));
      if (t === 'int') {
        if (r < 0.55) return pick([args.b, args.h, args.q, args.kv]);
        if (r < 0.85 || !useP) return lift(pick(INT_CONSTS));
        const name = `pi${Object.keys(params).length}`;
        params[name] = pick([0, 3, -7, 1000]);
        return param(name, 'int');
      }
      if (r < 0.4 && isScore) return args.score;
      if (r < 0.75 || !useP) return lift(rng() < 0.5 ? pick(FLOAT_CONSTS) : -pick(FLOAT_CONSTS));
      const name = `pf${Object.keys(params).length}`;
      params[name] = pick([0.5, -2.25, 1e-2]);
      return param(name, 'float');
    }
    const d = depth - 1;
    const r = rng();
    if (useT && r < 0.08 && tensors.length < 4) {
      const dtype: import('./ir.js').CapturedDType = t === 'int' ? 'i32' : t === 'bool' ? 'bool' : pick(['f32', 'bf16', 'f16'] as const);
      const rank = 1 + Math.floor(rng() * 2);
      const shape = Array.from({ length: rank }, () => 1 + Math.floor(rng() * 5));
      const tt = randomTensor(rng, dtype, shape);
      tensors.push(tt);
      return tensorAt(tt, shape.map(() => gen('int', Math.min(d, 2))));
    }
    if (r < 0.15) return where(gen('bool', d), gen(t, d), gen(t, d));
    if (t === 'bool') {
      const k = rng();
      if (k < 0.35) {
        const nt: ValueType = rng() < 0.5 ? 'int' : 'float';
        const a = gen(nt, d);
        const b = gen(rng() < 0.8 ? nt : 'int', d);
        return a[pick(['lt', 'le', 'gt', 'ge', 'eq', 'ne'] as const)](b);
      }
      if (k < 0.8) return gen('bool', d)[pick(['and', 'or'] as const)](gen('bool', d));
      if (k < 0.9) return gen('bool', d).eq(gen('bool', d));
      return gen('bool', d).not();
    }
    if (t === 'int') {
      const k = rng();
      if (k < 0.6) return gen('int', d)[pick(['add', 'sub', 'mul', 'floorDiv', 'mod', 'min', 'max'] as const)](gen('int', d));
      if (k < 0.75) return gen('int', d)[pick(['neg', 'abs'] as const)]();
      if (k < 0.9) return gen('float', d).toInt();
      return gen('bool', d).toInt();
    }
    const k = rng();
    if (k < 0.45) {
      const a = gen('float', d);
      const b = gen(rng() < 0.8 ? 'float' : 'int', d);
      return a[pick(['add', 'sub', 'mul', 'div', 'min', 'max', 'floorDiv', 'mod'] as const)](b);
    }
    if (k < 0.75) return gen(rng() < 0.8 ? 'float' : 'int', d)[pick(['neg', 'abs', 'exp', 'exp2', 'log', 'tanh', 'sigmoid', 'sqrt'] as const)]();
    if (k < 0.9) return gen('int', d).toFloat();
    return gen('bool', d).toFloat();
  };
  const mod = isScore
    ? scoreMod((a) => { args = a; return gen('float', maxDepth); })
    : maskMod((a) => { args = { ...a, score: lift(0) }; return gen('bool', maxDepth); });
  return { mod, tensors, params, env: fakeEnv(mod.tensors, params) };
}
