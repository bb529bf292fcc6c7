/**
 * The decode kernel's JIT source (lib/cuda/kernel-source.ts decodeKernel: the
 * mods' generated CUDA in front of decode.cuh, as NVRTC gets it) compiles with
 * nvcc for sm_80 and sm_90a, for score mods, mask mods with captured tensors and
 * both head dims, in one translation unit (kernel names differ). Skips without
 * nvcc; the precompiled (mod-free) variants are compiled by the native build.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeCombineKernel, decodeKernel } from '../lib/cuda/kernel-source.js';
import { alibi, andMasks, documentMask, generateCuda, slidingWindow, softcap } from '../lib/mods/index.js';
import { hostTensor } from './random-mods.js';

const nvcc = spawnSync('nvcc', ['--version']).status === 0 ? 'nvcc' : null;
const suite = nvcc ? describe : describe.skip;
if (!nvcc) console.log('[decode-source] skipped: nvcc not found on PATH');

suite('decode kernel JIT source compiles with nvcc (sm_80, sm_90a)', () => {
  it('softcap + sliding window (d128 bf16), ALiBi + document mask (d64 f16), and the combine', () => {
    const slopes = hostTensor(new Float32Array([0.5, 0.25, 0.125, 0.0625, 0.03, 0.01, 0.005, 0.001]), [8], 'f32');
    const docs = hostTensor(Int32Array.from({ length: 128 }, (_, i) => i >> 4), [2, 64], 'i32');
    const specs = [
      decodeKernel(128, 'bf16', generateCuda(softcap(30), slidingWindow(100))),
      decodeKernel(64, 'f16', generateCuda(alibi(slopes), andMasks(documentMask(docs)))),
    ];
    for (const s of specs) expect(s.module).toBeUndefined(); // JIT only
    expect(decodeKernel(128, 'bf16').module).toBe('flexattn_decode_d128_bf16');
    expect(decodeCombineKernel(64, 'f16').kernel).toBe('flexattn_decode_combine_d64_f16');
    // Each JIT source is a translation unit of its own (its FlexModArgs); compile them one by one.
    const dir = mkdtempSync(join(tmpdir(), 'flexattn-decode-'));
    try {
      for (const [i, s] of specs.entries()) {
        const cu = join(dir, `k${i}.cu`);
        writeFileSync(cu, s.source);
        try {
          execFileSync(nvcc!, ['--use_fast_math', '-I', resolve('native/kernels'), '-fatbin',
            '-gencode', 'arch=compute_80,code=sm_80', '-gencode', 'arch=compute_90a,code=sm_90a',
            '-o', join(dir, `k${i}.fatbin`), cu], { encoding: 'utf8', stdio: 'pipe' });
        } catch (e) {
          const err = e as { stderr?: string; stdout?: string; message: string };
          throw new Error(`nvcc failed on ${s.kernel}:\n${err.stdout ?? ''}${err.stderr ?? err.message}`);
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 240_000);
});
