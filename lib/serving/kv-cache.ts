/**
 * `KvCache`: a paged KV cache for serving. Keys and values live in two pools
 * `[numPages, pageSize, Hkv, D]`; each sequence owns a list of pages (its page
 * table) and a length. `append` writes a ragged batch of new tokens into their
 * pages (one kernel launch on the GPU); `fork` shares a sequence's pages
 * (reference-counted; the shared last page is copied on the first write
 * after the fork); `free` gives pages back.
 *
 * Every call either succeeds or leaves the cache as it was: `append`
 * validates everything and counts the pages it needs before it takes one,
 * and writes only into pages it took or positions past a sequence's length,
 * which no reader sees until the lengths are committed at the end.
 * @module
 */
import { checkSignal, throwIfAborted } from '../abort.js';
import { defaultDevice, type Device } from '../device.js';
import { itemSize } from '../dtype.js';
import {
  DTypeError, DeviceError, DisposedError, GraphCaptureError, GraphReplayError, InvalidArgumentError, KvCacheFullError,
  ShapeError, UnknownSequenceError,
} from '../errors.js';
import type { KernelEntry } from '../jit.js';
import { describeValue } from '../messages.js';
import { native } from '../native.js';
import { runOp } from '../ownership.js';
import { Tensor } from '../tensor.js';
import { checkKeys, checkTensor } from '../validate.js';
import { appendKernel, launchAppend, launchAppendAt, loadedAppendKernel } from './append-gpu.js';
import { captureOn, type GraphCapture, type TableRegion } from './capture-state.js';
import { BatchTableCache, type BatchTables } from './batch-tables.js';
import type { KvLayout, RaggedKv, RaggedTables } from './paged-kv.js';

/** A sequence of a {@link KvCache} (from `newSequence()` or `fork()`); unique across caches, never reused. */
export type SequenceId = number;

/** Dtypes a KvCache can hold. */
export type KvDType = 'bf16' | 'f16' | 'f32';

/** Options of the {@link KvCache} constructor. */
export interface KvCacheOptions {
  /** Tokens per page (any positive integer; the GPU kernels are built for 16 to 256). */
  pageSize: number;
  /** Pages in the pool: the cache holds at most `numPages * pageSize` tokens, over all sequences. */
  numPages: number;
  /** KV heads (`Hkv`). */
  numKvHeads: number;
  /** Head dimension (`D`) of keys and values. */
  headDim: number;
  /** Element type of the pools; default `'bf16'`. */
  dtype?: KvDType;
  /** Where the pools live; default: `'cuda:0'` when a GPU is usable, else `'cpu'`. */
  device?: Device | 'cuda';
}

/** Options of {@link KvCache.append}. */
export interface AppendOptions {
  /** New tokens of each sequence, in the order of `seqs`; they must add up to `k.shape[0]`. */
  tokens: readonly number[];
  /** An aborted signal rejects with an AbortError before anything is written. */
  signal?: AbortSignal;
}

/** What {@link KvCache.stats} reports. */
export interface KvCacheStats {
  pageSize: number;
  numPages: number;
  /** Pages an append can take now. */
  freePages: number;
  /** Pages held by at least one sequence. */
  usedPages: number;
  /** Pages held by more than one sequence (after `fork`). */
  sharedPages: number;
  /** Pages freed while a CPU attention call was still reading them: free once it ends. */
  pendingPages: number;
  /** Live sequences. */
  sequences: number;
  /** Tokens over all live sequences (a shared prefix counts once per sequence). */
  tokens: number;
  /** Bytes of the two pools. */
  bytes: number;
}

interface SeqState {
  pages: number[];
  length: number;
  /** The stamp of the last #states call that listed it (finds a sequence given twice without a Set). */
  seen: number;
}

/**
 * What one sequence's part of an append does: the pages it writes (from page
 * index `first` = floor(length / pageSize) on: the last page or its copy on
 * write, then new ones), and the copy of a shared last page. Only the written
 * pages are listed, so planning an append costs the same for a long sequence
 * as for a short one.
 */
interface AppendPlan {
  st: SeqState;
  t: number;
  first: number;
  written: number[];
  copy: { from: number; to: number; tokens: number } | undefined;
}

/** This cache's part of the CUDA graph capture in progress: its host state is put back when the capture ends. */
interface CacheCapture {
  capture: GraphCapture;
  /** Tokens each sequence was appended in this capture (at most one append per sequence). */
  appended: Map<SequenceId, number>;
}

/**
 * Page-table rows of a captured call, written into a replay's table image:
 * only what changed since the last replay (a sequence's earlier pages never
 * change; its last one does on a copy on write).
 */
class RowWriter {
  readonly #count: Int32Array;
  readonly #last: Int32Array;
  constructor(readonly region: TableRegion, readonly base: number, readonly width: number, rows: number) {
    this.#count = new Int32Array(rows);
    this.#last = new Int32Array(rows).fill(-1);
  }
  write(i: number, pages: readonly number[]): void {
    const len = pages.length, had = this.#count[i]!;
    if (len === had && (len === 0 || pages[len - 1] === this.#last[i])) return;
    const from = Math.max(0, Math.min(had, len) - 1), at = this.base + i * this.width;
    for (let j = from; j < len; j++) this.region.host[at + j] = pages[j]!;
    this.region.dirty(at + from, at + len);
    this.#count[i] = len;
    this.#last[i] = len ? pages[len - 1]! : -1;
  }
}

const APPEND_KEYS = ['tokens', 'signal'] as const;
const MAX_LEN = 0x7fffffff;
let nextId = 1;

function checkCount(value: unknown, argument: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(argument, `an integer in [${min}, ${max}]`, describeValue(value));
  }
  return value;
}

/**
 * A paged KV cache (pools `[numPages, pageSize, numKvHeads, headDim]`).
 *
 * ```ts
 * const cache = new KvCache({ pageSize: 16, numPages: 8192, numKvHeads: 8, headDim: 128, dtype: 'bf16' });
 * const a = cache.newSequence(), b = cache.newSequence();
 * await cache.append([a, b], k, v, { tokens: [5, 3] });   // k, v: [8, 8, 128]
 * const out = await pagedAttention(q, cache, { seqs: [a, b], queryTokens: [5, 3] });
 * cache.free(a);
 * ```
 */
export class KvCache {
  readonly pageSize: number;
  readonly numPages: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly dtype: KvDType;
  readonly device: Device;
  readonly #k: Tensor;
  readonly #v: Tensor;
  readonly #seqs = new Map<SequenceId, SeqState>();
  /** Free page ids; appends take from the end. */
  readonly #free: number[] = [];
  /** Sequences holding each page. */
  readonly #refs: Int32Array;
  /** Pages whose last holder went while CPU readers were in flight. */
  #pending: number[] = [];
  #readers = 0;
  #stamp = 0;
  readonly #batches = new BatchTableCache();
  /** Bumped when page lists change other than by growing or replacing their last page (a capture's undo). */
  #epoch = 0;
  #disposed = false;
  #cap: CacheCapture | undefined;
  /** The eager append's table image and device scratch buffer (see #appendScratch). */
  #appendHost: Int32Array | undefined;
  #appendDev: Tensor | undefined;

  constructor(options: KvCacheOptions) {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'a KvCacheOptions object', describeValue(options));
    checkKeys(options, ['pageSize', 'numPages', 'numKvHeads', 'headDim', 'dtype', 'device']);
    this.pageSize = checkCount(options.pageSize, 'options.pageSize', 1, 1 << 20);
    this.numPages = checkCount(options.numPages, 'options.numPages', 1, MAX_LEN);
    this.numKvHeads = checkCount(options.numKvHeads, 'options.numKvHeads', 1, 1 << 16);
    this.headDim = checkCount(options.headDim, 'options.headDim', 1, 1 << 16);
    const dtype = options.dtype ?? 'bf16';
    if (dtype !== 'bf16' && dtype !== 'f16' && dtype !== 'f32') throw new DTypeError('options.dtype', "'bf16', 'f16' or 'f32'", describeValue(dtype));
    this.dtype = dtype;
    const shape = [this.numPages, this.pageSize, this.numKvHeads, this.headDim];
    const device = options.device ?? defaultDevice();
    this.#k = Tensor.empty(shape, dtype, { device });
    try {
      this.#v = Tensor.empty(shape, dtype, { device });
    } catch (e) {
      this.#k.dispose();
      throw e;
    }
    this.device = this.#k.device;
    this.#refs = new Int32Array(this.numPages);
    for (let p = this.numPages - 1; p >= 0; p--) this.#free.push(p);
  }

  /** The key pool `[numPages, pageSize, numKvHeads, headDim]` (owned by the cache: do not dispose it). */
  get keys(): Tensor { this.#alive(); return this.#k; }
  /** The value pool, laid out like {@link KvCache.keys}. */
  get values(): Tensor { this.#alive(); return this.#v; }

  /** A new, empty sequence. */
  newSequence(): SequenceId {
    this.#alive();
    this.#refuseCapture('KvCache.newSequence()');
    const id = nextId++;
    this.#seqs.set(id, { pages: [], length: 0, seen: 0 });
    return id;
  }

  /**
   * A new sequence sharing `seq`'s tokens (beam search, a shared system
   * prompt): its pages are shared until one of the two writes into a shared
   * page, which is then copied. Takes no page now.
   */
  fork(seq: SequenceId): SequenceId {
    const st = this.#state(seq, 'seq');
    this.#refuseCapture('KvCache.fork()');
    const id = nextId++;
    for (const p of st.pages) this.#refs[p]!++;
    this.#seqs.set(id, { pages: [...st.pages], length: st.length, seen: 0 });
    return id;
  }

  /** Drops `seq`; its pages go back to the pool where no other sequence holds them. Using `seq` afterwards is an error. */
  free(seq: SequenceId): void {
    const st = this.#state(seq, 'seq');
    this.#refuseCapture('KvCache.free()');
    this.#seqs.delete(seq);
    for (const p of st.pages) {
      if (--this.#refs[p]! === 0) (this.#readers > 0 ? this.#pending : this.#free).push(p);
    }
  }

  /** Tokens cached for `seq`. */
  length(seq: SequenceId): number {
    return this.#state(seq, 'seq').length;
  }

  /** Whether `seq` is a live sequence of this cache. */
  has(seq: SequenceId): boolean {
    return !this.#disposed && this.#seqs.has(seq);
  }

  /** The page ids of `seq`, in order (a copy). */
  pageTable(seq: SequenceId): number[] {
    return [...this.#state(seq, 'seq').pages];
  }

  /** Live sequences, oldest first. */
  sequences(): SequenceId[] {
    this.#alive();
    return [...this.#seqs.keys()];
  }

  /** Pages needed to append `tokens[i]` tokens to `seqs[i]` (copies on write included); what `append` checks against `stats().freePages`. */
  pagesNeeded(seqs: readonly SequenceId[], tokens: readonly number[]): number {
    this.#alive();
    const states = this.#states(seqs, 'seqs');
    const toks = this.#tokens(tokens, seqs.length, 'tokens');
    return states.reduce((n, st, i) => n + this.#need(st, toks[i]!), 0);
  }

  stats(): KvCacheStats {
    this.#alive();
    let used = 0, shared = 0, tokens = 0;
    for (let p = 0; p < this.numPages; p++) {
      if (this.#refs[p]! > 0) used++;
      if (this.#refs[p]! > 1) shared++;
    }
    for (const st of this.#seqs.values()) tokens += st.length;
    return {
      pageSize: this.pageSize, numPages: this.numPages, freePages: this.#free.length, usedPages: used, sharedPages: shared,
      pendingPages: this.#pending.length, sequences: this.#seqs.size, tokens,
      bytes: 2 * this.#k.numel * itemSize(this.dtype),
    };
  }

  /**
   * Appends `tokens[i]` new tokens to `seqs[i]`. `k` and `v` are
   * `[T, numKvHeads, headDim]` in the cache's dtype and on its device, the
   * tokens packed in the order of `seqs` (T = the sum of `tokens`). On the
   * GPU it is one kernel launch; the promise resolves once it is enqueued.
   *
   * Fails, with the cache unchanged, on an unknown or freed sequence, a
   * sequence given twice, token counts that do not add up, mismatched
   * shapes, dtypes or devices, and (KvCacheFullError, saying how many pages
   * are free) when the pool has too few free pages.
   */
  append(seqs: readonly SequenceId[], k: Tensor, v: Tensor, options: AppendOptions): Promise<void> {
    const signal = checkSignal(options?.signal);
    let inputs!: { k: Tensor; v: Tensor };
    return runOp('KvCache.append', signal, undefined, (hold) => {
      this.#alive();
      if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object with tokens', describeValue(options));
      checkKeys(options, APPEND_KEYS);
      checkTensor(k, 'k');
      checkTensor(v, 'v');
      inputs = { k: hold.tensor(k, 'k'), v: hold.tensor(v, 'v') };
    }, async () => {
      // The GPU kernel is loaded first; everything after it runs without an
      // await, so concurrent appends see each other's pages and lengths.
      // Once the kernel is resident (every append after the first) there is no await at all.
      let kernel: KernelEntry | undefined;
      if (this.#k.isCuda) kernel = loadedAppendKernel(this.#k.deviceIndex) ?? await appendKernel(this.#k.deviceIndex);
      throwIfAborted(signal, 'KvCache.append');
      this.#appendNow(seqs, inputs.k, inputs.v, options.tokens, kernel, kernel ? captureOn(this.#k.deviceIndex) : undefined);
    });
  }

  /** Frees the pools. Attention calls already made keep what they read until they end; every later use throws. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#seqs.clear();
    this.#k.dispose();
    this.#v.dispose();
    this.#appendDev?.dispose();
    this.#batches.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** @internal The tables of `seqs` for an attention call with `queryTokens[i]` query tokens each (validated by the caller). */
  tables(seqs: readonly SequenceId[], queryTokens: readonly number[], argument = 'options.seqs'): RaggedTables {
    const states = this.#states(seqs, argument, true);
    let maxPages = 1;
    for (const st of states) maxPages = Math.max(maxPages, st.pages.length);
    const n = states.length;
    const pageTable = new Int32Array(n * maxPages), seqLens = new Int32Array(n), queryStart = new Int32Array(n + 1);
    states.forEach((st, i) => {
      pageTable.set(st.pages, i * maxPages);
      seqLens[i] = st.length;
      queryStart[i + 1] = queryStart[i]! + queryTokens[i]!;
    });
    return { pageTable, maxPagesPerSeq: maxPages, seqLens, queryStart };
  }

  /**
   * @internal The device tables of batch `seqs` for a GPU attention call with
   * `queryTokens[i]` query tokens each (validated by the caller; the sequences
   * here), kept between calls and brought up to date (lib/serving/batch-tables.ts).
   */
  batch(seqs: readonly SequenceId[], queryTokens: readonly number[], argument = 'options.seqs'): BatchTables {
    const states = this.#states(seqs, argument, true);
    return this.#batches.take(seqs, states, queryTokens, this.#epoch);
  }

  /**
   * @internal A CPU reader starts (it reads the pools in place off the main
   * thread): pages freed until the returned function is called stay out of
   * the free list, so no append overwrites them meanwhile.
   */
  beginRead(): () => void {
    this.#readers++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (--this.#readers === 0 && this.#pending.length) {
        this.#free.push(...this.#pending);
        this.#pending = [];
      }
    };
  }

  // ------------------------------------------------------------------ internals

  #alive(): void {
    if (this.#disposed) throw new DisposedError('KvCache');
  }

  /** The state of `seq`; `index` (when given) is appended to `argument` in the error, which is only built on failure. */
  #state(seq: unknown, argument: string, index = -1): SeqState {
    this.#alive();
    const st = typeof seq === 'number' ? this.#seqs.get(seq) : undefined;
    if (!st) {
      throw new UnknownSequenceError(index >= 0 ? `${argument}[${index}]` : argument, 'a live sequence of this KvCache (from newSequence() or fork())',
        typeof seq === 'number' ? `sequence ${seq} (freed, or made by another KvCache)` : describeValue(seq));
    }
    return st;
  }

  #states(seqs: unknown, argument: string, allowRepeats = false): SeqState[] {
    if (!Array.isArray(seqs)) throw new InvalidArgumentError(argument, 'an array of sequences', describeValue(seqs));
    const stamp = ++this.#stamp;
    const states: SeqState[] = new Array(seqs.length);
    for (let i = 0; i < seqs.length; i++) {
      const s: unknown = seqs[i];
      const st = this.#state(s, argument, i);
      if (!allowRepeats && st.seen === stamp) throw new InvalidArgumentError(`${argument}[${i}]`, 'each sequence once', `sequence ${String(s)} again`);
      st.seen = stamp;
      states[i] = st;
    }
    return states;
  }

  #tokens(tokens: unknown, count: number, argument: string): number[] {
    if (!Array.isArray(tokens) && !(tokens instanceof Int32Array)) {
      throw new InvalidArgumentError(argument, 'an array of token counts, one per sequence', describeValue(tokens));
    }
    const t = Array.from(tokens as ArrayLike<unknown>);
    if (t.length !== count) throw new ShapeError(argument, `${count} token counts (one per sequence)`, `${t.length}`);
    for (let i = 0; i < t.length; i++) checkCount(t[i], `${argument}[${i}]`, 0, MAX_LEN);
    return t as number[];
  }

  /** Pages an append of `t` tokens to `st` takes: the new ones, plus a copy of a shared last page it writes into. */
  #need(st: SeqState, t: number): number {
    if (t === 0) return 0;
    const P = this.pageSize;
    const cow = st.length % P !== 0 && this.#refs[st.pages[st.pages.length - 1]!]! > 1 ? 1 : 0;
    return Math.ceil((st.length + t) / P) - Math.ceil(st.length / P) + cow;
  }

  #appendNow(seqs: readonly SequenceId[], k: Tensor, v: Tensor, tokens: readonly number[], kernel: KernelEntry | undefined,
    cap: GraphCapture | undefined): void {
    this.#alive();
    const states = this.#states(seqs, 'seqs');
    const toks = this.#tokens(tokens, states.length, 'options.tokens');
    this.#checkNew(k, 'k');
    this.#checkNew(v, 'v');
    if (v.shape[0] !== k.shape[0]) throw new ShapeError('v', `${k.shape[0]} tokens like k`, `${v.shape[0]}`);
    const T = k.shape[0]!;
    let sum = 0;
    for (let i = 0; i < toks.length; i++) sum += toks[i]!;
    if (sum !== T) throw new ShapeError('options.tokens', `token counts adding up to k.shape[0] = ${T}`, `counts adding up to ${sum}`);
    let need = 0;
    for (let i = 0; i < states.length; i++) {
      const st = states[i]!;
      if (st.length + toks[i]! > MAX_LEN) throw new InvalidArgumentError(`options.tokens[${i}]`, `at most ${MAX_LEN - st.length} more tokens for this sequence`, `${toks[i]}`);
      need += this.#need(st, toks[i]!);
    }
    if (need > this.#free.length) {
      const pending = this.#pending.length ? ` (${this.#pending.length} more are freed once the CPU attention calls reading them end)` : '';
      throw new KvCacheFullError(`KvCache.append: needs ${need} free pages, the cache has ${this.#free.length} free of ${this.numPages}${pending}; ` +
        'free finished sequences or make a larger cache', need, this.#free.length);
    }
    if (T === 0) return;
    if (cap) this.#checkCapturedAppend(cap, seqs, states, toks);

    const { plans, taken } = this.#plan(states, toks, need);

    // The writers take a contiguous last dim and one set of token/head strides for k and v.
    const same = k.strides[2] === 1 && v.strides[2] === 1 && k.strides[0] === v.strides[0] && k.strides[1] === v.strides[1];
    const kk = same ? k : k.contiguous(), vv = same ? v : v.contiguous();
    try {
      if (cap) this.#recordAppend(cap, seqs, toks, plans, kk, vv, kernel!);
      else if (kernel) this.#writeGpu(plans, kk, vv, kernel);
      else this.#writeCpu(plans, kk, vv);
    } finally {
      if (kk !== k) kk.dispose();
      if (vv !== v) vv.dispose();
    }
    this.#commit(plans, taken);
    if (cap) seqs.forEach((s, i) => this.#cap!.appended.set(s, toks[i]!));
  }

  /**
   * Plan: the pages each sequence's new tokens go to (pages taken from the end
   * of the free list) and the copy-on-write copies. Nothing visible changes
   * until {@link KvCache.#commit}.
   */
  #plan(states: readonly SeqState[], toks: readonly number[], need: number): { plans: AppendPlan[]; taken: number } {
    const taken = this.#free.length - need;
    let next = this.#free.length;
    const P = this.pageSize;
    const plans: AppendPlan[] = new Array(states.length);
    for (let i = 0; i < states.length; i++) {
      const st = states[i]!, t = toks[i]!;
      const first = Math.floor(st.length / P), end = t > 0 ? Math.ceil((st.length + t) / P) : first;
      const written: number[] = [];
      let copy: { from: number; to: number; tokens: number } | undefined;
      if (t > 0 && st.length % P !== 0) {
        const last = st.pages[first]!;
        if (this.#refs[last]! > 1) {
          copy = { from: last, to: this.#free[--next]!, tokens: st.length % P };
          written.push(copy.to);
        } else written.push(last);
      }
      while (first + written.length < end) written.push(this.#free[--next]!);
      plans[i] = { st, t, first, written, copy };
    }
    return { plans, taken };
  }

  #commit(plans: readonly AppendPlan[], taken: number): void {
    this.#free.length = taken;
    for (const pl of plans) {
      if (pl.copy && --this.#refs[pl.copy.from]! === 0) this.#free.push(pl.copy.from);
      const pages = pl.st.pages;
      for (let j = 0; j < pl.written.length; j++) {
        const at = pl.first + j, p = pl.written[j]!;
        if (at >= pages.length || pages[at] !== p) this.#refs[p] = 1;
        pages[at] = p;
      }
      pl.st.length += pl.t;
    }
  }

  #checkNew(t: Tensor, name: string): void {
    if (t.ndim !== 3 || t.shape[1] !== this.numKvHeads || t.shape[2] !== this.headDim) {
      throw new ShapeError(name, `a 3-D tensor [T, ${this.numKvHeads}, ${this.headDim}] (numKvHeads, headDim of the cache)`, `shape [${t.shape.join(', ')}]`);
    }
    if (t.dtype !== this.dtype) throw new DTypeError(name, `dtype ${this.dtype} (the cache's)`, t.dtype);
    if (t.device !== this.device) throw new DeviceError(name, `device ${this.device} (the cache's)`, t.device);
  }

  #writeCpu(plans: readonly AppendPlan[], k: Tensor, v: Tensor): void {
    const row = this.numKvHeads * this.headDim, pageStride = this.pageSize * row, P = this.pageSize;
    const pools = [this.#k.hostStorage(), this.#v.hostStorage()] as const;
    const srcs = [k.hostStorage(), v.hostStorage()] as const;
    const srcOff = [k.offset, v.offset], tokStride = k.strides[0]!, headStride = k.strides[1]!;
    const packed = headStride === this.headDim && tokStride === row;
    let tok = 0;
    for (const pl of plans) {
      for (let w = 0; w < 2; w++) {
        const dst = pools[w]!, src = srcs[w]!;
        if (pl.copy) dst.copyWithin(pl.copy.to * pageStride, pl.copy.from * pageStride, pl.copy.from * pageStride + pl.copy.tokens * row);
        for (let done = 0; done < pl.t;) {
          const pos = pl.st.length + done;
          const page = pl.written[Math.floor(pos / P) - pl.first]!, slot = pos % P;
          const run = packed ? Math.min(P - slot, pl.t - done) : 1;
          const s0 = srcOff[w]! + (tok + done) * tokStride;
          const d0 = page * pageStride + slot * row;
          if (packed) {
            dst.set(src.subarray(s0, s0 + run * row), d0);
          } else {
            for (let h = 0; h < this.numKvHeads; h++) dst.set(src.subarray(s0 + h * headStride, s0 + h * headStride + this.headDim), d0 + h * this.headDim);
          }
          done += run;
        }
      }
      tok += pl.t;
    }
  }

  /** The copies on write of `plans` (device to device, stream-ordered before the append kernel). */
  #copyOnWrite(plans: readonly AppendPlan[]): void {
    const es = itemSize(this.dtype), rowBytes = this.numKvHeads * this.headDim * es, pageBytes = this.pageSize * rowBytes;
    for (const pl of plans) {
      if (!pl.copy) continue;
      for (const pool of [this.#k, this.#v]) {
        native().copyDtoD(pool.buffer(), pl.copy.to * pageBytes, pool.buffer(), pl.copy.from * pageBytes, pl.copy.tokens * rowBytes);
      }
    }
  }

  /**
   * The append kernel addresses each sequence's new tokens from its start
   * length through its page-table row; it is given only the written pages
   * (the row starts at page `first`, the start length is taken modulo the page
   * size), so its tables are a few ints per sequence however long it is.
   */
  #writeGpu(plans: readonly AppendPlan[], k: Tensor, v: Tensor, kernel: KernelEntry): void {
    this.#copyOnWrite(plans);
    const n = plans.length, P = this.pageSize;
    let width = 1;
    for (const pl of plans) if (pl.written.length > width) width = pl.written.length;
    const host = this.#appendImage(n + 1 + n + n * width);
    const lens0 = n + 1, rows0 = 2 * n + 1;
    host[0] = 0;
    for (let i = 0; i < n; i++) {
      const pl = plans[i]!;
      host[i + 1] = host[i]! + pl.t;
      host[lens0 + i] = pl.st.length % P;
      const at = rows0 + i * width;
      for (let j = 0; j < pl.written.length; j++) host[at + j] = pl.written[j]!;
    }
    launchAppend(kernel, { kPool: this.#k, vPool: this.#v, k, v, pageSize: P, numSeqs: n, maxPagesPerSeq: width },
      this.#appendScratch(host), rows0);
  }

  /** A host image of at least `ints` ints for an append's tables (reused; a view of exactly `ints`). */
  #appendImage(ints: number): Int32Array {
    if (!this.#appendHost || this.#appendHost.length < ints) this.#appendHost = new Int32Array(Math.max(ints, 2 * (this.#appendHost?.length ?? 32)));
    return this.#appendHost.subarray(0, ints);
  }

  /**
   * `host` uploaded into the cache's append scratch buffer. One buffer serves
   * every eager append: its upload and the kernel that reads it are enqueued
   * back to back on the device's stream, so the next append's upload runs
   * after this kernel has read it.
   */
  #appendScratch(host: Int32Array): Tensor {
    if (!this.#appendDev || this.#appendDev.numel < host.length) {
      this.#appendDev?.dispose(); // stream-ordered: earlier appends' kernels still read it
      this.#appendDev = Tensor.empty([Math.max(host.length, this.#appendHost!.length)], 'i32', { device: this.device });
    }
    native().copyHtoD(this.#appendDev.buffer(), 0, host);
    return this.#appendDev;
  }

  // ------------------------------------------------------- CUDA graph capture
  // While a capture is in progress (lib/serving/graph.ts) an append or a
  // pagedAttention is recorded: its kernel reads device tables that each
  // replay rewrites, and a replay step redoes its host part. The cache's host
  // state is put back when the capture ends (nothing ran).

  /** @internal Throws KvCacheFullError unless `pages` pages are free now (a replay's appends, together). */
  requirePages(pages: number): void {
    this.#alive();
    if (pages > this.#free.length) {
      throw new KvCacheFullError(`CudaGraph.replay: its appends need ${pages} free pages, the cache has ${this.#free.length} free of ${this.numPages}; ` +
        'free finished sequences or make a larger cache', pages, this.#free.length);
    }
  }

  /**
   * @internal The RaggedKv of a pagedAttention recorded in capture `cap`: its
   * tables live in the capture's arenas and are rewritten before each replay.
   */
  capturedKv(cap: GraphCapture, seqs: readonly SequenceId[], queryTokens: readonly number[], layout: KvLayout, k: Tensor, v: Tensor): RaggedKv {
    this.#enterCapture(cap);
    const ids = [...seqs], qt = [...queryTokens];
    const states = this.#states(ids, 'options.seqs', true);
    const W = this.#captureWidth(cap), n = states.length, P = this.pageSize;
    states.forEach((st, i) => this.#checkWidth(st.length, W, `options.seqs[${i}]`));
    const add = ids.map((s) => this.#cap!.appended.get(s) ?? 0);
    const lens = this.#captureRegion(cap, n, 'hot');
    const cold = this.#captureRegion(cap, n + 1 + n * W, 'cold');
    const seqLensHost = new Int32Array(n), queryStartHost = new Int32Array(n + 1);
    let maxSeqLen = 0, maxQueryTokens = 0;
    states.forEach((st, i) => {
      seqLensHost[i] = st.length;
      queryStartHost[i + 1] = queryStartHost[i]! + qt[i]!;
      maxSeqLen = Math.max(maxSeqLen, st.length);
      maxQueryTokens = Math.max(maxQueryTokens, qt[i]!);
    });
    cold.host.set(queryStartHost, 0);
    cap.pin(k);
    cap.pin(v);
    const rows = new RowWriter(cold, n + 1, W, n);
    cap.steps.push({
      check: () => {
        this.#alive();
        for (let i = 0; i < n; i++) {
          const st = this.#seqs.get(ids[i]!) ?? this.#state(ids[i], `graph: options.seqs[${i}] of a captured pagedAttention`);
          const len = st.length + add[i]!;
          if (len > W * P) throw this.#tooLong(`options.seqs[${i}] of a captured pagedAttention`, len, W);
        }
        return undefined;
      },
      apply: () => {
        for (let i = 0; i < n; i++) {
          const st = this.#seqs.get(ids[i]!)!;
          lens.host[i] = st.length;
          rows.write(i, st.pages);
        }
        lens.dirty(0, n);
      },
    });
    return {
      k, v, pageSize: layout.pageSize, pageStride: layout.pageStride, tokenStride: layout.tokenStride, headStride: layout.headStride,
      pageTable: cold.tensor.narrow(0, n + 1, n * W).reshape(n, W), seqLens: lens.tensor, queryStart: cold.tensor.narrow(0, 0, n + 1),
      numSeqs: n, maxSeqLen, maxQueryTokens, seqLensHost, queryStartHost,
    };
  }

  #refuseCapture(what: string): void {
    if (this.#k.isCuda && captureOn(this.#k.deviceIndex)) {
      throw new GraphCaptureError(`${what} is not allowed while a CUDA graph is being captured on ${this.device}: the sequences of a ` +
        'captured step are fixed; create, fork and free sequences before captureGraph or between replays');
    }
  }

  /** Joins capture `cap` (once): the host state now is put back when it ends. */
  #enterCapture(cap: GraphCapture): void {
    if (this.#cap?.capture === cap) return;
    const seqs = new Map<SequenceId, SeqState>();
    for (const [id, st] of this.#seqs) seqs.set(id, { pages: [...st.pages], length: st.length, seen: 0 });
    const free = this.#free.slice(), refs = this.#refs.slice(), pending = this.#pending.slice();
    this.#cap = { capture: cap, appended: new Map() };
    cap.onEnd(() => {
      this.#cap = undefined;
      if (this.#disposed) return;
      this.#epoch++;
      this.#seqs.clear();
      for (const [id, st] of seqs) this.#seqs.set(id, st);
      this.#free.length = 0;
      for (const p of free) this.#free.push(p);
      this.#refs.set(refs);
      this.#pending = pending;
    });
  }

  /** Pages per sequence a captured call's table rows hold. */
  #captureWidth(cap: GraphCapture): number {
    return Math.max(1, Math.ceil(cap.maxSeqLen / this.pageSize));
  }

  #captureRegion(cap: GraphCapture, ints: number, arena: 'hot' | 'cold'): TableRegion {
    return (arena === 'hot' ? cap.hot : cap.cold).alloc(ints);
  }

  #checkWidth(length: number, W: number, argument: string): void {
    if (length > W * this.pageSize) {
      throw new GraphCaptureError(`${argument}: a sequence of ${length} tokens is longer than the captured step allows ` +
        `(maxSeqLen ${W * this.pageSize} at page size ${this.pageSize}); pass a larger options.maxSeqLen to captureGraph`);
    }
  }

  #tooLong(argument: string, length: number, W: number): GraphReplayError {
    return new GraphReplayError(`CudaGraph.replay: ${argument} would hold ${length} tokens, more than the ${W * this.pageSize} ` +
      `(maxSeqLen at page size ${this.pageSize}) its capture reserved; capture the step again with a larger options.maxSeqLen`);
  }

  /** A captured append: each sequence once per capture, and within the capture's page-table width. */
  #checkCapturedAppend(cap: GraphCapture, seqs: readonly SequenceId[], states: readonly SeqState[], toks: readonly number[]): void {
    this.#enterCapture(cap);
    const W = this.#captureWidth(cap);
    seqs.forEach((s, i) => {
      if (this.#cap!.appended.has(s)) {
        throw new GraphCaptureError(`seqs[${i}]: sequence ${s} was already appended in this capture; a captured step appends ` +
          'each sequence at most once (capture one decode step, replay it for the next)');
      }
      this.#checkWidth(states[i]!.length + toks[i]!, W, `options.tokens[${i}]`);
    });
  }

  /** Records a captured append (its kernel reads the capture's tables) and the replay step that rewrites them. */
  #recordAppend(cap: GraphCapture, seqs: readonly SequenceId[], toks: readonly number[], plans: readonly AppendPlan[], k: Tensor, v: Tensor,
    kernel: KernelEntry): void {
    const ids = [...seqs], t = [...toks];
    const n = plans.length, W = this.#captureWidth(cap), P = this.pageSize;
    const lens = this.#captureRegion(cap, n, 'hot');
    const cold = this.#captureRegion(cap, n + 1 + n * W, 'cold');
    for (let i = 0; i < n; i++) cold.host[i + 1] = cold.host[i]! + t[i]!;
    cap.pin(this.#k);
    cap.pin(this.#v);
    launchAppendAt(kernel, { kPool: this.#k, vPool: this.#v, k, v, pageSize: P, numSeqs: n, maxPagesPerSeq: W },
      { cuTokens: cold.ptr, startLens: lens.ptr, pageTable: cold.ptr + BigInt(4 * (n + 1)) });
    const rows = new RowWriter(cold, n + 1, W, n);
    cap.steps.push({
      check: () => {
        this.#alive();
        let pages = 0;
        for (let i = 0; i < n; i++) {
          const st = this.#seqs.get(ids[i]!) ?? this.#state(ids[i], `graph: seqs[${i}] of a captured KvCache.append`);
          if (st.length + t[i]! > W * P) throw this.#tooLong(`seqs[${i}] of a captured KvCache.append`, st.length + t[i]!, W);
          pages += this.#need(st, t[i]!);
        }
        return { owner: this, pages };
      },
      apply: () => {
        const states: SeqState[] = new Array(n);
        let need = 0;
        for (let i = 0; i < n; i++) {
          const st = (states[i] = this.#seqs.get(ids[i]!)!);
          need += this.#need(st, t[i]!);
        }
        const { plans: now, taken } = this.#plan(states, t, need);
        this.#copyOnWrite(now);
        for (let i = 0; i < n; i++) lens.host[i] = now[i]!.st.length;
        lens.dirty(0, n);
        this.#commit(now, taken);
        for (let i = 0; i < n; i++) rows.write(i, now[i]!.st.pages);
      },
    });
  }
}
