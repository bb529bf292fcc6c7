/**
 * Runs attention on the CPU reference backend (native/cpu): tensors are
 * handed to native code as strided host views; GPU tensors are copied to the
 * host first. Results come back as f32 and are converted to the input dtype.
 * @internal
 * @module
 */
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

/**
 * Runs the CPU reference with prepared args and wraps the outputs.
 * `opts.signal`: the caller's abort signal (the caller already rejects at once
 * on abort and frees what this returns late; the native job does not stop on it yet).
 */
export async function runCpuAttention(
  args: Omit<NativeCpuAttentionArgs, 'q' | 'k' | 'v'>, q: Tensor, k: Tensor, v: Tensor,
  opts?: { signal?: AbortSignal },
): Promise<CpuAttentionResult> {
  const [qv, kv, vv] = await Promise.all([hostView(q), hostView(k), hostView(v)]);
  const res = await native().cpuAttention({ ...args, q: qv, k: kv, v: vv });
  const [B, Hq, Sq] = q.shape as [number, number, number];
  const Dv = v.shape[3]!;
  const out32 = Tensor.fromHost(res.out, [B, Hq, Sq, Dv], 'f32', { device: 'cpu' });
  let out = out32.to(q.dtype);
  if (q.isCuda) out = await out.toDevice(q.device);
  const lse = res.lse ? Tensor.fromHost(res.lse, [B, Hq, Sq], 'f32', { device: q.isCuda ? q.device : 'cpu' }) : undefined;
  return lse ? { out, lse } : { out };
}
