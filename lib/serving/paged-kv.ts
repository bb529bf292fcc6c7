/**
 * How a kernel (and the CPU reference) addresses KV for a ragged batch: one
 * descriptor serves paged caches, contiguous batched KV and packed (varlen)
 * KV, so one decode/paged kernel family and one CPU reference cover all three.
 *
 * Positions (the mods' view, same on CPU and GPU): sequence s with
 * n = seqLens[s] cached tokens and m = queryStart[s+1] - queryStart[s] query
 * tokens; its query token i is at absolute position n - m + i. Causal: it sees
 * kv positions <= its own. Mods get b = s (index in the batch), h = query
 * head, q = absolute position, kv = the token's position in its sequence.
 * Query heads map to KV heads as in GQA (h / (Hq / Hkv)). Output packed like
 * q: [T, Hq, D]; LSE f32 [T, Hq] natural log; a row with every key masked
 * gives 0 and LSE -inf; NaN propagates as in PyTorch.
 *
 * Internal: not exported from the package.
 * @module
 */
import { Tensor } from '../tensor.js';

export interface RaggedKv {
  k: Tensor; v: Tensor;            // pools: [numPages, pageSize, Hkv, D] (paged) or any tensor whose last dim is D contiguous
  pageSize: number;                // tokens per page; for contiguous/varlen KV: 2**30 (one "page" per sequence)
  pageStride: number;              // elements between consecutive page indices (paged: pageSize*Hkv*D ... i.e. k.strides[0])
  tokenStride: number;             // elements between tokens in a page
  headStride: number;              // elements between KV heads
  pageTable: Tensor;               // i32 [numSeqs, maxPagesPerSeq], same device as k; entry = page index in units of pageStride
                                   //   paged: physical page ids; contiguous [B,S,H,D]: table[b][0] = b with pageStride = k.strides[0];
                                   //   varlen packed [Tk,H,D]: table[s][0] = cuSeqlensK[s], pageStride = tokenStride
  seqLens: Tensor;                 // i32 [numSeqs]: KV tokens of each sequence (already including this step's appended tokens)
  queryStart: Tensor;              // i32 [numSeqs + 1]: cumulative query-token offsets into packed q [T, Hq, D]
  numSeqs: number; maxSeqLen: number; maxQueryTokens: number;   // host copies, for grid sizing only
  seqLensHost?: Int32Array; queryStartHost?: Int32Array;       // host copies when known (split-KV planning)
}

/** The page size of contiguous and varlen KV: one "page" holds a whole sequence. */
export const WHOLE_SEQUENCE_PAGE = 2 ** 30;

/** Host tables of a ragged batch, before they go to the KV's device. */
export interface RaggedTables {
  /** [numSeqs, maxPagesPerSeq], row-major. */
  pageTable: Int32Array;
  maxPagesPerSeq: number;
  seqLens: Int32Array;
  /** numSeqs + 1 offsets, from 0 to T. */
  queryStart: Int32Array;
}

/** KV addressing: how page, token and head indices step through k and v (elements). */
export interface KvLayout {
  pageSize: number; pageStride: number; tokenStride: number; headStride: number;
}

/** A RaggedKv over `k`/`v` with `tables` copied to k's device (one i32 buffer; the three tensors are views of it). */
export function buildRaggedKv(k: Tensor, v: Tensor, layout: KvLayout, tables: RaggedTables): RaggedKv {
  const numSeqs = tables.seqLens.length;
  const P = tables.maxPagesPerSeq;
  // One host-to-device copy for the three tables: [pageTable | seqLens | queryStart].
  const all = new Int32Array(numSeqs * P + numSeqs + numSeqs + 1);
  all.set(tables.pageTable, 0);
  all.set(tables.seqLens, numSeqs * P);
  all.set(tables.queryStart, numSeqs * P + numSeqs);
  const buf = Tensor.fromHost(all, [all.length], 'i32', { device: k.device });
  const pageTable = buf.narrow(0, 0, numSeqs * P).reshape(numSeqs, P);
  const seqLens = buf.narrow(0, numSeqs * P, numSeqs);
  const queryStart = buf.narrow(0, numSeqs * P + numSeqs, numSeqs + 1);
  let maxSeqLen = 0, maxQueryTokens = 0;
  for (let s = 0; s < numSeqs; s++) {
    maxSeqLen = Math.max(maxSeqLen, tables.seqLens[s]!);
    maxQueryTokens = Math.max(maxQueryTokens, tables.queryStart[s + 1]! - tables.queryStart[s]!);
  }
  return {
    k, v, pageSize: layout.pageSize, pageStride: layout.pageStride, tokenStride: layout.tokenStride, headStride: layout.headStride,
    pageTable, seqLens, queryStart, numSeqs, maxSeqLen, maxQueryTokens,
    seqLensHost: tables.seqLens, queryStartHost: tables.queryStart,
  };
}

/** Frees the table tensors of a RaggedKv built here (not k and v). Stream-ordered on the GPU, so safe right after a launch. */
export function disposeRaggedTables(kv: RaggedKv): void {
  kv.pageTable.dispose();
  kv.seqLens.dispose();
  kv.queryStart.dispose();
}

/**
 * Packed (varlen) KV: k, v `[Tk, Hkv, D]` with the same strides (last dim
 * contiguous); sequence s holds tokens cuSeqlensK[s] .. cuSeqlensK[s+1]-1 and
 * queries cuSeqlensQ[s] .. of the packed q.
 */
export function raggedKvFromVarlen(k: Tensor, v: Tensor, cuSeqlensQ: Int32Array, cuSeqlensK: Int32Array): RaggedKv {
  return buildRaggedKv(k, v, varlenLayout(k), varlenTables(cuSeqlensQ, cuSeqlensK));
}

/** The layout of packed KV `[Tk, Hkv, D]`: one "page" per sequence, starting at its first token. */
export function varlenLayout(k: Tensor): KvLayout {
  return { pageSize: WHOLE_SEQUENCE_PAGE, pageStride: k.strides[0]!, tokenStride: k.strides[0]!, headStride: k.strides[1]! };
}

/** The tables of packed sequences: table[s][0] = cuSeqlensK[s] (in units of the token stride). */
export function varlenTables(cuSeqlensQ: Int32Array, cuSeqlensK: Int32Array): RaggedTables {
  const numSeqs = cuSeqlensK.length - 1;
  const pageTable = new Int32Array(numSeqs), seqLens = new Int32Array(numSeqs);
  for (let s = 0; s < numSeqs; s++) {
    pageTable[s] = cuSeqlensK[s]!;
    seqLens[s] = cuSeqlensK[s + 1]! - cuSeqlensK[s]!;
  }
  return { pageTable, maxPagesPerSeq: 1, seqLens, queryStart: Int32Array.from(cuSeqlensQ) };
}

/**
 * Contiguous batched KV: k, v `[B, Hkv, Skv, D]` (any strides but a contiguous
 * last dim, e.g. `[B, S, H, D]` storage seen through a permute) with the same
 * strides; every sequence has Skv tokens and `sq` query tokens (end-aligned).
 */
export function raggedKvFromDense(k: Tensor, v: Tensor, sq: number): RaggedKv {
  const [B, , Skv] = k.shape as [number, number, number, number];
  const pageTable = new Int32Array(B), seqLens = new Int32Array(B).fill(Skv), queryStart = new Int32Array(B + 1);
  for (let b = 0; b < B; b++) {
    pageTable[b] = b;
    queryStart[b + 1] = (b + 1) * sq;
  }
  return buildRaggedKv(k, v, { pageSize: WHOLE_SEQUENCE_PAGE, pageStride: k.strides[0]!, tokenStride: k.strides[2]!, headStride: k.strides[1]! },
    { pageTable, maxPagesPerSeq: 1, seqLens, queryStart });
}
