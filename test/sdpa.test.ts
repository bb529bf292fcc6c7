// scaledDotProductAttention on the CPU reference backend, through the public
// API, against the brute-force double-precision oracle in test/reference.ts.
import { describe, expect, it } from 'vitest';
import {
  Tensor, scaledDotProductAttention, ShapeError, DTypeError, InvalidArgumentError, DisposedError, fromBf16, toBf16,
} from '../lib/index.js';
import { randnArray, referenceAttention, relError } from './reference.js';

const cpu = { device: 'cpu' as const };

function qkv(B: number, Hq: number, Hkv: number, Sq: number, Skv: number, D: number, seed: number) {
  const q = randnArray(B * Hq * Sq * D, seed), k = randnArray(B * Hkv * Skv * D, seed + 1), v = randnArray(B * Hkv * Skv * D, seed + 2);
  return { q, k, v };
}

describe('scaledDotProductAttention (cpu)', () => {
  const cases = [
    { B: 1, Hq: 2, Hkv: 2, Sq: 1, Skv: 1, D: 16, causal: false },
    { B: 2, Hq: 3, Hkv: 3, Sq: 77, Skv: 77, D: 32, causal: true },
    { B: 1, Hq: 4, Hkv: 2, Sq: 130, Skv: 65, D: 64, causal: false },
    { B: 2, Hq: 8, Hkv: 2, Sq: 33, Skv: 100, D: 64, causal: true },
  ];
  for (const c of cases) {
    it(`matches the oracle: ${JSON.stringify(c)}`, async () => {
      const { q, k, v } = qkv(c.B, c.Hq, c.Hkv, c.Sq, c.Skv, c.D, c.Sq * 7 + c.D);
      const out = await scaledDotProductAttention(
        Tensor.fromHost(q, [c.B, c.Hq, c.Sq, c.D], 'f32', cpu),
        Tensor.fromHost(k, [c.B, c.Hkv, c.Skv, c.D], 'f32', cpu),
        Tensor.fromHost(v, [c.B, c.Hkv, c.Skv, c.D], 'f32', cpu),
        { isCausal: c.causal, enableGQA: true, returnLse: true });
      const ref = referenceAttention({ ...c, Dv: c.D, q, k, v, scale: 1 / Math.sqrt(c.D),
        ...(c.causal ? { keep: (_b, _h, i, j) => j <= i } : {}) });
      expect(out.out.shape).toEqual([c.B, c.Hq, c.Sq, c.D]);
      expect(relError(await out.out.toHost() as Float32Array, ref.out)).toBeLessThan(1e-5);
      const lse = await out.lse.toHost() as Float32Array;
      for (let i = 0; i < lse.length; i++) {
        if (ref.lse[i] === -Infinity) expect(lse[i]).toBe(-Infinity);
        else expect(Math.abs(lse[i]! - ref.lse[i]!)).toBeLessThan(1e-4);
      }
    });
  }

  it('bf16 inputs in [B, S, H, D] storage, additive and bool masks with broadcasting', async () => {
    const [B, H, S, D] = [2, 2, 45, 32];
    const raw = qkv(B, H, H, S, S, D, 99);
    // store as [B, S, H, D], view as [B, H, S, D]
    const toBshd = (x: Float32Array) => {
      const o = new Float32Array(x.length);
      for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let s = 0; s < S; s++) for (let d = 0; d < D; d++) {
        o[((b * S + s) * H + h) * D + d] = x[((b * H + h) * S + s) * D + d]!;
      }
      return o;
    };
    const mk = (x: Float32Array) => Tensor.fromHost(toBf16(toBshd(x)), [B, S, H, D], 'bf16', cpu).transpose(1, 2);
    const [q, k, v] = [mk(raw.q), mk(raw.k), mk(raw.v)];
    const bias = randnArray(S * S, 5);
    const keepBits = Uint8Array.from({ length: B * S }, (_, i) => ((i * 7919) % 5 === 0 ? 0 : 1));
    const add = Tensor.fromHost(bias, [S, S], 'f32', cpu);                    // broadcast over B, H
    const keep = Tensor.fromHost(keepBits, [B, 1, 1, S], 'bool', cpu);        // per-batch key padding
    const qr = fromBf16(toBf16(raw.q)), kr = fromBf16(toBf16(raw.k)), vr = fromBf16(toBf16(raw.v));
    const outAdd = await scaledDotProductAttention(q, k, v, { attnMask: add });
    const refAdd = referenceAttention({ B, Hq: H, Hkv: H, Sq: S, Skv: S, D, Dv: D, q: qr, k: kr, v: vr, scale: 1 / Math.sqrt(D),
      scoreMod: (s, _b, _h, i, j) => s + bias[i * S + j]! });
    expect(outAdd.dtype).toBe('bf16');
    expect(relError(await outAdd.toFloat32(), refAdd.out)).toBeLessThan(1e-2);
    const outKeep = await scaledDotProductAttention(q, k, v, { attnMask: keep, scale: 0.3 });
    const refKeep = referenceAttention({ B, Hq: H, Hkv: H, Sq: S, Skv: S, D, Dv: D, q: qr, k: kr, v: vr, scale: 0.3,
      keep: (b, _h, _i, j) => keepBits[b * S + j] === 1 });
    expect(relError(await outKeep.toFloat32(), refKeep.out)).toBeLessThan(1e-2);
  });

  it('fully masked rows give 0 output and -inf LSE, never NaN', async () => {
    const [B, H, S, D] = [1, 1, 8, 16];
    const { q, k, v } = qkv(B, H, H, S, S, D, 3);
    const keep = new Uint8Array(S * S).fill(1);
    for (let j = 0; j < S; j++) keep[2 * S + j] = 0; // row 2 sees nothing
    const r = await scaledDotProductAttention(
      Tensor.fromHost(q, [B, H, S, D], 'f32', cpu), Tensor.fromHost(k, [B, H, S, D], 'f32', cpu),
      Tensor.fromHost(v, [B, H, S, D], 'f32', cpu),
      { attnMask: Tensor.fromHost(keep, [S, S], 'bool', cpu), returnLse: true });
    const out = await r.out.toHost() as Float32Array;
    const lse = await r.lse.toHost() as Float32Array;
    expect(out.some((x) => Number.isNaN(x))).toBe(false);
    expect(Array.from(out.slice(2 * D, 3 * D)).every((x) => x === 0)).toBe(true);
    expect(lse[2]).toBe(-Infinity);
    expect(Number.isFinite(lse[1]!)).toBe(true);
  });

  it('rejects bad input with typed errors naming the argument, and keeps working', async () => {
    const t = (shape: number[], dtype: 'f32' | 'bf16' = 'f32') => Tensor.randn(shape, dtype, cpu);
    const q = t([1, 4, 8, 16]), k = t([1, 2, 8, 16]), v = t([1, 2, 8, 16]);
    await expect(scaledDotProductAttention(q, k, v)).rejects.toThrow(/k: expected 4 heads like q \(or pass enableGQA/);
    await expect(scaledDotProductAttention(q, t([1, 3, 8, 16]), t([1, 3, 8, 16]), { enableGQA: true })).rejects.toThrow(ShapeError);
    await expect(scaledDotProductAttention(t([4, 8, 16]), k, v)).rejects.toThrow(/q: expected a 4-D tensor/);
    await expect(scaledDotProductAttention(q, t([1, 2, 8, 16], 'bf16'), v, { enableGQA: true })).rejects.toThrow(DTypeError);
    await expect(scaledDotProductAttention(q, t([1, 2, 8, 8]), v, { enableGQA: true })).rejects.toThrow(/k: expected head dim 16/);
    await expect(scaledDotProductAttention(q, k, t([1, 2, 9, 16]), { enableGQA: true })).rejects.toThrow(/v: expected sequence length 8/);
    await expect(scaledDotProductAttention(q, k, v, { enableGQA: true, attnMask: t([3, 8]) })).rejects.toThrow(/options.attnMask: expected a shape broadcastable/);
    await expect(scaledDotProductAttention(q, k, v, { enableGQA: true, isCausal: true, attnMask: t([8, 8]) })).rejects.toThrow(/options.attnMask/);
    await expect(scaledDotProductAttention(q, k, v, { enableGQA: true, scale: NaN })).rejects.toThrow(/options.scale/);
    await expect(scaledDotProductAttention(q, k, v, { enableGQA: true, causal: true } as never)).rejects.toThrow(/options.causal/);
    await expect(scaledDotProductAttention(q, k, v, { enableGQA: true, backend: 'tpu' } as never)).rejects.toThrow(InvalidArgumentError);
    const dead = t([1, 2, 8, 16]);
    dead.dispose();
    await expect(scaledDotProductAttention(q, k, dead, { enableGQA: true })).rejects.toThrow(DisposedError);
    const ok = await scaledDotProductAttention(q, k, v, { enableGQA: true });
    expect(ok.shape).toEqual([1, 4, 8, 16]);
  });
});
