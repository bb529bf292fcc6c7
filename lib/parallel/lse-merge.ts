/**
 * Merging partial attention results by their log-sum-exp: the attention of a
 * query over K/V split into parts A and B is
 *
 *   lse = logaddexp(lseA, lseB),  out = outA·exp(lseA − lse) + outB·exp(lseB − lse)
 *
 * A running fp32 accumulator `(acc, accLse)` per rank takes one partial
 * `(out, lse)` after another (context-parallel ring steps, KV shards). A part
 * with LSE −∞ (every key masked) contributes nothing, whatever its output
 * holds; a NaN LSE or output propagates to the merged row, as single-device
 * attention propagates a NaN score. Both −∞ gives 0 and −∞ (a fully masked
 * row). This file is the CPU path and the definition the CUDA kernel
 * (lse-merge-cuda.ts) follows; {@link mergeInto} picks between them.
 * Internal: the public API is contextParallelAttention / shardedPagedAttention.
 * @module
 */
import { InternalError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { launchLseMerge } from './lse-merge-cuda.js';

/** Merges one (out, lse) pair of a row into (accOut, accLse); returns the merged LSE and the two weights. */
export function mergeWeights(accLse: number, lse: number): { lse: number; wAcc: number; wPart: number } {
  if (Number.isNaN(accLse) || Number.isNaN(lse)) return { lse: NaN, wAcc: NaN, wPart: NaN };
  if (lse === -Infinity) return { lse: accLse, wAcc: 1, wPart: 0 };
  if (accLse === -Infinity) return { lse, wAcc: 0, wPart: 1 };
  const m = Math.max(accLse, lse);
  const merged = m + Math.log(Math.exp(accLse - m) + Math.exp(lse - m));
  return { lse: merged, wAcc: Math.exp(accLse - merged), wPart: Math.exp(lse - merged) };
}

/**
 * A partial result to merge: `out` `[B, H, Sc, Dv]` (any float dtype, any
 * strides) and `lse` `[B, H, Sc]` f32, for the accumulator's rows
 * `[rowOffset, rowOffset + Sc)` of dimension 2.
 */
export interface Partial { out: Tensor; lse: Tensor; rowOffset: number }

/**
 * @internal Merges `p` into the fp32 accumulator `acc` `[B, H, S, Dv]` and
 * `accLse` `[B, H, S]` (both contiguous f32, on p's device), in place: on the
 * CPU at once, on a GPU enqueued on the device's stream.
 */
export function mergeInto(acc: Tensor, accLse: Tensor, p: Partial): void {
  const [B, H, S, Dv] = acc.shape as [number, number, number, number];
  const Sc = p.out.shape[2]!;
  if (acc.dtype !== 'f32' || accLse.dtype !== 'f32' || !acc.isContiguous || !accLse.isContiguous || p.lse.dtype !== 'f32'
    || p.out.shape[0] !== B || p.out.shape[1] !== H || p.out.shape[3] !== Dv || p.rowOffset < 0 || p.rowOffset + Sc > S
    || acc.device !== p.out.device) {
    throw new InternalError(`mergeInto: accumulator ${acc} / ${accLse} does not fit partial ${p.out} / ${p.lse} at row ${p.rowOffset}`);
  }
  if (acc.isCuda) {
    launchLseMerge(acc, accLse, p);
    return;
  }
  const a = acc.hostStorage() as Float32Array, al = accLse.hostStorage() as Float32Array;
  const part = p.out.dtype === 'f32' ? p.out : p.out.to('f32');
  try {
    const o = part.hostStorage() as Float32Array, ol = p.lse.hostStorage() as Float32Array;
    const [ob, oh, os, od] = part.strides as [number, number, number, number];
    const [lb, lh, ls] = p.lse.strides as [number, number, number];
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        for (let s = 0; s < Sc; s++) {
          const row = (b * H + h) * S + p.rowOffset + s;
          const la = al[accLse.offset + row]!, lp = ol[p.lse.offset + b * lb + h * lh + s * ls]!;
          const w = mergeWeights(la, lp);
          // A side with LSE −∞ takes nothing (0 · NaN would be NaN): a masked part's output is not read.
          const nan = Number.isNaN(w.lse);
          const skipA = !nan && la === -Infinity, skipP = !nan && lp === -Infinity;
          al[accLse.offset + row] = w.lse;
          const base = acc.offset + row * Dv, src = part.offset + b * ob + h * oh + s * os;
          for (let d = 0; d < Dv; d++) {
            const x = skipA ? 0 : w.wAcc * a[base + d]!;
            const y = skipP ? 0 : w.wPart * o[src + d * od]!;
            a[base + d] = x + y;
          }
        }
      }
    }
  } finally {
    if (part !== p.out) part.dispose();
  }
}

/** @internal A fresh accumulator: out 0 and LSE −∞ for `[B, H, S, Dv]` on `device`. */
export function emptyAccumulator(B: number, H: number, S: number, Dv: number, device: Tensor['device']): { acc: Tensor; lse: Tensor } {
  const acc = Tensor.zeros([B, H, S, Dv], 'f32', { device });
  const n = B * H * S;
  const lse = Tensor.fromHost(new Float32Array(n).fill(-Infinity), [B, H, S], 'f32', { device });
  return { acc, lse };
}
