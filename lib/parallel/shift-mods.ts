/**
 * Mods seen from a shard: a shard's tokens sit at global positions
 * `localIndex + offset`, so a mod written for global positions runs on a
 * (q chunk, kv chunk) pair with `q` replaced by `q + $cp_q_offset` and `kv`
 * by `kv + $cp_kv_offset`. The offsets are runtime params: every pair of a
 * call (and every call) runs the same compiled kernel.
 * Internal: not exported from the package.
 * @module
 */
import { InvalidArgumentError } from '../errors.js';
import { Expr, MaskMod, ScoreMod, modArgs, param, substituteArgs, type MaskDescriptor } from '../mods/ir.js';

/** Names of the offset params the shifted mods read. */
export const Q_OFFSET = 'cp_q_offset';
export const KV_OFFSET = 'cp_kv_offset';

function offsets(): { q: Expr; kv: Expr } {
  return { q: modArgs.q.add(param(Q_OFFSET, 'int')), kv: modArgs.kv.add(param(KV_OFFSET, 'int')) };
}

function checkNames(mod: ScoreMod | MaskMod, argument: string): void {
  for (const p of mod.params) {
    if (p.name === Q_OFFSET || p.name === KV_OFFSET) {
      throw new InvalidArgumentError(argument, `a mod without a param named ${p.name} (context parallelism uses it for the shard offsets)`, p.name);
    }
  }
}

/** The score mod at shifted positions (the mod itself when it reads neither q nor kv). */
export function shiftScoreMod(mod: ScoreMod, argument = 'options.scoreMod'): ScoreMod {
  checkNames(mod, argument);
  const o = offsets();
  const root = substituteArgs(mod.expr.node, { q: o.q.node, kv: o.kv.node });
  return root === mod.expr.node ? mod : new ScoreMod('score', new Expr(root));
}

/** The mask mod at shifted positions (no analytic form: block masks are evaluated). */
export function shiftMaskMod(mod: MaskMod, argument = 'options.maskMod'): MaskMod {
  checkNames(mod, argument);
  const o = offsets();
  const root = substituteArgs(mod.expr.node, { q: o.q.node, kv: o.kv.node });
  return root === mod.expr.node ? mod : new MaskMod(new Expr(root));
}

/** True when the descriptor depends on positions only through `q − kv` (the same on pairs with equal offsets). */
export function shiftInvariant(d: MaskDescriptor | undefined): boolean {
  if (!d) return false;
  switch (d.kind) {
    case 'causal': case 'full': case 'sliding': return true;
    case 'and': case 'or': return d.parts.every(shiftInvariant);
    case 'not': return shiftInvariant(d.part);
    default: return false;
  }
}

/** True when the descriptor allows no pair with `kv > q` (so a kv chunk entirely after the q chunk is skipped). */
export function impliesCausal(d: MaskDescriptor | undefined): boolean {
  if (!d) return false;
  if (d.kind === 'causal') return true;
  if (d.kind === 'sliding') return d.lookahead <= 0;
  if (d.kind === 'and') return d.parts.some(impliesCausal);
  if (d.kind === 'or') return d.parts.length > 0 && d.parts.every(impliesCausal);
  return false;
}
