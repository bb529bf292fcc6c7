/**
 * Argument checks of the backward ops: the forward's `out` and `lse`, the
 * incoming gradient `dOut`, `gradFor`, and which backend runs (what the CUDA
 * kernels cannot take is a typed error, never a silent CPU run). Every failure
 * is a typed error naming the argument. Internal.
 * @module
 */
import { DTypeError, DeviceError, InvalidArgumentError, ShapeError } from '../errors.js';
import { describeValue } from '../messages.js';
import { requireVerifiedGpuPath } from '../cuda/switches.js';
import type { MaskMod, ScoreMod } from '../mods/index.js';
import { Tensor } from '../tensor.js';
import { checkBool, checkKeys, checkQkv, checkTensor, resolveBackend, type QkvDims } from '../validate.js';
import { checkSignal } from '../abort.js';
import type { BlockMask } from '../blockmask.js';
import { checkBackwardGpu } from '../cuda/run-backward.js';

/** Largest captured tensor a gradient is computed for (its flat index is exact in f32). */
export const MAX_GRAD_NUMEL = 2 ** 24;

const shapeStr = (t: Tensor): string => `[${t.shape.join(', ')}]`;

function checkLike(t: Tensor, name: string, shape: readonly number[], dtype: string, q: Tensor, what: string): void {
  if (t.ndim !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
    throw new ShapeError(name, `shape [${shape.join(', ')}] (${what})`, shapeStr(t));
  }
  if (t.dtype !== dtype) throw new DTypeError(name, `dtype ${dtype} (${what})`, t.dtype);
  if (t.device !== q.device) throw new DeviceError(name, `device ${q.device} (same as q)`, t.device);
}

/** The forward's outputs and the incoming gradient, checked against q/k/v. */
export function checkForwardResults(q: Tensor, out: unknown, lse: unknown, dOut: unknown, d: QkvDims): { out: Tensor; lse: Tensor; dOut: Tensor } {
  const o = checkTensor(out, 'out'), l = checkTensor(lse, 'lse'), g = checkTensor(dOut, 'dOut');
  checkLike(o, 'out', [d.B, d.Hq, d.Sq, d.Dv], q.dtype, q, "the forward's output [B, Hq, Sq, Dv] in q's dtype");
  checkLike(l, 'lse', [d.B, d.Hq, d.Sq], 'f32', q,
    "the log-sum-exp [B, Hq, Sq] the forward returned with returnLse: true for these q, k, v");
  checkLike(g, 'dOut', [d.B, d.Hq, d.Sq, d.Dv], o.dtype, q, 'the gradient of out: its shape and dtype');
  return { out: o, lse: l, dOut: g };
}

/**
 * `gradFor`: float tensors the score mod reads, each once, each small enough.
 * A tensor only the block mask's maskMod reads is named as such (a mask has no gradient).
 */
export function checkGradFor(gradFor: unknown, scoreMod: ScoreMod | undefined, maskMod: MaskMod | undefined, arg = 'options.gradFor'): Tensor[] {
  if (gradFor === undefined) return [];
  if (!Array.isArray(gradFor)) throw new InvalidArgumentError(arg, 'an array of captured tensors of scoreMod', describeValue(gradFor));
  const seen = new Set<Tensor>();
  return gradFor.map((t, i) => {
    const name = `${arg}[${i}]`;
    const tensor = checkTensor(t, name);
    if (seen.has(tensor)) throw new InvalidArgumentError(name, 'each tensor once', `a repeat of ${arg}[${[...seen].indexOf(tensor)}]`);
    seen.add(tensor);
    if (!scoreMod?.tensors.includes(tensor)) {
      const inMask = maskMod?.tensors.includes(tensor);
      throw new InvalidArgumentError(name, `a tensor the scoreMod reads (${scoreMod ? `it reads ${scoreMod.tensors.length} captured tensor(s)` : 'no scoreMod was given'})`,
        inMask ? 'a tensor only the mask reads (a mask has no gradient)' : `a tensor it does not read, shape ${shapeStr(tensor)}`);
    }
    if (tensor.dtype !== 'f32' && tensor.dtype !== 'bf16' && tensor.dtype !== 'f16') {
      throw new DTypeError(name, 'a float tensor (f32, bf16 or f16): integer and bool tensors have no gradient', tensor.dtype);
    }
    if (tensor.numel > MAX_GRAD_NUMEL) {
      throw new InvalidArgumentError(name, `a tensor of at most 2^24 elements for its gradient`, `${tensor.numel} elements`);
    }
    return tensor;
  });
}

/**
 * The backend a backward call runs on: where q lives unless `backend` says
 * otherwise (`'cpu'` with CUDA tensors runs the CPU reference on host copies).
 * On CUDA, what the kernels do not have is a typed error here, at the call:
 * everything checkBackwardGpu refuses (dtype, head dim, block sizes, strides),
 * and `gradFor` until its CUDA path has run on a GPU (requireVerifiedGpuPath).
 * (`gradFor`'s partial-buffer bound is checked by the op, planGradFor.)
 */
export function backwardBackend(backend: unknown, q: Tensor, op: string, gpu?: { dims: QkvDims; tensors: Record<string, Tensor>;
  blockMask?: BlockMask | undefined; gradFor?: readonly Tensor[] }, arg = 'options.backend'): 'cuda' | 'cpu' {
  const b = resolveBackendNamed(backend, q, arg);
  if (b === 'cuda' && gpu) {
    if (gpu.gradFor && gpu.gradFor.length > 0) requireVerifiedGpuPath(`${op}: gradFor (captured-tensor gradients)`);
    checkBackwardGpu(q, gpu.dims, gpu.blockMask, gpu.tensors);
  }
  return b;
}

function resolveBackendNamed(backend: unknown, q: Tensor, arg: string): 'cuda' | 'cpu' {
  try {
    return resolveBackend(backend, q);
  } catch (e) {
    if (e instanceof InvalidArgumentError && arg !== 'options.backend') {
      const C = e.constructor as new (a: string, b: string, c: string) => InvalidArgumentError;
      throw new C(arg, e.expected, e.received);
    }
    throw e;
  }
}

/**
 * The checks every backward op starts with, in this order: `options` an object
 * with known keys, `signal`, `enableGQA`, q/k/v, the forward's out/lse and
 * dOut.
 */
export function checkBackwardCall(options: unknown, keys: readonly string[], q: Tensor, k: Tensor, v: Tensor,
  out: unknown, lse: unknown, dOut: unknown) {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an object', typeof options);
  const o = options as { signal?: unknown; enableGQA?: unknown };
  checkKeys(options, keys);
  const signal = checkSignal(o.signal);
  const enableGQA = checkBool(o.enableGQA, 'options.enableGQA');
  const dims = checkQkv(q, k, v, enableGQA);
  const saved = checkForwardResults(q, out, lse, dOut, dims);
  return { signal, enableGQA, dims, saved };
}

