/**
 * Expression builder and IR for `scoreMod` / `maskMod`.
 *
 * JavaScript has no operator overloading, so mods are written with methods on
 * {@link Expr}: `score.add(slopes.at(h).mul(kv.sub(q)))`. The user's function
 * is traced into a small typed expression DAG, which is then linearised (with
 * structural common-subexpression elimination) into a {@link ModProgram}: the
 * one IR consumed by the CUDA code generator, the JS interpreter and the native
 * bytecode VM.
 *
 * ## A mod never coerces an Expr to a JS value (refused at definition, {@link ModError})
 * Tracing runs the function on symbolic arguments, so anything that asks an
 * expression for a JavaScript value would fold the mod into a constant. Refused:
 * - operators and conversions (`kv <= q`, `score * 2`, `e + 1`, `e == 1`, `Math.max(e, 0)`,
 *   `` `${e}` ``, `String(e)`, `arr[q]`): `Expr[Symbol.toPrimitive]` throws for every hint,
 *   naming the method (`.le()`, `.mul()`, `.add()`, `.eq()`, `tensor.at(...)`). An explicit
 *   `e.toString()` still prints.
 * - control flow (`if (e)`, `e ? a : b`, `e && x`, `!e`: JS treats every object as true):
 *   every expression built from the mod's inputs (an argument, a param or a tensor read)
 *   while it is traced must reach the result; one that does not was consumed by JS →
 *   use `where(cond, a, b)`, `.and()`, `.or()`, `.not()`.
 * - `||`: `e || x` returns `e` and never builds `x`, so nothing shows in the trace; the
 *   mod function's own source text is scanned and any `||` (or `||=`) in it is refused
 *   (for plain JS values compute them outside the mod, or use `??`). Helpers the function
 *   calls are not scanned.
 * - `Math.random()` throws while a mod is traced, and the function is traced twice: two
 *   different programs (a clock, a counter) are refused.
 * - reading an argument the mod does not get (`score` in a maskMod, a misspelt name).
 * - anything else the function throws becomes a ModError whose `cause` is the original.
 * Constant mods on purpose (`fullMask()`, `maskMod(() => true)`) are valid.
 * `===` between expressions compares object identity and cannot be intercepted: use `.eq()`.
 *
 * ## Types and promotion (checked when the mod is defined; errors are {@link ModError})
 * Three value types: `float` (f32), `int` (int32, wrapping arithmetic) and `bool`.
 * - JS numbers lift to constants: an integer-valued number in int32 range is an
 *   `int` constant, anything else a `float` constant (rounded to f32). `true`/`false`
 *   lift to `bool`.
 * - `add sub mul min max`: int ⊕ int → int (wraps like int32); if either side is
 *   float the int side is converted (Python/PyTorch promotion) → float. bool operands
 *   are an error (use `toInt()`/`toFloat()` explicitly).
 * - `div` is true division (Python `/`): always float.
 * - `floorDiv`, `mod`: int ⊕ int → int with Python floor semantics (`-7 // 2 == -4`,
 *   `-7 % 2 == 1`); `x // 0 == 0` and `x % 0 == 0` (defined, never traps). With a float
 *   operand: `floor(a / b)` and `a - b * floor(a / b)` in f32.
 * - `neg abs`: keep int/float. `exp exp2 log tanh sigmoid sqrt`: float (int promoted).
 * - `lt le gt ge`: numeric → bool (mixed int/float compares as float). `eq ne`: numeric
 *   pairs or bool pairs.
 * - `and or not`: bool only. `where(cond, a, b)`: cond must be bool; a and b both
 *   numeric (promoted) or both bool.
 * - `toFloat()`: int/bool → float. `toInt()`: float → int truncating toward zero,
 *   saturating at the int32 range, NaN → 0; bool → 0/1.
 *
 * ## Captured tensors
 * `tensorAt(t, [i, j])` (what `Tensor.at(i, j)` calls) reads an element of a small
 * captured tensor; the number of indices must equal its rank. Indices are int
 * expressions (floats are an error). Out-of-range indices are **clamped** to
 * `[0, size-1]` per dimension on every backend (CUDA, JS, native VM), so a mod
 * evaluated on padded tail positions never reads out of bounds; a tensor with a
 * zero-sized dimension reads as 0. i32 → int, f32/bf16/f16 → float, bool → bool.
 * @module
 */
import { createHash } from 'node:crypto';
import { ModError } from '../errors.js';
import { compileJs, type HostEnv, type MaskFn, type ScoreFn } from './interpret.js';
import type {
  ArgName, CapturedDType, CapturedTensorLike, IrNode, LinearNode, ModProgram, Op, ParamInfo, ValueType,
} from './ir-types.js';
import { f32ToInt, isInt32 } from './scalars.js';
import {
  checkDangling, checkNoLogicalOr, coercionMessage, describeThrown, forbiddenRandom, nondeterministic, structuralHash, valueOfMessage,
  type TraceWhat,
} from './trace-checks.js';

export type {
  ArgName, CapturedDType, CapturedTensorLike, IrNode, LinearNode, ModProgram, Op, ParamInfo, TensorSlotInfo, ValueType,
} from './ir-types.js';
export { f32ToInt } from './scalars.js';
/** @internal */
export { resolveParams } from './scalars.js';

/** Things that lift to an expression: expressions, JS numbers and booleans. */
export type ExprLike = Expr | number | boolean;

const FLOAT_OF = Math.fround;

function typeName(t: ValueType): string {
  return t === 'float' ? 'Float' : t === 'int' ? 'Int' : 'Bool';
}

/** Lifts a JS value to an expression. */
export function lift(x: ExprLike): Expr {
  if (x instanceof Expr) return x;
  if (typeof x === 'boolean') return new Expr({ op: 'const', type: 'bool', args: [], value: x ? 1 : 0 });
  if (typeof x === 'number') {
    if (isInt32(x) && !Object.is(x, -0)) return new Expr({ op: 'const', type: 'int', args: [], value: x });
    return new Expr({ op: 'const', type: 'float', args: [], value: FLOAT_OF(x) });
  }
  throw new ModError(`cannot use ${describeValue(x)} in a mod expression (expected an Expr, number or boolean)`);
}

function describeValue(x: unknown): string {
  if (x === null) return 'null';
  if (typeof x === 'object') return `an object (${(x as object).constructor?.name ?? 'Object'})`;
  return `a ${typeof x} (${String(x)})`;
}

function convert(e: Expr, to: ValueType): Expr {
  if (e.type === to) return e;
  const n = e.node;
  if (n.op === 'const') {
    const v = n.value!;
    if (to === 'float') return new Expr({ op: 'const', type: 'float', args: [], value: FLOAT_OF(v) });
    if (to === 'int') return new Expr({ op: 'const', type: 'int', args: [], value: f32ToInt(v) });
  }
  return new Expr({ op: to === 'float' ? 'toFloat' : 'toInt', type: to, args: [n] });
}

/** Nodes built by `new Expr` while a mod is traced (null outside tracing); see {@link traceOnce}. */
let recording: IrNode[] | null = null;

const BIN_SYM: Partial<Record<Op, string>> = {
  add: '+', sub: '-', mul: '*', div: '/', floorDiv: '//', mod: '%',
  lt: '<', le: '<=', gt: '>', ge: '>=', eq: '==', ne: '!=', and: '&&', or: '||',
};

/**
 * A typed expression inside a mod. Instances are produced by tracing
 * (`score`, `b`, `h`, `q`, `kv`), by {@link param}, by captured-tensor reads and by
 * the methods below; they are immutable.
 */
export class Expr {
  /** @internal */
  readonly node: IrNode;
  /** @internal */
  constructor(node: IrNode) {
    this.node = node;
    recording?.push(node);
  }

  /**
   * Refuses every implicit conversion (`kv <= q`, `score * 2`, `` `${e}` ``, `arr[q]`,
   * `e + 1`, `e == 1`, `Math.max(e, 0)`): a mod expression has no JavaScript value,
   * and a converted one would fold the mod into a constant. The {@link ModError}
   * names the method to use.
   */
  [Symbol.toPrimitive](hint: string): never {
    throw new ModError(coercionMessage(hint), printNode(this.node, undefined, 200));
  }

  /** Throws a {@link ModError}: an expression has no JavaScript value (use its methods). */
  valueOf(): never {
    throw new ModError(valueOfMessage(), printNode(this.node, undefined, 200));
  }

  /** Value type: `'float'`, `'int'` or `'bool'`. */
  get type(): ValueType { return this.node.type; }

  private fail(method: string, msg: string, operands: ExprLike[]): never {
    const parts = operands.map((o) => (o instanceof Expr ? o.toString() : String(o)));
    const printed = operands.length === 1 ? `${parts[0]}.${method}()` : `${parts[0]}.${method}(${parts.slice(1).join(', ')})`;
    throw new ModError(`${method}: ${msg}`, printed);
  }

  private numeric(method: string, others: ExprLike[]): Expr[] {
    const all = [this as Expr, ...others.map((o) => {
      try { return lift(o); } catch (e) { return this.fail(method, (e as Error).message, [this, ...others]); }
    })];
    all.forEach((e, i) => {
      if (e.type === 'bool') {
        this.fail(method, `operand ${i + 1} (${e.toString()}) is Bool; expected Int or Float (use .toInt() or .toFloat())`, all);
      }
    });
    return all;
  }

  private arith(op: Op, other: ExprLike, forceFloat = false): Expr {
    const [a, b] = this.numeric(op, [other]);
    const t: ValueType = forceFloat || a!.type === 'float' || b!.type === 'float' ? 'float' : 'int';
    return new Expr({ op, type: t, args: [convert(a!, t).node, convert(b!, t).node] });
  }

  private unaryFloat(op: Op): Expr {
    const [a] = this.numeric(op, []);
    return new Expr({ op, type: 'float', args: [convert(a!, 'float').node] });
  }

  private compare(op: Op, other: ExprLike): Expr {
    if ((op === 'eq' || op === 'ne') && this.type === 'bool') {
      const o = lift(other);
      if (o.type !== 'bool') this.fail(op, `cannot compare Bool with ${typeName(o.type)}`, [this, o]);
      return new Expr({ op, type: 'bool', args: [this.node, o.node] });
    }
    const [a, b] = this.numeric(op, [other]);
    const t: ValueType = a!.type === 'float' || b!.type === 'float' ? 'float' : 'int';
    return new Expr({ op, type: 'bool', args: [convert(a!, t).node, convert(b!, t).node] });
  }

  private logical(op: 'and' | 'or', other: ExprLike): Expr {
    const o = (() => { try { return lift(other); } catch (e) { return this.fail(op, (e as Error).message, [this]); } })();
    if (this.type !== 'bool' || o.type !== 'bool') {
      this.fail(op, `operands must be Bool, got ${typeName(this.type)} and ${typeName(o.type)} (compare first, e.g. x.ne(0))`, [this, o]);
    }
    return new Expr({ op, type: 'bool', args: [this.node, o.node] });
  }

  /** `this + other` (int32 wrapping for Int ⊕ Int; Float if either is Float). */
  add(other: ExprLike): Expr { return this.arith('add', other); }
  /** `this - other`. */
  sub(other: ExprLike): Expr { return this.arith('sub', other); }
  /** `this * other`. */
  mul(other: ExprLike): Expr { return this.arith('mul', other); }
  /** True division `this / other` (always Float, like Python `/`). */
  div(other: ExprLike): Expr { return this.arith('div', other, true); }
  /** Floor division (Python `//`): Int for Int operands (x // 0 = 0), else `floor(a/b)` as Float. */
  floorDiv(other: ExprLike): Expr { return this.arith('floorDiv', other); }
  /** Python modulo (result has the divisor's sign): Int for Int operands (x % 0 = 0), else Float. */
  mod(other: ExprLike): Expr { return this.arith('mod', other); }
  /** Elementwise minimum (NaN propagates for Float). */
  min(other: ExprLike): Expr { return this.arith('min', other); }
  /** Elementwise maximum (NaN propagates for Float). */
  max(other: ExprLike): Expr { return this.arith('max', other); }
  /** `-this` (Int wraps: -INT_MIN = INT_MIN). */
  neg(): Expr { const [a] = this.numeric('neg', []); return new Expr({ op: 'neg', type: a!.type, args: [a!.node] }); }
  /** `|this|`. */
  abs(): Expr { const [a] = this.numeric('abs', []); return new Expr({ op: 'abs', type: a!.type, args: [a!.node] }); }
  /** `e^this` (Float). */
  exp(): Expr { return this.unaryFloat('exp'); }
  /** `2^this` (Float). */
  exp2(): Expr { return this.unaryFloat('exp2'); }
  /** Natural logarithm (Float). */
  log(): Expr { return this.unaryFloat('log'); }
  /** Hyperbolic tangent (Float; the GPU uses `tanh.approx.f32`). */
  tanh(): Expr { return this.unaryFloat('tanh'); }
  /** Logistic sigmoid `1 / (1 + e^-this)` (Float). */
  sigmoid(): Expr { return this.unaryFloat('sigmoid'); }
  /** Square root (Float). */
  sqrt(): Expr { return this.unaryFloat('sqrt'); }
  /** `this < other` (Bool). */
  lt(other: ExprLike): Expr { return this.compare('lt', other); }
  /** `this <= other` (Bool). */
  le(other: ExprLike): Expr { return this.compare('le', other); }
  /** `this > other` (Bool). */
  gt(other: ExprLike): Expr { return this.compare('gt', other); }
  /** `this >= other` (Bool). */
  ge(other: ExprLike): Expr { return this.compare('ge', other); }
  /** `this == other` (Bool; numeric or Bool operands). */
  eq(other: ExprLike): Expr { return this.compare('eq', other); }
  /** `this != other` (Bool; numeric or Bool operands). */
  ne(other: ExprLike): Expr { return this.compare('ne', other); }
  /** Logical and of two Bools. */
  and(other: ExprLike): Expr { return this.logical('and', other); }
  /** Logical or of two Bools. */
  or(other: ExprLike): Expr { return this.logical('or', other); }
  /** Logical not of a Bool. */
  not(): Expr {
    if (this.type !== 'bool') this.fail('not', `operand must be Bool, got ${typeName(this.type)}`, [this]);
    return new Expr({ op: 'not', type: 'bool', args: [this.node] });
  }
  /**
   * PyTorch's `Tensor.where(condition, other)`: `this` where `cond` is true, else
   * `other`. See also the free function {@link where}`(cond, a, b)`.
   */
  where(cond: ExprLike, other: ExprLike): Expr {
    const c = lift(cond);
    if (this.type === 'bool' && c.type !== 'bool') {
      throw new ModError('where: x.where(cond, other) follows PyTorch\'s Tensor.where (cond is the first argument); '
        + 'for cond ? a : b use the free function where(cond, a, b)', `${this.toString()}.where(${c.toString()}, ${lift(other).toString()})`);
    }
    return where(c, this, other);
  }
  /** Converts Int/Bool to Float (no-op on Float). */
  toFloat(): Expr { return convert(this, 'float'); }
  /** Converts Float (truncating toward zero, saturating, NaN → 0) or Bool (0/1) to Int. */
  toInt(): Expr { return convert(this, 'int'); }

  /**
   * Printed form, e.g. `(score + (t[h] * float((kv - q))))`. Only an explicit call
   * prints: implicit conversions (`${e}`, `String(e)`, `arr[e]`) throw, see
   * `[Symbol.toPrimitive]`.
   */
  toString(): string { return printNode(this.node, undefined, 2000); }
}

/** `a` where `cond` else `b` (`torch.where(cond, a, b)`); `cond` must be Bool. */
export function where(cond: ExprLike, a: ExprLike, b: ExprLike): Expr {
  const vals: Expr[] = [];
  for (const x of [cond, a, b]) {
    try { vals.push(lift(x)); } catch (e) { throw new ModError(`where: ${(e as Error).message}`); }
  }
  const [c, x, y] = vals as [Expr, Expr, Expr];
  const printed = `where(${c.toString()}, ${x.toString()}, ${y.toString()})`;
  if (c.type !== 'bool') throw new ModError(`where: condition must be Bool, got ${typeName(c.type)}`, printed);
  if ((x.type === 'bool') !== (y.type === 'bool')) {
    throw new ModError(`where: branches must both be Bool or both numeric, got ${typeName(x.type)} and ${typeName(y.type)}`, printed);
  }
  const t: ValueType = x.type === 'bool' ? 'bool' : x.type === 'float' || y.type === 'float' ? 'float' : 'int';
  return new Expr({ op: 'where', type: t, args: [c.node, convert(x, t).node, convert(y, t).node] });
}

const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * A runtime scalar: a kernel argument whose value is supplied at call time
 * (`flexAttention(..., { params: { offset: 3 } })`), so changing it never
 * recompiles. `name` must be an identifier; `type` is `'float'` (f32, default)
 * or `'int'` (int32).
 */
export function param(name: string, type: 'float' | 'int' = 'float'): Expr {
  if (typeof name !== 'string' || !PARAM_NAME.test(name)) {
    throw new ModError(`param: name must be an identifier, got ${JSON.stringify(name)}`);
  }
  if (type !== 'float' && type !== 'int') throw new ModError(`param ${name}: type must be 'float' or 'int', got ${describeThrown(type)}`);
  return new Expr({ op: 'param', type, args: [], name });
}

const CAPTURE_DTYPE: Record<CapturedDType, ValueType> = { bf16: 'float', f16: 'float', f32: 'float', i32: 'int', bool: 'bool' };

/**
 * Reads `t[idx...]` inside a mod (what `Tensor.at(...idx)` calls). `t` is a small
 * captured tensor (any device; dtype bf16/f16/f32 → Float, i32 → Int, bool → Bool);
 * `idx` must have exactly `t.shape.length` Int expressions or integers.
 * Out-of-range indices are clamped per dimension.
 */
export function tensorAt(t: CapturedTensorLike, idx: readonly ExprLike[]): Expr {
  if (t === null || typeof t !== 'object' || !Array.isArray(t.shape) || !(t.dtype in CAPTURE_DTYPE)) {
    throw new ModError(`tensor.at: not a capturable tensor (${describeValue(t)})`);
  }
  const shapeStr = `[${t.shape.join(', ')}]`;
  const lifted = idx.map((i) => { try { return lift(i); } catch (e) { throw new ModError(`tensor.at: ${(e as Error).message}`); } });
  const printed = `tensor<${t.dtype}${shapeStr}>[${lifted.map((e) => e.toString()).join(', ')}]`;
  if (idx.length !== t.shape.length) {
    throw new ModError(`tensor.at: a rank-${t.shape.length} tensor ${shapeStr} needs ${t.shape.length} indices, got ${idx.length}`, printed);
  }
  lifted.forEach((e, i) => {
    if (e.type !== 'int') throw new ModError(`tensor.at: index ${i} must be Int, got ${typeName(e.type)} (use .toInt())`, printed);
  });
  return new Expr({ op: 'load', type: CAPTURE_DTYPE[t.dtype], args: lifted.map((e) => e.node), tensor: t });
}

// ---------------------------------------------------------------------------
// Printing

function fmtConst(n: { type: ValueType; value?: number }): string {
  const v = n.value!;
  if (n.type === 'bool') return v ? 'true' : 'false';
  if (n.type === 'int') return String(v);
  if (Number.isFinite(v) && Number.isInteger(v)) return `${v}.0`;
  return shortestF32(v);
}

/** Shortest decimal that rounds to the same f32. */
export function shortestF32(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  for (let p = 1; p <= 9; p++) {
    const s = v.toPrecision(p);
    if (Math.fround(Number(s)) === v) return String(Number(s));
  }
  return String(v);
}

/** Prints a node as an expression; `slots` maps captured tensors to names (t0, t1…). */
export function printNode(root: IrNode, slots: Map<CapturedTensorLike, number> | undefined, budget: number): string {
  let left = budget;
  const rec = (n: IrNode): string => {
    if (left <= 0) return '…';
    let s: string;
    const a = (i: number): string => rec(n.args[i]!);
    switch (n.op) {
      case 'const': s = fmtConst(n); break;
      case 'arg': s = n.name!; break;
      case 'param': s = `$${n.name}`; break;
      case 'load': {
        const t = n.tensor!;
        const name = slots?.has(t) ? `t${slots.get(t)}` : `tensor<${t.dtype}[${t.shape.join(', ')}]>`;
        s = `${name}[${n.args.map((x) => rec(x)).join(', ')}]`;
        break;
      }
      case 'neg': s = `(-${a(0)})`; break;
      case 'not': s = `!${a(0)}`; break;
      case 'toFloat': s = `float(${a(0)})`; break;
      case 'toInt': s = `int(${a(0)})`; break;
      case 'where': s = `where(${a(0)}, ${a(1)}, ${a(2)})`; break;
      case 'min': case 'max': s = `${n.op}(${a(0)}, ${a(1)})`; break;
      default: {
        const sym = BIN_SYM[n.op];
        s = sym ? `(${a(0)} ${sym} ${a(1)})` : `${n.op}(${a(0)})`;
      }
    }
    left -= s.length;
    return s;
  };
  return rec(root);
}

// ---------------------------------------------------------------------------
// Linearisation, hashing, mods

interface Linearized {
  program: ModProgram;
  captured: CapturedTensorLike[];
  slotOf: Map<CapturedTensorLike, number>;
}

function linearize(kind: 'score' | 'mask', root: IrNode): Linearized {
  const nodes: LinearNode[] = [];
  const byKey = new Map<string, number>();
  const memo = new Map<IrNode, number>();
  const captured: CapturedTensorLike[] = [];
  const slotOf = new Map<CapturedTensorLike, number>();
  const params = new Map<string, ParamInfo>();
  // Iterative post-order (deep chains must not overflow the JS stack).
  const stack: Array<[IrNode, boolean]> = [[root, false]];
  while (stack.length) {
    const [n, expanded] = stack.pop()!;
    if (memo.has(n)) continue;
    if (!expanded) {
      stack.push([n, true]);
      for (let i = n.args.length - 1; i >= 0; i--) if (!memo.has(n.args[i]!)) stack.push([n.args[i]!, false]);
      continue;
    }
    const args = n.args.map((x) => memo.get(x)!);
    let slot: number | undefined;
    if (n.op === 'load') {
      slot = slotOf.get(n.tensor!);
      if (slot === undefined) { slot = captured.length; captured.push(n.tensor!); slotOf.set(n.tensor!, slot); }
    }
    if (n.op === 'param') {
      const prev = params.get(n.name!);
      if (prev && prev.type !== n.type) {
        throw new ModError(`param ${n.name} is used both as ${prev.type} and ${n.type}`, `$${n.name}`);
      }
      if (!prev) params.set(n.name!, { name: n.name!, type: n.type as 'float' | 'int' });
    }
    if (n.op === 'arg' && kind === 'mask' && n.name === 'score') {
      throw new ModError('a maskMod cannot read score', 'score');
    }
    const ln: LinearNode = { op: n.op, type: n.type, args, ...(n.value !== undefined ? { value: n.value } : {}),
      ...(n.name !== undefined ? { name: n.name } : {}), ...(slot !== undefined ? { slot } : {}) };
    const key = `${ln.op}|${ln.type}|${Object.is(ln.value, -0) ? '-0' : ln.value}|${ln.name ?? ''}|${slot ?? ''}|${args.join(',')}`;
    let id = byKey.get(key);
    if (id === undefined) { id = nodes.length; nodes.push(ln); byKey.set(key, id); }
    memo.set(n, id);
  }
  const program: ModProgram = {
    kind, nodes, root: memo.get(root)!,
    tensors: captured.map((t) => ({ dtype: t.dtype, rank: t.shape.length })),
    params: [...params.values()],
  };
  return { program, captured, slotOf };
}

/** Canonical text of a program (what the hash is computed from). */
export function programText(p: ModProgram): string {
  const lines = [`${p.kind} root=%${p.root}`,
    `tensors ${p.tensors.map((t) => `${t.dtype}/${t.rank}`).join(' ')}`,
    `params ${p.params.map((x) => `${x.name}:${x.type}`).join(' ')}`];
  p.nodes.forEach((n, i) => {
    const extra = n.op === 'const' ? ` ${Object.is(n.value, -0) ? '-0' : String(n.value)}`
      : n.op === 'arg' || n.op === 'param' ? ` ${n.name}` : n.op === 'load' ? ` t${n.slot}` : '';
    lines.push(`%${i} = ${n.type} ${n.op}${extra}${n.args.length ? ' ' + n.args.map((a) => `%${a}`).join(' ') : ''}`);
  });
  return lines.join('\n');
}

function hashText(s: string): string {
  return createHash('sha256').update(s).digest('hex').slice(0, 32);
}

/** Common part of {@link ScoreMod} and {@link MaskMod}. */
export abstract class ModBase {
  /** `'score'` or `'mask'`. */
  abstract readonly kind: 'score' | 'mask';
  /** Linearised IR (see {@link ModProgram}). */
  readonly ir: ModProgram;
  /** Root of the traced expression tree. */
  readonly expr: Expr;
  /** Captured tensors in slot order (slot i is `t{i}` in `toString()` and `tensors[i]` in the IR). */
  readonly tensors: readonly CapturedTensorLike[];
  /** Runtime params (name and type), in first-use order. */
  readonly params: readonly ParamInfo[];
  /**
   * Stable structural hash (hex): equal for structurally equal mods whatever the
   * captured tensors' identity/values and param values; includes constants,
   * captured dtypes/ranks and param names/types.
   */
  readonly hash: string;
  /** @internal */
  readonly slotOf: ReadonlyMap<CapturedTensorLike, number>;

  /** @internal */
  constructor(kind: 'score' | 'mask', root: Expr) {
    const lin = linearize(kind, root.node);
    this.ir = lin.program;
    this.expr = root;
    this.tensors = lin.captured;
    this.params = lin.program.params;
    this.slotOf = lin.slotOf;
    this.hash = hashText(programText(lin.program));
  }

  /** The expression with captured tensors named by slot, e.g. `(score + t0[h])`. */
  exprString(budget = 4000): string { return printNode(this.expr.node, this.slotOf as Map<CapturedTensorLike, number>, budget); }
}

const ARGS = {
  score: new Expr({ op: 'arg', type: 'float', args: [], name: 'score' }),
  b: new Expr({ op: 'arg', type: 'int', args: [], name: 'b' }),
  h: new Expr({ op: 'arg', type: 'int', args: [], name: 'h' }),
  q: new Expr({ op: 'arg', type: 'int', args: [], name: 'q' }),
  kv: new Expr({ op: 'arg', type: 'int', args: [], name: 'kv' }),
};

/** Arguments passed to a traced score mod. */
export interface ScoreModArgs {
  /** The scaled score `q·k * scale` (Float). */
  readonly score: Expr;
  /** Batch index (Int). */
  readonly b: Expr;
  /** Query head index (Int). */
  readonly h: Expr;
  /** Query position (Int). */
  readonly q: Expr;
  /** Key/value position (Int). */
  readonly kv: Expr;
}

/** Arguments passed to a traced mask mod. */
export type MaskModArgs = Omit<ScoreModArgs, 'score'>;

/** Analytic descriptor of a built-in mask, so block masks can be classified in O(blocks). */
export type MaskDescriptor =
  /** `kv <= q`. */
  | { readonly kind: 'causal' }
  /** Every position allowed. */
  | { readonly kind: 'full' }
  /** `q - kv < window && kv - q <= lookahead`. */
  | { readonly kind: 'sliding'; readonly window: number; readonly lookahead: number }
  /** `kv < n || kv <= q`. */
  | { readonly kind: 'prefix'; readonly n: number }
  /** Union of rectangles `q0 <= q < q1 && kv0 <= kv < kv1` (all batches/heads). */
  | { readonly kind: 'boxes'; readonly boxes: readonly { q0: number; q1: number; kv0: number; kv1: number }[] }
  | { readonly kind: 'and'; readonly parts: readonly MaskDescriptor[] }
  | { readonly kind: 'or'; readonly parts: readonly MaskDescriptor[] }
  | { readonly kind: 'not'; readonly part: MaskDescriptor };

/** A traced `score_mod(score, b, h, q_idx, kv_idx) -> score`. Create with {@link scoreMod}. */
export class ScoreMod extends ModBase {
  readonly kind = 'score' as const;
  /** Readable form, e.g. `scoreMod((score, b, h, q, kv) => (score + t0[h]))`. */
  override toString(): string { return `scoreMod((score, b, h, q, kv) => ${this.exprString()})`; }
  /** Compiles to a JS closure `(score, b, h, q, kv) => number` using host data from {@link bindHost}. */
  toJs(env: HostEnv = { tensors: [] }): ScoreFn { return compileJs(this.ir, env) as ScoreFn; }
}

/** A traced `mask_mod(b, h, q_idx, kv_idx) -> bool` (true = attend). Create with {@link maskMod}. */
export class MaskMod extends ModBase {
  readonly kind = 'mask' as const;
  /** Analytic form for built-ins (undefined for data-dependent or user masks). */
  readonly analytic?: MaskDescriptor;
  /** @internal */
  constructor(root: Expr, analytic?: MaskDescriptor) {
    super('mask', root);
    if (analytic) this.analytic = analytic;
  }
  /** Readable form, e.g. `maskMod((b, h, q, kv) => (kv <= q))`. */
  override toString(): string { return `maskMod((b, h, q, kv) => ${this.exprString()})`; }
  /** Compiles to a JS closure `(b, h, q, kv) => boolean` using host data from {@link bindHost}. */
  toJs(env: HostEnv = { tensors: [] }): MaskFn { return compileJs(this.ir, env) as MaskFn; }
}

const MOD_ARGS: Record<TraceWhat, readonly ArgName[]> = { scoreMod: ['score', 'b', 'h', 'q', 'kv'], maskMod: ['b', 'h', 'q', 'kv'] };

/**
 * The object a mod function receives: its arguments, and a {@link ModError} (not
 * `undefined`, which would surface later as a raw TypeError) for a name it does
 * not get, such as `score` in a maskMod or a misspelt `kV`.
 */
function argsView(what: TraceWhat): object {
  const names = MOD_ARGS[what];
  const target = Object.freeze(Object.fromEntries(names.map((n) => [n, ARGS[n]])));
  const list = `{ ${names.join(', ')} }`;
  return new Proxy(target, {
    get(t, key, receiver) {
      if (typeof key === 'symbol' || key in t || key in Object.prototype || key === 'then' || key === 'toJSON') {
        return Reflect.get(t, key, receiver);
      }
      if (key === 'score') {
        throw new ModError(`maskMod: a mask mod has no 'score' argument (it receives ${list}); to change scores write a scoreMod`);
      }
      throw new ModError(`${what}: the mod reads argument '${key}', which does not exist; a ${what} receives ${list}`);
    },
  });
}
const ARG_VIEWS: Record<TraceWhat, object> = { scoreMod: argsView('scoreMod'), maskMod: argsView('maskMod') };

function resultExpr(what: TraceWhat, r: unknown): Expr {
  if (r instanceof Expr) return r;
  if (typeof r === 'number' || typeof r === 'boolean') return lift(r);
  if (r && typeof (r as { then?: unknown }).then === 'function') {
    throw new ModError(`${what}: the function must return an expression synchronously (got a Promise)`);
  }
  throw new ModError(`${what}: the function must return an Expr, got ${describeValue(r)}`);
}

/**
 * Runs the mod function once on symbolic arguments, recording every expression
 * it builds, with `Math.random` refused. A ModError from our checks passes
 * through; anything else the function throws becomes a ModError whose `cause`
 * is the original error.
 */
function traceOnce(what: TraceWhat, fn: (args: never) => unknown): Expr {
  const savedRecording = recording;
  const savedRandom = Math.random;
  const built: IrNode[] = [];
  recording = built;
  Math.random = forbiddenRandom(what);
  let r: unknown;
  try {
    r = fn(ARG_VIEWS[what] as never);
  } catch (e) {
    if (e instanceof ModError) throw e;
    throw new ModError(`${what}: the mod function threw while being traced: ${describeThrown(e)}`, '', { cause: e });
  } finally {
    recording = savedRecording;
    Math.random = savedRandom;
  }
  const root = resultExpr(what, r);
  checkDangling(what, root.node, built, (n) => printNode(n, undefined, 300));
  return root;
}

/**
 * Traces a mod function (see the module comment for what is refused). It is
 * traced twice: a function whose second trace builds a different program
 * depends on changing state (a clock, a counter, randomness) that would be
 * frozen into the kernel, and is refused.
 */
function callTraced(what: TraceWhat, fn: (args: never) => unknown): Expr {
  if (typeof fn !== 'function') throw new ModError(`${what}: expected a function`);
  checkNoLogicalOr(what, fn);
  const first = traceOnce(what, fn);
  const second = traceOnce(what, fn);
  if (first.node !== second.node && structuralHash(first.node) !== structuralHash(second.node)) throw nondeterministic(what);
  return first;
}

/**
 * Traces `fn` into a {@link ScoreMod} (see the module comment for what is refused). `fn` receives `{score, b, h, q, kv}`
 * (score: Float, the already scaled `q·k`; b, h, q, kv: Int) and returns the new
 * score (Float; an Int result is converted to Float, a Bool is a {@link ModError}).
 *
 * ```ts
 * const bias = scoreMod(({ score, h, q, kv }) => score.add(slopes.at(h).mul(kv.sub(q))));
 * ```
 */
export function scoreMod(fn: (args: ScoreModArgs) => ExprLike): ScoreMod {
  const r = callTraced('scoreMod', fn);
  if (r.type === 'bool') throw new ModError('scoreMod must return a Float score, got Bool', r.toString());
  return new ScoreMod('score', r.toFloat());
}

/**
 * Traces `fn` into a {@link MaskMod} (see the module comment for what is refused). `fn` receives `{b, h, q, kv}` (Int) and
 * returns a Bool (true = this query may attend to this key); anything else is a
 * {@link ModError}.
 *
 * ```ts
 * const causal = maskMod(({ q, kv }) => kv.le(q));
 * ```
 */
export function maskMod(fn: (args: MaskModArgs) => ExprLike): MaskMod {
  return maskModWith(fn, undefined);
}

/** @internal maskMod with an analytic descriptor (built-ins). */
export function maskModWith(fn: (args: MaskModArgs) => ExprLike, analytic: MaskDescriptor | undefined): MaskMod {
  const r = callTraced('maskMod', fn);
  if (r.type !== 'bool') throw new ModError(`maskMod must return a Bool, got ${typeName(r.type)}`, r.toString());
  return new MaskMod(r, analytic);
}

/**
 * @internal Rewrites an expression tree, replacing argument nodes (`score`, `b`,
 * `h`, `q`, `kv`) by the given expressions; shared subtrees stay shared.
 */
export function substituteArgs(root: IrNode, replace: Partial<Record<ArgName, IrNode>>): IrNode {
  const memo = new Map<IrNode, IrNode>();
  const sub = (n: IrNode): IrNode => {
    const hit = memo.get(n);
    if (hit) return hit;
    let r: IrNode;
    const rep = n.op === 'arg' ? replace[n.name as ArgName] : undefined;
    if (rep) r = rep;
    else if (n.args.length === 0) r = n;
    else {
      const args = n.args.map(sub);
      r = args.every((x, i) => x === n.args[i]) ? n : { ...n, args };
    }
    memo.set(n, r);
    return r;
  };
  return sub(root);
}

/** @internal Re-applies a score mod to new arguments (substitutes `score`). */
export function applyScoreMod(m: ScoreMod, score: Expr): Expr {
  return new Expr(substituteArgs(m.expr.node, { score: score.node }));
}

/** @internal Argument expressions (for built-ins and tests). */
export const modArgs: ScoreModArgs = ARGS;
