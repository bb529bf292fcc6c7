/**
 * The environment switches that steer launch planning, read at each launch
 * (so a process can compare paths call by call) and handed to the pure planner.
 * A value a switch does not take is an error, not ignored: a typo in a
 * workaround must not silently run the default path.
 * Internal: not exported from the package.
 * @module
 */
import { InvalidArgumentError, NotImplementedError } from '../errors.js';
import { envSwitch } from '../env.js';
import type { PlanSwitches } from './plan.js';
import type { GradForPathSwitches } from './gradfor-plan.js';

/** `v` (the switch `name`'s value) when it is one of `allowed`; unset or empty is `undefined`. */
function oneOf(name: string, v: string | undefined, allowed: readonly string[]): string | undefined {
  if (v === undefined || v === '') return undefined;
  if (!allowed.includes(v)) {
    throw new InvalidArgumentError(`environment variable ${name}`, `one of ${allowed.map((a) => `'${a}'`).join(', ')} (or unset)`, `'${v}'`);
  }
  return v;
}

/** The switches in effect now (see lib/env.ts for their meanings). */
export function planSwitches(): PlanSwitches {
  const family = oneOf('FLEXATTN_KERNEL_FAMILY', envSwitch('FLEXATTN_KERNEL_FAMILY'), ['auto', 'sm80', 'sm90ws']);
  return {
    sm80Only: family === 'sm80',
    sm90ws: family === 'sm90ws',
    fineSchedule: oneOf('FLEXATTN_FINE_SCHEDULE', envSwitch('FLEXATTN_FINE_SCHEDULE'), ['0', '1']) !== '0',
    segments: oneOf('FLEXATTN_SEGMENTS', envSwitch('FLEXATTN_SEGMENTS'), ['0', '1']) !== '0',
    ctaOrder: oneOf('FLEXATTN_CTA_ORDER', envSwitch('FLEXATTN_CTA_ORDER'), ['0', '1']) !== '0',
  };
}

/** Whether small-Sq flex / SDPA calls may take the decode kernel (`FLEXATTN_DECODE`, read at each call). */
export function decodeEnabled(): boolean {
  return oneOf('FLEXATTN_DECODE', envSwitch('FLEXATTN_DECODE'), ['0', '1']) !== '0';
}

/**
 * Whether `FLEXATTN_UNVERIFIED_GPU_PATHS=1` (read at each call): for a plan
 * that chooses between a verified kernel and a faster one not yet run on a GPU
 * (both correct), where {@link requireVerifiedGpuPath} would refuse the call.
 */
export function unverifiedGpuPathsEnabled(): boolean {
  return oneOf('FLEXATTN_UNVERIFIED_GPU_PATHS', envSwitch('FLEXATTN_UNVERIFIED_GPU_PATHS'), ['0', '1']) === '1';
}

/** The gradFor path switches of lib/cuda/gradfor-plan.ts (`FLEXATTN_GRADFOR_FAST`, read at each call). */
export function gradForPathSwitches(): GradForPathSwitches {
  return {
    unverifiedGpuPaths: unverifiedGpuPathsEnabled(),
    fastAllowed: oneOf('FLEXATTN_GRADFOR_FAST', envSwitch('FLEXATTN_GRADFOR_FAST'), ['0', '1']) !== '0',
  };
}

/**
 * Guards a CUDA code path that is written and tested on the CPU side but has
 * not yet run on a GPU: without `FLEXATTN_UNVERIFIED_GPU_PATHS=1` it throws a
 * NotImplementedError naming `what` and the switch, so no unverified kernel
 * can give a wrong answer by default. Read at each call. Each guarded path is
 * listed in the README ("Not yet verified on a GPU"); the guard comes off a
 * path in the commit that records its GPU run.
 */
export function requireVerifiedGpuPath(what: string, instead = "the CPU backend (backend: 'cpu') computes it"): void {
  if (unverifiedGpuPathsEnabled()) return;
  throw new NotImplementedError(`${what} on CUDA has not yet been run on a GPU, so it is off by default; ` +
    `${instead}, and FLEXATTN_UNVERIFIED_GPU_PATHS=1 enables the CUDA path for verification runs`);
}

/**
 * The sm90ws family's guard (it has not yet run on a GPU): undefined when FLEXATTN_UNVERIFIED_GPU_PATHS=1
 * allows it, else the rejected promise of requireVerifiedGpuPath's NotImplementedError for `use` (e.g.
 * 'flex attention on ') the family, for a caller to return before it claims or launches anything.
 */
export function refuseUnverifiedSm90ws(use = ''): Promise<never> | undefined {
  try {
    requireVerifiedGpuPath(`${use}the sm90ws kernel family (FLEXATTN_KERNEL_FAMILY=sm90ws)`,
      'unset FLEXATTN_KERNEL_FAMILY (or set it to auto) for the verified sm90 kernels');
    return undefined;
  } catch (err) {
    return Promise.reject(err);
  }
}
