/**
 * The RaggedKv builders (contiguous [B, H, S, D] KV, packed varlen KV) read
 * through the ragged CPU reference give what the dense CPU reference
 * (flexAttention, backend 'cpu') gives on the same data; and a long ragged
 * call stops on its AbortSignal.
 */
import { describe, expect, it } from 'vitest';
import { AbortError } from '../lib/errors.js';
import { flexAttention } from '../lib/flex.js';
import { raggedKvFromDense, raggedKvFromVarlen, disposeRaggedTables } from '../lib/serving/paged-kv.js';
import { runRaggedAttentionCpu } from '../lib/serving/ragged-cpu.js';
import { Tensor } from '../lib/tensor.js';
import { rejection } from './reference.js';

describe('RaggedKv builders vs the dense CPU reference', () => {
  it('contiguous [B, S, H, D] storage seen as [B, H, S, D], GQA 3, Sq 4 end-aligned (non-causal)', async () => {
    const B = 3, Hq = 6, Hkv = 2, Sq = 4, Skv = 77, D = 32;
    const q = Tensor.randn([B, Sq, Hq, D], 'f32', { device: 'cpu', seed: 1 });
    const k = Tensor.randn([B, Skv, Hkv, D], 'f32', { device: 'cpu', seed: 2 }).transpose(1, 2);
    const v = Tensor.randn([B, Skv, Hkv, D], 'f32', { device: 'cpu', seed: 3 }).transpose(1, 2);
    const dense = await flexAttention(q.transpose(1, 2), k, v, { enableGQA: true, returnLse: true, backend: 'cpu' });
    const kv = raggedKvFromDense(k, v, Sq);
    expect([kv.numSeqs, kv.maxSeqLen, kv.maxQueryTokens]).toEqual([B, Skv, Sq]);
    const r = await runRaggedAttentionCpu(q.reshape(B * Sq, Hq, D), kv, { scale: 1 / Math.sqrt(D), causal: false, returnLse: true, numKvHeads: Hkv });
    disposeRaggedTables(kv);
    // dense out [B, Hq, Sq, D] -> [B, Sq, Hq, D] to compare with the packed [B*Sq, Hq, D]
    const want = await dense.out.transpose(1, 2).contiguous().toFloat32();
    const got = await r.out.toFloat32();
    expect(Math.max(...got.map((x, i) => Math.abs(x - want[i]!)))).toBeLessThan(1e-5);
    const wantLse = await dense.lse!.transpose(1, 2).contiguous().toFloat32();
    const gotLse = await r.lse!.toFloat32();
    expect(Math.max(...gotLse.map((x, i) => Math.abs(x - wantLse[i]!)))).toBeLessThan(1e-5);
  });

  it('packed varlen KV: each sequence equals a dense call on its own slice', async () => {
    const lens = [5, 1, 40], cu = Int32Array.from([0, 5, 6, 46]);
    const Hq = 4, Hkv = 4, D = 16, T = 46;
    const q = Tensor.randn([T, Hq, D], 'f32', { device: 'cpu', seed: 4 });
    const k = Tensor.randn([T, Hkv, D], 'f32', { device: 'cpu', seed: 5 });
    const v = Tensor.randn([T, Hkv, D], 'f32', { device: 'cpu', seed: 6 });
    const kv = raggedKvFromVarlen(k, v, cu, cu);
    const r = await runRaggedAttentionCpu(q, kv, { scale: 0.25, causal: false, returnLse: false, numKvHeads: Hkv });
    const got = await r.out.toFloat32();
    for (let s = 0; s < lens.length; s++) {
      const sl = (t: Tensor): Tensor => t.narrow(0, cu[s]!, lens[s]!).transpose(0, 1).contiguous().reshape(1, Hq, lens[s]!, D);
      const d = await flexAttention(sl(q), sl(k), sl(v), { scale: 0.25, backend: 'cpu' });
      const want = await d.out.reshape(Hq, lens[s]!, D).transpose(0, 1).contiguous().toFloat32();
      const part = got.subarray(cu[s]! * Hq * D, cu[s + 1]! * Hq * D);
      expect(Math.max(...part.map((x, i) => Math.abs(x - want[i]!)))).toBeLessThan(1e-5);
    }
  });

  it('a long ragged call stops on AbortSignal.timeout', async () => {
    const T = 4096, D = 64;
    const q = Tensor.randn([T, 1, D], 'f32', { device: 'cpu', seed: 7 });
    const k = Tensor.randn([T, 1, D], 'f32', { device: 'cpu', seed: 8 });
    const cu = Int32Array.from([0, T]);
    const kv = raggedKvFromVarlen(k, k, cu, cu);
    const t0 = performance.now();
    const e = await rejection(runRaggedAttentionCpu(q, kv, { scale: 0.1, causal: false, returnLse: false, numKvHeads: 1, numThreads: 1, signal: AbortSignal.timeout(20) }));
    expect(e).toBeInstanceOf(AbortError);
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});
