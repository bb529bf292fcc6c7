/**
 * The NCCL communicator: the {@link Transport} of the multi-GPU algorithms
 * over libnccl (loaded with dlopen, see lib/parallel/nccl.ts).
 *
 * Two ways to make one:
 * - one process, every GPU: `createCommunicator({ devices: ['cuda:0', 'cuda:1'] })`
 *   (ncclCommInitAll; the devices are ranks 0, 1, ... in that order);
 * - one process per GPU: `ncclUniqueId()` in one of them, handed to the others,
 *   then `createCommunicator({ uniqueId, rank, size, device })` in each
 *   (ncclCommInitRank; resolves once every rank has joined).
 *
 * Transfers run on a communication stream per device, ordered after the work
 * already queued on the device and before the work queued after the promise
 * resolves; the host never waits for the GPU (native/runtime/nccl_comm.cc).
 * NCCL_NVLS_ENABLE=0 is set before the first init unless already set: flexattn
 * never has NCCL create NVLink multicast (NVLS) objects.
 * @module
 */
import { requireVerifiedGpuPath } from '../cuda/switches.js';
import { abortable, checkSignal, throwIfAborted } from '../abort.js';
import { parseDevice, type Device } from '../device.js';
import { itemSize } from '../dtype.js';
import { DTypeError, DeviceError, DisposedError, InvalidArgumentError, ShapeError } from '../errors.js';
import { describeValue } from '../messages.js';
import { native, type NativeNcclComm } from '../native.js';
import type { Tensor } from '../tensor.js';
import { requireNccl } from './nccl.js';
import type { Transport } from './transport.js';

/** Options of {@link createCommunicator}: either `devices`, or `uniqueId` + `rank` + `size` + `device`. */
export interface CreateCommunicatorOptions {
  /** One process driving every GPU of the job: the devices, rank i on `devices[i]`. */
  devices?: readonly (Device | 'cuda')[];
  /** One process per GPU: the 128 bytes of {@link ncclUniqueId}, the same in every process. */
  uniqueId?: Uint8Array;
  /** This process's rank in [0, size). */
  rank?: number;
  /** Number of ranks (processes) in the job. */
  size?: number;
  /** This process's GPU (default `cuda:0`). */
  device?: Device | 'cuda';
  /** Rejects with an AbortError when it fires before the communicator is ready (the init itself finishes, and is destroyed). */
  signal?: AbortSignal;
}

/** Options of the transfers. */
export interface TransferOptions {
  /** Checked before the transfer is queued; a transfer once queued cannot be withdrawn, so a later abort only rejects early. */
  signal?: AbortSignal;
}

const DEVICE_RE = /^cuda(?::(\d+))?$/;

/** 'cuda:N' for a device string, checked only for form (no GPU needed). */
function deviceForm(value: unknown, argument: string): number {
  const m = typeof value === 'string' ? DEVICE_RE.exec(value) : null;
  if (!m) {
    throw new DeviceError(argument, `'cuda' or 'cuda:N' (NCCL communicates between GPUs)`,
      value === 'cpu' ? "'cpu'" : describeValue(value));
  }
  return m[1] === undefined ? 0 : Number(m[1]);
}

function checkInteger(value: unknown, argument: string, min: number, max: number, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(argument, what, describeValue(value));
  }
  return value;
}

/**
 * Makes a communicator (see {@link CreateCommunicatorOptions}). Rejects with
 * InvalidArgumentError / DeviceError for bad options, NcclUnavailableError
 * (or NcclVersionError, NcclSymbolError) without a usable libnccl, and
 * NcclError when NCCL's init fails.
 */
export async function createCommunicator(options: CreateCommunicatorOptions): Promise<Communicator> {
  if (options === null || typeof options !== 'object') {
    throw new InvalidArgumentError('options', '{ devices } or { uniqueId, rank, size, device }', describeValue(options));
  }
  const signal = checkSignal(options.signal);
  let indices: number[];
  let size: number;
  let rank: number;
  let uniqueId: Uint8Array | null = null;
  if (options.uniqueId !== undefined) {
    if (options.devices !== undefined) {
      throw new InvalidArgumentError('options.devices', 'no devices with a uniqueId (one process per GPU takes options.device)',
        'both');
    }
    if (!(options.uniqueId instanceof Uint8Array) || options.uniqueId.byteLength !== 128) {
      throw new InvalidArgumentError('options.uniqueId', 'a Uint8Array of 128 bytes from ncclUniqueId()',
        options.uniqueId instanceof Uint8Array ? `${options.uniqueId.byteLength} bytes` : describeValue(options.uniqueId));
    }
    size = checkInteger(options.size, 'options.size', 1, 2 ** 31 - 1, 'the number of ranks, an integer >= 1');
    rank = checkInteger(options.rank, 'options.rank', 0, size - 1, `a rank in [0, ${size}) (size is ${size})`);
    indices = [deviceForm(options.device ?? 'cuda:0', 'options.device')];
    uniqueId = new Uint8Array(options.uniqueId);  // a copy: the caller may reuse theirs
  } else {
    if (options.rank !== undefined || options.size !== undefined || options.device !== undefined) {
      throw new InvalidArgumentError('options.uniqueId',
        'a uniqueId with rank/size/device (one process per GPU), or only devices (one process for all)', 'undefined');
    }
    const devices = options.devices;
    if (!Array.isArray(devices) || devices.length === 0) {
      throw new InvalidArgumentError('options.devices', "a non-empty array of devices, e.g. ['cuda:0', 'cuda:1']",
        describeValue(devices));
    }
    indices = devices.map((d, i) => deviceForm(d, `options.devices[${i}]`));
    const seen = new Map<number, number>();
    indices.forEach((d, i) => {
      if (seen.has(d)) {
        throw new DeviceError(`options.devices[${i}]`,
          `each GPU once (NCCL runs one rank per GPU); cuda:${d} is already options.devices[${seen.get(d)}]`, `cuda:${d}`);
      }
      seen.set(d, i);
    });
    size = indices.length;
    rank = 0;
  }
  // One rank (size 1, one device or a unique id) ran on an H100 (test/gpu/parallel-nccl.test.ts); NCCL
  // between GPUs has not run yet: no machine with several GPUs has been lent.
  if (size > 1) {
    requireVerifiedGpuPath('createCommunicator with more than one rank (NCCL between GPUs)',
      'createVirtualTransport runs the same multi-GPU algorithms with virtual ranks in one process');
  }
  requireNccl();
  const names = indices.map((d, i) =>
    parseDevice(`cuda:${d}`, options.devices ? `options.devices[${i}]` : 'options.device').device);
  throwIfAborted(signal, 'createCommunicator');
  const work = native().ncclCommCreate(indices, size, rank, uniqueId);
  const handle = await abortable(work, signal, 'createCommunicator', (h) => { void h.destroy().catch(() => {}); });
  const localRanks = uniqueId ? [rank] : indices.map((_, i) => i);
  return new Communicator(handle, size, localRanks, names);
}

/** The NCCL {@link Transport}: ring steps and all-gathers between this process's ranks and the others. */
export class Communicator implements Transport {
  readonly kind = 'nccl' as const;
  readonly size: number;
  readonly localRanks: readonly number[];
  readonly devices: readonly Device[];
  #handle: NativeNcclComm | null;

  /** @internal Use {@link createCommunicator}. */
  constructor(handle: NativeNcclComm, size: number, localRanks: readonly number[], devices: readonly Device[]) {
    this.#handle = handle;
    this.size = size;
    this.localRanks = Object.freeze([...localRanks]);
    this.devices = Object.freeze([...devices]);
  }

  /** True after {@link dispose}. */
  get disposed(): boolean { return this.#handle === null; }

  #live(): NativeNcclComm {
    if (!this.#handle) throw new DisposedError('communicator', 'communicator');
    return this.#handle;
  }

  /** Tensors of a per-rank argument: one per local rank, contiguous, on that rank's device. */
  #check(tensors: readonly Tensor[], argument: string): void {
    if (!Array.isArray(tensors) || tensors.length !== this.localRanks.length) {
      throw new InvalidArgumentError(argument,
        `an array of ${this.localRanks.length} tensor${this.localRanks.length === 1 ? '' : 's'} (one per local rank, like localRanks)`,
        Array.isArray(tensors) ? `${tensors.length}` : describeValue(tensors));
    }
    tensors.forEach((t, i) => {
      const name = `${argument}[${i}]`;
      if (t === null || typeof t !== 'object' || typeof (t as Tensor).assertAlive !== 'function') {
        throw new InvalidArgumentError(name, 'a Tensor', describeValue(t));
      }
      t.assertAlive(name);
      if (t.device !== this.devices[i]) {
        throw new DeviceError(name, `a tensor on ${this.devices[i]} (the device of local rank ${this.localRanks[i]})`, t.device);
      }
      if (!t.isContiguous) throw new InvalidArgumentError(name, 'a contiguous tensor (call contiguous() first)', 'a strided view');
    });
  }

  /** Byte offsets of contiguous tensors. */
  static #offsets(ts: readonly Tensor[]): number[] { return ts.map((t) => t.offset * itemSize(t.dtype)); }

  async #run(what: string, tensors: readonly Tensor[], signal: AbortSignal | undefined,
    start: (h: NativeNcclComm) => Promise<void>): Promise<void> {
    throwIfAborted(signal, what);
    const handle = this.#live();
    // The op's own claims: a tensor disposed meanwhile keeps its block until the
    // compute stream is ordered after the transfer (then reuse is safe).
    const held = tensors.map((t, i) => t.retain(`tensors[${i}]`));
    let work: Promise<void>;
    try {
      work = start(handle);
    } catch (e) {
      for (const h of held) h.dispose();
      throw e;
    }
    const done = work.finally(() => { for (const h of held) h.dispose(); });
    return abortable(done, signal, what);
  }

  /** See {@link Transport.ringShift}. Shapes and dtypes of send[i] and recv[i] must match. */
  ringShift(send: readonly Tensor[], recv: readonly Tensor[], options: TransferOptions = {}): Promise<void> {
    try {
      const signal = checkSignal(options?.signal);
      this.#live();
      this.#check(send, 'send');
      this.#check(recv, 'recv');
      send.forEach((s, i) => {
        const r = recv[i]!;
        if (s.dtype !== r.dtype) throw new DTypeError(`recv[${i}]`, `dtype ${s.dtype} (that of send[${i}])`, r.dtype);
        if (s.shape.length !== r.shape.length || s.shape.some((d, k) => d !== r.shape[k])) {
          throw new ShapeError(`recv[${i}]`, `shape [${s.shape.join(', ')}] (that of send[${i}])`, `[${r.shape.join(', ')}]`);
        }
        if (s.numel !== send[0]!.numel || s.dtype !== send[0]!.dtype) {
          throw new ShapeError(`send[${i}]`, `the size and dtype of send[0] (every rank sends the same)`,
            `[${s.shape.join(', ')}] ${s.dtype}`);
        }
      });
      const bytes = send[0]!.numel * itemSize(send[0]!.dtype);
      if (bytes === 0) return Promise.resolve();
      const all = [...send, ...recv];
      return this.#run('ringShift', all, signal, (h) => h.ringShift(
        send.map((t, i) => t.buffer(`send[${i}]`)), Communicator.#offsets(send),
        recv.map((t, i) => t.buffer(`recv[${i}]`)), Communicator.#offsets(recv), bytes, [...this.localRanks]));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** See {@link Transport.allGather}: output[i] has shape [size * n, ...] for input[i] of shape [n, ...]. */
  allGather(input: readonly Tensor[], output: readonly Tensor[], options: TransferOptions = {}): Promise<void> {
    try {
      const signal = checkSignal(options?.signal);
      this.#live();
      this.#check(input, 'input');
      this.#check(output, 'output');
      input.forEach((x, i) => {
        const o = output[i]!;
        if (x.ndim < 1) throw new ShapeError(`input[${i}]`, 'a tensor with at least one dimension (gathered along dim 0)', 'a scalar');
        if (o.dtype !== x.dtype) throw new DTypeError(`output[${i}]`, `dtype ${x.dtype} (that of input[${i}])`, o.dtype);
        const want = [this.size * x.shape[0]!, ...x.shape.slice(1)];
        if (o.shape.length !== want.length || o.shape.some((d, k) => d !== want[k])) {
          throw new ShapeError(`output[${i}]`, `shape [${want.join(', ')}] (size ${this.size} × input[${i}] along dim 0)`,
            `[${o.shape.join(', ')}]`);
        }
        if (x.numel !== input[0]!.numel || x.dtype !== input[0]!.dtype) {
          throw new ShapeError(`input[${i}]`, 'the size and dtype of input[0] (every rank gives the same)',
            `[${x.shape.join(', ')}] ${x.dtype}`);
        }
      });
      const bytes = input[0]!.numel * itemSize(input[0]!.dtype);
      if (bytes === 0) return Promise.resolve();
      return this.#run('allGather', [...input, ...output], signal, (h) => h.allGather(
        input.map((t, i) => t.buffer(`input[${i}]`)), Communicator.#offsets(input),
        output.map((t, i) => t.buffer(`output[${i}]`)), Communicator.#offsets(output), bytes));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Destroys the NCCL communicators (ncclCommDestroy, after the transfers
   * already queued). Idempotent; later calls of this object throw DisposedError.
   */
  dispose(): void {
    const h = this.#handle;
    if (!h) return;
    this.#handle = null;
    h.destroy().catch((e: unknown) => {
      process.emitWarning(`flexattn: destroying an NCCL communicator failed: ${(e as Error).message}`, { code: 'FLEXATTN_NCCL_DESTROY' });
    });
  }

  [Symbol.dispose](): void { this.dispose(); }
}
