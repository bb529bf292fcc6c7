/**
 * The device tables of the batches a KvCache's GPU pagedAttention calls read
 * (page table, lengths, query offsets), kept from call to call so a decode
 * step does not rebuild and upload them whole: a server calls with the same
 * sequences step after step, and between two calls a sequence's lengths
 * change but its page list only grows by a page now and then (or has its last
 * page replaced by a copy on write). Each call brings the host image of its
 * batch up to date, entry by entry, and uploads the changed spans in one copy
 * call, on the device's stream: the upload runs after every kernel enqueued
 * before it, so an earlier call still reads its own lengths.
 *
 * A batch is its sequence ids in order (never reused by a KvCache). A row is
 * written again from its last known page when the page count or the last page
 * changed; everything is written again after the cache's pages changed in
 * another way (a capture putting back its host state bumps the epoch).
 * An entry is busy from the call that uploads it until that call's kernel is
 * enqueued; a call meanwhile gets a fresh, unshared set of tables.
 * Internal: not exported from the package.
 * @module
 */
import { native } from '../native.js';
import { Tensor } from '../tensor.js';
import type { KvLayout, RaggedKv, RaggedTables } from './paged-kv.js';

/** What the tables read of a sequence. */
export interface BatchSeq { readonly pages: readonly number[]; readonly length: number }

/** Entries kept per cache, and host ints over all of them, before the least recently used go. */
const MAX_ENTRIES = 64;
const MAX_INTS = 1 << 23;
/** Gap (ints) below which two changed spans are uploaded as one. */
const MERGE_GAP = 4096;

/**
 * The tables of one batch. Image layout (i32): seqLens [n] | queryStart [n + 1] | pageTable [n, width].
 */
export class BatchTables {
  readonly n: number;
  readonly width: number;
  readonly host: Int32Array;
  readonly seqLensHost: Int32Array;
  readonly queryStartHost: Int32Array;
  maxSeqLen = 0;
  maxQueryTokens = 0;
  /** Whether it lives in the cache's list (else it is one call's, freed when that call lets go). */
  readonly shared: boolean;
  busy = false;
  /** Dropped from the list while busy: freed once the call lets go. */
  retired = false;
  epoch = -1;
  lastUse = 0;
  readonly ids: Float64Array;
  readonly #rowCount: Int32Array;
  readonly #rowLast: Int32Array;
  /** Changed [from, to) int ranges since the last upload. */
  #spans: number[] = [];
  #dev: Tensor | undefined;
  #kv: { pageTable: Tensor; seqLens: Tensor; queryStart: Tensor } | undefined;

  constructor(ids: readonly number[], width: number, shared: boolean) {
    const n = ids.length;
    this.n = n;
    this.width = width;
    this.shared = shared;
    this.ids = Float64Array.from(ids);
    this.host = new Int32Array(2 * n + 1 + n * width);
    this.seqLensHost = this.host.subarray(0, n);
    this.queryStartHost = this.host.subarray(n, 2 * n + 1);
    this.#rowCount = new Int32Array(n);
    this.#rowLast = new Int32Array(n).fill(-1);
  }

  get ints(): number { return this.host.length; }

  matches(ids: readonly number[]): boolean {
    const own = this.ids;
    if (own.length !== ids.length) return false;
    for (let i = 0; i < own.length; i++) if (own[i] !== ids[i]) return false;
    return true;
  }

  /** Brings the image up to the sequences' state now (`epoch`: the cache's; a change rewrites every row). */
  update(states: readonly BatchSeq[], queryTokens: readonly number[], epoch: number): void {
    const n = this.n, W = this.width, host = this.host, rows0 = 2 * n + 1;
    if (epoch !== this.epoch) {
      this.#rowCount.fill(0);
      this.#rowLast.fill(-1);
      this.epoch = epoch;
    }
    let lo = -1, hi = -1, maxLen = 0, maxQ = 0, qs = 0;
    for (let i = 0; i < n; i++) {
      const st = states[i]!, len = st.length;
      if (host[i] !== len) {
        host[i] = len;
        if (lo < 0 || i < lo) lo = i;
        if (i + 1 > hi) hi = i + 1;
      }
      if (len > maxLen) maxLen = len;
      const m = queryTokens[i]!;
      if (m > maxQ) maxQ = m;
      qs += m;
      if (host[n + 1 + i] !== qs) {
        host[n + 1 + i] = qs;
        if (lo < 0) lo = n + 1 + i;
        hi = n + 2 + i; // the largest index so far: queryStart follows every length
      }
    }
    if (lo >= 0) this.#dirty(lo, hi);
    this.maxSeqLen = maxLen;
    this.maxQueryTokens = maxQ;
    for (let i = 0; i < n; i++) {
      const pages = states[i]!.pages, len = pages.length, had = this.#rowCount[i]!;
      if (len === had && (len === 0 || pages[len - 1] === this.#rowLast[i])) continue;
      const from = Math.max(0, Math.min(had, len) - 1), at = rows0 + i * W;
      for (let j = from; j < len; j++) host[at + j] = pages[j]!;
      this.#dirty(at + from, at + len);
      this.#rowCount[i] = len;
      this.#rowLast[i] = len ? pages[len - 1]! : -1;
    }
  }

  /** The host tables (views of the image; copy them before the image changes again). */
  tables(): RaggedTables {
    const n = this.n;
    return { pageTable: this.host.subarray(2 * n + 1), maxPagesPerSeq: this.width, seqLens: this.seqLensHost, queryStart: this.queryStartHost };
  }

  /** The RaggedKv over `k`/`v` reading this batch's device tables, uploaded now (marks the entry busy). */
  deviceKv(k: Tensor, v: Tensor, layout: KvLayout, device: string): RaggedKv {
    if (!this.#dev) {
      const n = this.n;
      this.#dev = Tensor.empty([this.host.length], 'i32', { device: device as `cuda:${number}` });
      this.#kv = {
        seqLens: this.#dev.narrow(0, 0, n),
        queryStart: this.#dev.narrow(0, n, n + 1),
        pageTable: this.#dev.narrow(0, 2 * n + 1, n * this.width).reshape(n, this.width),
      };
      this.#spans = [0, this.host.length];
    }
    this.#flush();
    this.busy = true;
    const t = this.#kv!;
    return {
      k, v, pageSize: layout.pageSize, pageStride: layout.pageStride, tokenStride: layout.tokenStride, headStride: layout.headStride,
      pageTable: t.pageTable, seqLens: t.seqLens, queryStart: t.queryStart,
      numSeqs: this.n, maxSeqLen: this.maxSeqLen, maxQueryTokens: this.maxQueryTokens,
      seqLensHost: this.seqLensHost, queryStartHost: this.queryStartHost,
    };
  }

  /** The call that took {@link BatchTables.deviceKv} has enqueued its kernel (or failed). */
  release(): void {
    if (!this.busy) return;
    this.busy = false;
    if (this.retired || !this.shared) this.dispose();
  }

  /** Frees the device tables (stream-ordered: kernels already enqueued still read them). */
  dispose(): void {
    const t = this.#kv;
    if (t) { t.pageTable.dispose(); t.seqLens.dispose(); t.queryStart.dispose(); }
    this.#dev?.dispose();
    this.#dev = undefined;
    this.#kv = undefined;
  }

  #dirty(from: number, to: number): void {
    const s = this.#spans, k = s.length;
    // Rows are written in order, so a span usually extends the last one.
    if (k && from <= s[k - 1]! + MERGE_GAP && from >= s[k - 2]!) s[k - 1] = Math.max(s[k - 1]!, to);
    else s.push(from, to);
  }

  #flush(): void {
    const s = this.#spans;
    if (s.length === 0) return;
    const spans = new Float64Array(s.length);
    for (let i = 0; i < s.length; i += 2) {
      spans[i] = 4 * s[i]!;
      spans[i + 1] = 4 * (s[i + 1]! - s[i]!);
    }
    native().copyHtoDSpans(this.#dev!.buffer(), this.host, spans);
    this.#spans = [];
  }
}

/** A cache's batch tables, least recently used dropped first. */
export class BatchTableCache {
  readonly #entries: BatchTables[] = [];
  #clock = 0;

  /**
   * The tables of batch `ids` brought up to `states` now: the kept entry when
   * it is free, else a fresh one (kept when no entry for `ids` exists yet).
   */
  take(ids: readonly number[], states: readonly BatchSeq[], queryTokens: readonly number[], epoch: number): BatchTables {
    let pages = 1;
    for (const st of states) if (st.pages.length > pages) pages = st.pages.length;
    const list = this.#entries;
    let at = -1;
    for (let i = 0; i < list.length; i++) if (list[i]!.matches(ids)) { at = i; break; }
    let e = at >= 0 ? list[at] : undefined;
    if (e && e.width < pages) {
      // Rows too short: made again, wider (a busy one is freed when its call lets go).
      list.splice(at, 1);
      if (e.busy) e.retired = true;
      else e.dispose();
      e = undefined;
    } else if (e?.busy) {
      const own = new BatchTables(ids, pages, false); // this call's own, freed when it lets go
      own.update(states, queryTokens, epoch);
      return own;
    }
    if (!e) {
      // Room to grow: a quarter more pages per row before the entry is made again.
      e = new BatchTables(ids, pages + Math.max(4, pages >> 2), true);
      list.push(e);
      this.#evict();
    }
    e.lastUse = ++this.#clock;
    e.update(states, queryTokens, epoch);
    return e;
  }

  /** Frees every entry (busy ones once their call lets go). */
  dispose(): void {
    for (const e of this.#entries) {
      if (e.busy) e.retired = true;
      else e.dispose();
    }
    this.#entries.length = 0;
  }

  #evict(): void {
    const list = this.#entries;
    let ints = 0;
    for (const e of list) ints += e.ints;
    while (list.length > 1 && (list.length > MAX_ENTRIES || ints > MAX_INTS)) {
      let old = 0;
      for (let i = 1; i < list.length - 1; i++) if (list[i]!.lastUse < list[old]!.lastUse) old = i;
      const [e] = list.splice(old, 1);
      ints -= e!.ints;
      if (e!.busy) e!.retired = true;
      else e!.dispose();
    }
  }
}
