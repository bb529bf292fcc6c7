#!/usr/bin/env node
// Cross-check of the cold-JIT figure: in a fresh process with an empty
// FLEXATTN_CACHE_DIR, times the NVRTC compile of a generated flex kernel through
// the native JIT (jitCompileForTest reports compile + load time and the cache
// outcome), then the first flexAttention call that uses it.
// Usage (GPU machine): FLEXATTN_CACHE_DIR=$(mktemp -d) node bench/jit-latency.mjs
import { performance } from 'node:perf_hooks';
const L = await import('../dist/lib/index.js');
const { native } = await import('../dist/lib/native.js');
const { generateCuda } = await import('../dist/lib/mods/index.js');
const device = 'cuda:0';
const [q, k, v] = [0, 1, 2].map(() => L.Tensor.randn([1, 2, 1024, 128], 'bf16', { device }));
await L.scaledDotProductAttention(q, k, v, { isCausal: true });
await L.synchronize(device);
const sm = L.softcap(17);
const code = generateCuda(sm, L.causal());
const name = 'jit_latency_probe';
const src = `${code.source}\n#include "flash_fwd.cuh"\nFLEXATTN_FWD_KERNEL(${name}, 128, bf16, kBlockSparse)\n`;
const c1 = native().jitCompileForTest(src, name);
const c2 = native().jitCompileForTest(src, name);
const bm = await L.createBlockMask(L.causal(), 1, 1, 1024, 1024, { device });
const t0 = performance.now();
await L.flexAttention(q, k, v, { blockMask: bm, scoreMod: L.softcap(23) });
await L.synchronize(device);
const first = performance.now() - t0;
console.log(JSON.stringify({ cacheDir: process.env.FLEXATTN_CACHE_DIR, probeCompile: c1, probeAgain: c2, firstFlexCallMs: first }));
