/**
 * Symbolic differentiation of score mods (the IR's third consumer, after the
 * code generators and the interpreters): reverse mode over the traced
 * expression DAG, giving new IR expressions for
 * - `∂ scoreMod / ∂ score`, a function of `(score, b, h, q, kv)`, and
 * - for each read `t[i…]` of a captured float tensor (a *load site*), the
 *   index expressions and `∂ scoreMod / ∂ t[i…]` at that read; the gradient of
 *   an element of `t` is the sum, over the sites that read it, of the weights.
 *
 * Rules follow PyTorch's derivatives: `min`/`max` give the gradient to the
 * selected operand and split it in halves on a tie (torch.minimum/maximum);
 * `where(c, a, b)` sends it to the chosen branch only (the condition has
 * none); `abs` uses sign(x) with sign(0) = 0. Comparisons, indices, `floorDiv`,
 * `toInt` and int arithmetic carry no gradient: an input that reaches the
 * result only through them has no derivative, and asking for it is a
 * {@link NoGradientError}.
 * @module
 */
import { NoGradientError } from '../errors.js';
import type { CapturedTensorLike, IrNode, Op } from './ir-types.js';
import { printNode } from './ir.js';

/** One read `t[indices]` of a captured tensor and the derivative of the mod's result with respect to it. */
export interface LoadSite {
  /** The tensor read. */
  readonly tensor: CapturedTensorLike;
  /** Int index expressions, one per dim (unclamped; reads clamp them per dim). */
  readonly indices: readonly IrNode[];
  /** Float expression of `(score, b, h, q, kv)`: `∂ result / ∂ t[indices]`. */
  readonly weight: IrNode;
}

/** Derivatives of one score mod (see {@link differentiateScoreMod}). */
export interface ScoreModGradient {
  /** `∂ result / ∂ score` (the constant 0 when the mod does not read `score`). */
  readonly dScore: IrNode;
  /** The load sites of each tensor asked for, in the order asked. */
  readonly sites: ReadonlyMap<CapturedTensorLike, readonly LoadSite[]>;
}

const F32 = Math.fround;
const fconst = (v: number): IrNode => ({ op: 'const', type: 'float', args: [], value: F32(v) });
const ZERO = fconst(0);
const isConst = (n: IrNode, v: number): boolean => n.op === 'const' && n.type === 'float' && n.value === v && !Object.is(n.value, -0);
const bin = (op: Op, a: IrNode, b: IrNode): IrNode => ({ op, type: 'float', args: [a, b] });
const cmp = (op: Op, a: IrNode, b: IrNode): IrNode => ({ op, type: 'bool', args: [a, b] });
const where = (c: IrNode, a: IrNode, b: IrNode): IrNode => ({ op: 'where', type: 'float', args: [c, a, b] });
const neg = (a: IrNode): IrNode => (a.op === 'neg' ? a.args[0]! : { op: 'neg', type: 'float', args: [a] });
const add = (a: IrNode, b: IrNode): IrNode => bin('add', a, b);
const sub = (a: IrNode, b: IrNode): IrNode => bin('sub', a, b);
/** `a * b`, dropping a factor that is the constant 1 (exact: x * 1 == x for every f32, NaN included). */
function mul(a: IrNode, b: IrNode): IrNode {
  if (isConst(a, 1)) return b;
  if (isConst(b, 1)) return a;
  return bin('mul', a, b);
}
const div = (a: IrNode, b: IrNode): IrNode => bin('div', a, b);

/** Nodes reachable from `root`, each after every node it reads (iterative: deep chains must not overflow the stack). */
function postOrder(root: IrNode): IrNode[] {
  const out: IrNode[] = [];
  const seen = new Set<IrNode>();
  const stack: Array<[IrNode, boolean]> = [[root, false]];
  while (stack.length) {
    const [n, expanded] = stack.pop()!;
    if (expanded) { out.push(n); continue; }
    if (seen.has(n)) continue;
    seen.add(n);
    stack.push([n, true]);
    for (let i = n.args.length - 1; i >= 0; i--) if (!seen.has(n.args[i]!)) stack.push([n.args[i]!, false]);
  }
  return out;
}

/**
 * The contributions of a float node's adjoint `a` to its operands (`[operand
 * index, contribution]`); none for ops without a derivative.
 */
function partials(n: IrNode, a: IrNode): Array<[number, IrNode]> {
  const [x, y] = n.args as [IrNode, IrNode];
  const isFloat = (i: number): boolean => n.args[i]!.type === 'float';
  const r: Array<[number, IrNode]> = [];
  const push = (i: number, g: () => IrNode): void => { if (isFloat(i)) r.push([i, g()]); };
  switch (n.op) {
    case 'add': push(0, () => a); push(1, () => a); break;
    case 'sub': push(0, () => a); push(1, () => neg(a)); break;
    case 'mul': push(0, () => mul(a, y)); push(1, () => mul(a, x)); break;
    case 'div': push(0, () => div(a, y)); push(1, () => neg(mul(a, div(n, y)))); break;
    // x mod y = x - y * floor(x / y): d/dx = 1, d/dy = -floor(x / y) (torch.remainder's rule).
    case 'mod': push(0, () => a); push(1, () => neg(mul(a, bin('floorDiv', x, y)))); break;
    case 'min': case 'max': {
      // The selected operand gets the gradient, a tie halves it (torch.minimum / torch.maximum).
      const half = mul(a, fconst(0.5));
      const lose = n.op === 'max' ? ['lt', 'gt'] as const : ['gt', 'lt'] as const;
      push(0, () => where(cmp(lose[0], x, y), ZERO, where(cmp('eq', x, y), half, a)));
      push(1, () => where(cmp(lose[1], x, y), ZERO, where(cmp('eq', x, y), half, a)));
      break;
    }
    case 'neg': push(0, () => neg(a)); break;
    case 'abs': // sign(x), sign(0) = 0 (x * 0 keeps a NaN x NaN)
      push(0, () => mul(a, where(cmp('gt', x, ZERO), fconst(1), where(cmp('lt', x, ZERO), fconst(-1), mul(x, ZERO)))));
      break;
    case 'exp': push(0, () => mul(a, n)); break;
    case 'exp2': push(0, () => mul(a, mul(n, fconst(Math.LN2)))); break;
    case 'log': push(0, () => div(a, x)); break;
    case 'tanh': push(0, () => mul(a, sub(fconst(1), mul(n, n)))); break;
    case 'sigmoid': push(0, () => mul(a, mul(n, sub(fconst(1), n)))); break;
    case 'sqrt': push(0, () => div(a, mul(fconst(2), n))); break;
    case 'where': // the chosen branch only
      push(1, () => where(x, a, ZERO));
      push(2, () => where(x, ZERO, a));
      break;
    default: break; // const, arg, param, load, floorDiv (piecewise constant), conversions: no operand gradient
  }
  return r;
}

function isScore(n: IrNode): boolean {
  return n.op === 'arg' && n.name === 'score';
}

/**
 * Differentiates a score mod's expression (`root`, as `ScoreMod.expr.node`).
 * `wrtScore`: also require a derivative with respect to `score` (a mod that
 * reads `score` only through comparisons, indices, `floorDiv` or `toInt` is a
 * {@link NoGradientError}; a mod that does not read it at all has derivative 0).
 * `tensors`: captured tensors whose gradients are wanted; each must be read by
 * the mod and reach its result through a differentiable path (else a
 * {@link NoGradientError} naming it as `argNames[i]`).
 */
export function differentiateScoreMod(root: IrNode, wrtScore: boolean, tensors: readonly CapturedTensorLike[],
  argNames: readonly string[] = tensors.map((_, i) => `gradFor[${i}]`)): ScoreModGradient {
  const order = postOrder(root);
  const adjoint = new Map<IrNode, IrNode>();
  if (root.type === 'float') adjoint.set(root, fconst(1));
  let dScore: IrNode | undefined;
  const wanted = new Set(tensors);
  const sites = new Map<CapturedTensorLike, LoadSite[]>(tensors.map((t) => [t, []]));
  for (let i = order.length - 1; i >= 0; i--) {
    const n = order[i]!;
    const a = adjoint.get(n);
    if (!a) continue;
    if (isScore(n)) { dScore = dScore ? add(dScore, a) : a; continue; }
    if (n.op === 'load') {
      if (wanted.has(n.tensor!)) sites.get(n.tensor!)!.push({ tensor: n.tensor!, indices: n.args, weight: a });
      continue;
    }
    for (const [k, g] of partials(n, a)) {
      const arg = n.args[k]!;
      const prev = adjoint.get(arg);
      adjoint.set(arg, prev ? add(prev, g) : g);
    }
  }
  const expr = printNode(root, undefined, 300);
  if (wrtScore && !dScore && order.some(isScore)) {
    throw new NoGradientError('scoreMod: the result depends on score only through comparisons, indices, floorDiv or toInt, '
      + 'so it has no gradient with respect to score (write the mod so that score reaches the result through arithmetic, '
      + 'e.g. where(cond, score, -Infinity))', expr);
  }
  tensors.forEach((t, i) => {
    if (sites.get(t)!.length > 0) return;
    const read = order.some((n) => n.op === 'load' && n.tensor === t);
    throw new NoGradientError(read
      ? `${argNames[i]}: the scoreMod reads this tensor only through comparisons, indices, floorDiv or toInt, so it has no gradient`
      : `${argNames[i]}: the scoreMod does not read this tensor, so it has no gradient`, expr);
  });
  return { dScore: dScore ?? ZERO, sites };
}
