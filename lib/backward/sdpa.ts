/**
 * `scaledDotProductAttentionBackward`: the gradients of
 * {@link scaledDotProductAttention} with respect to q, k and v (PyTorch's
 * SDPA backward: causal or dense bool/additive mask, scale, GQA).
 * @module
 */
import { InvalidArgumentError, ShapeError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { runOp, type Hold } from '../ownership.js';
import { checkBool, checkScale, checkTensor } from '../validate.js';
import { broadcastMask, checkMask } from '../sdpa.js';
import { hostView } from '../cpu-backend.js';
import { backwardBackend, checkBackwardCall } from './checks.js';
import { runCpuBackward } from './cpu.js';
import { runBackward } from '../cuda/run-backward.js';
import { maskAsScoreMod } from '../cuda/mod-code.js';
import { scoreModGradient } from './mod-programs.js';

/** Options of {@link scaledDotProductAttentionBackward}: the forward's. */
export interface SdpaBackwardOptions {
  /** The forward's causal flag (top-left aligned); not with `attnMask`. */
  isCausal?: boolean;
  /** The forward's dense mask, broadcastable to `[B, Hq, Sq, Skv]`: bool (true = attend) or additive float (no gradient is computed for it). */
  attnMask?: Tensor;
  /** The forward's multiplier of q·k; default `1 / sqrt(D)`. */
  scale?: number;
  /** Allow `Hq` to be a multiple of `Hkv` (grouped-query attention); dk and dv are summed over each group's query heads. */
  enableGQA?: boolean;
  /**
   * Default: where the tensors live. `'cuda'`: the GPU kernels (bf16/f16, head
   * dims 32, 64, 96, 128; others a NotImplementedError). `'cpu'` with CUDA
   * tensors: the CPU reference on host copies, gradients copied back.
   */
  backend?: 'cpu' | 'cuda';
  /** Cancels the call, as for {@link flexAttentionBackward}. */
  signal?: AbortSignal;
}

const KEYS = ['isCausal', 'attnMask', 'scale', 'enableGQA', 'backend', 'signal'] as const;

/** Gradients from {@link scaledDotProductAttentionBackward}. */
export interface AttentionGradients {
  /** `[B, Hq, Sq, D]`, q's dtype and device. */
  dq: Tensor;
  /** `[B, Hkv, Skv, D]` (summed over the query heads of each KV head under GQA). */
  dk: Tensor;
  /** `[B, Hkv, Skv, Dv]`. */
  dv: Tensor;
}

/**
 * Backward pass of scaled dot-product attention: gradients of a loss `L` with
 * respect to q, k and v given `dOut = ∂L/∂out`.
 *
 * ```ts
 * const { out, lse } = await scaledDotProductAttention(q, k, v, { isCausal: true, returnLse: true });
 * const { dq, dk, dv } = await scaledDotProductAttentionBackward(q, k, v, out, lse, dOut, { isCausal: true });
 * ```
 * Rows whose every key is masked get zero gradients; NaN propagates as in PyTorch.
 *
 * @param q Queries `[B, Hq, Sq, D]` (bf16, f16 or f32) as given to the forward.
 * @param k Keys `[B, Hkv, Skv, D]`.
 * @param v Values `[B, Hkv, Skv, Dv]`.
 * @param out The forward's output `[B, Hq, Sq, Dv]` (q's dtype).
 * @param lse The forward's log-sum-exp `[B, Hq, Sq]` f32 (`returnLse: true`).
 * @param dOut Gradient of the loss with respect to `out` (out's shape and dtype).
 * @param options The forward's options; see {@link SdpaBackwardOptions}.
 * @returns `{ dq, dk, dv }` in q's dtype on q's device.
 * @throws InvalidArgumentError (ShapeError, DTypeError, DeviceError) naming the argument; DisposedError;
 *   NotImplementedError for what the CUDA backward lacks (see `backend`). All at the call, before any work.
 */
export function scaledDotProductAttentionBackward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dOut: Tensor,
  options: SdpaBackwardOptions = {}): Promise<AttentionGradients> {
  return sdpaBackwardIn(undefined, q, k, v, out, lse, dOut, options);
}

/** @internal {@link scaledDotProductAttentionBackward} called by another op, which may hold some of the inputs. */
export function sdpaBackwardIn(outer: Hold | undefined, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dOut: Tensor,
  options: SdpaBackwardOptions = {}): Promise<AttentionGradients> {
  try {
    return sdpaBackwardCall(outer, q, k, v, out, lse, dOut, options);
  } catch (err) {
    return Promise.reject(err);
  }
}

function sdpaBackwardCall(outer: Hold | undefined, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dOut: Tensor,
  options: SdpaBackwardOptions): Promise<AttentionGradients> {
  const { signal, enableGQA, dims, saved } = checkBackwardCall(options, KEYS, q, k, v, out, lse, dOut);
  const isCausal = checkBool(options.isCausal, 'options.isCausal');
  const scale = checkScale(options.scale, dims.D);
  let attnMask: Tensor | undefined;
  if (options.attnMask !== undefined) {
    if (isCausal) throw new ShapeError('options.attnMask', 'no attnMask when isCausal is true (pass one or the other, as in PyTorch)', 'both');
    attnMask = checkTensor(options.attnMask, 'options.attnMask');
    checkMask(attnMask, dims, q);
  }
  const backend = backwardBackend(options.backend, q, 'scaledDotProductAttentionBackward',
    { dims, tensors: { q, k, v, out: saved.out, dOut: saved.dOut } });

  let t!: { q: Tensor; k: Tensor; v: Tensor; out: Tensor; lse: Tensor; dOut: Tensor };
  let mask: Tensor | undefined;
  return runOp('scaledDotProductAttentionBackward', signal, outer, (hold) => {
    t = {
      q: hold.tensor(q, 'q'), k: hold.tensor(k, 'k'), v: hold.tensor(v, 'v'),
      out: hold.tensor(saved.out, 'out'), lse: hold.tensor(saved.lse, 'lse'), dOut: hold.tensor(saved.dOut, 'dOut'),
    };
    if (attnMask) mask = broadcastMask(hold.tensor(attnMask, 'options.attnMask'), dims);
  }, async (hold) => {
    if (backend === 'cuda') {
      // A dense mask streams through the kernels as a score mod (as in the forward): bool masks
      // send masked scores to -inf, additive ones add (no gradient is computed for the mask).
      const scoreMod = mask ? maskAsScoreMod(mask) : undefined;
      const g = await runBackward({
        ...t, dims, scale, isCausal, params: {}, hold,
        ...(scoreMod ? { scoreMod, dScore: scoreModGradient(scoreMod, [], []).dScore } : {}),
        ...(signal ? { signal } : {}),
      });
      return { dq: g.dq, dk: g.dk, dv: g.dv };
    }
    const g = await runCpuBackward({ scale, isCausal, ...(mask ? { mask: await hostView(mask) } : {}) }, t, [], signal);
    return { dq: g.dq, dk: g.dk, dv: g.dv };
  });
}
