/**
 * Data types and host-side conversions. bf16 and f16 live on the host as raw
 * bits in a `Uint16Array` (JavaScript has no 16-bit float array on Node 20);
 * the helpers here convert with round-to-nearest-even and keep NaN/Inf.
 * @module
 */
import { DTypeError } from './errors.js';
import { describeValue } from './messages.js';

/** Element types a {@link Tensor} can hold. `bool` is stored as one byte per element. */
export type DType = 'bf16' | 'f16' | 'f32' | 'i32' | 'bool';

/** Every supported dtype, in native code order (bf16=0 … bool=4). */
export const DTYPES: readonly DType[] = ['bf16', 'f16', 'f32', 'i32', 'bool'];

/** Host typed array that holds each dtype: raw bits for 16-bit floats, bytes for bool. */
export type HostArray<D extends DType = DType> =
  D extends 'bf16' | 'f16' ? Uint16Array :
  D extends 'f32' ? Float32Array :
  D extends 'i32' ? Int32Array :
  Uint8Array;

/** Size in bytes of one element of `dtype`. */
export function itemSize(dtype: DType): number {
  switch (dtype) {
    case 'bf16': case 'f16': return 2;
    case 'f32': case 'i32': return 4;
    case 'bool': return 1;
  }
}

/** Throws a {@link DTypeError} unless `value` is a supported dtype. */
export function checkDType(value: unknown, argument = 'dtype'): DType {
  if (typeof value !== 'string' || !(DTYPES as readonly string[]).includes(value)) {
    throw new DTypeError(argument, `one of ${DTYPES.join(', ')}`, describeValue(value));
  }
  return value as DType;
}

/** True for the floating-point dtypes. */
export function isFloating(dtype: DType): boolean {
  return dtype === 'bf16' || dtype === 'f16' || dtype === 'f32';
}

/** Allocates a zeroed host array of `n` elements for `dtype`. */
export function allocHost(dtype: DType, n: number): HostArray {
  switch (dtype) {
    case 'bf16': case 'f16': return new Uint16Array(n);
    case 'f32': return new Float32Array(n);
    case 'i32': return new Int32Array(n);
    case 'bool': return new Uint8Array(n);
  }
}

/** The typed-array constructor that `fromHost` expects for `dtype` (raw storage). */
export function hostArrayName(dtype: DType): string {
  switch (dtype) {
    case 'bf16': case 'f16': return 'Uint16Array (raw bits) or Float32Array (converted)';
    case 'f32': return 'Float32Array';
    case 'i32': return 'Int32Array';
    case 'bool': return 'Uint8Array';
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Rounds one float to bf16 bits (round to nearest even; NaN stays a quiet NaN with its sign). */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x0040) & 0xffff; // NaN: keep sign, set quiet bit
  const rounded = bits + 0x7fff + ((bits >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/** Widens bf16 bits to a float (exact). */
export function bf16BitsToF32(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0]!;
}

/** Rounds one float to IEEE half bits (round to nearest even, subnormals, ±Inf, NaN). */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // Inf / NaN
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> Inf
  if (e <= 0) {
    if (e < -10) return sign; // underflows to zero
    mant |= 0x800000; // implicit leading one
    const shift = 14 - e;
    const halfway = 1 << (shift - 1);
    const rem = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rem > halfway || (rem === halfway && (h & 1))) h++;
    return sign | h; // may round up into the smallest normal, which is correct
  }
  const rem = mant & 0x1fff;
  let h = (e << 10) | (mant >>> 13);
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // may carry into the exponent (up to Inf): correct
  return sign | h;
}

/** Widens IEEE half bits to a float (exact). */
export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Converts floats to bf16 bits, element-wise. */
export function toBf16(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = f32ToBf16Bits(values[i]!);
  return out;
}

/** Converts bf16 bits to floats, element-wise. */
export function fromBf16(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const o32 = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) o32[i] = bits[i]! << 16;
  return out;
}

/** Converts floats to f16 bits, element-wise. */
export function toF16(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = f32ToF16Bits(values[i]!);
  return out;
}

/** Converts f16 bits to floats, element-wise. */
export function fromF16(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = f16BitsToF32(bits[i]!);
  return out;
}

/** Reads element `i` of a host array of `dtype` as a number (floats widened). */
export function readElement(dtype: DType, data: HostArray, i: number): number {
  switch (dtype) {
    case 'bf16': return bf16BitsToF32(data[i]!);
    case 'f16': return f16BitsToF32(data[i]!);
    case 'bool': return data[i] ? 1 : 0;
    default: return data[i]!;
  }
}

/** Encodes number `x` as an element of `dtype` (rounding floats, truncating to int32, bool = x != 0). */
export function encodeElement(dtype: DType, x: number): number {
  switch (dtype) {
    case 'bf16': return f32ToBf16Bits(x);
    case 'f16': return f32ToF16Bits(x);
    case 'f32': return x;
    case 'i32': return Number.isNaN(x) ? 0 : Math.trunc(Math.max(-2147483648, Math.min(2147483647, x)));
    case 'bool': return x !== 0 ? 1 : 0;
  }
}

/** Converts a whole host array from one dtype to another (new array). */
export function convertHost(data: HostArray, from: DType, to: DType): HostArray {
  if (from === to) return data.slice() as HostArray;
  const out = allocHost(to, data.length);
  if (from === 'bf16' && to === 'f32') return fromBf16(data as Uint16Array);
  if (from === 'f32' && to === 'bf16') return toBf16(data as Float32Array);
  for (let i = 0; i < data.length; i++) out[i] = encodeElement(to, readElement(from, data, i));
  return out;
}
