/**
 * Runs attention on the CPU reference backend (native/cpu): tensors are
 * handed to native code as strided host views in their own dtype; GPU tensors
 * are copied to the host first (asynchronously). The native worker writes the
 * output directly in q's dtype into an array allocated here, so no pass over
 * the data runs on the main thread. An AbortSignal stops the native job at its
 * next chunk.
 * Internal: not exported from the package.
 * @module
 */
import { allocHost } from './dtype.js';
import { AbortError } from './errors.js';
import { DTYPE_CODE, native, type NativeCpuAttentionArgs, type NativeHostView } from './native.js';
import { Tensor, contiguousStrides } from './tensor.js';

/** A strided host view of `t` (GPU tensors are copied to a contiguous host array). */
export async function hostView(t: Tensor): Promise<NativeHostView> {
  if (t.isCpu) {
    const storage = t.hostStorage();
    return { data: storage.subarray(t.offset), dtype: DTYPE_CODE[t.dtype], shape: [...t.shape], strides: [...t.strides] };
  }
  const data = await t.toHost();
  return { data, dtype: DTYPE_CODE[t.dtype], shape: [...t.shape], strides: contiguousStrides(t.shape) };
}

/** Output of one CPU attention call, as tensors on `like`'s device and dtype. */
export interface CpuAttentionResult { out: Tensor; lse?: Tensor }

/** Options of {@link runCpuAttention}. */
export interface CpuRunOptions {
  /** Aborting it stops the native job at its next chunk; the call then rejects with an {@link AbortError}. */
  signal?: AbortSignal;
}

function abortError(signal: AbortSignal): AbortError {
  return new AbortError('flexattn: CPU attention was aborted', { cause: signal.reason });
}

/** Runs the CPU reference with prepared args and wraps the outputs. */
export async function runCpuAttention(
  args: Omit<NativeCpuAttentionArgs, 'q' | 'k' | 'v' | 'out' | 'lse' | 'outDtype' | 'cancel'>, q: Tensor, k: Tensor, v: Tensor,
  opts: CpuRunOptions = {},
): Promise<CpuAttentionResult> {
  const { signal } = opts;
  if (signal?.aborted) throw abortError(signal);
  // The worker polls this flag between chunks; the abort listener sets it.
  const cancel = signal ? new Int32Array(new SharedArrayBuffer(4)) : undefined;
  const onAbort = (): void => { Atomics.store(cancel!, 0, 1); };
  signal?.addEventListener('abort', onAbort, { once: true });
  const [B, Hq, Sq] = q.shape as [number, number, number];
  const Dv = v.shape[3]!;
  const outShape = [B, Hq, Sq, Dv], lseShape = [B, Hq, Sq];
  let outT: Tensor | undefined, lseT: Tensor | undefined, outHost: Uint16Array | Float32Array, lseHost: Float32Array | undefined;
  try {
    const [qv, kv, vv] = await Promise.all([hostView(q), hostView(k), hostView(v)]);
    if (signal?.aborted) throw abortError(signal);
    // CPU results are written straight into the storage of the tensors
    // returned (allocation only; large fresh arrays are zeroed lazily by the OS).
    outT = q.isCpu ? Tensor.empty(outShape, q.dtype, { device: 'cpu' }) : undefined;
    lseT = q.isCpu && args.returnLse ? Tensor.empty(lseShape, 'f32', { device: 'cpu' }) : undefined;
    outHost = (outT ? outT.hostStorage() : allocHost(q.dtype, B * Hq * Sq * Dv)) as Uint16Array | Float32Array;
    lseHost = args.returnLse ? (lseT ? lseT.hostStorage() : allocHost('f32', B * Hq * Sq)) as Float32Array : undefined;
    await native().cpuAttention({
      ...args, q: qv, k: kv, v: vv, outDtype: DTYPE_CODE[q.dtype], out: outHost,
      ...(lseHost ? { lse: lseHost } : {}), ...(cancel ? { cancel } : {}),
    });
  } catch (e) {
    outT?.dispose();
    lseT?.dispose();
    if (signal?.aborted) throw abortError(signal);
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  // Aborted after the last chunk: the caller asked to stop, so the (complete)
  // result is dropped like a stopped one.
  if (signal?.aborted) {
    outT?.dispose();
    lseT?.dispose();
    throw abortError(signal);
  }

  if (outT) return lseT ? { out: outT, lse: lseT } : { out: outT };
  // GPU inputs: the results go back to q's device (a copy through pinned memory, then async).
  const out = Tensor.fromHost(outHost, outShape, q.dtype, { device: q.device });
  const lse = lseHost ? Tensor.fromHost(lseHost, lseShape, 'f32', { device: q.device }) : undefined;
  return lse ? { out, lse } : { out };
}
