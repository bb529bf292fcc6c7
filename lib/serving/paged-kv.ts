/**
 * The one descriptor through which a kernel (and the CPU reference) addresses
 * the KV of a ragged batch: paged caches, contiguous batched KV and packed
 * (varlen) KV alike, so one decode/paged kernel family covers all three.
 * Positions as the mods see them: sequence s with n = seqLens[s] cached tokens
 * and m query tokens (queryStart[s+1] - queryStart[s]); its query token i sits
 * at absolute position n - m + i and, causally, sees kv positions <= its own.
 * @module
 */
import type { Tensor } from '../tensor.js';

/** How a kernel finds sequence s's token j of KV head hk (see the module notes). */
export interface RaggedKv {
  /** Pools: `[numPages, pageSize, Hkv, D]` (paged) or any tensor whose last dim is D contiguous. */
  k: Tensor; v: Tensor;
  /** Tokens per page; for contiguous/varlen KV: 2**30 (one "page" per sequence). */
  pageSize: number;
  /** Elements between consecutive page indices (paged: `k.strides[0]`). */
  pageStride: number;
  /** Elements between tokens in a page. */
  tokenStride: number;
  /** Elements between KV heads. */
  headStride: number;
  /**
   * i32 `[numSeqs, maxPagesPerSeq]`, same device as k; entry = page index in units of pageStride.
   * Paged: physical page ids; contiguous `[B,S,H,D]`: `table[b][0] = b` with pageStride = `k.strides[0]`;
   * varlen packed `[Tk,H,D]`: `table[s][0] = cuSeqlensK[s]`, pageStride = tokenStride.
   */
  pageTable: Tensor;
  /** i32 `[numSeqs]`: KV tokens of each sequence (already including this step's appended tokens). */
  seqLens: Tensor;
  /** i32 `[numSeqs + 1]`: cumulative query-token offsets into packed q `[T, Hq, D]`. */
  queryStart: Tensor;
  /** Host copies, for grid sizing only. */
  numSeqs: number; maxSeqLen: number; maxQueryTokens: number;
  /** Host copies when known (split-KV planning). */
  seqLensHost?: Int32Array; queryStartHost?: Int32Array;
}
