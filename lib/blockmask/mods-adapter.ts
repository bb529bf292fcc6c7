/**
 * The only place where block-mask code touches the mods package: analytic
 * descriptors → predicate trees, host evaluation, mask composition.
 * Internal: not exported from the package.
 * @module
 */
import { bindHost } from '../mods/interpret.js';
import { andMasks, orMasks } from '../mods/builtins.js';
import { Expr, maskModWith, modArgs, substituteArgs, type IrNode, type MaskMod, type MaskDescriptor } from '../mods/ir.js';
import type { Pred } from './analytic.js';

/** Predicate tree of a built-in's analytic descriptor, or null when it has none (data-dependent/user masks). */
export function analyticPred(mod: MaskMod): Pred | null {
  return mod.analytic ? descriptorToPred(mod.analytic) : null;
}

const INF = Number.POSITIVE_INFINITY;

/** @internal */
export function descriptorToPred(d: MaskDescriptor): Pred | null {
  switch (d.kind) {
    case 'causal': return { t: 'band', lo: 0, hi: INF };
    case 'full': return { t: 'const', value: true };
    // q - kv < window && kv - q <= lookahead  <=>  -lookahead <= q - kv <= window - 1
    case 'sliding': return { t: 'band', lo: -(d.lookahead ?? 0), hi: d.window - 1 };
    // kv < n || kv <= q
    case 'prefix': return { t: 'or', c: [{ t: 'kvLt', n: d.n }, { t: 'band', lo: 0, hi: INF }] };
    case 'boxes': return { t: 'or', c: d.boxes.map((b) => ({ t: 'box', q0: b.q0, q1: b.q1, kv0: b.kv0, kv1: b.kv1 }) as Pred) };
    case 'and': case 'or': {
      const c: Pred[] = [];
      for (const p of d.parts) { const x = descriptorToPred(p); if (!x) return null; c.push(x); }
      return { t: d.kind, c };
    }
    case 'not': { const x = descriptorToPred(d.part); return x ? { t: 'not', c: x } : null; }
    default: return null;
  }
}

/** Whether the mask reads the batch / head index (if not, one classification serves all of them). */
export function argUse(mod: MaskMod): { b: boolean; h: boolean } {
  let b = false, h = false;
  for (const n of mod.ir.nodes) {
    if (n.op === 'arg' && n.name === 'b') b = true;
    if (n.op === 'arg' && n.name === 'h') h = true;
  }
  return { b, h };
}

/** Host closure `(b, h, q, kv) => boolean` with captured tensors fetched to the host. */
export async function hostMaskFn(mod: MaskMod, params?: Readonly<Record<string, number>>):
  Promise<(b: number, h: number, q: number, kv: number) => boolean> {
  const env = await bindHost(mod, params);
  return mod.toJs(env);
}

/** `a ∧ b` / `a ∨ b` of two mask mods; `null` stands for "no mask" (all true). */
export function combineMasks(op: 'and' | 'or', a: MaskMod | null, b: MaskMod | null): MaskMod | null {
  if (op === 'and') {
    if (a === null) return b;
    if (b === null) return a;
  } else if (a === null || b === null) {
    return null;
  }
  return op === 'and' ? andMasks(a, b) : orMasks(a, b);
}

/**
 * The mask seen through a batch/head slice: `b` and `h` of the new mask are
 * `b + db` and `h + dh` of the original, so a sliced block mask keeps
 * evaluating the right batch/head (PyTorch instead makes a sliced mask's
 * mask_mod unusable).
 */
export function shiftMask(m: MaskMod, db: number, dh: number): MaskMod {
  const use = argUse(m);
  const sb = use.b && db !== 0, sh = use.h && dh !== 0;
  if (!sb && !sh) return m;
  const replace = { ...(sb ? { b: modArgs.b.add(db).node } : {}), ...(sh ? { h: modArgs.h.add(dh).node } : {}) };
  const node = substituteArgs(m.expr.node, replace);
  return maskModWith(() => new Expr(node), m.analytic);
}
