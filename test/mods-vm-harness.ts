/**
 * Reaches native/cpu/mod_vm.cc from tests without touching the real addon's
 * exports: a tiny harness + mod_vm.cc compiled into a throwaway addon that
 * evaluates a program on a batch of (score, b, h, q, kv) points. The build is
 * cached in the OS temp dir under a hash of its sources and flags (so the test
 * files that use it, run in parallel, compile it once), written to a temp name
 * and renamed into place so a concurrent reader never sees half a file.
 */
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NativeModProgram } from '../lib/native.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cxx = process.env.CXX ?? 'g++';

/** Why the VM harness cannot be built here, or null. */
export const vmSkipReason: string | null = spawnSync(cxx, ['--version']).status === 0 ? null : `no C++ compiler (${cxx})`;

const HARNESS = String.raw`
#include <napi.h>
#include "cpu/mod_vm.h"
using flexattn::cpu::ModVm;
static Napi::Value Eval(const Napi::CallbackInfo& info) {
  auto vm = ModVm::FromJs(info[0].As<Napi::Object>());
  Napi::Float64Array pts = info[1].As<Napi::Float64Array>();
  const size_t n = pts.ElementLength() / 5;
  Napi::Float64Array out = Napi::Float64Array::New(info.Env(), n);
  for (size_t i = 0; i < n; i++) {
    const double* p = pts.Data() + 5 * i;
    out[i] = vm->IsMask() ? (vm->Mask((int)p[1], (int)p[2], (int)p[3], (int)p[4]) ? 1.0 : 0.0)
                          : (double)vm->Score((float)p[0], (int)p[1], (int)p[2], (int)p[3], (int)p[4]);
  }
  return out;
}
static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("eval", Napi::Function::New(env, Eval));
  return exports;
}
NODE_API_MODULE(modvm_test, Init)
`;

/** Evaluates a program at points `[score, b, h, q, kv]*` (f32 score result, or 0/1 for a mask). */
export type VmEval = (prog: NativeModProgram, pts: Float64Array) => Float64Array;

/** Builds (or reuses) the harness and loads it. Throws when the compiler fails. */
export function loadModVm(): VmEval {
  const flags = ['-std=c++17', '-O1', '-shared', '-fPIC', '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS', '-fexceptions'];
  const src = join(root, 'native/cpu/mod_vm.cc');
  const key = createHash('sha256').update(HARNESS).update(flags.join(' ')).update(cxx).update(process.version)
    .update(readFileSync(src)).update(readFileSync(join(root, 'native/cpu/mod_vm.h'))).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), 'flexattn-modvm');
  const out = join(dir, `modvm-${key}.node`);
  if (!existsSync(out)) {
    mkdirSync(dir, { recursive: true });
    const tag = `${process.pid}-${Date.now()}`;
    const cc = join(dir, `harness-${tag}.cc`);
    const tmp = join(dir, `modvm-${tag}.node`);
    writeFileSync(cc, HARNESS);
    try {
      execFileSync(cxx, [...flags, '-I', join(root, 'node_modules/node-addon-api'), '-I', join(root, 'node_modules/node-api-headers/include'),
        '-I', join(root, 'native'), cc, src, '-o', tmp], { stdio: 'pipe' });
      renameSync(tmp, out);
    } finally {
      rmSync(cc, { force: true });
      rmSync(tmp, { force: true });
    }
  }
  return (createRequire(import.meta.url)(out) as { eval: VmEval }).eval;
}
