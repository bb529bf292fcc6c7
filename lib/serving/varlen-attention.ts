/**
 * `varlenAttention`: attention over packed sequences of different lengths
 * without a cache or padding (FlashAttention's `flash_attn_varlen_func`):
 * sequence s is q rows `cuSeqlensQ[s] .. cuSeqlensQ[s+1]-1` against k/v rows
 * `cuSeqlensK[s] .. cuSeqlensK[s+1]-1`, and no work is spent between sequences.
 * @module
 */
import { checkSignal } from '../abort.js';
import { DTypeError, DeviceError, InvalidArgumentError, ShapeError } from '../errors.js';
import { describeValue } from '../messages.js';
import type { MaskMod, ScoreMod } from '../mods/index.js';
import type { AttentionWithLse } from '../sdpa.js';
import { Tensor } from '../tensor.js';
import { checkBool, checkKeys, checkScale, checkTensor, resolveBackend, type Backend } from '../validate.js';
import { varlenLayout, varlenTables } from './paged-kv.js';
import { checkMods, runRagged } from './ragged-op.js';

/** Cumulative sequence lengths: `numSeqs + 1` integers from 0, non-decreasing, on the host. */
export type CuSeqlens = readonly number[] | Int32Array | Tensor;

/** Options of {@link varlenAttention}. */
export interface VarlenAttentionOptions {
  /** Offsets of each sequence's query rows in q (`numSeqs + 1` values, 0 first, `q.shape[0]` last). */
  cuSeqlensQ: CuSeqlens;
  /** Offsets of each sequence's key/value rows in k and v (`numSeqs + 1` values, 0 first, `k.shape[0]` last). */
  cuSeqlensK: CuSeqlens;
  /**
   * Causal within each sequence, aligned to the end as in FlashAttention ≥ 2.1
   * (default false): with m queries and n keys, query i sits at position
   * n − m + i and sees keys ≤ it (self-attention, m = n: the usual lower triangle).
   */
  isCausal?: boolean;
  /** `score_mod(score, b, h, q, kv)`: `b` the sequence, `q` the query's position (n − m + i), `kv` the key's index in its sequence. */
  scoreMod?: ScoreMod;
  /** `mask_mod(b, h, q, kv)` with the same positions. */
  maskMod?: MaskMod;
  /** Multiplier of q·k; default `1 / sqrt(D)`. */
  scale?: number;
  /** Also return the log-sum-exp per row (f32 `[Tq, Hq]`). */
  returnLse?: boolean;
  /** Values for the mods' `param(...)` scalars. */
  params?: Record<string, number>;
  /** Force a backend; default: where q lives. */
  backend?: Backend;
  /** Cancels the call. */
  signal?: AbortSignal;
}

const KEYS = ['cuSeqlensQ', 'cuSeqlensK', 'isCausal', 'scoreMod', 'maskMod', 'scale', 'returnLse', 'params', 'backend', 'signal'] as const;

function hostOffsets(value: unknown, argument: string, total: number, totalName: string): Int32Array {
  let a: Int32Array;
  if (value instanceof Tensor) {
    value.assertAlive(argument);
    if (value.dtype !== 'i32' || value.ndim !== 1) throw new DTypeError(argument, 'a 1-D i32 tensor', `${value.dtype} of shape [${value.shape.join(', ')}]`);
    if (!value.isCpu) throw new DeviceError(argument, 'offsets on the host (an array, Int32Array or cpu tensor): the launch is planned from them', value.device);
    const s = value.hostStorage();
    a = Int32Array.from({ length: value.shape[0]! }, (_, i) => s[value.offset + i * value.strides[0]!]!);
  } else if (Array.isArray(value) || value instanceof Int32Array) {
    a = new Int32Array(value.length);
    for (let i = 0; i < value.length; i++) {
      const x: unknown = value[i];
      if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > 0x7fffffff) {
        throw new InvalidArgumentError(`${argument}[${i}]`, 'a non-negative integer offset', describeValue(x));
      }
      a[i] = x;
    }
  } else {
    throw new InvalidArgumentError(argument, 'cumulative sequence lengths (an array, Int32Array or i32 cpu tensor)', describeValue(value));
  }
  if (a.length < 1) throw new ShapeError(argument, 'numSeqs + 1 offsets (at least [0])', 'an empty array');
  if (a[0] !== 0) throw new InvalidArgumentError(argument, 'offsets starting at 0', `${a[0]} first`);
  for (let i = 1; i < a.length; i++) {
    if (a[i]! < a[i - 1]!) throw new InvalidArgumentError(argument, 'non-decreasing offsets', `${a[i - 1]} then ${a[i]} at index ${i}`);
  }
  if (a[a.length - 1] !== total) throw new ShapeError(argument, `a last offset of ${total} (${totalName})`, String(a[a.length - 1]));
  return a;
}

/**
 * Attention of packed q `[Tq, Hq, D]` over packed k, v `[Tk, Hkv, D]` (same
 * dtype and device; `Hq` a multiple of `Hkv`). Returns `[Tq, Hq, D]` (or
 * `{ out, lse }` with `returnLse`). Rows with no visible key give 0 and LSE −Infinity.
 */
export async function varlenAttention(q: Tensor, k: Tensor, v: Tensor, options: VarlenAttentionOptions & { returnLse?: false }): Promise<Tensor>;
export async function varlenAttention(q: Tensor, k: Tensor, v: Tensor, options: VarlenAttentionOptions & { returnLse: true }): Promise<AttentionWithLse>;
export async function varlenAttention(q: Tensor, k: Tensor, v: Tensor, options: VarlenAttentionOptions): Promise<Tensor | AttentionWithLse> {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError('options', 'an object with cuSeqlensQ and cuSeqlensK', describeValue(options));
  }
  checkKeys(options, KEYS);
  const signal = checkSignal(options.signal);
  const tq = checkTensor(q, 'q'), tk = checkTensor(k, 'k'), tv = checkTensor(v, 'v');
  for (const [name, t] of [['q', tq], ['k', tk], ['v', tv]] as const) {
    if (t.ndim !== 3) throw new ShapeError(name, 'a 3-D tensor [T, H, D] of packed tokens', `shape [${t.shape.join(', ')}]`);
    if (t.dtype !== 'bf16' && t.dtype !== 'f16' && t.dtype !== 'f32') throw new DTypeError(name, 'dtype bf16, f16 or f32', t.dtype);
  }
  if (tk.dtype !== tq.dtype) throw new DTypeError('k', `dtype ${tq.dtype} (same as q)`, tk.dtype);
  if (tv.dtype !== tq.dtype) throw new DTypeError('v', `dtype ${tq.dtype} (same as q)`, tv.dtype);
  if (tk.device !== tq.device) throw new DeviceError('k', `device ${tq.device} (same as q)`, tk.device);
  if (tv.device !== tq.device) throw new DeviceError('v', `device ${tq.device} (same as q)`, tv.device);
  const [Tq, Hq, D] = tq.shape as [number, number, number];
  const [Tk, Hkv, Dk] = tk.shape as [number, number, number];
  if (Dk !== D) throw new ShapeError('k', `head dim ${D} (k.shape[2] must equal q.shape[2])`, String(Dk));
  if (tv.shape[0] !== Tk || tv.shape[1] !== Hkv || tv.shape[2] !== D) {
    throw new ShapeError('v', `shape [${Tk}, ${Hkv}, ${D}] (same as k)`, `[${tv.shape.join(', ')}]`);
  }
  if (Hkv === 0 || Hq % Hkv !== 0) throw new ShapeError('k', `a head count dividing q's ${Hq} heads (GQA)`, String(Hkv));
  if (D === 0) throw new ShapeError('q', 'a non-zero head dimension', '0');
  const cuQ = hostOffsets(options.cuSeqlensQ, 'options.cuSeqlensQ', Tq, 'q.shape[0]');
  const cuK = hostOffsets(options.cuSeqlensK, 'options.cuSeqlensK', Tk, 'k.shape[0]');
  if (cuQ.length !== cuK.length) {
    throw new ShapeError('options.cuSeqlensK', `${cuQ.length} offsets (as many sequences as options.cuSeqlensQ)`, String(cuK.length));
  }
  const causal = checkBool(options.isCausal, 'options.isCausal');
  const returnLse = checkBool(options.returnLse, 'options.returnLse');
  const scale = checkScale(options.scale, D);
  const backend = resolveBackend(options.backend, tq);
  const mods = checkMods(options);

  // One set of token/head strides serves k and v (last dim contiguous); the
  // CPU reference reads GPU tensors through a contiguous host copy.
  const sameLayout = tk.strides[2] === 1 && tv.strides[2] === 1 && tk.strides[0] === tv.strides[0] && tk.strides[1] === tv.strides[1];
  const copy = !sameLayout || (backend === 'cpu' && tk.isCuda && !(tk.isContiguous && tv.isContiguous));
  const kk = copy ? tk.contiguous() : tk, vv = copy ? tv.contiguous() : tv;
  const call = runRagged({
    what: 'varlenAttention', q: tq, k: kk, v: vv, layout: varlenLayout(kk), tables: varlenTables(cuQ, cuK),
    numKvHeads: Hkv, scale, causal, returnLse, ...mods, backend, signal,
  });
  // The call took its own handles on the copies when it started.
  if (kk !== tk) kk.dispose();
  if (vv !== tv) vv.dispose();
  return call;
}
