#!/usr/bin/env node
// Sweeps kernelOptions (tile shape, warps, stages) for the flex patterns of the
// issue-4 benchmark (B=2 H=16 S=8192 D=128 bf16) to choose per-pattern defaults.
// Ours only; time = N back-to-back calls + one synchronize, median of 7.
//   node bench/flex-shapes.mjs [--out file.json]
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { docIds, alibiSlopesF64 } from './cases.mjs';

const L = await import('../dist/lib/index.js');
const dev = 'cuda:0';
const [B, H, S, D] = [2, 16, 8192, 128];
const q = L.Tensor.randn([B, H, S, D], 'bf16', { device: dev });
const k = L.Tensor.randn([B, H, S, D], 'bf16', { device: dev });
const v = L.Tensor.randn([B, H, S, D], 'bf16', { device: dev });
const ids = L.Tensor.fromHost(docIds(B, S, 1234).ids, [B, S], 'i32', { device: dev });
const slopes = L.Tensor.fromHost(Float32Array.from(alibiSlopesF64(H)), [H], 'f32', { device: dev });
const patterns = {
  sliding1024: { mask: L.slidingWindow(1024) },
  docCausal: { mask: L.documentMask(ids, { causal: true }) },
  alibi: { mask: L.causal(), score: L.alibi(slopes) },
  softcap: { mask: L.causal(), score: L.softcap(30) },
};
const shapes = [
  undefined,
  { BLOCK_M: 128, BLOCK_N: 64, numWarps: 4, numStages: 2 },
  { BLOCK_M: 128, BLOCK_N: 128, numWarps: 4, numStages: 2 },
  { BLOCK_M: 128, BLOCK_N: 64, numWarps: 8, numStages: 2 },
  { BLOCK_M: 128, BLOCK_N: 32, numWarps: 4, numStages: 3 },
  { BLOCK_M: 64, BLOCK_N: 64, numWarps: 4, numStages: 2 },
  { BLOCK_M: 64, BLOCK_N: 64, numWarps: 4, numStages: 3 },
  { BLOCK_M: 64, BLOCK_N: 128, numWarps: 4, numStages: 2 },
];
const results = [];
for (const [name, p] of Object.entries(patterns)) {
  const bm = await L.createBlockMask(p.mask, B, 1, S, S, { device: dev });
  for (const ko of shapes) {
    const opts = { blockMask: bm, ...(p.score ? { scoreMod: p.score } : {}), ...(ko ? { kernelOptions: ko } : {}) };
    try {
      (await L.flexAttention(q, k, v, opts)).out.dispose();
      await L.synchronize(dev);
      const N = 10, samples = [];
      for (let r = 0; r < 7; r++) {
        const t0 = performance.now();
        for (let i = 0; i < N; i++) (await L.flexAttention(q, k, v, opts)).out.dispose();
        await L.synchronize(dev);
        samples.push((performance.now() - t0) / N);
      }
      samples.sort((a, b) => a - b);
      results.push({ pattern: name, kernelOptions: ko ?? 'default', ms: samples[3] });
      console.log(`${name.padEnd(12)} ${JSON.stringify(ko ?? 'default').padEnd(64)} ${samples[3].toFixed(4)} ms`);
    } catch (e) {
      console.log(`${name.padEnd(12)} ${JSON.stringify(ko ?? 'default').padEnd(64)} ERROR ${e.message.split('\n')[0]}`);
    }
  }
}
const out = process.argv.indexOf('--out');
if (out > 0) writeFileSync(process.argv[out + 1], JSON.stringify(results, null, 1));
