// The warp-specialised Hopper forward (family sm90ws: native/kernels/sm90_ws_*.cuh,
// lib/cuda/launch-sm90ws.ts), opt-in through FLEXATTN_KERNEL_FAMILY=sm90ws and not
// yet verified on a GPU (this suite is its verification run, so it turns the
// guard off for itself). SDPA, dense and causal, and flexAttention (block masks,
// score mods, captured tensors; sm90_ws_flex.cuh), against the CPU backend on the
// same random inputs with the outputs' memory poisoned with NaN first (the
// tolerance rule of test/gpu/attention.test.ts: relative error < 1e-2, LSE within
// 2e-2). Lengths below 128 keep the sm90 kernel (SM90WS_MIN_ROWS) and are checked
// too, so the switch never changes an answer. On a GPU that is not an H100/H200
// the family is never picked: the cases then check the usual kernels only.
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  Tensor, scaledDotProductAttention, explainAttention, deviceInfo, jitStatus, NotImplementedError, type DType,
  flexAttention, createBlockMask, causal, slidingWindow, documentMask, andMasks, notMask, softcap, alibi, alibiSlopes,
  type MaskMod, type ScoreMod, type FlexAttentionOptions,
} from '../../lib/index.js';
import { mulberry32 } from '../random-mods.js';
import { describeGpu } from '../gpu-gate.js';
import { compare, compareLse, poison } from '../gpu-compare.js';

process.env.FLEXATTN_UNVERIFIED_GPU_PATHS ??= '1';

const gpu = { device: 'cuda:0' as const };
const hopper = deviceInfo().gpus[0]?.computeCapability === '9.0';

interface Dims { B: number; Hq: number; Hkv: number; Sq: number; Skv: number; D: number }

/** SDPA on the GPU and the CPU backend; returns the relative error of the output. */
async function sdpaCase(d: Dims, dtype: DType, isCausal: boolean, layout: 'bhsd' | 'bshd' = 'bhsd'): Promise<number> {
  const mk = (H: number, S: number) => layout === 'bhsd'
    ? Tensor.randn([d.B, H, S, d.D], dtype, gpu)
    : Tensor.randn([d.B, S, H, d.D], dtype, gpu).transpose(1, 2);
  const q = mk(d.Hq, d.Sq), k = mk(d.Hkv, d.Skv), v = mk(d.Hkv, d.Skv);
  poison(d.B * d.Hq * d.Sq * d.D, dtype);
  poison(d.B * d.Hq * d.Sq * 2, 'bf16');   // the f32 LSE block: 0x7fc07fc0 is a NaN in f32 as well
  const g = await scaledDotProductAttention(q, k, v, { isCausal, enableGQA: true, returnLse: true });
  const c = await scaledDotProductAttention(q, k, v, { isCausal, enableGQA: true, returnLse: true, backend: 'cpu' });
  expect(g.out.device).toBe('cuda:0');
  const err = compare(await g.out.toFloat32(), await c.out.toFloat32(), 1e-2);
  compareLse(await g.lse.toFloat32(), await c.lse.toFloat32());
  for (const t of [q, k, v, g.out, g.lse, c.out, c.lse]) t.dispose();
  return err;
}

/** FLEXATTN_KERNEL_FAMILY=sm90ws around the calling suite's cases (restored after). */
function familyForSuite(): void {
  let before: string | undefined;
  beforeAll(() => {
    before = process.env.FLEXATTN_KERNEL_FAMILY;
    process.env.FLEXATTN_KERNEL_FAMILY = 'sm90ws';
  });
  afterAll(() => {
    if (before === undefined) delete process.env.FLEXATTN_KERNEL_FAMILY;
    else process.env.FLEXATTN_KERNEL_FAMILY = before;
  });
}

const kernelNames = async () => (await jitStatus()).map((s) => s.kernel);

describeGpu('sm90ws: warp-specialised Hopper forward (FLEXATTN_KERNEL_FAMILY=sm90ws)', () => {
  familyForSuite();

  // [dims, dtype]: both causal and dense for each. GQA 8/2, Sq != Skv both ways, odd lengths, D 64 and 128.
  const cases: [Dims, DType][] = [
    [{ B: 2, Hq: 8, Hkv: 2, Sq: 1531, Skv: 1531, D: 128 }, 'bf16'],
    [{ B: 2, Hq: 8, Hkv: 2, Sq: 1531, Skv: 1531, D: 64 }, 'f16'],
    [{ B: 1, Hq: 8, Hkv: 2, Sq: 1531, Skv: 4096, D: 128 }, 'f16'],
    [{ B: 1, Hq: 8, Hkv: 2, Sq: 4096, Skv: 1531, D: 64 }, 'bf16'],
    [{ B: 1, Hq: 2, Hkv: 2, Sq: 4096, Skv: 4096, D: 128 }, 'bf16'],
    [{ B: 1, Hq: 4, Hkv: 1, Sq: 128, Skv: 129, D: 64 }, 'f16'],   // one query block; a one-row kv tail tile
  ];
  for (const [d, dtype] of cases) {
    for (const isCausal of [false, true]) {
      it(`${dtype} D${d.D} B${d.B} Hq${d.Hq}/Hkv${d.Hkv} Sq${d.Sq} Skv${d.Skv}${isCausal ? ' causal' : ''}`, async () => {
        await sdpaCase(d, dtype, isCausal);
        if (hopper) {
          const name = `flexattn_fwd_sm90ws_d${d.D}_${dtype}${isCausal ? '_causal' : ''}`;
          expect(await kernelNames()).toContain(name);
        }
      }, 120_000);
    }
  }

  it('[B, S, H, D] views (copied for TMA) give the same answers', async () => {
    await sdpaCase({ B: 1, Hq: 8, Hkv: 2, Sq: 1531, Skv: 1531, D: 128 }, 'bf16', true, 'bshd');
    await sdpaCase({ B: 2, Hq: 8, Hkv: 2, Sq: 1531, Skv: 1531, D: 64 }, 'bf16', false, 'bshd');
  }, 120_000);

  it('short sequences (S 1, 77; Skv 77) keep the sm90 kernel and give the same answers', async () => {
    const before = (await kernelNames()).filter((n) => n.includes('sm90ws')).length;
    await sdpaCase({ B: 2, Hq: 8, Hkv: 2, Sq: 1, Skv: 1531, D: 128 }, 'bf16', false);
    await sdpaCase({ B: 2, Hq: 8, Hkv: 2, Sq: 77, Skv: 77, D: 128 }, 'bf16', true);
    await sdpaCase({ B: 2, Hq: 8, Hkv: 2, Sq: 1531, Skv: 77, D: 64 }, 'f16', false);
    await sdpaCase({ B: 2, Hq: 8, Hkv: 2, Sq: 77, Skv: 4096, D: 64 }, 'f16', true);
    // No new sm90ws kernel for these shapes (their dtype / head dim pairs are compiled above already or not at all).
    expect((await kernelNames()).filter((n) => n.includes('sm90ws')).length).toBe(before);
  }, 120_000);

  it('explainAttention names the family (and why short sequences do not take it)', () => {
    expect(explainAttention({ isCausal: true, enableGQA: true }, { q: [1, 8, 4096, 128], k: [1, 2, 4096, 128] }).reason)
      .toMatch(/family sm90ws.* runs it/);
    expect(explainAttention({ enableGQA: true }, { q: [1, 8, 77, 128], k: [1, 2, 77, 128] }).reason)
      .toMatch(/sm90ws.*not used for Sq=77/);
  });

  it('without FLEXATTN_UNVERIFIED_GPU_PATHS=1 the family is refused with NotImplementedError (Hopper only)', async () => {
    if (!hopper) return;
    const saved = process.env.FLEXATTN_UNVERIFIED_GPU_PATHS;
    const q = Tensor.randn([1, 2, 256, 64], 'bf16', gpu);
    try {
      process.env.FLEXATTN_UNVERIFIED_GPU_PATHS = '0';
      await expect(scaledDotProductAttention(q, q, q, { isCausal: true })).rejects.toThrow(NotImplementedError);
      await expect(scaledDotProductAttention(q, q, q, { isCausal: true })).rejects.toThrow(/sm90ws.*FLEXATTN_UNVERIFIED_GPU_PATHS=1/);
    } finally {
      process.env.FLEXATTN_UNVERIFIED_GPU_PATHS = saved;
      q.dispose();
    }
  });
});

/** flexAttention on the GPU and the CPU backend (block mask made on the GPU, default 128×128 blocks unless given). */
async function flexCase(d: Dims, dtype: DType, mask: MaskMod | undefined, sm: ScoreMod | undefined,
  blockSize?: number): Promise<number> {
  const q = Tensor.randn([d.B, d.Hq, d.Sq, d.D], dtype, gpu);
  const k = Tensor.randn([d.B, d.Hkv, d.Skv, d.D], dtype, gpu);
  const v = Tensor.randn([d.B, d.Hkv, d.Skv, d.D], dtype, gpu);
  const bm = mask ? await createBlockMask(mask, d.B, d.Hq, d.Sq, d.Skv, { device: 'cuda:0', ...(blockSize ? { blockSize } : {}) }) : undefined;
  const o: FlexAttentionOptions = { enableGQA: true, returnLse: true, ...(bm ? { blockMask: bm } : {}), ...(sm ? { scoreMod: sm } : {}) };
  poison(d.B * d.Hq * d.Sq * d.D, dtype);
  poison(d.B * d.Hq * d.Sq * 2, 'bf16');
  const g = await flexAttention(q, k, v, o);
  const c = await flexAttention(q, k, v, { ...o, backend: 'cpu' });
  expect(g.out.device).toBe('cuda:0');
  const err = compare(await g.out.toFloat32(), await c.out.toFloat32(), 1e-2);
  compareLse(await g.lse!.toFloat32(), await c.lse!.toFloat32());
  for (const t of [q, k, v, g.out, g.lse!, c.out, c.lse!]) t.dispose();
  bm?.dispose();
  return err;
}

const sm90wsFlexKernels = async () => (await kernelNames()).filter((n) => n.startsWith('flexattn_flex_sm90ws_'));

describeGpu('sm90ws: flexAttention on the warp-specialised Hopper forward (FLEXATTN_KERNEL_FAMILY=sm90ws)', () => {
  familyForSuite();
  const slopes = (H: number) => Tensor.fromHost(alibiSlopes(H), [H], 'f32', gpu);
  const docIds = (B: number, S: number, seed: number) => {
    const r = mulberry32(seed);
    const ids = new Int32Array(B * S);
    for (let b = 0; b < B; b++) { let doc = 0; for (let s = 0; s < S; s++) { if (r() < 0.003) doc++; ids[b * S + s] = doc; } }
    return Tensor.fromHost(ids, [B, S], 'i32', gpu);
  };
  const shapes: [Dims, DType][] = [
    [{ B: 2, Hq: 8, Hkv: 2, Sq: 1531, Skv: 1531, D: 128 }, 'bf16'],
    [{ B: 1, Hq: 4, Hkv: 1, Sq: 4096, Skv: 4096, D: 64 }, 'f16'],
    [{ B: 1, Hq: 8, Hkv: 2, Sq: 4096, Skv: 4096, D: 128 }, 'f16'],
  ];
  for (const [d, dtype] of shapes) {
    const tag = `${dtype} D${d.D} B${d.B} Hq${d.Hq}/Hkv${d.Hkv} S${d.Sq}`;
    it(`${tag}: causal block mask, sliding window, document mask (captured ids)`, async () => {
      await flexCase(d, dtype, causal(), undefined);
      await flexCase(d, dtype, slidingWindow(256), undefined);
      const ids = docIds(d.B, d.Sq, 11);
      await flexCase(d, dtype, documentMask(ids), undefined);
      ids.dispose();
      if (hopper) expect((await sm90wsFlexKernels()).length).toBeGreaterThan(0);
    }, 300_000);
    it(`${tag}: softcap (no mask, and causal), ALiBi with captured slopes (causal)`, async () => {
      await flexCase(d, dtype, undefined, softcap(30));
      await flexCase(d, dtype, causal(), softcap(20));
      const s = slopes(d.Hq);
      await flexCase(d, dtype, causal(), alibi(s));
      await flexCase(d, dtype, documentMask(docIds(d.B, d.Sq, 5)), softcap(30));
      s.dispose();
    }, 300_000);
  }

  it('Sq != Skv and fully masked rows (output 0, LSE -inf, as the CPU backend)', async () => {
    await flexCase({ B: 1, Hq: 8, Hkv: 2, Sq: 1531, Skv: 4096, D: 128 }, 'bf16', slidingWindow(300), softcap(20));
    await flexCase({ B: 1, Hq: 8, Hkv: 2, Sq: 4096, Skv: 1531, D: 64 }, 'bf16', causal(), undefined);
    // rows q <= 200 keep nothing (kv <= q - 201 only)
    await flexCase({ B: 1, Hq: 4, Hkv: 4, Sq: 1531, Skv: 1531, D: 128 }, 'bf16', andMasks(causal(), notMask(slidingWindow(200))), undefined);
  }, 300_000);

  it('block sizes that are not multiples of 128 keep the sm90 kernel (same answers)', async () => {
    const n = (await sm90wsFlexKernels()).length;
    await flexCase({ B: 1, Hq: 4, Hkv: 2, Sq: 1531, Skv: 1531, D: 128 }, 'bf16', slidingWindow(256), softcap(25), 64);
    expect((await sm90wsFlexKernels()).length).toBe(n);
  }, 300_000);

  it('explainAttention names the family for flex', () => {
    expect(explainAttention({ impl: 'flex', isCausal: true, softcap: 30 }, { q: [1, 8, 4096, 128], k: [1, 8, 4096, 128] }).reason)
      .toMatch(/family sm90ws.* runs it .*flex: it walks/);
  });

  it('without FLEXATTN_UNVERIFIED_GPU_PATHS=1 flex on the family is refused with NotImplementedError (Hopper only)', async () => {
    if (!hopper) return;
    const saved = process.env.FLEXATTN_UNVERIFIED_GPU_PATHS;
    const q = Tensor.randn([1, 2, 256, 64], 'bf16', gpu);
    try {
      process.env.FLEXATTN_UNVERIFIED_GPU_PATHS = '0';
      await expect(flexAttention(q, q, q, { scoreMod: softcap(30) })).rejects.toThrow(NotImplementedError);
      await expect(flexAttention(q, q, q, { scoreMod: softcap(30) })).rejects.toThrow(/sm90ws.*FLEXATTN_UNVERIFIED_GPU_PATHS=1/);
    } finally {
      process.env.FLEXATTN_UNVERIFIED_GPU_PATHS = saved;
      q.dispose();
    }
  });
});
