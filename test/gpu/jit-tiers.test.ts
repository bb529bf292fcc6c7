// Tiered JIT (lib/jit.ts) on the GPU: a generated kernel missing from the
// caches runs its first call on the quick build, is upgraded to the optimized
// build, and both builds agree with the CPU reference. The kernel cache dir is
// a fresh temporary folder, and each run uses a score mod with a new constant,
// so the kernels are really compiled here.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Tensor, causal, createBlockMask, flexAttention, jitIdle, jitStatus, scoreMod, type FlexAttentionResult } from '../../lib/index.js';
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
});
