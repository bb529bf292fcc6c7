/**
 * Tile sizes of the forward kernels as the launch layer plans with them, and
 * the kv-list entry encoding of a segmented grid. The values come from
 * native/kernels/interface/tiles.json through the generated module (the
 * kernels' C++ constants are generated from the same file); this module adds
 * the planner's tile types and the limits that follow from the encoding.
 * Internal: not exported from the package.
 * @module
 */
import { KV_ENTRY_LENGTH_BITS } from './generated/tiles.js';

export { SM80_SMALL_TILE, SM80_TILE, SM90_TILE, SCHEDULE_BLOCK, SEGMENT_TILE, encodeKvEntry } from './generated/tiles.js';

/** A kernel tile: query rows × kv rows per step. */
export interface Tile { readonly BM: number; readonly BN: number }

/** An sm80 kernel shape: tile, warps per CTA and K/V pipeline stages. */
export interface Shape extends Tile { readonly warps: number; readonly stages: number }

/** Segmented grids need sequence lengths below this, so that every kv entry (start · 2^lengthBits + length) fits an int32. */
export const MAX_SEGMENTED_LENGTH = 2 ** (31 - KV_ENTRY_LENGTH_BITS);
