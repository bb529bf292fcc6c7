#!/usr/bin/env node
// Builds the native addon with cmake-js (Node-API mode; headers come from
// node-api-headers, nothing is downloaded). Used by `npm run build:native` and
// as the source-build fallback of the install script. Before running CMake it
// checks for the tools it needs and, when one is missing, prints what to
// install instead of a wall of CMake output.
import { spawn, spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

function which(cmd) {
  const r = spawnSync('/bin/sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

// Everything a source build needs, checked up front so a failure names what is
// missing instead of ending in CMake output.
const missing = [];
const cmake = which('cmake');
const cmakeVersion = cmake && /(\d+)\.(\d+)/.exec(spawnSync(cmake, ['--version'], { encoding: 'utf8' }).stdout ?? '');
if (!cmake) missing.push('cmake >= 3.18: `apt-get install cmake` or `pip install cmake`');
else if (cmakeVersion && (+cmakeVersion[1] < 3 || (+cmakeVersion[1] === 3 && +cmakeVersion[2] < 18))) {
  missing.push(`cmake >= 3.18 (found ${cmakeVersion[0]} at ${cmake}): \`pip install cmake\``);
}
if (!(process.env.CXX && which(process.env.CXX.split(' ')[0])) && !which('c++') && !which('g++') && !which('clang++')) {
  missing.push('a C++17 compiler (g++ >= 9 or clang++ >= 10): `apt-get install g++`');
}
if (!which('make') && !which('ninja')) missing.push('make or ninja: `apt-get install make`');
for (const pkg of ['cmake-js', 'node-addon-api']) {
  try { require.resolve(`${pkg}/package.json`); } catch { missing.push(`the npm package ${pkg}: \`npm install ${pkg}\``); }
}
if (missing.length) {
  console.error(`flexattn: cannot build the native addon from source${process.argv.includes('--install') ? ' (and no prebuilt binary loaded)' : ''}. Missing:`);
  for (const m of missing) console.error(`  - ${m}`);
  console.error('nvcc is optional: without it kernels are JIT-compiled by NVRTC at first use.');
  process.exit(1);
}

const nvcc = process.env.FLEXATTN_NVCC || which('nvcc') ||
  (existsSync('/usr/local/cuda/bin/nvcc') ? '/usr/local/cuda/bin/nvcc' : '');
const cmakeJs = join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
const defines = [
  nvcc ? `--CDFLEXATTN_NVCC=${nvcc}` : '--CDFLEXATTN_NO_FATBIN=ON',
  // Always pass the arch list, so a changed FLEXATTN_ARCHS re-configures an existing build/.
  `--CDFLEXATTN_ARCHS=${process.env.FLEXATTN_ARCHS || '80;86;89;90a'}`,
];
const archs = (process.env.FLEXATTN_ARCHS || '80;86;89;90a').split(/[;,]/).filter(Boolean);
const jobs = String(availableParallelism());
const verbose = process.argv.includes('--verbose');
const t0 = Date.now();
const secs = (t) => `${Math.round((Date.now() - t) / 1000)} s`;

// Progress: what each step does, the build tool's own "[ 42%] ..." / "[12/40] ..."
// lines, and a heartbeat while one long command (the nvcc fatbin) prints nothing,
// so a source build under `npm ci` is never a silent minute.
const PROGRESS = /^\[\s*\d+(%|\/\d+)\]\s/;
const log = (line) => console.error(`flexattn: ${line}`);

function run(step, args) {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, args, { cwd: root, stdio: verbose ? 'inherit' : ['ignore', 'pipe', 'pipe'] });
    const tail = [];
    let last = Date.now();
    const beat = setInterval(() => {
      if (Date.now() - last >= 15000) { log(`  … still ${step === 'configure' ? 'configuring' : 'compiling'} (${secs(t0)} so far)`); last = Date.now(); }
    }, 5000);
    const onData = (buf) => {
      for (const raw of buf.toString('utf8').split('\n')) {
        // strip colour codes from the build tool so the forwarded lines stay plain
        const line = raw.replace(/\x1b\[[0-9;]*m/g, '').trimEnd();
        if (!line) continue;
        tail.push(line);
        if (tail.length > 60) tail.shift();
        if (PROGRESS.test(line)) { log(`  ${line}`); last = Date.now(); }
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('close', (code) => { clearInterval(beat); resolvePromise({ code: code ?? 1, tail }); });
  });
}

log(`building the native addon from source in ${join(root, 'build')} (cmake-js, ${jobs} parallel jobs)`);
// The kernels' parameter blocks and tile constants come from native/kernels/interface
// (generated headers are committed; a checkout regenerates them here). The published
// package ships the generated headers without the generator, so it is skipped there.
const genInterface = join(root, 'scripts', 'gen-kernel-interface.mjs');
if (existsSync(genInterface)) {
  const g = spawnSync(process.execPath, [genInterface], { cwd: root, stdio: 'inherit' });
  if (g.status !== 0) {
    console.error('flexattn: generating the kernel interface (scripts/gen-kernel-interface.mjs) failed (see above).');
    process.exit(g.status ?? 1);
  }
}
const steps = [
  ['configure', 'configuring with CMake'],
  ['build', nvcc
    ? `compiling the addon, and kernels for ${archs.map((a) => `sm_${a}`).join('/')} with nvcc (1–4 min, depending on the machine)`
    : 'compiling the addon (no nvcc: kernels will be JIT-compiled by NVRTC at first use)'],
];
for (const [i, [step, what]] of steps.entries()) {
  const ts = Date.now();
  log(`[${i + 1}/${steps.length}] ${what}…`);
  const args = [cmakeJs, step, '--directory', root, '--out', join(root, 'build'),
    ...(step === 'configure' ? defines : ['--parallel', jobs])];
  const r = await run(step, args);
  if (r.code !== 0) {
    if (!verbose) console.error(r.tail.join('\n'));
    console.error(`flexattn: native build failed at the ${step} step after ${secs(t0)} (see above). ` +
      'Re-run with `node scripts/build-native.mjs --verbose` for the full log.');
    process.exit(r.code);
  }
  log(`[${i + 1}/${steps.length}] ${step === 'configure' ? 'configured' : 'compiled'} in ${secs(ts)}`);
}
log(`native addon built in ${secs(t0)}${nvcc ? ` (kernels precompiled with ${nvcc})` : ' (no nvcc: kernels JIT-compiled at first use)'}`);
