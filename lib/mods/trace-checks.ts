/**
 * What tracing refuses, and the words it uses.
 *
 * A mod is a JavaScript function run once on symbolic arguments; anything that
 * turns an expression into a JavaScript value (an operator, `if`, `?:`, `&&`,
 * `||`, `!`, a template string, an array index, `Math.random()`) would fold the
 * mod into a constant without an error. Each such path is caught here or in
 * `Expr[Symbol.toPrimitive]`, and the {@link ModError} names the method to use.
 * Internal: not exported from the package.
 * @module
 */
import { ModError } from '../errors.js';
import type { IrNode } from './ir-types.js';
import { findLogicalOr } from './source-scan.js';

/** Which mod is being traced (the first word of every message). */
export type TraceWhat = 'scoreMod' | 'maskMod';

/** Message of `Expr[Symbol.toPrimitive](hint)`: the construct the hint reveals and what to use instead. */
export function coercionMessage(hint: string): string {
  const head = 'a JavaScript value was asked of a mod expression, which only has a value when the kernel runs';
  if (hint === 'number') {
    return `${head}: an arithmetic or comparison operator (< <= > >= - * / % **, unary + or -), Math.*, Number() or isNaN() `
      + 'was applied to it. Use the Expr methods: .lt() .le() .gt() .ge() to compare, .add() .sub() .mul() .div() .mod() '
      + '.floorDiv() .neg() for arithmetic, .min() .max() .abs() .exp() .log() .sqrt() .tanh() instead of Math.*';
  }
  if (hint === 'string') {
    return `${head}: it was turned into a string by a template string, String() or a property key such as arr[expr]. `
      + 'A JavaScript array or object cannot be indexed by an expression: put the data in a captured tensor and read it with '
      + "tensor.at(expr) (e.g. Tensor.fromHost(Int32Array.from(arr), [arr.length], 'i32').at(q)); compute strings outside the "
      + 'mod; to print an expression call expr.toString() explicitly';
  }
  return `${head}: the operator + or == (or !=) was applied to it. Use .add() for +, .eq() / .ne() for == / != `
    + '(=== and !== compare object identity and never see the values: use .eq() / .ne() there too)';
}

/** Message of `Expr.valueOf()` (called explicitly; operators go through Symbol.toPrimitive). */
export function valueOfMessage(): string {
  return `${coercionMessage('number')} (valueOf() cannot give a mod expression's value)`;
}

/** Refuses a mod function whose own source uses `||` (see source-scan.ts for why only the source shows it). */
export function checkNoLogicalOr(what: TraceWhat, fn: (...a: never[]) => unknown): void {
  let src: string;
  try { src = Function.prototype.toString.call(fn); } catch { return; }
  const hit = findLogicalOr(src);
  if (!hit) return;
  throw new ModError(`${what}: the mod function uses \`||\` (${hit.line}). With an expression on its left, JavaScript's || `
    + 'returns that expression and never evaluates the right side (every Expr is truthy), so the mod would lose a term '
    + 'without an error. Use a.or(b) for Bool expressions; for plain JavaScript values compute them outside the mod '
    + '(const w = opts.w || 4; before the mod) or use ?? (an Expr is never null)');
}

/** The `Math.random` installed while a mod is traced. */
export function forbiddenRandom(what: TraceWhat): () => number {
  return () => {
    throw new ModError(`${what}: Math.random() inside a mod: the function is traced when the mod is defined and every JavaScript number becomes `
      + 'a constant of the kernel, so it would give one number for every element. Draw random values outside the mod and '
      + 'read them from a captured tensor with tensor.at(...), or pass a value per call with param(name)');
  };
}

function dependsOnInputs(start: IrNode, memo: Map<IrNode, boolean>): boolean {
  // Iterative post-order (a traced chain can be tens of thousands of nodes deep).
  const stack: Array<[IrNode, boolean]> = [[start, false]];
  while (stack.length) {
    const [n, expanded] = stack.pop()!;
    if (memo.has(n)) continue;
    if (n.op === 'arg' || n.op === 'param' || n.op === 'load') { memo.set(n, true); continue; }
    if (!expanded) {
      stack.push([n, true]);
      for (const a of n.args) if (!memo.has(a)) stack.push([a, false]);
      continue;
    }
    memo.set(n, n.args.some((a) => memo.get(a)));
  }
  return memo.get(start)!;
}

function markBelow(roots: Iterable<IrNode>, into: Set<IrNode>, includeRoots: boolean): void {
  const stack: IrNode[] = [];
  for (const r of roots) {
    if (includeRoots) { if (into.has(r)) continue; into.add(r); }
    stack.push(...r.args);
  }
  while (stack.length) {
    const n = stack.pop()!;
    if (into.has(n)) continue;
    into.add(n);
    stack.push(...n.args);
  }
}

/**
 * After a trace: every expression built from the mod's inputs (an argument, a
 * param or a captured-tensor read) must reach the result. One that does not was
 * consumed by JavaScript control flow (`if (e)`, `e ? a : b`, `e && x`, `!e`),
 * which treats every object as true. `print` formats the offending node.
 */
export function checkDangling(what: TraceWhat, root: IrNode, built: readonly IrNode[], print: (n: IrNode) => string): void {
  if (built.length === 0) return;
  const reach = new Set<IrNode>();
  markBelow([root], reach, true);
  const memo = new Map<IrNode, boolean>();
  const dangling = built.filter((n) => !reach.has(n) && dependsOnInputs(n, memo));
  if (dangling.length === 0) return;
  // Report the outermost one (the condition itself, not a piece of it).
  const inner = new Set<IrNode>();
  markBelow(dangling, inner, false);
  const top = dangling.find((n) => !inner.has(n)) ?? dangling[0]!;
  const printed = print(top);
  const fix = 'Use where(cond, a, b) for if / ?:, cond.and(x) for &&, cond.or(x) for ||, cond.not() for !';
  if (top.type === 'bool') {
    throw new ModError(`${what}: the condition ${printed} is built from the mod's arguments but does not reach the result: `
      + 'JavaScript control flow consumed it. An Expr is an object and JavaScript treats every object as true, so '
      + `if (cond), cond ? a : b, cond && x and !cond never look at its value. ${fix}`, printed);
  }
  throw new ModError(`${what}: the expression ${printed} is built from the mod's arguments but does not reach the result: `
    + 'JavaScript control flow (if, ?:, &&, ||, !, which treat every Expr as true) or a discarded value consumed it. '
    + `${fix}; every expression a mod computes must be part of what it returns`, printed);
}

const OP_CODE = new Map<string, number>();
function strHash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * Structural hash of an expression tree (two 32-bit lanes as a string): equal
 * for trees that linearise to the same program, whatever their sharing. Used to
 * compare a mod's two traces in O(nodes) without linearising them.
 */
export function structuralHash(root: IrNode): string {
  const memo = new Map<IrNode, number>(); // node -> index into h1/h2
  const h1s: number[] = [], h2s: number[] = [];
  const f64 = new Float64Array(1);
  const u32 = new Uint32Array(f64.buffer);
  const stack: IrNode[] = [root];
  while (stack.length) {
    const n = stack[stack.length - 1]!;
    if (memo.has(n)) { stack.pop(); continue; }
    let ready = true;
    for (const a of n.args) if (!memo.has(a)) { stack.push(a); ready = false; }
    if (!ready) continue;
    stack.pop();
    let code = OP_CODE.get(n.op);
    if (code === undefined) { code = strHash(n.op); OP_CODE.set(n.op, code); }
    let h1 = Math.imul(code ^ (n.type === 'float' ? 1 : n.type === 'int' ? 2 : 3), 0x9e3779b1);
    let h2 = Math.imul(code + 0x7f4a7c15, 0x85ebca6b);
    const words: number[] = [];
    if (n.value !== undefined) { f64[0] = n.value; words.push(u32[0]!, u32[1]!); }
    if (n.name !== undefined) words.push(strHash(n.name));
    if (n.tensor) words.push(strHash(n.tensor.dtype), n.tensor.shape.length);
    for (const a of n.args) { const k = memo.get(a)!; words.push(h1s[k]!, h2s[k]!); }
    for (const x of words) {
      h1 = Math.imul(h1 ^ x, 0x01000193) ^ (h1 >>> 15);
      h2 = Math.imul(h2 + x, 0xc2b2ae35) ^ (h2 >>> 13);
    }
    memo.set(n, h1s.length);
    h1s.push(h1 >>> 0);
    h2s.push(h2 >>> 0);
  }
  const k = memo.get(root)!;
  return `${h1s[k]!.toString(16)}:${h2s[k]!.toString(16)}`;
}

/** Refuses a mod whose two traces built different programs. */
export function nondeterministic(what: TraceWhat): ModError {
  return new ModError(`${what}: the mod function is not deterministic: tracing it twice built two different programs `
    + '(Date.now(), performance.now(), crypto, a counter or other changing state in the function?). A mod is traced when it '
    + 'is defined and every JavaScript value becomes a constant of the kernel: compute such values outside the mod and pass '
    + 'them with param(name) or a captured tensor (tensor.at(...))');
}

/** Printable form of any value a user passes, throws or returns (never coerces an Expr, which would throw). */
export function describeThrown(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  if (typeof e === 'symbol') return e.toString();
  if (e === null || (typeof e !== 'object' && typeof e !== 'function')) return String(e);
  return `an object (${(e as object).constructor?.name ?? 'Object'})`;
}
