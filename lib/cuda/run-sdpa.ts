/**
 * GPU SDPA: the dense or causal kernel; a dense mask streams through a
 * generated score mod.
 * Internal: not exported from the package.
 * @module
 */
import type { Tensor } from '../tensor.js';
import type { QkvDims } from '../validate.js';
import { launch } from './launch.js';
import { maskAsScoreMod } from './mod-code.js';
import type { LaunchPlan } from './plan.js';
import { refuseUnverifiedSm90ws } from './switches.js';

/** Arguments of one GPU SDPA launch. */
export interface CudaAttentionArgs {
  q: Tensor; k: Tensor; v: Tensor;
  dims: QkvDims;
  scale: number;
  returnLse: boolean;
  /** Broadcast view [B, Hq, Sq, Skv]: bool (keep) or float (additive). */
  mask?: Tensor;
  /** Checked before each step that could launch. */
  signal?: AbortSignal;
}

/** Runs SDPA on the GPU as `plan` (from planSdpa) says. */
export function runSdpa(plan: LaunchPlan, args: CudaAttentionArgs): Promise<{ out: Tensor; lse?: Tensor }> {
  const { q, k, v, dims, scale, returnLse, mask } = args;
  const refused = plan.family === 'sm90ws' ? refuseUnverifiedSm90ws() : undefined;
  if (refused) return refused;
  return launch({
    q, k, v, d: dims, scale, returnLse, params: {}, plan,
    ...(args.signal ? { signal: args.signal } : {}),
    ...(mask ? { scoreMod: maskAsScoreMod(mask) } : {}),
  });
}
