#!/usr/bin/env node
/**
 * `flexattn` command line: `info`, `demo`, `bench`.
 * @module
 */
import { performance } from 'node:perf_hooks';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { deviceInfo, cudaAvailable } from './device.js';
import { native, packageRoot } from './native.js';
import { Tensor, manualSeed } from './tensor.js';
import { scaledDotProductAttention } from './sdpa.js';

const USAGE = `usage: flexattn <command>

commands:
  info    what this host offers: Node, addon, CUDA driver, GPUs, NVRTC, kernel cache
  demo    run causal attention on a built-in example (GPU if present, else CPU)
  bench   run the benchmark suite (bench/)
`;

function info(): number {
  const d = deviceInfo();
  const lines: string[] = [];
  lines.push(`node        ${process.version} (${process.platform}-${process.arch})`);
  if (!d.addonLoaded) {
    lines.push(`addon       NOT LOADED: ${d.addonError}`);
    console.log(lines.join('\n'));
    return 1;
  }
  const kernels = d.fatbinBytes > 0
    ? `precompiled kernels for ${d.fatbinArchs.join(', ') || 'unknown archs'} (${(d.fatbinBytes / 1024).toFixed(0)} KiB)`
    : 'no precompiled kernels (built without nvcc): all kernels JIT-compiled with NVRTC';
  lines.push(`addon       loaded from ${packageRoot}; ${kernels}`);
  if (d.driverLoaded) {
    const v = d.driverVersion;
    lines.push(`driver      ${d.driverPath} (CUDA ${Math.floor(v / 1000)}.${(v % 1000) / 10})`);
  } else {
    lines.push(`driver      MISSING: ${d.driverError}`);
  }
  if (d.gpus.length) {
    for (const g of d.gpus) {
      lines.push(`gpu ${g.index}       ${g.name}, compute capability ${g.computeCapability}, ` +
        `${(g.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB, ${g.multiprocessors} SMs`);
    }
  } else {
    lines.push(`gpu         none${d.driverLoaded ? ' (driver loaded but no device visible; check CUDA_VISIBLE_DEVICES)' : ''}`);
  }
  lines.push(d.nvrtcLoaded ? `nvrtc       ${d.nvrtcPath} (version ${d.nvrtcVersion})` : `nvrtc       MISSING: ${d.nvrtcError}`);
  let cacheDir = '';
  try { cacheDir = native().jitCacheDir(); } catch (e) { cacheDir = `unavailable (${(e as Error).message})`; }
  lines.push(`cache       ${cacheDir}`);
  if (!cudaAvailable()) {
    lines.push('');
    lines.push('GPU backend unavailable on this host; the CPU reference backend is used instead.');
    lines.push('To use a GPU: install the NVIDIA driver (libcuda.so.1, check `nvidia-smi`) and NVRTC');
    lines.push('(CUDA toolkit, or `pip install nvidia-cuda-nvrtc`, or set FLEXATTN_NVRTC=/path/to/libnvrtc.so).');
  } else if (!d.nvrtcLoaded) {
    lines.push('');
    lines.push('NVRTC is missing: precompiled dense kernels run, but flex kernels cannot be generated.');
  }
  console.log(lines.join('\n'));
  return 0;
}

async function demo(): Promise<number> {
  const [B, H, S, D] = [2, 8, 512, 64];
  manualSeed(42);
  const device = cudaAvailable() ? 'cuda:0' : 'cpu';
  const note = device === 'cpu' ? ' (no GPU found: CPU reference backend; `flexattn info` says why)' : '';
  const [q, k, v] = ['q', 'k', 'v'].map(() => Tensor.randn([B, H, S, D], 'bf16', { device })) as [Tensor, Tensor, Tensor];
  const t0 = performance.now();
  const out = await scaledDotProductAttention(q, k, v, { isCausal: true });
  const values = await out.toFloat32();
  const ms = performance.now() - t0;
  let sum = 0, sumAbs = 0;
  for (const x of values) { sum += x; sumAbs += Math.abs(x); }
  console.log('flexattn demo: causal scaled dot-product attention');
  console.log(`  q, k, v   [${q.shape.join(', ')}] ${q.dtype}`);
  console.log(`  out       [${out.shape.join(', ')}] ${out.dtype}`);
  console.log(`  backend   ${device === 'cpu' ? 'cpu' : 'cuda'} on ${device}${note}`);
  console.log(`  checksum  sum=${sum.toFixed(4)} sum|x|=${sumAbs.toFixed(4)}`);
  console.log(`  time      ${ms.toFixed(1)} ms (first call, includes setup)`);
  for (const t of [q, k, v, out]) t.dispose();
  return 0;
}

async function bench(): Promise<number> {
  const suite = join(packageRoot, 'bench', 'run.mjs');
  if (!existsSync(suite)) {
    console.error('flexattn bench: the benchmark suite (bench/) ships with the source repository, not the npm package.\n' +
      'Run it from a checkout: npm ci && npx flexattn bench  (or node bench/run.mjs --help)');
    return 2;
  }
  const { main } = (await import(suite)) as { main: (argv: string[]) => Promise<number> };
  return main(process.argv.slice(3));
}

async function main(): Promise<number> {
  const cmd = process.argv[2];
  switch (cmd) {
    case 'info': return info();
    case 'demo': return demo();
    case 'bench': return bench();
    case undefined: case '-h': case '--help': case 'help':
      console.log(USAGE);
      return cmd === undefined ? 1 : 0;
    default:
      console.error(`flexattn: unknown command '${cmd}'\n\n${USAGE}`);
      return 1;
  }
}

main().then((code) => { process.exitCode = code; }, (e: unknown) => {
  console.error(`flexattn: ${(e as Error).stack ?? String(e)}`);
  process.exitCode = 1;
});
