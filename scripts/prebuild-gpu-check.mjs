#!/usr/bin/env node
// Proves "driver + libnvrtc only" with the packed tarball, not the dev tree.
//
// Here (npm and the registry available):
//   npm run prebuild && npm pack --pack-destination build/pkgtest
//   node scripts/prebuild-gpu-check.mjs stage build/pkgtest/flexattn-*.tgz
// installs the tarball (install scripts on, PATH with node/npm/sh only) into
// build/pkgtest/app and writes the GPU test there.
//
// On the GPU machine (device tool; carry [".device", "build/pkgtest"]):
//   node is unpacked from .device/node.xz, then
//   /tmp/nb/node scripts/prebuild-gpu-check.mjs run
// copies the app to /tmp (away from the dev tree), and with PATH = node + sh
// only (no nvcc, cmake, compiler) and CUDA_HOME/CUDA_PATH/FLEXATTN_NVRTC unset
// runs `flexattn info`, `flexattn demo` and gpu.mjs (dense SDPA from the fatbin,
// flex attention with a generated score mod through NVRTC, and everything
// through NVRTC with FLEXATTN_DISABLE_FATBIN=1, each checked against the CPU
// backend); then again with FLEXATTN_NVRTC pointing at a Python wheel's
// libnvrtc when one exists. Logs go to $OUT.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const [mode, arg] = process.argv.slice(2);

const GPU_TEST = `// Written by scripts/prebuild-gpu-check.mjs.
import { Tensor, flexAttention, scaledDotProductAttention, softcap, deviceInfo, cudaAvailable, manualSeed } from 'flexattn';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
const require = createRequire(import.meta.url);
const addon = require('node-gyp-build').path(dirname(require.resolve('flexattn/package.json')));
const d = deviceInfo();
const dry = process.argv.includes('--cpu-dry-run');
if (!cudaAvailable() && !dry) { console.error('FAIL: no GPU\\n' + (d.driverError || d.nvrtcError)); process.exit(1); }
console.log(\`addon \${addon}\`);
if (!dry) console.log(\`gpu   \${d.gpus[0].name} (cc \${d.gpus[0].computeCapability}), driver \${d.driverPath}\`);
console.log(\`nvrtc \${d.nvrtcLoaded ? d.nvrtcPath + ' (' + d.nvrtcVersion + ')' : 'MISSING'}; fatbin \${d.fatbinArchs.join(',') || 'none'}; FLEXATTN_DISABLE_FATBIN=\${process.env.FLEXATTN_DISABLE_FATBIN ?? ''}\`);
manualSeed(7);
const dev = dry ? 'cpu' : 'cuda:0';
const shape = [2, 4, 333, 64];
const [q, k, v] = [0, 1, 2].map(() => Tensor.randn(shape, 'bf16', { device: dev }));
const [qc, kc, vc] = await Promise.all([q, k, v].map((t) => t.toDevice('cpu')));
function relErr(a, b) {
  let m = 0, s = 0;
  for (let i = 0; i < b.length; i++) { m = Math.max(m, Math.abs(a[i] - b[i])); s = Math.max(s, Math.abs(b[i])); }
  return m / s;
}
let failed = 0;
async function compare(name, gpu, cpu) {
  const t0 = performance.now();
  const [a, b] = [await (await gpu()).toFloat32(), await (await cpu()).toFloat32()];
  const e = relErr(a, b), ok = e <= 1e-2 && a.every(Number.isFinite);
  if (!ok) failed++;
  console.log(\`\${ok ? 'PASS' : 'FAIL'}: \${name}: max rel err \${e.toExponential(2)} vs CPU (\${(performance.now() - t0).toFixed(0)} ms)\`);
}
await compare('sdpa causal (dense kernel)',
  () => scaledDotProductAttention(q, k, v, { isCausal: true }),
  () => scaledDotProductAttention(qc, kc, vc, { isCausal: true, backend: 'cpu' }));
await compare('flexAttention softcap(20) (generated kernel, NVRTC)',
  async () => (await flexAttention(q, k, v, { scoreMod: softcap(20) })).out,
  async () => (await flexAttention(qc, kc, vc, { scoreMod: softcap(20), backend: 'cpu' })).out);
process.exit(failed ? 1 : 0);
`;

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  return { ok: r.status === 0, out: r.error ? String(r.error) : out };
}

function bareBin(dir, npm) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  symlinkSync(process.execPath, join(dir, 'node'));
  symlinkSync('/bin/sh', join(dir, 'sh'));
  if (npm) symlinkSync(npm, join(dir, 'npm'));
  return dir;
}

if (mode === 'stage') {
  if (!arg || !existsSync(arg)) { console.error('usage: prebuild-gpu-check.mjs stage <flexattn-*.tgz>'); process.exit(2); }
  const tgz = resolve(arg);
  const app = join(root, 'build', 'pkgtest', 'app');
  rmSync(app, { recursive: true, force: true });
  mkdirSync(app, { recursive: true });
  writeFileSync(join(app, 'package.json'), '{ "name": "pkgtest", "private": true }\n');
  writeFileSync(join(app, 'gpu.mjs'), GPU_TEST);
  const npm = sh('/bin/sh', ['-c', 'readlink -f "$(command -v npm)"']).out.trim();
  const bin = bareBin(join(root, 'build', 'pkgtest', 'bin'), npm);
  const env = { HOME: process.env.HOME, PATH: bin };
  const r = sh('npm', ['install', '--no-audit', '--no-fund', '--foreground-scripts', tgz], { cwd: app, env });
  console.log(r.out);
  if (!r.ok || existsSync(join(app, 'node_modules', 'flexattn', 'build'))) { console.error('FAIL: install'); process.exit(1); }
  const dry = sh(process.execPath, ['gpu.mjs', '--cpu-dry-run'], { cwd: app, env });
  console.log(dry.out);
  console.log(dry.ok ? `staged ${app} (from ${tgz})` : 'FAIL: CPU dry run');
  process.exit(dry.ok ? 0 : 1);
}

if (mode === 'run') {
  const staged = join(root, 'build', 'pkgtest', 'app');
  const app = '/tmp/flexattn-pkgtest';
  const out = process.env.OUT || '/tmp/out';
  mkdirSync(out, { recursive: true });
  rmSync(app, { recursive: true, force: true });
  cpSync(staged, app, { recursive: true, verbatimSymlinks: true });
  const bin = bareBin('/tmp/flexattn-bare-bin', null);
  const env = { ...process.env, PATH: bin, FLEXATTN_CACHE_DIR: '/tmp/flexattn-pkgtest-cache' };
  for (const k of ['CUDA_HOME', 'CUDA_PATH', 'FLEXATTN_NVRTC', 'FLEXATTN_NVCC', 'CXX', 'CC']) delete env[k];
  rmSync(env.FLEXATTN_CACHE_DIR, { recursive: true, force: true });
  let failed = 0;
  const log = [];
  const step = (name, args, extra = {}) => {
    const r = sh(args[0], args.slice(1), { cwd: app, env: { ...env, ...extra } });
    const line = `${r.ok ? 'PASS' : 'FAIL'}: ${name}`;
    if (!r.ok) failed++;
    log.push(line, r.out);
    console.log(`${line}\n${r.out}`);
    return r;
  };
  step(`PATH has no nvcc/cmake/compiler (PATH=${bin}, LD_LIBRARY_PATH=${env.LD_LIBRARY_PATH ?? ''})`,
    ['/bin/sh', '-c', 'for t in nvcc cmake c++ g++ gcc cc clang++; do command -v $t && exit 1; done; exit 0']);
  // The bin link, or the file it points to if the copy did not keep symlinks.
  const cli = existsSync(join(app, 'node_modules', '.bin', 'flexattn')) ? 'node_modules/.bin/flexattn' : 'node_modules/flexattn/dist/lib/cli.js';
  step(`installed tarball: flexattn info (${cli})`, ['node', cli, 'info']);
  step(`installed tarball: flexattn demo (${cli})`, ['node', cli, 'demo']);
  step('installed tarball: GPU vs CPU (default NVRTC discovery)', ['node', 'gpu.mjs']);
  step('installed tarball: GPU vs CPU, all kernels via NVRTC (FLEXATTN_DISABLE_FATBIN=1)', ['node', 'gpu.mjs'], { FLEXATTN_DISABLE_FATBIN: '1' });
  const wheel = sh('/bin/sh', ['-c', 'ls -d /usr/lib/python3*/*-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.1* /usr/local/lib/python3*/*-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.1* /opt/conda/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.1* "$HOME"/.local/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.1* /usr/local/lib/python3*/*-packages/nvidia/cu13/lib/libnvrtc.so.1* 2>/dev/null | grep -v builtins | head -1'], { env: process.env }).out.trim();
  if (wheel) {
    step(`installed tarball: NVRTC from a Python wheel (FLEXATTN_NVRTC=${wheel}, fresh cache)`, ['node', 'gpu.mjs'],
      { FLEXATTN_NVRTC: wheel, FLEXATTN_DISABLE_FATBIN: '1', FLEXATTN_CACHE_DIR: '/tmp/flexattn-pkgtest-cache-wheel' });
  } else {
    log.push('(no Python nvidia-cuda-nvrtc wheel found: wheel discovery not exercised)');
    console.log(log.at(-1));
  }
  writeFileSync(join(out, 'pkgtest.log'), log.join('\n'));
  console.log(`== pkgtest on GPU: ${failed ? `${failed} failed` : 'all passed'}`);
  process.exit(failed ? 1 : 0);
}

console.error('usage: prebuild-gpu-check.mjs stage <tgz> | run');
process.exit(2);
