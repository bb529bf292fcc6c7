/**
 * `flexAttention`: PyTorch's `torch.nn.attention.flex_attention` semantics.
 * A `scoreMod` rewrites each scaled score; a `BlockMask` says which
 * (q-block, kv-block) tiles are visited at all, and its `maskMod` masks
 * elements inside the partial ones.
 * @module
 */
import { InvalidArgumentError, ShapeError } from './errors.js';
import { Tensor } from './tensor.js';
import { BlockMask } from './blockmask.js';
import { ScoreMod, MaskMod, encodeProgram } from './mods/index.js';
import { checkSignal } from './abort.js';
import { runOp, type Hold } from './ownership.js';
import { checkBool, checkKeys, checkQkv, checkScale, resolveBackend, type Backend, type QkvDims } from './validate.js';
import { runCpuAttention } from './cpu-backend.js';
import {
  decodeEnabled, decodeRoute, deviceCaps, maskFacts, planFlex, planSwitches, runDecodeContiguous, runFlex, type KernelOptions,
} from './cuda/index.js';

export type { KernelOptions } from './cuda/index.js';

/** Options of {@link flexAttention}. */
export interface FlexAttentionOptions {
  /** `score_mod(score, b, h, q_idx, kv_idx)`, applied to the scaled score. Default: identity. */
  scoreMod?: ScoreMod;
  /**
   * Block-sparse structure from {@link createBlockMask}. Its `qLen`/`kvLen`
   * must equal `Sq`/`Skv`, its batch/head dims 1 or equal to `B`/`Hq`.
   * Default: every pair attends.
   */
  blockMask?: BlockMask;
  /** Multiplier of q·k; default `1 / sqrt(D)`. */
  scale?: number;
  /** Allow `Hq` to be a multiple of `Hkv` (grouped-query attention). */
  enableGQA?: boolean;
  /** Also return the log-sum-exp per row (f32 `[B, Hq, Sq]`, natural log; −Infinity on fully masked rows). */
  returnLse?: boolean;
  /** Values for the mods' `param(...)` scalars (no recompilation when they change). */
  params?: Record<string, number>;
  /** Kernel tuning (GPU backend). */
  kernelOptions?: KernelOptions;
  /** Force a backend; default: where the tensors live. */
  backend?: Backend;
  /**
   * Cancels the call (e.g. `AbortSignal.timeout(ms)`): an aborted signal
   * rejects with an `AbortError` (code `ABORT_ERR`) before any work starts; an
   * abort in flight (e.g. while a kernel compiles) rejects at once, nothing more
   * is launched, and outputs made meanwhile are freed, never handed out.
   */
  signal?: AbortSignal;
}

const KEYS = ['scoreMod', 'blockMask', 'scale', 'enableGQA', 'returnLse', 'params', 'kernelOptions', 'backend', 'signal'] as const;

/** Output of {@link flexAttention}. */
export interface FlexAttentionResult {
  /** `[B, Hq, Sq, Dv]`, q's dtype and device. */
  out: Tensor;
  /** `[B, Hq, Sq]` f32, natural log; present when `returnLse` is set. */
  lse?: Tensor;
}

/**
 * Flex attention: `softmax(scoreMod(q·kᵀ·scale) masked by blockMask) · v`.
 *
 * @param q Queries `[B, Hq, Sq, D]` (bf16, f16 or f32), strided in B, H, S.
 * @param k Keys `[B, Hkv, Skv, D]`.
 * @param v Values `[B, Hkv, Skv, Dv]`.
 * @returns `{ out, lse? }`. Rows whose every key is masked give 0 and LSE −Infinity.
 *
 * The call holds q, k, v, the tensors the mods capture and the block mask's
 * tensors from the moment it is made: disposing them right after the call
 * (before awaiting it) is safe.
 */
export function flexAttention(q: Tensor, k: Tensor, v: Tensor, options: FlexAttentionOptions = {}): Promise<FlexAttentionResult> {
  return flexIn(undefined, q, k, v, options);
}

/** @internal {@link flexAttention} called by another op, which may hold some of the inputs. */
export function flexIn(outer: Hold | undefined, q: Tensor, k: Tensor, v: Tensor, options: FlexAttentionOptions = {}): Promise<FlexAttentionResult> {
  // Not an async function: its promise would wrap runOp's, a few more microtask hops per call.
  try {
    return flexCall(outer, q, k, v, options);
  } catch (err) {
    return Promise.reject(err);
  }
}

function flexCall(outer: Hold | undefined, q: Tensor, k: Tensor, v: Tensor, options: FlexAttentionOptions): Promise<FlexAttentionResult> {
  checkKeys(options, KEYS);
  const signal = checkSignal(options.signal);
  const enableGQA = checkBool(options.enableGQA, 'options.enableGQA');
  const dims = checkQkv(q, k, v, enableGQA);
  const scale = checkScale(options.scale, dims.D);
  const returnLse = checkBool(options.returnLse, 'options.returnLse');
  const backend = resolveBackend(options.backend, q);
  const scoreMod = options.scoreMod;
  if (scoreMod !== undefined && !(scoreMod instanceof ScoreMod)) {
    throw new InvalidArgumentError('options.scoreMod', 'a ScoreMod (from scoreMod(...) or a built-in such as softcap(30))',
      (scoreMod as unknown) instanceof MaskMod ? 'a MaskMod (pass it to createBlockMask instead)' : typeof scoreMod);
  }
  const blockMask = options.blockMask;
  if (blockMask !== undefined) checkBlockMask(blockMask, dims);
  const params = options.params ?? {};
  if (typeof params !== 'object' || params === null) throw new InvalidArgumentError('options.params', 'an object of numbers', typeof params);
  const maskMod = blockMask?.maskMod ?? undefined;

  let inputs!: { q: Tensor; k: Tensor; v: Tensor };
  return runOp('flexAttention', signal, outer, (hold) => {
    inputs = { q: hold.tensor(q, 'q'), k: hold.tensor(k, 'k'), v: hold.tensor(v, 'v') };
    hold.captured(scoreMod, 'options.scoreMod');
    hold.captured(maskMod, 'options.blockMask.maskMod');
  }, (hold) => {
    if (backend === 'cpu') return (async () => {
      const [scoreHost, maskHost] = await Promise.all([
        scoreMod ? hold.hostTensors(scoreMod) : undefined,
        maskMod ? hold.hostTensors(maskMod) : undefined,
      ]);
      return runCpuAttention({
        scale, isCausal: false, returnLse,
        ...(scoreMod ? { scoreMod: encodeProgram(scoreMod, scoreHost!, params) } : {}),
        ...(maskMod ? { maskMod: encodeProgram(maskMod, maskHost!, params) } : {}),
        ...(blockMask ? { blockMask: cpuBlockMask(blockMask) } : {}),
      }, inputs.q, inputs.k, inputs.v, signal ? { signal } : {});
    })();
    // A few query tokens: the decode kernel, walking the block mask's lists if any (lib/cuda/plan-decode.ts says when).
    const ko = options.kernelOptions;
    if (decodeRoute({
      Sq: dims.Sq, D: dims.D, Dv: dims.Dv, dtype: inputs.q.dtype, blockMask: blockMask !== undefined,
      kernelOptions: ko !== undefined && Object.keys(ko).length > 0, disabled: !decodeEnabled(),
    }).decode) {
      return runDecodeContiguous({
        q: inputs.q, k: inputs.k, v: inputs.v, dims, scale, returnLse, causal: false, scoreMod, params, hold, signal,
        maskMod, blockMask,
      });
    }
    const plan = planFlex({
      dims, mask: blockMask && maskFacts(blockMask, params), kernelOptions: options.kernelOptions,
      caps: deviceCaps(inputs.q.deviceIndex), switches: planSwitches(),
    });
    // Fields written out, not `...inputs` followed by more fields: V8 builds a new
    // hidden class for such a literal on every call (host cost: bench/results/kernel-notes.md).
    return runFlex(plan, {
      q: inputs.q, k: inputs.k, v: inputs.v, dims, scale, returnLse, params, hold,
      ...(scoreMod ? { scoreMod } : {}),
      ...(blockMask ? { blockMask } : {}),
      ...(signal ? { signal } : {}),
    });
  });
}

/** @internal Checks a block mask against the q/k/v dims (shared with the backward). */
export function checkBlockMask(bm: unknown, d: QkvDims): asserts bm is BlockMask {
  if (!(bm instanceof BlockMask)) {
    throw new InvalidArgumentError('options.blockMask', 'a BlockMask from createBlockMask(...)', typeof bm);
  }
  if (bm.qLen !== d.Sq || bm.kvLen !== d.Skv) {
    throw new ShapeError('options.blockMask', `a mask for qLen=${d.Sq}, kvLen=${d.Skv} (the q and k sequence lengths)`,
      `qLen=${bm.qLen}, kvLen=${bm.kvLen}`);
  }
  if (bm.B !== 1 && bm.B !== d.B) throw new ShapeError('options.blockMask', `batch size 1 or ${d.B}`, String(bm.B));
  if (bm.H !== 1 && bm.H !== d.Hq) throw new ShapeError('options.blockMask', `1 or ${d.Hq} heads (q's heads)`, String(bm.H));
}

/** @internal The block mask's arrays as the CPU backend takes them. */
export function cpuBlockMask(bm: BlockMask) {
  const a = bm.host;
  return {
    B: bm.B, H: bm.H, numQBlocks: bm.numQBlocks, numKvBlocks: bm.numKvBlocks,
    qBlock: bm.blockSize[0], kvBlock: bm.blockSize[1],
    kvNumBlocks: a.kvNumBlocks, kvIndices: a.kvIndices,
    fullKvNumBlocks: a.fullKvNumBlocks, fullKvIndices: a.fullKvIndices,
  };
}
