/**
 * The CPU backend with CUDA inputs: inputs are copied to the host
 * asynchronously, the native worker writes the output in q's dtype, and the
 * result goes back to q's device. It must equal, bit for bit, the same call on
 * host copies of the inputs; an AbortSignal stops it like a CPU call.
 */
import { expect, it } from 'vitest';
import { describeGpu } from '../gpu-gate.js';
import { runCpuAttention } from '../../lib/cpu-backend.js';
import { AbortError } from '../../lib/errors.js';
import { Tensor } from '../../lib/tensor.js';

describeGpu('CPU backend with CUDA inputs', () => {
  for (const dtype of ['bf16', 'f16', 'f32'] as const) {
    it(`${dtype}, strided (bshd view), GQA 6/2, Sq 77 / Skv 1531: same bits as on host copies, result on q's device`, async () => {
      const B = 2, Hq = 6, Hkv = 2, Sq = 77, Skv = 1531, D = 64;
      // [B, S, H, D] buffers viewed as [B, H, S, D]
      const q = Tensor.randn([B, Sq, Hq, D], dtype, { device: 'cuda:0', seed: 1 }).transpose(1, 2);
      const k = Tensor.randn([B, Skv, Hkv, D], dtype, { device: 'cuda:0', seed: 2 }).transpose(1, 2);
      const v = Tensor.randn([B, Skv, Hkv, D], dtype, { device: 'cuda:0', seed: 3 }).transpose(1, 2);
      const args = { scale: 0.125, isCausal: true, returnLse: true };
      const res = await runCpuAttention(args, q, k, v);
      expect(res.out.device).toBe('cuda:0');
      expect(res.lse!.device).toBe('cuda:0');
      expect(res.out.dtype).toBe(dtype);
      const [qh, kh, vh] = await Promise.all([q, k, v].map((t) => t.toDevice('cpu')));
      const ref = await runCpuAttention(args, qh!, kh!, vh!);
      expect(Array.from(await res.out.toHost())).toEqual(Array.from(ref.out.hostStorage()));
      expect(Array.from(await res.lse!.toHost())).toEqual(Array.from(ref.lse!.hostStorage()));
      const f = await res.out.toFloat32();
      expect(f.some((x) => x !== 0)).toBe(true);
      expect(f.every((x) => Number.isFinite(x))).toBe(true);
    });
  }

  it('a long call on CUDA inputs stops on AbortSignal.timeout(200)', async () => {
    const S = 1 << 18, D = 16;
    const q = Tensor.randn([1, 1, S, D], 'bf16', { device: 'cuda:0', seed: 4 });
    const signal = AbortSignal.timeout(200);
    const t0 = performance.now();
    const err = await runCpuAttention({ scale: 0.25, isCausal: false, returnLse: false }, q, q, q, { signal })
      .then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).cause).toBe(signal.reason);
    expect(performance.now() - t0).toBeLessThan(3000);
  });
});
