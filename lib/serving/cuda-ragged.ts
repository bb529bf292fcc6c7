/**
 * The GPU path of pagedAttention / varlenAttention: the one place that calls
 * the decode/paged kernel family's launcher (`runRaggedAttentionCuda` of
 * lib/cuda/run-ragged.ts). Until that launcher is part of this build, the
 * call rejects with a NotImplementedError: there is no silent fallback to
 * the CPU (pass `backend: 'cpu'` for the reference).
 * Internal: not exported from the package.
 * @module
 */
import { NotImplementedError } from '../errors.js';
import type { MaskMod, ScoreMod } from '../mods/index.js';
import type { Tensor } from '../tensor.js';
import type { RaggedKv } from './paged-kv.js';

/** What the GPU launcher takes besides q and the KV descriptor. */
export interface RaggedCudaOptions {
  scale: number;
  scoreMod?: ScoreMod;
  maskMod?: MaskMod;
  causal: boolean;
  returnLse: boolean;
  /** Values of the mods' `param(...)` scalars. */
  params?: Record<string, number>;
  signal?: AbortSignal;
}

/** Attention of packed q `[T, Hq, D]` over `kv` on the GPU: `{ out [T, Hq, D], lse? [T, Hq] }`. */
export async function runRaggedCuda(q: Tensor, kv: RaggedKv, opts: RaggedCudaOptions): Promise<{ out: Tensor; lse?: Tensor }> {
  // Merge point (one line): return (await import('../cuda/run-ragged.js')).runRaggedAttentionCuda(q, kv, opts);
  void q; void kv; void opts;
  throw new NotImplementedError('flexattn: the GPU kernels for paged/varlen attention are not in this build yet; ' +
    "pass backend: 'cpu' to run the CPU reference");
}
