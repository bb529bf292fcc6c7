/**
 * `pagedAttention`: each sequence's query tokens attend to its tokens in a
 * {@link KvCache}, for a whole ragged batch in one call (one launch on the
 * GPU). Decoding is `queryTokens: 1` per sequence; speculative decoding and
 * chunked prefill are the same call with more query tokens.
 * @module
 */
import { checkSignal } from '../abort.js';
import { DTypeError, DeviceError, InvalidArgumentError, ShapeError } from '../errors.js';
import { describeValue } from '../messages.js';
import type { MaskMod, ScoreMod } from '../mods/index.js';
import type { AttentionWithLse } from '../sdpa.js';
import type { Tensor } from '../tensor.js';
import { checkBool, checkKeys, checkScale, checkTensor, resolveBackend, type Backend } from '../validate.js';
import { KvCache, type SequenceId } from './kv-cache.js';
import { captureOn } from './capture-state.js';
import { checkMods, runRagged } from './ragged-op.js';

/** Options of {@link pagedAttention}. */
export interface PagedAttentionOptions {
  /** The sequences of the batch, in the order of q's tokens (a sequence may appear more than once). */
  seqs: readonly SequenceId[];
  /**
   * Query tokens of each sequence (q's rows, packed in the order of `seqs`);
   * they must add up to `q.shape[0]`, and each is at most the sequence's
   * cached length: the query tokens are its last ones (append them first).
   */
  queryTokens: readonly number[];
  /**
   * Causal, aligned to the end (default true): query token i of a sequence
   * with n cached tokens and m query tokens sits at position n − m + i and
   * sees positions ≤ its own. `false`: every query token sees all n.
   */
  causal?: boolean;
  /**
   * `score_mod(score, b, h, q, kv)` with logical positions: `b` the
   * sequence's index in `seqs`, `h` the query head, `q` the query token's
   * absolute position, `kv` the key's position in its sequence. Default: identity.
   */
  scoreMod?: ScoreMod;
  /** `mask_mod(b, h, q, kv)` with the same logical positions (e.g. `slidingWindow(w)`), applied on top of `causal`. */
  maskMod?: MaskMod;
  /** Multiplier of q·k; default `1 / sqrt(headDim)`. */
  scale?: number;
  /** Also return the log-sum-exp per row (f32 `[T, Hq]`, natural log; −Infinity on fully masked rows). */
  returnLse?: boolean;
  /** Values for the mods' `param(...)` scalars. */
  params?: Record<string, number>;
  /** Force a backend; default: where the cache lives. */
  backend?: Backend;
  /** Cancels the call: an aborted signal rejects with an AbortError (nothing is handed out). */
  signal?: AbortSignal;
}

const KEYS = ['seqs', 'queryTokens', 'causal', 'scoreMod', 'maskMod', 'scale', 'returnLse', 'params', 'backend', 'signal'] as const;

/**
 * Attention of packed queries `q` `[T, Hq, D]` (the cache's dtype and device,
 * `Hq` a multiple of the cache's `numKvHeads`, `D` its `headDim`) over the
 * cached tokens of `options.seqs`. Returns `[T, Hq, D]` (or `{ out, lse }`
 * with `returnLse`). Rows whose every key is masked give 0 and LSE −Infinity.
 *
 * The call reads the sequences' lengths and pages when it is made: appends
 * and frees after it do not change what it computes.
 */
export async function pagedAttention(q: Tensor, cache: KvCache, options: PagedAttentionOptions & { returnLse?: false }): Promise<Tensor>;
export async function pagedAttention(q: Tensor, cache: KvCache, options: PagedAttentionOptions & { returnLse: true }): Promise<AttentionWithLse>;
export async function pagedAttention(q: Tensor, cache: KvCache, options: PagedAttentionOptions): Promise<Tensor | AttentionWithLse> {
  return pagedAttentionIn(q, cache, options, false);
}

/**
 * @internal {@link pagedAttention}; `shortShards` lets a sequence hold fewer
 * cached tokens than query tokens (a KV shard of a longer sequence:
 * lib/parallel/sharded-kv.ts, which passes `causal: false` and masks by global
 * positions itself). Query token i of such a sequence then has the mods'
 * position n − m + i (negative where n < m), which the shard's mods shift.
 */
export async function pagedAttentionIn(q: Tensor, cache: KvCache, options: PagedAttentionOptions, shortShards: boolean): Promise<Tensor | AttentionWithLse> {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError('options', 'an object with seqs and queryTokens', describeValue(options));
  }
  checkKeys(options, KEYS);
  const signal = checkSignal(options.signal);
  if (!(cache instanceof KvCache)) throw new InvalidArgumentError('cache', 'a KvCache', describeValue(cache));
  const tq = checkTensor(q, 'q');
  if (tq.ndim !== 3) throw new ShapeError('q', 'a 3-D tensor [T, Hq, D] (query tokens packed in the order of seqs)', `shape [${tq.shape.join(', ')}]`);
  const [T, Hq, D] = tq.shape as [number, number, number];
  if (tq.dtype !== cache.dtype) throw new DTypeError('q', `dtype ${cache.dtype} (the cache's)`, tq.dtype);
  if (tq.device !== cache.device) throw new DeviceError('q', `device ${cache.device} (the cache's)`, tq.device);
  if (D !== cache.headDim) throw new ShapeError('q', `head dim ${cache.headDim} (the cache's headDim)`, String(D));
  if (Hq === 0 || Hq % cache.numKvHeads !== 0) {
    throw new ShapeError('q', `a head count that is a multiple of the cache's ${cache.numKvHeads} KV heads`, String(Hq));
  }
  const seqs = options.seqs, queryTokens = options.queryTokens;
  if (!Array.isArray(seqs)) throw new InvalidArgumentError('options.seqs', 'an array of sequences', describeValue(seqs));
  if (!Array.isArray(queryTokens)) throw new InvalidArgumentError('options.queryTokens', 'an array of token counts', describeValue(queryTokens));
  if (queryTokens.length !== seqs.length) {
    throw new ShapeError('options.queryTokens', `${seqs.length} counts (one per sequence of options.seqs)`, String(queryTokens.length));
  }
  let sum = 0;
  for (let i = 0; i < queryTokens.length; i++) {
    const m: unknown = queryTokens[i];
    if (typeof m !== 'number' || !Number.isInteger(m) || m < 0) {
      throw new InvalidArgumentError(`options.queryTokens[${i}]`, 'a non-negative integer', describeValue(m));
    }
    sum += m;
  }
  if (sum !== T) throw new ShapeError('options.queryTokens', `counts adding up to q.shape[0] = ${T}`, `counts adding up to ${sum}`);
  const backend = resolveBackend(options.backend, tq);
  // Recorded in a CUDA graph capture: the kernel reads tables each replay rewrites (lib/serving/graph.ts).
  const cap = backend === 'cuda' ? captureOn(tq.deviceIndex) : undefined;
  // An eager GPU call reads the batch's tables the cache keeps on the device, updated where they changed
  // (lib/serving/batch-tables.ts); the CPU reference gets tables of its own.
  const batch = backend === 'cuda' && !cap ? cache.batch(seqs, queryTokens) : undefined;
  const tables = batch ? batch.tables() : cache.tables(seqs, queryTokens);
  const lens = tables.seqLens;
  for (let i = 0; i < lens.length; i++) {
    if (queryTokens[i]! > lens[i]! && !(shortShards && options.causal === false)) {
      throw new ShapeError(`options.queryTokens[${i}]`, `at most ${lens[i]} (the tokens cached for seqs[${i}]; append the query tokens first)`, String(queryTokens[i]));
    }
  }
  const causal = checkBool(options.causal, 'options.causal', true);
  const returnLse = checkBool(options.returnLse, 'options.returnLse');
  const scale = checkScale(options.scale, D);
  const mods = checkMods(options);
  const k = cache.keys, v = cache.values;
  const layout = { pageSize: cache.pageSize, pageStride: k.strides[0]!, tokenStride: k.strides[1]!, headStride: k.strides[2]! };
  return runRagged({
    what: 'pagedAttention', q: tq, k, v, layout,
    tables, numKvHeads: cache.numKvHeads, scale, causal, returnLse,
    scoreMod: mods.scoreMod, maskMod: mods.maskMod, params: mods.params, backend, signal,
    beginRead: () => cache.beginRead(),
    kv: cap ? (hk: Tensor, hv: Tensor) => cache.capturedKv(cap, seqs, queryTokens, layout, hk, hv)
      : batch ? (hk: Tensor, hv: Tensor) => batch.deviceKv(hk, hv, layout, cache.device) : undefined,
    enqueued: batch ? () => batch.release() : undefined,
  });
}
