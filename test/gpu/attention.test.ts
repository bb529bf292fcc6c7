// GPU attention (SDPA and flex) against the CPU reference backend on the same
// random inputs. Outputs are poisoned first: the allocator hands the output the
// block a NaN-filled tensor just returned to its cache.
import { expect, it } from 'vitest';
import {
  Tensor, scaledDotProductAttention, flexAttention, createBlockMask, causal, slidingWindow, prefixLM, documentMask,
  imageBlocks, andMasks, orMasks, notMask, softcap, alibi, alibiSlopes, relativeBias, logitClip, composeScoreMods,
  scoreMod, maskMod, param, DTypeError, ShapeError, InvalidArgumentError, deviceInfo, jitStatus, type DType, type MaskMod, type ScoreMod, type FlexAttentionOptions,
  type SdpaOptions,
} from '../../lib/index.js';
import { mulberry32, randomMod } from '../random-mods.js';
import { docIdsFromOffsets } from '../../lib/mods/builtins.js';
import { builtFineSchedule } from '../../lib/cuda/schedules/fine.js';
import { cachedSegmentedSchedule } from '../../lib/cuda/schedules/segments.js';
import { coarsenClasses } from '../block-classes.js';
import { envSwitch } from '../../lib/env.js';
import { describeGpu } from '../gpu-gate.js';
import { compare, compareLse, poison } from '../gpu-compare.js';

const gpu = { device: 'cuda:0' as const };

interface Dims { B: number; Hq: number; Hkv: number; Sq: number; Skv: number; D: number }

function inputs(d: Dims, dtype: DType, layout: 'bhsd' | 'bshd' = 'bhsd') {
  const mk = (H: number, S: number) => layout === 'bhsd'
    ? Tensor.randn([d.B, H, S, d.D], dtype, gpu)
    : Tensor.randn([d.B, S, H, d.D], dtype, gpu).transpose(1, 2);
  return { q: mk(d.Hq, d.Sq), k: mk(d.Hkv, d.Skv), v: mk(d.Hkv, d.Skv) };
}

async function sdpaCase(d: Dims, dtype: DType, opts: SdpaOptions, layout: 'bhsd' | 'bshd' = 'bhsd', tol = 1e-2) {
  const { q, k, v } = inputs(d, dtype, layout);
  poison(d.B * d.Hq * d.Sq * d.D, dtype);
  const g = await scaledDotProductAttention(q, k, v, { ...opts, enableGQA: true, returnLse: true });
  const c = await scaledDotProductAttention(q, k, v, { ...opts, enableGQA: true, returnLse: true, backend: 'cpu' });
  expect(g.out.device).toBe('cuda:0');
  const err = compare(await g.out.toFloat32(), await c.out.toFloat32(), tol);
  compareLse(await g.lse.toFloat32(), await c.lse.toFloat32());
  for (const t of [q, k, v, g.out, g.lse, c.out, c.lse]) t.dispose();
  return err;
}

async function flexCase(d: Dims, dtype: DType, mask: MaskMod | undefined, sm: ScoreMod | undefined,
  extra: FlexAttentionOptions = {}, tol = 1e-2, blockSize?: number | [number, number]) {
  const { q, k, v } = inputs(d, dtype);
  const params = extra.params ?? {};
  const bm = mask
    ? await createBlockMask(mask, d.B, d.Hq, d.Sq, d.Skv, { device: 'cuda:0', params, ...(blockSize ? { blockSize } : {}) })
    : undefined;
  const o: FlexAttentionOptions = { ...extra, enableGQA: true, returnLse: true, ...(bm ? { blockMask: bm } : {}), ...(sm ? { scoreMod: sm } : {}) };
  poison(d.B * d.Hq * d.Sq * d.D, dtype);
  const g = await flexAttention(q, k, v, o);
  const c = await flexAttention(q, k, v, { ...o, backend: 'cpu' });
  const err = compare(await g.out.toFloat32(), await c.out.toFloat32(), tol);
  compareLse(await g.lse!.toFloat32(), await c.lse!.toFloat32());
  for (const t of [q, k, v, g.out, g.lse!, c.out, c.lse!]) t.dispose();
  return err;
}

describeGpu('scaledDotProductAttention on the GPU vs the CPU reference', () => {
  it('every head dim, bf16 and f16, causal and not', async () => {
    for (const D of [32, 64, 96, 128, 256]) {
      for (const dtype of ['bf16', 'f16'] as const) {
        for (const isCausal of [false, true]) {
          const err = await sdpaCase({ B: 1, Hq: 2, Hkv: 2, Sq: 200, Skv: 200, D }, dtype, { isCausal });
          if (dtype === 'f16') expect(err).toBeLessThan(3e-3);
        }
      }
    }
  });
  it('odd lengths 1, 77, 1000, 4097', async () => {
    for (const S of [1, 77, 1000, 4097]) await sdpaCase({ B: 1, Hq: 2, Hkv: 2, Sq: S, Skv: S, D: 64 }, 'bf16', { isCausal: S % 2 === 1 });
  });
  it('GQA and cross-attention (Sq != Skv), [B, S, H, D] storage, custom scale', async () => {
    await sdpaCase({ B: 2, Hq: 8, Hkv: 2, Sq: 333, Skv: 333, D: 128 }, 'bf16', { isCausal: true }, 'bshd');
    await sdpaCase({ B: 2, Hq: 4, Hkv: 4, Sq: 100, Skv: 517, D: 64 }, 'f16', { scale: 0.3 }, 'bshd');
    await sdpaCase({ B: 1, Hq: 4, Hkv: 1, Sq: 517, Skv: 90, D: 128 }, 'bf16', { isCausal: true });
  });
  it('dense bool and additive masks stream from memory (broadcast views)', async () => {
    const d = { B: 2, Hq: 4, Hkv: 2, Sq: 150, Skv: 170, D: 64 };
    const r = mulberry32(3);
    const keep = Tensor.fromHost(Uint8Array.from({ length: d.B * d.Skv }, () => (r() < 0.8 ? 1 : 0)), [d.B, 1, 1, d.Skv], 'bool', gpu);
    await sdpaCase(d, 'bf16', { attnMask: keep });
    const bias = Tensor.randn([d.Sq, d.Skv], 'bf16', gpu);
    await sdpaCase(d, 'bf16', { attnMask: bias });
    // a row with nothing to attend to: output 0, LSE -inf
    const rows = new Uint8Array(d.Sq * d.Skv).fill(1);
    rows.fill(0, 5 * d.Skv, 6 * d.Skv);
    await sdpaCase(d, 'f16', { attnMask: Tensor.fromHost(rows, [d.Sq, d.Skv], 'bool', gpu) });
  });
});

describeGpu('flexAttention on the GPU vs the CPU reference', () => {
  const d: Dims = { B: 2, Hq: 4, Hkv: 2, Sq: 1000, Skv: 1000, D: 64 };
  it('built-in masks: causal, sliding window, prefix LM, document, image blocks, and/or/not', async () => {
    await flexCase(d, 'bf16', causal(), undefined);
    await flexCase({ ...d, Sq: 777, Skv: 777 }, 'f16', slidingWindow(200, { lookahead: 17 }), undefined);
    await flexCase(d, 'bf16', prefixLM(300), undefined);
    const r = mulberry32(7);
    const ids = new Int32Array(d.B * d.Sq);
    for (let b = 0; b < d.B; b++) { let doc = 0; for (let s = 0; s < d.Sq; s++) { if (r() < 0.004) doc++; ids[b * d.Sq + s] = doc; } }
    await flexCase(d, 'bf16', documentMask(Tensor.fromHost(ids, [d.B, d.Sq], 'i32', gpu)), undefined);
    await flexCase(d, 'bf16', imageBlocks([{ start: 100, length: 256 }, { start: 500, length: 300 }], { seqLen: d.Sq }), undefined);
    await flexCase(d, 'f16', andMasks(causal(), notMask(slidingWindow(64))), undefined);
    await flexCase(d, 'bf16', orMasks(prefixLM(128), slidingWindow(256)), undefined);
  });
  it('score mods with captured tensors: softcap, ALiBi, relative bias, logit clip, composed', async () => {
    const slopes = Tensor.fromHost(alibiSlopes(d.Hq), [d.Hq], 'f32', gpu);
    await flexCase(d, 'bf16', causal(), softcap(30));
    await flexCase(d, 'bf16', causal(), alibi(slopes));
    const table = Tensor.randn([d.Hq, 255], 'bf16', gpu);
    await flexCase(d, 'f16', slidingWindow(128), relativeBias(table));
    const clip = Tensor.fromHost(new Float32Array([0.5, 1, 2, 4]), [d.Hq], 'f32', { device: 'cpu' }); // uploaded per call
    await flexCase(d, 'bf16', undefined, composeScoreMods(logitClip(clip), softcap(3)));
  });
  it('empty captured tensors read as 0 (score and mask mods)', async () => {
    const none = Tensor.fromHost(new Float32Array(0), [0], 'f32', gpu);
    const noIds = Tensor.fromHost(new Int32Array(0), [d.B, 0], 'i32', gpu);
    // tensorAt on an empty tensor is 0: alibi(none) is the identity, documentMask(noIds) plain causal.
    await flexCase(d, 'bf16', documentMask(noIds), alibi(none));
    none.dispose(); noIds.dispose();
  });
  it('long K/V: CTAs taken in head groups that fit L2, last group partial (6 heads, groups of 4)', async () => {
    // D=128 bf16, Skv=16384: 8 MB of K+V per head -> work_tile groups 4 heads of B*H = 6.
    const big = { B: 2, Hq: 3, Hkv: 3, Sq: 130, Skv: 16384, D: 128 };
    await flexCase(big, 'bf16', causal(), undefined);
    const ids = Tensor.fromHost(Int32Array.from({ length: 2 * 16384 }, (_, i) => Math.floor((i % 16384) / 3000)), [2, 16384], 'i32', gpu);
    await flexCase(big, 'bf16', documentMask(ids), softcap(20));
    ids.dispose();
    await sdpaCase(big, 'bf16', { isCausal: true });
  });
  it('head dims 32, 128, 256; GQA; cross-attention; params change without recompiling', async () => {
    await flexCase({ ...d, D: 32 }, 'bf16', causal(), softcap(20));
    await flexCase({ ...d, D: 128, Hq: 8, Hkv: 2 }, 'bf16', slidingWindow(300), undefined);
    await flexCase({ B: 1, Hq: 2, Hkv: 2, Sq: 130, Skv: 1100, D: 256 }, 'f16', prefixLM(64), undefined);
    const m = maskMod(({ q, kv }) => q.sub(kv).abs().le(param('w', 'int')));
    const s = scoreMod(({ score, h }) => score.mul(param('t')).add(h.toFloat().mul(0.25)));
    await flexCase(d, 'bf16', m, s, { params: { w: 50, t: 0.5 } });
    await flexCase(d, 'bf16', m, s, { params: { w: 400, t: 2 } });
  });
  it('block sizes 64 and 128x256 (one and four kv tiles per block) at D=128', async () => {
    // The kernel walks a block's 64-wide kv tiles (block sizes are powers of two: a shift splits the index).
    // (S=600, two query heads: the CPU reference evaluates the mods per element.)
    const ds = { B: 2, Hq: 2, Hkv: 1, Sq: 600, Skv: 600, D: 128 };
    const r = mulberry32(11);
    const ids = new Int32Array(2 * 600);
    for (let b = 0; b < 2; b++) { let doc = 0; for (let s = 0; s < 600; s++) { if (r() < 0.008) doc++; ids[b * 600 + s] = doc; } }
    const docs = documentMask(Tensor.fromHost(ids, [2, 600], 'i32', gpu));
    for (const bs of [64, [128, 256]] as (number | [number, number])[]) {
      await flexCase(ds, 'bf16', slidingWindow(150), undefined, {}, 1e-2, bs);
      await flexCase(ds, 'bf16', docs, undefined, {}, 1e-2, bs);
      await flexCase(ds, 'bf16', causal(), softcap(20), {}, 1e-2, bs);
    }
  });
  it('64x64 kernel schedule: derived on the first launch, same output as the 128x128 walk, params guard', async () => {
    const d128 = { ...d, Sq: 700, Skv: 700, D: 128 };
    const { q, k, v } = inputs(d128, 'bf16');
    const r = mulberry32(23);
    const ids = new Int32Array(d128.B * d128.Sq);
    for (let b = 0; b < d128.B; b++) { let doc = 0; for (let s = 0; s < d128.Sq; s++) { if (r() < 0.006) doc++; ids[b * d128.Sq + s] = doc; } }
    const docs = documentMask(Tensor.fromHost(ids, [d128.B, d128.Sq], 'i32', gpu));
    for (const m of [slidingWindow(300), docs, causal()]) {
      const bm = await createBlockMask(m, d128.B, 1, d128.Sq, d128.Skv, { device: 'cuda:0' });
      expect(builtFineSchedule(bm, {})).toBeUndefined();   // createBlockMask knows no kernel tile
      poison(d128.B * d128.Hq * d128.Sq * 128, 'bf16');
      const a = await flexAttention(q, k, v, { blockMask: bm, enableGQA: true, returnLse: true });
      const fine = builtFineSchedule(bm, {});
      expect(fine?.blockSize).toEqual([64, 64]);
      // the schedule lists the mask's positions: coarsened back, it is the user's 128x128 view
      const G = bm.B * bm.H;
      expect(Array.from(coarsenClasses(fine!.classes(), G, fine!.numQBlocks, fine!.numKvBlocks, 2, 2))).toEqual(Array.from(bm.classes()));
      process.env.FLEXATTN_FINE_SCHEDULE = '0';
      poison(d128.B * d128.Hq * d128.Sq * 128, 'bf16');
      const c = await flexAttention(q, k, v, { blockMask: bm, enableGQA: true, returnLse: true });
      delete process.env.FLEXATTN_FINE_SCHEDULE;
      // Same kept positions, other tile order (full 64x64 tiles of partial blocks come first): rounding only.
      compare(await a.out.toFloat32(), await c.out.toFloat32(), 5e-3);
      compareLse(await a.lse!.toFloat32(), await c.lse!.toFloat32());
      for (const t of [a.out, a.lse!, c.out, c.lse!]) t.dispose();
      bm.dispose();
    }
    // A call with other mask params than at creation walks the 128x128 lists (checked against the CPU).
    const w = maskMod(({ q: qq, kv }) => qq.sub(kv).abs().le(param('w', 'int')));
    const bm = await createBlockMask(w, 1, 1, d128.Sq, d128.Skv, { device: 'cuda:0', params: { w: 100 } });
    const g100 = await flexAttention(q, k, v, { blockMask: bm, params: { w: 100 }, enableGQA: true });
    expect(builtFineSchedule(bm, { w: 100 })).toBeDefined();
    const g = await flexAttention(q, k, v, { blockMask: bm, params: { w: 300 }, enableGQA: true });
    expect(builtFineSchedule(bm, { w: 300 })).toBeUndefined();
    const cref = await flexAttention(q, k, v, { blockMask: bm, params: { w: 300 }, enableGQA: true, backend: 'cpu' });
    compare(await g.out.toFloat32(), await cref.out.toFloat32(), 1e-2);
    for (const t of [q, k, v, g100.out, g.out, cref.out]) t.dispose();
  });
  it('CTA order (longest query blocks first): same output, bit for bit, as the built-in order', async () => {
    // Every block-sparse sm90 launch in this file runs with the order (and is checked against the
    // CPU reference); here it is compared with FLEXATTN_CTA_ORDER=0 on a document mask with ragged
    // documents, GQA, B=3 and an odd length.
    const dd = { B: 3, Hq: 4, Hkv: 2, Sq: 777, Skv: 777, D: 128 };
    const { q, k, v } = inputs(dd, 'bf16');
    const r = mulberry32(31);
    const ids = new Int32Array(dd.B * dd.Sq);
    for (let b = 0; b < dd.B; b++) { let doc = 0; for (let s = 0; s < dd.Sq; s++) { if (r() < 0.004) doc++; ids[b * dd.Sq + s] = doc; } }
    const idsT = Tensor.fromHost(ids, [dd.B, dd.Sq], 'i32', gpu);
    for (const m of [documentMask(idsT), slidingWindow(200)]) {
      const bm = await createBlockMask(m, dd.B, 1, dd.Sq, dd.Skv, { device: 'cuda:0' });
      poison(dd.B * dd.Hq * dd.Sq * 128, 'bf16');
      const a = await flexAttention(q, k, v, { blockMask: bm, enableGQA: true, returnLse: true });
      process.env.FLEXATTN_CTA_ORDER = '0';
      poison(dd.B * dd.Hq * dd.Sq * 128, 'bf16');
      const c = await flexAttention(q, k, v, { blockMask: bm, enableGQA: true, returnLse: true });
      delete process.env.FLEXATTN_CTA_ORDER;
      const [ao, co] = [await a.out.toFloat32(), await c.out.toFloat32()];
      expect(ao.some(Number.isNaN)).toBe(false);
      expect(Buffer.from(ao.buffer).equals(Buffer.from(co.buffer))).toBe(true);
      expect(Buffer.from((await a.lse!.toFloat32()).buffer).equals(Buffer.from((await c.lse!.toFloat32()).buffer))).toBe(true);
      for (const t of [a.out, a.lse!, c.out, c.lse!]) t.dispose();
      bm.dispose();
    }
    for (const t of [q, k, v, idsT]) t.dispose();
  });
  it('document masks on a segmented grid (tiles restart at every document): CPU reference, B=2, GQA, odd length', async () => {
    // Documents of 1, 63, 64 and 65 tokens, an id that comes back later, ids per batch and one row for all.
    const dd = { B: 2, Hq: 4, Hkv: 2, Sq: 777, Skv: 777, D: 128 };
    const a0 = docIdsFromOffsets([0, 1, 64, 128, 193, 250, 517, 600], dd.Sq);
    for (let p = 700; p < 740; p++) a0[p] = 3;
    const a1 = docIdsFromOffsets([0, 333, 334, 400], dd.Sq);
    const ids2 = Tensor.fromHost(Int32Array.from([...a0, ...a1]), [dd.B, dd.Sq], 'i32', gpu);
    const ids1 = Tensor.fromHost(a1, [dd.Sq], 'i32', gpu);
    // a second captured tensor the kernel still reads on the segmented grid (keys dropped at random)
    const r = mulberry32(5);
    const keep = Tensor.fromHost(Int32Array.from({ length: dd.B * dd.Skv }, () => (r() < 0.1 ? 0 : 1)), [dd.B, dd.Skv], 'i32', gpu);
    const keepKv = maskMod(({ b, kv }) => keep.at(b, kv).eq(1));
    for (const [m, chosen, blockSize] of [[documentMask(ids2), true, 128], [documentMask(ids1, { causal: false }), true, 128],
      [andMasks(documentMask(ids2), slidingWindow(300)), false, 128], [documentMask(ids2), true, 64],
      [andMasks(keepKv, documentMask(ids2)), false, 128]] as const) {
      const { q, k, v } = inputs(dd, 'bf16');
      const bm = await createBlockMask(m, dd.B, 1, dd.Sq, dd.Skv, { device: 'cuda:0', blockSize });
      poison(dd.B * dd.Hq * dd.Sq * 128, 'bf16');
      const g = await flexAttention(q, k, v, { blockMask: bm, enableGQA: true, returnLse: true });
      // the launch's cached schedule (a 64x64 mask is its own uniform schedule)
      const seg = (await cachedSegmentedSchedule(bm, {})) ?? null;
      if (chosen) expect(seg, String(m)).not.toBeNull();
      const c = await flexAttention(q, k, v, { blockMask: bm, enableGQA: true, returnLse: true, backend: 'cpu' });
      compare(await g.out.toFloat32(), await c.out.toFloat32(), 1e-2);
      compareLse(await g.lse!.toFloat32(), await c.lse!.toFloat32());
      process.env.FLEXATTN_SEGMENTS = '0';
      const u = await flexAttention(q, k, v, { blockMask: bm, enableGQA: true, returnLse: true });
      delete process.env.FLEXATTN_SEGMENTS;
      compare(await g.out.toFloat32(), await u.out.toFloat32(), 5e-3);
      for (const t of [q, k, v, g.out, g.lse!, c.out, c.lse!, u.out, u.lse!]) t.dispose();
      bm.dispose();
    }
    ids1.dispose();
    ids2.dispose();
    keep.dispose();
  });
  it('kernelOptions pick other tile shapes', async () => {
    await flexCase(d, 'bf16', causal(), softcap(10), { kernelOptions: { BLOCK_M: 64, BLOCK_N: 64 } });
    await flexCase({ ...d, D: 128 }, 'bf16', causal(), undefined, { kernelOptions: { BLOCK_M: 128, BLOCK_N: 32, numStages: 3 } });
  });
  it('fully masked rows give 0 and LSE -inf', async () => {
    const m = maskMod(({ q, kv }) => q.lt(500).and(kv.le(q)));
    await flexCase({ ...d, B: 1 }, 'bf16', m, undefined);
  });
  it('20 random mask mods and score mods (no captured tensors)', async () => {
    const r = mulberry32(123);
    for (let i = 0; i < 20; i++) {
      const mm = randomMod(r, { kind: 'mask', depth: 4, tensors: false });
      const sm = randomMod(r, { kind: 'score', depth: 3, tensors: false });
      const dims = { B: 1, Hq: 2, Hkv: 1, Sq: 129 + 37 * i, Skv: 200 + 11 * i, D: 64 };
      // GPU transcendental approximations (ex2/lg2/tanh.approx) loosen the bound for random score mods.
      await flexCase(dims, 'bf16', mm.mod as MaskMod, sm.mod as ScoreMod, { params: { ...mm.params, ...sm.params } }, 3e-2);
    }
  });
  it('bad input: f32 on the GPU, unsupported head dim, block size below the tile', async () => {
    const q32 = Tensor.randn([1, 2, 64, 64], 'f32', gpu);
    await expect(scaledDotProductAttention(q32, q32, q32)).rejects.toThrow(DTypeError);
    const q48 = Tensor.randn([1, 2, 64, 48], 'bf16', gpu);
    await expect(scaledDotProductAttention(q48, q48, q48)).rejects.toThrow(/head dimension of 32, 64, 96, 128, 256/);
    const q = Tensor.randn([1, 2, 256, 64], 'bf16', gpu);
    const bm = await createBlockMask(causal(), 1, 1, 256, 256, { blockSize: 32, device: 'cuda:0' });
    await expect(flexAttention(q, q, q, { blockMask: bm })).rejects.toThrow(ShapeError);
    // more heads than a CUDA grid dimension holds (65535): the forward kernel (Sq > 16) gives a typed error naming q
    const wide = Tensor.randn([1, 65536, 17, 64], 'bf16', gpu);
    await expect(scaledDotProductAttention(wide, wide, wide)).rejects.toThrow(/q.*65535 heads/);
    wide.dispose();
    // the decode kernel (Sq <= 16) numbers its CTAs in one dimension: 65536 heads run; with one key the output is v
    const wide1 = Tensor.randn([1, 65536, 1, 64], 'bf16', gpu);
    const o1 = await scaledDotProductAttention(wide1, wide1, wide1);
    expect(await o1.toHost()).toEqual(await wide1.toHost());
    o1.dispose();
    wide1.dispose();
    // the process keeps working
    const ok = await flexAttention(q, q, q, { blockMask: await createBlockMask(causal(), 1, 1, 256, 256) });
    expect((await ok.out.toFloat32()).some(Number.isNaN)).toBe(false);
  });
});

// On a compute capability 9.0 GPU the default kernels are the wgmma family
// (flash_fwd_sm90.cuh); the mma.sync family stays reachable with
// kernelOptions.family 'sm80' (and FLEXATTN_KERNEL_FAMILY=sm80, which
// scripts/gpu-check.sh uses to run this whole file on it again).
const hopper = deviceInfo().gpus[0]?.computeCapability === '9.0';

describeGpu('kernel families (sm90 wgmma, sm80 mma.sync)', () => {
  const d: Dims = { B: 2, Hq: 4, Hkv: 2, Sq: 1000, Skv: 1000, D: 128 };
  it('both families match the CPU reference: doc mask, softcap, ALiBi, short and long rows, f16, D=64', async () => {
    const families = hopper && envSwitch('FLEXATTN_KERNEL_FAMILY') !== 'sm80' ? ['sm90', 'sm80'] as const : ['sm80'] as const;
    const r = mulberry32(11);
    const ids = new Int32Array(d.B * d.Sq);
    for (let b = 0; b < d.B; b++) { let doc = 0; for (let s = 0; s < d.Sq; s++) { if (r() < 0.005) doc++; ids[b * d.Sq + s] = doc; } }
    const docIds = Tensor.fromHost(ids, [d.B, d.Sq], 'i32', gpu);
    const slopes = Tensor.fromHost(alibiSlopes(d.Hq), [d.Hq], 'f32', gpu);
    const cases: [Dims, DType, MaskMod | undefined, ScoreMod | undefined][] = [
      [d, 'bf16', documentMask(docIds), undefined],
      [d, 'bf16', causal(), softcap(30)],
      [{ ...d, B: 1, Sq: 777, Skv: 1001 }, 'f16', causal(), alibi(slopes)],
      [{ ...d, D: 64, Sq: 77, Skv: 77 }, 'bf16', slidingWindow(20), undefined],
      [{ B: 1, Hq: 2, Hkv: 1, Sq: 4097, Skv: 4097, D: 64 }, 'bf16', undefined, undefined],
    ];
    for (const [dims, dtype, mask, sm] of cases) {
      const { q, k, v } = inputs(dims, dtype);
      const bm = mask ? await createBlockMask(mask, dims.B, dims.Hq, dims.Sq, dims.Skv, { device: 'cuda:0' }) : undefined;
      const o: FlexAttentionOptions = { enableGQA: true, returnLse: true, ...(bm ? { blockMask: bm } : {}), ...(sm ? { scoreMod: sm } : {}) };
      const c = await flexAttention(q, k, v, { ...o, backend: 'cpu' });
      const want = await c.out.toFloat32(), wantLse = await c.lse!.toFloat32();
      for (const family of families) {
        poison(dims.B * dims.Hq * dims.Sq * dims.D, dtype);
        const g = await flexAttention(q, k, v, { ...o, kernelOptions: { family } });
        compare(await g.out.toFloat32(), want, 1e-2);
        compareLse(await g.lse!.toFloat32(), wantLse);
        g.out.dispose(); g.lse!.dispose();
      }
      for (const t of [q, k, v, c.out, c.lse!]) t.dispose();
    }
    docIds.dispose(); slopes.dispose();
  });
  it('auto picks sm90 on Hopper for head dims 64 and 128, sm80 otherwise', async () => {
    const q = Tensor.randn([1, 2, 256, 128], 'bf16', gpu);
    const q32 = Tensor.randn([1, 2, 256, 32], 'bf16', gpu);
    const bm = await createBlockMask(slidingWindow(77), 1, 1, 256, 256, { device: 'cuda:0' });
    const outs = [await flexAttention(q, q, q, { blockMask: bm }), await flexAttention(q32, q32, q32, { blockMask: bm })];
    const sdpa = await scaledDotProductAttention(q, q, q, { isCausal: true });
    const names = (await jitStatus()).map((k) => k.kernel);
    const sm90 = hopper && envSwitch('FLEXATTN_KERNEL_FAMILY') !== 'sm80';
    expect(names.some((n) => n.startsWith('flexattn_flex_sm90_') && n.includes('_d128_'))).toBe(sm90);
    expect(names.some((n) => n.startsWith('flexattn_flex_') && !n.includes('sm90') && n.includes('_d32_'))).toBe(true);
    expect(names.includes('flexattn_fwd_sm90_d128_bf16_causal')).toBe(sm90);
    for (const t of [q, q32, sdpa, ...outs.map((o) => o.out)]) t.dispose();
  });
  it('bad input: unknown family, tile fields with sm90, sm90 where it cannot run', async () => {
    const q = Tensor.randn([1, 2, 128, 64], 'bf16', gpu);
    await expect(flexAttention(q, q, q, { kernelOptions: { family: 'sm70' as 'sm80' } })).rejects.toThrow(InvalidArgumentError);
    await expect(flexAttention(q, q, q, { kernelOptions: { family: 'sm90', BLOCK_M: 64 } })).rejects.toThrow(/no tile fields/);
    const q96 = Tensor.randn([1, 2, 128, 96], 'bf16', gpu);
    if (hopper) await expect(flexAttention(q96, q96, q96, { kernelOptions: { family: 'sm90' } })).rejects.toThrow(ShapeError);
    else await expect(flexAttention(q, q, q, { kernelOptions: { family: 'sm90' } })).rejects.toThrow(/compute capability 9.0/);
    const ok = await flexAttention(q, q, q, { kernelOptions: { family: 'sm80' } });
    expect((await ok.out.toFloat32()).some(Number.isNaN)).toBe(false);
    for (const t of [q, q96, ok.out]) t.dispose();
  });
});
