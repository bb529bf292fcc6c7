// attention(..., { requiresGrad: true }): { out, backward } for both
// implementations, the same gradients as the backward ops (and the f64
// oracle), gradFor through the spec's ALiBi slopes, one backward per forward
// unless retainGraph, release(), and inputs disposed after the forward.
import { describe, expect, it } from 'vitest';
import {
  InvalidArgumentError, Tensor, alibi, attention, flexAttention, flexAttentionBackward, scaledDotProductAttentionBackward, scaledDotProductAttention,
} from '../lib/index.js';
import { maxRelErr, referenceBackward } from './backward-reference.js';
import { randTensor } from './backward-harness.js';
import { rejection } from './reference.js';

const cpu = { device: 'cpu' } as const;
const bits = (x: Float32Array) => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length));

async function inputs(B: number, Hq: number, Hkv: number, S: number, D: number) {
  const q = await randTensor([B, Hq, S, D], 'f32', 1), k = await randTensor([B, Hkv, S, D], 'f32', 2);
  const v = await randTensor([B, Hkv, S, D], 'f32', 3), g = await randTensor([B, Hq, S, D], 'f32', 4);
  return { q, k, v, g };
}

describe('attention with requiresGrad', () => {
  it("impl 'sdpa', causal: the same bits as scaledDotProductAttentionBackward", async () => {
    const x = await inputs(2, 4, 2, 19, 8);
    const r = await attention(x.q.t, x.k.t, x.v.t, { isCausal: true, enableGQA: true, requiresGrad: true });
    const { out, lse } = await scaledDotProductAttention(x.q.t, x.k.t, x.v.t, { isCausal: true, enableGQA: true, returnLse: true });
    expect(bits(await r.out.toFloat32())).toEqual(bits(await out.toFloat32()));
    expect(r.lse).toBeUndefined();
    const g = await r.backward(x.g.t);
    const want = await scaledDotProductAttentionBackward(x.q.t, x.k.t, x.v.t, out, lse, x.g.t, { isCausal: true, enableGQA: true });
    expect(bits(await g.dq.toFloat32())).toEqual(bits(await want.dq.toFloat32()));
    expect(bits(await g.dk.toFloat32())).toEqual(bits(await want.dk.toFloat32()));
    expect(bits(await g.dv.toFloat32())).toEqual(bits(await want.dv.toFloat32()));
    expect(g.dCaptured).toEqual([]);
  });

  it.each(['sdpa', 'flex'] as const)("impl '%s' with docIds (causal documents): gradients match the f64 oracle", async (impl) => {
    const S = 23, D = 8;
    const ids = Int32Array.from({ length: S }, (_, i) => (i < 9 ? 0 : i < 10 ? 1 : 2));
    const docIds = Tensor.fromHost(ids, [S], 'i32', cpu);
    const x = await inputs(1, 2, 2, S, D);
    const r = await attention(x.q.t, x.k.t, x.v.t, { impl, isCausal: true, docIds, returnLse: true, requiresGrad: true });
    expect(r.lse!.shape).toEqual([1, 2, S]);
    const g = await r.backward(x.g.t);
    const ref = referenceBackward({
      q: x.q.f64, k: x.k.f64, v: x.v.f64, B: 1, Hq: 2, Hkv: 2, Sq: S, Skv: S, D, Dv: D, scale: 1 / Math.sqrt(D),
      keep: (_b, _h, i, j) => j <= i && ids[i] === ids[j],
    }, x.g.f64);
    expect(maxRelErr(await g.dq.toFloat32(), ref.dq)).toBeLessThan(2e-5);
    expect(maxRelErr(await g.dk.toFloat32(), ref.dk)).toBeLessThan(2e-5);
    expect(maxRelErr(await g.dv.toFloat32(), ref.dv)).toBeLessThan(2e-5);
  });

  it("impl 'flex' with softcap and learnable ALiBi slopes: backward(dOut, { gradFor: [slopes] })", async () => {
    const S = 17, D = 8;
    const slopes = Tensor.fromHost(Float32Array.from([0.3, -0.2, 0.1, 0.05]), [4], 'f32', cpu);
    const x = await inputs(1, 4, 2, S, D);
    const r = await attention(x.q.t, x.k.t, x.v.t, { impl: 'flex', alibiSlopes: slopes, enableGQA: true, requiresGrad: true });
    const g = await r.backward(x.g.t, { gradFor: [slopes] });
    expect(g.dCaptured).toHaveLength(1);
    // the same as the backward op with the same mod (alibi alone: the spec's score mod is alibi(slopes))
    const { out, lse } = await flexAttention(x.q.t, x.k.t, x.v.t,
      { scoreMod: alibi(slopes), enableGQA: true, returnLse: true });
    const want = await flexAttentionBackward(x.q.t, x.k.t, x.v.t, out, lse!, x.g.t, { scoreMod: alibi(slopes), enableGQA: true, gradFor: [slopes] });
    expect(bits(await g.dCaptured[0]!.toFloat32())).toEqual(bits(await want.dCaptured[0]!.toFloat32()));
    expect(bits(await g.dq.toFloat32())).toEqual(bits(await want.dq.toFloat32()));
    expect((await g.dCaptured[0]!.toFloat32()).some((v) => v !== 0)).toBe(true);
  });

  it('one backward per forward unless retainGraph; release(); inputs may be disposed after the forward', async () => {
    const x = await inputs(1, 2, 2, 9, 4);
    const r = await attention(x.q.t, x.k.t, x.v.t, { impl: 'flex', isCausal: true, requiresGrad: true });
    const want = await r.backward(x.g.t, { retainGraph: true });
    x.q.t.dispose(); x.k.t.dispose(); x.v.t.dispose(); r.out.dispose();
    const again = await r.backward(x.g.t);
    expect(bits(await again.dk.toFloat32())).toEqual(bits(await want.dk.toFloat32()));
    const e = await rejection(r.backward(x.g.t)) as InvalidArgumentError;
    expect(e).toBeInstanceOf(InvalidArgumentError);
    expect(e.argument).toBe('backward');
    const y = await inputs(1, 2, 2, 9, 4);
    const r2 = await attention(y.q.t, y.k.t, y.v.t, { requiresGrad: true });
    r2.release();
    expect(await rejection(r2.backward(y.g.t))).toBeInstanceOf(InvalidArgumentError);
  });

  it('a failed backward (wrong dOut) keeps the saved tensors for a retry; gradFor under sdpa is refused', async () => {
    const x = await inputs(1, 2, 2, 9, 4);
    const r = await attention(x.q.t, x.k.t, x.v.t, { requiresGrad: true });
    expect((await rejection(r.backward(x.g.t.narrow(2, 0, 3))) as InvalidArgumentError).argument).toBe('dOut');
    expect((await rejection(r.backward(x.g.t, { gradFor: [x.q.t] })) as InvalidArgumentError).argument).toBe('options.gradFor');
    const g = await r.backward(x.g.t);
    expect((await g.dq.toFloat32()).some((v) => v !== 0)).toBe(true);
  });
});
