/**
 * Scalar semantics every mod evaluator shares (tracer constant folding, the JS
 * interpreter, the bytecode VM's host side): the f32 → int32 conversion and the
 * checking of runtime param values.
 * @module
 */
import { InvalidArgumentError } from '../errors.js';
import type { ParamInfo } from './ir-types.js';

/** Whether `v` is an integer in int32 range. */
export function isInt32(v: number): boolean {
  return Number.isInteger(v) && v >= -2147483648 && v <= 2147483647;
}

/** f32 → int32 conversion used everywhere: truncate toward zero, saturate, NaN → 0. */
export function f32ToInt(v: number): number {
  if (Number.isNaN(v)) return 0;
  if (v >= 2147483647) return 2147483647;
  if (v <= -2147483648) return -2147483648;
  return Math.trunc(v) | 0;
}

/** @internal Checks and converts user param values against a mod's params. */
export function resolveParams(list: readonly ParamInfo[], values: Readonly<Record<string, number>> | undefined): number[] {
  return list.map((p) => {
    const v = values?.[p.name];
    if (v === undefined) {
      throw new InvalidArgumentError(`params.${p.name}`, `a ${p.type} value for the mod's runtime param '${p.name}'`, 'nothing');
    }
    if (typeof v !== 'number' || Number.isNaN(v) && p.type === 'int') {
      throw new InvalidArgumentError(`params.${p.name}`, `a number`, String(v));
    }
    if (p.type === 'int') {
      if (!isInt32(v)) throw new InvalidArgumentError(`params.${p.name}`, 'an int32 integer', String(v));
      return v | 0; // -0 → 0 (an int has no -0)
    }
    return Math.fround(v);
  });
}
