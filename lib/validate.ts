/**
 * Argument checks shared by the attention ops: every failure is a typed
 * error naming the argument and what was expected.
 * Internal: not exported from the package.
 * @module
 */
import { DTypeError, DeviceError, InvalidArgumentError, ShapeError } from './errors.js';
import { describeValue } from './messages.js';
import { Tensor } from './tensor.js';

/** Which implementation runs an op. */
export type Backend = 'cuda' | 'cpu';

/** Shapes of a checked q/k/v triple. */
export interface QkvDims {
  B: number; Hq: number; Hkv: number; Sq: number; Skv: number; D: number; Dv: number;
}

export function checkTensor(t: unknown, argument: string): Tensor {
  if (!(t instanceof Tensor)) throw new InvalidArgumentError(argument, 'a Tensor', describeValue(t));
  t.assertAlive(argument);
  return t;
}

/** Validates q [B,Hq,Sq,D], k [B,Hkv,Skv,D], v [B,Hkv,Skv,Dv]. */
export function checkQkv(q: unknown, k: unknown, v: unknown, enableGQA: boolean): QkvDims {
  const tq = checkTensor(q, 'q'), tk = checkTensor(k, 'k'), tv = checkTensor(v, 'v');
  for (const [name, t] of [['q', tq], ['k', tk], ['v', tv]] as const) {
    if (t.ndim !== 4) throw new ShapeError(name, 'a 4-D tensor [B, H, S, D]', `shape [${t.shape.join(', ')}]`);
    if (t.dtype !== 'bf16' && t.dtype !== 'f16' && t.dtype !== 'f32') throw new DTypeError(name, 'dtype bf16, f16 or f32', t.dtype);
  }
  if (tk.dtype !== tq.dtype) throw new DTypeError('k', `dtype ${tq.dtype} (same as q)`, tk.dtype);
  if (tv.dtype !== tq.dtype) throw new DTypeError('v', `dtype ${tq.dtype} (same as q)`, tv.dtype);
  if (tk.device !== tq.device) throw new DeviceError('k', `device ${tq.device} (same as q)`, tk.device);
  if (tv.device !== tq.device) throw new DeviceError('v', `device ${tq.device} (same as q)`, tv.device);
  const [B, Hq, Sq, D] = tq.shape as [number, number, number, number];
  const [Bk, Hkv, Skv, Dk] = tk.shape as [number, number, number, number];
  const [Bv, Hv, Sv, Dv] = tv.shape as [number, number, number, number];
  if (Bk !== B) throw new ShapeError('k', `batch size ${B} (k.shape[0] must equal q.shape[0])`, String(Bk));
  if (Bv !== B) throw new ShapeError('v', `batch size ${B} (v.shape[0] must equal q.shape[0])`, String(Bv));
  if (Dk !== D) throw new ShapeError('k', `head dim ${D} (k.shape[3] must equal q.shape[3])`, String(Dk));
  if (Sv !== Skv) throw new ShapeError('v', `sequence length ${Skv} (v.shape[2] must equal k.shape[2])`, String(Sv));
  if (Hv !== Hkv) throw new ShapeError('v', `${Hkv} heads (v.shape[1] must equal k.shape[1])`, String(Hv));
  if (Hq !== Hkv) {
    if (!enableGQA) {
      throw new ShapeError('k', `${Hq} heads like q (or pass enableGQA: true for grouped-query attention)`, String(Hkv));
    }
    if (Hkv === 0 || Hq % Hkv !== 0) throw new ShapeError('k', `a head count dividing q's ${Hq} heads (GQA)`, String(Hkv));
  }
  if (D === 0 || Dv === 0) throw new ShapeError('q', 'a non-zero head dimension', '0');
  return { B, Hq, Hkv, Sq, Skv, D, Dv };
}

/** Resolves `scale` (default 1/sqrt(D), as in PyTorch). */
export function checkScale(scale: unknown, D: number): number {
  if (scale === undefined || scale === null) return 1 / Math.sqrt(D);
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new InvalidArgumentError('options.scale', 'a finite number', describeValue(scale));
  return scale;
}

export function checkBool(value: unknown, argument: string, dflt = false): boolean {
  if (value === undefined) return dflt;
  if (typeof value !== 'boolean') throw new InvalidArgumentError(argument, 'a boolean', typeof value);
  return value;
}

/** Resolves the backend: explicit, or from the inputs' device. */
export function resolveBackend(backend: unknown, q: Tensor): Backend {
  if (backend === undefined) return q.isCuda ? 'cuda' : 'cpu';
  if (backend !== 'cuda' && backend !== 'cpu') throw new InvalidArgumentError('options.backend', "'cuda' or 'cpu'", describeValue(backend));
  if (backend === 'cuda' && !q.isCuda) throw new DeviceError('options.backend', "CUDA tensors for backend 'cuda' (move them with toDevice('cuda'))", q.device);
  return backend;
}

/** Rejects unknown option keys, so typos such as `causal: true` do not pass silently. */
export function checkKeys(options: object, allowed: readonly string[], argument = 'options'): void {
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) {
      throw new InvalidArgumentError(`${argument}.${key}`, `one of the known options (${allowed.join(', ')})`, 'an unknown option');
    }
  }
}
