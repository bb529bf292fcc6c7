/**
 * The CUDA graph capture in progress (at most one per process), and what a
 * captured step keeps for its replays: the host steps that run before each
 * replay (a captured `KvCache.append` plans its pages again, a captured
 * `pagedAttention` writes the lengths it reads), and the device tables they
 * write, which the captured kernels read.
 *
 * Tables live in arenas of device chunks allocated during the capture (so the
 * chunks belong to the graph), each mirrored by a host image; a replay writes
 * the entries that changed into the image and uploads the dirty spans of each
 * chunk in one copy call, before the graph launch, on the same stream. Two
 * arenas: `hot` for what changes on every replay (lengths, one span), `cold`
 * for what rarely does (page-table rows change when a sequence takes a page).
 * Internal: not exported from the package.
 * @module
 */
import { GraphCaptureError } from '../errors.js';
import { native } from '../native.js';
import { setClaimObserver } from '../ownership.js';
import { Tensor } from '../tensor.js';

/** What a captured op does before each replay. */
export interface ReplayStep {
  /** Throws (a typed error) when the step cannot run now; changes nothing. Returns the pages it takes per cache. */
  check(): { owner: object; pages: number } | undefined;
  /** Writes the step's tables and host state for this replay (after every step's check passed). */
  apply(): void;
}

/** A region of an arena: `host` is its part of the chunk's image, `tensor` a view of the device chunk. */
export interface TableRegion {
  readonly host: Int32Array;
  readonly tensor: Tensor;
  /** Device address of element 0. */
  readonly ptr: bigint;
  /** Marks host[from, to) as changed: uploaded before the next replay. */
  dirty(from: number, to: number): void;
}

class Chunk {
  readonly host: Int32Array;
  readonly tensor: Tensor;
  used = 0;
  /** Changed element ranges [from, to) since the last upload. */
  spans: number[] = [];
  constructor(ints: number, device: string) {
    this.host = new Int32Array(ints);
    this.tensor = Tensor.empty([ints], 'i32', { device: device as `cuda:${number}` });
  }
}

/** Gap (elements) below which two dirty spans are uploaded as one. */
const MERGE_GAP = 1024;

export class TableArena {
  readonly #chunks: Chunk[] = [];
  readonly #device: string;
  readonly #minInts: number;
  constructor(device: string, minInts: number) {
    this.#device = device;
    this.#minInts = minInts;
  }

  /** A region of `ints` elements (zeroed in the image; every element dirty until first uploaded). */
  alloc(ints: number): TableRegion {
    const n = Math.max(1, ints);
    let c = this.#chunks[this.#chunks.length - 1];
    if (!c || c.used + n > c.host.length) {
      const last = c ? c.host.length : this.#minInts / 2;
      c = new Chunk(Math.max(n, 2 * last), this.#device);
      this.#chunks.push(c);
    }
    const chunk = c, base = c.used;
    c.used += n;
    const view = chunk.tensor.narrow(0, base, n);
    const region: TableRegion = {
      host: chunk.host.subarray(base, base + n),
      tensor: view,
      ptr: view.buffer().ptr + BigInt(4 * base),
      dirty: (from, to) => { if (to > from) chunk.spans.push(base + from, base + to); },
    };
    region.dirty(0, n);
    return region;
  }

  /** Uploads every dirty span (stream-ordered, before what is enqueued next). */
  flush(): void {
    for (const c of this.#chunks) {
      if (c.spans.length === 0) continue;
      const pairs: [number, number][] = [];
      for (let i = 0; i < c.spans.length; i += 2) pairs.push([c.spans[i]!, c.spans[i + 1]!]);
      pairs.sort((a, b) => a[0] - b[0]);
      const out: number[] = [];
      for (const [a, b] of pairs) {
        const n = out.length;
        if (n && a <= out[n - 1]! + MERGE_GAP) out[n - 1] = Math.max(out[n - 1]!, b);
        else out.push(a, b);
      }
      const bytes = new Float64Array(out.length);
      for (let i = 0; i < out.length; i += 2) {
        bytes[i] = 4 * out[i]!;
        bytes[i + 1] = 4 * (out[i + 1]! - out[i]!);
      }
      native().copyHtoDSpans(c.tensor.buffer(), c.host, bytes);
      c.spans = [];
    }
  }

  /** Frees the chunks (their blocks wait until the graph that pins them is disposed). */
  dispose(): void {
    for (const c of this.#chunks) c.tensor.dispose();
    this.#chunks.length = 0;
  }
}

/** The capture in progress: what its ops recorded. */
export class GraphCapture {
  readonly deviceIndex: number;
  readonly device: string;
  /** Longest sequence (tokens) a captured KvCache op may reach on a replay: sizes the page-table rows. */
  readonly maxSeqLen: number;
  readonly steps: ReplayStep[] = [];
  readonly hot: TableArena;
  readonly cold: TableArena;
  readonly #ends: (() => void)[] = [];

  constructor(deviceIndex: number, maxSeqLen: number) {
    this.deviceIndex = deviceIndex;
    this.device = `cuda:${deviceIndex}`;
    this.maxSeqLen = maxSeqLen;
    this.hot = new TableArena(this.device, 4096);
    this.cold = new TableArena(this.device, 65536);
  }

  /** Runs once the capture ends, whether it made a graph or not (e.g. a KvCache puts back its host state). */
  onEnd(fn: () => void): void {
    this.#ends.push(fn);
  }

  /** Keeps `t`'s device memory for the graph's lifetime (a captured kernel reads it on every replay). */
  pin(t: Tensor): void {
    if (t.isCuda && t.deviceIndex === this.deviceIndex) native().graphPin(t.buffer());
  }

  /** @internal Runs the end callbacks (each once; the first error is rethrown after all ran). */
  runEnds(): void {
    let first: unknown;
    for (const fn of this.#ends.splice(0)) {
      try { fn(); } catch (e) { first ??= e; }
    }
    if (first !== undefined) throw first;
  }
}

let active: GraphCapture | undefined;

/** The capture in progress on CUDA device `deviceIndex`, if any. */
export function captureOn(deviceIndex: number): GraphCapture | undefined {
  return active && active.deviceIndex === deviceIndex ? active : undefined;
}

/** The capture in progress anywhere, if any. */
export function activeCapture(): GraphCapture | undefined {
  return active;
}

/** @internal Makes `c` the capture in progress (GraphCaptureError when one already is). */
export function beginActive(c: GraphCapture): void {
  if (active) {
    throw new GraphCaptureError(`captureGraph: a CUDA graph is already being captured on ${active.device}; ` +
      'captures cannot nest or overlap: await the first captureGraph(...) before starting another');
  }
  active = c;
  setClaimObserver((t) => c.pin(t));
}

/** @internal Ends the capture in progress. */
export function endActive(c: GraphCapture): void {
  if (active !== c) return;
  active = undefined;
  setClaimObserver(undefined);
}

/** @internal Throws a GraphCaptureError naming `what` when a capture is in progress on `deviceIndex`. */
export function refuseWhileCapturing(deviceIndex: number, what: string, remedy: string): void {
  const c = captureOn(deviceIndex);
  if (c) throw new GraphCaptureError(`${what} is not allowed while a CUDA graph is being captured on ${c.device}: ${remedy}`);
}
