// Tiered JIT (lib/jit.ts) on the GPU: a generated kernel missing from the
// caches runs its first call on the quick build, is upgraded to the optimized
// build, and both builds agree with the CPU reference. The kernel cache dir is
// a fresh temporary folder, and each run uses a score mod with a new constant,
// so the kernels are really compiled here. The last test runs child processes
// (test/gpu/jit-disk-child.mjs, on dist/: `npm run build:ts` first) to check
// the disk cache across processes: reuse, a damaged entry, an unwritable
// directory, a cap smaller than one kernel.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Tensor, causal, createBlockMask, flexAttention, jitIdle, jitStatus, scoreMod, type FlexAttentionResult } from '../../lib/index.js';
import { packageRoot } from '../../lib/native.js';
import { describeGpu } from '../gpu-gate.js';
import { relError } from '../reference.js';

const gpu = { device: 'cuda:0' as const };
const S = 333, D = 64;

/** Leaves a NaN-filled block in the caching allocator so an unwritten output shows as NaN. */
function poison(numel: number): void {
  Tensor.fromHost(new Uint16Array(numel).fill(0x7fc0), [numel], 'bf16', gpu).dispose();
}

function out(r: Tensor | FlexAttentionResult): Tensor {
  return r instanceof Tensor ? r : r.out;
}

describeGpu('tiered JIT: quick first build, optimized upgrade', () => {
  let dir = '';
  const saved = { cache: process.env.FLEXATTN_CACHE_DIR, tiered: process.env.FLEXATTN_JIT_TIERED };
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'flexattn-jit-tiers-'));
    process.env.FLEXATTN_CACHE_DIR = dir;
  });
  afterAll(() => {
    if (saved.cache === undefined) delete process.env.FLEXATTN_CACHE_DIR; else process.env.FLEXATTN_CACHE_DIR = saved.cache;
    if (saved.tiered === undefined) delete process.env.FLEXATTN_JIT_TIERED; else process.env.FLEXATTN_JIT_TIERED = saved.tiered;
    rmSync(dir, { recursive: true, force: true });
  });

  const unique = 1 + ((Date.now() % 100000) + 1) * 1e-7;

  it('first call runs the quick build, later calls the optimized one; both match the CPU reference', async () => {
    const q = Tensor.randn([1, 2, S, D], 'bf16', gpu), k = Tensor.randn([1, 2, S, D], 'bf16', gpu), v = Tensor.randn([1, 2, S, D], 'bf16', gpu);
    const sm = scoreMod(({ score }) => score.mul(unique).tanh().mul(20));
    const bmGpu = await createBlockMask(causal(), 1, 1, S, S, gpu);
    const bmCpu = await createBlockMask(causal(), 1, 1, S, S, { device: 'cpu' });
    const [qc, kc, vc] = await Promise.all([q.toDevice('cpu'), k.toDevice('cpu'), v.toDevice('cpu')]);
    const want = out(await flexAttention(qc, kc, vc, { blockMask: bmCpu, scoreMod: sm }));

    poison(2 * S * D);
    const first = out(await flexAttention(q, k, v, { blockMask: bmGpu, scoreMod: sm }));
    const st1 = (await jitStatus()).filter((s) => s.kernel.startsWith('flexattn_flex_'));
    const mine = st1[st1.length - 1]!;
    // The optimized compile may win the race on a loaded machine; normally the quick one is first.
    expect(['quick', 'optimized']).toContain(mine.tier);
    if (mine.tier === 'quick') {
      expect(mine.upgradePending).toBe(true);
      expect(mine.quickCompileMs).toBeGreaterThan(0);
    }
    await jitIdle();
    const st2 = (await jitStatus()).find((s) => s.kernel === mine.kernel)!;
    expect(st2.tier).toBe('optimized');
    expect(st2.upgradePending).toBe(false);
    expect(st2.upgradeError).toBeUndefined();
    poison(2 * S * D);
    const second = out(await flexAttention(q, k, v, { blockMask: bmGpu, scoreMod: sm }));

    const a = await first.toFloat32(), b = await second.toFloat32(), w = await want.toFloat32();
    expect(relError(a, w)).toBeLessThan(1e-2);
    expect(relError(b, w)).toBeLessThan(1e-2);
    for (const t of [q, k, v, qc, kc, vc, first, second, want]) t.dispose();
  }, 120_000);

  it('FLEXATTN_JIT_TIERED=0: the first call waits for the optimized build', async () => {
    process.env.FLEXATTN_JIT_TIERED = '0';
    const q = Tensor.randn([1, 1, 64, D], 'bf16', gpu);
    const sm = scoreMod(({ score }) => score.mul(unique + 1e-3));
    const bm = await createBlockMask(causal(), 1, 1, 64, 64, gpu);
    const r = out(await flexAttention(q, q, q, { blockMask: bm, scoreMod: sm }));
    const st = (await jitStatus()).filter((s) => s.kernel.startsWith('flexattn_flex_'));
    expect(st[st.length - 1]!.tier).toBe('optimized');
    expect(st[st.length - 1]!.upgradePending).toBe(false);
    r.dispose(); q.dispose();
    delete process.env.FLEXATTN_JIT_TIERED;
  }, 120_000);

  interface ChildResult { relError: number; status: { tier: string; origin: string; compileMs: number }; warnings: string[] }
  function child(env: Record<string, string>, u: number): ChildResult {
    if (!existsSync(join(packageRoot, 'dist', 'lib', 'index.js'))) throw new Error('dist/lib is missing: run `npm run build:ts` first');
    const r = spawnSync(process.execPath, [join(packageRoot, 'test', 'gpu', 'jit-disk-child.mjs'), JSON.stringify({ unique: u })], {
      env: { ...process.env, FLEXATTN_JIT_TIERED: '1', FLEXATTN_CACHE_MAX_MB: '', ...env }, encoding: 'utf8', timeout: 110_000,
    });
    if (r.status !== 0) throw new Error(`child exited with ${r.status}: ${r.stderr}`);
    return JSON.parse(r.stdout) as ChildResult;
  }

  it('disk cache across processes: reuse, a damaged entry recompiled, an unwritable cache only warns', () => {
    const u = unique + 2e-3, cache = join(dir, 'across');
    // 1. Compiles (nothing cached yet) and writes the cache.
    const first = child({ FLEXATTN_CACHE_DIR: cache }, u);
    expect(first.relError).toBeLessThan(1e-2);
    expect(first.status.origin).not.toBe('disk');
    expect(first.warnings).not.toContain('FLEXATTN_CACHE');
    const files = readdirSync(cache).filter((f) => f.endsWith('.cubin'));
    expect(files.length).toBeGreaterThan(0);
    expect(readdirSync(cache).filter((f) => !f.endsWith('.cubin'))).toEqual([]); // no temp files left
    // 2. A second process loads the optimized build from disk.
    const second = child({ FLEXATTN_CACHE_DIR: cache }, u);
    expect(second.relError).toBeLessThan(1e-2);
    expect(second.status).toMatchObject({ origin: 'disk', tier: 'optimized' });
    expect(second.status.compileMs).toBeLessThan(first.status.compileMs);
    // 3. Every entry damaged in its payload: detected, removed, recompiled, never loaded.
    for (const f of files) {
      const p = join(cache, f), b = readFileSync(p);
      b[b.length >> 1] ^= 0x40;
      writeFileSync(p, b);
    }
    const third = child({ FLEXATTN_CACHE_DIR: cache }, u);
    expect(third.relError).toBeLessThan(1e-2);
    expect(third.status.origin).not.toBe('disk');
    // ... and the rewritten entry serves the next process.
    expect(child({ FLEXATTN_CACHE_DIR: cache }, u).status.origin).toBe('disk');
    // 4. A cache directory that cannot exist (under a regular file): the call works, one warning.
    const file = join(dir, 'plain-file');
    writeFileSync(file, 'x');
    const ro = child({ FLEXATTN_CACHE_DIR: join(file, 'sub') }, u);
    expect(ro.relError).toBeLessThan(1e-2);
    expect(ro.warnings.filter((w) => w === 'FLEXATTN_CACHE')).toHaveLength(1);
    // 5. A cap smaller than one kernel: nothing written, the call works, one warning.
    const tiny = join(dir, 'tiny');
    const small = child({ FLEXATTN_CACHE_DIR: tiny, FLEXATTN_CACHE_MAX_MB: '0.001' }, u);
    expect(small.relError).toBeLessThan(1e-2);
    expect(small.warnings.filter((w) => w === 'FLEXATTN_CACHE')).toHaveLength(1);
    expect(existsSync(tiny) ? readdirSync(tiny).filter((f) => f.endsWith('.cubin')) : []).toEqual([]);
  }, 600_000);
});
