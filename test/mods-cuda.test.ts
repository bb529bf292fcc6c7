/**
 * Generated CUDA for every built-in, their compositions and random IR programs
 * compiles with `nvcc -arch=sm_90a -cubin`. Many programs are batched into one
 * translation unit (each in its own namespace) to keep nvcc calls few.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CompileError } from '../lib/errors.js';
import {
  alibi, andMasks, causal, composeScoreMods, documentMask, fullMask, generateCuda, imageBlocks, imageBlocksFromIds,
  logitClip, maskMod, notMask, orMasks, param, prefixLM, relativeBias, scoreMod, slidingWindow, softcap, tensorAt,
  type CudaModCode, type MaskMod, type ScoreMod,
} from '../lib/mods/index.js';
import { hostTensor, mulberry32, randomMod } from './random-mods.js';

function findNvcc(): string | null {
  try {
    const r = spawnSync('nvcc', ['--version'], { encoding: 'utf8' });
    return r.status === 0 ? 'nvcc' : null;
  } catch { return null; }
}
const nvcc = findNvcc();

/** Wraps fragments in namespaces with a dummy kernel each and compiles them in one nvcc call. */
function compileBatch(codes: CudaModCode[]): void {
  const parts: string[] = [generateCuda().source]; // helpers at global scope
  codes.forEach((c, i) => {
    parts.push('#undef FLEX_HAS_SCORE_MOD', '#undef FLEX_HAS_MASK_MOD', '#undef FLEX_MASK_MOD_READS_MEMORY', `namespace m${i} {`, c.source,
      `extern "C" __global__ void k${i}(FlexModArgs args, float* out) {`,
      '  int t = threadIdx.x + blockIdx.x * blockDim.x;',
      '  float s = flex_score_mod(0.37f * (float)t - 3.0f, t & 1, t & 3, t, t >> 1, args);',
      '  bool m = flex_mask_mod(t & 1, t & 3, t, t >> 1, args);',
      '  out[t] = m ? s : -1.0f;',
      '}', `}  // namespace m${i}`);
  });
  const source = parts.join('\n');
  const dir = mkdtempSync(join(tmpdir(), 'flexattn-mods-'));
  try {
    const cu = join(dir, 'mods.cu');
    writeFileSync(cu, source);
    try {
      execFileSync(nvcc!, ['-arch=sm_90a', '-cubin', '-o', join(dir, 'mods.cubin'), cu], { encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      const err = e as { stderr?: string; stdout?: string; message: string };
      const log = `${err.stdout ?? ''}${err.stderr ?? ''}` || err.message;
      throw new CompileError(`nvcc failed on generated mod code:\n${log}\n--- source ---\n${source}`, source, log);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const suite = nvcc ? describe : describe.skip;
if (!nvcc) console.log('[mods-cuda] skipped: nvcc not found on PATH');

suite('CUDA codegen compiles with nvcc (sm_90a)', () => {
  it('built-ins, compositions and 40 random programs', () => {
    const f32 = (n: number[]) => hostTensor(new Float32Array(n.reduce((a, b) => a * b, 1)), n, 'f32');
    const ids2 = hostTensor(new Int32Array(16), [2, 8], 'i32');
    const ids1 = hostTensor(new Int32Array(8), [8], 'i32');
    const slopes = f32([4]);
    const bf = hostTensor(new Uint16Array(4), [4], 'bf16');
    const hf = hostTensor(new Uint16Array(4), [4], 'f16');
    const bo = hostTensor(new Uint8Array(4), [4], 'bool');
    const scores: ScoreMod[] = [
      alibi(slopes), alibi(bf), softcap(30), softcap(param('cap')), logitClip(f32([4])), logitClip(5), relativeBias(f32([4, 9])),
      relativeBias(hf), composeScoreMods(alibi(slopes), softcap(20)),
      scoreMod(({ score, q, kv }) => score.add(q.sub(kv).abs().toFloat().log().neg()).exp2().sigmoid().sqrt()),
      scoreMod(({ score }) => score.add(Infinity).min(-Infinity).max(NaN).mul(-0)),
      scoreMod(({ score, b }) => score.mod(1.5).add(score.floorDiv(0.25)).add(b.mod(-3).floorDiv(2).mul(-2147483648))),
    ];
    const masks: MaskMod[] = [
      causal(), fullMask(), slidingWindow(128), slidingWindow(64, { lookahead: 3 }), prefixLM(10), documentMask(ids2),
      documentMask(ids1, { causal: false }), imageBlocks([{ start: 2, length: 3 }]), imageBlocks([[{ start: 0, length: 2 }], []]),
      imageBlocksFromIds(ids2), andMasks(causal(), documentMask(ids2)), orMasks(prefixLM(4), slidingWindow(8)), notMask(causal()),
      andMasks(), orMasks(), maskMod(({ h }) => tensorAt(bo, [h]).and(param('n', 'int').gt(h))),
    ];
    const codes: CudaModCode[] = [];
    scores.forEach((s, i) => codes.push(generateCuda(s, masks[i % masks.length])));
    masks.forEach((m) => codes.push(generateCuda(undefined, m)));
    scores.forEach((s) => codes.push(generateCuda(s)));
    const rng = mulberry32(777);
    for (let i = 0; i < 40; i++) {
      const s = randomMod(rng, { kind: 'score', depth: 2 + (i % 5) }).mod as ScoreMod;
      const m = randomMod(rng, { kind: 'mask', depth: 2 + (i % 5) }).mod as MaskMod;
      const c = i % 3 === 0 ? generateCuda(s) : i % 3 === 1 ? generateCuda(undefined, m) : (() => {
        try { return generateCuda(s, m); } catch { return generateCuda(s); } // param type clash between the two
      })();
      codes.push(c);
    }
    expect(codes.length).toBeGreaterThan(70);
    compileBatch(codes);
  });

  it('captured-tensor loads stay one per address inside a kernel tile (ALiBi, document mask)', () => {
    // Compiles the real Hopper flex kernel around generated mods and counts global loads in its PTX.
    // Guarded loads (`n <= 0 ? 0 : t[i]`) compiled to one branch + load per score element: 96 / 73 loads
    // (bench/results/kernel-notes.md run 8); unconditional flex_src loads CSE to 7 / 23. Since run 11 the
    // document kernel has two mask paths (partial blocks inside the bounds, and edge blocks with clamped
    // indices), each loading its 2 row ids and 16 column ids once: 41 (the guarded emission: > 140).
    const slopes = hostTensor(new Float32Array(16), [16], 'f32');
    const ids = hostTensor(new Int32Array(2 * 64), [2, 64], 'i32');
    const kernels = join(process.cwd(), 'native', 'kernels');
    const loads = (code: CudaModCode): number => {
      const dir = mkdtempSync(join(tmpdir(), 'flexattn-ptx-'));
      try {
        const cu = join(dir, 'k.cu');
        writeFileSync(cu, `${code.source}\n#include "flash_fwd_sm90.cuh"\nFLEXATTN_FWD_SM90_KERNEL(k, 128, bf16, kBlockSparse)\n`);
        execFileSync(nvcc!, ['-arch=sm_90a', '-ptx', '-O3', '--use_fast_math', '-std=c++17', '-I', kernels, '-o', join(dir, 'k.ptx'), cu], { stdio: 'pipe' });
        return (execFileSync('grep', ['-c', 'ld.global', join(dir, 'k.ptx')], { encoding: 'utf8' }).trim() as unknown as number) * 1;
      } finally { rmSync(dir, { recursive: true, force: true }); }
    };
    expect(loads(generateCuda(alibi(slopes), causal()))).toBeLessThanOrEqual(12);
    expect(loads(generateCuda(undefined, documentMask(ids)))).toBeLessThanOrEqual(48);
  }, 120_000);

  it('a compile failure carries the source and the compiler log', () => {
    const bad = generateCuda(undefined, causal());
    const broken = { ...bad, source: bad.source.replace('return v', 'return undefined_symbol + v') };
    let err: unknown;
    try { compileBatch([broken]); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(CompileError);
    expect((err as CompileError).log).toMatch(/undefined_symbol/);
    expect((err as CompileError).source).toContain('flex_mask_mod');
  });
});
