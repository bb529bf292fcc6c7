/**
 * An op owns its inputs from the moment it is called. `runOp` takes the
 * op's claims synchronously (before its first await): q/k/v, masks, the
 * tensors its mods capture, block-mask tensors. Each claim is a handle of its
 * own on the tensor's memory (`Tensor.retain`), so the user may dispose an
 * input right after the call: the user's tensor is unusable at once, the
 * memory goes back when the op lets go of it, after its work is enqueued on
 * the device's stream (GPU) or the native job has read it (CPU).
 *
 * Mods capture the user's tensor objects, and caches keyed on them (kernel
 * sources, schedules) must keep doing so; the op reads a captured tensor's
 * data through its {@link Hold} instead (`hold.get(t)`, `hold.maskMod(mod)`).
 * Internal: not exported from the package.
 * @module
 */
import { abortable, abortError } from './abort.js';
import { Tensor, contiguousStrides } from './tensor.js';
import type { CapturedTensorLike, MaskMod } from './mods/ir.js';
import { retargetMask } from './mods/transform.js';
import type { HostTensor } from './mods/interpret.js';

/**
 * Told of every tensor an op claims while set: a CUDA graph capture
 * (lib/serving/capture-state.ts) pins the memory of what captured ops read.
 */
let claimObserver: ((t: Tensor) => void) | undefined;

/** @internal Sets (or clears) the {@link claimObserver}. */
export function setClaimObserver(fn: ((t: Tensor) => void) | undefined): void {
  claimObserver = fn;
}

/** The handles one op call holds; `outer` is the op that called this one (e.g. `attention` → `flexAttention`). */
export class Hold {
  readonly #handles = new Map<CapturedTensorLike, Tensor>();
  readonly #outer: Hold | undefined;

  constructor(outer?: Hold) {
    this.#outer = outer;
  }

  /**
   * Claims `t` for this call and returns the call's handle on it (throws a
   * DisposedError naming `argument` when `t` is already disposed). A tensor an
   * outer call holds is claimed through that call's handle.
   */
  tensor(t: Tensor, argument: string): Tensor {
    const own = this.#handles.get(t);
    if (own) return own;
    const h = (this.#outer?.lookup(t) ?? t).retain(argument);
    this.#handles.set(t, h);
    claimObserver?.(h);
    return h;
  }

  /** Claims every Tensor a mod captures (others are read through their own `toHost`). */
  captured(mod: { readonly tensors: readonly CapturedTensorLike[] } | null | undefined, argument: string): void {
    mod?.tensors.forEach((t, i) => {
      if (t instanceof Tensor) this.tensor(t, `${argument} captured tensor #${i}`);
    });
  }

  /** The handle of `t` held by this call or an outer one, if any. */
  lookup(t: CapturedTensorLike): Tensor | undefined {
    return this.#handles.get(t) ?? this.#outer?.lookup(t);
  }

  /** What the call reads for `t`: its handle when held, else `t` itself (e.g. a tensor the call made). */
  get<T extends CapturedTensorLike>(t: T): T | Tensor {
    return this.lookup(t) ?? t;
  }

  /**
   * `mod` reading the held handles of its captured tensors: for evaluators
   * that read `mod.tensors` (host closures, the classification kernel). Use
   * it for one evaluation, never to build something cached: the handles go
   * when the call ends.
   */
  maskMod(mod: MaskMod): MaskMod {
    const map = new Map<CapturedTensorLike, CapturedTensorLike>();
    for (const t of mod.tensors) {
      const h = this.lookup(t);
      if (h) map.set(t, h);
    }
    return retargetMask(mod, map);
  }

  /** Host data of a mod's captured tensors in slot order (as `bindHost`, read through the held handles). */
  hostTensors(mod: { readonly tensors: readonly CapturedTensorLike[] }): Promise<HostTensor[]> {
    return Promise.all(mod.tensors.map(async (t) => {
      const h = this.get(t);
      return { data: await h.toHost(), dtype: h.dtype, shape: [...h.shape], strides: contiguousStrides(h.shape) };
    }));
  }

  /** Lets go of every handle (the memory goes back where nothing else holds it). Idempotent. */
  release(): void {
    for (const h of this.#handles.values()) h.dispose();
    this.#handles.clear();
  }
}

/** Frees what an op made when nobody will receive it: a Tensor, a BlockMask, `{ out, lse }` or `{ dq, dk, dv, dCaptured: [...] }`. */
export function discardResult(value: unknown): void {
  if (value === null || typeof value !== 'object') return;
  if (typeof (value as { dispose?: unknown }).dispose === 'function') {
    (value as { dispose(): void }).dispose();
    return;
  }
  for (const v of Object.values(value)) {
    if (v !== null && typeof v === 'object' && typeof (v as { dispose?: unknown }).dispose === 'function') (v as { dispose(): void }).dispose();
    else if (Array.isArray(v)) v.forEach(discardResult); // e.g. a backward's dCaptured
  }
}

/**
 * Runs one call of op `what`. An already-aborted `signal` rejects with an
 * AbortError before anything is claimed or started. `claim` runs at once and
 * takes the call's handles; `work` starts at once too (so everything before
 * its first await also runs inside the caller's call) and reads the inputs
 * through those handles, which are let go when it settles. An abort while
 * `work` is in flight rejects at once; `work` sees the signal at its next
 * checkpoint, and whatever it still returns is freed, never handed out.
 */
export function runOp<T>(what: string, signal: AbortSignal | undefined, outer: Hold | undefined,
  claim: (hold: Hold) => void, work: (hold: Hold) => Promise<T>): Promise<T> {
  if (signal?.aborted) return Promise.reject(abortError(what, signal));
  const hold = new Hold(outer);
  let done: Promise<T>;
  try {
    claim(hold);
    done = work(hold);
  } catch (err) {
    hold.release();
    return Promise.reject(err);
  }
  done.then(() => hold.release(), () => hold.release());
  return abortable(done, signal, what, discardResult);
}
