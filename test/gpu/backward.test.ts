// The backward ops with CUDA tensors: there is no CUDA backward yet, so the
// default backend and backend: 'cuda' throw NotImplementedError at the call
// (nothing runs, nothing silently moves to the host); backend: 'cpu' runs the
// CPU reference on host copies and gives the gradients back on the GPU, the
// same bits as with CPU tensors.
import { expect, it } from 'vitest';
import {
  NotImplementedError, Tensor, attention, causal, createBlockMask, flexAttention, flexAttentionBackward, relativeBias,
  scaledDotProductAttentionBackward,
} from '../../lib/index.js';
import { describeGpu } from '../gpu-gate.js';
import { randnArray, rejection } from '../reference.js';

const bits = (x: Float32Array) => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length));

describeGpu('backward with CUDA tensors', () => {
  const S = 77, D = 64;
  const host = (seed: number, H = 4) => Tensor.fromHost(randnArray(H * S * D, seed), [1, H, S, D], 'f32', { device: 'cpu' }).to('bf16');

  it('default backend and backend cuda: NotImplementedError (ERR_FLEXATTN_NOT_IMPLEMENTED) at the call', async () => {
    const q = await host(1).toDevice('cuda'), k = await host(2).toDevice('cuda'), v = await host(3).toDevice('cuda');
    const { out, lse } = await flexAttention(q, k, v, { returnLse: true });
    for (const backend of [undefined, 'cuda'] as const) {
      const e = await rejection(flexAttentionBackward(q, k, v, out, lse!, out, backend ? { backend } : {}));
      expect(e).toBeInstanceOf(NotImplementedError);
      expect((e as NotImplementedError).code).toBe('ERR_FLEXATTN_NOT_IMPLEMENTED');
      expect(await rejection(scaledDotProductAttentionBackward(q, k, v, out, lse!, out, backend ? { backend } : {})))
        .toBeInstanceOf(NotImplementedError);
    }
    expect(await rejection(attention(q, k, v, { isCausal: true, requiresGrad: true }))).toBeInstanceOf(NotImplementedError);
  });

  it("backend 'cpu' with CUDA tensors: the gradients on the GPU, the same bits as from CPU tensors (incl. dCaptured)", async () => {
    const table = Tensor.fromHost(randnArray(4 * 2 * S, 9), [4, 2 * S], 'f32', { device: 'cpu' });
    const cq = host(1), ck = host(2), cv = host(3), cg = host(4);
    const mod = relativeBias(table);
    const bmC = await createBlockMask(causal(), 1, 1, S, S, { device: 'cpu' });
    const fc = await flexAttention(cq, ck, cv, { scoreMod: mod, blockMask: bmC, returnLse: true, backend: 'cpu' });
    const want = await flexAttentionBackward(cq, ck, cv, fc.out, fc.lse!, cg, { scoreMod: mod, blockMask: bmC, gradFor: [table], backend: 'cpu' });
    const [q, k, v, g, out, lse] = await Promise.all([cq, ck, cv, cg, fc.out, fc.lse!].map((t) => t.toDevice('cuda')));
    const bmG = await createBlockMask(causal(), 1, 1, S, S, { device: 'cuda' });
    const got = await flexAttentionBackward(q!, k!, v!, out!, lse!, g!, { scoreMod: mod, blockMask: bmG, gradFor: [table], backend: 'cpu' });
    expect(got.dq.device).toBe(q!.device);
    expect(got.dq.dtype).toBe('bf16');
    for (const key of ['dq', 'dk', 'dv'] as const) expect(bits(await got[key].toFloat32())).toEqual(bits(await want[key].toFloat32()));
    expect(bits(await got.dCaptured[0]!.toFloat32())).toEqual(bits(await want.dCaptured[0]!.toFloat32()));
  });
});
