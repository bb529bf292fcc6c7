/**
 * Shared checks of the GPU attention suites (test/gpu/attention.test.ts, sm90ws.test.ts): poison the
 * allocator's cached output block, then compare a GPU result with the CPU backend's.
 */
import { expect } from 'vitest';
import { Tensor, type DType } from '../lib/index.js';
import { relError } from './reference.js';

/** Fills the allocator's cached block of this size with NaN so unwritten outputs show. */
export function poison(numel: number, dtype: DType): void {
  const bits = new Uint16Array(numel).fill(0x7fc0); // NaN in bf16; 0x7fc0 is also a NaN in f16
  Tensor.fromHost(bits, [numel], dtype === 'f32' ? 'bf16' : dtype, { device: 'cuda:0' }).dispose();
}

/** Relative error over entries finite in `want` (must be below `tol`); the NaN pattern must agree. */
export function compare(got: Float32Array, want: Float32Array | Float64Array, tol: number, what = 'out'): number {
  expect(got.length).toBe(want.length);
  const a: number[] = [], b: number[] = [];
  // One expect for the NaN pattern (an expect per element costs ~10 µs: 10 s per million).
  let mismatch = -1;
  for (let i = 0; i < want.length; i++) {
    if (Number.isNaN(got[i]!) !== Number.isNaN(want[i]!)) { if (mismatch < 0) mismatch = i; continue; }
    if (!Number.isNaN(want[i]!)) { a.push(got[i]!); b.push(want[i]!); }
  }
  expect(mismatch, mismatch < 0 ? '' : `${what}: NaN mismatch at ${mismatch}: got ${got[mismatch]}, want ${want[mismatch]}`).toBe(-1);
  const err = a.length ? relError(a, b) : 0;
  expect(err, `${what}: relative error`).toBeLessThan(tol);
  return err;
}

export function compareLse(got: Float32Array, want: Float32Array): void {
  expect(got.length).toBe(want.length);
  let bad = -1;
  for (let i = 0; i < want.length && bad < 0; i++) {
    const w = want[i]!, g = got[i]!;
    // A score mod that yields NaN makes the CPU row's LSE NaN; the kernel's max ignores
    // NaN scores and reports -inf there (the output row is NaN on both sides).
    const ok = Number.isNaN(w) ? !Number.isFinite(g)
      : !Number.isFinite(w) ? g === w
        : Math.abs(g - w) < 2e-2 * Math.max(1, Math.abs(w));
    if (!ok) bad = i;
  }
  expect(bad, bad < 0 ? '' : `LSE at ${bad}: got ${got[bad]}, want ${want[bad]}`).toBe(-1);
}

