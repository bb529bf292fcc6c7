/**
 * A spec's mask and score mods: the built-ins and user mods it names, traced
 * and composed once per spec (memoised by the spec's scalar values and the
 * identity of its tensors and user mods).
 * @module
 */
import type { Tensor } from '../tensor.js';
import {
  MaskMod, ScoreMod, alibi, andMasks, causal, composeScoreMods, documentMask, imageBlocks, prefixLM,
  slidingWindow, softcap as softcapMod,
} from '../mods/index.js';
import type { Normalized } from './spec.js';

// Traced mods per spec (by value of the scalar options, identity of tensors and
// user mods), so a loop does not re-trace and re-hash them on every call. Entries
// that capture a tensor or a user mod hang off that object in a WeakMap, so they
// go away with it; the others (scalars only) are few.
type Memo = { mod: MaskMod | ScoreMod | null; key: string };
const scalarMemo = new Map<string, Memo>();
let objectMemo = new WeakMap<object, Map<string, Memo>>();
const MEMO_MAX = 256;

/** The traced mod for a spec part, made once per (owner, fast key) and its cache key. */
export function memoMod<T extends MaskMod | ScoreMod | null>(owner: object | undefined, fast: string, make: () => T): { mod: T; key: string } {
  let table = scalarMemo;
  if (owner) {
    let t = objectMemo.get(owner);
    if (!t) objectMemo.set(owner, (t = new Map()));
    table = t;
  }
  let hit = table.get(fast);
  if (!hit) {
    if (table.size >= MEMO_MAX) table.clear();
    const mod = make();
    hit = { mod, key: mod ? `${mod.hash}|${mod.tensors.map((t) => idOf(t as object)).join(',')}` : '' };
    table.set(fast, hit);
  }
  return hit as { mod: T; key: string };
}

/** The spec's mask options as a key (scalars by value, tensors and user mods by identity). */
export function maskFastKey(n: Normalized): string {
  return [
    n.isCausal ? 'c' : '', n.docIds ? `d${idOf(n.docIds)}` : '', n.window ? `w${n.window.window},${n.window.lookahead}` : '',
    n.prefix !== undefined ? `p${n.prefix}` : '', n.spans ? `i${JSON.stringify(n.spans)}` : '', n.maskMod ? `m${idOf(n.maskMod)}` : '',
  ].join('|');
}

/** The spec's mask as one MaskMod (null: no mask beyond an optional plain causal handled natively). */
export function specMask(n: Normalized, docIds?: Tensor): MaskMod | null {
  const parts: MaskMod[] = [];
  const selfCausal = !!(n.window || n.prefix !== undefined || n.spans);
  if (n.isCausal && !selfCausal && !n.docIds) parts.push(causal());
  if (n.docIds) parts.push(documentMask(docIds ?? n.docIds, { causal: n.isCausal && !selfCausal }));
  if (n.window) parts.push(slidingWindow(n.window.window, { lookahead: n.window.lookahead }));
  if (n.prefix !== undefined) parts.push(prefixLM(n.prefix));
  if (n.spans) parts.push(imageBlocks(n.spans));
  if (n.maskMod) parts.push(n.maskMod);
  if (parts.length === 0) return null;
  return parts.length === 1 ? parts[0]! : andMasks(...parts);
}

/** The spec's score mods composed (user mod, then ALiBi, then softcap). */
export function specScoreMod(n: Normalized, slopes?: Tensor): ScoreMod | undefined {
  const mods: ScoreMod[] = [];
  if (n.scoreMod) mods.push(n.scoreMod);
  if (slopes) mods.push(alibi(slopes));
  if (n.softcap !== undefined) mods.push(softcapMod(n.softcap));
  if (mods.length === 0) return undefined;
  return mods.length === 1 ? mods[0] : composeScoreMods(...mods);
}

const ids = new WeakMap<object, number>();
let nextId = 1;

/** A number per object (tensor, mod), stable for its lifetime: the identity part of cache keys. */
export function idOf(x: object): number {
  let id = ids.get(x);
  if (id === undefined) { id = nextId++; ids.set(x, id); }
  return id;
}

/** Forgets every memoised mod (see clearAttentionCache). */
export function clearModMemo(): void {
  scalarMemo.clear();
  objectMemo = new WeakMap();
}
