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
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

const missing = [];
if (!which('cmake')) missing.push('cmake >= 3.18 (e.g. `apt-get install cmake` or `pip install cmake`)');
if (!which('c++') && !which('g++') && !which('clang++')) {
  missing.push('a C++17 compiler (e.g. `apt-get install g++`)');
}
if (missing.length) {
  console.error('flexattn: no prebuilt binary matched this platform and a source build is not possible.');
  console.error('Missing:');
  for (const m of missing) console.error(`  - ${m}`);
  console.error('nvcc is optional: without it kernels are compiled at first use with NVRTC.');
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
