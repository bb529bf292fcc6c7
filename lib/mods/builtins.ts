/**
 * Built-in masks and score mods (PyTorch flex_attention idioms). Masks built
 * from constants carry an {@link MaskDescriptor} (`mask.analytic`) so block masks
 * can be classified in O(blocks).
 * @module
 */
import { InvalidArgumentError, ModError } from '../errors.js';
import type { CapturedTensorLike, Expr, MaskDescriptor, MaskModArgs } from './ir.js';
import { MaskMod, ScoreMod, applyScoreMod, lift, maskModWith, scoreMod, tensorAt } from './ir.js';
import { describeThrown as show } from './trace-checks.js';

function nonNegInt(name: string, v: unknown, positive = false): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (positive ? 1 : 0) || v > 2147483647) {
    throw new InvalidArgumentError(name, `a${positive ? ' positive' : ' non-negative'} int32 integer`, show(v));
  }
  return v;
}

function checkTensor(name: string, t: CapturedTensorLike, dtypes: readonly string[], ranks: readonly number[]): void {
  if (!t || typeof t !== 'object' || !Array.isArray(t.shape)) throw new InvalidArgumentError(name, 'a Tensor', show(t));
  if (!dtypes.includes(t.dtype)) throw new InvalidArgumentError(name, `dtype ${dtypes.join(' or ')}`, t.dtype);
  if (!ranks.includes(t.shape.length)) {
    throw new InvalidArgumentError(name, `rank ${ranks.join(' or ')}`, `shape [${t.shape.join(', ')}]`);
  }
}

/** Causal mask (top-left aligned like PyTorch): `kv <= q`. */
export function causal(): MaskMod {
  return maskModWith(({ q, kv }) => kv.le(q), { kind: 'causal' });
}

/** Mask that allows everything (identity for {@link andMasks}). */
export function fullMask(): MaskMod {
  return maskModWith(() => true, { kind: 'full' });
}

/**
 * Sliding-window causal mask: query `q` sees keys with `q - kv < window` (the
 * `window` most recent positions including itself) and `kv <= q + lookahead`.
 * @param window positive integer number of positions (including the diagonal).
 * @param opts.lookahead non-negative integer: how many future keys are visible (default 0 = causal).
 */
export function slidingWindow(window: number, opts: { lookahead?: number } = {}): MaskMod {
  const w = nonNegInt('window', window, true);
  const la = nonNegInt('options.lookahead', opts.lookahead ?? 0);
  return maskModWith(({ q, kv }) => q.sub(kv).lt(w).and(kv.sub(q).le(la)), { kind: 'sliding', window: w, lookahead: la });
}

/**
 * Prefix-LM mask: the first `prefixLen` keys are visible to every query
 * (bidirectional prefix), the rest causally: `kv < prefixLen || kv <= q`.
 */
export function prefixLM(prefixLen: number): MaskMod {
  const n = nonNegInt('prefixLen', prefixLen);
  return maskModWith(({ q, kv }) => kv.lt(n).or(kv.le(q)), { kind: 'prefix', n });
}

/**
 * Document (packed-sequence) mask: tokens attend only within their own document.
 * @param docIds captured i32 tensor of document ids, shape `[B, S]` (per batch) or `[S]`
 *   (shared); query and key positions index the same tensor (self-attention).
 *   Out-of-range positions clamp to the last id.
 * @param opts.causal also require `kv <= q` (default true).
 */
export function documentMask(docIds: CapturedTensorLike, opts: { causal?: boolean } = {}): MaskMod {
  checkTensor('docIds', docIds, ['i32'], [1, 2]);
  const isCausal = opts.causal ?? true;
  const id = (b: Expr, x: Expr): Expr => (docIds.shape.length === 2 ? tensorAt(docIds, [b, x]) : tensorAt(docIds, [x]));
  return maskModWith(({ b, q, kv }) => {
    const same = id(b, q).eq(id(b, kv));
    return isCausal ? same.and(kv.le(q)) : same;
  }, undefined);
}

/**
 * Document ids from document start offsets, for {@link documentMask}.
 * @param offsets sorted start positions of the documents (usually starting at 0;
 *   positions before `offsets[1]` all belong to document 0).
 * @param seqLen length of the returned Int32Array (id = index of the last offset ≤ position).
 */
export function docIdsFromOffsets(offsets: readonly number[], seqLen: number): Int32Array {
  const n = nonNegInt('seqLen', seqLen);
  const ids = new Int32Array(n);
  let prev = -Infinity;
  offsets.forEach((o, i) => {
    nonNegInt(`offsets[${i}]`, o);
    if (o < prev) throw new InvalidArgumentError(`offsets[${i}]`, 'sorted (non-decreasing) offsets', String(o));
    prev = o;
  });
  let doc = 0;
  for (let p = 0; p < n; p++) {
    while (doc + 1 < offsets.length && offsets[doc + 1]! <= p) doc++;
    ids[p] = doc;
  }
  return ids;
}

/** One image's token range in an interleaved image/text sequence. */
export interface ImageSpan {
  /** First token of the image. */
  readonly start: number;
  /** Number of tokens of the image. */
  readonly length: number;
}

function checkSpans(name: string, spans: readonly ImageSpan[], seqLen: number | undefined): ImageSpan[] {
  const out = spans.map((s, i) => {
    const start = nonNegInt(`${name}[${i}].start`, s?.start);
    const length = nonNegInt(`${name}[${i}].length`, s?.length);
    if (seqLen !== undefined && start + length > seqLen) {
      throw new InvalidArgumentError(`${name}[${i}]`, `a span inside the sequence (seqLen ${seqLen})`, `start ${start}, length ${length}`);
    }
    return { start, length };
  }).filter((s) => s.length > 0);
  const sorted = [...out].sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.start < sorted[i - 1]!.start + sorted[i - 1]!.length) {
      throw new InvalidArgumentError(name, 'non-overlapping image spans', `overlap at start ${sorted[i]!.start}`);
    }
  }
  return out;
}

/**
 * Interleaved image/text (VLM) mask. Rule: `kv <= q` (causal, text and image
 * alike) **or** `q` and `kv` lie in the same image (bidirectional within an
 * image) — i.e. an image token also sees the later tokens of its own image and
 * everything before the image causally; text never sees future images.
 * @param spans `[{start, length}]` shared by all batches, or one such array per
 *   batch element (`spans[b]`); spans are baked into the kernel as constants (a new
 *   span layout recompiles) — use {@link imageBlocksFromIds} for data-dependent layouts.
 * @param opts.seqLen optional sequence length, used to validate the spans.
 */
export function imageBlocks(spans: readonly ImageSpan[] | readonly (readonly ImageSpan[])[], opts: { seqLen?: number } = {}): MaskMod {
  const seqLen = opts.seqLen === undefined ? undefined : nonNegInt('options.seqLen', opts.seqLen);
  if (!Array.isArray(spans)) throw new InvalidArgumentError('spans', 'an array of {start, length} (or one array per batch)', show(spans));
  const perBatch = spans.length > 0 && Array.isArray(spans[0]);
  const inside = (x: Expr, s: ImageSpan): Expr => x.ge(s.start).and(x.lt(s.start + s.length));
  const sameImage = (q: Expr, kv: Expr, list: readonly ImageSpan[]): Expr =>
    list.reduce<Expr>((acc, s) => acc.or(inside(q, s).and(inside(kv, s))), lift(false));
  if (!perBatch) {
    const list = checkSpans('spans', spans as readonly ImageSpan[], seqLen);
    const boxes = list.map((s) => ({ q0: s.start, q1: s.start + s.length, kv0: s.start, kv1: s.start + s.length }));
    return maskModWith(({ q, kv }) => kv.le(q).or(sameImage(q, kv, list)),
      { kind: 'or', parts: [{ kind: 'causal' }, { kind: 'boxes', boxes }] });
  }
  const lists = (spans as readonly (readonly ImageSpan[])[]).map((l, b) => checkSpans(`spans[${b}]`, l, seqLen));
  return maskModWith(({ b, q, kv }) => {
    const img = lists.reduce<Expr>((acc, l, bi) => acc.or(b.eq(bi).and(sameImage(q, kv, l))), lift(false));
    return kv.le(q).or(img);
  }, undefined);
}

/** Image ids (-1 = text) of length `seqLen` from spans, for {@link imageBlocksFromIds}. */
export function imageIdsFromSpans(spans: readonly ImageSpan[], seqLen: number): Int32Array {
  const n = nonNegInt('seqLen', seqLen);
  const ids = new Int32Array(n).fill(-1);
  checkSpans('spans', spans, n).forEach((s, i) => ids.fill(i, s.start, s.start + s.length));
  return ids;
}

/**
 * Same rule as {@link imageBlocks} with image ids read from a captured i32 tensor
 * `imageIds` of shape `[B, S]` or `[S]` (-1 for text tokens, otherwise an image
 * index): `kv <= q || (id[q] == id[kv] && id[q] >= 0)`.
 */
export function imageBlocksFromIds(imageIds: CapturedTensorLike): MaskMod {
  checkTensor('imageIds', imageIds, ['i32'], [1, 2]);
  const id = (b: Expr, x: Expr): Expr => (imageIds.shape.length === 2 ? tensorAt(imageIds, [b, x]) : tensorAt(imageIds, [x]));
  return maskModWith(({ b, q, kv }) => {
    const iq = id(b, q);
    return kv.le(q).or(iq.eq(id(b, kv)).and(iq.ge(0)));
  }, undefined);
}

/**
 * ALiBi bias: `score + slopes[h] * (kv - q)`.
 * @param slopes captured float tensor `[H]` (f32/bf16/f16), one slope per query head
 *   (see {@link alibiSlopes} for the standard geometric slopes).
 */
export function alibi(slopes: CapturedTensorLike): ScoreMod {
  checkTensor('slopes', slopes, ['f32', 'bf16', 'f16'], [1]);
  // (float)kv - (float)q rather than (float)(kv - q): the kernel then converts each
  // index once per row/column instead of once per element (exact below 2^24).
  return scoreMod(({ score, h, q, kv }) => score.add(tensorAt(slopes, [h]).mul(kv.toFloat().sub(q.toFloat()))));
}

/** The standard ALiBi slopes for `numHeads` heads (`2^(-8(i+1)/n)` with the paper's rule for non-powers of two). */
export function alibiSlopes(numHeads: number): Float32Array {
  const H = nonNegInt('numHeads', numHeads, true);
  const pow2 = (n: number): number[] => Array.from({ length: n }, (_, i) => 2 ** (-8 * (i + 1) / n));
  const p = 2 ** Math.floor(Math.log2(H));
  const s = pow2(p);
  if (p < H) s.push(...pow2(2 * p).filter((_, i) => i % 2 === 0).slice(0, H - p));
  return Float32Array.from(s);
}

/**
 * Tanh soft-capping (Gemma 2 / Grok): `cap * tanh(score / cap)`.
 * @param cap positive number (baked in) or a Float expression such as `param('cap')`.
 */
export function softcap(cap: number | Expr): ScoreMod {
  if (typeof cap === 'number' && !(cap > 0 && Number.isFinite(cap))) throw new InvalidArgumentError('cap', 'a positive finite number', show(cap));
  // Multiply by the reciprocal (a constant, or hoisted out of the tile loop for a
  // param) instead of dividing every score.
  const inv = typeof cap === 'number' ? 1 / cap : lift(1).div(cap);
  return scoreMod(({ score }) => lift(cap).mul(score.mul(inv).tanh()));
}

/**
 * Clamps scores to `[-max, max]` per head: `min(max(score, -m[h]), m[h])`.
 * @param perHeadMax captured float tensor `[H]`, or one number for all heads.
 */
export function logitClip(perHeadMax: CapturedTensorLike | number): ScoreMod {
  if (typeof perHeadMax === 'number') {
    if (!(perHeadMax >= 0)) throw new InvalidArgumentError('perHeadMax', 'a non-negative number', show(perHeadMax));
    return scoreMod(({ score }) => score.max(-perHeadMax).min(perHeadMax));
  }
  checkTensor('perHeadMax', perHeadMax, ['f32', 'bf16', 'f16'], [1]);
  return scoreMod(({ score, h }) => {
    const m = tensorAt(perHeadMax, [h]);
    return score.max(m.neg()).min(m);
  });
}

/**
 * Learned relative-position bias: `score + table[h, q - kv + offset]` (or
 * `table[q - kv + offset]` for a rank-1 table shared by all heads).
 * @param table captured float tensor `[H, R]` or `[R]`.
 * @param opts.offset index of distance 0 (default `floor((R - 1) / 2)`, i.e. a table
 *   centred on the diagonal covering distances `-offset .. R-1-offset`). Distances
 *   beyond the table clamp to its edge entries (T5-style saturation).
 */
export function relativeBias(table: CapturedTensorLike, opts: { offset?: number } = {}): ScoreMod {
  checkTensor('table', table, ['f32', 'bf16', 'f16'], [1, 2]);
  const R = table.shape[table.shape.length - 1]!;
  const offset = opts.offset === undefined ? Math.floor(Math.max(R - 1, 0) / 2) : nonNegInt('options.offset', opts.offset);
  return scoreMod(({ score, h, q, kv }) => {
    const i = q.sub(kv).add(offset);
    return score.add(table.shape.length === 2 ? tensorAt(table, [h, i]) : tensorAt(table, [i]));
  });
}

function checkMasks(name: string, masks: readonly MaskMod[]): void {
  masks.forEach((m, i) => {
    if (!(m instanceof MaskMod)) throw new ModError(`${name}: argument ${i} is not a MaskMod (${show(m)})`);
  });
}

function apply(m: MaskMod, _args: MaskModArgs): Expr {
  // Mask mods all read the same argument nodes, so the traced expression can be reused as is.
  return m.expr;
}

/** Intersection of masks (all must allow); `andMasks()` allows everything. */
export function andMasks(...masks: MaskMod[]): MaskMod {
  checkMasks('andMasks', masks);
  const analytic: MaskDescriptor | undefined = masks.every((m) => m.analytic)
    ? (masks.length === 1 ? masks[0]!.analytic : { kind: 'and', parts: masks.map((m) => m.analytic!) }) : undefined;
  return maskModWith((a) => (masks.length === 0 ? lift(true)
    : masks.slice(1).reduce<Expr>((acc, m) => acc.and(apply(m, a)), apply(masks[0]!, a))),
  masks.length === 0 ? { kind: 'full' } : analytic);
}

/** Union of masks (any may allow); `orMasks()` allows nothing. */
export function orMasks(...masks: MaskMod[]): MaskMod {
  checkMasks('orMasks', masks);
  const analytic: MaskDescriptor | undefined = masks.every((m) => m.analytic)
    ? (masks.length === 1 ? masks[0]!.analytic : { kind: 'or', parts: masks.map((m) => m.analytic!) }) : undefined;
  return maskModWith((a) => (masks.length === 0 ? lift(false)
    : masks.slice(1).reduce<Expr>((acc, m) => acc.or(apply(m, a)), apply(masks[0]!, a))), analytic);
}

/** Complement of a mask. */
export function notMask(m: MaskMod): MaskMod {
  checkMasks('notMask', [m]);
  return maskModWith((a) => apply(m, a).not(), m.analytic ? { kind: 'not', part: m.analytic } : undefined);
}

/** Applies score mods in order: `composeScoreMods(f, g)(s) = g(f(s))`. */
export function composeScoreMods(...mods: ScoreMod[]): ScoreMod {
  mods.forEach((m, i) => {
    if (!(m instanceof ScoreMod)) throw new ModError(`composeScoreMods: argument ${i} is not a ScoreMod (${show(m)})`);
  });
  return scoreMod(({ score }) => mods.reduce<Expr>((s, m) => applyScoreMod(m, s), score));
}
