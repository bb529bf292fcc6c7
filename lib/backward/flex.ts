/**
 * `flexAttentionBackward`: the gradients of {@link flexAttention} with respect
 * to q, k, v and the captured tensors of its `scoreMod` named in `gradFor`
 * (PyTorch's flex_attention backward, with deterministic captured-tensor
 * gradients). The score mod's derivatives come from its IR by symbolic
 * differentiation (lib/mods/grad.ts).
 * @module
 */
import { InvalidArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import type { BlockMask } from '../blockmask.js';
import { MaskMod, ScoreMod, encodeProgram } from '../mods/index.js';
import { runOp, type Hold } from '../ownership.js';
import { checkScale } from '../validate.js';
import { checkBlockMask, cpuBlockMask } from '../flex.js';
import { backwardBackend, checkBackwardCall, checkGradFor } from './checks.js';
import { backwardPrograms, gradForSites, scoreModGradient } from './mod-programs.js';
import { gradForCodeFor, planGradFor } from '../cuda/gradfor-plan.js';
import { gradForPathSwitches } from '../cuda/switches.js';
import { deviceCaps } from '../cuda/device-caps.js';
import { runCpuBackward } from './cpu.js';
import { runBackward } from '../cuda/run-backward.js';

/** Options of {@link flexAttentionBackward}: the forward's, plus `gradFor`. */
export interface FlexAttentionBackwardOptions {
  /** The forward's `scoreMod` (the same one: its derivative is taken symbolically). Default: identity. */
  scoreMod?: ScoreMod;
  /** The forward's block mask (its `maskMod` masks inside partial blocks, as in the forward). Default: every pair attends. */
  blockMask?: BlockMask;
  /** The forward's multiplier of q·k; default `1 / sqrt(D)`. */
  scale?: number;
  /** Allow `Hq` to be a multiple of `Hkv` (grouped-query attention); dk and dv are summed over each group's query heads. */
  enableGQA?: boolean;
  /** Values for the mods' `param(...)` scalars (the forward's). */
  params?: Record<string, number>;
  /**
   * Captured float tensors of `scoreMod` whose gradients are wanted (a learnable
   * relative-bias table, ALiBi slopes): `dCaptured[i]` is the gradient of
   * `gradFor[i]`, same shape, dtype and device. Deterministic: the same inputs
   * give the same bits run after run (on CUDA too: per-tile partial sums added
   * in a fixed order, no atomics). Each must be read by `scoreMod` through a
   * differentiable path (else a NoGradientError) and have at most 2^24 elements.
   */
  gradFor?: readonly Tensor[];
  /**
   * Default: where the tensors live. `'cuda'`: the GPU kernels (bf16/f16, head
   * dims 32, 64, 96, 128; block sizes multiples of 64; `gradFor` with f32
   * accumulation, its partial sums at most 1 GiB, else an InvalidArgumentError
   * naming options.gradFor). `'cpu'` with CUDA tensors: the CPU reference on
   * host copies, the gradients copied back to their device.
   */
  backend?: 'cpu' | 'cuda';
  /**
   * Cancels the call (e.g. `AbortSignal.timeout(ms)`): an aborted signal rejects
   * with an `AbortError` before any work starts; an abort in flight stops the
   * native job at its next row, and gradients made meanwhile are freed.
   */
  signal?: AbortSignal;
}

const KEYS = ['scoreMod', 'blockMask', 'scale', 'enableGQA', 'params', 'gradFor', 'backend', 'signal'] as const;

/** Gradients from {@link flexAttentionBackward}. */
export interface FlexAttentionGradients {
  /** `[B, Hq, Sq, D]`, q's dtype and device. */
  dq: Tensor;
  /** `[B, Hkv, Skv, D]` (summed over the query heads of each KV head under GQA). */
  dk: Tensor;
  /** `[B, Hkv, Skv, Dv]`. */
  dv: Tensor;
  /** `dCaptured[i]`: the gradient of `gradFor[i]` (its shape, dtype and device); empty without `gradFor`. */
  dCaptured: Tensor[];
}

/**
 * Backward pass of flex attention: gradients of a loss `L` with respect to q,
 * k, v (and the `gradFor` tensors) given `dOut = ∂L/∂out`.
 *
 * ```ts
 * const { out, lse } = await flexAttention(q, k, v, { scoreMod: bias, blockMask, returnLse: true });
 * const { dq, dk, dv, dCaptured } = await flexAttentionBackward(q, k, v, out, lse!, dOut,
 *   { scoreMod: bias, blockMask, gradFor: [table] });
 * ```
 * Rows whose every key is masked (LSE −Infinity) get zero gradients; a NaN in
 * the inputs propagates as PyTorch's does.
 *
 * @param q Queries `[B, Hq, Sq, D]` (bf16, f16 or f32) as given to the forward.
 * @param k Keys `[B, Hkv, Skv, D]`.
 * @param v Values `[B, Hkv, Skv, Dv]`.
 * @param out The forward's output `[B, Hq, Sq, Dv]` (q's dtype).
 * @param lse The forward's log-sum-exp `[B, Hq, Sq]` f32 (`returnLse: true`).
 * @param dOut Gradient of the loss with respect to `out` (out's shape and dtype).
 * @param options The forward's options plus `gradFor`; see {@link FlexAttentionBackwardOptions}.
 * @returns `{ dq, dk, dv, dCaptured }` in the inputs' dtype (captured gradients in their tensor's dtype).
 * @throws InvalidArgumentError (ShapeError, DTypeError, DeviceError) naming the argument; DisposedError;
 *   NoGradientError when `score` or a `gradFor` tensor reaches the mod's result only through comparisons,
 *   indices, `floorDiv` or `toInt`; NotImplementedError for what the CUDA backward lacks (see `backend`). All at the call, before any work.
 *
 * The call holds its tensors from the moment it is made: disposing them right
 * after the call (before awaiting it) is safe.
 */
export function flexAttentionBackward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dOut: Tensor,
  options: FlexAttentionBackwardOptions = {}): Promise<FlexAttentionGradients> {
  return flexBackwardIn(undefined, q, k, v, out, lse, dOut, options);
}

/** @internal {@link flexAttentionBackward} called by another op, which may hold some of the inputs. */
export function flexBackwardIn(outer: Hold | undefined, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dOut: Tensor,
  options: FlexAttentionBackwardOptions = {}): Promise<FlexAttentionGradients> {
  try {
    return flexBackwardCall(outer, q, k, v, out, lse, dOut, options);
  } catch (err) {
    return Promise.reject(err);
  }
}

function flexBackwardCall(outer: Hold | undefined, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dOut: Tensor,
  options: FlexAttentionBackwardOptions): Promise<FlexAttentionGradients> {
  const { signal, enableGQA, dims, saved } = checkBackwardCall(options, KEYS, q, k, v, out, lse, dOut);
  const scale = checkScale(options.scale, dims.D);
  const scoreMod = options.scoreMod;
  if (scoreMod !== undefined && !(scoreMod instanceof ScoreMod)) {
    throw new InvalidArgumentError('options.scoreMod', 'a ScoreMod (the forward\'s)',
      (scoreMod as unknown) instanceof MaskMod ? 'a MaskMod (pass the forward\'s block mask instead)' : typeof scoreMod);
  }
  const blockMask = options.blockMask;
  if (blockMask !== undefined) checkBlockMask(blockMask, dims);
  const maskMod = blockMask?.maskMod ?? undefined;
  const params = options.params ?? {};
  if (typeof params !== 'object' || params === null) throw new InvalidArgumentError('options.params', 'an object of numbers', typeof params);
  const gradFor = checkGradFor(options.gradFor, scoreMod, maskMod);
  const backend = backwardBackend(options.backend, q, 'flexAttentionBackward',
    { dims, blockMask, gradFor, tensors: { q, k, v, out: saved.out, dOut: saved.dOut } });
  // Symbolic derivatives now, so a mod without a gradient fails at the call.
  const grad = scoreMod ? scoreModGradient(scoreMod, gradFor, gradFor.map((_, i) => `options.gradFor[${i}]`)) : undefined;
  // CUDA gradFor: its sites and partial buffers planned now, so a buffer over the bound fails at the call.
  // The plan also picks each site's accumulation (uniform / diagonal / general), which the kernel is generated with.
  const gfSites = backend === 'cuda' && grad && gradFor.length > 0 ? gradForSites(grad, gradFor) : undefined;
  const gfPlan = gfSites ? planGradFor(gfSites, gradFor.map((g) => g.numel), dims, 'options.gradFor',
    { ...gradForPathSwitches(), smemPerBlockOptin: deviceCaps(q.deviceIndex).smemPerBlockOptin }) : undefined;
  const gfCode = gfSites ? gradForCodeFor(gfSites, gfPlan!) : undefined;

  let t!: { q: Tensor; k: Tensor; v: Tensor; out: Tensor; lse: Tensor; dOut: Tensor };
  return runOp('flexAttentionBackward', signal, outer, (hold) => {
    t = {
      q: hold.tensor(q, 'q'), k: hold.tensor(k, 'k'), v: hold.tensor(v, 'v'),
      out: hold.tensor(saved.out, 'out'), lse: hold.tensor(saved.lse, 'lse'), dOut: hold.tensor(saved.dOut, 'dOut'),
    };
    hold.captured(scoreMod, 'options.scoreMod');
    hold.captured(maskMod, 'options.blockMask.maskMod');
  }, async (hold) => {
    if (backend === 'cuda') {
      const g = await runBackward({
        ...t, dims, scale, isCausal: false, params, hold,
        ...(scoreMod ? { scoreMod, dScore: grad!.dScore } : {}),
        ...(gfCode ? { gradFor: { code: gfCode, plan: gfPlan!, tensors: gradFor.map((x) => hold.get(x) as Tensor) } } : {}),
        ...(blockMask ? { blockMask } : {}),
        ...(signal ? { signal } : {}),
      });
      return g;
    }
    const [scoreHost, maskHost] = await Promise.all([
      scoreMod ? hold.hostTensors(scoreMod) : [],
      maskMod ? hold.hostTensors(maskMod) : undefined,
    ]);
    const progs = backwardPrograms(scoreMod, grad, scoreHost, gradFor, params);
    return runCpuBackward({
      scale, isCausal: false,
      ...(progs.scoreMod ? { scoreMod: progs.scoreMod, scoreGrad: progs.scoreGrad! } : {}),
      ...(maskMod ? { maskMod: encodeProgram(maskMod, maskHost!, params) } : {}),
      ...(blockMask ? { blockMask: cpuBlockMask(blockMask) } : {}),
      captured: progs.captured,
    }, t, gradFor.map((g) => hold.get(g) as Tensor), signal);
  });
}
