/**
 * CUDA graphs: `captureGraph` records the GPU work a callback enqueues (a
 * decode step: several layers of `cache.append` + `pagedAttention`; or any
 * flexAttention / SDPA calls) into a CUDA graph, and `graph.replay()` reruns
 * it with one launch, at a fraction of the host cost of the calls.
 *
 * What a captured step may do, and what a replay does:
 * - Nothing runs while capturing. The callback's ops return their outputs as
 *   usual, but the tensors are only filled by each replay. Await every op
 *   inside the callback, and issue no other GPU work on that device meanwhile
 *   (it would be recorded too).
 * - Inputs are read from the tensors the ops were given, at their addresses:
 *   to run a replay on new data, copy it into those tensors first
 *   (`q.copyFrom(next)`); outputs are rewritten in place by every replay. The
 *   graph keeps the memory of every tensor it reads or writes until
 *   `dispose()`, even if the tensors are disposed first.
 * - Shapes, the sequences of each KvCache call and their token counts are
 *   fixed by the capture. Lengths are not: a replay of a captured append
 *   appends again (taking new pages when a sequence needs one, copying a
 *   shared last page after a fork) and a captured pagedAttention reads the
 *   sequences' lengths and page tables as they are at that replay, from
 *   device tables the replay updates before it launches (stream-ordered).
 *   A sequence may grow to `maxSeqLen` tokens (the page-table width the
 *   capture reserves); beyond it a replay throws GraphReplayError.
 * - The capture does not change any KvCache: appends made while capturing are
 *   undone when it ends; the first replay makes them. Creating, forking or
 *   freeing sequences of a cache while capturing is refused; between replays
 *   it is fine, but a replay of a freed sequence throws UnknownSequenceError.
 * - Host copies (Tensor.fromHost, a CPU tensor captured by a mod), reads
 *   (toHost) and waits (synchronize) throw GraphCaptureError while capturing:
 *   make inputs and warm up (load kernels, build block masks) before.
 * - A replay checks everything before it enqueues anything: a full cache, a
 *   freed sequence or a sequence past `maxSeqLen` leaves every cache as it was.
 * @module
 */
import { checkSignal, throwIfAborted } from '../abort.js';
import { cudaAvailable, parseDevice, type Device } from '../device.js';
import { CudaUnavailableError, DeviceError, DisposedError, GraphReplayError, InvalidArgumentError } from '../errors.js';
import { describeValue } from '../messages.js';
import { native, type NativeGraphHandle } from '../native.js';
import { checkKeys } from '../validate.js';
import { GraphCapture, beginActive, captureOn, endActive, type ReplayStep } from './capture-state.js';

/** Options of {@link captureGraph}. */
export interface CaptureGraphOptions {
  /** The CUDA device whose work is captured; default `'cuda:0'`. */
  device?: Device | 'cuda';
  /**
   * Longest sequence (tokens) a captured KvCache op may reach on a replay:
   * each captured call keeps page-table rows of `ceil(maxSeqLen / pageSize)`
   * pages per sequence. Default 8192.
   */
  maxSeqLen?: number;
  /** An aborted signal rejects with an AbortError; a capture in progress is dropped when the callback ends. */
  signal?: AbortSignal;
}

/** Options of {@link CudaGraph.replay}. */
export interface ReplayOptions {
  /** An aborted signal rejects with an AbortError before anything is enqueued. */
  signal?: AbortSignal;
}

const CAPTURE_KEYS = ['device', 'maxSeqLen', 'signal'] as const;
const REPLAY_KEYS = ['signal'] as const;
const DEFAULT_MAX_SEQ_LEN = 8192;

/** A captured CUDA graph: `replay()` reruns the captured work; `dispose()` frees it. */
export class CudaGraph {
  /** The device the graph runs on. */
  readonly device: Device;
  readonly #handle: NativeGraphHandle;
  readonly #capture: GraphCapture;
  readonly #steps: readonly ReplayStep[];
  #disposed = false;

  /** @internal Made by {@link captureGraph}. */
  constructor(handle: NativeGraphHandle, capture: GraphCapture) {
    this.#handle = handle;
    this.#capture = capture;
    this.#steps = capture.steps.slice();
    this.device = capture.device as Device;
  }

  /** Nodes in the graph (kernels, copies, memsets). */
  get numNodes(): number { return this.#handle.numNodes; }
  /** True after dispose(). */
  get disposed(): boolean { return this.#disposed; }

  /**
   * Enqueues one rerun of the captured work (after the host steps of its
   * KvCache calls: see the module notes); resolves once enqueued, like the
   * ops. Await a result's `toHost()` to wait for it.
   */
  async replay(options: ReplayOptions = {}): Promise<void> {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object', describeValue(options));
    checkKeys(options, REPLAY_KEYS);
    const signal = checkSignal(options.signal);
    if (this.#disposed) throw new DisposedError('graph');
    throwIfAborted(signal, 'CudaGraph.replay');
    if (captureOn(this.#capture.deviceIndex)) {
      throw new GraphReplayError(`CudaGraph.replay: a CUDA graph is being captured on ${this.device}; replay after captureGraph returns`);
    }
    // Everything is checked before anything changes.
    const pages = new Map<object, number>();
    for (const s of this.#steps) {
      const r = s.check();
      if (r) pages.set(r.owner, (pages.get(r.owner) ?? 0) + r.pages);
    }
    for (const [owner, n] of pages) (owner as { requirePages(n: number): void }).requirePages(n);
    for (const s of this.#steps) s.apply();
    this.#capture.hot.flush();
    this.#capture.cold.flush();
    this.#handle.launch();
  }

  /** Frees the graph and the memory it kept (idempotent). Outputs of the captured ops stay valid tensors. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#capture.hot.dispose();
    this.#capture.cold.dispose();
    this.#handle.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

function captureDevice(value: unknown): number {
  if (value === undefined && !cudaAvailable()) {
    throw new CudaUnavailableError('captureGraph: CUDA graphs record GPU work, and no CUDA device is usable ' +
      '(cudaAvailable() is false); run the step directly, or on the CPU backend, without capturing');
  }
  const { index } = parseDevice(value ?? 'cuda:0', 'options.device');
  if (index < 0) throw new DeviceError('options.device', "a CUDA device ('cuda' or 'cuda:N'): CUDA graphs record GPU work", describeValue(value));
  return index;
}

/**
 * Captures the GPU work `fn` enqueues into a CUDA graph (see the module notes
 * for what a captured step may do). `fn` runs once, recording; nothing runs on
 * the GPU until `graph.replay()`. Throws GraphCaptureError when a capture is
 * already in progress or the work could not be recorded, and rethrows what
 * `fn` throws; either way the capture is dropped and the device and every
 * KvCache are as before.
 *
 * ```ts
 * const q = Tensor.empty([B, Hq, D], 'bf16'), k = ..., v = ...;       // captured inputs
 * let out!: Tensor;
 * const graph = await captureGraph(async () => {
 *   await cache.append(seqs, k, v, { tokens: ones });
 *   out = await pagedAttention(q, cache, { seqs, queryTokens: ones });
 * });
 * for (;;) { q.copyFrom(nextQ); k.copyFrom(nextK); v.copyFrom(nextV); await graph.replay(); use(out); }
 * ```
 */
export async function captureGraph(fn: () => unknown, options: CaptureGraphOptions = {}): Promise<CudaGraph> {
  if (typeof fn !== 'function') throw new InvalidArgumentError('fn', 'a function (the step to capture)', describeValue(fn));
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object', describeValue(options));
  checkKeys(options, CAPTURE_KEYS);
  const signal = checkSignal(options.signal);
  const maxSeqLen = options.maxSeqLen ?? DEFAULT_MAX_SEQ_LEN;
  if (typeof maxSeqLen !== 'number' || !Number.isInteger(maxSeqLen) || maxSeqLen < 1 || maxSeqLen > 2 ** 30) {
    throw new InvalidArgumentError('options.maxSeqLen', 'an integer in [1, 2^30]', describeValue(maxSeqLen));
  }
  const device = captureDevice(options.device);
  throwIfAborted(signal, 'captureGraph');
  const capture = new GraphCapture(device, maxSeqLen);
  beginActive(capture);
  let handle: NativeGraphHandle | undefined;
  try {
    native().beginCapture(device);
    try {
      await fn();
      throwIfAborted(signal, 'captureGraph');
    } catch (err) {
      native().abortCapture(device);
      throw err;
    }
    handle = native().endCapture(device);
  } catch (err) {
    endActive(capture);
    try { capture.runEnds(); } finally {
      capture.hot.dispose();
      capture.cold.dispose();
    }
    throw err;
  }
  endActive(capture);
  try {
    capture.runEnds();
  } catch (err) {
    handle.dispose();
    capture.hot.dispose();
    capture.cold.dispose();
    throw err;
  }
  return new CudaGraph(handle, capture);
}
