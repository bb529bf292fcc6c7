// Compile progress under NODE_DEBUG=flexattn (util.debuglog in lib/jit.ts): a
// fresh process with an empty kernel cache compiles a flex kernel and says so
// on stderr, with the time; a second process on the same cache says it loaded
// the kernel from disk. A score mod with a new constant each run makes the
// kernel really new; CUDA_CACHE_DISABLE keeps the driver's own cache out.
import { mkdtempSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { packageRoot } from '../../lib/native.js';
import { describeGpu } from '../gpu-gate.js';

const INDEX = pathToFileURL(join(packageRoot, 'dist', 'lib', 'index.js')).href;

function child(cacheDir: string, constant: number, debug: string): { status: number | null; err: string; out: string } {
  const script = `
    const L = await import(${JSON.stringify(INDEX)});
    const q = L.Tensor.randn([1, 2, 77, 64], 'bf16', { device: 'cuda:0' });
    const bm = await L.createBlockMask(L.causal(), 1, 1, 77, 77, { device: 'cuda:0' });
    const sm = L.scoreMod(({ score }) => score.mul(${constant}));
    const { out } = await L.flexAttention(q, q, q, { blockMask: bm, scoreMod: sm });
    await L.synchronize('cuda:0');
    await L.jitIdle();
    const st = (await L.jitStatus()).filter((s) => s.kernel.startsWith('flexattn_flex_')).pop();
    console.log(JSON.stringify(st));
    out.dispose(); q.dispose(); bm.dispose();`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8', timeout: 120_000,
    env: { ...process.env, FLEXATTN_CACHE_DIR: cacheDir, CUDA_CACHE_DISABLE: '1', NODE_DEBUG: debug, FLEXATTN_JIT_TIERED: '1' },
  });
  return { status: r.status, err: r.stderr, out: r.stdout };
}

describeGpu('NODE_DEBUG=flexattn reports kernel compiles', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flexattn-jit-progress-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const constant = 1 + ((Date.now() % 1000003) + 1) * 1e-8;

  it('a cold first call logs the quick compile and the optimized upgrade; a warm one the disk load', () => {
    const cold = child(dir, constant, 'flexattn');
    expect(cold.status, cold.err).toBe(0);
    const st = JSON.parse(cold.out.trim().split('\n').pop()!) as { kernel: string; origin: string };
    const name = st.kernel.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    expect(cold.err).toMatch(new RegExp(`^FLEXATTN \\d+: compiling flex kernel ${name} \\(quick tier, optimized build alongside\\)…$`, 'm'));
    expect(cold.err).toMatch(new RegExp(`^FLEXATTN \\d+: compiling flex kernel ${name} \\(quick tier\\)… done in \\d+ ms$`, 'm'));
    expect(cold.err).toMatch(new RegExp(`^FLEXATTN \\d+: optimized build of ${name} ready in \\d+ ms`, 'm'));

    const warm = child(dir, constant, 'flexattn');
    expect(warm.status, warm.err).toBe(0);
    expect(warm.err).not.toContain(`compiling flex kernel ${st.kernel}`);
    expect(warm.err).toMatch(new RegExp(`^FLEXATTN \\d+: loading kernel ${name}… done in \\d+ ms \\(disk\\)$`, 'm'));

    // without NODE_DEBUG nothing is printed
    const quiet = child(dir, constant + 1e-3, '');
    expect(quiet.status, quiet.err).toBe(0);
    expect(quiet.err).not.toContain('FLEXATTN');
  }, 240_000);
});
