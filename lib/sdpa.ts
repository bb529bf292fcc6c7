/**
 * `scaledDotProductAttention`: PyTorch's `F.scaled_dot_product_attention`
 * semantics (causal or dense bool/additive mask, scale, GQA).
 * @module
 */
import { DTypeError, DeviceError, ShapeError } from './errors.js';
import { Tensor } from './tensor.js';
import { checkBool, checkKeys, checkQkv, checkScale, checkTensor, resolveBackend, type Backend, type QkvDims } from './validate.js';
import { hostView, runCpuAttention } from './cpu-backend.js';
import { decodeEnabled, decodeRoute, deviceCaps, planSdpa, planSwitches, runDecodeContiguous, runSdpa } from './cuda/index.js';
import { maskAsScoreMod } from './cuda/mod-code.js';
import { checkSignal } from './abort.js';
import { runOp, type Hold } from './ownership.js';

/** Options of {@link scaledDotProductAttention}. */
export interface SdpaOptions {
  /**
   * Causal masking, aligned top-left like PyTorch (query i sees keys 0…i);
   * cannot be combined with `attnMask`.
   */
  isCausal?: boolean;
  /**
   * Dense mask broadcastable to `[B, Hq, Sq, Skv]`: `bool` (true = attend) or
   * a float tensor added to the scaled scores (use -Infinity to mask).
   */
  attnMask?: Tensor;
  /** Multiplier of q·k; default `1 / sqrt(D)`. */
  scale?: number;
  /** Allow `Hq` to be a multiple of `Hkv` (grouped-query attention). */
  enableGQA?: boolean;
  /** Also return the log-sum-exp of each row (f32 `[B, Hq, Sq]`, natural log). */
  returnLse?: boolean;
  /** Force a backend; default: where the tensors live. */
  backend?: Backend;
  /**
   * Cancels the call (e.g. `AbortSignal.timeout(ms)`): an aborted signal
   * rejects with an `AbortError` (code `ABORT_ERR`) before any work starts; an
   * abort in flight rejects at once, and outputs made meanwhile are freed,
   * never handed out.
   */
  signal?: AbortSignal;
}

const KEYS = ['isCausal', 'attnMask', 'scale', 'enableGQA', 'returnLse', 'backend', 'signal'] as const;

/** Result when `returnLse` is set. */
export interface AttentionWithLse { out: Tensor; lse: Tensor }

/**
 * Scaled dot-product attention: `softmax(q·kᵀ·scale + mask) · v`.
 *
 * @param q Queries `[B, Hq, Sq, D]` (bf16, f16 or f32). Any strides for B, H, S;
 *          e.g. a `[B, S, H, D]` buffer viewed with `transpose(1, 2)`.
 * @param k Keys `[B, Hkv, Skv, D]`, same dtype and device.
 * @param v Values `[B, Hkv, Skv, Dv]`.
 * @returns Output `[B, Hq, Sq, Dv]` in q's dtype on q's device (or `{out, lse}`).
 *          Rows with every key masked give 0 (and LSE −Infinity).
 *
 * The call holds q, k, v and `attnMask` from the moment it is made: disposing
 * them right after the call (before awaiting it) is safe.
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, options?: SdpaOptions & { returnLse?: false }): Promise<Tensor>;
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, options: SdpaOptions & { returnLse: true }): Promise<AttentionWithLse>;
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, options: SdpaOptions = {}): Promise<Tensor | AttentionWithLse> {
  return sdpaIn(undefined, q, k, v, options);
}

/** @internal {@link scaledDotProductAttention} called by another op, which may hold some of the inputs. */
export function sdpaIn(outer: Hold | undefined, q: Tensor, k: Tensor, v: Tensor, options: SdpaOptions = {}): Promise<Tensor | AttentionWithLse> {
  // Not an async function: its promise would wrap runOp's, a few more microtask hops per call.
  try {
    return sdpaCall(outer, q, k, v, options);
  } catch (err) {
    return Promise.reject(err);
  }
}

function sdpaCall(outer: Hold | undefined, q: Tensor, k: Tensor, v: Tensor, options: SdpaOptions): Promise<Tensor | AttentionWithLse> {
  checkKeys(options, KEYS);
  const signal = checkSignal(options.signal);
  const enableGQA = checkBool(options.enableGQA, 'options.enableGQA');
  const dims = checkQkv(q, k, v, enableGQA);
  const isCausal = checkBool(options.isCausal, 'options.isCausal');
  const returnLse = checkBool(options.returnLse, 'options.returnLse');
  const scale = checkScale(options.scale, dims.D);
  const backend = resolveBackend(options.backend, q);
  let attnMask: Tensor | undefined;
  if (options.attnMask !== undefined) {
    if (isCausal) throw new ShapeError('options.attnMask', 'no attnMask when isCausal is true (pass one or the other, as in PyTorch)', 'both');
    attnMask = checkTensor(options.attnMask, 'options.attnMask');
    checkMask(attnMask, dims, q);
  }
  let inputs!: { q: Tensor; k: Tensor; v: Tensor; mask?: Tensor };
  return runOp('scaledDotProductAttention', signal, outer, (hold) => {
    inputs = { q: hold.tensor(q, 'q'), k: hold.tensor(k, 'k'), v: hold.tensor(v, 'v') };
    if (attnMask) inputs.mask = broadcastMask(hold.tensor(attnMask, 'options.attnMask'), dims);
  }, () => {
    const { mask } = inputs;
    if (backend === 'cpu') return (async () => {
      const res = await runCpuAttention(
        { scale, isCausal, returnLse, ...(mask ? { mask: await hostView(mask) } : {}) }, inputs.q, inputs.k, inputs.v,
        signal ? { signal } : {});
      return returnLse ? { out: res.out, lse: res.lse! } : res.out;
    })();
    const done = (res: { out: Tensor; lse?: Tensor }) => (returnLse ? { out: res.out, lse: res.lse! } : res.out);
    if (decodeRoute({
      Sq: dims.Sq, D: dims.D, Dv: dims.Dv, dtype: inputs.q.dtype, blockMask: false, kernelOptions: false, disabled: !decodeEnabled(),
    }).decode) {
      // A few query tokens: the decode kernel (top-left causal as PyTorch; a dense mask streams through a score mod).
      return runDecodeContiguous({
        q: inputs.q, k: inputs.k, v: inputs.v, dims, scale, returnLse, causal: isCausal, params: {}, signal,
        scoreMod: mask ? maskAsScoreMod(mask) : undefined,
      }).then(done);
    }
    const plan = planSdpa(dims, isCausal, deviceCaps(inputs.q.deviceIndex), planSwitches(), mask !== undefined);
    // No `...inputs` spread (see flex.ts).
    return runSdpa(plan, { q: inputs.q, k: inputs.k, v: inputs.v, scale, returnLse, dims, ...(mask ? { mask } : {}), ...(signal ? { signal } : {}) })
      .then(done);
  });
}

/** @internal Checks an attention mask against q and the dims [B, Hq, Sq, Skv] it broadcasts to. */
export function checkMask(mask: Tensor, d: QkvDims, q: Tensor): void {
  if (mask.dtype !== 'bool' && mask.dtype !== q.dtype && mask.dtype !== 'f32') {
    throw new DTypeError('options.attnMask', `dtype bool, f32 or ${q.dtype}`, mask.dtype);
  }
  if (mask.device !== q.device) throw new DeviceError('options.attnMask', `device ${q.device} (same as q)`, mask.device);
  const target = [d.B, d.Hq, d.Sq, d.Skv];
  if (mask.ndim > 4 || mask.ndim < 1) {
    throw new ShapeError('options.attnMask', `a shape broadcastable to [${target.join(', ')}]`, `[${mask.shape.join(', ')}]`);
  }
  const lead = 4 - mask.ndim;
  for (let i = 0; i < mask.ndim; i++) {
    const s = mask.shape[i]!, t = target[lead + i]!;
    if (s !== t && s !== 1) {
      throw new ShapeError('options.attnMask', `a shape broadcastable to [${target.join(', ')}]`, `[${mask.shape.join(', ')}]`);
    }
  }
}

/** @internal A stride-0 broadcast view of a checked mask, shape [B, Hq, Sq, Skv]. */
export function broadcastMask(mask: Tensor, d: QkvDims): Tensor {
  return mask.expand(d.B, d.Hq, d.Sq, d.Skv);
}
