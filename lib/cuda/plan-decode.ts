/**
 * Launch planning for the decode / ragged kernel (native/kernels/decode.cuh):
 * whether a flex or SDPA call takes it, its row tiles, and the split-KV count
 * chosen from the SM count and the shape. Pure: everything comes in as
 * arguments, so it is tested without a GPU (test/cuda-plan-decode.test.ts).
 * Internal: not exported from the package.
 * @module
 */
import { DECODE_MAX_SPLITS, DECODE_TILE, type DecodeTile } from './generated/tiles.js';
import { InternalError } from '../errors.js';
import type { DeviceCaps } from './device-caps.js';

export { DECODE_MAX_SPLITS, DECODE_TILE, type DecodeTile } from './generated/tiles.js';

/** Head dims the decode kernel is instantiated for. */
export const DECODE_HEAD_DIMS: readonly number[] = Object.freeze(Object.keys(DECODE_TILE).map(Number));

/** flexAttention / scaledDotProductAttention take the decode kernel for at most this many query tokens. */
export const DECODE_MAX_QUERY = 16;

/**
 * Cost model of one CTA beyond its kv tiles, in kv-tile times: the prologue
 * (Q, page table, pipeline fill) and the warps' merge; and of the combine
 * kernel a split launch adds. They stop a split count from trading a little
 * wave quantisation for many short CTAs.
 */
const CTA_OVERHEAD_TILES = 2;
const COMBINE_TILES = 2;

/** What the split planner needs to know. */
export interface SplitInput {
  /** CTAs without splitting: sequences × KV heads × row tiles. */
  readonly ctas: number;
  /** KV tokens of the longest sequence (the longest CTA's work). */
  readonly maxKvLen: number;
  readonly smCount: number;
  /** CTAs per SM that count as one wave (see {@link decodeSplits}); default 1. */
  readonly ctasPerWave?: number;
  /** kv rows per kernel tile. */
  readonly blockN: number;
}

/**
 * Number of KV splits: the count that minimises waves × (kv tiles per split +
 * per-CTA overhead) (+ the combine when splitting), so that a launch with few
 * sequences × KV heads (one long sequence, say) still fills every SM, and one
 * that already fills them is not split. A wave is one CTA per SM when each
 * kv tile is one contiguous run (pages of at least a tile, or contiguous KV):
 * the kernel streams K/V at the memory's rate and a second CTA on the SM shares
 * its loads instead of adding bandwidth, so splitting to fill it only adds
 * partials for the combine. With smaller pages every row's address waits on a
 * page-table load, and a second CTA per SM hides that latency, so a wave is
 * `ctasPerWave` = 2 CTAs per SM there (bench/results/kernel-notes.md, decode
 * split sweep). At most {@link DECODE_MAX_SPLITS}, and never more splits than kv
 * tiles. Ties go to fewer splits.
 */
export function decodeSplits(a: SplitInput): number {
  const tiles = Math.ceil(Math.max(0, a.maxKvLen) / a.blockN);
  if (a.ctas <= 0 || tiles <= 1 || a.smCount <= 0) return 1;
  const slots = a.smCount * Math.max(1, a.ctasPerWave ?? 1);
  const limit = Math.min(DECODE_MAX_SPLITS, tiles);
  let best = 1, bestCost = Infinity;
  for (let s = 1; s <= limit; s++) {
    const waves = Math.ceil((a.ctas * s) / slots);
    const cost = waves * (Math.ceil(tiles / s) + CTA_OVERHEAD_TILES) + (s > 1 ? COMBINE_TILES : 0);
    if (cost < bestCost) { best = s; bestCost = cost; }
  }
  return best;
}

/** Shape of one decode launch. */
export interface DecodeShape {
  readonly numSeqs: number;
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  /** Most query tokens of one sequence (sizes the row tiles). */
  readonly maxQueryTokens: number;
  /** KV tokens of the longest sequence. */
  readonly maxSeqLen: number;
  /**
   * KV tokens the busiest row tile reads, when the launch reads less than
   * whole sequences (a mask's kv range, lib/cuda/kv-range.ts; a block mask's
   * lists): the split planner sizes splits by it. Default maxSeqLen.
   */
  readonly maxKvWork?: number;
  /** Tokens per KV page (default: one page per sequence). */
  readonly pageSize?: number;
  /**
   * A block-sparse walk: every row of a tile must share one block-mask row, so
   * rows are cut into segments of one q block (`qBlock` query tokens) and, for
   * a mask with per-head lists (`perHead`), one query head.
   */
  readonly blockSparse?: { readonly qBlock: number; readonly perHead: boolean };
}

/** A decode launch: tile, row tiles per (sequence, KV head), splits and the grid. */
export interface DecodePlan {
  readonly tile: DecodeTile;
  /** Row tiles per (sequence, KV head): (G / packHeads) × qSegments × segTiles. */
  readonly rowTiles: number;
  /** Row segmentation (DecodeParams pack_heads, seg_tokens, q_segments, seg_tiles). */
  readonly packHeads: number;
  readonly segTokens: number;
  readonly qSegments: number;
  readonly segTiles: number;
  readonly numSplits: number;
  /** Grid x of the attention kernel (1-D). */
  readonly gridX: number;
  /** Grid x of the combine kernel (numSplits > 1). */
  readonly combineGridX: number;
}

/**
 * Plans a decode launch. `numSplits` forces a split count (tests; clamped to
 * 1..DECODE_MAX_SPLITS); otherwise {@link decodeSplits} picks it from the
 * device's SM count.
 */
export function planDecode(s: DecodeShape, caps: Pick<DeviceCaps, 'smCount'>, numSplits?: number): DecodePlan {
  const tile = DECODE_TILE[s.D];
  if (!tile) throw new InternalError(`no decode tile for head dim ${s.D}`);
  const G = s.Hq / s.Hkv;
  const m = Math.max(1, s.maxQueryTokens);
  let packHeads = G, segTokens = 2 ** 30, qSegments = 1;
  if (s.blockSparse) {
    packHeads = s.blockSparse.perHead ? 1 : G;
    segTokens = s.blockSparse.qBlock;
    qSegments = Math.ceil(m / segTokens);
  }
  const segTiles = Math.max(1, Math.ceil((Math.min(m, segTokens) * packHeads) / tile.BM));
  const rowTiles = (G / packHeads) * qSegments * segTiles;
  const ctas = s.numSeqs * s.Hkv * rowTiles;
  const splits = numSplits !== undefined
    ? Math.max(1, Math.min(DECODE_MAX_SPLITS, Math.floor(numSplits)))
    : decodeSplits({
      ctas, maxKvLen: Math.min(s.maxSeqLen, s.maxKvWork ?? s.maxSeqLen), smCount: caps.smCount ?? 0, blockN: tile.BN,
      ctasPerWave: (s.pageSize ?? 2 ** 30) < tile.BN ? 2 : 1,
    });
  return {
    tile, rowTiles, packHeads, segTokens, qSegments, segTiles, numSplits: splits, gridX: ctas * splits, combineGridX: ctas,
  };
}

/** What decides whether a flex / SDPA call runs on the decode kernel. */
export interface DecodeRouteInput {
  readonly Sq: number;
  readonly D: number;
  readonly Dv: number;
  readonly dtype: string;
  /** The call has a block mask (the decode kernel walks its kv lists). */
  readonly blockMask: boolean;
  /** The call names kernel options (a forward-kernel tile or family). */
  readonly kernelOptions: boolean;
  /** `FLEXATTN_DECODE=0`. */
  readonly disabled: boolean;
}

/** Whether a flex / SDPA call takes the decode kernel, and why (or why not). */
export function decodeRoute(a: DecodeRouteInput): { decode: boolean; reason: string } {
  if (a.disabled) return { decode: false, reason: 'FLEXATTN_DECODE=0' };
  if (a.Sq > DECODE_MAX_QUERY) return { decode: false, reason: `Sq = ${a.Sq} > ${DECODE_MAX_QUERY}` };
  if (a.kernelOptions) return { decode: false, reason: 'kernelOptions name a forward-kernel tile or family' };
  if (!DECODE_HEAD_DIMS.includes(a.D) || a.Dv !== a.D) {
    return { decode: false, reason: `head dim ${a.D}${a.Dv !== a.D ? `/${a.Dv}` : ''} (the decode kernel has ${DECODE_HEAD_DIMS.join(', ')})` };
  }
  if (a.dtype !== 'bf16' && a.dtype !== 'f16') return { decode: false, reason: `dtype ${a.dtype}` };
  return {
    decode: true,
    reason: `Sq = ${a.Sq} ≤ ${DECODE_MAX_QUERY}: the decode kernel (query heads of a KV head packed into one tile, split-KV when the grid is small${
      a.blockMask ? '; it walks the block mask\'s kv block lists, skipping empty blocks' : ''})`,
  };
}
