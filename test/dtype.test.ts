import { describe, expect, it } from 'vitest';
import {
  bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, fromBf16, toBf16, convertHost,
} from '../lib/dtype.js';
import { rng } from './reference.js';

const f32 = (x: number) => Math.fround(x);
const bitsOf = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0]!;

/** Nearest representable value from a sorted pair, ties to the one with an even last bit. */
function nearestEven(x: number, lo: number, hi: number, loBits: number, hiBits: number): number {
  const dl = x - lo, dh = hi - x;
  if (dl < dh) return loBits;
  if (dh < dl) return hiBits;
  return (loBits & 1) === 0 ? loBits : hiBits;
}

describe('bf16', () => {
  it('every non-NaN bf16 value round-trips exactly', () => {
    for (let b = 0; b < 0x10000; b++) {
      const x = bf16BitsToF32(b);
      if (Number.isNaN(x)) continue;
      expect(f32ToBf16Bits(x)).toBe(b);
    }
  });

  it('rounds random floats to the nearest bf16, ties to even', () => {
    const r = rng(1);
    for (let i = 0; i < 20000; i++) {
      const x = f32((r() - 0.5) * 2 ** Math.floor(r() * 60 - 30));
      const trunc = bitsOf(x) >>> 16;
      const lo = bf16BitsToF32(trunc), hi = bf16BitsToF32(trunc + 1);
      const [a, b, ab, bb] = Math.abs(lo) <= Math.abs(hi) ? [lo, hi, trunc, trunc + 1] : [hi, lo, trunc + 1, trunc];
      const expected = nearestEven(Math.abs(x), Math.abs(a), Math.abs(b), ab, bb);
      expect(f32ToBf16Bits(x)).toBe(expected);
    }
  });

  it('handles exact ties, NaN, infinities, overflow and signed zero', () => {
    // 1 + 2^-8 is exactly half way between 1 and 1 + 2^-7: ties go to the even mantissa (1).
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80);
    // 1 + 3·2^-8 is half way between 1+2^-7 (odd) and 1+2^-6 (even): rounds up.
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(f32ToBf16Bits(Infinity)).toBe(0x7f80);
    expect(f32ToBf16Bits(-Infinity)).toBe(0xff80);
    expect(f32ToBf16Bits(3.4e38)).toBe(0x7f80); // rounds past the largest bf16 to Inf
    expect(f32ToBf16Bits(-0)).toBe(0x8000);
    const nan = f32ToBf16Bits(NaN);
    expect(Number.isNaN(bf16BitsToF32(nan))).toBe(true);
    expect(nan & 0x7f80).toBe(0x7f80);
    expect(nan & 0x7f).not.toBe(0); // stays a NaN, never becomes Inf
    // A NaN whose payload lives only in the low bits must not truncate to Inf.
    const lowNan = new Float32Array(new Uint32Array([0x7f800001]).buffer)[0]!;
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(lowNan)))).toBe(true);
  });

  it('array helpers agree with the scalar ones', () => {
    const r = rng(2);
    const xs = Float32Array.from({ length: 1000 }, () => (r() - 0.5) * 100);
    const bits = toBf16(xs);
    const back = fromBf16(bits);
    for (let i = 0; i < xs.length; i++) {
      expect(bits[i]).toBe(f32ToBf16Bits(xs[i]!));
      expect(back[i]).toBe(bf16BitsToF32(bits[i]!));
      expect(Math.abs(back[i]! - xs[i]!)).toBeLessThanOrEqual(Math.abs(xs[i]!) * 2 ** -8);
    }
  });
});

describe('f16', () => {
  it('every non-NaN f16 value round-trips exactly (normals and subnormals)', () => {
    for (let b = 0; b < 0x10000; b++) {
      const x = f16BitsToF32(b);
      if (Number.isNaN(x)) continue;
      expect(f32ToF16Bits(x)).toBe(b);
    }
  });

  it('rounds random floats to the nearest half, ties to even', () => {
    // Sorted table of all finite non-negative halves, for a brute-force nearest search.
    const values: number[] = [];
    for (let b = 0; b < 0x7c00; b++) values.push(f16BitsToF32(b));
    const r = rng(3);
    for (let i = 0; i < 20000; i++) {
      const x = f32(r() * 2 ** Math.floor(r() * 40 - 26));
      let lo = 0, hi = values.length - 1;
      while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (values[mid]! <= x) lo = mid; else hi = mid; }
      const expected = x >= 65520 ? 0x7c00 : nearestEven(x, values[lo]!, values[hi]!, lo, hi);
      expect(f32ToF16Bits(x)).toBe(expected);
      expect(f32ToF16Bits(-x)).toBe(expected | 0x8000);
    }
  });

  it('handles the edges: overflow to Inf, smallest subnormal, NaN', () => {
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00);
    expect(f32ToF16Bits(2 ** -24)).toBe(1);
    expect(f32ToF16Bits(2 ** -25)).toBe(0); // tie between 0 and the smallest subnormal: even (0)
    expect(f32ToF16Bits(1.5 * 2 ** -25)).toBe(1);
    expect(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN)))).toBe(true);
    expect(f32ToF16Bits(-Infinity)).toBe(0xfc00);
  });

  it('convertHost goes through every dtype pair', () => {
    const src = new Float32Array([1.5, -2.25, 0, 3.75, 1e6]);
    expect(Array.from(convertHost(src, 'f32', 'i32'))).toEqual([1, -2, 0, 3, 1000000]);
    expect(Array.from(convertHost(src, 'f32', 'bool'))).toEqual([1, 1, 0, 1, 1]);
    const h = convertHost(src, 'f32', 'f16');
    expect(Array.from(convertHost(h, 'f16', 'f32'))).toEqual([1.5, -2.25, 0, 3.75, Infinity]);
  });
});
