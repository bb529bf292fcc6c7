/**
 * Runs attention over a {@link RaggedKv} on the CPU reference backend
 * (native/cpu/ragged_attention): the CPU path of pagedAttention and
 * varlenAttention, and the oracle of the GPU decode/paged kernels' tests.
 * Pools and tables on a GPU are copied to the host first (asynchronously);
 * CPU pools are read in place by the native worker, which writes the output
 * in q's dtype. An AbortSignal stops the native job at its next chunk.
 * Internal: not exported from the package.
 * @module
 */
import { allocHost } from '../dtype.js';
import { AbortError, InternalError } from '../errors.js';
import { hostView } from '../cpu-backend.js';
import { DTYPE_CODE, native, type NativeModProgram } from '../native.js';
import { Tensor, contiguousStrides } from '../tensor.js';
import type { RaggedKv } from './paged-kv.js';

/** Options of {@link runRaggedAttentionCpu}. */
export interface RaggedCpuOptions {
  scale: number;
  causal: boolean;
  returnLse: boolean;
  /** KV heads (the layout does not say which dim holds them: pools and varlen KV have them second to last, [B, Hkv, S, D] second). */
  numKvHeads: number;
  /** Encoded programs (lib/mods encodeProgram), already bound to host tensors and params. */
  scoreMod?: NativeModProgram;
  maskMod?: NativeModProgram;
  numThreads?: number;
  signal?: AbortSignal;
}

function abortError(signal: AbortSignal): AbortError {
  return new AbortError('flexattn: CPU ragged attention was aborted', { cause: signal.reason });
}

async function hostI32(t: Tensor, known?: Int32Array): Promise<Int32Array> {
  if (known) return known;
  return (t.isCpu && t.isContiguous ? t.hostStorage().subarray(t.offset, t.offset + t.numel) : await t.toHost()) as Int32Array;
}

/** The pool's elements from its element 0 (a CPU tensor read in place; a GPU one copied, which needs it contiguous). */
async function hostPool(t: Tensor, name: string): Promise<Uint16Array | Float32Array> {
  if (t.isCpu) return t.hostStorage().subarray(t.offset) as Uint16Array | Float32Array;
  const s = contiguousStrides(t.shape);
  if (!t.strides.every((x, i) => x === s[i] || t.shape[i] === 1)) {
    throw new InternalError(`${name}: a GPU pool read by the CPU reference must be contiguous (strides [${t.strides.join(', ')}])`);
  }
  return (await t.toHost()) as Uint16Array | Float32Array;
}

/**
 * Attention of packed q `[T, Hq, D]` over `kv`; returns out `[T, Hq, D]` (q's
 * dtype) and lse `[T, Hq]` (f32) on q's device.
 */
export async function runRaggedAttentionCpu(q: Tensor, kv: RaggedKv, opts: RaggedCpuOptions): Promise<{ out: Tensor; lse?: Tensor }> {
  const { signal } = opts;
  if (signal?.aborted) throw abortError(signal);
  const cancel = signal ? new Int32Array(new SharedArrayBuffer(4)) : undefined;
  const onAbort = (): void => { Atomics.store(cancel!, 0, 1); };
  signal?.addEventListener('abort', onAbort, { once: true });
  const [T, Hq, D] = q.shape as [number, number, number];
  const outShape = [T, Hq, D], lseShape = [T, Hq];
  let outT: Tensor | undefined, lseT: Tensor | undefined, outHost: Uint16Array | Float32Array, lseHost: Float32Array | undefined;
  try {
    const [qv, k, v, pageTable, seqLens, queryStart] = await Promise.all([
      hostView(q), hostPool(kv.k, 'kv.k'), hostPool(kv.v, 'kv.v'),
      hostI32(kv.pageTable), hostI32(kv.seqLens, kv.seqLensHost), hostI32(kv.queryStart, kv.queryStartHost),
    ]);
    if (signal?.aborted) throw abortError(signal);
    outT = q.isCpu ? Tensor.empty(outShape, q.dtype, { device: 'cpu' }) : undefined;
    lseT = q.isCpu && opts.returnLse ? Tensor.empty(lseShape, 'f32', { device: 'cpu' }) : undefined;
    outHost = (outT ? outT.hostStorage() : allocHost(q.dtype, T * Hq * D)) as Uint16Array | Float32Array;
    lseHost = opts.returnLse ? (lseT ? lseT.hostStorage() : allocHost('f32', T * Hq)) as Float32Array : undefined;
    await native().cpuRaggedAttention({
      q: qv, k, v, kvDtype: DTYPE_CODE[kv.k.dtype as 'bf16' | 'f16' | 'f32'],
      pageSize: kv.pageSize, pageStride: kv.pageStride, tokenStride: kv.tokenStride, headStride: kv.headStride,
      numKvHeads: opts.numKvHeads, pageTable, maxPagesPerSeq: kv.pageTable.shape[1] ?? 0,
      seqLens, queryStart, numSeqs: kv.numSeqs,
      scale: opts.scale, causal: opts.causal, returnLse: opts.returnLse, outDtype: DTYPE_CODE[q.dtype], out: outHost,
      ...(opts.scoreMod ? { scoreMod: opts.scoreMod } : {}), ...(opts.maskMod ? { maskMod: opts.maskMod } : {}),
      ...(lseHost ? { lse: lseHost } : {}), ...(cancel ? { cancel } : {}),
      ...(opts.numThreads !== undefined ? { numThreads: opts.numThreads } : {}),
    });
  } catch (e) {
    outT?.dispose();
    lseT?.dispose();
    if (signal?.aborted) throw abortError(signal);
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  if (signal?.aborted) {
    outT?.dispose();
    lseT?.dispose();
    throw abortError(signal);
  }
  if (outT) return lseT ? { out: outT, lse: lseT } : { out: outT };
  const out = Tensor.fromHost(outHost, outShape, q.dtype, { device: q.device });
  const lse = lseHost ? Tensor.fromHost(lseHost, lseShape, 'f32', { device: q.device }) : undefined;
  return lse ? { out, lse } : { out };
}
