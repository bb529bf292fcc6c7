// attention() on the GPU: every spec that makes sense for both implementations
// runs with impl 'sdpa' and 'flex' on bf16 GPU tensors and is compared with the
// CPU reference backend on the same tensors (backend: 'cpu'), and the two
// implementations with each other. Outputs are poisoned before each GPU run.
import { expect, it } from 'vitest';
import {
  Tensor, attention, attentionCacheStats, clearAttentionCache, explainAttention, maskMod, alibiSlopes, docIdsFromOffsets,
  InvalidArgumentError, type AttentionSpec, type ImageSpan,
} from '../../lib/index.js';
import { describeGpu } from '../gpu-gate.js';
import { relError } from '../reference.js';

const gpu = { device: 'cuda:0' as const };
const cpu = { device: 'cpu' as const };

interface Dims { B: number; Hq: number; Hkv: number; Sq: number; Skv: number; D: number }

function poison(numel: number): void {
  Tensor.fromHost(new Uint16Array(numel).fill(0x7fc0), [numel], 'bf16', gpu).dispose();
}

function inputs(d: Dims) {
  return {
    q: Tensor.randn([d.B, d.Hq, d.Sq, d.D], 'bf16', gpu),
    k: Tensor.randn([d.B, d.Hkv, d.Skv, d.D], 'bf16', gpu),
    v: Tensor.randn([d.B, d.Hkv, d.Skv, d.D], 'bf16', gpu),
  };
}

function compare(got: Float32Array, want: Float32Array, tol = 1e-2): number {
  let nan = 0;
  for (let i = 0; i < got.length; i++) if (Number.isNaN(got[i]!)) nan++;
  expect(nan, 'NaN in the GPU output (unwritten or poisoned)').toBe(0);
  const err = relError(got, want);
  expect(err).toBeLessThan(tol);
  return err;
}

const base: Dims = { B: 2, Hq: 4, Hkv: 2, Sq: 1000, Skv: 1000, D: 64 };
const offsets = [[0, 137, 500, 501, 870], [0, 640, 641]];
const docHost = new Int32Array(base.B * base.Sq);
offsets.forEach((o, b) => docHost.set(docIdsFromOffsets(o, base.Sq), b * base.Sq));
const spans: ImageSpan[] = [{ start: 100, length: 256 }, { start: 500, length: 300 }];
const modHost = Int32Array.from({ length: base.Sq }, (_, i) => (i >= 200 && i < 456 ? 1 : i >= 700 && i < 800 ? 2 : 0));

interface Case { name: string; dims: Dims; spec: () => Omit<AttentionSpec, 'impl'> }
const cases: Case[] = [
  { name: 'causal', dims: base, spec: () => ({ isCausal: true }) },
  { name: 'GQA 8:2, causal, odd length', dims: { ...base, Hq: 8, Sq: 777, Skv: 777 }, spec: () => ({ isCausal: true }) },
  { name: 'packed documents, docIds on the GPU', dims: base,
    spec: () => ({ isCausal: true, docIds: Tensor.fromHost(docHost, [base.B, base.Sq], 'i32', gpu) }) },
  { name: 'packed documents, docIds [S] on the host (copied once)', dims: base,
    spec: () => ({ docIds: Tensor.fromHost(docHost.subarray(0, base.Sq), [base.Sq], 'i32', cpu) }) },
  { name: 'sliding window 200', dims: base, spec: () => ({ isCausal: true, slidingWindow: 200 }) },
  { name: 'sliding window with lookahead', dims: { ...base, Sq: 777, Skv: 777 }, spec: () => ({ slidingWindow: { window: 128, lookahead: 17 } }) },
  { name: 'prefix LM 300', dims: base, spec: () => ({ prefixLM: 300 }) },
  { name: 'image spans', dims: base, spec: () => ({ imageSpans: spans }) },
  { name: 'cross-attention Sq < Skv', dims: { ...base, Sq: 130, Skv: 1100 }, spec: () => ({}) },
  { name: 'cross-attention Sq > Skv, GQA, scale', dims: { ...base, Hkv: 1, Sq: 900, Skv: 77 }, spec: () => ({ scale: 0.2 }) },
  { name: 'custom per-modality maskMod (captured ids)', dims: base, spec: () => {
    const ids = Tensor.fromHost(modHost, [base.Sq], 'i32', gpu);
    return { maskMod: maskMod(({ q, kv }) => {
      const mq = ids.at(q), mk = ids.at(kv);
      return mq.eq(1).and(mk.eq(1)).or(kv.le(q).and(mq.eq(2).eq(mk.eq(2))));
    }) };
  } },
];

describeGpu('attention(): sdpa and flex on the GPU vs the CPU reference', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const { q, k, v } = inputs(c.dims);
      const spec = c.spec();
      const outs: Float32Array[] = [];
      for (const impl of ['sdpa', 'flex'] as const) {
        poison(c.dims.B * c.dims.Hq * c.dims.Sq * c.dims.D);
        const g = await attention(q, k, v, { ...spec, impl, enableGQA: true }) as Tensor;
        expect(g.device).toBe('cuda:0');
        const r = await attention(q, k, v, { ...spec, impl, enableGQA: true, backend: 'cpu' }) as Tensor;
        const got = await g.toFloat32();
        compare(got, await r.toFloat32());
        outs.push(got);
        g.dispose(); r.dispose();
      }
      compare(outs[0]!, outs[1]!); // sdpa vs flex
      for (const t of [q, k, v]) t.dispose();
    });
  }

  it('softcap and ALiBi run under flex (and auto); sdpa names the option', async () => {
    const { q, k, v } = inputs(base);
    const slopes = Tensor.fromHost(alibiSlopes(base.Hq), [base.Hq], 'f32', gpu);
    for (const spec of [{ softcap: 30 }, { alibiSlopes: slopes }, { softcap: 20, alibiSlopes: alibiSlopes(base.Hq) }] as AttentionSpec[]) {
      for (const impl of ['flex', 'auto'] as const) {
        poison(base.B * base.Hq * base.Sq * base.D);
        const g = await attention(q, k, v, { ...spec, impl, isCausal: true, enableGQA: true }) as Tensor;
        const r = await attention(q, k, v, { ...spec, impl, isCausal: true, enableGQA: true, backend: 'cpu' }) as Tensor;
        compare(await g.toFloat32(), await r.toFloat32());
      }
      await expect(attention(q, k, v, { ...spec, isCausal: true, enableGQA: true })).rejects.toThrow(InvalidArgumentError);
    }
  });

  it('masks are built once per spec and shape; a loop reuses them', async () => {
    clearAttentionCache();
    const { q, k, v } = inputs(base);
    const docIds = Tensor.fromHost(docHost, [base.B, base.Sq], 'i32', cpu);
    for (const impl of ['sdpa', 'flex', 'auto'] as const) {
      for (let i = 0; i < 5; i++) (await attention(q, k, v, { impl, isCausal: true, docIds, enableGQA: true }) as Tensor).dispose();
    }
    // one dense mask (sdpa) and one block mask (flex, reused by auto)
    expect(attentionCacheStats()).toMatchObject({ entries: 2, builds: 2, hits: 13, denseBytes: base.B * base.Sq * base.Skv });
    expect(explainAttention({ impl: 'auto', isCausal: true, docIds }).impl).toBe('flex');
    clearAttentionCache();
  });
});
