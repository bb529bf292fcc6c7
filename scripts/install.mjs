#!/usr/bin/env node
// The package's `install` step. Loads the addon the way lib/native.ts will at
// run time (node-gyp-build: build/Release, then prebuilds/<platform>-<arch>);
// when that works there is nothing to do. Otherwise (no prebuild for this
// platform, a prebuild that does not load, or `--build-from-source`) it builds
// from source with scripts/build-native.mjs, which names any missing tool.
//
// Not `node-gyp-build "node scripts/build-native.mjs"`: node-gyp-build treats
// that command as a pre-build hook and runs `node-gyp rebuild` after it, which
// fails here (no binding.gyp).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

const major = Number(process.versions.node.split('.')[0]);
if (major < 20) {
  console.error(`flexattn: Node.js ${process.version} is too old; flexattn needs Node.js >= 20.\n` +
    'Upgrade Node (e.g. `nvm install 22`, or https://nodejs.org) and reinstall.');
  process.exit(1);
}
if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.error(`flexattn: ${process.platform}-${process.arch} is not supported; flexattn runs on Linux x64 ` +
    'with an NVIDIA GPU (or its CPU backend). On Windows use WSL2; on macOS, a Linux x64 machine or container.');
  process.exit(1);
}

const fromSource = process.env.npm_config_build_from_source === 'true' || process.argv.includes('--build-from-source');
if (fromSource) console.error('flexattn: building from source, as asked (--build-from-source).');
else {
  try {
    require('node-gyp-build')(root);
    process.exit(0); // a build or prebuild loads: nothing to build
  } catch (e) {
    const msg = String(e?.message ?? e);
    if (/No native build was found/.test(msg)) {
      console.error(`flexattn: no prebuilt binary for ${process.platform}-${process.arch}; building from source.`);
    } else {
      const glibc = /GLIBC_(\d+\.\d+)/.exec(msg)?.[1];
      const host = process.report?.getReport?.().header?.glibcVersionRuntime;
      console.error(glibc
        ? `flexattn: the prebuilt binary needs glibc >= ${glibc}${host ? ` (this host has ${host})` : ''}; building from source.`
        : `flexattn: the prebuilt binary failed to load (${msg.split('\n')[0]}); building from source.`);
    }
  }
}

const r = spawnSync(process.execPath, [join(root, 'scripts', 'build-native.mjs'), '--install'], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
