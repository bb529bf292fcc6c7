/**
 * GPU attention dispatch: picks a forward kernel (precompiled dense variant,
 * or a variant JIT-compiled with the mods' generated CUDA), packs its one
 * parameter struct and enqueues it on the device's stream. Returns without
 * waiting for the GPU.
 * Internal: not exported from the package.
 * @module
 */
import { DTypeError, InternalError, InvalidArgumentError, ShapeError } from './errors.js';
import { itemSize, type DType } from './dtype.js';
import { native } from './native.js';
import { loadKernel, type KernelEntry } from './jit.js';
import { Tensor } from './tensor.js';
import type { QkvDims } from './validate.js';
import { packFlashParams, type KernelConfig, type Strides3 } from './flash-params.js';
import { ctaOrder, ctaOrderGroup } from './blockmask/cta-order.js';
import { segmentedSchedule, SEGMENT_TILE, type SegmentedSchedule } from './blockmask/segments.js';
import {
  generateCuda, packArgs, scoreMod as makeScoreMod, where, type CapturedTensorLike, type CudaModCode, type MaskMod, type ScoreMod,
} from './mods/index.js';
import type { BlockMask } from './blockmask.js';
import { throwIfAborted } from './abort.js';
import type { Hold } from './ownership.js';
import type { KernelOptions } from './flex.js';

/** Head dimensions the GPU kernels are instantiated for. */
export const GPU_HEAD_DIMS: readonly number[] = [32, 64, 96, 128, 256];

/** Arguments of one GPU SDPA launch. */
export interface CudaAttentionArgs {
  q: Tensor; k: Tensor; v: Tensor;
  dims: QkvDims;
  scale: number;
  isCausal: boolean;
  returnLse: boolean;
  /** Broadcast view [B, Hq, Sq, Skv]: bool (keep) or float (additive). */
  mask?: Tensor;
  /** Checked before each step that could launch (see {@link Launch.signal}). */
  signal?: AbortSignal;
}

/** Arguments of one GPU flex-attention launch. */
export interface CudaFlexArgs {
  q: Tensor; k: Tensor; v: Tensor;
  dims: QkvDims;
  scale: number;
  returnLse: boolean;
  params: Record<string, number>;
  scoreMod?: ScoreMod;
  blockMask?: BlockMask;
  kernelOptions?: KernelOptions;
  /** The call's claims: captured tensors and block-mask tensors are read through it. */
  hold: Hold;
  signal?: AbortSignal;
}

type Mode = 'kDense' | 'kCausal' | 'kBlockSparse';
type Family = 'sm90' | 'sm80';

/** Head dims of the Hopper (wgmma) kernel family. */
const SM90_HEAD_DIMS: readonly number[] = [64, 128];
/** Default Hopper tile per head dim (FwdConfigSm90For in flash_fwd_sm90.cuh): query rows x kv rows. */
const SM90_TILE: Record<number, { BM: number; BN: number }> = { 64: { BM: 64, BN: 128 }, 128: { BM: 64, BN: 64 } };

const deviceIsHopper = new Map<number, boolean>();
/** Compute capability 9.0 (H100/H200/GH200): the devices the sm_90a wgmma kernels run on. */
function isHopper(device: number): boolean {
  let h = deviceIsHopper.get(device);
  if (h === undefined) {
    const p = native().deviceProps(device);
    deviceIsHopper.set(device, (h = p.major === 9 && p.minor === 0));
  }
  return h;
}

/** Whether the Hopper family can run this problem (device, head dim; block sizes when block-sparse). */
function sm90Fits(device: number, D: number, blockSize?: readonly [number, number]): boolean {
  if (!isHopper(device) || !SM90_HEAD_DIMS.includes(D)) return false;
  if (!blockSize) return true;
  const t = SM90_TILE[D]!;
  return blockSize[0] % t.BM === 0 && blockSize[1] % t.BN === 0;
}

/**
 * The family picked when the caller names none: Hopper where it fits, unless
 * `FLEXATTN_KERNEL_FAMILY=sm80` turns it off process-wide (the mma.sync kernels
 * everywhere: comparisons, or a workaround). An explicit family still wins.
 */
function autoFamily(device: number, D: number, blockSize?: readonly [number, number]): Family {
  return process.env.FLEXATTN_KERNEL_FAMILY !== 'sm80' && sm90Fits(device, D, blockSize) ? 'sm90' : 'sm80';
}

/** Tile shape requested through kernelOptions or chosen for a block mask. */
interface Shape { BM: number; BN: number; warps: number; stages: number }

function instantiate(name: string, D: number, dtype: string, mode: Mode, family: Family, shape?: Shape): string {
  if (family === 'sm90') return `#include "flash_fwd_sm90.cuh"\nFLEXATTN_FWD_SM90_KERNEL(${name}, ${D}, ${dtype}, ${mode})\n`;
  if (!shape) return `#include "flash_fwd.cuh"\nFLEXATTN_FWD_KERNEL(${name}, ${D}, ${dtype}, ${mode})\n`;
  const mt = shape.BM / (16 * shape.warps);
  const qInRegs = mt === 1 || D <= 32;
  return `#include "flash_fwd.cuh"\nFLEXATTN_FWD_KERNEL_SHAPE(${name}, ${D}, ${dtype}, ${mode}, ${shape.BM}, ${shape.BN}, ${shape.warps}, ${shape.stages}, ${qInRegs})\n`;
}

// ----------------------------------------------------------------- checks

function checkGpuInputs(q: Tensor, k: Tensor, v: Tensor, d: QkvDims): void {
  if (q.dtype !== 'bf16' && q.dtype !== 'f16') {
    throw new DTypeError('q', "bf16 or f16 on the GPU (convert with .to('bf16'), or pass backend: 'cpu' for f32)", q.dtype);
  }
  if (!GPU_HEAD_DIMS.includes(d.D)) {
    throw new ShapeError('q', `a head dimension of ${GPU_HEAD_DIMS.join(', ')} on the GPU (or backend: 'cpu')`, String(d.D));
  }
  if (d.Dv !== d.D) throw new ShapeError('v', `head dimension ${d.D} (same as q) on the GPU`, String(d.Dv));
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    if (t.strides[3] !== 1) throw new ShapeError(name, 'a contiguous last dimension (stride 1); call contiguous()', `stride ${t.strides[3]}`);
  }
}

/** The kernel loads 16-byte vectors: base and B/H/S strides must be multiples of 8 elements. */
function aligned(t: Tensor): Tensor {
  const ok = t.offset % 8 === 0 && t.strides.slice(0, 3).every((s, i) => s % 8 === 0 || t.shape[i] === 1)
    && t.buffer().ptr % 16n === 0n;
  return ok ? t : t.contiguous();
}

function ptr(t: Tensor): bigint {
  return t.buffer().ptr + BigInt(t.offset * itemSize(t.dtype));
}

function strides3(t: Tensor): Strides3 {
  return [t.strides[0]!, t.strides[1]!, t.strides[2]!];
}

// ------------------------------------------------------------- mods & args

// Traced mods are immutable, so their generated CUDA (string building + a
// SHA-256 of the source) is made once per (scoreMod, maskMod) pair, not per call.
const NO_MOD = {};
const codeCache = new WeakMap<object, WeakMap<object, CudaModCode>>();

function modCode(score: ScoreMod | undefined, mask: MaskMod | undefined): CudaModCode {
  let inner = codeCache.get(score ?? NO_MOD);
  if (!inner) codeCache.set(score ?? NO_MOD, (inner = new WeakMap()));
  let code = inner.get(mask ?? NO_MOD);
  if (!code) inner.set(mask ?? NO_MOD, (code = generateCuda(score, mask)));
  return code;
}

/**
 * Captured tensors on the launch device: `tensors` for packing, `temps` to free after launch.
 * A tensor the call holds is read through its handle (the user may have disposed theirs).
 */
async function capturedOnDevice(code: CudaModCode, device: string, hold: Hold | undefined): Promise<{ tensors: Tensor[]; temps: Tensor[] }> {
  const tensors: Tensor[] = [];
  const temps: Tensor[] = [];
  for (const [i, c] of code.tensors.entries()) {
    const t = hold ? hold.get(c as CapturedTensorLike) : c as CapturedTensorLike;
    if (!(t instanceof Tensor)) throw new InvalidArgumentError(`captured tensor #${i}`, 'a flexattn Tensor', typeof t);
    t.assertAlive(`captured tensor #${i}`);
    if (t.device === device) tensors.push(t);
    else {
      const copy = await t.toDevice(device as `cuda:${number}`);
      tensors.push(copy);
      temps.push(copy);
    }
  }
  return { tensors, temps };
}

function packMod(code: CudaModCode, tensors: Tensor[], params: Record<string, number>): Uint8Array {
  return packArgs(code.layout, {
    tensorPtrs: tensors.map(ptr),
    tensorStrides: tensors.map((t) => [...t.strides]),
    tensorShapes: tensors.map((t) => [...t.shape]),
    params,
  });
}

/** A dense SDPA mask as a score mod: additive masks add, bool masks send masked scores to -inf. */
function maskAsScoreMod(mask: Tensor): ScoreMod {
  if (mask.dtype === 'bool') {
    return makeScoreMod(({ score, b, h, q, kv }) => where(mask.at(b, h, q, kv), score, -Infinity));
  }
  return makeScoreMod(({ score, b, h, q, kv }) => score.add(mask.at(b, h, q, kv)));
}

// ----------------------------------------------------------------- launch

interface Launch {
  q: Tensor; k: Tensor; v: Tensor; d: QkvDims; scale: number; returnLse: boolean;
  mode: Mode;
  /** Kernel family: `sm90` (wgmma, flash_fwd_sm90.cuh) or `sm80` (mma.sync, flash_fwd.cuh). */
  family: Family;
  scoreMod?: ScoreMod; maskMod?: MaskMod | null;
  blockMask?: BlockMask;
  /** A segmented grid: `blockMask` is its schedule (lib/blockmask/segments.ts). */
  segments?: SegmentedSchedule;
  params: Record<string, number>;
  shape?: Shape;
  /** The call's claims (flex): captured tensors are read through it. */
  hold?: Hold;
  /** The block mask's four kv arrays as the call holds them (kvNumBlocks, kvIndices, fullKvNumBlocks, fullKvIndices). */
  blockArrays?: readonly Tensor[];
  /**
   * The call's abort signal, checked after each await: once it has fired
   * nothing is launched and the outputs go back (the caller has already
   * rejected with an AbortError).
   */
  signal?: AbortSignal;
}

/** Allocates the outputs and launches; outputs go back if anything fails before the launch (nothing half-made is handed out). */
async function launch(a: Launch): Promise<{ out: Tensor; lse?: Tensor }> {
  const { d } = a;
  checkGpuInputs(a.q, a.k, a.v, d);
  const out = Tensor.empty([d.B, d.Hq, d.Sq, d.D], a.q.dtype, { device: a.q.device });
  let lse: Tensor | undefined;
  try {
    if (a.returnLse) lse = Tensor.empty([d.B, d.Hq, d.Sq], 'f32', { device: a.q.device });
    await launchInto(a, out, lse);
  } catch (err) {
    // Stream-ordered allocator: anything already enqueued that writes them runs before any reuse.
    out.dispose();
    lse?.dispose();
    throw err;
  }
  return lse ? { out, lse } : { out };
}

async function launchInto(a: Launch, out: Tensor, lse: Tensor | undefined): Promise<void> {
  const { d } = a;
  const device = a.q.deviceIndex;
  if (d.B * d.Hq * d.Sq === 0) return;
  if (d.Skv === 0) {
    // No keys: every row is fully masked (output 0, LSE -inf), no kernel needed.
    native().memset(out.buffer(), 0, out.numel * itemSize(out.dtype), 0);
    if (lse) native().copyHtoD(lse.buffer(), 0, new Float32Array(lse.numel).fill(-Infinity));
    return;
  }
  const dtype = a.q.dtype;
  const hasMods = !!(a.scoreMod || a.maskMod);
  let entry: KernelEntry;
  let code: CudaModCode | undefined;
  const fam = a.family === 'sm90' ? 'sm90_' : '';
  if (!hasMods && a.mode !== 'kBlockSparse' && !a.shape) {
    const name = `flexattn_fwd_${fam}d${d.D}_${dtype}${a.mode === 'kCausal' ? '_causal' : ''}`;
    entry = await loadKernel(device, { kernel: name, module: name, source: instantiate(name, d.D, dtype, a.mode, a.family) });
  } else {
    code = modCode(a.scoreMod, a.maskMod ?? undefined);
    const shapeTag = a.shape ? `_${a.shape.BM}x${a.shape.BN}w${a.shape.warps}s${a.shape.stages}` : '';
    // A segmented launch compiles its own variant: the kernel reads p.tile_starts, and its mask
    // (SegmentedSchedule.maskMod) is only exact on that grid.
    const segTag = a.segments ? '_seg' : '';
    const name = `flexattn_flex_${fam}${code.hash.slice(0, 16)}_d${d.D}_${dtype}_${a.mode.slice(1).toLowerCase()}${segTag}${shapeTag}`;
    entry = await loadKernel(device, {
      kernel: name,
      source: `${code.source}\n${a.segments ? '#define FLEX_SEGMENTED_GRID 1\n' : ''}${instantiate(name, d.D, dtype, a.mode, a.family, a.shape)}`,
    });
  }
  throwIfAborted(a.signal, 'attention');
  const { cfg } = entry;
  const seg = a.segments;
  if (seg && (a.family !== 'sm90' || a.mode !== 'kBlockSparse' || cfg.blockM !== SEGMENT_TILE || cfg.blockN !== SEGMENT_TILE)) {
    throw new InternalError(`a segmented grid needs the sm90 block-sparse kernel with a ${SEGMENT_TILE}x${SEGMENT_TILE} tile, not ${a.family} ${a.mode} ${cfg.blockM}x${cfg.blockN}`);
  }
  const grid: [number, number, number] = [seg ? seg.nM : Math.ceil(d.Sq / cfg.blockM), d.Hq, d.B];
  // CUDA caps grid y/z at 65535; the kernels index CTAs with 32-bit math (work_tile).
  if (d.Hq > 65535 || d.B > 65535 || grid[0] * grid[1] * grid[2] >= 2 ** 31) {
    throw new ShapeError('q', 'at most 65535 heads, 65535 batches and fewer than 2^31 query tiles in all', `[${d.B}, ${d.Hq}, ${d.Sq}, ${d.D}]`);
  }
  const temps: Tensor[] = [];
  try {
    let mod: Uint8Array = new Uint8Array(0);
    if (code) {
      const cap = await capturedOnDevice(code, a.q.device, a.hold);
      temps.push(...cap.temps);
      mod = packMod(code, cap.tensors, a.params);
    }
    throwIfAborted(a.signal, 'attention');
    // From here to the enqueue nothing awaits.
    const q = aligned(a.q), k = aligned(a.k), v = aligned(a.v);
    temps.push(...[q, k, v].filter((t, i) => t !== [a.q, a.k, a.v][i]));
    launchKernel(a, entry, grid, mod, { q, k, v, out, lse });
  } finally {
    // Stream-ordered allocator: freeing temporaries right after the enqueue is safe.
    for (const t of temps) t.dispose();
  }
}

/** Packs the parameter struct and enqueues the kernel (synchronous: every pointer is live now). */
function launchKernel(a: Launch, entry: KernelEntry, grid: [number, number, number], mod: Uint8Array,
  t: { q: Tensor; k: Tensor; v: Tensor; out: Tensor; lse: Tensor | undefined }): void {
  const { d } = a;
  const { cfg } = entry;
  const { q, k, v, out, lse } = t;
  const seg = a.segments;
  const dtype = a.q.dtype;
  const bm = a.blockMask;
  let bmArrays: readonly Tensor[] = [];
  let bmDims = { QB: 0, KVB: 0, B: 1, H: 1 };
  const segT = seg?.tensors();
  if (bm) {
    const held = a.blockArrays ?? [bm.kvNumBlocks, bm.kvIndices, bm.fullKvNumBlocks, bm.fullKvIndices];
    bmArrays = segT ? [held[0]!, segT.kvIndices, held[2]!, segT.fullKvIndices] : held;
    bmDims = { QB: bm.numQBlocks, KVB: bm.numKvBlocks, B: bm.B, H: bm.H };
  }
  const params = packFlashParams(cfg, {
    q: ptr(q), k: ptr(k), v: ptr(v), o: ptr(out), lse: lse ? ptr(lse) : 0n,
    kvNumBlocks: bm ? ptr(bmArrays[0]!) : 0n, kvIndices: bm ? ptr(bmArrays[1]!) : 0n,
    fullKvNumBlocks: bm ? ptr(bmArrays[2]!) : 0n, fullKvIndices: bm ? ptr(bmArrays[3]!) : 0n,
    qStrides: strides3(q), kStrides: strides3(k), vStrides: strides3(v), oStrides: strides3(out),
    B: d.B, Hq: d.Hq, Hkv: d.Hkv, Sq: d.Sq, Skv: d.Skv, scale: a.scale,
    bmQBlock: bm ? bm.blockSize[0] : cfg.blockM, bmKvBlock: bm ? bm.blockSize[1] : cfg.blockN,
    bmNumStrideB: bmDims.B === 1 ? 0 : bmDims.H * bmDims.QB, bmNumStrideH: bmDims.H === 1 ? 0 : bmDims.QB,
    bmIdxStrideB: bmDims.B === 1 ? 0 : bmDims.H * bmDims.QB * bmDims.KVB,
    bmIdxStrideH: bmDims.H === 1 ? 0 : bmDims.QB * bmDims.KVB, bmIdxStrideQb: bmDims.KVB,
    ctaOrder: bm && a.family === 'sm90' && process.env.FLEXATTN_CTA_ORDER !== '0' ? ptr(ctaOrderTensor(bm, d, dtype, cfg, grid[0])) : 0n,
    ...(seg && segT ? { tileStarts: ptr(segT.starts), tileStartsStrideB: seg.strideB } : {}),
    mod,
  });
  entry.handle.launch(grid, [cfg.threads, 1, 1], cfg.smemBytes, params);
}

/**
 * The Hopper kernels' CTA order for a block-sparse launch (longest query blocks
 * first within groups of heads; lib/blockmask/cta-order.ts), kept on the mask.
 * FLEXATTN_CTA_ORDER=0 launches with the kernel's built-in order instead.
 */
function ctaOrderTensor(bm: BlockMask, d: QkvDims, dtype: DType, cfg: KernelConfig, nM: number): Tensor {
  const kvHeadBytes = (2 * d.Skv * d.D * itemSize(dtype)) / (d.Hq / d.Hkv);
  const G = ctaOrderGroup(kvHeadBytes, d.B * d.Hq);
  const key = `cta:${d.B}:${d.Hq}:${nM}:${cfg.blockM}:${cfg.blockN}:${G}`;
  return bm.derivedTensor(key, () => {
    const order = ctaOrder(
      { B: bm.B, H: bm.H, QB: bm.numQBlocks, blockSize: bm.blockSize, kvNumBlocks: bm.host.kvNumBlocks, fullKvNumBlocks: bm.host.fullKvNumBlocks },
      { B: d.B, Hq: d.Hq, blockM: cfg.blockM, blockN: cfg.blockN, nM, kvHeadBytes });
    return Tensor.fromHost(new Int32Array(order.buffer, order.byteOffset, order.length), [order.length], 'i32', { device: bm.device });
  });
}

// ------------------------------------------------------------ entry points

/** Runs SDPA on the GPU (dense or causal kernel; a dense mask streams through a generated score mod). */
export async function runCudaAttention(args: CudaAttentionArgs): Promise<{ out: Tensor; lse?: Tensor }> {
  const { q, k, v, dims, scale, isCausal, returnLse, mask } = args;
  return launch({
    q, k, v, d: dims, scale, returnLse, params: {},
    ...(args.signal ? { signal: args.signal } : {}),
    mode: isCausal ? 'kCausal' : 'kDense',
    family: autoFamily(q.deviceIndex, dims.D),
    ...(mask ? { scoreMod: maskAsScoreMod(mask) } : {}),
  });
}

const blockMaskCopies = new WeakMap<BlockMask, Map<string, BlockMask>>();

/** `bm` with its arrays on `device` (copied once per mask and device). */
function onDevice(bm: BlockMask, device: string): BlockMask {
  if (bm.device === device) return bm;
  let m = blockMaskCopies.get(bm);
  if (!m) blockMaskCopies.set(bm, (m = new Map()));
  let c = m.get(device);
  if (!c) m.set(device, (c = bm.to(device as `cuda:${number}`)));
  return c;
}

/** Default tile shapes per head dim (FwdConfigFor in flash_fwd.cuh). */
const DEFAULT_TILE: Record<number, { BM: number; BN: number }> = {
  32: { BM: 128, BN: 64 }, 64: { BM: 128, BN: 128 }, 96: { BM: 128, BN: 64 }, 128: { BM: 128, BN: 64 }, 256: { BM: 64, BN: 64 },
};
/** Smaller shape: MT=1, Q in registers; no spills for mods that keep captured values live. */
const SMALL_SHAPE: Shape = { BM: 64, BN: 64, warps: 4, stages: 2 };

function checkKernelOptions(o: KernelOptions): Shape {
  const pick = (key: (typeof TILE_KEYS)[number], allowed: number[], dflt: number): number => {
    const x = o[key];
    if (x === undefined) return dflt;
    if (!allowed.includes(x)) throw new InvalidArgumentError(`options.kernelOptions.${key}`, `one of ${allowed.join(', ')}`, String(x));
    return x;
  };
  const s: Shape = {
    BM: pick('BLOCK_M', [64, 128], 128), BN: pick('BLOCK_N', [32, 64, 128], 64),
    warps: pick('numWarps', [4, 8], 4), stages: pick('numStages', [2, 3], 2),
  };
  const mt = s.BM / (16 * s.warps);
  if (mt !== 1 && mt !== 2) {
    throw new InvalidArgumentError('options.kernelOptions', 'BLOCK_M / (16 · numWarps) of 1 or 2', `BLOCK_M=${s.BM}, numWarps=${s.warps}`);
  }
  return s;
}

const TILE_KEYS = ['BLOCK_M', 'BLOCK_N', 'numWarps', 'numStages'] as const;

/** The kernel family for a flex call (see KernelOptions in flex.ts). */
function pickFamily(ko: KernelOptions, device: number, D: number, blockSize?: readonly [number, number]): Family {
  const f = ko.family ?? 'auto';
  if (f !== 'auto' && f !== 'sm90' && f !== 'sm80') {
    throw new InvalidArgumentError('options.kernelOptions.family', "'auto', 'sm90' or 'sm80'", String(f));
  }
  const tiles = TILE_KEYS.filter((k) => ko[k] !== undefined);
  if (f === 'sm80') return 'sm80';
  if (f === 'auto') return tiles.length === 0 ? autoFamily(device, D, blockSize) : 'sm80';
  if (tiles.length > 0) {
    throw new InvalidArgumentError('options.kernelOptions',
      "no tile fields with family 'sm90' (its tile is fixed per head dim; use family 'sm80' to set one)", tiles.join(', '));
  }
  if (!isHopper(device)) {
    const p = native().deviceProps(device);
    throw new InvalidArgumentError('options.kernelOptions.family',
      "'sm90' only on a compute capability 9.0 GPU (H100, H200); use 'auto' or 'sm80' here", `${p.name} (${p.major}.${p.minor})`);
  }
  if (!SM90_HEAD_DIMS.includes(D)) {
    throw new ShapeError('q', `a head dimension of ${SM90_HEAD_DIMS.join(' or ')} for kernelOptions.family 'sm90'`, String(D));
  }
  if (blockSize && !sm90Fits(device, D, blockSize)) {
    const t = SM90_TILE[D]!;
    throw new ShapeError('options.blockMask',
      `block sizes that are multiples of the 'sm90' tile ${t.BM}×${t.BN} at head dim ${D}`, `${blockSize[0]}×${blockSize[1]}`);
  }
  return 'sm90';
}

/**
 * Runs flex attention on the GPU. Call it before the op's first await: its
 * synchronous part claims the block mask's device arrays (and those of its
 * 64x64 schedule) in `args.hold`, so a mask disposed right after the call
 * still has them at launch.
 */
export async function runCudaFlexAttention(args: CudaFlexArgs): Promise<{ out: Tensor; lse?: Tensor }> {
  const { q, dims, hold } = args;
  const bm = args.blockMask ? onDevice(args.blockMask, q.device) : undefined;
  // Tells, at the end, whether the mask was disposed while this call ran (see the finally below).
  const probe = bm?.kvNumBlocks;
  const claimed = new Map<BlockMask, Tensor[]>();
  const claim = (m: BlockMask): Tensor[] => {
    let held = claimed.get(m);
    if (!held) {
      held = [m.kvNumBlocks, m.kvIndices, m.fullKvNumBlocks, m.fullKvIndices].map((t) => hold.tensor(t, 'options.blockMask'));
      claimed.set(m, held);
    }
    return held;
  };
  if (bm) claim(bm);
  const ko = args.kernelOptions ?? {};
  const family = pickFamily(ko, q.deviceIndex, dims.D, bm?.blockSize);
  let shape = family === 'sm80' && TILE_KEYS.some((k) => ko[k] !== undefined) ? checkKernelOptions(ko) : undefined;
  if (bm && family === 'sm80') {
    const [bq, bkv] = bm.blockSize;
    const tile = shape ?? DEFAULT_TILE[dims.D] ?? { BM: 128, BN: 64 };
    // A mask mod reading captured data per element (e.g. document ids) keeps many
    // values live: at D=128 the default shape spills; the MT=1 shape does not and
    // is as fast there (bench/results/kernel-notes.md).
    const maskReadsData = (bm.maskMod?.tensors.length ?? 0) > 0;
    if (!shape && (bq % tile.BM !== 0 || bkv % tile.BN !== 0 || (maskReadsData && dims.D === 128))) {
      if (bq % SMALL_SHAPE.BM === 0 && bkv % SMALL_SHAPE.BN === 0) shape = SMALL_SHAPE;
    }
    const t = shape ?? tile;
    if (bq % t.BM !== 0 || bkv % t.BN !== 0) {
      throw new ShapeError('options.blockMask',
        `block sizes that are multiples of the GPU tile ${t.BM}×${t.BN} (e.g. createBlockMask(..., { blockSize: 128 }))`,
        `${bq}×${bkv}`);
    }
  }
  // The Hopper kernels walk 64-row query blocks: a mask built by createBlockMask
  // on the GPU carries the same positions at that granularity (kernelSchedule),
  // which skips the 64-wide kv tiles of a listed block that these rows never keep.
  const t90 = SM90_TILE[dims.D];
  const fine = bm && family === 'sm90' && t90 ? bm.kernelSchedule(t90.BM, t90.BN, args.params) : undefined;
  if (fine) claim(fine);
  // Document masks: tiles that restart at every document start (lib/blockmask/segments.ts),
  // when the mask's ids give one and it is cheaper; FLEXATTN_SEGMENTS=0 keeps the uniform grid.
  // Built from the 64x64 schedule, or from the mask itself when it has that block size and no
  // params (the segmented classes are made once per mask, for the params they were made with).
  const seg64 = SEGMENT_TILE;
  const uniform64 = fine ?? (bm && family === 'sm90' && t90 && bm.blockSize[0] === seg64 && bm.blockSize[1] === seg64
    && (bm.maskMod?.params.length ?? 0) === 0 ? bm : undefined);
  const segments = bm && uniform64 && t90!.BM === seg64 && t90!.BN === seg64 && process.env.FLEXATTN_SEGMENTS !== '0'
    ? (await segmentedSchedule(bm, uniform64, args.params, q.deviceIndex, () => hold.maskMod(bm.maskMod!))) ?? undefined
    : undefined;
  throwIfAborted(args.signal, 'flexAttention');
  const walk = segments?.mask ?? fine ?? bm;
  try {
    return await launch({
      q, k: args.k, v: args.v, d: dims, scale: args.scale, returnLse: args.returnLse, params: args.params,
      mode: bm ? 'kBlockSparse' : 'kDense', family, hold,
      ...(args.scoreMod ? { scoreMod: args.scoreMod } : {}),
      ...(walk ? { blockMask: walk, maskMod: segments ? segments.maskMod : walk.maskMod, blockArrays: claim(walk) } : {}),
      ...(segments ? { segments } : {}),
      ...(shape ? { shape } : {}),
      ...(args.signal ? { signal: args.signal } : {}),
    });
  } finally {
    // A mask disposed while the call ran had to re-create the tensors the launch
    // derives from it (segment lists, CTA order): dispose it again, so they go
    // too once the launch is enqueued (stream-ordered, like any dispose).
    if (bm && probe?.disposed) bm.dispose();
  }
}
