/**
 * KvCache.append on the GPU: one launch of the precompiled paged-append kernel
 * (native/kernels/paged_append.cuh) writes every new token of a ragged batch
 * into its page. The kernel reads the batch's token offsets, start lengths and
 * page table from one small device buffer (the cache's scratch buffer, or a
 * CUDA graph capture's tables).
 * Internal: not exported from the package.
 * @module
 */
import { loadedKernel, loadKernel, type KernelEntry, type KernelSpec } from '../jit.js';
import { packPagedAppendParams } from '../cuda/generated/paged-append-params.js';
import { ptr } from '../cuda/mod-code.js';
import { itemSize } from '../dtype.js';
import type { Tensor } from '../tensor.js';

const KERNEL = 'flexattn_paged_append';
const SPEC: KernelSpec = { kernel: KERNEL, module: KERNEL, source: '#include "paged_append.cuh"\n' };
const THREADS = 256;
const ROWS_PER_CTA = THREADS / 32;
const MAX_CTAS = 65535;
/** The parameter buffer of every append launch (packed and launched back to back; see lib/cuda/param-scratch.ts). */
const PARAMS = new Uint8Array(128);

/** @internal The append kernel of `device` (from the fatbin, else built by NVRTC; loaded once per device). */
export function appendKernel(device: number): Promise<KernelEntry> {
  return loadKernel(device, SPEC);
}

/** @internal The append kernel of `device` when already loaded (a launch without an await), else undefined. */
export function loadedAppendKernel(device: number): KernelEntry | undefined {
  return loadedKernel(device, KERNEL);
}

/** A ragged append: pools and the new tokens, and how its tables are laid out. */
export interface GpuAppend {
  kPool: Tensor; vPool: Tensor;
  /** New tokens `[T, Hkv, D]`, last dim contiguous, k and v with the same strides. */
  k: Tensor; v: Tensor;
  pageSize: number;
  numSeqs: number;
  /** Width of the page-table rows. */
  maxPagesPerSeq: number;
}

/**
 * @internal Enqueues the append on the pools' device stream (returns without
 * waiting), reading its tables from `tables` (i32 on the pools' device, already
 * uploaded): numSeqs + 1 token offsets at 0, numSeqs start lengths at
 * numSeqs + 1, the page-table rows at `rows0`.
 */
export function launchAppend(entry: KernelEntry, a: GpuAppend, tables: Tensor, rows0: number): void {
  if (a.k.shape[0] === 0) return;
  const base = ptr(tables);
  launchAppendAt(entry, a, { cuTokens: base, startLens: base + BigInt(4 * (a.numSeqs + 1)), pageTable: base + BigInt(4 * rows0) });
}

/** Device addresses of an append's tables (i32): numSeqs + 1 token offsets, numSeqs start lengths, [numSeqs, maxPagesPerSeq] pages. */
export interface AppendTables { cuTokens: bigint; startLens: bigint; pageTable: bigint }

/**
 * @internal Enqueues the append reading its tables at `t` (device memory the
 * caller owns: a CUDA graph capture's tables, rewritten before each replay).
 */
export function launchAppendAt(entry: KernelEntry, a: GpuAppend, t: AppendTables): void {
  const T = a.k.shape[0]!, Hkv = a.k.shape[1]!, D = a.k.shape[2]!;
  if (T === 0) return;
  const params = packPagedAppendParams({
    kSrc: ptr(a.k), vSrc: ptr(a.v), kPool: ptr(a.kPool), vPool: ptr(a.vPool),
    cuTokens: t.cuTokens, startLens: t.startLens, pageTable: t.pageTable,
    pageStride: a.kPool.strides[0]!, tokenStride: a.kPool.strides[1]!, headStride: a.kPool.strides[2]!,
    srcTokenStride: a.k.strides[0]!, srcHeadStride: a.k.strides[1]!,
    numSeqs: a.numSeqs, maxPagesPerSeq: a.maxPagesPerSeq, pageSize: a.pageSize, numTokens: T, numKvHeads: Hkv, headDim: D,
    elemBytes: itemSize(a.k.dtype),
  }, PARAMS);
  const ctas = Math.min(MAX_CTAS, Math.ceil((T * Hkv) / ROWS_PER_CTA));
  entry.handle.launch([ctas, 1, 1], [THREADS, 1, 1], 0, params);
}
