#!/usr/bin/env node
// Stands in for node-gyp when prebuildify drives the build (scripts/prebuild.mjs
// passes it as prebuildify's `nodeGyp`), so there is one build system: cmake-js.
//
// prebuildify calls `<node-gyp> rebuild --target=<v> --devdir=<d> --arch=<a> --release|--debug`
// and then takes the first *.node in build/Release (or build/Debug). We run
// scripts/build-native.mjs, which builds incrementally into build/ (so a CI
// that already built does not compile twice) and leaves build/Release/flexattn.node.
// The Node-API build does not depend on --target (headers come from
// node-api-headers) and --devdir is unused: nothing is downloaded.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync } from 'node:fs';
import { arch as hostArch } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);

if (args[0] !== 'rebuild') {
  console.error(`node-gyp-shim: only 'rebuild' is supported (got: ${args.join(' ')})`);
  process.exit(2);
}
const arch = opt('arch');
if (arch && arch !== hostArch()) {
  console.error(`node-gyp-shim: cross-compiling to ${arch} is not supported (host is ${hostArch()})`);
  process.exit(2);
}
if (args.includes('--debug')) {
  console.error('node-gyp-shim: Debug prebuilds are not supported; prebuilds are Release builds');
  process.exit(2);
}

const r = spawnSync(process.execPath, [join(root, 'scripts', 'build-native.mjs')], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);

const out = join(root, 'build', 'Release', 'flexattn.node');
if (!existsSync(out)) {
  console.error(`node-gyp-shim: the build finished but ${out} does not exist`);
  process.exit(1);
}
// prebuildify strips this file and moves it to prebuilds/; keep the unstripped
// build for the dev tree (scripts/prebuild.mjs puts it back afterwards).
copyFileSync(out, join(root, 'build', 'flexattn.node.unstripped'));
