import { expect, it } from 'vitest';
import { BlockMask, createBlockMask } from '../../lib/blockmask.js';
import { jitLauncher, kernelSource } from '../../lib/blockmask/gpu.js';
import {
  andMasks, causal, documentMask, fullMask, imageBlocks, imageBlocksFromIds, imageIdsFromSpans, notMask, orMasks,
  prefixLM, slidingWindow,
} from '../../lib/mods/builtins.js';
import { maskMod, param, tensorAt, type MaskMod } from '../../lib/mods/ir.js';
import { mulberry32, randomMod } from '../random-mods.js';
import { Tensor } from '../../lib/tensor.js';
import { describeGpu } from '../gpu-gate.js';

const KEYS = ['kvNumBlocks', 'kvIndices', 'fullKvNumBlocks', 'fullKvIndices', 'qNumBlocks', 'qIndices', 'fullQNumBlocks', 'fullQIndices'] as const;

/**
 * GPU kernel (with and without the position pre-filter, which changes the tile
 * list the kernel visits) against the host evaluator without pre-filter.
 */
async function expectGpuMatchesCpu(mod: MaskMod, B: number, H: number, qLen: number, kvLen: number,
  blockSize: number | [number, number], label: string, params?: Record<string, number>): Promise<BlockMask> {
  const cpu = await createBlockMask(mod, B, H, qLen, kvLen, { blockSize, device: 'cpu', path: 'cpu', params, prefilter: false });
  const all = await createBlockMask(mod, B, H, qLen, kvLen, { blockSize, device: 'cuda:0', path: 'gpu', params, prefilter: false });
  expect(Array.from(all.classes()), `${label}: classes (every tile on the GPU)`).toEqual(Array.from(cpu.classes()));
  const gpu = await createBlockMask(mod, B, H, qLen, kvLen, { blockSize, device: 'cuda:0', path: 'gpu', params });
  expect(gpu.method).toBe('gpu');
  expect(Array.from(gpu.classes()), `${label}: classes`).toEqual(Array.from(cpu.classes()));
  for (const k of KEYS) expect(Array.from(gpu.host[k]), `${label}: ${k}`).toEqual(Array.from(cpu.host[k]));
  // The device tensors hold the same data.
  for (const k of KEYS) {
    const t = gpu[k];
    expect(t.device).toBe('cuda:0');
    expect(Array.from((await t.toHost()) as Int32Array), `${label}: device ${k}`).toEqual(Array.from(gpu.host[k]));
  }
  return gpu;
}

describeGpu('createBlockMask on the GPU', () => {
  it('the addon has a JIT launcher', () => {
    expect(jitLauncher()).not.toBeNull();
  });

  const builtins: [string, () => MaskMod][] = [
    ['causal', () => causal()],
    ['full', () => fullMask()],
    ['sliding 37 lookahead 5', () => slidingWindow(37, { lookahead: 5 })],
    ['prefix 45', () => prefixLM(45)],
    ['causal and not sliding', () => andMasks(causal(), notMask(slidingWindow(30)))],
    ['prefix or sliding', () => orMasks(prefixLM(20), slidingWindow(30))],
    ['image boxes', () => imageBlocks([{ start: 10, length: 30 }, { start: 70, length: 47 }])],
  ];
  for (const [name, make] of builtins) {
    it(`built-in ${name} (GPU kernel == host evaluator; analytic == both)`, async () => {
      const mod = make();
      for (const [qLen, kvLen] of [[257, 131], [100, 100], [1, 300], [300, 1]] as [number, number][]) {
        for (const bs of [16, 32, [16, 64]] as (number | [number, number])[]) {
          const g = await expectGpuMatchesCpu(mod, 1, 1, qLen, kvLen, bs, `${name} ${qLen}x${kvLen} bs ${bs}`);
          const a = await createBlockMask(mod, 1, 1, qLen, kvLen, { blockSize: bs, device: 'cuda:0' });
          expect(a.method).toBe('analytic');
          expect(Array.from(a.classes())).toEqual(Array.from(g.classes()));
        }
      }
    });
  }

  it('document mask, doc ids on the GPU and on the host, odd lengths, B=3 H=2', async () => {
    const r = mulberry32(5);
    const B = 3, S = 1000;
    const ids = new Int32Array(B * S);
    for (let b = 0; b < B; b++) { let d = 0; for (let i = 0; i < S; i++) { if (r() < 0.01) d++; ids[b * S + i] = d; } }
    for (const device of ['cuda:0', 'cpu'] as const) {
      const docIds = Tensor.fromHost(ids, [B, S], 'i32', { device });
      for (const isCausal of [true, false]) {
        await expectGpuMatchesCpu(documentMask(docIds, { causal: isCausal }), B, 2, S, S, 128, `doc ${device} causal=${isCausal}`);
        await expectGpuMatchesCpu(documentMask(docIds, { causal: isCausal }), B, 1, S, S - 37, [32, 64], `doc ${device} 32x64`);
      }
    }
  });

  it('image ids from a tensor (data-dependent), per-batch spans', async () => {
    const S = 333;
    const ids = imageIdsFromSpans([{ start: 5, length: 60 }, { start: 100, length: 129 }], S);
    const t = Tensor.fromHost(ids, [S], 'i32', { device: 'cuda:0' });
    await expectGpuMatchesCpu(imageBlocksFromIds(t), 2, 1, S, S, 32, 'image ids');
    const perBatch = imageBlocks([[{ start: 0, length: 40 }], [{ start: 50, length: 90 }]]);
    await expectGpuMatchesCpu(perBatch, 2, 1, S, S, 16, 'image spans per batch');
  });

  it('masks reading h, runtime params and captured tables', async () => {
    const table = Tensor.fromHost(Int32Array.from([3, 0, 7, 1]), [4], 'i32', { device: 'cuda:0' });
    const mod = maskMod(({ h, q, kv }) => q.sub(kv).mod(tensorAt(table, [h]).add(2)).eq(0).or(kv.lt(param('n', 'int'))));
    await expectGpuMatchesCpu(mod, 1, 4, 250, 190, 16, 'h + param', { n: 17 });
    await expectGpuMatchesCpu(mod, 2, 4, 250, 190, [8, 32], 'h + param B=2', { n: 0 });
  });

  it('random integer-valued masks (float ops excluded: the GPU uses approximate exp/log)', async () => {
    const r = mulberry32(1234);
    let tested = 0;
    for (let i = 0; i < 200 && tested < 12; i++) {
      const rm = randomMod(r, { kind: 'mask', depth: 4 });
      const mod = rm.mod as MaskMod;
      if (mod.ir.nodes.some((n) => n.type === 'float')) continue;
      tested++;
      await expectGpuMatchesCpu(mod, 2, 2, 97, 131, 16, `random ${i}: ${mod.toString()}`, rm.params);
    }
    expect(tested).toBeGreaterThan(3);
  });

  it('kernel source is self-contained (only the package\'s generated interface headers, no toolkit header)', () => {
    const { source } = kernelSource(documentMask(Tensor.fromHost(new Int32Array(8), [8], 'i32', { device: 'cpu' })));
    const includes = source.split('\n').filter((l) => /^\s*#\s*include/.test(l));
    expect(includes).toEqual(['#include "generated/blockmask_classify_params.cuh"']);
    expect(source).toContain('extern "C" __global__');
  });

  it('sliding window at S=131072 takes the analytic path and uploads only O(blocks²)', async () => {
    const bm = await createBlockMask(andMasks(causal(), slidingWindow(1024)), 1, 1, 131072, 131072, { device: 'cuda:0' });
    expect(bm.method).toBe('analytic');
    expect(bm.kvIndices.shape).toEqual([1, 1, 1024, 1024]);
    expect(bm.host.fullKvNumBlocks[1000]).toBe(7);
  });

  it('document mask at S=8192, B=2 (the benchmark case) matches the host evaluator', async () => {
    const S = 8192, B = 2;
    const r = mulberry32(99);
    const ids = new Int32Array(B * S);
    for (let b = 0; b < B; b++) { let d = 0; for (let i = 0; i < S; i++) { if (r() < 1 / 700) d++; ids[b * S + i] = d; } }
    const docIds = Tensor.fromHost(ids, [B, S], 'i32', { device: 'cuda:0' });
    await expectGpuMatchesCpu(documentMask(docIds), B, 1, S, S, 128, 'doc 8192');
  });
});
