// Context-parallel (ring) attention on G virtual ranks (CPU backend) equals
// single-device flexAttention on the whole sequence: masks and mods at global
// positions, zigzag and contiguous layouts, GQA, LSE (issue 22).
import { describe, expect, it } from 'vitest';
import {
  Tensor, flexAttention, createBlockMask, createVirtualTransport, contextParallelAttention, shardSequence, unshardSequence,
  shardPositions, causal, documentMask, slidingWindow, softcap, alibi, andMasks, maskMod, scoreMod, param,
  ShapeError, DeviceError, InvalidArgumentError, NotImplementedError, type MaskMod, type ScoreMod, type ShardLayout,
} from '../lib/index.js';
import { randnArray } from './reference.js';

const cpu = { device: 'cpu' as const };

interface Case {
  B?: number; Hq?: number; Hkv?: number; S: number; Skv?: number; D?: number; dtype?: 'f32' | 'bf16';
  isCausal?: boolean; maskMod?: MaskMod; scoreMod?: ScoreMod; layout?: ShardLayout; params?: Record<string, number>;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!, y = b[i]!;
    if (x === y) continue; // equal infinities
    const d = Math.abs(x - y);
    if (!(d <= m)) m = d; // NaN on one side makes it NaN
  }
  return m;
}

async function check(G: number, c: Case): Promise<void> {
  const B = c.B ?? 1, Hq = c.Hq ?? 2, Hkv = c.Hkv ?? Hq, S = c.S, Skv = c.Skv ?? c.S, D = c.D ?? 16, dtype = c.dtype ?? 'f32';
  const seed = G * 100 + S;
  const q = Tensor.fromHost(randnArray(B * Hq * S * D, seed), [B, Hq, S, D], dtype, cpu);
  const k = Tensor.fromHost(randnArray(B * Hkv * Skv * D, seed + 1), [B, Hkv, Skv, D], dtype, cpu);
  const v = Tensor.fromHost(randnArray(B * Hkv * Skv * D, seed + 2), [B, Hkv, Skv, D], dtype, cpu);
  const mask = c.isCausal && c.maskMod ? andMasks(causal(), c.maskMod) : c.isCausal ? causal() : c.maskMod;
  const enableGQA = Hq !== Hkv;
  const bm = mask ? await createBlockMask(mask, B, Hq, S, Skv, { device: 'cpu', ...(c.params ? { params: c.params } : {}) }) : undefined;
  const ref = await flexAttention(q, k, v, {
    returnLse: true, enableGQA, ...(bm ? { blockMask: bm } : {}), ...(c.scoreMod ? { scoreMod: c.scoreMod } : {}),
    ...(c.params ? { params: c.params } : {}),
  });
  const layout = c.layout ?? 'zigzag';
  const t = createVirtualTransport({ size: G, device: 'cpu' });
  const [qs, ks, vs] = [q, k, v].map((x) => shardSequence(x, G, { layout }));
  const res = await contextParallelAttention(qs!, ks!, vs!, {
    transport: t, layout, returnLse: true, enableGQA,
    ...(c.isCausal ? { isCausal: true } : {}), ...(c.maskMod ? { maskMod: c.maskMod } : {}),
    ...(c.scoreMod ? { scoreMod: c.scoreMod } : {}), ...(c.params ? { params: c.params } : {}),
  });
  expect(res.out).toHaveLength(G);
  expect(res.out[0]!.dtype).toBe(dtype);
  expect(res.out[0]!.shape).toEqual([B, Hq, S / G, D]);
  const out = unshardSequence(res.out, { layout });
  const lse = unshardSequence(res.lse!, { layout });
  const [o, r, l, rl] = await Promise.all([out.toFloat32(), ref.out.toFloat32(), lse.toFloat32(), ref.lse!.toFloat32()]);
  // Random data, never all zeros: a wrong answer moves the output by O(0.1).
  expect(r.some((x) => Math.abs(x) > 0.1)).toBe(true);
  const tol = dtype === 'f32' ? 2e-5 : 2e-2;
  expect(maxAbsDiff(o, r)).toBeLessThan(tol);
  expect(maxAbsDiff(l, rl)).toBeLessThan(dtype === 'f32' ? 2e-5 : 1e-2);
}

const GS = [1, 2, 3, 4];

describe('contextParallelAttention on virtual ranks (CPU) equals flexAttention', () => {
  for (const G of GS) {
    describe(`G = ${G}`, () => {
      it('no mask, zigzag and contiguous', async () => {
        await check(G, { S: 24 });
        await check(G, { S: 24, layout: 'contiguous', B: 2 });
      });
      it('causal (zigzag, contiguous, bf16)', async () => {
        await check(G, { S: 48, isCausal: true });
        await check(G, { S: 24, isCausal: true, layout: 'contiguous' });
        await check(G, { S: 24, isCausal: true, dtype: 'bf16' });
      });
      it('document mask with global positions (docIds [B, S])', async () => {
        const S = 48, B = 2;
        const ids = new Int32Array(B * S);
        for (let b = 0; b < B; b++) for (let i = 0; i < S; i++) ids[b * S + i] = b === 0 ? Math.floor(i / 13) : (i < 5 ? 0 : i < 30 ? 1 : 2);
        const docIds = Tensor.fromHost(ids, [B, S], 'i32', cpu);
        await check(G, { S, B, maskMod: documentMask(docIds) });
        await check(G, { S, B, maskMod: documentMask(docIds, { causal: false }), layout: 'contiguous' });
      });
      it('sliding window, softcap, ALiBi, a user mask with a param', async () => {
        await check(G, { S: 48, maskMod: slidingWindow(7) });
        await check(G, { S: 24, isCausal: true, scoreMod: softcap(2) });
        const slopes = Tensor.fromHost(new Float32Array([0.5, 0.25]), [2], 'f32', cpu);
        await check(G, { S: 24, isCausal: true, scoreMod: alibi(slopes) });
        const band = maskMod(({ q, kv }) => kv.ge(q.sub(param('w', 'int'))).and(kv.mod(3).ne(1)));
        const rel = scoreMod(({ score, q, kv }) => score.add(q.sub(kv).toFloat().mul(0.01)));
        await check(G, { S: 24, maskMod: band, scoreMod: rel, params: { w: 9 } });
      });
      it('cross-attention (Skv = 2·Sq), causal and not', async () => {
        await check(G, { S: 24, Skv: 48, isCausal: true });
        await check(G, { S: 24, Skv: 48, layout: 'contiguous', scoreMod: softcap(2) });
      });
      it('odd chunk lengths (contiguous S = 7G, zigzag S = 10G: chunks of 5)', async () => {
        await check(G, { S: 7 * G, isCausal: true, layout: 'contiguous' });
        await check(G, { S: 10 * G, isCausal: true, maskMod: slidingWindow(6) });
      });
      it('GQA (Hq = 4, Hkv = 2), causal; head dim 32', async () => {
        await check(G, { S: 24, Hq: 4, Hkv: 2, isCausal: true, D: 32 });
      });
    });
  }
});

describe('shardSequence / unshardSequence', () => {
  it('zigzag rank r holds chunks r and 2G-1-r; contiguous chunk r', () => {
    expect([...shardPositions(8, 2, 0)]).toEqual([0, 1, 6, 7]);
    expect([...shardPositions(8, 2, 1)]).toEqual([2, 3, 4, 5]);
    expect([...shardPositions(12, 3, 2, 'contiguous')]).toEqual([8, 9, 10, 11]);
  });
  it('round-trips and places tokens by global position', async () => {
    const S = 12, x = Tensor.fromHost(Float32Array.from({ length: 2 * S }, (_, i) => i), [1, 2, S, 1], 'f32', cpu);
    const parts = shardSequence(x, 3);
    expect(Array.from(await parts[1]!.toFloat32())).toEqual([2, 3, 8, 9, 14, 15, 20, 21]);
    expect(Array.from(await unshardSequence(parts).toFloat32())).toEqual(Array.from(await x.toFloat32()));
    const p0 = shardSequence(x, 2, { dim: -2, layout: 'contiguous' });
    expect(Array.from(await p0[1]!.toFloat32())).toEqual([6, 7, 8, 9, 10, 11, 18, 19, 20, 21, 22, 23]);
  });
  it('a length that does not divide is a ShapeError naming the padded length', () => {
    const x = Tensor.zeros([1, 1, 10, 4], 'f32', cpu);
    expect(() => shardSequence(x, 3)).toThrow(ShapeError);
    expect(() => shardSequence(x, 3)).toThrow(/pad it to 12/);
    expect(() => shardSequence(x, 2, { layout: 'contiguous' })).not.toThrow();
  });
});

describe('contextParallelAttention: bad input', () => {
  const t = createVirtualTransport({ size: 2, device: 'cpu' });
  const mk = (S: number, H = 2) => Tensor.randn([1, H, S, 8], 'f32', cpu);
  it('shard count, shapes, layout, blockMask, transport', async () => {
    const [a, b] = [mk(4), mk(4)];
    await expect(contextParallelAttention([a], [a], [a], { transport: t })).rejects.toThrow(InvalidArgumentError);
    await expect(contextParallelAttention([a, mk(6)], [a, b], [a, b], { transport: t })).rejects.toThrow(ShapeError);
    await expect(contextParallelAttention([mk(3), mk(3)], [mk(3), mk(3)], [mk(3), mk(3)], { transport: t })).rejects.toThrow(/multiple of 4/);
    await expect(contextParallelAttention([a, b], [a, b], [a, b], { transport: t, blockMask: {} as never })).rejects.toThrow(NotImplementedError);
    await expect(contextParallelAttention([a, b], [a, b], [a, b], {} as never)).rejects.toThrow(/options.transport/);
    await expect(contextParallelAttention([a, b], [a, b], [a, b], { transport: t, layout: 'ring' as never })).rejects.toThrow(/options.layout/);
    const bad = maskMod(({ q, kv }) => kv.le(q.add(param('cp_q_offset', 'int'))));
    await expect(contextParallelAttention([a, b], [a, b], [a, b], { transport: t, maskMod: bad })).rejects.toThrow(/cp_q_offset/);
  });
  it('a tensor on a device that is not the rank\'s', async () => {
    const fake = { ...t, kind: t.kind, size: 2, localRanks: [0, 1], devices: ['cpu', 'cuda:1'], ringShift: t.ringShift, allGather: t.allGather, dispose() {} };
    const [a, b] = [mk(4), mk(4)];
    await expect(contextParallelAttention([a, b], [a, b], [a, b], { transport: fake as never })).rejects.toThrow(DeviceError);
  });
});

describe('createVirtualTransport', () => {
  const f = (xs: number[], shape = [xs.length]) => Tensor.fromHost(Float32Array.from(xs), shape, 'f32', cpu);
  it('ringShift: rank r receives what rank r-1 sent; allGather in rank order', async () => {
    const t = createVirtualTransport({ size: 3, device: 'cpu' });
    expect(t.kind).toBe('virtual');
    expect(t.localRanks).toEqual([0, 1, 2]);
    const send = [f([1, 2]), f([3, 4]), f([5, 6])];
    const recv = [0, 1, 2].map(() => Tensor.zeros([2], 'f32', cpu));
    await t.ringShift(send, recv);
    expect(await Promise.all(recv.map(async (x) => Array.from(await x.toFloat32())))).toEqual([[5, 6], [1, 2], [3, 4]]);
    const out = [0, 1, 2].map(() => Tensor.zeros([6], 'f32', cpu));
    await t.allGather(send, out);
    for (const o of out) expect(Array.from(await o.toFloat32())).toEqual([1, 2, 3, 4, 5, 6]);
    await expect(t.ringShift(send, [recv[0]!, recv[1]!, send[0]!])).rejects.toThrow(InvalidArgumentError);
    await expect(t.ringShift(send, recv.slice(0, 2))).rejects.toThrow(/3 tensors/);
    await expect(t.allGather(send, [f([0, 0, 0, 0, 0]), out[1]!, out[2]!])).rejects.toThrow(ShapeError);
    await expect(t.ringShift(send, [0, 1, 2].map(() => Tensor.zeros([2, 2], 'f32', cpu).select(1, 0)))).rejects.toThrow(/contiguous/);
    t.dispose();
    await expect(t.ringShift(send, recv)).rejects.toThrow(/dispose/);
    expect(() => createVirtualTransport({ size: 0, device: 'cpu' })).toThrow(InvalidArgumentError);
  });
});
