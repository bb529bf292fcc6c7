/**
 * The GPU launch layer, as the ops use it: plan a launch (pure), then run it.
 * Below it: the JIT (lib/jit.ts) and the addon; beside it, as values: mods and
 * block masks.
 * Internal: not exported from the package (KernelOptions is, through flex.ts).
 * @module
 */
export { deviceCaps, type DeviceCaps } from './device-caps.js';
export { decodeEnabled, planSwitches } from './switches.js';
export {
  planFlex, planSdpa, maskFacts, GPU_HEAD_DIMS, SM90_HEAD_DIMS, SM90WS_MIN_ROWS, type KernelOptions, type FlexPlan, type LaunchPlan, type PlanSwitches,
} from './plan.js';
export { runFlex, type CudaFlexArgs } from './run-flex.js';
export { runSdpa, type CudaAttentionArgs } from './run-sdpa.js';
export { decodeRoute, DECODE_HEAD_DIMS, DECODE_MAX_QUERY } from './plan-decode.js';
export { runDecodeContiguous, runRaggedAttentionCuda, type RaggedAttentionOptions } from './run-ragged.js';
