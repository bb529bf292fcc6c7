/**
 * The part of a call's params a schedule depends on: the mask mod's own
 * params, by name and value (schedules are cached per mask and this key).
 * Internal: not exported from the package.
 * @module
 */
import type { MaskMod } from '../../mods/ir.js';

export function paramsKey(mod: MaskMod | null, params: Readonly<Record<string, number>>): string {
  return (mod?.params ?? []).map((p) => `${p.name}=${params[p.name]}`).join(',');
}
