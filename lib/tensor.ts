/**
 * `Tensor`: a strided view of device (`cuda:N`) or host (`cpu`) memory.
 * Views (transpose, permute, narrow, select, reshape of contiguous data)
 * share storage without copying; `contiguous()` and `to()` copy.
 * @module
 */
import {
  allocHost, checkDType, convertHost, encodeElement, hostArrayName, itemSize, readElement, toBf16, toF16,
  type DType, type HostArray,
} from './dtype.js';
import { abortable, checkSignal, throwIfAborted } from './abort.js';
import { parseDevice, type Device } from './device.js';
import { kMaxLength } from 'node:buffer';
import { DisposedError, DTypeError, InternalError, InvalidArgumentError, OutOfMemoryError, ShapeError } from './errors.js';
import { describeValue } from './messages.js';
import { DTYPE_CODE, native, type NativeDeviceBuffer } from './native.js';
import { tensorAt } from './mods/index.js';
import { mulberry32 } from './prng.js';
import type { Expr } from './mods/index.js';

/**
 * Backing memory shared by a tensor and its views. The user's handles count as
 * one holder and every op that is using the memory (see {@link Tensor.retain})
 * as one more: `dispose()` makes the user's handles unusable at once, the
 * memory goes back when the last holder lets go.
 */
class Storage {
  /** A user handle (this tensor or a view) was disposed: user handles throw DisposedError from now on. */
  disposed = false;
  /** The memory went back (a GPU block to the allocator cache, a host array to the GC). */
  released = false;
  #holders = 1;
  #host: HostArray | null;
  constructor(
    readonly device: Device,
    readonly deviceIndex: number,
    readonly buffer: NativeDeviceBuffer | null,
    host: HostArray | null,
  ) {
    this.#host = host;
    if (host) {
      hostStats.storages++;
      hostStats.bytes += host.byteLength;
    }
  }
  get host(): HostArray | null { return this.#host; }
  #ptr: bigint | undefined;
  /**
   * The GPU block's device address, read from the buffer once: a block keeps
   * its address until it goes back, and every launch reads the addresses of
   * its tensors (a getter call into the addon each time otherwise).
   */
  get ptr(): bigint { return (this.#ptr ??= this.buffer!.ptr); }
  retain(): void {
    if (this.released) throw new InternalError('retaining tensor memory that was already released');
    this.#holders++;
  }
  /**
   * One holder lets go; the last returns the memory. A GPU block goes back to
   * the caching allocator at once: all work of a device is ordered on its one
   * stream (native/runtime/device.h), so work already enqueued that reads the
   * block runs before any later work that reuses it.
   */
  release(): void {
    if (this.released || --this.#holders > 0) return;
    this.released = true;
    if (this.buffer) {
      registry.unregister(this);
      this.buffer.dispose();
    }
    if (this.#host) {
      hostStats.storages--;
      hostStats.bytes -= this.#host.byteLength;
      this.#host = null;
    }
  }
  /** The user's dispose(): their handles become unusable; the memory waits for the ops still using it. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.release();
  }
}

/** An op's own claim on a storage (one holder), shared by the views made from it. */
class Lease {
  released = false;
  constructor(readonly storage: Storage) {}
  release(): void {
    if (this.released) return;
    this.released = true;
    this.storage.release();
  }
}

/** Host storages whose memory is still held (not yet released by dispose). */
const hostStats = { storages: 0, bytes: 0 };

/** @internal Host (cpu) storages still held and their bytes: for leak checks in tests. */
export function hostMemoryStats(): { storages: number; bytes: number } {
  return { ...hostStats };
}

// Backstop only: storages that become unreachable without dispose() return their
// device block to the allocator cache when the GC notices.
const registry = new FinalizationRegistry<NativeDeviceBuffer>((buf) => buf.dispose());

let seedCounter = 0x5eed_0000n;
/** Seeds the generator used by {@link Tensor.randn} when no explicit seed is given. */
export function manualSeed(seed: number | bigint): void {
  seedCounter = checkSeed(seed, 'seed') << 20n;
}
/** `BigInt(seed)` throws a raw RangeError/SyntaxError/TypeError on 1.5, 'x' or undefined: check first. */
function checkSeed(seed: unknown, argument: string): bigint {
  if (typeof seed === 'bigint') return seed;
  if (typeof seed === 'number' && Number.isSafeInteger(seed)) return BigInt(seed);
  throw new InvalidArgumentError(argument, 'an integer number (at most 2^53 in magnitude) or a bigint', describeValue(seed));
}
function nextSeed(): bigint {
  seedCounter += 1n;
  return seedCounter;
}

/** Options of the tensor methods that wait ({@link Tensor.toHost}, {@link Tensor.toDevice}, {@link Tensor.toFloat32}). */
export interface WaitOptions {
  /** Cancels the wait: the promise rejects with an `AbortError` (code `ABORT_ERR`) as soon as it fires. */
  signal?: AbortSignal;
}

function checkWaitOptions(options: unknown): AbortSignal | undefined {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an options object { signal }', String(options));
  return checkSignal((options as WaitOptions).signal, 'options.signal');
}

/** Options for tensor factories. */
export interface TensorOptions {
  /** `'cpu'`, `'cuda'` or `'cuda:N'`; default `cuda:0` when a GPU is usable, else `cpu`. */
  device?: Device | 'cuda';
}

function checkShape(shape: unknown, argument = 'shape'): number[] {
  if (!Array.isArray(shape)) throw new ShapeError(argument, 'an array of non-negative integers', describeValue(shape));
  for (const [i, d] of shape.entries()) {
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0) {
      throw new ShapeError(`${argument}[${i}]`, 'a non-negative integer', describeValue(d));
    }
  }
  if (shape.length > 8) throw new ShapeError(argument, 'at most 8 dimensions', `${shape.length}`);
  return [...shape] as number[];
}

/** Row-major strides (in elements) of a contiguous tensor of `shape`. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Box-Muller over the seeded mulberry32 generator: deterministic standard normals for CPU tensors. */
function hostRandn(n: number, seed: bigint): Float32Array {
  const next = mulberry32(Number(seed & 0xffffffffn) ^ Number((seed >> 32n) & 0xffffffffn));
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = Math.max(next(), 1e-12), u2 = next();
    const r = Math.sqrt(-2 * Math.log(u1));
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

/**
 * An n-dimensional array on a GPU or on the host.
 *
 * Shapes and strides are in elements. bf16/f16 data read back with
 * {@link Tensor.toHost} comes as raw bits in a `Uint16Array`
 * (see `fromBf16`/`fromF16` in the dtype helpers).
 */
export class Tensor {
  /** Size of each dimension. */
  readonly shape: readonly number[];
  /** Step in elements between neighbours along each dimension (0 = broadcast). */
  readonly strides: readonly number[];
  /** Offset in elements of element [0,…,0] within the storage. */
  readonly offset: number;
  readonly dtype: DType;
  readonly #storage: Storage;
  /** Set on an op's handle (from {@link Tensor.retain}) and its views; null on the user's tensors. */
  readonly #lease: Lease | null;

  /** @internal Use the static factories. */
  constructor(storage: Storage, shape: readonly number[], strides: readonly number[], offset: number, dtype: DType,
    lease: Lease | null = null) {
    this.#storage = storage;
    this.#lease = lease;
    // A frozen array cannot change under us: share it (handles from retain() and views
    // of the same shape are made per call; a copy each is garbage on the hot path).
    this.shape = Object.isFrozen(shape) ? shape : Object.freeze([...shape]);
    this.strides = Object.isFrozen(strides) ? strides : Object.freeze([...strides]);
    this.offset = offset;
    this.dtype = dtype;
  }

  // ---------------------------------------------------------------- factories

  /**
   * Copies host data into a new contiguous tensor.
   * @param data  bf16/f16: `Uint16Array` of raw bits, or a `Float32Array` that is rounded to nearest even;
   *              f32: `Float32Array`; i32: `Int32Array`; bool: `Uint8Array` (nonzero = true).
   *              Untyped bytes (a `Buffer`/`Uint8Array`, `ArrayBuffer` or `DataView`) hold the elements of
   *              `dtype` as little-endian bits (for bool, one byte per element); `dtype` is then required.
   * @param shape Dimensions; `data.length` must equal their product.
   * @param dtype Element type (default: f32 for Float32Array, i32 for Int32Array; required for anything else).
   */
  static fromHost(data: ArrayBufferView | ArrayBuffer, shape: readonly number[], dtype?: DType, options: TensorOptions = {}): Tensor {
    const dims = checkShape(shape);
    const dt = dtype === undefined ? inferDType(data) : checkDType(dtype);
    const n = product(dims);
    const host = isUntypedBytes(data) ? bytesAs(data, dt, n) : coerceHost(data, dt);
    if (host.length !== n) {
      throw new ShapeError('data', `${n} elements for shape [${dims.join(', ')}]`, `${host.length}`);
    }
    const { device, index } = parseDevice(options.device, 'options.device');
    if (index < 0) {
      const copy = host === data ? host.slice() as HostArray : host;
      return new Tensor(new Storage('cpu', -1, null, copy), dims, contiguousStrides(dims), 0, dt);
    }
    const t = Tensor.#allocCuda(dims, dt, device, index);
    try {
      if (n > 0) native().copyHtoD(t.#storage.buffer!, 0, host);
    } catch (e) {
      t.dispose(); // e.g. refused while a CUDA graph is captured: nothing half-made is handed out
      throw e;
    }
    return t;
  }

  /** A contiguous tensor with unspecified contents (device memory is not cleared). */
  static empty(shape: readonly number[], dtype: DType = 'f32', options: TensorOptions = {}): Tensor {
    const dims = checkShape(shape);
    const dt = checkDType(dtype);
    const { device, index } = parseDevice(options.device, 'options.device');
    if (index < 0) return new Tensor(new Storage('cpu', -1, null, allocHostFor(dims, dt)), dims, contiguousStrides(dims), 0, dt);
    return Tensor.#allocCuda(dims, dt, device, index);
  }

  /** A contiguous tensor of zeros. */
  static zeros(shape: readonly number[], dtype: DType = 'f32', options: TensorOptions = {}): Tensor {
    const t = Tensor.empty(shape, dtype, options);
    if (t.isCuda && t.numel > 0) native().memset(t.#storage.buffer!, 0, t.numel * itemSize(t.dtype), 0);
    return t;
  }

  /**
   * Standard-normal samples (float dtypes only). On a GPU they are generated
   * on the device (counter-based Philox), never copied from the host.
   * @param options.seed Explicit seed; default: the global generator ({@link manualSeed}).
   */
  static randn(shape: readonly number[], dtype: DType = 'f32', options: TensorOptions & { seed?: number | bigint } = {}): Tensor {
    const dt = checkDType(dtype);
    if (dt !== 'bf16' && dt !== 'f16' && dt !== 'f32') throw new DTypeError('dtype', 'bf16, f16 or f32 for randn', dt);
    const seed = options.seed === undefined ? nextSeed() : checkSeed(options.seed, 'options.seed');
    const t = Tensor.empty(shape, dt, options);
    if (t.numel === 0) return t;
    if (t.isCuda) {
      native().randn(t.#storage.buffer!, 0, t.numel, DTYPE_CODE[dt], seed, 0n);
    } else {
      const v = hostRandn(t.numel, seed);
      const host = t.#storage.host!;
      if (dt === 'f32') (host as Float32Array).set(v);
      else (host as Uint16Array).set(dt === 'bf16' ? toBf16(v) : toF16(v));
    }
    return t;
  }

  static #allocCuda(dims: number[], dt: DType, device: Device, index: number): Tensor {
    const bytes = Math.max(product(dims) * itemSize(dt), 1);
    if (!Number.isSafeInteger(bytes)) {
      throw new ShapeError('shape', 'a shape whose size in bytes is below 2^53', `[${dims.join(', ')}] of ${dt}`);
    }
    let buffer: NativeDeviceBuffer;
    try {
      buffer = native().alloc(index, bytes);
    } catch (e) {
      // Name the shape: the allocator's message speaks only of bytes.
      if (e instanceof OutOfMemoryError) {
        throw new OutOfMemoryError(`shape [${dims.join(', ')}] of ${dt} (${bytes} bytes) on ${device}: ${e.message}`,
          e.cudaError, e.call, e.remedy);
      }
      throw e;
    }
    const storage = new Storage(device, index, buffer, null);
    registry.register(storage, buffer, storage);
    return new Tensor(storage, dims, contiguousStrides(dims), 0, dt);
  }

  // --------------------------------------------------------------- properties

  /** `'cpu'` or `'cuda:N'`. */
  get device(): Device { return this.#storage.device; }
  /** CUDA device index, or -1 on the CPU. */
  get deviceIndex(): number { return this.#storage.deviceIndex; }
  get isCuda(): boolean { return this.#storage.deviceIndex >= 0; }
  get isCpu(): boolean { return this.#storage.deviceIndex < 0; }
  /** Number of dimensions. */
  get ndim(): number { return this.shape.length; }
  /** Number of elements. */
  get numel(): number { return product(this.shape); }
  /** True once this tensor (or a view sharing its storage) was disposed. */
  get disposed(): boolean { return this.#lease ? this.#lease.released : this.#storage.disposed; }
  /** True when the elements are laid out row-major without gaps. */
  get isContiguous(): boolean {
    const c = contiguousStrides(this.shape);
    return this.shape.every((d, i) => d <= 1 || this.strides[i] === c[i]);
  }

  /** @internal The device buffer (throws if disposed or on the CPU). */
  buffer(argument = 'tensor'): NativeDeviceBuffer {
    this.assertAlive(argument);
    if (!this.#storage.buffer) throw new InvalidArgumentError(argument, 'a CUDA tensor', 'a cpu tensor');
    return this.#storage.buffer;
  }

  /** @internal Device address of the storage's first element (as `buffer().ptr`; throws if disposed or on the CPU). */
  devicePtr(argument = 'tensor'): bigint {
    this.assertAlive(argument);
    if (!this.#storage.buffer) throw new InvalidArgumentError(argument, 'a CUDA tensor', 'a cpu tensor');
    return this.#storage.ptr;
  }

  /** @internal The host storage array (CPU tensors; throws if disposed or on a GPU). */
  hostStorage(argument = 'tensor'): HostArray {
    this.assertAlive(argument);
    if (!this.#storage.host) throw new InvalidArgumentError(argument, 'a cpu tensor', this.device);
    return this.#storage.host;
  }

  /** @internal Throws {@link DisposedError} naming `argument` if disposed. */
  assertAlive(argument = 'tensor'): this {
    if (this.disposed) throw new DisposedError(argument);
    return this;
  }

  /**
   * @internal An op's own handle on this tensor's memory, taken when the op is
   * called (throws {@link DisposedError} naming `argument` if already disposed).
   * It stays usable when the user disposes this tensor meanwhile; the memory
   * goes back once every such handle is disposed too. Views of the handle
   * share it (disposing one lets go of it once).
   */
  retain(argument = 'tensor'): Tensor {
    this.assertAlive(argument);
    this.#storage.retain();
    return new Tensor(this.#storage, this.shape, this.strides, this.offset, this.dtype, new Lease(this.#storage));
  }

  // -------------------------------------------------------------------- views

  #view(shape: number[], strides: number[], offset: number): Tensor {
    this.assertAlive();
    return new Tensor(this.#storage, shape, strides, offset, this.dtype, this.#lease);
  }

  #dim(d: number, argument = 'dim'): number {
    if (!Number.isInteger(d) || d < -this.ndim || d >= this.ndim) {
      throw new InvalidArgumentError(argument, `an integer in [${-this.ndim}, ${this.ndim - 1}]`, String(d));
    }
    return d < 0 ? d + this.ndim : d;
  }

  /** Swaps two dimensions (no copy). */
  transpose(dim0: number, dim1: number): Tensor {
    const a = this.#dim(dim0, 'dim0'), b = this.#dim(dim1, 'dim1');
    const shape = [...this.shape], strides = [...this.strides];
    [shape[a], shape[b]] = [shape[b]!, shape[a]!];
    [strides[a], strides[b]] = [strides[b]!, strides[a]!];
    return this.#view(shape, strides, this.offset);
  }

  /** Reorders dimensions (no copy): `dims` is a permutation of `0..ndim-1`. */
  permute(...dims: number[]): Tensor {
    const seen = new Set<number>();
    const ds = dims.map((d) => this.#dim(d, 'dims'));
    for (const d of ds) seen.add(d);
    if (ds.length !== this.ndim || seen.size !== this.ndim) {
      throw new InvalidArgumentError('dims', `a permutation of ${this.ndim} dimensions`, `[${dims.join(', ')}]`);
    }
    return this.#view(ds.map((d) => this.shape[d]!), ds.map((d) => this.strides[d]!), this.offset);
  }

  /** Elements `start … start+length-1` along `dim` (no copy). */
  narrow(dim: number, start: number, length: number): Tensor {
    const d = this.#dim(dim);
    const size = this.shape[d]!;
    if (!Number.isInteger(start) || start < 0 || start > size) throw new InvalidArgumentError('start', `an integer in [0, ${size}]`, String(start));
    if (!Number.isInteger(length) || length < 0 || start + length > size) {
      throw new InvalidArgumentError('length', `an integer in [0, ${size - start}]`, String(length));
    }
    const shape = [...this.shape];
    shape[d] = length;
    return this.#view(shape, [...this.strides], this.offset + start * this.strides[d]!);
  }

  /** Removes `dim` by picking `index` along it (no copy). */
  select(dim: number, index: number): Tensor {
    const d = this.#dim(dim);
    const size = this.shape[d]!;
    if (!Number.isInteger(index) || index < -size || index >= size) throw new InvalidArgumentError('index', `an integer in [${-size}, ${size - 1}]`, String(index));
    const i = index < 0 ? index + size : index;
    const shape = [...this.shape], strides = [...this.strides];
    shape.splice(d, 1);
    strides.splice(d, 1);
    return this.#view(shape, strides, this.offset + i * this.strides[d]!);
  }

  /** Same elements, new shape (no copy; needs a contiguous tensor — call `contiguous()` first). One dim may be -1. */
  reshape(...shape: number[]): Tensor {
    const n = this.numel;
    const infer = shape.indexOf(-1);
    const dims = [...shape];
    if (infer >= 0) {
      const rest = product(shape.filter((_, i) => i !== infer));
      dims[infer] = rest === 0 ? 0 : n / rest;
    }
    checkShape(dims);
    if (product(dims) !== n) throw new ShapeError('shape', `${n} elements`, `[${shape.join(', ')}]`);
    if (!this.isContiguous) throw new InvalidArgumentError('tensor', 'a contiguous tensor for reshape (call contiguous() first)', 'a strided view');
    return this.#view(dims, contiguousStrides(dims), this.offset);
  }

  /** Repeats size-1 dimensions to `shape` with stride 0 (no copy), like PyTorch's `expand`. */
  expand(...shape: number[]): Tensor {
    if (shape.length < this.ndim) throw new ShapeError('shape', `at least ${this.ndim} dimensions`, `${shape.length}`);
    const lead = shape.length - this.ndim;
    const strides = shape.map((s, i) => {
      if (i < lead) return 0;
      const own = this.shape[i - lead]!;
      if (own === s || s === -1) return this.strides[i - lead]!;
      if (own === 1) return 0;
      throw new ShapeError(`shape[${i}]`, `${own} or a broadcast of size 1`, String(s));
    });
    const dims = shape.map((s, i) => (s === -1 ? this.shape[i - lead]! : s));
    return this.#view(dims, strides, this.offset);
  }

  /**
   * Reads an element inside a mod (scoreMod/maskMod): `slopes.at(h)`,
   * `docIds.at(b, q)`. The tensor becomes a kernel argument, so changing its
   * values later does not recompile anything.
   */
  at(...indices: (Expr | number)[]): Expr {
    this.assertAlive();
    return tensorAt(this, indices);
  }

  // -------------------------------------------------------------------- copies

  /** A contiguous copy (or this tensor itself when it is already contiguous). */
  contiguous(): Tensor {
    this.assertAlive();
    if (this.isContiguous) return this;
    return this.#copyAs(this.dtype);
  }

  /** Converts to `dtype` (a new contiguous tensor; this one when the dtype already matches). */
  to(dtype: DType): Tensor {
    const dt = checkDType(dtype);
    this.assertAlive();
    if (dt === this.dtype) return this;
    return this.#copyAs(dt);
  }

  /**
   * Copies to another device (`'cpu'` or `'cuda:N'`); returns this tensor when already there.
   * @param options.signal Cancels the wait for the copy (rejects with an AbortError at once;
   *   nothing is allocated on the target device).
   */
  async toDevice(device: Device | 'cuda', options: WaitOptions = {}): Promise<Tensor> {
    const { device: dev } = parseDevice(device);
    const signal = checkWaitOptions(options);
    this.assertAlive();
    throwIfAborted(signal, 'toDevice');
    if (dev === this.device) return this;
    const host = await this.toHost(signal ? { signal } : {});
    throwIfAborted(signal, 'toDevice');
    return Tensor.fromHost(host, this.shape, this.dtype, { device: dev });
  }

  #copyAs(dtype: DType): Tensor {
    const out = Tensor.empty(this.shape, dtype, { device: this.device });
    if (this.numel === 0) return out;
    if (this.isCuda) {
      native().castStrided(
        { buffer: this.buffer(), offset: this.offset, dtype: DTYPE_CODE[this.dtype], shape: [...this.shape], strides: [...this.strides] },
        out.buffer(), 0, DTYPE_CODE[dtype]);
    } else {
      const src = this.hostStorage();
      const dst = out.hostStorage();
      const same = dtype === this.dtype;
      forEachIndex(this.shape, this.strides, this.offset, (srcIdx, i) => {
        dst[i] = same ? src[srcIdx]! : encodeElement(dtype, readElement(this.dtype, src, srcIdx));
      });
    }
    return out;
  }

  /**
   * Overwrites this tensor's elements with `src`'s, in place: a tensor of the
   * same shape and dtype on the same device (any strides), or host data as
   * {@link Tensor.fromHost} takes it (numel elements of this dtype). This
   * tensor must be contiguous. On a GPU the copy is enqueued on the device's
   * stream (ordered before later work, e.g. a `graph.replay()` that reads this
   * tensor) and returns at once; host data is staged first, so the caller may
   * reuse its array right away. Returns this tensor.
   */
  copyFrom(src: Tensor | ArrayBufferView | ArrayBuffer): this {
    this.assertAlive();
    if (!this.isContiguous) throw new InvalidArgumentError('this', 'a contiguous tensor to copy into', 'a strided view');
    const bytes = this.numel * itemSize(this.dtype);
    if (src instanceof Tensor) {
      src.assertAlive('src');
      if (src.dtype !== this.dtype) throw new DTypeError('src', `dtype ${this.dtype} (this tensor's)`, src.dtype);
      if (src.device !== this.device) throw new InvalidArgumentError('src', `a tensor on ${this.device} (this tensor's device)`, src.device);
      if (src.shape.length !== this.shape.length || src.shape.some((d, i) => d !== this.shape[i])) {
        throw new ShapeError('src', `shape [${this.shape.join(', ')}]`, `[${src.shape.join(', ')}]`);
      }
      if (bytes === 0) return this;
      if (this.isCpu) {
        const dst = this.hostStorage(), from = src.hostStorage('src');
        forEachIndex(src.shape, src.strides, src.offset, (si, i) => { dst[this.offset + i] = from[si]!; });
      } else if (src.isContiguous) {
        native().copyDtoD(this.buffer(), this.offset * itemSize(this.dtype), src.buffer('src'), src.offset * itemSize(src.dtype), bytes);
      } else {
        native().castStrided(
          { buffer: src.buffer('src'), offset: src.offset, dtype: DTYPE_CODE[src.dtype], shape: [...src.shape], strides: [...src.strides] },
          this.buffer(), this.offset, DTYPE_CODE[this.dtype]);
      }
      return this;
    }
    const n = this.numel;
    const host = isUntypedBytes(src) ? bytesAs(src, this.dtype, n) : coerceHost(src as ArrayBufferView, this.dtype);
    if (host.length !== n) throw new ShapeError('src', `${n} elements (shape [${this.shape.join(', ')}])`, `${host.length}`);
    if (n === 0) return this;
    if (this.isCpu) this.hostStorage().set(host as never, this.offset);
    else native().copyHtoD(this.buffer(), this.offset * itemSize(this.dtype), host);
    return this;
  }

  /**
   * Copies the elements to a new contiguous host array, waiting off the main
   * thread for queued GPU work. bf16/f16 come back as raw bits (`Uint16Array`).
   * The copy is taken (enqueued) before this returns, so disposing the tensor
   * right after the call is safe.
   * @param options.signal Stops waiting: rejects with an AbortError at once (the
   *   copy still completes on the device; its result is dropped).
   */
  async toHost(options: WaitOptions = {}): Promise<HostArray> {
    const signal = checkWaitOptions(options);
    this.assertAlive();
    throwIfAborted(signal, 'toHost');
    if (this.isCpu) {
      const src = this.hostStorage();
      if (this.isContiguous) return src.slice(this.offset, this.offset + this.numel) as HostArray;
      const dst = allocHost(this.dtype, this.numel);
      forEachIndex(this.shape, this.strides, this.offset, (s, i) => { dst[i] = src[s]!; });
      return dst;
    }
    const c = this.contiguous();
    let ab: Promise<ArrayBuffer>;
    try {
      const bytes = this.numel * itemSize(this.dtype);
      ab = bytes === 0 ? Promise.resolve(new ArrayBuffer(0)) : native().copyDtoH(c.buffer(), c.offset * itemSize(this.dtype), bytes);
    } finally {
      // The copy is enqueued: the stream orders it before any reuse of the block.
      if (c !== this) c.dispose();
    }
    const data = await abortable(ab, signal, 'toHost');
    switch (this.dtype) {
      case 'bf16': case 'f16': return new Uint16Array(data);
      case 'f32': return new Float32Array(data);
      case 'i32': return new Int32Array(data);
      default: return new Uint8Array(data);
    }
  }

  /**
   * Like {@link Tensor.toHost} but always returns floats (bf16/f16 widened, ints converted).
   * @param options.signal As for {@link Tensor.toHost}.
   */
  async toFloat32(options: WaitOptions = {}): Promise<Float32Array> {
    const host = await this.toHost(options);
    if (this.dtype === 'f32') return host as Float32Array;
    return convertHost(host, this.dtype, 'f32') as Float32Array;
  }

  // ------------------------------------------------------------------ lifetime

  /**
   * Frees the memory (a GPU block goes back to the allocator's cache). Views
   * share storage, so they become unusable too. Calling it twice is harmless.
   *
   * Safe right after passing the tensor to an op, even before awaiting it: an
   * op holds its inputs from the moment it is called, so the memory goes back
   * only once the op is done with it (for a GPU tensor, once its work is
   * enqueued on the device's stream, which orders every later use of the block).
   */
  dispose(): void {
    if (this.#lease) this.#lease.release();
    else this.#storage.dispose();
  }

  /** `using t = Tensor.randn(...)` disposes at scope exit. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /**
   * `await using t = ...` disposes at scope exit once the device has passed
   * the work queued so far (a CUDA tensor waits, off the main thread, for its
   * device; a cpu tensor is disposed at once).
   */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.isCuda && !this.disposed) await native().synchronize(this.deviceIndex);
    this.dispose();
  }

  /** Short description: `Tensor([2, 16, 128, 64], bf16, cuda:0)`. */
  toString(): string {
    return `Tensor([${this.shape.join(', ')}], ${this.dtype}, ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

/** Calls `fn(storageIndex, flatIndex)` for every element in row-major order. */
export function forEachIndex(
  shape: readonly number[], strides: readonly number[], offset: number,
  fn: (storageIndex: number, flatIndex: number) => void,
): void {
  const n = product(shape);
  if (n === 0) return;
  const nd = shape.length;
  const idx = new Array<number>(nd).fill(0);
  let pos = offset;
  for (let i = 0; i < n; i++) {
    fn(pos, i);
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]!++;
      pos += strides[d]!;
      if (idx[d]! < shape[d]!) break;
      pos -= strides[d]! * shape[d]!;
      idx[d] = 0;
    }
  }
}

/**
 * Host storage for a cpu tensor of `dims`. V8 throws a raw RangeError for a
 * length above the largest typed array (2^32 elements on Node 20) or when the
 * memory is not there: both become typed errors naming `shape`.
 */
function allocHostFor(dims: readonly number[], dt: DType): HostArray {
  const n = product(dims);
  const what = `[${dims.join(', ')}] of ${dt}`;
  if (!Number.isSafeInteger(n)) throw new ShapeError('shape', 'a shape with fewer than 2^53 elements', what);
  try {
    return allocHost(dt, n);
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    if (/length/i.test(e.message)) {
      throw new ShapeError('shape', `at most ${kMaxLength} elements for a cpu tensor (the largest JavaScript typed array; ` +
        'use a CUDA device for larger tensors)', `${what} (${n} elements)`);
    }
    const remedy = '  - Free tensors you no longer need (dispose()) or use a smaller shape\n' +
      '  - Give the process more memory (container or ulimit limits)';
    throw new OutOfMemoryError(`shape ${what}: host memory for ${n * itemSize(dt)} bytes could not be allocated (${e.message}).\n` +
      `Possible solutions:\n${remedy}`, '', 'allocHost', remedy);
  }
}

/** Bytes that say nothing of their element type: a Buffer/Uint8Array, Uint8ClampedArray, Int8Array, DataView or ArrayBuffer. */
function isUntypedBytes(data: unknown): data is Uint8Array | Uint8ClampedArray | Int8Array | DataView | ArrayBuffer {
  return data instanceof Uint8Array || data instanceof Uint8ClampedArray || data instanceof Int8Array ||
    data instanceof DataView || data instanceof ArrayBuffer;
}

/** Reads untyped bytes as `n` elements of `dt` (a copy, so an unaligned Buffer slice works). */
function bytesAs(data: Uint8Array | Uint8ClampedArray | Int8Array | DataView | ArrayBuffer, dt: DType, n: number): HostArray {
  const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const want = n * itemSize(dt);
  if (bytes.byteLength !== want) {
    throw new ShapeError('data', `${want} bytes (${n} elements of ${dt}) for this shape`, `${bytes.byteLength} bytes`);
  }
  // A fresh array in every case: Buffer#slice shares memory, so the caller's later `slice()` would not copy.
  const copy = allocHost(dt, n);
  new Uint8Array(copy.buffer).set(bytes);
  return copy;
}

function inferDType(data: unknown): DType {
  if (data instanceof Float32Array) return 'f32';
  if (data instanceof Int32Array) return 'i32';
  if (isUntypedBytes(data)) {
    throw new DTypeError('dtype', 'an explicit dtype for untyped bytes: \'bool\' for one flag per byte, or the dtype ' +
      'whose little-endian bits the bytes hold (e.g. \'f32\', \'bf16\')', describeValue(data));
  }
  if (!ArrayBuffer.isView(data)) {
    throw new InvalidArgumentError('data', 'a typed array, Buffer, DataView or ArrayBuffer', describeValue(data));
  }
  throw new DTypeError('dtype', 'an explicit dtype for this array type (e.g. \'bf16\' for Uint16Array bits)', describeValue(data));
}

function coerceHost(data: ArrayBufferView, dt: DType): HostArray {
  const ok =
    ((dt === 'bf16' || dt === 'f16') && data instanceof Uint16Array) ||
    (dt === 'f32' && data instanceof Float32Array) ||
    (dt === 'i32' && data instanceof Int32Array) ||
    (dt === 'bool' && data instanceof Uint8Array);
  if (ok) return data as HostArray;
  if ((dt === 'bf16' || dt === 'f16') && data instanceof Float32Array) return dt === 'bf16' ? toBf16(data) : toF16(data);
  if (!ArrayBuffer.isView(data)) {
    throw new InvalidArgumentError('data', 'a typed array, Buffer, DataView or ArrayBuffer', describeValue(data));
  }
  throw new DTypeError('data', `${hostArrayName(dt)} for dtype ${dt} (or untyped bytes)`, describeValue(data));
}
