/**
 * Gate for test/gpu/**: those suites run only where a CUDA device is usable.
 * Without one they skip with a printed reason; with FLEXATTN_REQUIRE_GPU=1 the
 * missing device is a failure instead, so a broken loader cannot pass silently
 * on the GPU machine.
 */
import { describe, it } from 'vitest';
import { envSwitch } from '../lib/env.js';
import { nativeAvailable, native } from '../lib/native.js';

function probe(): string | null {
  if (!nativeAvailable()) return 'native addon not built';
  try {
    const s = native().cudaStatus();
    if (!s.driverLoaded) return `no CUDA driver (${s.driverError || 'libcuda.so.1 not found'})`;
    if (s.deviceCount < 1) return 'CUDA driver loaded but no device present';
    return null;
  } catch (e) {
    return `CUDA probe failed: ${(e as Error).message}`;
  }
}

/** Why GPU tests cannot run here, or null when they can. */
export const gpuSkipReason: string | null = probe();
export const requireGpu = envSwitch('FLEXATTN_REQUIRE_GPU') === '1';

/** `describe` for GPU suites: skips (printing why) without a device, fails if FLEXATTN_REQUIRE_GPU=1. */
export function describeGpu(name: string, fn: () => void): void {
  if (gpuSkipReason === null) {
    describe(name, fn);
  } else if (requireGpu) {
    describe(name, () => {
      it('requires a GPU (FLEXATTN_REQUIRE_GPU=1)', () => {
        throw new Error(`FLEXATTN_REQUIRE_GPU=1 but GPU tests cannot run: ${gpuSkipReason}`);
      });
    });
  } else {
    console.log(`[skip] ${name}: ${gpuSkipReason}`);
    describe.skip(`${name} (skipped: ${gpuSkipReason})`, fn);
  }
}
