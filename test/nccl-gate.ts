/**
 * Gate for the NCCL GPU suites (test/gpu/parallel-*.test.ts). They need a GPU
 * (test/gpu-gate.ts), a usable libnccl and, for the multi-GPU suite, two GPUs.
 * Each missing piece skips with a printed reason. FLEXATTN_REQUIRE_GPU=1 still
 * fails on a missing GPU only: a host without libnccl is not a broken GPU
 * machine. FLEXATTN_REQUIRE_NCCL=1 turns every missing piece of the one-GPU
 * suite into a failure, FLEXATTN_REQUIRE_MULTI_GPU=1 those of the multi-GPU one.
 */
import { describe, it } from 'vitest';
import { envSwitch } from '../lib/env.js';
import { native } from '../lib/native.js';
import { ncclInfo } from '../lib/parallel/nccl.js';
import { gpuSkipReason, requireGpu } from './gpu-gate.js';

const required = {
  FLEXATTN_REQUIRE_NCCL: envSwitch('FLEXATTN_REQUIRE_NCCL') === '1',
  FLEXATTN_REQUIRE_MULTI_GPU: envSwitch('FLEXATTN_REQUIRE_MULTI_GPU') === '1',
};

function reason(minGpus: number): { why: string; gpu: boolean } | null {
  if (gpuSkipReason !== null) return { why: gpuSkipReason, gpu: true };
  const n = ncclInfo();
  if (!n.loaded) return { why: `no usable libnccl (${n.error.split('\n')[0]})`, gpu: false };
  const count = native().cudaStatus().deviceCount;
  if (count < minGpus) return { why: `${count} GPU${count === 1 ? '' : 's'} here, the suite needs ${minGpus}`, gpu: false };
  return null;
}

/** `describe` for NCCL suites needing `minGpus` GPUs; `requireSwitch` names the switch that makes a skip a failure. */
export function describeNccl(name: string, minGpus: number, requireSwitch: 'FLEXATTN_REQUIRE_NCCL' | 'FLEXATTN_REQUIRE_MULTI_GPU',
  fn: () => void): void {
  const r = reason(minGpus);
  if (r === null) {
    describe(name, fn);
    return;
  }
  if (required[requireSwitch] || (r.gpu && requireGpu)) {
    describe(name, () => {
      it(`requires ${r.gpu ? 'a GPU' : 'NCCL and the GPUs'} (${r.gpu && requireGpu ? 'FLEXATTN_REQUIRE_GPU' : requireSwitch}=1)`, () => {
        throw new Error(`${name} cannot run: ${r.why}`);
      });
    });
  } else {
    console.log(`[skip] ${name}: ${r.why}`);
    describe.skip(`${name} (skipped: ${r.why})`, fn);
  }
}
