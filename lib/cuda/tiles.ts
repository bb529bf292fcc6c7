/**
 * Tile sizes of the forward kernels as the launch layer plans with them, and
 * the kv-list entry encoding of a segmented grid. They mirror the kernels'
 * configs (FwdConfigSm90For in flash_fwd_sm90.cuh, FwdConfigFor in
 * flash_fwd.cuh, the segmented-grid decode in flash_fwd.cuh); every TypeScript
 * use of them reads this file.
 * Internal: not exported from the package.
 * @module
 */

/** A kernel tile: query rows × kv rows per step. */
export interface Tile { readonly BM: number; readonly BN: number }

/** An sm80 kernel shape: tile, warps per CTA and K/V pipeline stages. */
export interface Shape extends Tile { readonly warps: number; readonly stages: number }

/** Default Hopper (wgmma) tile per head dim; the keys are the head dims the family is built for. */
export const SM90_TILE: Readonly<Record<number, Tile>> = { 64: { BM: 64, BN: 128 }, 128: { BM: 64, BN: 64 } };

/** Default mma.sync tile per head dim; the keys are the head dims the GPU kernels are built for. */
export const DEFAULT_TILE: Readonly<Record<number, Tile>> = {
  32: { BM: 128, BN: 64 }, 64: { BM: 128, BN: 128 }, 96: { BM: 128, BN: 64 }, 128: { BM: 128, BN: 64 }, 256: { BM: 64, BN: 64 },
};

/** Smaller mma.sync shape: one 16-row MMA tile per warp, Q in registers; no spills for mods that keep captured values live. */
export const SMALL_SHAPE: Shape = { BM: 64, BN: 64, warps: 4, stages: 2 };

/** Tile edge of a segmented grid: the Hopper d128 kernels' 64×64 tile. */
export const SEGMENT_TILE = 64;

/** Block size of the kernels' fine schedule (their 64-row × 64-wide tile at head dim 128). */
export const SCHEDULE_BLOCK = 64;

/** Multiplier of a segmented kv-list entry's start (the kernel decodes `start = e >> 7`, `length = e & 127`). */
const KV_ENTRY_SCALE = 128;

/** A segmented grid's kv-list entry: the tile's first column and its length (at most {@link SEGMENT_TILE}). */
export function encodeKvEntry(start: number, length: number): number {
  return start * KV_ENTRY_SCALE + length;
}

/** Segmented grids need sequence lengths below this, so that every kv entry fits an int32. */
export const MAX_SEGMENTED_LENGTH = 2 ** 24;
