/**
 * Launch planning: from the problem's dims, the block mask's facts, the
 * caller's kernel options, the device's capabilities and the launch switches
 * to the kernel family, tile shape, variant and schedules a GPU launch uses.
 * Pure: no native calls, no tensors; everything it needs comes in as
 * arguments, so it is tested without a GPU (test/cuda-plan.test.ts). Invalid
 * kernel options and block sizes a kernel cannot walk are typed errors here,
 * before anything is allocated.
 * Internal: not exported from the package (KernelOptions is, through flex.ts).
 * @module
 */
import { InvalidArgumentError, ShapeError } from '../errors.js';
import type { BlockMask } from '../blockmask/mask.js';
import type { QkvDims } from '../validate.js';
import type { DeviceCaps } from './device-caps.js';
import { SM80_TILE, SCHEDULE_BLOCK, SEGMENT_TILE, SM90_TILE, SM80_SMALL_TILE, type Shape, type Tile } from './tiles.js';

/**
 * Tuning knobs of the generated kernel, like PyTorch's `kernel_options`.
 * Unset fields take per-GPU, per-head-dim defaults.
 *
 * Two kernel families exist: `'sm90'` (Hopper, compute capability 9.0: wgmma
 * tensor-core instructions, head dims 64 and 128, tile fixed per head dim) and
 * `'sm80'` (any GPU from compute capability 8.0: mma.sync, every head dim, the
 * tile set by the fields below). With `family: 'auto'` (the default) the Hopper
 * family is used where it can run and no tile field is given; giving a tile
 * field selects the `'sm80'` kernel that shape describes.
 */
export interface KernelOptions {
  /** Kernel family: `'auto'` (default), `'sm90'` (Hopper wgmma) or `'sm80'` (mma.sync). */
  family?: 'auto' | 'sm90' | 'sm80';
  /** Query rows per thread block (`'sm80'` family): 64 or 128. */
  BLOCK_M?: number;
  /** Key rows per inner-loop tile (`'sm80'` family): 32, 64 or 128. */
  BLOCK_N?: number;
  /** Warps per thread block (`'sm80'` family): 4 or 8, with BLOCK_M / (16 · numWarps) of 1 or 2. */
  numWarps?: number;
  /** Pipeline stages for K/V loads (`'sm80'` family): 2 or 3. */
  numStages?: number;
}

/**
 * Kernel family: `sm90` (wgmma, flash_fwd_sm90.cuh), `sm80` (mma.sync, flash_fwd.cuh) or `sm90ws`
 * (warp-specialised wgmma + TMA, sm90_ws_entry.cuh / sm90_ws_flex.cuh: SDPA and flex, opt-in, not yet run on a GPU).
 */
export type Family = 'sm90' | 'sm80' | 'sm90ws';
/** What the kernel's kv loop walks: everything, the causal range, or a block mask's lists. */
export type Mode = 'kDense' | 'kCausal' | 'kBlockSparse';

/** Head dimensions the GPU kernels are instantiated for. */
export const GPU_HEAD_DIMS: readonly number[] = Object.keys(SM80_TILE).map(Number);
/** Head dims of the Hopper (wgmma) kernel family. */
export const SM90_HEAD_DIMS: readonly number[] = Object.keys(SM90_TILE).map(Number);
/** Largest fine schedule kept (summed over batch and heads): 4M entries, 16 MB per index array. */
export const MAX_SCHEDULE_ENTRIES = 1 << 22;

/**
 * Shortest query and key lengths the sm90ws family takes: its TMA boxes are
 * 128 rows, and whether a box may exceed the tensor's extent is not settled
 * (bench/results/kernel-notes.md, run 16), so shorter sequences keep the sm90 kernel.
 */
export const SM90WS_MIN_ROWS = 128;

/** Launch switches (lib/cuda/switches.ts reads them from the environment). */
export interface PlanSwitches {
  /** `FLEXATTN_KERNEL_FAMILY=sm80`: the mma.sync kernels wherever the caller names no family. */
  readonly sm80Only: boolean;
  /**
   * `FLEXATTN_KERNEL_FAMILY=sm90ws`: dense and causal SDPA without a mask, and flex calls the kernel
   * takes ({@link sm90wsFlexRefusal}), run the warp-specialised Hopper kernel where it fits
   * ({@link sm90wsFits}); the launch then also needs FLEXATTN_UNVERIFIED_GPU_PATHS=1.
   */
  readonly sm90ws: boolean;
  /** Hopper launches walk the 64×64 schedule derived from a mask (`FLEXATTN_FINE_SCHEDULE`). */
  readonly fineSchedule: boolean;
  /** Document masks may run on a segmented grid (`FLEXATTN_SEGMENTS`). */
  readonly segments: boolean;
  /** Block-sparse Hopper launches start the costliest query blocks first (`FLEXATTN_CTA_ORDER`). */
  readonly ctaOrder: boolean;
}

/** Every switch at its default. */
export const DEFAULT_SWITCHES: PlanSwitches = Object.freeze({ sm80Only: false, sm90ws: false, fineSchedule: true, segments: true, ctaOrder: true });

/** What the planner needs to know of a block mask. */
export interface MaskFacts {
  readonly B: number;
  readonly H: number;
  readonly qLen: number;
  readonly kvLen: number;
  readonly blockSize: readonly [number, number];
  /** The mask mod reads captured tensors (e.g. document ids) per element. */
  readonly readsData: boolean;
  /** Number of runtime params of the mask mod. */
  readonly modParams: number;
  /**
   * The mask's block classes are its mask mod's at the call's params (made by
   * createBlockMask with these param values): only then may a launch derive
   * schedules from the mod instead of the lists.
   */
  readonly classesExact: boolean;
}

/** The facts of `bm` for a call with mask params `params`. */
export function maskFacts(bm: BlockMask, params: Readonly<Record<string, number>>): MaskFacts {
  const made = bm.method === 'analytic' || bm.method === 'cpu' || bm.method === 'gpu';
  const mod = bm.maskMod;
  return {
    B: bm.B, H: bm.H, qLen: bm.qLen, kvLen: bm.kvLen, blockSize: bm.blockSize,
    readsData: (mod?.tensors.length ?? 0) > 0,
    modParams: mod?.params.length ?? 0,
    classesExact: made && mod !== null && mod.params.every((p) => params[p.name] === bm.params?.[p.name]),
  };
}

/** A kernel launch: family, walk mode and (sm80 only) a non-default shape. */
export interface LaunchPlan {
  readonly family: Family;
  readonly mode: Mode;
  readonly shape?: Shape;
}

/** A flex launch: the kernel, and which schedules derived from the mask it walks. */
export interface FlexPlan extends LaunchPlan {
  /** Walk the mask's 64×64 schedule (derived from its mask mod on first use) instead of its own lists. */
  readonly fineSchedule: boolean;
  /** Try a segmented grid, built from the 64×64 schedule (`'fine'`) or from the mask itself (`'mask'`, 64×64 blocks). */
  readonly segmentsFrom?: 'fine' | 'mask';
  /** Launch in the longest-first CTA order. */
  readonly ctaOrder: boolean;
}

/** Compute capability 9.0 (H100/H200/GH200): the devices the sm_90a wgmma kernels run on. */
export function isHopper(caps: DeviceCaps): boolean {
  return caps.major === 9 && caps.minor === 0;
}

/** Whether the Hopper family can run this problem (device, head dim; block sizes when block-sparse). */
function sm90Fits(caps: DeviceCaps, D: number, blockSize?: readonly [number, number]): boolean {
  if (!isHopper(caps) || !SM90_HEAD_DIMS.includes(D)) return false;
  if (!blockSize) return true;
  const t = SM90_TILE[D]!;
  return blockSize[0] % t.BM === 0 && blockSize[1] % t.BN === 0;
}

/**
 * The family picked when the caller names none: Hopper where it fits, unless
 * `FLEXATTN_KERNEL_FAMILY=sm80` turns it off process-wide (the mma.sync kernels
 * everywhere: comparisons, or a workaround). An explicit family still wins.
 */
function autoFamily(caps: DeviceCaps, D: number, sw: PlanSwitches, blockSize?: readonly [number, number]): Family {
  return !sw.sm80Only && sm90Fits(caps, D, blockSize) ? 'sm90' : 'sm80';
}

const TILE_KEYS = ['BLOCK_M', 'BLOCK_N', 'numWarps', 'numStages'] as const;

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

/** The kernel family for a flex call (see {@link KernelOptions}). */
function pickFamily(ko: KernelOptions, caps: DeviceCaps, D: number, sw: PlanSwitches, blockSize?: readonly [number, number]): Family {
  const f = ko.family ?? 'auto';
  if (f !== 'auto' && f !== 'sm90' && f !== 'sm80') {
    throw new InvalidArgumentError('options.kernelOptions.family', "'auto', 'sm90' or 'sm80'", String(f));
  }
  const tiles = TILE_KEYS.filter((k) => ko[k] !== undefined);
  if (f === 'sm80') return 'sm80';
  if (f === 'auto') return tiles.length === 0 ? autoFamily(caps, D, sw, blockSize) : 'sm80';
  if (tiles.length > 0) {
    throw new InvalidArgumentError('options.kernelOptions',
      "no tile fields with family 'sm90' (its tile is fixed per head dim; use family 'sm80' to set one)", tiles.join(', '));
  }
  if (!isHopper(caps)) {
    throw new InvalidArgumentError('options.kernelOptions.family',
      "'sm90' only on a compute capability 9.0 GPU (H100, H200); use 'auto' or 'sm80' here", `${caps.name} (${caps.major}.${caps.minor})`);
  }
  if (!SM90_HEAD_DIMS.includes(D)) {
    throw new ShapeError('q', `a head dimension of ${SM90_HEAD_DIMS.join(' or ')} for kernelOptions.family 'sm90'`, String(D));
  }
  if (blockSize && !sm90Fits(caps, D, blockSize)) {
    const t = SM90_TILE[D]!;
    throw new ShapeError('options.blockMask',
      `block sizes that are multiples of the 'sm90' tile ${t.BM}×${t.BN} at head dim ${D}`, `${blockSize[0]}×${blockSize[1]}`);
  }
  return 'sm90';
}

/** The sm80 shape for a block mask: the caller's, the default tile, or the small shape where that fits better. */
function sm80MaskShape(shape: Shape | undefined, mask: MaskFacts, D: number): Shape | undefined {
  const [bq, bkv] = mask.blockSize;
  const tile: Tile = shape ?? SM80_TILE[D] ?? { BM: 128, BN: 64 };
  // A mask mod reading captured data per element (e.g. document ids) keeps many
  // values live: at D=128 the default shape spills; the one-MMA-tile-per-warp
  // shape does not and is as fast there (bench/results/kernel-notes.md).
  if (!shape && (bq % tile.BM !== 0 || bkv % tile.BN !== 0 || (mask.readsData && D === 128))) {
    if (bq % SM80_SMALL_TILE.BM === 0 && bkv % SM80_SMALL_TILE.BN === 0) shape = SM80_SMALL_TILE;
  }
  const t = shape ?? tile;
  if (bq % t.BM !== 0 || bkv % t.BN !== 0) {
    throw new ShapeError('options.blockMask',
      `block sizes that are multiples of the GPU tile ${t.BM}×${t.BN} (e.g. createBlockMask(..., { blockSize: 128 }))`,
      `${bq}×${bkv}`);
  }
  return shape;
}

/**
 * Whether an sm90 launch over `mask` walks its 64×64 schedule: the kernel's
 * tile is 64×64 (head dim 128), the mask's blocks are whole multiples of it
 * and larger, its classes are its mod's at these params (the schedule is
 * derived from the mod, so it lists the same positions), and the schedule
 * stays within {@link MAX_SCHEDULE_ENTRIES}.
 */
function walksFineSchedule(mask: MaskFacts, tile: Tile | undefined, sw: PlanSwitches): boolean {
  const F = SCHEDULE_BLOCK;
  if (!sw.fineSchedule || !tile || tile.BM !== F || tile.BN !== F || !mask.classesExact) return false;
  const [bq, bkv] = mask.blockSize;
  if (bq % F !== 0 || bkv % F !== 0 || (bq === F && bkv === F)) return false;
  return mask.B * mask.H * Math.ceil(mask.qLen / F) * Math.ceil(mask.kvLen / F) <= MAX_SCHEDULE_ENTRIES;
}

/** Whether the sm90ws kernels take this problem: Hopper, head dim 64 or 128, Sq and Skv of at least {@link SM90WS_MIN_ROWS}. */
export function sm90wsFits(caps: DeviceCaps, dims: Pick<QkvDims, 'D' | 'Sq' | 'Skv'>): boolean {
  return isHopper(caps) && SM90_HEAD_DIMS.includes(dims.D) && dims.Sq >= SM90WS_MIN_ROWS && dims.Skv >= SM90WS_MIN_ROWS;
}

/** Plans a GPU SDPA launch (dense or causal kernel; `denseMask`: an attnMask streams through a score mod). */
export function planSdpa(dims: QkvDims, isCausal: boolean, caps: DeviceCaps, sw: PlanSwitches = DEFAULT_SWITCHES,
  denseMask = false): LaunchPlan {
  const mode: Mode = isCausal ? 'kCausal' : 'kDense';
  if (sw.sm90ws && !denseMask && sm90wsFits(caps, dims)) return { family: 'sm90ws', mode };
  return { family: autoFamily(caps, dims.D, sw), mode };
}

/** The sm90ws tile (sm90_ws_entry.cuh WsTileFor): 128 query rows × 128 kv columns at head dims 64 and 128. */
export const SM90WS_TILE: Tile = Object.freeze({ BM: 128, BN: 128 });

/**
 * Why a flex call on this device keeps the sm90 kernel under `FLEXATTN_KERNEL_FAMILY=sm90ws`, in words,
 * or null when the sm90ws flex kernel takes it. That kernel walks the block mask's own lists with
 * 128×128 tiles (so its block sizes must be multiples of 128; createBlockMask's default 128 is, and on
 * a GPU its 128×128 lists are derived from a 64×64 classification, exact for the mod), or every kv tile
 * without a mask. It has no 64×64 schedule, segmented grid or host CTA order: masks for which the sm90
 * kernel would use those still run here, on the mask's lists (same result, other speed).
 */
export function sm90wsFlexRefusal(caps: DeviceCaps, dims: Pick<QkvDims, 'D' | 'Sq' | 'Skv'>,
  mask: Pick<MaskFacts, 'blockSize'> | undefined, ko: KernelOptions = {}): string | null {
  if (!isHopper(caps)) return `not a compute capability 9.0 GPU (${caps.name})`;
  if (!SM90_HEAD_DIMS.includes(dims.D)) return `head dim ${dims.D} (the sm90ws kernel takes ${SM90_HEAD_DIMS.join(' or ')})`;
  if (dims.Sq < SM90WS_MIN_ROWS || dims.Skv < SM90WS_MIN_ROWS) {
    return `Sq=${dims.Sq}, Skv=${dims.Skv} (its TMA boxes are ${SM90WS_MIN_ROWS} rows)`;
  }
  if ((ko.family !== undefined && ko.family !== 'auto') || TILE_KEYS.some((k) => ko[k] !== undefined)) {
    return 'kernelOptions names a family or tile';
  }
  if (mask && (mask.blockSize[0] % SM90WS_TILE.BM !== 0 || mask.blockSize[1] % SM90WS_TILE.BN !== 0)) {
    return `block size ${mask.blockSize[0]}×${mask.blockSize[1]} (the sm90ws kernel walks the lists with ` +
      `${SM90WS_TILE.BM}×${SM90WS_TILE.BN} tiles: block sizes must be multiples of ${SM90WS_TILE.BM})`;
  }
  // The last kv block must not hold a whole tile past Skv: that tile's TMA box would start outside the
  // tensor, which this family does not do yet (SM90WS_MIN_ROWS says why).
  const bkv = mask?.blockSize[1] ?? SM90WS_TILE.BN;
  if (Math.ceil(dims.Skv / bkv) * bkv - dims.Skv >= SM90WS_TILE.BN) {
    return `kv block size ${bkv} with Skv=${dims.Skv} (the last block would hold a ${SM90WS_TILE.BN}-column tile past Skv)`;
  }
  return null;
}

/** Plans a GPU flex launch; throws the typed error for invalid kernel options or block sizes no kernel tile divides. */
export function planFlex(a: {
  dims: QkvDims; mask?: MaskFacts | undefined; kernelOptions?: KernelOptions | undefined; caps: DeviceCaps; switches?: PlanSwitches;
}): FlexPlan {
  const { dims, mask } = a;
  const sw = a.switches ?? DEFAULT_SWITCHES;
  const ko = a.kernelOptions ?? {};
  const family = pickFamily(ko, a.caps, dims.D, sw, mask?.blockSize);
  let shape = family === 'sm80' && TILE_KEYS.some((k) => ko[k] !== undefined) ? checkKernelOptions(ko) : undefined;
  if (mask && family === 'sm80') shape = sm80MaskShape(shape, mask, dims.D);
  const mode: Mode = mask ? 'kBlockSparse' : 'kDense';
  // Opt-in sm90ws: it walks the mask's own lists (no fine schedule, segments or CTA order; see sm90wsFlexRefusal).
  if (family === 'sm90' && sw.sm90ws && sm90wsFlexRefusal(a.caps, dims, mask, ko) === null) {
    return { family: 'sm90ws', mode, fineSchedule: false, ctaOrder: false };
  }
  if (!mask || family !== 'sm90') return { family, mode, ...(shape ? { shape } : {}), fineSchedule: false, ctaOrder: false };
  const t90 = SM90_TILE[dims.D];
  // The Hopper kernels walk 64-row query blocks: a 64×64 schedule skips the
  // 64-wide kv tiles of a listed block that these rows never keep.
  const fineSchedule = walksFineSchedule(mask, t90, sw);
  // Document masks: tiles that restart at every document start, built from a
  // uniform 64×64 schedule (the mask itself when it has that block size and no
  // params: its segmented classes are made once per mask).
  const tile64 = t90 !== undefined && t90.BM === SEGMENT_TILE && t90.BN === SEGMENT_TILE;
  const own64 = mask.blockSize[0] === SEGMENT_TILE && mask.blockSize[1] === SEGMENT_TILE && mask.modParams === 0;
  const segmentsFrom = tile64 && sw.segments ? (fineSchedule ? 'fine' : own64 ? 'mask' : undefined) : undefined;
  return { family, mode, fineSchedule, ...(segmentsFrom ? { segmentsFrom } : {}), ctaOrder: sw.ctaOrder };
}
