#!/usr/bin/env node
// `npm run prebuild`: makes prebuilds/<platform>-<arch>/flexattn.node with
// prebuildify (Node-API: one binary for every Node >= 20), stripped. prebuildify
// only knows node-gyp, so scripts/node-gyp-shim.mjs stands in for it and runs
// our cmake-js build (scripts/build-native.mjs, incremental in build/). With
// nvcc on PATH (or FLEXATTN_NVCC) the dense kernels are embedded as a fatbin
// for FLEXATTN_ARCHS (default 80;86;89;90a, + PTX). Then checks the result:
// links no CUDA library, loads, and reports fatbin, size and glibc floor.
//
//   node scripts/prebuild.mjs            build + check
//   node scripts/prebuild.mjs --check    only check prebuilds/ (used by prepack; warns)
// FLEXATTN_REQUIRE_FATBIN=1 fails when the prebuild has no precompiled kernels.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, renameSync, statSync, utimesSync } from 'node:fs';
import { createRequire } from 'node:module';
import { arch, platform } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const target = join(root, 'prebuilds', `${platform()}-${arch()}`, 'flexattn.node');

// npm also runs a script named "prebuild" as the pre-hook of `npm run build`
// (same environment either way); only build when "prebuild" was asked for by name.
function runAsHookOfBuild() {
  if (process.env.npm_lifecycle_event !== 'prebuild') return false;
  let pid = process.ppid;
  for (let depth = 0; depth < 6 && pid > 1; depth++) {
    let argv, stat;
    try {
      // npm sets its process title to e.g. "npm run build", which replaces its cmdline.
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split(/[\0 ]/).filter(Boolean);
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch { return false; }
    const i = argv.findIndex((a) => /(^|\/)npm(-cli\.js)?$/.test(a));
    if (i >= 0) {
      const [cmd, script] = argv.slice(i + 1).filter((a) => !a.startsWith('-'));
      return ['run', 'run-script', 'rum', 'urn'].includes(cmd) && script !== undefined && script !== 'prebuild';
    }
    pid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  }
  return false;
}

/** Checks prebuilds/: returns problems (empty when fine) and prints a summary. */
function check() {
  if (!existsSync(target)) return [`${relative(root, target)} does not exist (run \`npm run prebuild\`)`];
  const problems = [];
  const bytes = readFileSync(target);
  const mib = (n) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  // Highest GLIBC_x.y symbol version the binary references = the oldest glibc it loads on.
  const glibc = [...new Set(bytes.toString('latin1').match(/GLIBC_2\.\d+/g) ?? [])]
    .map((v) => v.slice(6)).sort((a, b) => Number(a.split('.')[1]) - Number(b.split('.')[1])).pop();
  // The README promises Ubuntu 22.04 / RHEL 9 (glibc 2.34); see native/runtime/glibc_compat.cc.
  if (glibc && Number(glibc.split('.')[1]) > 34) {
    problems.push(`needs glibc ${glibc}, newer than the promised 2.34 (a new symbol reference crept in: objdump -T | grep GLIBC_2.3)`);
  }
  const re = spawnSync('readelf', ['-d', target], { encoding: 'utf8' });
  let needed = '(readelf not found: not checked)';
  if (re.status === 0) {
    const libs = [...re.stdout.matchAll(/NEEDED.*\[(.+)\]/g)].map((m) => m[1]);
    needed = libs.join(' ');
    const cuda = libs.filter((l) => /cuda|nvrtc|cublas|cudart/i.test(l));
    if (cuda.length) problems.push(`links CUDA libraries (${cuda.join(', ')}): they must be dlopen'ed`);
  }
  const stripped = spawnSync('readelf', ['-S', target], { encoding: 'utf8' });
  const isStripped = stripped.status === 0 ? !/\.symtab/.test(stripped.stdout) : undefined;
  const probe = spawnSync(process.execPath, ['-e',
    `const s = require(${JSON.stringify(target)}).cudaStatus(); console.log(JSON.stringify({ bytes: s.fatbinBytes, archs: s.fatbinArchs }))`],
  { encoding: 'utf8' });
  let fatbin = 'unknown';
  if (probe.status !== 0) {
    problems.push(`does not load in Node ${process.version}: ${probe.stderr.trim().split('\n').slice(0, 6).join('\n')}`);
  } else {
    const f = JSON.parse(probe.stdout.trim().split('\n').pop());
    fatbin = f.bytes > 0 ? `${f.archs.join(',')} (${mib(f.bytes)})` : 'none (built without nvcc: every kernel JIT-compiled by NVRTC)';
    if (f.bytes === 0 && process.env.FLEXATTN_REQUIRE_FATBIN === '1') problems.push('has no precompiled kernels (FLEXATTN_REQUIRE_FATBIN=1)');
  }
  console.log(`prebuild  ${relative(root, target)}
  size     ${mib(statSync(target).size)}${isStripped === undefined ? '' : isStripped ? ', stripped' : ', NOT stripped'}
  fatbin   ${fatbin}
  needs    ${needed}; glibc >= ${glibc ?? '?'}`);
  return problems;
}

if (process.argv.includes('--check')) {
  const problems = check();
  for (const p of problems) console.warn(`WARNING: the prebuilt binary ${p}; the package will build from source on install.`);
  process.exit(0);
}
if (runAsHookOfBuild()) {
  console.log('(npm runs "prebuild" before "build": skipped; `npm run prebuild` makes prebuilds/)');
  process.exit(0);
}

const shim = join(root, 'scripts', 'node-gyp-shim.mjs');
chmodSync(shim, 0o755); // prebuildify spawns it directly (no shell)
const prebuildify = require('prebuildify');
const kept = join(root, 'build', 'flexattn.node.unstripped');
prebuildify({ cwd: root, napi: true, strip: true, nodeGyp: shim }, (err) => {
  if (existsSync(kept)) { // the dev tree keeps its (unstripped) build/Release/flexattn.node
    const built = join(root, 'build', 'Release', 'flexattn.node');
    const { atime, mtime } = statSync(kept);
    renameSync(kept, built);
    utimesSync(built, atime, mtime);
  }
  if (err) {
    console.error(`prebuild: ${err.message}`);
    process.exit(1);
  }
  const problems = check();
  for (const p of problems) console.error(`prebuild: the binary ${p}`);
  process.exit(problems.length ? 1 : 0);
});
