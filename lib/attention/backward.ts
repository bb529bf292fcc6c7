/**
 * `attention(..., { requiresGrad: true })`: what the forward keeps for the
 * backward (handles on q, k, v, the spec's tensors, out and the LSE) and the
 * `backward(dOut)` function that runs the same spec through the backward ops.
 * @module
 */
import { InvalidArgumentError, NotImplementedError } from '../errors.js';
import { BWD_HEAD_DIMS } from '../cuda/run-backward.js';
import { checkSignal } from '../abort.js';
import { Hold, runOp } from '../ownership.js';
import { Tensor } from '../tensor.js';
import { checkBool, checkKeys } from '../validate.js';
import type { Normalized } from './spec.js';

/** Options of {@link AttentionWithGrad.backward}. */
export interface AttentionBackwardOptions {
  /**
   * Captured float tensors of the spec's score mods whose gradients are wanted:
   * `spec.alibiSlopes` (as a Tensor) or tensors `spec.scoreMod` reads. Flex only;
   * `dCaptured[i]` is the gradient of `gradFor[i]` (deterministic).
   */
  gradFor?: readonly Tensor[];
  /** Keep the saved tensors for another `backward` call (default false: they are freed after a successful one). */
  retainGraph?: boolean;
  /** Cancels the backward (see `flexAttentionBackward`'s `signal`). */
  signal?: AbortSignal;
}

/** Gradients from {@link AttentionWithGrad.backward}. */
export interface AttentionBackwardResult {
  /** `[B, Hq, Sq, D]`. */
  dq: Tensor;
  /** `[B, Hkv, Skv, D]` (summed over each GQA group). */
  dk: Tensor;
  /** `[B, Hkv, Skv, Dv]`. */
  dv: Tensor;
  /** Gradients of `gradFor` (empty without it). */
  dCaptured: Tensor[];
}

/** What `attention(..., { requiresGrad: true })` returns. */
export interface AttentionWithGrad {
  /** `[B, Hq, Sq, Dv]`, as without `requiresGrad`. */
  out: Tensor;
  /** The LSE `[B, Hq, Sq]` f32, when `returnLse` is set too. */
  lse?: Tensor;
  /**
   * Gradients of a loss with respect to q, k, v given `dOut = ∂L/∂out` (out's
   * shape and dtype), through the same implementation, masks and score mods as
   * the forward. Once per forward unless `retainGraph` is set; a failed call
   * (e.g. a wrong dOut) keeps the saved tensors, so it can be retried.
   */
  backward(dOut: Tensor, options?: AttentionBackwardOptions): Promise<AttentionBackwardResult>;
  /** Frees the saved tensors without a backward (idempotent; `backward` then throws). */
  release(): void;
}

/** The backward ops' inputs for one spec: the saved handles plus dOut. */
export interface BackwardRun {
  hold: Hold; q: Tensor; k: Tensor; v: Tensor; out: Tensor; lse: Tensor; dOut: Tensor;
  gradFor: readonly Tensor[]; signal: AbortSignal | undefined;
}

/** Throws when the spec asks for gradients the CUDA backward cannot give (its head dims): before the forward runs. */
export function checkGradBackend(n: Normalized, q: Tensor, D: number): void {
  if (!n.requiresGrad) return;
  if ((n.backend ?? (q.isCuda ? 'cuda' : 'cpu')) === 'cuda' && !BWD_HEAD_DIMS.includes(D)) {
    throw new NotImplementedError(`attention: requiresGrad on CUDA needs a backward kernel for head dimension ${D} `
      + `(there are ${BWD_HEAD_DIMS.join(', ')}); pass backend: 'cpu' to run the forward and the backward there`);
  }
}

/** Claims, at the attention call, what the backward reads (the spec's tensors and the mods' captured ones). */
export function saveInputs(n: Normalized, q: Tensor, k: Tensor, v: Tensor): Hold {
  const saved = new Hold();
  try {
    saved.tensor(q, 'q'); saved.tensor(k, 'k'); saved.tensor(v, 'v');
    if (n.docIds) saved.tensor(n.docIds, 'spec.docIds');
    if (n.slopes instanceof Tensor) saved.tensor(n.slopes, 'spec.alibiSlopes');
    saved.captured(n.maskMod, 'spec.maskMod');
    saved.captured(n.scoreMod, 'spec.scoreMod');
  } catch (e) {
    saved.release();
    throw e;
  }
  return saved;
}

/**
 * The result of a forward with `requiresGrad`: `saved` also holds out and lse
 * from now on; `run` runs the spec's backward op with the saved handles.
 */
export function withBackward(saved: Hold, q: Tensor, k: Tensor, v: Tensor, fwd: { out: Tensor; lse: Tensor }, returnLse: boolean,
  run: (r: BackwardRun) => Promise<AttentionBackwardResult>): AttentionWithGrad {
  const out = saved.tensor(fwd.out, 'out');
  const lse = saved.tensor(fwd.lse, 'lse');
  if (!returnLse) fwd.lse.dispose(); // the saved handle keeps it for the backward only
  let released = false;
  const release = (): void => { released = true; saved.release(); };
  const backward = (dOut: Tensor, options: AttentionBackwardOptions = {}): Promise<AttentionBackwardResult> => {
    try {
      if (released) {
        throw new InvalidArgumentError('backward', 'one backward call per forward (pass retainGraph: true to keep the saved tensors)',
          'a call after the saved tensors were freed');
      }
      if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an object', typeof options);
      checkKeys(options, ['gradFor', 'retainGraph', 'signal']);
      const signal = checkSignal(options.signal);
      const retain = checkBool(options.retainGraph, 'options.retainGraph');
      const p = runOp('attention backward', signal, saved, () => {}, (hold) => run({
        hold, q: saved.get(q) as Tensor, k: saved.get(k) as Tensor, v: saved.get(v) as Tensor, out, lse, dOut,
        gradFor: options.gradFor ?? [], signal,
      }));
      return p.then((g) => { if (!retain) release(); return g; });
    } catch (err) {
      return Promise.reject(err);
    }
  };
  return { out: fwd.out, ...(returnLse ? { lse: fwd.lse } : {}), backward, release };
}
