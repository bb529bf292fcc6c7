/**
 * The CPU backend writes its output in the requested dtype from the native
 * worker. The bits must be exactly those of the old main-thread path: the f32
 * result converted with Tensor.to(dtype) (lib/dtype.ts rounding), for bf16,
 * f16 and f32 inputs, strided layouts and GQA, and for every f32 bit pattern
 * class (NaN payloads, ±Inf, subnormals, rounding ties, f16 overflow).
 */
import { describe, expect, it } from 'vitest';
import { runCpuAttention } from '../lib/cpu-backend.js';
import { f32ToBf16Bits, f32ToF16Bits, type DType } from '../lib/dtype.js';
import { InvalidArgumentError } from '../lib/errors.js';
import { DTYPE_CODE, native, type NativeHostView } from '../lib/native.js';
import { scaledDotProductAttention } from '../lib/sdpa.js';
import { Tensor } from '../lib/tensor.js';
import { randnArray, referenceAttention, relError } from './reference.js';

type FloatDT = 'bf16' | 'f16' | 'f32';

/** A CPU tensor [B, H, S, D] of random normals; 'bshd' makes it a transposed (strided) view. */
function randomTensor(shape: [number, number, number, number], dtype: FloatDT, seed: number, layout: 'bhsd' | 'bshd'): Tensor {
  const [B, H, S, D] = shape;
  const vals = randnArray(B * H * S * D, seed);
  if (layout === 'bhsd') return Tensor.fromHost(vals, shape, dtype, { device: 'cpu' });
  return Tensor.fromHost(vals, [B, S, H, D], dtype, { device: 'cpu' }).transpose(1, 2);
}

function view(t: Tensor): NativeHostView {
  return { data: t.hostStorage().subarray(t.offset), dtype: DTYPE_CODE[t.dtype], shape: [...t.shape], strides: [...t.strides] };
}

/** Raw bits of a tensor's (contiguous) storage, as numbers. */
function bits(t: Tensor): Uint32Array {
  const h = t.contiguous().hostStorage();
  return h instanceof Float32Array ? new Uint32Array(h.buffer, h.byteOffset, h.length) : Uint32Array.from(h as Uint16Array);
}

/** Index of the first differing element, or -1. */
function firstDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

describe('CPU output written in the input dtype by the native worker', () => {
  const cases: { name: string; dtype: FloatDT; Hq: number; Hkv: number; layout: 'bhsd' | 'bshd'; Sq: number; Skv: number; causal: boolean }[] = [];
  for (const dtype of ['bf16', 'f16', 'f32'] as const) {
    cases.push({ name: `${dtype} contiguous`, dtype, Hq: 4, Hkv: 4, layout: 'bhsd', Sq: 77, Skv: 131, causal: false });
    cases.push({ name: `${dtype} strided (bshd view), GQA 6/2, causal`, dtype, Hq: 6, Hkv: 2, layout: 'bshd', Sq: 65, Skv: 65, causal: true });
  }
  for (const c of cases) {
    it(`${c.name}: bits equal Tensor.fromHost(f32 result).to(dtype)`, async () => {
      const D = 40, Dv = 24, B = 2;
      const q = randomTensor([B, c.Hq, c.Sq, D], c.dtype, 1, c.layout);
      const k = randomTensor([B, c.Hkv, c.Skv, D], c.dtype, 2, c.layout);
      const v = randomTensor([B, c.Hkv, c.Skv, Dv], c.dtype, 3, c.layout);
      const scale = 1 / Math.sqrt(D);
      // The old path: the native f32 result, converted on the JS side.
      const f32 = await native().cpuAttention({ q: view(q), k: view(k), v: view(v), scale, isCausal: c.causal, returnLse: true });
      expect(f32.out).toBeInstanceOf(Float32Array);
      const expected = Tensor.fromHost(f32.out as Float32Array, [B, c.Hq, c.Sq, Dv], 'f32', { device: 'cpu' }).to(c.dtype);

      const res = await runCpuAttention({ scale, isCausal: c.causal, returnLse: true }, q, k, v);
      expect(res.out.dtype).toBe(c.dtype);
      expect(res.out.shape).toEqual([B, c.Hq, c.Sq, Dv]);
      expect(firstDiff(bits(res.out), bits(expected))).toBe(-1);
      expect(firstDiff(res.lse!.hostStorage(), f32.lse!)).toBe(-1);

      // Through the public op as well, and against the float64 reference (so
      // equal bits are also right bits).
      const pub = await scaledDotProductAttention(q, k, v, { backend: 'cpu', enableGQA: c.Hq !== c.Hkv, isCausal: c.causal });
      expect(firstDiff(bits(pub), bits(expected))).toBe(-1);
      const asF64 = async (t: Tensor) => Float64Array.from(await t.toFloat32());
      const ref = referenceAttention({
        q: await asF64(q), k: await asF64(k), v: await asF64(v),
        B, Hq: c.Hq, Hkv: c.Hkv, Sq: c.Sq, Skv: c.Skv, D, Dv, scale,
        ...(c.causal ? { keep: (_b: number, _h: number, i: number, j: number) => j <= i } : {}),
      });
      const tol = c.dtype === 'f32' ? 1e-5 : c.dtype === 'f16' ? 2e-3 : 1e-2;
      expect(relError(await res.out.toFloat32(), ref.out)).toBeLessThan(tol);
    });
  }

  it('every f32 bit-pattern class rounds to the same bf16 / f16 bits as lib/dtype.ts', async () => {
    // out row i = v row i exactly: a diagonal bool mask keeps one kv per row (p = 1).
    const S = 64, Dv = 64, n = S * Dv;
    const u = new Uint32Array(n);
    let x = 0x9e3779b9;
    const next = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
    for (let i = 0; i < n; i++) u[i] = next();
    const special = [
      0x7fc00000, 0xffc00000, 0x7f800001, 0xff812345, 0x7fbfffff, // NaNs (quiet, signalling, payloads)
      0x7f800000, 0xff800000, 0x00000000, 0x00000001, 0x807fffff, // ±Inf, zeros/subnormals
      0x3f808000, 0x3f818000, 0x3f80c000, 0x3f807fff, // bf16 ties to even, just below a tie
      0x477fefff, 0x477ff000, 0x47800000, 0xc77ff000, // f16 max / overflow to Inf
      0x33800000, 0x33800001, 0x33000000, 0x33000001, 0x387fc000, 0x38800000, 0x38ffe000, // f16 subnormal ties, smallest normal
      0x7f7fffff, 0x7f7f8000, // bf16 overflow to Inf by rounding
    ];
    u.set(special, 0);
    const vals = new Float32Array(u.buffer);
    const vView: NativeHostView = { data: vals, dtype: 2, shape: [1, 1, S, Dv], strides: [S * Dv, S * Dv, Dv, 1] };
    const qk = randnArray(S * 8, 5);
    const qkView: NativeHostView = { data: qk, dtype: 2, shape: [1, 1, S, 8], strides: [S * 8, S * 8, 8, 1] };
    const diag = new Uint8Array(S * S);
    for (let i = 0; i < S; i++) diag[i * S + i] = 1;
    const mask: NativeHostView = { data: diag, dtype: 4, shape: [S, S], strides: [S, 1] };
    const base = { q: qkView, k: qkView, v: vView, scale: 0.5, isCausal: false, returnLse: false, mask };
    const f32 = (await native().cpuAttention(base)).out as Float32Array;
    const f32bits = new Uint32Array(f32.buffer, f32.byteOffset, f32.length);
    // the diagonal copy is exact except that -0 becomes +0 (0 + 1·(-0)) and NaNs may be quieted
    let nan = 0;
    for (let i = 0; i < n; i++) {
      if (Number.isNaN(vals[i]!)) { expect(Number.isNaN(f32[i]!)).toBe(true); nan++; continue; }
      if (vals[i] === 0) expect(f32[i]).toBe(0); else expect(f32bits[i]).toBe(u[i]);
    }
    expect(nan).toBeGreaterThan(5);
    for (const [dt, conv] of [[0, f32ToBf16Bits], [1, f32ToF16Bits]] as const) {
      const got = (await native().cpuAttention({ ...base, outDtype: dt })).out;
      expect(got).toBeInstanceOf(Uint16Array);
      const want = Uint16Array.from(f32, (y) => conv(y));
      expect(firstDiff(got, want)).toBe(-1);
    }
  });

  it('writes into a caller-provided array; a wrong array type, length or outDtype is an InvalidArgumentError', async () => {
    const d = (n: number) => randnArray(n, 9);
    const qv: NativeHostView = { data: d(2 * 3 * 8), dtype: 2, shape: [1, 2, 3, 8], strides: [48, 24, 8, 1] };
    const base = { q: qv, k: qv, v: qv, scale: 0.3, isCausal: false, returnLse: true };
    const out = new Uint16Array(48).fill(0xffff), lse = new Float32Array(6).fill(NaN);
    const r = await native().cpuAttention({ ...base, outDtype: 0, out, lse });
    expect(r.out).toBe(out);
    expect(r.lse).toBe(lse);
    const ref = await native().cpuAttention(base);
    expect(firstDiff(out, Uint16Array.from(ref.out, (y) => f32ToBf16Bits(y)))).toBe(-1);
    expect(firstDiff(lse, ref.lse!)).toBe(-1);
    const bad = [
      { outDtype: 3 },
      { outDtype: 0, out: new Float32Array(48) },
      { outDtype: 2, out: new Float32Array(47) },
      { outDtype: 2, lse: new Float32Array(5) },
      { returnLse: false, lse: new Float32Array(6) },
    ];
    for (const extra of bad) {
      expect(() => native().cpuAttention({ ...base, ...extra })).toThrow(InvalidArgumentError);
    }
  });

  it('dtype of the result follows q for every float dtype (also on the public op)', async () => {
    for (const dt of ['bf16', 'f16', 'f32'] as DType[]) {
      const q = randomTensor([1, 1, 5, 8], dt as FloatDT, 11, 'bhsd');
      const out = await scaledDotProductAttention(q, q, q, { backend: 'cpu' });
      expect(out.dtype).toBe(dt);
      expect(out.isCpu).toBe(true);
    }
  });
});
