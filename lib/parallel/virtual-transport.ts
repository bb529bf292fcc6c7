/**
 * G ranks simulated in one process on one device: a {@link Transport} whose
 * ring step and all-gather are tensor copies (`Tensor.copyFrom`, enqueued on
 * the device's stream like any other work, so on a GPU the copies are ordered
 * with the attention kernels around them). It runs the multi-GPU algorithms
 * (context-parallel attention, KV-sharded decoding) exactly as they run on G
 * GPUs, on the CPU backend or on one GPU: users test their sharding code
 * without several GPUs, and the tests compare with single-device attention.
 * @module
 */
import { parseDevice, type Device } from '../device.js';
import { DeviceError, DisposedError, DTypeError, InvalidArgumentError, ShapeError } from '../errors.js';
import { checkSignal, throwIfAborted } from '../abort.js';
import { describeValue } from '../messages.js';
import { Tensor } from '../tensor.js';
import type { Transport } from './transport.js';

/** Options of {@link createVirtualTransport}. */
export interface VirtualTransportOptions {
  /** Number of virtual ranks G (1 or more). */
  size: number;
  /** The device every rank lives on: `'cpu'` or `'cuda:N'` (default: the default device). */
  device?: Device | 'cuda';
}

/**
 * A transport with `size` ranks in this process, all on `device`.
 * `ringShift` copies `send[r]` into `recv[(r + 1) % size]`; `allGather` copies
 * every rank's input into each output's rank slot. Receive and output tensors
 * must be contiguous (as NCCL needs them) and must not be any of the send or
 * input tensors.
 *
 * ```ts
 * const t = createVirtualTransport({ size: 4, device: 'cpu' });
 * const outs = await contextParallelAttention(qs, ks, vs, { transport: t, isCausal: true });
 * ```
 */
export function createVirtualTransport(options: VirtualTransportOptions): Transport {
  if (options === null || typeof options !== 'object') {
    throw new InvalidArgumentError('options', 'an options object { size, device }', describeValue(options));
  }
  const { size } = options;
  if (typeof size !== 'number' || !Number.isInteger(size) || size < 1 || size > 1024) {
    throw new InvalidArgumentError('options.size', 'an integer number of ranks from 1 to 1024', describeValue(size));
  }
  const { device } = parseDevice(options.device, 'options.device');
  return new VirtualTransport(size, device);
}

class VirtualTransport implements Transport {
  readonly kind = 'virtual' as const;
  readonly size: number;
  readonly localRanks: readonly number[];
  readonly devices: readonly Device[];
  #disposed = false;

  constructor(size: number, device: Device) {
    this.size = size;
    this.localRanks = Object.freeze(Array.from({ length: size }, (_, i) => i));
    this.devices = Object.freeze(Array.from({ length: size }, () => device));
  }

  async ringShift(send: readonly Tensor[], recv: readonly Tensor[], options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#alive('ringShift');
    const signal = checkSignal(options?.signal);
    throwIfAborted(signal, 'ringShift');
    this.#checkRanks(send, 'send');
    this.#checkRanks(recv, 'recv');
    const G = this.size;
    for (let r = 0; r < G; r++) {
      const s = send[(r - 1 + G) % G]!;
      checkSame(recv[r]!, s, `recv[${r}]`, `send[${(r - 1 + G) % G}]`);
      if (!recv[r]!.isContiguous) throw new InvalidArgumentError(`recv[${r}]`, 'a contiguous tensor', 'a strided view');
      checkDistinct(recv[r]!, send, `recv[${r}]`, 'send');
    }
    for (let r = 0; r < G; r++) recv[r]!.copyFrom(send[(r - 1 + G) % G]!);
  }

  async allGather(input: readonly Tensor[], output: readonly Tensor[], options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#alive('allGather');
    const signal = checkSignal(options?.signal);
    throwIfAborted(signal, 'allGather');
    this.#checkRanks(input, 'input');
    this.#checkRanks(output, 'output');
    const G = this.size;
    const first = input[0]!;
    const n = first.shape[0];
    if (n === undefined) throw new ShapeError('input[0]', 'a tensor with at least one dimension (gathered along dimension 0)', 'a scalar');
    for (let r = 0; r < G; r++) {
      checkSame(input[r]!, first, `input[${r}]`, 'input[0]');
      const o = output[r]!;
      const want = [G * n, ...first.shape.slice(1)];
      if (o.shape.length !== want.length || o.shape.some((d, i) => d !== want[i])) {
        throw new ShapeError(`output[${r}]`, `shape [${want.join(', ')}] (size × input's dimension 0)`, `[${o.shape.join(', ')}]`);
      }
      if (o.dtype !== first.dtype) throw new DTypeError(`output[${r}]`, `dtype ${first.dtype} (the input's)`, o.dtype);
      if (!o.isContiguous) throw new InvalidArgumentError(`output[${r}]`, 'a contiguous tensor', 'a strided view');
      checkDistinct(o, input, `output[${r}]`, 'input');
    }
    if (n === 0) return;
    for (let r = 0; r < G; r++) {
      for (let src = 0; src < G; src++) output[r]!.narrow(0, src * n, n).copyFrom(input[src]!);
    }
  }

  dispose(): void {
    this.#disposed = true;
  }

  #alive(what: string): void {
    if (this.#disposed) throw new DisposedError(`transport (${what} after dispose())`);
  }

  #checkRanks(ts: readonly Tensor[], name: string): void {
    if (!Array.isArray(ts) || ts.length !== this.size) {
      throw new InvalidArgumentError(name, `an array of ${this.size} tensors (one per local rank)`,
        Array.isArray(ts) ? `${ts.length} entries` : describeValue(ts));
    }
    ts.forEach((t, i) => {
      if (!(t instanceof Tensor)) throw new InvalidArgumentError(`${name}[${i}]`, 'a Tensor', describeValue(t));
      t.assertAlive(`${name}[${i}]`);
      if (t.device !== this.devices[i]) throw new DeviceError(`${name}[${i}]`, `a tensor on ${this.devices[i]} (rank ${i}'s device)`, t.device);
    });
  }
}

function checkSame(t: Tensor, ref: Tensor, name: string, refName: string): void {
  if (t.shape.length !== ref.shape.length || t.shape.some((d, i) => d !== ref.shape[i])) {
    throw new ShapeError(name, `shape [${ref.shape.join(', ')}] (${refName}'s)`, `[${t.shape.join(', ')}]`);
  }
  if (t.dtype !== ref.dtype) throw new DTypeError(name, `dtype ${ref.dtype} (${refName}'s)`, t.dtype);
}

function checkDistinct(t: Tensor, others: readonly Tensor[], name: string, othersName: string): void {
  if (others.includes(t)) throw new InvalidArgumentError(name, `a tensor that is none of ${othersName} (use separate buffers)`, 'the same tensor');
}
