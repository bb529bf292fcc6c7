/**
 * Runs the backward pass on the CPU reference backend (native/cpu/
 * attention_backward.cc): tensors go to native code as strided host views in
 * their own dtype (GPU tensors copied to the host first); the native worker
 * writes the gradients in their final dtype into arrays allocated here. An
 * AbortSignal stops the job at its next row. Internal.
 * @module
 */
import { allocHost } from '../dtype.js';
import { AbortError } from '../errors.js';
import { DTYPE_CODE, native, type NativeCpuBackwardArgs } from '../native.js';
import { Tensor } from '../tensor.js';
import { hostView } from '../cpu-backend.js';

/** Gradients of one backward call; `dCaptured[i]` is the gradient of `captured[i]`. */
export interface CpuGradients { dq: Tensor; dk: Tensor; dv: Tensor; dCaptured: Tensor[] }

/** The tensors of a backward call (the call's held handles). */
export interface BackwardTensors { q: Tensor; k: Tensor; v: Tensor; out: Tensor; lse: Tensor; dOut: Tensor }

type Args = Omit<NativeCpuBackwardArgs, 'q' | 'k' | 'v' | 'out' | 'dOut' | 'lse' | 'gradDtype' | 'dq' | 'dk' | 'dv' | 'cancel'>;

function abortError(signal: AbortSignal): AbortError {
  return new AbortError('flexattn: CPU attention backward was aborted', { cause: signal.reason });
}

/** A gradient output: a CPU tensor's own storage, or a host array copied to `device` afterwards. */
interface Slot { tensor?: Tensor; host: Uint16Array | Float32Array; shape: number[]; dtype: Tensor['dtype']; device: Tensor['device'] }

function slot(shape: readonly number[], dtype: Tensor['dtype'], device: Tensor['device']): Slot {
  const dims = [...shape];
  if (device === 'cpu') {
    const tensor = Tensor.empty(dims, dtype, { device: 'cpu' });
    return { tensor, host: tensor.hostStorage() as Uint16Array | Float32Array, shape: dims, dtype, device };
  }
  return { host: allocHost(dtype, dims.reduce((a, b) => a * b, 1)) as Uint16Array | Float32Array, shape: dims, dtype, device };
}

const finish = (s: Slot): Tensor => s.tensor ?? Tensor.fromHost(s.host, s.shape, s.dtype, { device: s.device });

/**
 * Runs the native backward. `captured[i]` is the tensor whose gradient
 * `args.captured[i]` describes (its shape, dtype and device shape the result).
 */
export async function runCpuBackward(args: Args, t: BackwardTensors, captured: readonly Tensor[], signal?: AbortSignal): Promise<CpuGradients> {
  if (signal?.aborted) throw abortError(signal);
  const cancel = signal ? new Int32Array(new SharedArrayBuffer(4)) : undefined;
  const onAbort = (): void => { Atomics.store(cancel!, 0, 1); };
  signal?.addEventListener('abort', onAbort, { once: true });
  const slots: Slot[] = [];
  try {
    const [q, k, v, out, dOut, lse] = await Promise.all([t.q, t.k, t.v, t.out, t.dOut, t.lse].map(hostView));
    if (signal?.aborted) throw abortError(signal);
    const dev = t.q.device;
    slots.push(slot(t.q.shape, t.q.dtype, dev), slot(t.k.shape, t.q.dtype, dev), slot([...t.k.shape.slice(0, 3), t.v.shape[3]!], t.q.dtype, dev));
    captured.forEach((c) => slots.push(slot(c.shape, c.dtype, c.device)));
    await native().cpuAttentionBackward({
      ...args, q: q!, k: k!, v: v!, out: out!, dOut: dOut!, lse: lse!, gradDtype: DTYPE_CODE[t.q.dtype],
      dq: slots[0]!.host, dk: slots[1]!.host, dv: slots[2]!.host,
      captured: (args.captured ?? []).map((c, i) => ({ ...c, out: slots[3 + i]!.host })),
      ...(cancel ? { cancel } : {}),
    });
    if (signal?.aborted) throw abortError(signal);
  } catch (e) {
    for (const s of slots) s.tensor?.dispose();
    if (signal?.aborted) throw abortError(signal);
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  const [dq, dk, dv, ...dCaptured] = slots.map(finish);
  return { dq: dq!, dk: dk!, dv: dv!, dCaptured };
}
