/**
 * `attention`: the model-facing backend switch. One attention spec (causal,
 * packed documents, sliding window, prefix LM, image spans, soft-capping,
 * ALiBi, custom masks) runs on either implementation:
 *
 * - `impl: 'sdpa'` (default): {@link scaledDotProductAttention}, the fused
 *   dense kernel. Plain and causal attention need nothing else; masks SDPA has
 *   no native flag for become a dense bool `attnMask` `[B|1, H|1, Sq, Skv]`.
 * - `impl: 'flex'`: {@link flexAttention} with a {@link BlockMask} built from
 *   the spec and score mods for `softcap` / `alibiSlopes`.
 * - `impl: 'auto'`: flex when the spec has anything beyond plain causal
 *   attention, else sdpa; the choice is reported (`onChoice`, {@link explainAttention}).
 *
 * Masks (block masks and dense masks) are cached per (mask, B, H, Sq, Skv,
 * device, impl) in a small LRU, so a decode or training loop does not rebuild
 * them on every call.
 *
 * ```ts
 * const out = await attention(q, k, v, { impl: 'flex', isCausal: true, docIds, softcap: 50 });
 * ```
 * @module
 */
import { DeviceError, DTypeError, InternalError, InvalidArgumentError, ShapeError } from './errors.js';
import { Tensor } from './tensor.js';
import { BlockMask } from './blockmask.js';
import { createBlockMaskIn } from './blockmask/create.js';
import {
  MaskMod, ScoreMod, alibi, andMasks, causal, composeScoreMods, documentMask, imageBlocks, prefixLM,
  slidingWindow, softcap as softcapMod, type ImageSpan, type CapturedTensorLike,
} from './mods/index.js';
import { argUse, hostMaskFn } from './blockmask/mods-adapter.js';
import { sdpaIn, type AttentionWithLse } from './sdpa.js';
import { flexIn } from './flex.js';
import { checkSignal } from './abort.js';
import { runOp, type Hold } from './ownership.js';
import { retargetMask } from './mods/transform.js';
import { checkBool, checkQkv, checkTensor, type Backend, type QkvDims } from './validate.js';
import type { Device } from './device.js';

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
  'params', 'scale', 'enableGQA', 'returnLse', 'backend', 'onChoice', 'signal',
] as const;

// ------------------------------------------------------------------ validation

function describeValue(x: unknown): string {
  if (x === null) return 'null';
  if (x === undefined) return 'undefined';
  if (typeof x === 'object') return `an object (${(x as object).constructor?.name ?? 'Object'})`;
  if (typeof x === 'string') return JSON.stringify(x);
  return `${typeof x} ${String(x)}`;
}

function nonNegInt(v: unknown, arg: string, positive = false): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (positive ? 1 : 0) || v > 2 ** 31 - 1) {
    throw new InvalidArgumentError(arg, `a ${positive ? 'positive' : 'non-negative'} integer`, describeValue(v));
  }
  return v;
}

/** The spec with defaults applied and every field checked (independent of shapes). */
interface Normalized {
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

function normalize(spec: unknown): Normalized {
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
function checkAgainstShapes(n: Normalized, d: QkvDims): void {
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

// ------------------------------------------------------------------ mask & mods

function hasMaskBeyondCausal(n: Normalized): string | null {
  if (n.docIds) return 'docIds';
  if (n.window) return 'slidingWindow';
  if (n.prefix !== undefined) return 'prefixLM';
  if (n.spans) return 'imageSpans';
  if (n.maskMod) return 'maskMod';
  return null;
}

function scoreModOption(n: Normalized): string | null {
  if (n.scoreMod) return 'scoreMod';
  if (n.slopes) return 'alibiSlopes';
  if (n.softcap !== undefined) return 'softcap';
  return null;
}

function choose(n: Normalized): AttentionChoice {
  const mods = scoreModOption(n);
  const mask = hasMaskBeyondCausal(n);
  if (n.impl !== 'auto') {
    return { impl: n.impl, requested: n.impl, reason: `${n.impl}: requested` };
  }
  if (mods) return { impl: 'flex', requested: 'auto', reason: `auto: ${mods} is a score mod, which only flex can apply` };
  if (mask) {
    return { impl: 'flex', requested: 'auto',
      reason: `auto: ${mask} is a mask SDPA has no flag for; flex skips empty tiles through a block mask (sdpa would stream a dense Sq×Skv mask)` };
  }
  return { impl: 'sdpa', requested: 'auto', reason: `auto: ${n.isCausal ? 'causal' : 'unmasked'} attention runs on the fused dense kernel` };
}

// Traced mods per spec (by value of the scalar options, identity of tensors and
// user mods), so a loop does not re-trace and re-hash them on every call. Entries
// that capture a tensor or a user mod hang off that object in a WeakMap, so they
// go away with it; the others (scalars only) are few.
type Memo = { mod: MaskMod | ScoreMod | null; key: string };
const scalarMemo = new Map<string, Memo>();
let objectMemo = new WeakMap<object, Map<string, Memo>>();
const MEMO_MAX = 256;

function memoMod<T extends MaskMod | ScoreMod | null>(owner: object | undefined, fast: string, make: () => T): { mod: T; key: string } {
  let table = scalarMemo;
  if (owner) {
    let t = objectMemo.get(owner);
    if (!t) objectMemo.set(owner, (t = new Map()));
    table = t;
  }
  let hit = table.get(fast);
  if (!hit) {
    if (table.size >= MEMO_MAX) table.clear();
    const mod = make();
    hit = { mod, key: mod ? `${mod.hash}|${mod.tensors.map((t) => idOf(t as object)).join(',')}` : '' };
    table.set(fast, hit);
  }
  return hit as { mod: T; key: string };
}

function maskFastKey(n: Normalized): string {
  return [
    n.isCausal ? 'c' : '', n.docIds ? `d${idOf(n.docIds)}` : '', n.window ? `w${n.window.window},${n.window.lookahead}` : '',
    n.prefix !== undefined ? `p${n.prefix}` : '', n.spans ? `i${JSON.stringify(n.spans)}` : '', n.maskMod ? `m${idOf(n.maskMod)}` : '',
  ].join('|');
}

/** The spec's mask as one MaskMod (null: no mask beyond an optional plain causal handled natively). */
function specMask(n: Normalized, docIds?: Tensor): MaskMod | null {
  const parts: MaskMod[] = [];
  const selfCausal = !!(n.window || n.prefix !== undefined || n.spans);
  if (n.isCausal && !selfCausal && !n.docIds) parts.push(causal());
  if (n.docIds) parts.push(documentMask(docIds ?? n.docIds, { causal: n.isCausal && !selfCausal }));
  if (n.window) parts.push(slidingWindow(n.window.window, { lookahead: n.window.lookahead }));
  if (n.prefix !== undefined) parts.push(prefixLM(n.prefix));
  if (n.spans) parts.push(imageBlocks(n.spans));
  if (n.maskMod) parts.push(n.maskMod);
  if (parts.length === 0) return null;
  return parts.length === 1 ? parts[0]! : andMasks(...parts);
}

function specScoreMod(n: Normalized, slopes?: Tensor): ScoreMod | undefined {
  const mods: ScoreMod[] = [];
  if (n.scoreMod) mods.push(n.scoreMod);
  if (slopes) mods.push(alibi(slopes));
  if (n.softcap !== undefined) mods.push(softcapMod(n.softcap));
  if (mods.length === 0) return undefined;
  return mods.length === 1 ? mods[0] : composeScoreMods(...mods);
}

// ------------------------------------------------------------------ cache

type Built =
  | { kind: 'block'; blockMask: BlockMask; owned: Tensor[] }
  | { kind: 'dense'; mask: Tensor; owned: Tensor[] };

interface Entry {
  key: string;
  promise: Promise<Built>;
  built?: Built;
  bytes: number;
  pins: number;
  evicted: boolean;
}

/** Counters of the mask cache of {@link attention} (see {@link attentionCacheStats}). */
export interface AttentionCacheStats {
  /** Masks held now. */
  entries: number;
  /** Calls that found their mask in the cache. */
  hits: number;
  /** Calls that had to build a mask. */
  misses: number;
  /** Masks built so far (block masks for flex, dense bool masks for sdpa). */
  builds: number;
  /** Masks dropped to stay within the limits. */
  evictions: number;
  /** Bytes held by cached dense (sdpa) masks. */
  denseBytes: number;
  /** Bytes held by cached block masks' index arrays (host copies). */
  blockMaskBytes: number;
  /** Limit on the number of cached masks. */
  maxEntries: number;
  /** Limit on the bytes of cached dense masks (the newest mask is always kept). */
  maxDenseBytes: number;
}

const cache = new Map<string, Entry>();
const stats = { hits: 0, misses: 0, builds: 0, evictions: 0 };
let maxEntries = 32;
let maxDenseBytes = 2 ** 30;
const ids = new WeakMap<object, number>();
let nextId = 1;

function idOf(x: object): number {
  let id = ids.get(x);
  if (id === undefined) { id = nextId++; ids.set(x, id); }
  return id;
}

function release(e: Entry): void {
  const b = e.built;
  if (!b) return;
  if (b.kind === 'block') b.blockMask.dispose();
  else if (!b.mask.disposed) b.mask.dispose();
  for (const t of b.owned) if (!t.disposed) t.dispose();
  e.built = undefined;
}

function evict(e: Entry): void {
  cache.delete(e.key);
  e.evicted = true;
  stats.evictions++;
  if (e.pins === 0) release(e);
}

function trim(keep: Entry): void {
  for (const e of cache.values()) {
    if (cache.size <= maxEntries) break;
    if (e !== keep) evict(e);
  }
  let dense = 0;
  for (const e of cache.values()) if (e.built?.kind === 'dense') dense += e.bytes;
  for (const e of cache.values()) {
    if (dense <= maxDenseBytes) break;
    if (e !== keep && e.built?.kind === 'dense') { dense -= e.bytes; evict(e); }
  }
}

async function acquire(key: string, build: () => Promise<Built>): Promise<Entry> {
  let e = cache.get(key);
  if (e) {
    stats.hits++;
    cache.delete(key);
    cache.set(key, e); // most recently used last
  } else {
    stats.misses++;
    stats.builds++;
    const entry: Entry = { key, promise: build(), bytes: 0, pins: 0, evicted: false };
    e = entry;
    cache.set(key, entry);
    entry.promise.then((b) => {
      entry.built = b;
      entry.bytes = b.kind === 'dense' ? b.mask.numel : Object.values(b.blockMask.host).reduce((s, a) => s + a.byteLength, 0);
      if (entry.evicted && entry.pins === 0) release(entry);
      else if (!entry.evicted) trim(entry);
    }, () => {
      if (cache.get(key) === entry) cache.delete(key);
    });
  }
  e.pins++;
  try {
    await e.promise;
  } catch (err) {
    e.pins--;
    throw err;
  }
  return e;
}

function unpin(e: Entry): void {
  e.pins--;
  if (e.evicted && e.pins === 0) release(e);
}

/** Statistics of the mask cache used by {@link attention}. */
export function attentionCacheStats(): AttentionCacheStats {
  let denseBytes = 0, blockMaskBytes = 0;
  for (const e of cache.values()) {
    if (e.built?.kind === 'dense') denseBytes += e.bytes;
    else if (e.built?.kind === 'block') blockMaskBytes += e.bytes;
  }
  return { entries: cache.size, ...stats, denseBytes, blockMaskBytes, maxEntries, maxDenseBytes };
}

/**
 * Drops every cached mask (device memory is freed as soon as no call in flight
 * uses it) and resets the counters. Call it after changing a `docIds` tensor
 * (or a tensor captured by `spec.maskMod`) in place.
 */
export function clearAttentionCache(): void {
  for (const e of [...cache.values()]) evict(e);
  scalarMemo.clear();
  objectMemo = new WeakMap();
  stats.hits = 0; stats.misses = 0; stats.builds = 0; stats.evictions = 0;
}

/**
 * Sets the limits of the mask cache: `maxEntries` masks (default 32) and
 * `maxDenseBytes` bytes of dense sdpa masks (default 1 GiB; the newest mask
 * is kept even when larger). Shrinking evicts at once.
 */
export function configureAttentionCache(options: { maxEntries?: number; maxDenseBytes?: number }): void {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an object { maxEntries, maxDenseBytes }', describeValue(options));
  if (options.maxEntries !== undefined) maxEntries = nonNegInt(options.maxEntries, 'options.maxEntries', true);
  if (options.maxDenseBytes !== undefined) {
    const b = options.maxDenseBytes;
    if (typeof b !== 'number' || !(b >= 0)) throw new InvalidArgumentError('options.maxDenseBytes', 'a non-negative number of bytes', describeValue(b));
    maxDenseBytes = b;
  }
  const all = [...cache.values()];
  const newest = all[all.length - 1];
  if (newest) trim(newest);
}

/**
 * Cache key: structure of the mask and identity of its captured tensors (`modKey`),
 * its params, dims, device, kind. Equal masks traced twice share a key.
 */
function cacheKey(kind: 'block' | 'dense', mod: MaskMod, modKey: string, params: Record<string, number>,
  B: number, H: number, Sq: number, Skv: number, device: Device): string {
  const ps = mod.params.map((p) => `${p.name}=${params[p.name]}`).join(',');
  return `${kind}|${device}|${B}x${H}x${Sq}x${Skv}|${modKey}|${ps}`;
}

/** Effective batch/head extents of a mask: 1 where the mask does not read b / h. */
function maskDims(mod: MaskMod, d: QkvDims): { B: number; H: number } {
  const use = argUse(mod);
  return { B: use.b ? d.B : 1, H: use.h ? d.Hq : 1 };
}

/** `hold`: the claims of the call that builds it (captured tensors are read through it). */
async function buildBlockMask(hold: Hold, mod: MaskMod, params: Record<string, number>, B: number, H: number, d: QkvDims,
  device: Device): Promise<Built> {
  // Captured tensors (e.g. docIds) not on q's device are copied once, here, instead of on every call.
  const map = new Map<CapturedTensorLike, CapturedTensorLike>();
  const owned: Tensor[] = [];
  for (const t of mod.tensors) {
    if (t instanceof Tensor && t.device !== device) {
      const c = await (hold.get(t) as Tensor).toDevice(device);
      map.set(t, c);
      owned.push(c);
    }
  }
  const m = retargetMask(mod, map);
  const blockMask = await createBlockMaskIn(hold, m, B, H, d.Sq, d.Skv, { device, params });
  return { kind: 'block', blockMask, owned };
}

/**
 * Dense bool mask [B, H, Sq, Skv] (B/H of 1 broadcast): tiles are classified
 * first (analytically or by the block-mask kernel), full tiles are filled,
 * only partial tiles evaluate the mask element by element on the host.
 */
async function buildDenseMask(hold: Hold, mod: MaskMod, params: Record<string, number>, B: number, H: number, d: QkvDims,
  device: Device): Promise<Built> {
  const { Sq, Skv } = d;
  const n = B * H * Sq * Skv;
  if (n > 2 ** 32 - 1) {
    throw new InvalidArgumentError('spec.impl', `a dense mask below 4 GiB for sdpa (B·H·Sq·Skv = ${n}); use impl: 'flex'`, "'sdpa'");
  }
  const bm = await createBlockMaskIn(hold, mod, B, H, Sq, Skv, { device, params });
  const fn = await hostMaskFn(hold.maskMod(mod), params);
  const [bq, bkv] = bm.blockSize;
  const { kvNumBlocks, kvIndices, fullKvNumBlocks, fullKvIndices } = bm.host;
  const QB = bm.numQBlocks, KVB = bm.numKvBlocks;
  const dense = new Uint8Array(n);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = b * H + h;
      const plane = g * Sq * Skv;
      for (let qb = 0; qb < QB; qb++) {
        const row = g * QB + qb;
        const q0 = qb * bq, q1 = Math.min(Sq, q0 + bq);
        for (let j = 0; j < fullKvNumBlocks[row]!; j++) {
          const kb = fullKvIndices[row * KVB + j]!;
          const k0 = kb * bkv, k1 = Math.min(Skv, k0 + bkv);
          for (let q = q0; q < q1; q++) dense.fill(1, plane + q * Skv + k0, plane + q * Skv + k1);
        }
        for (let j = 0; j < kvNumBlocks[row]!; j++) {
          const kb = kvIndices[row * KVB + j]!;
          const k0 = kb * bkv, k1 = Math.min(Skv, k0 + bkv);
          for (let q = q0; q < q1; q++) {
            const o = plane + q * Skv;
            for (let kv = k0; kv < k1; kv++) if (fn(b, h, q, kv)) dense[o + kv] = 1;
          }
        }
      }
    }
  }
  bm.dispose();
  const mask = Tensor.fromHost(dense, [B, H, Sq, Skv], 'bool', { device });
  return { kind: 'dense', mask, owned: [] };
}

// ------------------------------------------------------------------ entry points

/**
 * Which implementation {@link attention} would run for `spec`, and why, without
 * running anything (checks the spec; pass `shapes` to check it against them too).
 *
 * ```ts
 * explainAttention({ impl: 'auto', isCausal: true, docIds });
 * // { impl: 'flex', requested: 'auto', reason: 'auto: docIds is a mask SDPA has no flag for; ...' }
 * ```
 * @param shapes optional `{ q, k, v }` shapes (`[B, H, S, D]`) to validate the spec against.
 */
export function explainAttention(
  spec: AttentionSpec = {},
  shapes?: { q: readonly number[]; k: readonly number[]; v?: readonly number[] },
): AttentionChoice {
  const n = normalize(spec);
  if (shapes) {
    const [B, Hq, Sq, D] = shapes.q as [number, number, number, number];
    const [, Hkv, Skv] = shapes.k as [number, number, number];
    checkAgainstShapes(n, { B, Hq, Hkv, Sq, Skv, D, Dv: (shapes.v ?? shapes.k)[3]! });
  }
  const c = choose(n);
  if (c.impl === 'sdpa') rejectForSdpa(n);
  return c;
}

function rejectForSdpa(n: Normalized): void {
  const opt = scoreModOption(n);
  if (opt) {
    throw new InvalidArgumentError(`spec.${opt}`,
      `impl: 'flex' (or 'auto') for ${opt}: a score mod cannot be expressed by SDPA's fused kernel`, "impl: 'sdpa'");
  }
}

/**
 * Attention from one spec, on either implementation (see {@link AttentionSpec}):
 * `impl: 'sdpa'` (default) runs the fused dense kernel (with a cached dense bool
 * mask for docIds / sliding window / prefix LM / image spans / maskMod), `'flex'`
 * runs flex attention with a cached {@link BlockMask} and score mods for softcap /
 * ALiBi, `'auto'` picks flex when the spec has anything beyond plain causal
 * attention and reports the choice through `spec.onChoice`. Both give the same
 * result within bf16 tolerance.
 *
 * Works for self- and cross-attention (`Sq ≠ Skv`; `docIds` needs `Sq == Skv`)
 * and grouped-query attention (`enableGQA`).
 *
 * @param q Queries `[B, Hq, Sq, D]` (bf16/f16 on the GPU; f32 too on the CPU).
 * @param k Keys `[B, Hkv, Skv, D]`.
 * @param v Values `[B, Hkv, Skv, Dv]`.
 * @returns Output `[B, Hq, Sq, Dv]` (or `{ out, lse }` with `returnLse`).
 * @throws InvalidArgumentError (and its ShapeError / DTypeError / DeviceError
 *   subclasses) naming the option, e.g. `spec.docIds`, `spec.softcap` under `impl: 'sdpa'`.
 */
export async function attention(q: Tensor, k: Tensor, v: Tensor, spec?: AttentionSpec & { returnLse?: false }): Promise<Tensor>;
export async function attention(q: Tensor, k: Tensor, v: Tensor, spec: AttentionSpec & { returnLse: true }): Promise<AttentionWithLse>;
export async function attention(q: Tensor, k: Tensor, v: Tensor, spec?: AttentionSpec): Promise<Tensor | AttentionWithLse>;
export async function attention(q: Tensor, k: Tensor, v: Tensor, spec: AttentionSpec = {}): Promise<Tensor | AttentionWithLse> {
  const n = normalize(spec);
  const d = checkQkv(q, k, v, n.enableGQA);
  checkAgainstShapes(n, d);
  if (n.backend === 'cuda' && !q.isCuda) {
    throw new DeviceError('spec.backend', "CUDA tensors for backend 'cuda' (move them with toDevice('cuda'))", q.device);
  }
  const choice = choose(n);
  if (choice.impl === 'sdpa') rejectForSdpa(n);
  n.onChoice?.(choice);
  // The call holds every tensor of the spec from now on (the inner op and the
  // mask build read them through `hold`); the mods and the cache keep the user's.
  let qkv!: [Tensor, Tensor, Tensor];
  return runOp('attention', n.signal, undefined, (hold) => {
    qkv = [hold.tensor(q, 'q'), hold.tensor(k, 'k'), hold.tensor(v, 'v')];
    if (n.docIds) hold.tensor(n.docIds, 'spec.docIds');
    if (n.slopes instanceof Tensor) hold.tensor(n.slopes, 'spec.alibiSlopes');
    hold.captured(n.maskMod, 'spec.maskMod');
    hold.captured(n.scoreMod, 'spec.scoreMod');
  }, (hold) => runAttention(hold, ...qkv, n, d, choice));
}

async function runAttention(hold: Hold, q: Tensor, k: Tensor, v: Tensor, n: Normalized, d: QkvDims,
  choice: AttentionChoice): Promise<Tensor | AttentionWithLse> {
  const common = {
    ...(n.scale !== undefined ? { scale: n.scale } : {}),
    ...(n.backend ? { backend: n.backend } : {}),
    ...(n.signal ? { signal: n.signal } : {}),
    enableGQA: n.enableGQA,
  };
  const device = q.device;

  if (choice.impl === 'sdpa') {
    const { mod: mask, key: modKey } = hasMaskBeyondCausal(n) ? memoMod(n.docIds ?? n.maskMod, maskFastKey(n), () => specMask(n)) : { mod: null, key: '' };
    if (!mask) {
      return sdpaIn(hold, q, k, v, { ...common, isCausal: n.isCausal, returnLse: n.returnLse });
    }
    const { B, H } = maskDims(mask, d);
    const entry = await acquire(cacheKey('dense', mask, modKey, n.params, B, H, d.Sq, d.Skv, device),
      () => buildDenseMask(hold, mask, n.params, B, H, d, device));
    try {
      const built = entry.built!;
      if (built.kind !== 'dense') throw new InternalError('dense mask expected');
      return await sdpaIn(hold, q, k, v, { ...common, attnMask: built.mask, returnLse: n.returnLse });
    } finally {
      unpin(entry);
    }
  }

  // flex
  let slopes: Tensor | undefined;
  let ownSlopes = false;
  if (n.slopes instanceof Float32Array) {
    slopes = Tensor.fromHost(n.slopes, [n.slopes.length], 'f32', { device });
    ownSlopes = true;
  } else {
    slopes = n.slopes;
  }
  try {
    const sm = ownSlopes ? specScoreMod(n, slopes)
      : memoMod(n.scoreMod ?? slopes, `s${n.scoreMod ? idOf(n.scoreMod) : ''}|${slopes ? idOf(slopes) : ''}|${n.softcap ?? ''}`,
        () => specScoreMod(n, slopes) ?? null).mod ?? undefined;
    const { mod: mask, key: modKey } = memoMod(n.docIds ?? n.maskMod, maskFastKey(n), () => specMask(n));
    const opts = { ...common, returnLse: n.returnLse, ...(sm ? { scoreMod: sm } : {}), params: n.params };
    if (!mask) return unwrap(await flexIn(hold, q, k, v, opts), n.returnLse);
    const { B, H } = maskDims(mask, d);
    const entry = await acquire(cacheKey('block', mask, modKey, n.params, B, H, d.Sq, d.Skv, device),
      () => buildBlockMask(hold, mask, n.params, B, H, d, device));
    try {
      const built = entry.built!;
      if (built.kind !== 'block') throw new InternalError('block mask expected');
      return unwrap(await flexIn(hold, q, k, v, { ...opts, blockMask: built.blockMask }), n.returnLse);
    } finally {
      unpin(entry);
    }
  } finally {
    // The inner call holds it from the moment it is called.
    if (ownSlopes) slopes!.dispose();
  }
}

function unwrap(r: { out: Tensor; lse?: Tensor }, returnLse: boolean): Tensor | AttentionWithLse {
  return returnLse ? { out: r.out, lse: r.lse! } : r.out;
}
