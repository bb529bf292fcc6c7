/**
 * The environment switches that steer launch planning, read at each launch
 * (so a process can compare paths call by call) and handed to the pure planner.
 * Internal: not exported from the package.
 * @module
 */
import { envSwitch } from '../env.js';
import type { PlanSwitches } from './plan.js';

/** The switches in effect now (see lib/env.ts for their meanings). */
export function planSwitches(): PlanSwitches {
  return {
    sm80Only: envSwitch('FLEXATTN_KERNEL_FAMILY') === 'sm80',
    fineSchedule: envSwitch('FLEXATTN_FINE_SCHEDULE') !== '0',
    segments: envSwitch('FLEXATTN_SEGMENTS') !== '0',
    ctaOrder: envSwitch('FLEXATTN_CTA_ORDER') !== '0',
  };
}
