/**
 * GPU attention over a ragged batch (native/kernels/decode.cuh): each
 * sequence's few query tokens against its KV, for the whole batch in one
 * launch, with split-KV and its combine when the grid would not fill the GPU.
 * Two entry points share one launch: {@link runRaggedAttentionCuda} over a
 * {@link RaggedKv} (paged, contiguous or packed KV; the serving API calls it),
 * and {@link runDecodeContiguous}, the path flexAttention and
 * scaledDotProductAttention take for small Sq (contiguous [B, H, S, D] KV as
 * a ragged batch of B sequences, one page each; the page table and lengths are
 * then implied — page b is sequence b, every length Skv — so no per-call
 * tensors are made).
 *
 * What a row tile reads: with a mask mod of known position structure, only
 * the kv tiles inside the mask's hull for the tile's rows (lib/cuda/kv-range.ts;
 * the kernel computes it from each sequence's positions, and the split planner
 * sees the reduced work); with a BlockMask (flexAttention), the kv blocks its
 * lists name for the rows' query block, full ones without the mask mod.
 * Internal: not exported from the package.
 * @module
 */
import { throwIfAborted } from '../abort.js';
import { DeviceError, DTypeError, InvalidArgumentError, ShapeError } from '../errors.js';
import { loadedKernel, loadKernel, type KernelEntry, type KernelSpec } from '../jit.js';
import type { CudaModCode, MaskMod, ScoreMod } from '../mods/index.js';
import type { Hold } from '../ownership.js';
import type { BlockMask } from '../blockmask/mask.js';
import type { RaggedKv } from '../serving/paged-kv.js';
import { Tensor } from '../tensor.js';
import type { QkvDims } from '../validate.js';
import { deviceCaps } from './device-caps.js';
import { packDecodeParams, type RowStrides } from './generated/decode-params.js';
import { decodeCombineKernel, decodeKernel } from './kernel-source.js';
import { aligned } from './launch.js';
import { capturedHere, capturedOnDevice, modCode, packMod, ptr, type Captured } from './mod-code.js';
import { kvRangeOf, maxTileKvWork } from './kv-range.js';
import { DECODE_HEAD_DIMS, DECODE_TILE, planDecode, type DecodePlan } from './plan-decode.js';
import { onDevice } from './run-flex.js';
import { paramScratch } from './param-scratch.js';

/** Options of {@link runRaggedAttentionCuda}. */
export interface RaggedAttentionOptions {
  /** Multiplier of q·k. */
  scale: number;
  scoreMod?: ScoreMod;
  maskMod?: MaskMod;
  /** End-aligned causal: query token i of a sequence with n cached and m query tokens sees kv positions ≤ n − m + i. */
  causal: boolean;
  /** Also return the LSE, f32 `[T, Hq]`, natural log. */
  returnLse: boolean;
  /** Values of the mods' `param(...)` scalars. */
  params?: Record<string, number>;
  /** The call's claims: captured tensors are read through it. */
  hold?: Hold;
  signal?: AbortSignal;
  /** Force a split-KV count (tests and benchmarks); default: planned from the SM count. */
  numSplits?: number;
  /** Called once the kernels are enqueued (or the launch failed): the KV's tables may be rewritten from then on. */
  enqueued?: () => void;
}

/** One launch of the decode kernel, in the kernel's own terms (DecodeParams). */
interface DecodeLaunch {
  q: Tensor; qStrides: RowStrides;
  k: Tensor; v: Tensor; kStrides: RowStrides; vStrides: RowStrides;
  pageTable?: Tensor; pageTableStride: number; log2PageSize: number;
  seqLens?: Tensor; uniformKvLen: number;
  queryStart?: Tensor; uniformQLen: number;
  numSeqs: number; Hq: number; Hkv: number; D: number;
  maxQueryTokens: number; maxSeqLen: number;
  causal: boolean; endAligned: boolean; scale: number;
  scoreMod?: ScoreMod | undefined; maskMod?: MaskMod | undefined;
  params: Record<string, number>;
  hold?: Hold | undefined; signal?: AbortSignal | undefined;
  out: Tensor; oStrides: RowStrides; lse?: Tensor | undefined; lseStrides: RowStrides;
  numSplits?: number | undefined;
  /** The mask mod's kv-range program (kv-range.ts; ignored by a block-sparse walk). */
  kvRange: Int32Array;
  /** KV tokens the busiest row tile reads (the split planner's work), when less than maxSeqLen. */
  maxKvWork?: number | undefined;
  /** A block-sparse walk (end-aligned false: query token i is position i). */
  sparse?: SparseWalk | undefined;
  enqueued?: (() => void) | undefined;
}

/** A block mask as the decode kernel walks it. */
interface SparseWalk {
  mask: BlockMask;
  /** kvNumBlocks, kvIndices, fullKvNumBlocks, fullKvIndices on the launch device, held by the call. */
  arrays: readonly Tensor[];
}

const NO_RANGE = new Int32Array(0);
const sparseWork = new WeakMap<BlockMask, number>();

/** The most kv tokens one block-mask row lists (full + partial blocks), once per mask. */
function blockMaskWork(bm: BlockMask): number {
  let w = sparseWork.get(bm);
  if (w === undefined) {
    const { kvNumBlocks, fullKvNumBlocks } = bm.host;
    let most = 0;
    for (let r = 0; r < kvNumBlocks.length; r++) most = Math.max(most, kvNumBlocks[r]! + fullKvNumBlocks[r]!);
    w = Math.min(bm.kvLen, most * bm.blockSize[1]);
    sparseWork.set(bm, w);
  }
  return w;
}

/** The decode kernel of (D, dtype, mods): the spec is made once per combination (its source is a long string). */
const decodeSpecs = new WeakMap<object, Map<string, KernelSpec>>();
const NO_CODE = {};
function decodeSpec(D: number, dtype: string, code: CudaModCode | undefined): KernelSpec {
  let m = decodeSpecs.get(code ?? NO_CODE);
  if (!m) decodeSpecs.set(code ?? NO_CODE, (m = new Map()));
  const key = `${D}|${dtype}`;
  let spec = m.get(key);
  if (!spec) m.set(key, (spec = decodeKernel(D, dtype, code)));
  return spec;
}
const combineSpecs = new Map<string, KernelSpec>();
function combineSpec(D: number, dtype: string): KernelSpec {
  const key = `${D}|${dtype}`;
  let spec = combineSpecs.get(key);
  if (!spec) combineSpecs.set(key, (spec = decodeCombineKernel(D, dtype)));
  return spec;
}

function planLaunch(a: DecodeLaunch, entry: KernelEntry): DecodePlan {
  const bm = a.sparse?.mask;
  const plan = planDecode(
    {
      numSeqs: a.numSeqs, Hq: a.Hq, Hkv: a.Hkv, D: a.D, maxQueryTokens: a.maxQueryTokens, maxSeqLen: a.maxSeqLen,
      pageSize: a.pageTable ? 2 ** a.log2PageSize : undefined,
      ...(bm ? { maxKvWork: blockMaskWork(bm), blockSparse: { qBlock: bm.blockSize[0], perHead: bm.H > 1 } }
        : a.maxKvWork !== undefined ? { maxKvWork: a.maxKvWork } : {}),
    },
    deviceCaps(a.q.deviceIndex), a.numSplits);
  if (plan.gridX >= 2 ** 31) {
    throw new ShapeError('q', 'fewer than 2^31 decode tiles (sequences × KV heads × row tiles × splits)', String(plan.gridX));
  }
  return plan;
}

/**
 * Enqueues the decode launch (and its combine). With the kernels loaded and
 * the mods' captured tensors on the device (every call after the first) it
 * does so at once and returns undefined, without an await; else it returns
 * the promise of the rest (loading kernels, copying captured tensors).
 */
function launchDecode(a: DecodeLaunch): Promise<void> | undefined {
  if (a.numSeqs === 0 || a.maxQueryTokens === 0) return undefined;
  const device = a.q.deviceIndex;
  const dtype = a.q.dtype;
  const code = a.scoreMod || a.maskMod ? modCode(a.scoreMod, a.maskMod) : undefined;
  const spec = decodeSpec(a.D, dtype, code);
  const entry = loadedKernel(device, spec.kernel);
  if (entry) {
    const plan = planLaunch(a, entry);
    const combine = plan.numSplits > 1 ? loadedKernel(device, combineSpec(a.D, dtype).kernel) : undefined;
    const captured = code ? capturedHere(code, a.q.device, a.hold) : NO_CAPTURED;
    if ((plan.numSplits === 1 || combine) && captured) {
      enqueueDecode(a, entry, plan, combine, code, captured);
      return undefined;
    }
  }
  return (async () => {
    const e = entry ?? await loadKernel(device, spec);
    throwIfAborted(a.signal, 'attention');
    const plan = planLaunch(a, e);
    const combine = plan.numSplits > 1 ? await loadKernel(device, combineSpec(a.D, dtype)) : undefined;
    const captured = code ? await capturedOnDevice(code, a.q.device, a.hold) : NO_CAPTURED;
    enqueueDecode(a, e, plan, combine, code, captured);
  })();
}

const NO_CAPTURED: Captured = Object.freeze({ tensors: [], temps: [] });
const NO_MOD_BYTES = new Uint8Array(0);

/** Packs the parameter block and enqueues (synchronous: nothing awaits); frees the launch's temporaries. */
function enqueueDecode(a: DecodeLaunch, entry: KernelEntry, plan: DecodePlan, combine: KernelEntry | undefined,
  code: CudaModCode | undefined, cap: Captured): void {
  const bm = a.sparse?.mask;
  const temps: Tensor[] = [...cap.temps];
  try {
    throwIfAborted(a.signal, 'attention');
    const mod = code ? packMod(code, cap.tensors, a.params) : NO_MOD_BYTES;
    let wsO = 0n, wsLse = 0n;
    if (combine) {
      const rows = entry.cfg.blockM;
      const o = Tensor.empty([plan.gridX * rows * a.D], 'f32', { device: a.q.device });
      temps.push(o);
      const l = Tensor.empty([plan.gridX * rows], 'f32', { device: a.q.device });
      temps.push(l);
      wsO = ptr(o);
      wsLse = ptr(l);
    }
    const sa = a.sparse?.arrays;
    const QB = bm ? bm.numQBlocks : 0, KVB = bm ? bm.numKvBlocks : 0;
    const values = {
      q: ptr(a.q), k: ptr(a.k), v: ptr(a.v), o: ptr(a.out), lse: a.lse ? ptr(a.lse) : 0n, wsO, wsLse,
      pageTable: a.pageTable ? ptr(a.pageTable) : 0n, seqLens: a.seqLens ? ptr(a.seqLens) : 0n,
      queryStart: a.queryStart ? ptr(a.queryStart) : 0n,
      kvNumBlocks: sa ? ptr(sa[0]!) : 0n, kvIndices: sa ? ptr(sa[1]!) : 0n,
      fullKvNumBlocks: sa ? ptr(sa[2]!) : 0n, fullKvIndices: sa ? ptr(sa[3]!) : 0n,
      qStrides: a.qStrides, oStrides: a.oStrides, lseStrides: a.lseStrides, kStrides: a.kStrides, vStrides: a.vStrides,
      numSeqs: a.numSeqs, Hq: a.Hq, Hkv: a.Hkv, uniformKvLen: a.uniformKvLen, uniformQLen: a.uniformQLen,
      pageTableStride: a.pageTableStride, log2PageSize: a.log2PageSize, rowTiles: plan.rowTiles, numSplits: plan.numSplits,
      causal: a.causal, endAligned: a.endAligned, scale: a.scale,
      packHeads: plan.packHeads, segTokens: plan.segTokens, qSegments: plan.qSegments, segTiles: plan.segTiles,
      bmKvBlock: bm ? bm.blockSize[1] : 0,
      bmNumStrides: [bm && bm.B > 1 ? bm.H * QB : 0, bm && bm.H > 1 ? QB : 0] as const,
      bmIdxStrides: [bm && bm.B > 1 ? bm.H * QB * KVB : 0, bm && bm.H > 1 ? QB * KVB : 0, KVB] as const,
      kvRange: bm ? NO_RANGE : a.kvRange,
      mod,
    };
    entry.handle.launch([plan.gridX, 1, 1], [entry.cfg.threads, 1, 1], entry.cfg.smemBytes, packDecodeParams(entry.cfg, values, paramScratch(entry.cfg)));
    if (combine) {
      values.mod = NO_MOD_BYTES;
      combine.handle.launch([plan.combineGridX, 1, 1], [combine.cfg.threads, 1, 1], combine.cfg.smemBytes,
        packDecodeParams(combine.cfg, values, paramScratch(combine.cfg)));
    }
  } finally {
    // Stream-ordered allocator: freeing temporaries (workspace included) right after the enqueue is safe.
    for (const t of temps) t.dispose();
    a.enqueued?.();
  }
}

/** Arguments of {@link runDecodeContiguous}: a flex or SDPA call with q `[B, Hq, Sq, D]`, k/v `[B, Hkv, Skv, D]`. */
export interface DecodeContiguousArgs {
  q: Tensor; k: Tensor; v: Tensor;
  dims: QkvDims;
  scale: number;
  returnLse: boolean;
  /** Top-left causal (SDPA `isCausal`: query i sees keys 0…i). */
  causal: boolean;
  scoreMod?: ScoreMod | undefined;
  maskMod?: MaskMod | undefined;
  params: Record<string, number>;
  hold?: Hold | undefined;
  signal?: AbortSignal | undefined;
  numSplits?: number;
  /**
   * flexAttention's block mask (`qLen = Sq`, `kvLen = Skv`, B and H of 1 or
   * the call's): the kernel walks its kv lists, `maskMod` (its mask mod)
   * applied in partial blocks only.
   */
  blockMask?: BlockMask | undefined;
}

/**
 * flexAttention / SDPA for small Sq on the decode kernel (see the module notes).
 * Claims the block mask's device arrays in `a.hold` before its first await.
 */
export function runDecodeContiguous(a: DecodeContiguousArgs): Promise<{ out: Tensor; lse?: Tensor }> {
  let sparse: SparseWalk | undefined;
  try {
    if (a.blockMask) {
      const mask = onDevice(a.blockMask, a.q.device);
      const arrays = [mask.kvNumBlocks, mask.kvIndices, mask.fullKvNumBlocks, mask.fullKvIndices]
        .map((t) => (a.hold ? a.hold.tensor(t, 'options.blockMask') : t));
      sparse = { mask, arrays };
    }
  } catch (err) {
    return Promise.reject(err);
  }
  return decodeContiguous(a, sparse);
}

async function decodeContiguous(a: DecodeContiguousArgs, sparse: SparseWalk | undefined): Promise<{ out: Tensor; lse?: Tensor }> {
  const d = a.dims;
  for (const [name, t] of [['q', a.q], ['k', a.k], ['v', a.v]] as const) {
    if (t.strides[3] !== 1) throw new ShapeError(name, 'a contiguous last dimension (stride 1); call contiguous()', `stride ${t.strides[3]}`);
  }
  if (d.Skv >= 2 ** 30) throw new ShapeError('k', 'fewer than 2^30 keys', String(d.Skv));
  const out = Tensor.empty([d.B, d.Hq, d.Sq, d.D], a.q.dtype, { device: a.q.device });
  let lse: Tensor | undefined;
  const temps: Tensor[] = [];
  try {
    if (a.returnLse) lse = Tensor.empty([d.B, d.Hq, d.Sq], 'f32', { device: a.q.device });
    if (d.B * d.Hq * d.Sq === 0) return lse ? { out, lse } : { out };
    const q = aligned(a.q), k = aligned(a.k), v = aligned(a.v);
    temps.push(...[q, k, v].filter((t, i) => t !== [a.q, a.k, a.v][i]));
    // [B, H, S, D] strides as the kernel's [seq, token, head] / [page, token, head].
    const rs = (t: Tensor): RowStrides => [t.strides[0]!, t.strides[2]!, t.strides[1]!];
    const kvRange = sparse ? NO_RANGE : kvRangeOf(a.maskMod);
    const pending = launchDecode({
      kvRange, sparse,
      maxKvWork: kvRange.length ? maxTileKvWork(kvRange, {
        n: d.Skv, m: d.Sq, G: d.Hq / d.Hkv, BM: DECODE_TILE[d.D]!.BM, causal: a.causal, endAligned: false,
      }) : undefined,
      q, qStrides: rs(q), k, v, kStrides: rs(k), vStrides: rs(v),
      pageTableStride: 0, log2PageSize: 30, uniformKvLen: d.Skv, uniformQLen: d.Sq,
      numSeqs: d.B, Hq: d.Hq, Hkv: d.Hkv, D: d.D, maxQueryTokens: d.Sq, maxSeqLen: d.Skv,
      causal: a.causal, endAligned: false, scale: a.scale, scoreMod: a.scoreMod, maskMod: a.maskMod, params: a.params,
      hold: a.hold, signal: a.signal, out, oStrides: rs(out), lse, lseStrides: [d.Hq * d.Sq, 1, d.Sq], numSplits: a.numSplits,
    });
    if (pending) await pending;
  } catch (err) {
    out.dispose();
    lse?.dispose();
    throw err;
  } finally {
    for (const t of temps) t.dispose();
  }
  return lse ? { out, lse } : { out };
}

function intArg(v: unknown, arg: string, min = 0): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > 2 ** 31 - 1) {
    throw new InvalidArgumentError(arg, `an integer >= ${min} below 2^31`, String(v));
  }
  return v;
}

function i32Vector(t: unknown, arg: string, len: number, q: Tensor): Tensor {
  if (!(t instanceof Tensor)) throw new InvalidArgumentError(arg, 'an i32 Tensor', typeof t);
  t.assertAlive(arg);
  if (t.dtype !== 'i32') throw new DTypeError(arg, 'dtype i32', t.dtype);
  if (t.device !== q.device) throw new DeviceError(arg, `device ${q.device} (same as q)`, t.device);
  if (t.ndim !== 1 || t.shape[0] !== len || (len > 1 && t.strides[0] !== 1)) {
    throw new ShapeError(arg, `a contiguous i32 vector of ${len} entries`, `[${t.shape.join(', ')}]`);
  }
  return t;
}

/** K or V of a RaggedKv: q's dtype and device, last dim D contiguous, 16-byte aligned for the kernel's loads. */
function kvPool(t: unknown, arg: string, q: Tensor, D: number, strides: readonly number[]): Tensor {
  if (!(t instanceof Tensor)) throw new InvalidArgumentError(arg, 'a Tensor', typeof t);
  t.assertAlive(arg);
  if (t.dtype !== q.dtype) throw new DTypeError(arg, `dtype ${q.dtype} (same as q)`, t.dtype);
  if (t.device !== q.device) throw new DeviceError(arg, `device ${q.device} (same as q)`, t.device);
  if (t.ndim < 2 || t.shape[t.ndim - 1] !== D || t.strides[t.ndim - 1] !== 1) {
    throw new ShapeError(arg, `a tensor [..., Hkv, ${D}] with a contiguous last dimension`, `shape [${t.shape.join(', ')}], strides [${t.strides.join(', ')}]`);
  }
  if (t.offset % 8 !== 0 || t.devicePtr(arg) % 16n !== 0n || strides.some((s) => s % 8 !== 0)) {
    throw new ShapeError(arg, 'a 16-byte aligned view whose page, token and head strides are multiples of 8 elements',
      `offset ${t.offset}, strides ${strides.join('/')}`);
  }
  return t;
}

/**
 * Attention of packed queries `q [T, Hq, D]` over a ragged batch's KV (see
 * {@link RaggedKv} for the addressing and positions). Returns `out [T, Hq, D]`
 * in q's dtype and, with `returnLse`, `lse [T, Hq]` f32 (natural log; −Infinity
 * for a row whose every key is masked, whose output is 0). Hkv is
 * `kv.k.shape[-2]`. Enqueued on the device's stream; returns without waiting.
 */
export async function runRaggedAttentionCuda(q: Tensor, kv: RaggedKv, opts: RaggedAttentionOptions): Promise<{ out: Tensor; lse?: Tensor }> {
  if (!(q instanceof Tensor)) throw new InvalidArgumentError('q', 'a Tensor [T, Hq, D]', typeof q);
  q.assertAlive('q');
  if (!q.isCuda) throw new DeviceError('q', 'a CUDA tensor', q.device);
  if (q.dtype !== 'bf16' && q.dtype !== 'f16') throw new DTypeError('q', 'bf16 or f16 on the GPU', q.dtype);
  if (q.ndim !== 3 || q.strides[2] !== 1) throw new ShapeError('q', 'a [T, Hq, D] tensor with a contiguous last dimension', `[${q.shape.join(', ')}]`);
  const [T, Hq, D] = q.shape as [number, number, number];
  if (!DECODE_HEAD_DIMS.includes(D)) throw new ShapeError('q', `a head dimension of ${DECODE_HEAD_DIMS.join(' or ')}`, String(D));
  const numSeqs = intArg(kv.numSeqs, 'kv.numSeqs');
  const maxSeqLen = intArg(kv.maxSeqLen, 'kv.maxSeqLen');
  const maxQueryTokens = intArg(kv.maxQueryTokens, 'kv.maxQueryTokens');
  const pageSize = intArg(kv.pageSize, 'kv.pageSize', 1);
  if ((pageSize & (pageSize - 1)) !== 0 || pageSize > 2 ** 30) throw new InvalidArgumentError('kv.pageSize', 'a power of two up to 2^30', String(pageSize));
  const strides = [intArg(kv.pageStride, 'kv.pageStride'), intArg(kv.tokenStride, 'kv.tokenStride'), intArg(kv.headStride, 'kv.headStride')] as const;
  const k = kvPool(kv.k, 'kv.k', q, D, strides);
  const v = kvPool(kv.v, 'kv.v', q, D, strides);
  const Hkv = k.shape[k.ndim - 2]!;
  if (v.shape[v.ndim - 2] !== Hkv) throw new ShapeError('kv.v', `${Hkv} KV heads (as kv.k)`, String(v.shape[v.ndim - 2]));
  if (Hkv < 1 || Hq % Hkv !== 0) throw new ShapeError('q', `a multiple of the ${Hkv} KV heads of kv.k`, `${Hq} heads`);
  const pt = kv.pageTable;
  if (!(pt instanceof Tensor)) throw new InvalidArgumentError('kv.pageTable', 'an i32 Tensor [numSeqs, maxPagesPerSeq]', typeof pt);
  pt.assertAlive('kv.pageTable');
  if (pt.dtype !== 'i32') throw new DTypeError('kv.pageTable', 'dtype i32', pt.dtype);
  if (pt.device !== q.device) throw new DeviceError('kv.pageTable', `device ${q.device} (same as q)`, pt.device);
  if (pt.ndim !== 2 || pt.shape[0] !== numSeqs || (pt.shape[1]! > 1 && pt.strides[1] !== 1)
    || pt.shape[1]! * pageSize < Math.min(maxSeqLen, 2 ** 30)) {
    throw new ShapeError('kv.pageTable', `an i32 [${numSeqs}, pages] table with rows contiguous and pages × pageSize ≥ maxSeqLen (${maxSeqLen})`, `[${pt.shape.join(', ')}]`);
  }
  const seqLens = i32Vector(kv.seqLens, 'kv.seqLens', numSeqs, q);
  const queryStart = i32Vector(kv.queryStart, 'kv.queryStart', numSeqs + 1, q);
  checkHostCopies(kv, numSeqs, T, maxSeqLen, maxQueryTokens);
  if (typeof opts.scale !== 'number' || !Number.isFinite(opts.scale)) throw new InvalidArgumentError('opts.scale', 'a finite number', String(opts.scale));
  const out = Tensor.empty([T, Hq, D], q.dtype, { device: q.device });
  let lse: Tensor | undefined;
  const temps: Tensor[] = [];
  try {
    if (opts.returnLse) lse = Tensor.empty([T, Hq], 'f32', { device: q.device });
    if (T === 0) return lse ? { out, lse } : { out };
    const qa = q.offset % 8 === 0 && q.strides[0]! % 8 === 0 && q.strides[1]! % 8 === 0 && q.devicePtr('q') % 16n === 0n ? q : q.contiguous();
    if (qa !== q) temps.push(qa);
    const kvRange = kvRangeOf(opts.maskMod);
    const pending = launchDecode({
      // The split planner's work: the longest sequence's busiest tile under the mask's range.
      kvRange, maxKvWork: kvRange.length ? maxTileKvWork(kvRange, {
        n: maxSeqLen, m: maxQueryTokens, G: Hq / Hkv, BM: DECODE_TILE[D]!.BM, causal: opts.causal === true, endAligned: true,
      }) : undefined,
      q: qa, qStrides: [0, qa.strides[0]!, qa.strides[1]!], k, v, kStrides: strides, vStrides: strides,
      pageTable: pt, pageTableStride: pt.strides[0]!, log2PageSize: Math.log2(pageSize),
      seqLens, uniformKvLen: 0, queryStart, uniformQLen: 0,
      numSeqs, Hq, Hkv, D, maxQueryTokens, maxSeqLen,
      causal: opts.causal === true, endAligned: true, scale: opts.scale,
      scoreMod: opts.scoreMod, maskMod: opts.maskMod, params: opts.params ?? {}, hold: opts.hold, signal: opts.signal,
      out, oStrides: [0, Hq * D, D], lse, lseStrides: [0, Hq, 1], numSplits: opts.numSplits, enqueued: opts.enqueued,
    });
    if (pending) await pending;
  } catch (err) {
    out.dispose();
    lse?.dispose();
    throw err;
  } finally {
    for (const t of temps) t.dispose();
  }
  return lse ? { out, lse } : { out };
}

/** The host copies, when given, must agree with the grid sizes (rows past maxQueryTokens would go unwritten). */
function checkHostCopies(kv: RaggedKv, numSeqs: number, T: number, maxSeqLen: number, maxQueryTokens: number): void {
  const qs = kv.queryStartHost;
  if (qs) {
    if (qs.length !== numSeqs + 1 || qs[0] !== 0 || qs[numSeqs] !== T) {
      throw new ShapeError('kv.queryStartHost', `${numSeqs + 1} offsets from 0 to T = ${T}`, `${qs.length} offsets ending at ${qs[qs.length - 1]}`);
    }
    for (let s = 0; s < numSeqs; s++) {
      const m = qs[s + 1]! - qs[s]!;
      if (m < 0 || m > maxQueryTokens) {
        throw new ShapeError('kv.queryStartHost', `sequence ${s} with 0..maxQueryTokens (${maxQueryTokens}) query tokens`, String(m));
      }
    }
  }
  const sl = kv.seqLensHost;
  if (sl) {
    if (sl.length !== numSeqs) throw new ShapeError('kv.seqLensHost', `${numSeqs} lengths`, String(sl.length));
    for (let s = 0; s < numSeqs; s++) {
      if (sl[s]! < 0 || sl[s]! > maxSeqLen) throw new ShapeError('kv.seqLensHost', `sequence ${s} with 0..maxSeqLen (${maxSeqLen}) tokens`, String(sl[s]));
    }
  }
}
