// Context-parallel attention, the LSE merge kernel and KV-sharded decoding on
// cuda:0 with virtual ranks (issue 22): compared with single-device CUDA
// attention and with the CPU backend on the same bf16 data. The allocator is
// poisoned with NaN before each run, so an unwritten output row shows.
import { expect, it } from 'vitest';
import {
  Tensor, flexAttention, createBlockMask, createVirtualTransport, contextParallelAttention, shardSequence, unshardSequence,
  causal, andMasks, maskMod, documentMask, slidingWindow, softcap, KvCache, pagedAttention, ShardedKvCache, shardedPagedAttention,
  ShapeError, type MaskMod, type ScoreMod, type ShardLayout,
} from '../../lib/index.js';
import { emptyAccumulator, mergeInto } from '../../lib/parallel/lse-merge.js';
import { lseMergeKernel } from '../../lib/parallel/lse-merge-cuda.js';
import { describeGpu } from '../gpu-gate.js';
import { randnArray, relError } from '../reference.js';

// Context-parallel attention and sharded decoding on CUDA are off by default until a GPU run has
// verified them (lib/cuda/switches.ts, requireVerifiedGpuPath); this suite is that verification.
process.env.FLEXATTN_UNVERIFIED_GPU_PATHS ??= '1';

const gpu = { device: 'cuda:0' as const };
const cpu = { device: 'cpu' as const };

function poison(numel: number): void {
  Tensor.fromHost(new Uint16Array(numel).fill(0x7fc0), [numel], 'bf16', gpu).dispose();
  Tensor.fromHost(new Float32Array(Math.ceil(numel / 2)).fill(NaN), [Math.ceil(numel / 2)], 'f32', gpu).dispose();
}

function close(got: Float32Array, want: Float32Array, tol: number, what: string): number {
  let nan = 0;
  for (let i = 0; i < got.length; i++) if (Number.isNaN(got[i]!)) nan++;
  expect(nan, `${what}: NaN in the output (unwritten or poisoned)`).toBe(0);
  const err = relError(got, want);
  expect(err, what).toBeLessThan(tol);
  return err;
}

interface Cp {
  G: number; S: number; B?: number; Hq?: number; Hkv?: number; D?: number; layout?: ShardLayout;
  isCausal?: boolean; maskMod?: MaskMod; scoreMod?: ScoreMod;
  /** Compare only the first `valid` positions with attention over those alone (the rest is padding the mask excludes). */
  valid?: number;
}

async function cpCase(c: Cp): Promise<void> {
  const B = c.B ?? 1, Hq = c.Hq ?? 4, Hkv = c.Hkv ?? Hq, D = c.D ?? 64, S = c.S, layout = c.layout ?? 'zigzag';
  const n = c.valid ?? S;
  const q = Tensor.randn([B, Hq, S, D], 'bf16', gpu), k = Tensor.randn([B, Hkv, S, D], 'bf16', gpu), v = Tensor.randn([B, Hkv, S, D], 'bf16', gpu);
  const enableGQA = Hq !== Hkv;
  // Reference over the valid positions only (padding keys are masked by c.maskMod in the sharded run).
  const [qn, kn, vn] = [q, k, v].map((x) => x.narrow(2, 0, n).contiguous());
  const refMask = c.valid !== undefined ? (c.isCausal ? causal() : undefined) : (c.isCausal && c.maskMod ? andMasks(causal(), c.maskMod) : c.isCausal ? causal() : c.maskMod);
  const opts = { returnLse: true, enableGQA, ...(c.scoreMod ? { scoreMod: c.scoreMod } : {}) };
  const bmG = refMask ? await createBlockMask(refMask, B, Hq, n, n, gpu) : undefined;
  const refGpu = await flexAttention(qn!, kn!, vn!, { ...opts, ...(bmG ? { blockMask: bmG } : {}) });
  const [qc, kc, vc] = await Promise.all([qn!, kn!, vn!].map((x) => x.toDevice('cpu')));
  const bmC = refMask ? await createBlockMask(refMask, B, Hq, n, n, cpu) : undefined;
  const refCpu = await flexAttention(qc!, kc!, vc!, { ...opts, ...(bmC ? { blockMask: bmC } : {}) });

  const t = createVirtualTransport({ size: c.G, device: 'cuda:0' });
  const [qs, ks, vs] = [q, k, v].map((x) => shardSequence(x, c.G, { layout }));
  poison(4 * B * Hq * S * D);
  const res = await contextParallelAttention(qs!, ks!, vs!, {
    transport: t, layout, returnLse: true, enableGQA, ...(c.isCausal ? { isCausal: true } : {}),
    ...(c.maskMod ? { maskMod: c.maskMod } : {}), ...(c.scoreMod ? { scoreMod: c.scoreMod } : {}),
  });
  expect(res.out[0]!.device).toBe('cuda:0');
  const out = unshardSequence(res.out, { layout }).narrow(2, 0, n).contiguous();
  const lse = unshardSequence(res.lse!, { layout }).narrow(2, 0, n).contiguous();
  const [o, l, rg, rgl, rc] = await Promise.all([out.toFloat32(), lse.toFloat32(), refGpu.out.toFloat32(), refGpu.lse!.toFloat32(), refCpu.out.toFloat32()]);
  const what = `G=${c.G} S=${S} ${layout}`;
  close(o, rg, 1e-2, `${what} vs CUDA flexAttention`);
  close(o, rc, 1e-2, `${what} vs CPU backend`);
  close(l, rgl, 1e-3, `${what} LSE vs CUDA`);
}

describeGpu('context-parallel attention on cuda:0 (virtual ranks)', () => {
  it('S = 4096 causal, zigzag over 2 and 4 ranks, and contiguous (D 128, GQA 8/2)', async () => {
    await cpCase({ G: 4, S: 4096, isCausal: true });
    await cpCase({ G: 2, S: 4096, isCausal: true, Hq: 8, Hkv: 2, D: 128 });
    await cpCase({ G: 4, S: 4096, isCausal: true, layout: 'contiguous' });
  }, 300_000);
  it('S = 1531 and 77 causal: padded to the layout (padding keys masked), rows compared with unpadded attention', async () => {
    await cpCase({ G: 4, S: 1536, valid: 1531, isCausal: true, maskMod: maskMod(({ kv }) => kv.lt(1531)) });
    await cpCase({ G: 3, S: 78, valid: 77, isCausal: true, maskMod: maskMod(({ kv }) => kv.lt(77)), Hq: 4, Hkv: 1 });
    const x = Tensor.randn([1, 2, 77, 64], 'bf16', gpu);
    expect(() => shardSequence(x, 2)).toThrow(ShapeError);
  }, 300_000);
  it('document mask, sliding window and softcap at global positions (B = 2)', async () => {
    const S = 1024, B = 2;
    const ids = new Int32Array(B * S);
    for (let i = 0; i < S; i++) { ids[i] = Math.floor(i / 300); ids[S + i] = i < 77 ? 0 : i < 900 ? 1 : 2; }
    const docIds = Tensor.fromHost(ids, [B, S], 'i32', gpu);
    await cpCase({ G: 4, S, B, maskMod: documentMask(docIds) });
    await cpCase({ G: 2, S, maskMod: slidingWindow(200), scoreMod: softcap(20) });
  }, 300_000);
});

describeGpu('LSE merge kernel equals the CPU merge', () => {
  it('random partials with −∞ rows, NaN rows, bf16 and strided parts', async () => {
    await lseMergeKernel(0);
    const B = 2, H = 3, S = 77, Dv = 96, Sc = 40, off = 30;
    const mk = (seed: number) => {
      const out = Tensor.fromHost(randnArray(B * H * Sc * Dv, seed), [B, H, Sc, Dv], 'bf16', cpu);
      const l = randnArray(B * H * Sc, seed + 1);
      for (let i = 0; i < l.length; i += 7) l[i] = -Infinity;
      l[5] = NaN;
      return { out, lse: Tensor.fromHost(l, [B, H, Sc], 'f32', cpu) };
    };
    const parts = [mk(1), mk(3), mk(5)];
    const c = emptyAccumulator(B, H, S, Dv, 'cpu');
    poison(8 * B * H * S * Dv);
    const g = emptyAccumulator(B, H, S, Dv, 'cuda:0');
    for (const [i, p] of parts.entries()) {
      const rowOffset = i === 1 ? off : 0;
      mergeInto(c.acc, c.lse, { ...p, rowOffset });
      const [go, gl] = await Promise.all([p.out.toDevice('cuda:0'), p.lse.toDevice('cuda:0')]);
      mergeInto(g.acc, g.lse, { out: go, lse: gl, rowOffset });
    }
    const [co, cl, gO, gL] = await Promise.all([c.acc.toFloat32(), c.lse.toFloat32(), g.acc.toFloat32(), g.lse.toFloat32()]);
    let bad = 0;
    for (let i = 0; i < co.length; i++) {
      const a = co[i]!, b = gO[i]!;
      if (Number.isNaN(a) !== Number.isNaN(b) || (!Number.isNaN(a) && Math.abs(a - b) > 1e-4 * (1 + Math.abs(a)))) bad++;
    }
    for (let i = 0; i < cl.length; i++) {
      const a = cl[i]!, b = gL[i]!;
      if (Number.isNaN(a) !== Number.isNaN(b) || (!Number.isNaN(a) && a !== b && !(Math.abs(a - b) < 1e-4))) bad++;
    }
    expect(bad).toBe(0);
    expect(cl.some((x) => x === -Infinity) && cl.some(Number.isNaN) && cl.some(Number.isFinite)).toBe(true);
  });
});

describeGpu('KV-sharded decoding on cuda:0 (virtual ranks)', () => {
  it('equals pagedAttention on one cache (CUDA and CPU): 1 and 4 query tokens, 1 to 3000 tokens, GQA, softcap, window', async () => {
    const Hq = 8, Hkv = 2, D = 128, pageSize = 16;
    const lens = [1, 77, 1531, 3000, 20];
    const total = lens.reduce((a, b) => a + b, 0);
    const one = new KvCache({ pageSize, numPages: 600, numKvHeads: Hkv, headDim: D, dtype: 'bf16', device: 'cuda:0' });
    const oneCpu = new KvCache({ pageSize, numPages: 600, numKvHeads: Hkv, headDim: D, dtype: 'bf16', device: 'cpu' });
    const t = createVirtualTransport({ size: 4, device: 'cuda:0' });
    const sh = new ShardedKvCache({ transport: t, chunkTokens: 256, pageSize, numPages: 600, numKvHeads: Hkv, headDim: D, dtype: 'bf16' });
    const k = Tensor.randn([total, Hkv, D], 'bf16', gpu), v = Tensor.randn([total, Hkv, D], 'bf16', gpu);
    const [kc, vc] = await Promise.all([k.toDevice('cpu'), v.toDevice('cpu')]);
    const a = lens.map(() => one.newSequence()), ac = lens.map(() => oneCpu.newSequence()), s = lens.map(() => sh.newSequence());
    await one.append(a, k, v, { tokens: lens });
    await oneCpu.append(ac, kc, vc, { tokens: lens });
    await sh.append(s, k, v, { tokens: lens });
    for (const m of [1, 4]) {
      for (const mods of [{}, { scoreMod: softcap(30) }, { maskMod: slidingWindow(700) }]) {
        const qt = lens.map((n) => Math.min(m, n));
        const T = qt.reduce((x, y) => x + y, 0);
        const q = Tensor.randn([T, Hq, D], 'bf16', gpu);
        const qc = await q.toDevice('cpu');
        const opts = { queryTokens: qt, returnLse: true as const, ...mods };
        const ref = await pagedAttention(q, one, { seqs: a, ...opts });
        const refC = await pagedAttention(qc, oneCpu, { seqs: ac, ...opts });
        poison(16 * T * Hq * D);
        const got = await shardedPagedAttention(q, sh, { seqs: s, ...opts });
        const [o, l, r, rl, rc] = await Promise.all([got.out[0]!.toFloat32(), got.lse![0]!.toFloat32(), ref.out.toFloat32(), ref.lse.toFloat32(), refC.out.toFloat32()]);
        const what = `m=${m} ${Object.keys(mods).join(',') || 'causal'}`;
        close(o, r, 1e-2, `${what} vs CUDA pagedAttention`);
        close(o, rc, 1e-2, `${what} vs CPU pagedAttention`);
        close(l, rl, 1e-3, `${what} LSE`);
        const o3 = await got.out[3]!.toFloat32();
        expect(relError(o3, o)).toBe(0);
      }
    }
  }, 300_000);
});
