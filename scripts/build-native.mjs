#!/usr/bin/env node
// Builds the native addon with cmake-js (Node-API mode; headers come from
// node-api-headers, nothing is downloaded). Used by `npm run build:native` and
// as the source-build fallback of the install script. Before running CMake it
// checks for the tools it needs and, when one is missing, prints what to
// install instead of a wall of CMake output.
import { spawnSync } from 'node:child_process';
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
const verbose = process.argv.includes('--verbose');
for (const step of ['configure', 'build']) {
  const args = [cmakeJs, step, '--directory', root, '--out', join(root, 'build'), ...(step === 'configure' ? defines : [])];
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: verbose ? 'inherit' : 'pipe', encoding: 'utf8' });
  if (r.status !== 0) {
    if (!verbose) {
      const out = `${r.stdout ?? ''}\n${r.stderr ?? ''}`.split('\n');
      console.error(out.slice(-60).join('\n'));
    }
    console.error(`flexattn: native build failed at the ${step} step (see above). ` +
      'Re-run with `node scripts/build-native.mjs --verbose` for the full log.');
    process.exit(r.status ?? 1);
  }
}
console.log(`flexattn: native addon built${nvcc ? ` (kernels precompiled with ${nvcc})` : ' (no nvcc: kernels JIT-compiled at first use)'}`);
