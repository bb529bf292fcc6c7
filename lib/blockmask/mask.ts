/**
 * `BlockMask`: PyTorch's block-sparse mask layout (kv side for the forward
 * pass, transposed q side for the backward pass), held as host arrays with
 * device tensors created on demand.
 * @module
 */
import { parseDevice, type Device } from '../device.js';
import { InternalError, InvalidArgumentError, ShapeError } from '../errors.js';
import { describeValue } from '../messages.js';
import { MaskMod } from '../mods/ir.js';
import { Tensor } from '../tensor.js';
import {
  EMPTY, FULL, PARTIAL, arraysFromClasses, classesFromArrays, renderClasses, replicateArrays,
  transposeOrdered,
  type BlockDims, type BlockMaskArrays, type ToStringOptions,
} from './layout.js';
import { combineMasks, shiftMask } from './mods-adapter.js';

export type { BlockMaskArrays, ToStringOptions } from './layout.js';

/** How a block mask was produced (for diagnostics and benchmarks). */
export type BlockMaskMethod = 'analytic' | 'cpu' | 'gpu' | 'kv-blocks' | 'slice' | 'composed';

/** @internal Constructor input. */
export interface BlockMaskInit {
  dims: BlockDims;
  qLen: number;
  kvLen: number;
  blockSize: readonly [number, number];
  maskMod: MaskMod | null;
  arrays: BlockMaskArrays;
  device: Device;
  method: BlockMaskMethod;
  /** The mask mod's param values the classes were computed with (createBlockMask). */
  params?: Readonly<Record<string, number>>;
}

const ARRAY_KEYS = [
  'kvNumBlocks', 'kvIndices', 'fullKvNumBlocks', 'fullKvIndices',
  'qNumBlocks', 'qIndices', 'fullQNumBlocks', 'fullQIndices',
] as const satisfies readonly (keyof BlockMaskArrays)[];

/** A batch/head selector for {@link BlockMask.slice}: an index (negative counts from the end) or a `[start, end)` range. */
export type BlockMaskIndex = number | readonly [number, number];

/** An int32 block array given to {@link BlockMask.fromKvBlocks}: a Tensor (any device) or host data with its shape. */
export type BlockArrayInput = Tensor | { readonly data: Int32Array; readonly shape: readonly number[] };

/** Options of {@link BlockMask.fromKvBlocks}. */
export interface FromKvBlocksOptions {
  /** Query length (default: number of q blocks × q block size, as PyTorch). */
  qLen?: number;
  /** Key/value length (default: number of kv blocks × kv block size). */
  kvLen?: number;
  /** Block size, `n` or `[q, kv]` (default 128). */
  blockSize?: number | readonly [number, number];
  /** Mask applied inside the partial blocks (default: none, every position allowed). */
  maskMod?: MaskMod | null;
  /** Device of the tensors (default: the input tensors' device, else the default device). */
  device?: Device | 'cuda';
}

/**
 * A block-sparse attention mask in PyTorch's layout.
 *
 * For each (batch, head, query block) row, `kvIndices` lists the **partial**
 * key/value blocks (mask_mod must be applied) first, ascending, and
 * `kvNumBlocks` says how many there are; `fullKvIndices`/`fullKvNumBlocks`
 * list the **full** blocks (mask_mod skipped). Entries after the count are
 * padding (the remaining block indices, ascending, as PyTorch's stable
 * argsort leaves them). `q*` arrays are the transposes (per kv block, the
 * query blocks), used by the backward pass. A batch or head dimension of 1
 * broadcasts.
 *
 * `host` holds the arrays as `Int32Array`s; the `Tensor` getters upload them
 * to {@link BlockMask.device} on first use.
 */
export class BlockMask {
  /** Query length the mask was built for. */
  readonly qLen: number;
  /** Key/value length the mask was built for. */
  readonly kvLen: number;
  /** `[qBlock, kvBlock]`. */
  readonly blockSize: readonly [number, number];
  /** Mask mod applied inside partial blocks (`null`: none, every position allowed). */
  readonly maskMod: MaskMod | null;
  /** Batch size of the arrays (1 broadcasts). */
  readonly B: number;
  /** Head count of the arrays (1 broadcasts). */
  readonly H: number;
  /** Number of query blocks, `ceil(qLen / blockSize[0])`. */
  readonly numQBlocks: number;
  /** Number of key/value blocks, `ceil(kvLen / blockSize[1])`. */
  readonly numKvBlocks: number;
  /** Device of the tensor getters. */
  readonly device: Device;
  /** How it was produced. */
  readonly method: BlockMaskMethod;
  /** Host copies of the eight arrays (contiguous, row-major; do not modify). */
  readonly host: Readonly<BlockMaskArrays>;
  /**
   * @internal The mask mod's param values its block classes were computed
   * with (set by createBlockMask; undefined for lists from elsewhere).
   */
  readonly params: Readonly<Record<string, number>> | undefined;
  #tensors = new Map<keyof BlockMaskArrays, Tensor>();
  #classes: Uint8Array | undefined;
  #disposeListeners = new Set<() => void>();

  /** @internal Use {@link createBlockMask} or {@link BlockMask.fromKvBlocks}. */
  constructor(init: BlockMaskInit) {
    this.qLen = init.qLen;
    this.kvLen = init.kvLen;
    this.blockSize = Object.freeze([init.blockSize[0], init.blockSize[1]]) as readonly [number, number];
    this.maskMod = init.maskMod;
    this.B = init.dims.B;
    this.H = init.dims.H;
    this.numQBlocks = init.dims.QB;
    this.numKvBlocks = init.dims.KVB;
    this.device = init.device;
    this.method = init.method;
    this.host = Object.freeze({ ...init.arrays });
    this.params = init.params && Object.freeze({ ...init.params });
  }

  /**
   * @internal Calls `listener` on every {@link dispose} of this mask, so that
   * whoever derived device data from it (e.g. a launch's schedules) frees it
   * at the same moment. The mask stays usable after a dispose, and so do the
   * listeners.
   */
  onDispose(listener: () => void): void {
    this.#disposeListeners.add(listener);
  }

  /** @internal Builds a mask from a dense class grid [B,H,QB,KVB] (0 empty, 1 partial, 2 full). */
  static fromClasses(cls: Uint8Array, init: Omit<BlockMaskInit, 'arrays'>): BlockMask {
    const { B, H, QB, KVB } = init.dims;
    const plane = QB * KVB;
    if (cls.length === plane && B * H > 1) {
      // One plane shared by every (b, h): order it once, then repeat the arrays.
      const one = arraysFromClasses(cls, { B: 1, H: 1, QB, KVB });
      return new BlockMask({ ...init, arrays: replicateArrays(one, B * H) });
    }
    if (cls.length !== B * H * plane) throw new InternalError(`class grid of ${cls.length} entries for [${B}, ${H}, ${QB}, ${KVB}]`);
    const bm = new BlockMask({ ...init, arrays: arraysFromClasses(cls, init.dims) });
    bm.#classes = cls;
    return bm;
  }

  /** @internal */
  get dims(): BlockDims { return { B: this.B, H: this.H, QB: this.numQBlocks, KVB: this.numKvBlocks }; }

  /** `[B, H, qLen, kvLen]`, as PyTorch's `BlockMask.shape`. */
  get shape(): [number, number, number, number] { return [this.B, this.H, this.qLen, this.kvLen]; }

  /** `[qLen, kvLen]`. */
  get seqLengths(): [number, number] { return [this.qLen, this.kvLen]; }

  #shapeOf(key: keyof BlockMaskArrays): number[] {
    const q = key.startsWith('q') || key.startsWith('fullQ');
    const rows = q ? this.numKvBlocks : this.numQBlocks, cols = q ? this.numQBlocks : this.numKvBlocks;
    return key.endsWith('Indices') ? [this.B, this.H, rows, cols] : [this.B, this.H, rows];
  }

  #tensor(key: keyof BlockMaskArrays): Tensor {
    const t = this.#tensors.get(key);
    if (t && !t.disposed) return t;
    // One upload for all eight arrays; each tensor is a view of the packed buffer.
    let total = 0;
    for (const k of ARRAY_KEYS) total += this.host[k].length;
    const packed = new Int32Array(total);
    const offsets = new Map<keyof BlockMaskArrays, number>();
    let off = 0;
    for (const k of ARRAY_KEYS) { offsets.set(k, off); packed.set(this.host[k], off); off += this.host[k].length; }
    const base = Tensor.fromHost(packed, [total], 'i32', { device: this.device });
    for (const k of ARRAY_KEYS) {
      this.#tensors.set(k, base.narrow(0, offsets.get(k)!, this.host[k].length).reshape(...this.#shapeOf(k)));
    }
    return this.#tensors.get(key)!;
  }

  /** Partial blocks per query-block row, i32 `[B, H, QB]`. */
  get kvNumBlocks(): Tensor { return this.#tensor('kvNumBlocks'); }
  /** Partial kv block indices, i32 `[B, H, QB, KVB]` (first `kvNumBlocks` entries valid). */
  get kvIndices(): Tensor { return this.#tensor('kvIndices'); }
  /** Full blocks per query-block row, i32 `[B, H, QB]`. */
  get fullKvNumBlocks(): Tensor { return this.#tensor('fullKvNumBlocks'); }
  /** Full kv block indices, i32 `[B, H, QB, KVB]`. */
  get fullKvIndices(): Tensor { return this.#tensor('fullKvIndices'); }
  /** Partial blocks per kv-block column, i32 `[B, H, KVB]`. */
  get qNumBlocks(): Tensor { return this.#tensor('qNumBlocks'); }
  /** Partial q block indices per kv block, i32 `[B, H, KVB, QB]`. */
  get qIndices(): Tensor { return this.#tensor('qIndices'); }
  /** Full blocks per kv-block column, i32 `[B, H, KVB]`. */
  get fullQNumBlocks(): Tensor { return this.#tensor('fullQNumBlocks'); }
  /** Full q block indices per kv block, i32 `[B, H, KVB, QB]`. */
  get fullQIndices(): Tensor { return this.#tensor('fullQIndices'); }

  /** Uploads all eight arrays to the device now (one copy; otherwise done on first access). Returns this. */
  materialize(): this {
    this.#tensor('kvNumBlocks');
    return this;
  }

  /** @internal Dense classes [B,H,QB,KVB]: 0 empty, 1 partial, 2 full (shared; do not modify). */
  classes(): Uint8Array {
    if (!this.#classes) this.#classes = classesFromArrays(this.host as BlockMaskArrays, this.dims);
    return this.#classes;
  }

  /** Number of elements `B·H·qLen·kvLen`, ignoring sparsity (PyTorch's `numel`). */
  numel(): number { return this.B * this.H * this.qLen * this.kvLen; }

  /**
   * Percentage of the `B·H·qLen·kvLen` positions in blocks that are skipped
   * (neither partial nor full), in [0, 100]. Each listed block counts with
   * the part of it inside the sequences, so tail blocks and masks shorter than
   * one block are measured by their real extent (PyTorch multiplies whole
   * blocks, which goes negative there: -300 % for 16×16 tokens in 128 blocks).
   * A block listed twice (or both partial and full) counts once. 0 when empty.
   */
  sparsity(): number {
    const total = this.numel();
    if (total === 0) return 0;
    const [bq, bkv] = this.blockSize;
    const { kvNumBlocks, kvIndices, fullKvNumBlocks, fullKvIndices } = this.host;
    const KVB = this.numKvBlocks;
    const lists = [[kvNumBlocks, kvIndices], [fullKvNumBlocks, fullKvIndices]] as const;
    const seen = new Uint8Array(KVB);
    let computed = 0;
    for (let row = 0; row < kvNumBlocks.length; row++) {
      const qb = row % this.numQBlocks;
      const rows = Math.min(this.qLen, (qb + 1) * bq) - qb * bq;
      if (rows <= 0) continue;
      let cols = 0;
      const base = row * KVB;
      for (const [num, idx] of lists) {
        for (let t = 0; t < num[row]!; t++) {
          const kb = idx[base + t]!;
          if (seen[kb]) continue;
          seen[kb] = 1;
          cols += Math.max(0, Math.min(this.kvLen, (kb + 1) * bkv) - kb * bkv);
        }
      }
      for (const [num, idx] of lists) {
        for (let t = 0; t < num[row]!; t++) seen[idx[base + t]!] = 0;   // reset for the next row
      }
      computed += rows * cols;
    }
    return 100 * (1 - computed / total);
  }

  /** Host i32 tensor `[B, H, QB, KVB]`: 0 empty, 1 partial, 2 full. */
  toDense(): Tensor {
    const cls = this.classes();
    return Tensor.fromHost(Int32Array.from(cls), [this.B, this.H, this.numQBlocks, this.numKvBlocks], 'i32', { device: 'cpu' });
  }

  /**
   * ASCII picture per (batch, head): '█' full, '░' partial, ' ' empty (two
   * characters per block); masks larger than `gridSize` are summarised.
   */
  toPicture(options: ToStringOptions = {}): string {
    return renderClasses(this.classes(), this.dims, options);
  }

  /** `BlockMask(shape=(B, H, Q, KV), sparsity=xx.xx%, <picture>)`, as PyTorch prints it. */
  toString(options: ToStringOptions = {}): string {
    return `BlockMask(shape=(${this.shape.join(', ')}), sparsity=${this.sparsity().toFixed(2)}%, \n` +
      `${this.toPicture(options).trim()}\n)`;
  }

  /**
   * Selects batches and/or heads: an index keeps a dimension of size 1, a
   * `[start, end)` range keeps that range (negative values count from the end).
   * The mask mod is rewritten to read `b + start` / `h + start`, so inside
   * the partial blocks it still evaluates the selected batches/heads (PyTorch
   * instead makes a sliced mask's mask_mod unusable).
   */
  slice(b?: BlockMaskIndex, h?: BlockMaskIndex): BlockMask {
    const [b0, b1] = resolveIndex(b, this.B, 'b');
    const [h0, h1] = resolveIndex(h, this.H, 'h');
    const nb = b1 - b0, nh = h1 - h0;
    const { QB, KVB } = this.dims;
    const arrays = {} as BlockMaskArrays;
    for (const k of ARRAY_KEYS) {
      const src = this.host[k];
      const per = src.length / (this.B * this.H);
      const dst = new Int32Array(nb * nh * per);
      for (let i = 0; i < nb; i++) {
        for (let j = 0; j < nh; j++) {
          const s = ((b0 + i) * this.H + (h0 + j)) * per;
          dst.set(src.subarray(s, s + per), (i * nh + j) * per);
        }
      }
      arrays[k] = dst;
    }
    return new BlockMask({
      dims: { B: nb, H: nh, QB, KVB }, qLen: this.qLen, kvLen: this.kvLen, blockSize: this.blockSize,
      maskMod: this.maskMod && shiftMask(this.maskMod, this.B === 1 ? 0 : b0, this.H === 1 ? 0 : h0),
      arrays, device: this.device, method: 'slice',
    });
  }

  /**
   * Intersection with another block mask of the same lengths and block size
   * (B/H of 1 broadcast). Block rules: empty ∧ x = empty, full ∧ full = full,
   * otherwise partial; the mask mods are combined with `and`.
   */
  and(other: BlockMask): BlockMask { return this.#compose(other, 'and'); }

  /**
   * Union with another block mask: full ∨ x = full, empty ∨ empty = empty,
   * otherwise partial; the mask mods are combined with `or`.
   */
  or(other: BlockMask): BlockMask { return this.#compose(other, 'or'); }

  #compose(other: BlockMask, op: 'and' | 'or'): BlockMask {
    if (!(other instanceof BlockMask)) throw new InvalidArgumentError('other', 'a BlockMask', describeValue(other));
    if (other.qLen !== this.qLen || other.kvLen !== this.kvLen) {
      throw new ShapeError('other', `a BlockMask of lengths (${this.qLen}, ${this.kvLen})`, `(${other.qLen}, ${other.kvLen})`);
    }
    if (other.blockSize[0] !== this.blockSize[0] || other.blockSize[1] !== this.blockSize[1]) {
      throw new ShapeError('other', `block size [${this.blockSize.join(', ')}]`, `[${other.blockSize.join(', ')}]`);
    }
    const B = broadcastDim(this.B, other.B, 'B'), H = broadcastDim(this.H, other.H, 'H');
    const { QB, KVB } = this.dims;
    const a = this.classes(), c = other.classes();
    const plane = QB * KVB;
    const out = new Uint8Array(B * H * plane);
    for (let bb = 0; bb < B; bb++) {
      for (let hh = 0; hh < H; hh++) {
        const oa = ((this.B === 1 ? 0 : bb) * this.H + (this.H === 1 ? 0 : hh)) * plane;
        const oc = ((other.B === 1 ? 0 : bb) * other.H + (other.H === 1 ? 0 : hh)) * plane;
        const oo = (bb * H + hh) * plane;
        for (let i = 0; i < plane; i++) {
          const x = a[oa + i]!, y = c[oc + i]!;
          let v: number;
          if (op === 'and') v = x === EMPTY || y === EMPTY ? EMPTY : x === FULL && y === FULL ? FULL : PARTIAL;
          else v = x === FULL || y === FULL ? FULL : x === EMPTY && y === EMPTY ? EMPTY : PARTIAL;
          out[oo + i] = v;
        }
      }
    }
    return BlockMask.fromClasses(out, {
      dims: { B, H, QB, KVB }, qLen: this.qLen, kvLen: this.kvLen, blockSize: this.blockSize,
      maskMod: combineMasks(op, this.maskMod, other.maskMod), device: this.device, method: 'composed',
    });
  }

  /** A copy whose tensors live on `device`. */
  to(device: Device | 'cuda'): BlockMask {
    const { device: dev } = parseDevice(device);
    const bm = new BlockMask({
      dims: this.dims, qLen: this.qLen, kvLen: this.kvLen, blockSize: this.blockSize, maskMod: this.maskMod,
      arrays: this.host as BlockMaskArrays, device: dev, method: this.method,
      ...(this.params ? { params: this.params } : {}),
    });
    bm.#classes = this.#classes;
    return bm;
  }

  /** Frees the device tensors (host arrays stay usable; tensors are re-created on demand). */
  dispose(): void {
    for (const t of this.#tensors.values()) if (!t.disposed) t.dispose();
    this.#tensors.clear();
    for (const l of this.#disposeListeners) l();
  }

  [Symbol.dispose](): void { this.dispose(); }

  /**
   * Builds a block mask from kv-side arrays, as PyTorch's `BlockMask.from_kv_blocks`:
   * `kvNumBlocks [B,H,QB]`, `kvIndices [B,H,QB,KVB]` (fewer leading dims are
   * taken as 1), optional full-block arrays of the same shapes; the q-side
   * transposes are computed. A block listed twice, or both partial and full,
   * is an error.
   */
  static async fromKvBlocks(
    kvNumBlocks: BlockArrayInput, kvIndices: BlockArrayInput,
    fullKvNumBlocks?: BlockArrayInput | null, fullKvIndices?: BlockArrayInput | null,
    options: FromKvBlocksOptions = {},
  ): Promise<BlockMask> {
    if ((fullKvNumBlocks == null) !== (fullKvIndices == null)) {
      throw new InvalidArgumentError('fullKvIndices', 'fullKvNumBlocks and fullKvIndices both given or both omitted',
        fullKvNumBlocks == null ? 'only fullKvIndices' : 'only fullKvNumBlocks');
    }
    const [bs0, bs1] = checkBlockSize(options.blockSize ?? 128, 'options.blockSize');
    const num = await readInput(kvNumBlocks, 'kvNumBlocks');
    const idx = await readInput(kvIndices, 'kvIndices');
    if (idx.shape.length < 2 || idx.shape.length > 4) {
      throw new ShapeError('kvIndices', '2 to 4 dimensions [B, H, QB, KVB]', `[${idx.shape.join(', ')}]`);
    }
    const shape4 = [...Array(4 - idx.shape.length).fill(1), ...idx.shape] as number[];
    const [B, H, QB, KVB] = shape4 as [number, number, number, number];
    if (QB < 1 || KVB < 1 || B < 1 || H < 1) throw new ShapeError('kvIndices', 'non-empty dimensions', `[${idx.shape.join(', ')}]`);
    const numShape = shape4.slice(0, 3);
    const checkNumShape = (s: readonly number[], arg: string) => {
      const s3 = [...Array(Math.max(0, 3 - s.length)).fill(1), ...s];
      if (s3.length !== 3 || s3.some((d, i) => d !== numShape[i])) {
        throw new ShapeError(arg, `shape [${numShape.join(', ')}] (kvIndices without its last dimension)`, `[${s.join(', ')}]`);
      }
    };
    const checkIdxShape = (s: readonly number[], arg: string) => {
      const s4 = [...Array(Math.max(0, 4 - s.length)).fill(1), ...s];
      if (s4.length !== 4 || s4.some((d, i) => d !== shape4[i])) {
        throw new ShapeError(arg, `shape [${shape4.join(', ')}] (as kvIndices)`, `[${s.join(', ')}]`);
      }
    };
    checkNumShape(num.shape, 'kvNumBlocks');
    let fnum: Int32Array, fidx: Int32Array;
    if (fullKvNumBlocks != null && fullKvIndices != null) {
      const fn = await readInput(fullKvNumBlocks, 'fullKvNumBlocks');
      const fi = await readInput(fullKvIndices, 'fullKvIndices');
      checkNumShape(fn.shape, 'fullKvNumBlocks');
      checkIdxShape(fi.shape, 'fullKvIndices');
      fnum = fn.data; fidx = fi.data;
    } else {
      fnum = new Int32Array(B * H * QB);
      fidx = new Int32Array(B * H * QB * KVB);
      for (let r = 0; r < B * H * QB; r++) for (let c = 0; c < KVB; c++) fidx[r * KVB + c] = c;
    }
    const G = B * H;
    // Validate counts and indices; no block may be listed twice.
    const seen = new Uint8Array(G * QB * KVB);
    const check = (n: Int32Array, ix: Int32Array, argN: string, argI: string) => {
      for (let row = 0; row < G * QB; row++) {
        const c = n[row]!;
        if (c < 0 || c > KVB) throw new InvalidArgumentError(`${argN}[${row}]`, `a count in [0, ${KVB}]`, String(c));
        for (let j = 0; j < c; j++) {
          const k = ix[row * KVB + j]!;
          if (k < 0 || k >= KVB) throw new InvalidArgumentError(`${argI}[${row}][${j}]`, `a block index in [0, ${KVB})`, String(k));
          if (seen[row * KVB + k]) {
            throw new InvalidArgumentError(`${argI}[${row}][${j}]`, 'each kv block listed at most once per row (partial or full)', `block ${k} again`);
          }
          seen[row * KVB + k] = 1;
        }
      }
    };
    check(num.data, idx.data, 'kvNumBlocks', 'kvIndices');
    check(fnum, fidx, 'fullKvNumBlocks', 'fullKvIndices');
    const qLen = options.qLen ?? QB * bs0;
    const kvLen = options.kvLen ?? KVB * bs1;
    checkLength(qLen, 'options.qLen');
    checkLength(kvLen, 'options.kvLen');
    if (Math.ceil(qLen / bs0) !== QB) {
      throw new ShapeError('options.qLen', `a length of ${QB} blocks of ${bs0} (${(QB - 1) * bs0 + 1}..${QB * bs0})`, String(qLen));
    }
    if (Math.ceil(kvLen / bs1) !== KVB) {
      throw new ShapeError('options.kvLen', `a length of ${KVB} blocks of ${bs1} (${(KVB - 1) * bs1 + 1}..${KVB * bs1})`, String(kvLen));
    }
    const maskMod = options.maskMod ?? null;
    if (maskMod !== null) checkMaskMod(maskMod, 'options.maskMod');
    const q = transposeOrdered(num.data, idx.data, G, QB, KVB);
    const fq = transposeOrdered(fnum, fidx, G, QB, KVB);
    const dev = options.device ?? (kvIndices instanceof Tensor ? kvIndices.device : undefined);
    const { device } = parseDevice(dev, 'options.device');
    return new BlockMask({
      dims: { B, H, QB, KVB }, qLen, kvLen, blockSize: [bs0, bs1], maskMod, device, method: 'kv-blocks',
      arrays: {
        kvNumBlocks: num.data, kvIndices: idx.data, fullKvNumBlocks: fnum, fullKvIndices: fidx,
        qNumBlocks: q.num, qIndices: q.idx, fullQNumBlocks: fq.num, fullQIndices: fq.idx,
      },
    });
  }
}

async function readInput(x: BlockArrayInput, arg: string): Promise<{ data: Int32Array; shape: readonly number[] }> {
  if (x instanceof Tensor) {
    if (x.dtype !== 'i32') throw new InvalidArgumentError(arg, 'an i32 tensor', x.dtype);
    return { data: (await x.toHost()) as Int32Array, shape: x.shape };
  }
  if (x && typeof x === 'object' && (x as { data?: unknown }).data instanceof Int32Array && Array.isArray((x as { shape?: unknown }).shape)) {
    const { data, shape } = x as { data: Int32Array; shape: readonly number[] };
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== data.length) throw new ShapeError(arg, `${n} elements for shape [${shape.join(', ')}]`, String(data.length));
    return { data: data.slice(), shape };
  }
  throw new InvalidArgumentError(arg, 'an i32 Tensor or { data: Int32Array, shape }', describeValue(x));
}

function resolveIndex(ix: BlockMaskIndex | undefined, n: number, arg: string): [number, number] {
  if (ix === undefined) return [0, n];
  if (typeof ix === 'number') {
    if (!Number.isInteger(ix) || ix < -n || ix >= n) throw new InvalidArgumentError(arg, `an integer in [${-n}, ${n - 1}]`, String(ix));
    const i = ix < 0 ? ix + n : ix;
    return [i, i + 1];
  }
  if (Array.isArray(ix) && ix.length === 2 && ix.every((v) => Number.isInteger(v))) {
    let [s, e] = ix as [number, number];
    if (s < 0) s += n;
    if (e < 0) e += n;
    s = Math.max(0, Math.min(n, s));
    e = Math.max(0, Math.min(n, e));
    if (e <= s) throw new InvalidArgumentError(arg, `a non-empty range within [0, ${n})`, `[${ix.join(', ')}]`);
    return [s, e];
  }
  throw new InvalidArgumentError(arg, 'an integer index or a [start, end) pair', describeValue(ix));
}

function broadcastDim(a: number, b: number, name: string): number {
  if (a === b || b === 1) return a;
  if (a === 1) return b;
  throw new ShapeError('other', `${name} of ${a} (or 1, which broadcasts)`, String(b));
}

/** @internal Checks a sequence length: a positive safe integer. */
export function checkLength(v: unknown, arg: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 2 ** 31 - 1) {
    throw new InvalidArgumentError(arg, 'a positive integer', describeValue(v));
  }
  return v;
}

/** @internal Checks a block size: a power of two ≥ 1 (or a pair of them). */
export function checkBlockSize(v: unknown, arg: string): [number, number] {
  const one = (x: unknown, a: string): number => {
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 1 || x > 2 ** 20 || (x & (x - 1)) !== 0) {
      throw new InvalidArgumentError(a, 'a power of two (e.g. 64 or 128)', describeValue(x));
    }
    return x;
  };
  if (typeof v === 'number') { const n = one(v, arg); return [n, n]; }
  if (Array.isArray(v) && v.length === 2) return [one(v[0], `${arg}[0]`), one(v[1], `${arg}[1]`)];
  throw new InvalidArgumentError(arg, 'a power of two or a [q, kv] pair of them', describeValue(v));
}

/** @internal Checks that `m` is a MaskMod (not a ScoreMod, function or other value). */
export function checkMaskMod(m: unknown, arg: string): MaskMod {
  if (m instanceof MaskMod) return m;
  const what = typeof m === 'function'
    ? 'a plain function (wrap it: maskMod(({ q, kv }) => kv.le(q)))'
    : (m as { kind?: unknown } | null)?.kind === 'score' ? 'a ScoreMod (block masks need a MaskMod)' : describeValue(m);
  throw new InvalidArgumentError(arg, 'a MaskMod (from maskMod(), causal(), slidingWindow(), ...)', what);
}
