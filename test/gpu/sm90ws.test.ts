// The warp-specialised Hopper forward (family sm90ws: native/kernels/sm90_ws_*.cuh,
// lib/cuda/launch-sm90ws.ts), opt-in through FLEXATTN_KERNEL_FAMILY=sm90ws and not
// yet verified on a GPU (this suite is its verification run, so it turns the
// guard off for itself). SDPA, dense and causal, against the CPU backend on the
// same random inputs with the outputs' memory poisoned with NaN first (the
// tolerance rule of test/gpu/attention.test.ts: relative error < 1e-2, LSE within
// 2e-2). Lengths below 128 keep the sm90 kernel (SM90WS_MIN_ROWS) and are checked
// too, so the switch never changes an answer. On a GPU that is not an H100/H200
// the family is never picked: the cases then check the usual kernels only.
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  Tensor, scaledDotProductAttention, explainAttention, deviceInfo, jitStatus, NotImplementedError, type DType,
} from '../../lib/index.js';
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

const kernelNames = async () => (await jitStatus()).map((s) => s.kernel);

describeGpu('sm90ws: warp-specialised Hopper forward (FLEXATTN_KERNEL_FAMILY=sm90ws)', () => {
  let before: string | undefined;
  beforeAll(() => {
    before = process.env.FLEXATTN_KERNEL_FAMILY;
    process.env.FLEXATTN_KERNEL_FAMILY = 'sm90ws';
  });
  afterAll(() => {
    if (before === undefined) delete process.env.FLEXATTN_KERNEL_FAMILY;
    else process.env.FLEXATTN_KERNEL_FAMILY = before;
  });

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
