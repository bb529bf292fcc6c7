// Compile-checks the sm90ws flex kernel (native/kernels/sm90_ws_flex.cuh) with
// the code generator's CUDA for a few mods, as the library would build it
// (lib/cuda/kernel-source.ts sm90wsFlexKernel), with nvcc for sm_90a, and
// prints ptxas's registers / spills per kernel. Needs `npm run build:ts`.
//   node bench/kernel-harness/sm90ws_flex_compile.mjs [outdir]
// Registers: ptxas reports the __launch_bounds__(384, 1) figure (168); the
// consumers raise theirs to 240 with setmaxnreg at run time. Pass: no spills.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { alibi, alibiSlopes, causal, documentMask, slidingWindow, softcap, Tensor } from '../../dist/lib/index.js';
import { modCode } from '../../dist/lib/cuda/mod-code.js';
import { sm90wsFlexKernel } from '../../dist/lib/cuda/kernel-source.js';

const out = process.argv[2] ?? '/tmp/sm90ws-flex-compile';
mkdirSync(out, { recursive: true });
const slopes = Tensor.fromHost(alibiSlopes(8), [8], 'f32', { device: 'cpu' });
const ids = Tensor.fromHost(new Int32Array(2), [1, 2], 'i32', { device: 'cpu' });
const cases = {
  softcap: [softcap(30), undefined],
  softcap_causal: [softcap(30), causal()],
  alibi_causal: [alibi(slopes), causal()],
  sliding: [undefined, slidingWindow(256)],
  document: [undefined, documentMask(ids)],
};
let bad = 0;
for (const [tag, [score, mask]] of Object.entries(cases)) {
  for (const D of [64, 128]) {
    const spec = sm90wsFlexKernel(modCode(score, mask), D, 'bf16');
    const cu = join(out, `${tag}_d${D}.cu`);
    writeFileSync(cu, spec.source);
    const r = spawnSync('nvcc', ['-std=c++17', '-arch=sm_90a', '-cubin', '-I', 'native/kernels', '-Xptxas', '-v',
      '-o', join(out, `${tag}_d${D}.cubin`), cu], { encoding: 'utf8' });
    const err = `${r.stdout}${r.stderr}`;
    const regs = /Used (\d+) registers/.exec(err)?.[1];
    const spill = /(\d+) bytes spill stores, (\d+) bytes spill loads/.exec(err);
    const stack = /(\d+) bytes stack frame/.exec(err)?.[1];
    const ok = r.status === 0 && spill && spill[1] === '0' && spill[2] === '0';
    if (!ok) bad = 1;
    console.log(`${tag.padEnd(16)} d${D}  ${r.status === 0 ? 'compiled' : 'FAILED'}  regs ${regs ?? '?'}  stack ${stack ?? '?'}  ` +
      `spill st/ld ${spill ? `${spill[1]}/${spill[2]}` : '?'}`);
    if (r.status !== 0) console.log(err.split('\n').filter((l) => /error/.test(l)).slice(0, 10).join('\n'));
  }
}
process.exitCode = bad;
