/**
 * Which implementation {@link attention} runs for a spec, and why: `'auto'`
 * takes flex for score mods and masks beyond plain causal, sdpa otherwise.
 * @module
 */
import { InvalidArgumentError } from '../errors.js';
import type { AttentionChoice, Normalized } from './spec.js';

/** The first spec option that is a mask beyond plain causal attention, if any. */
export function hasMaskBeyondCausal(n: Normalized): string | null {
  if (n.docIds) return 'docIds';
  if (n.window) return 'slidingWindow';
  if (n.prefix !== undefined) return 'prefixLM';
  if (n.spans) return 'imageSpans';
  if (n.maskMod) return 'maskMod';
  return null;
}

/** The first spec option that is a score mod, if any. */
export function scoreModOption(n: Normalized): string | null {
  if (n.scoreMod) return 'scoreMod';
  if (n.slopes) return 'alibiSlopes';
  if (n.softcap !== undefined) return 'softcap';
  return null;
}

/** The implementation that runs a normalised spec, and why. */
export function choose(n: Normalized): AttentionChoice {
  const mods = scoreModOption(n);
  const mask = hasMaskBeyondCausal(n);
  if (n.impl !== 'auto') {
    return { impl: n.impl, requested: n.impl, reason: `${n.impl}: requested` };
  }
  if (mods) return { impl: 'flex', requested: 'auto', reason: `auto: ${mods} is a score mod, which only flex can apply` };
  if (mask) {
    return { impl: 'flex', requested: 'auto',
      reason: `auto: ${mask} is a mask SDPA has no flag for; flex skips empty tiles through a block mask (sdpa would stream a dense Sq×Skv mask)` };
  }
  return { impl: 'sdpa', requested: 'auto', reason: `auto: ${n.isCausal ? 'causal' : 'unmasked'} attention runs on the fused dense kernel` };
}

/** Throws for spec options SDPA cannot apply (score mods). */
export function rejectForSdpa(n: Normalized): void {
  const opt = scoreModOption(n);
  if (opt) {
    throw new InvalidArgumentError(`spec.${opt}`,
      `impl: 'flex' (or 'auto') for ${opt}: a score mod cannot be expressed by SDPA's fused kernel`, "impl: 'sdpa'");
  }
}
