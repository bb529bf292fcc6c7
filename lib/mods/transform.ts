/**
 * IR → IR rewrites of mask mods: the same mask reading other tensors
 * (retargeting captured tensors, e.g. to the handles a call holds or to copies
 * on another device), and the document conjunct `ids[q] == ids[kv]` found and
 * dropped where a segmented grid makes it constant (see lib/cuda/schedules/segments.ts).
 * Rewrites share unchanged subtrees with the input.
 * @module
 */
import { Expr, MaskMod, maskModWith } from './ir.js';
import type { CapturedTensorLike, IrNode } from './ir-types.js';

/** The same mask with captured tensors replaced as `map` says (shared subtrees stay shared). */
export function retargetMask(mod: MaskMod, map: ReadonlyMap<CapturedTensorLike, CapturedTensorLike>): MaskMod {
  if (map.size === 0) return mod;
  const memo = new Map<IrNode, IrNode>();
  const sub = (node: IrNode): IrNode => {
    const hit = memo.get(node);
    if (hit) return hit;
    let r: IrNode = node;
    const args = node.args.map(sub);
    const changedArgs = args.some((x, i) => x !== node.args[i]);
    const t = node.op === 'load' ? map.get(node.tensor!) : undefined;
    if (changedArgs || t) r = { ...node, args, ...(t ? { tensor: t } : {}) };
    memo.set(node, r);
    return r;
  };
  return maskModWith(() => new Expr(sub(mod.expr.node)), mod.analytic);
}

function isArg(n: IrNode | undefined, name: string): boolean {
  return n !== undefined && n.op === 'arg' && n.name === name;
}

/** The conjunct `ids[q] == ids[kv]` of a mask's top-level AND and its id tensor. */
function documentConjunct(mod: MaskMod): { node: IrNode; ids: CapturedTensorLike } | null {
  const stack: IrNode[] = [mod.expr.node];
  while (stack.length > 0) {
    const n = stack.pop()!;
    if (n.op === 'and') { stack.push(...n.args); continue; }
    if (n.op !== 'eq') continue;
    const [x, y] = n.args;
    if (!x || !y || x.op !== 'load' || y.op !== 'load' || !x.tensor || x.tensor !== y.tensor || x.tensor.dtype !== 'i32') continue;
    const r = x.args.length;
    if ((r !== 1 && r !== 2) || y.args.length !== r) continue;
    const qx = x.args[r - 1], qy = y.args[r - 1];
    if (!((isArg(qx, 'q') && isArg(qy, 'kv')) || (isArg(qx, 'kv') && isArg(qy, 'q')))) continue;
    if (r === 2 && !(isArg(x.args[0], 'b') && isArg(y.args[0], 'b'))) continue;
    return { node: n, ids: x.tensor };
  }
  return null;
}

/**
 * The captured id tensor of a conjunct `ids[q] == ids[kv]` (or `ids[b, q] ==
 * ids[b, kv]`, int32) in the mask's top-level AND, or null when there is none.
 */
export function documentIds(mod: MaskMod): CapturedTensorLike | null {
  return documentConjunct(mod)?.ids ?? null;
}

const TRUE: IrNode = { op: 'const', type: 'bool', args: [], value: 1 };

/**
 * The mask as the kernel evaluates it on a segmented grid: the document
 * conjunct replaced by `true` (and dropped from the ANDs it sat in). Exact on
 * every tile such a grid lists: the tile's rows share one id and its columns
 * share one id, so the conjunct is constant over the tile, and a listed tile
 * keeps some pair, where the conjunct holds. (Rows past a short query tile's
 * end and columns past a short kv tile's end belong to the next document; the
 * kernel masks those columns and does not store those rows.) What is left is
 * usually `kv <= q`, which needs no memory reads (faster for document-causal
 * masks: bench/results/kernel-notes.md, "IR rewrites").
 */
export function maskWithinSegments(mod: MaskMod): MaskMod | null {
  const hit = documentConjunct(mod);
  if (!hit) return null;
  const memo = new Map<IrNode, IrNode>();
  const rewrite = (n: IrNode): IrNode => {
    let r = memo.get(n);
    if (r) return r;
    if (n === hit.node) r = TRUE;
    else if (n.args.length === 0) r = n;
    else {
      let args = n.args.map(rewrite);
      if (n.op === 'and') {
        args = args.filter((a) => a !== TRUE);
        r = args.length === 0 ? TRUE : args.length === 1 ? args[0]! : { ...n, args };
      } else r = args.every((a, i) => a === n.args[i]) ? n : { ...n, args };
    }
    memo.set(n, r);
    return r;
  };
  return new MaskMod(new Expr(rewrite(mod.expr.node)));
}
