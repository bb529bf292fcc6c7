/**
 * The attention spec of {@link attention}: its types, and its validation and
 * normalisation (every field checked, defaults applied), first on its own and
 * then against the q/k/v shapes.
 * @module
 */
import { DTypeError, InvalidArgumentError, ShapeError } from '../errors.js';
import { describeValue } from '../messages.js';
import type { Tensor } from '../tensor.js';
import { MaskMod, ScoreMod, type ImageSpan } from '../mods/index.js';
import { checkSignal } from '../abort.js';
import { checkBool, checkTensor, type Backend, type QkvDims } from '../validate.js';

/** Which implementation {@link attention} runs. */
export type AttentionImpl = 'sdpa' | 'flex' | 'auto';

/** A sliding window: `window` most recent keys (diagonal included), optionally `lookahead` future keys. */
export interface SlidingWindowSpec {
  /** Positive integer: query `q` sees keys with `q - kv < window`. */
  window: number;
  /** Non-negative integer: keys with `kv - q <= lookahead` are visible too (default 0). Needs `isCausal` unset/false. */
  lookahead?: number;
}

/** What {@link attention} chose and why (given to `spec.onChoice`, returned by {@link explainAttention}). */
export interface AttentionChoice {
  /** The implementation that runs. */
  impl: 'sdpa' | 'flex';
  /** What the spec asked for. */
  requested: AttentionImpl;
  /** One line, for logs: e.g. `"auto: docIds is a block-sparse mask; flex skips empty tiles"`. */
  reason: string;
  /**
   * The GPU kernel family (given when {@link explainAttention} has shapes): `'decode'` for at most 16 query
   * tokens (query heads of a KV head packed into one tile, split-KV; a block mask's kv lists walked), else `'forward'`.
   */
  kernel?: 'decode' | 'forward';
}

/**
 * The attention spec of {@link attention}: one description of the attention
 * pattern, run by either backend.
 *
 * **Mask options combine by intersection** (`andMasks`). `slidingWindow`,
 * `prefixLM` and `imageSpans` each carry their own causal rule (a sliding
 * window sees no future keys beyond its `lookahead`; a prefix LM and an image
 * mask are causal outside the prefix / the images), so `isCausal` adds a plain
 * causal mask only when none of them is given; with `docIds` it makes the
 * document mask causal inside each document.
 */
export interface AttentionSpec {
  /** `'sdpa'` (default), `'flex'` or `'auto'`. */
  impl?: AttentionImpl;
  /**
   * Causal masking, top-left aligned like PyTorch (query i sees keys 0…i). All
   * positions count from 0 on both sides, so for decoding against a KV cache
   * (the queries are the last `Sq` of `Skv` positions) leave it off, or write
   * the rule with `maskMod` and an offset `param`.
   */
  isCausal?: boolean;
  /**
   * Packed sequences: an i32 tensor of document ids, `[B, S]`, `[1, S]` or `[S]`
   * (S = Sq = Skv); a token attends only inside its own document (causally when
   * `isCausal`). Cached by tensor identity: if you change its values in place,
   * pass a new tensor or call {@link clearAttentionCache}.
   */
  docIds?: Tensor;
  /** Sliding window: a window size, or `{ window, lookahead }`. */
  slidingWindow?: number | SlidingWindowSpec;
  /** Prefix LM: the first `n` keys are visible to every query, the rest causally. */
  prefixLM?: number;
  /**
   * Interleaved image/text (VLM): `[{start, length}]` shared by the batch, or one
   * such array per batch element. Causal everywhere, bidirectional inside each image
   * (see `imageBlocks`). Spans must not overlap and must lie inside the sequence.
   */
  imageSpans?: readonly ImageSpan[] | readonly (readonly ImageSpan[])[];
  /**
   * Any mask mod (escape hatch), e.g. a per-modality rule over captured modality
   * ids. Intersected with the other mask options. Cached by its structure plus the
   * identity of the tensors it captures (and the values of its `param(...)`s).
   */
  maskMod?: MaskMod;
  /** Tanh soft-capping of the scores, `c · tanh(s / c)` (Gemma 2). Flex only. */
  softcap?: number;
  /** ALiBi: one slope per query head (`[Hq]` float tensor or `Float32Array`). Flex only. */
  alibiSlopes?: Tensor | Float32Array;
  /** Any score mod (escape hatch), applied first (then ALiBi, then softcap). Flex only. */
  scoreMod?: ScoreMod;
  /** Values of the `param(...)` scalars of `maskMod` / `scoreMod`. */
  params?: Record<string, number>;
  /** Multiplier of q·k; default `1 / sqrt(D)`. */
  scale?: number;
  /** Allow `Hq` to be a multiple of `Hkv` (grouped-query attention). */
  enableGQA?: boolean;
  /** Also return the log-sum-exp of each row (f32 `[B, Hq, Sq]`, natural log). */
  returnLse?: boolean;
  /**
   * Keep what the backward pass needs (q, k, v, out and the LSE) and return
   * `{ out, backward, release }` (see {@link AttentionWithGrad}): `backward(dOut)`
   * gives dq, dk, dv through the backward op of the same implementation
   * (`scaledDotProductAttentionBackward` or `flexAttentionBackward`) with the same
   * masks and score mods, on the forward's backend (the CUDA backward has head
   * dims 32, 64, 96 and 128; others are a NotImplementedError at the call).
   */
  requiresGrad?: boolean;
  /** Force a backend (`'cuda'` or `'cpu'`); default: where the tensors live. */
  backend?: Backend;
  /** Called with the implementation chosen (useful with `'auto'`, e.g. to log it). */
  onChoice?: (choice: AttentionChoice) => void;
  /**
   * Cancels the call (e.g. `AbortSignal.timeout(ms)`): an aborted signal
   * rejects with an `AbortError` (code `ABORT_ERR`) before any work starts; an
   * abort in flight rejects at once, and outputs made meanwhile are freed. A
   * mask being built for the cache is finished anyway (other calls may wait for it).
   */
  signal?: AbortSignal;
}

const SPEC_KEYS = [
  'impl', 'isCausal', 'docIds', 'slidingWindow', 'prefixLM', 'imageSpans', 'maskMod', 'softcap', 'alibiSlopes', 'scoreMod',
  'params', 'scale', 'enableGQA', 'returnLse', 'requiresGrad', 'backend', 'onChoice', 'signal',
] as const;

/** A (positive) integer below 2^31, else an InvalidArgumentError naming `arg`. */
export function nonNegInt(v: unknown, arg: string, positive = false): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (positive ? 1 : 0) || v > 2 ** 31 - 1) {
    throw new InvalidArgumentError(arg, `a ${positive ? 'positive' : 'non-negative'} integer`, describeValue(v));
  }
  return v;
}

/** The spec with defaults applied and every field checked (independent of shapes). */
export interface Normalized {
  impl: AttentionImpl;
  isCausal: boolean;
  docIds?: Tensor;
  window?: { window: number; lookahead: number };
  prefix?: number;
  spans?: ImageSpan[] | ImageSpan[][];
  maskMod?: MaskMod;
  softcap?: number;
  slopes?: Tensor | Float32Array;
  scoreMod?: ScoreMod;
  params: Record<string, number>;
  scale?: number;
  enableGQA: boolean;
  returnLse: boolean;
  requiresGrad: boolean;
  backend?: Backend;
  onChoice?: (choice: AttentionChoice) => void;
  signal?: AbortSignal;
}

function checkSpanList(list: unknown, arg: string): ImageSpan[] {
  if (!Array.isArray(list)) throw new InvalidArgumentError(arg, 'an array of { start, length }', describeValue(list));
  return list.map((s, i) => {
    if (s === null || typeof s !== 'object') throw new InvalidArgumentError(`${arg}[${i}]`, 'an object { start, length }', describeValue(s));
    return { start: nonNegInt((s as ImageSpan).start, `${arg}[${i}].start`), length: nonNegInt((s as ImageSpan).length, `${arg}[${i}].length`) };
  });
}

/** Checks every field of a spec and applies the defaults (independent of shapes). */
export function normalize(spec: unknown): Normalized {
  if (spec === undefined) spec = {};
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) {
    throw new InvalidArgumentError('spec', 'an attention spec object ({ impl, isCausal, docIds, ... })', describeValue(spec));
  }
  const s = spec as AttentionSpec;
  for (const key of Object.keys(s)) {
    if (!(SPEC_KEYS as readonly string[]).includes(key)) {
      throw new InvalidArgumentError(`spec.${key}`, `one of the known spec options (${SPEC_KEYS.join(', ')})`, 'an unknown option');
    }
  }
  const impl = s.impl ?? 'sdpa';
  if (impl !== 'sdpa' && impl !== 'flex' && impl !== 'auto') {
    throw new InvalidArgumentError('spec.impl', "'sdpa', 'flex' or 'auto'", describeValue(impl));
  }
  const n: Normalized = {
    impl,
    isCausal: checkBool(s.isCausal, 'spec.isCausal'),
    enableGQA: checkBool(s.enableGQA, 'spec.enableGQA'),
    returnLse: checkBool(s.returnLse, 'spec.returnLse'),
    requiresGrad: checkBool(s.requiresGrad, 'spec.requiresGrad'),
    params: {},
  };
  if (s.docIds !== undefined) {
    const d = checkTensor(s.docIds, 'spec.docIds');
    if (d.dtype !== 'i32') throw new DTypeError('spec.docIds', 'dtype i32 (document ids)', d.dtype);
    if (d.ndim !== 1 && d.ndim !== 2) throw new ShapeError('spec.docIds', 'shape [B, S] or [S]', `[${d.shape.join(', ')}]`);
    n.docIds = d;
  }
  if (s.slidingWindow !== undefined) {
    const w = s.slidingWindow;
    if (typeof w === 'number') n.window = { window: nonNegInt(w, 'spec.slidingWindow', true), lookahead: 0 };
    else if (w !== null && typeof w === 'object') {
      for (const key of Object.keys(w)) {
        if (key !== 'window' && key !== 'lookahead') {
          throw new InvalidArgumentError(`spec.slidingWindow.${key}`, 'window or lookahead', 'an unknown option');
        }
      }
      n.window = {
        window: nonNegInt(w.window, 'spec.slidingWindow.window', true),
        lookahead: w.lookahead === undefined ? 0 : nonNegInt(w.lookahead, 'spec.slidingWindow.lookahead'),
      };
    } else {
      throw new InvalidArgumentError('spec.slidingWindow', 'a positive integer window or { window, lookahead }', describeValue(w));
    }
    if (n.window.lookahead > 0 && n.isCausal) {
      throw new InvalidArgumentError('spec.slidingWindow.lookahead',
        '0 when isCausal is true (a sliding window is causal by itself; drop isCausal to see lookahead future keys)',
        String(n.window.lookahead));
    }
  }
  if (s.prefixLM !== undefined) n.prefix = nonNegInt(s.prefixLM, 'spec.prefixLM');
  if (s.imageSpans !== undefined) {
    const sp = s.imageSpans;
    if (!Array.isArray(sp)) throw new InvalidArgumentError('spec.imageSpans', 'an array of { start, length } (or one array per batch)', describeValue(sp));
    n.spans = sp.length > 0 && Array.isArray(sp[0])
      ? (sp as unknown[]).map((l, b) => checkSpanList(l, `spec.imageSpans[${b}]`))
      : checkSpanList(sp, 'spec.imageSpans');
  }
  if (s.maskMod !== undefined) {
    if (!(s.maskMod instanceof MaskMod)) {
      throw new InvalidArgumentError('spec.maskMod', 'a MaskMod (from maskMod(...) or a built-in such as causal())',
        (s.maskMod as unknown) instanceof ScoreMod ? 'a ScoreMod (pass it as spec.scoreMod)' : describeValue(s.maskMod));
    }
    n.maskMod = s.maskMod;
  }
  if (s.softcap !== undefined) {
    if (typeof s.softcap !== 'number' || !(s.softcap > 0) || !Number.isFinite(s.softcap)) {
      throw new InvalidArgumentError('spec.softcap', 'a positive finite number (e.g. 50 for Gemma 2 attention logits)', describeValue(s.softcap));
    }
    n.softcap = s.softcap;
  }
  if (s.alibiSlopes !== undefined) {
    const a = s.alibiSlopes;
    if (a instanceof Float32Array) n.slopes = a;
    else {
      const t = checkTensor(a, 'spec.alibiSlopes');
      if (t.dtype !== 'f32' && t.dtype !== 'bf16' && t.dtype !== 'f16') throw new DTypeError('spec.alibiSlopes', 'a float tensor (f32, bf16 or f16)', t.dtype);
      if (t.ndim !== 1) throw new ShapeError('spec.alibiSlopes', 'shape [Hq] (one slope per query head)', `[${t.shape.join(', ')}]`);
      n.slopes = t;
    }
  }
  if (s.scoreMod !== undefined) {
    if (!(s.scoreMod instanceof ScoreMod)) {
      throw new InvalidArgumentError('spec.scoreMod', 'a ScoreMod (from scoreMod(...) or a built-in such as softcap(30))',
        (s.scoreMod as unknown) instanceof MaskMod ? 'a MaskMod (pass it as spec.maskMod)' : describeValue(s.scoreMod));
    }
    n.scoreMod = s.scoreMod;
  }
  if (s.params !== undefined) {
    if (s.params === null || typeof s.params !== 'object') throw new InvalidArgumentError('spec.params', 'an object of numbers', describeValue(s.params));
    for (const [k, v] of Object.entries(s.params)) {
      if (typeof v !== 'number') throw new InvalidArgumentError(`spec.params.${k}`, 'a number', describeValue(v));
    }
    n.params = { ...s.params };
  }
  if (s.scale !== undefined) {
    if (typeof s.scale !== 'number' || !Number.isFinite(s.scale)) throw new InvalidArgumentError('spec.scale', 'a finite number', describeValue(s.scale));
    n.scale = s.scale;
  }
  if (s.backend !== undefined) {
    if (s.backend !== 'cuda' && s.backend !== 'cpu') throw new InvalidArgumentError('spec.backend', "'cuda' or 'cpu'", describeValue(s.backend));
    n.backend = s.backend;
  }
  if (s.onChoice !== undefined) {
    if (typeof s.onChoice !== 'function') throw new InvalidArgumentError('spec.onChoice', 'a function (choice) => void', describeValue(s.onChoice));
    n.onChoice = s.onChoice;
  }
  const signal = checkSignal(s.signal, 'spec.signal');
  if (signal) n.signal = signal;
  return n;
}

/** Shape-dependent checks (docIds length, spans inside the sequence, slopes per head). */
export function checkAgainstShapes(n: Normalized, d: QkvDims): void {
  if (n.docIds) {
    const ids = n.docIds;
    if (d.Sq !== d.Skv) {
      throw new ShapeError('spec.docIds', `self-attention (Sq == Skv) for document masking; got Sq=${d.Sq}, Skv=${d.Skv}`, `[${ids.shape.join(', ')}]`);
    }
    const S = ids.shape[ids.ndim - 1]!;
    if (S !== d.Skv) throw new ShapeError('spec.docIds', `length ${d.Skv} (the sequence length), shape [${d.B}, ${d.Skv}] or [${d.Skv}]`, `[${ids.shape.join(', ')}]`);
    if (ids.ndim === 2 && ids.shape[0] !== d.B && ids.shape[0] !== 1) {
      throw new ShapeError('spec.docIds', `batch size ${d.B} (or 1), shape [${d.B}, ${d.Skv}]`, `[${ids.shape.join(', ')}]`);
    }
  }
  if (n.spans) {
    const perBatch = n.spans.length > 0 && Array.isArray(n.spans[0]);
    const lists = perBatch ? n.spans as ImageSpan[][] : [n.spans as ImageSpan[]];
    if (perBatch && lists.length !== d.B) {
      throw new ShapeError('spec.imageSpans', `one span list per batch element (${d.B})`, `${lists.length} lists`);
    }
    const seq = Math.min(d.Sq, d.Skv);
    lists.forEach((list, b) => {
      const arg = perBatch ? `spec.imageSpans[${b}]` : 'spec.imageSpans';
      list.forEach((sp, i) => {
        if (sp.start + sp.length > seq) {
          throw new InvalidArgumentError(`${arg}[${i}]`, `a span inside the sequence (length ${seq})`, `start ${sp.start}, length ${sp.length}`);
        }
      });
      const sorted = list.map((sp, i) => ({ ...sp, i })).filter((sp) => sp.length > 0).sort((a, c) => a.start - c.start);
      for (let j = 1; j < sorted.length; j++) {
        const prev = sorted[j - 1]!, cur = sorted[j]!;
        if (cur.start < prev.start + prev.length) {
          throw new InvalidArgumentError(arg, 'non-overlapping image spans',
            `spans ${prev.i} [${prev.start}, ${prev.start + prev.length}) and ${cur.i} [${cur.start}, ${cur.start + cur.length}) overlap`);
        }
      }
    });
  }
  if (n.slopes) {
    const len = n.slopes instanceof Float32Array ? n.slopes.length : n.slopes.shape[0]!;
    if (len !== d.Hq) throw new ShapeError('spec.alibiSlopes', `${d.Hq} slopes (one per query head)`, String(len));
  }
}
