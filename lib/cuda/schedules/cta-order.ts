/**
 * CTA order for block-sparse launches: which (query block, head, batch) the
 * i-th CTA of the grid computes (`FlashFwdParams.cta_order`).
 *
 * The GPU starts CTAs in grid order and runs a few waves of them. Under a
 * document or sliding-window mask the query blocks' costs differ a lot and do
 * not grow with the block index, so the kernel's built-in order (last query
 * block first) can leave the longest CTAs in the final wave. This order takes
 * the heads in groups (so that the CTAs running at once share K/V in L2) and,
 * within a group, the most expensive query blocks first (longest processing
 * time first). Faster for document, sliding-window and causal masks at long
 * lengths and no slower at short ones (bench/results/kernel-notes.md, "CTA order").
 * Internal: not exported from the package.
 * @module
 */
import type { BlockMask } from '../../blockmask/mask.js';
import { itemSize, type DType } from '../../dtype.js';
import { Tensor } from '../../tensor.js';
import type { QkvDims } from '../../validate.js';
import { derivedTensor } from './store.js';

/** K/V bytes one group of heads may span (the H100's L2 is 50 MB). */
export const CTA_ORDER_L2_BUDGET = 32 * 1024 * 1024;
/** Most heads per group (larger groups measured slower at short lengths: kernel-notes.md, "CTA order"). */
export const CTA_ORDER_MAX_GROUP = 32;

/** Per-row block counts of the mask the kernel walks. */
export interface CtaOrderMask {
  /** Mask batch and head extents (1 = broadcast). */
  B: number;
  H: number;
  /** Query-block rows of the mask and its block size `[q, kv]`. */
  QB: number;
  blockSize: readonly [number, number];
  /** Partial / full blocks per row, `[B, H, QB]`. */
  kvNumBlocks: Int32Array;
  fullKvNumBlocks: Int32Array;
}

/** The launch the order is for. */
export interface CtaOrderLaunch {
  B: number;
  Hq: number;
  /** Query rows per CTA (the kernel's BLOCK_M) and kv rows per tile (BLOCK_N). */
  blockM: number;
  blockN: number;
  /** Query blocks per head: the grid's x extent. */
  nM: number;
  /** K and V bytes one query head reads over the whole sequence: 2 · Skv · D · itemsize / (Hq / Hkv). */
  kvHeadBytes: number;
}

/** Heads per group: as many as fit {@link CTA_ORDER_L2_BUDGET} of K/V, at most {@link CTA_ORDER_MAX_GROUP}. */
export function ctaOrderGroup(kvHeadBytes: number, heads: number): number {
  const fit = Math.floor(CTA_ORDER_L2_BUDGET / Math.max(kvHeadBytes, 1));
  return Math.max(1, Math.min(fit, CTA_ORDER_MAX_GROUP, heads));
}

/**
 * Work indices `m + nM · (h + Hq · b)` in launch order: groups of heads in
 * order, within a group the query blocks by estimated cost, highest first
 * (ties: later query block first, then head). Cost of a CTA in tenths of a
 * tile: 15 (prologue and epilogue) + 10 per full tile + 16 per partial tile
 * (mask evaluation; per-tile costs from the kernel harness, kernel-notes.md "CTA order").
 */
export function ctaOrder(mask: CtaOrderMask, l: CtaOrderLaunch): Uint32Array {
  const { nM, blockM } = l;
  const BH = l.B * l.Hq;
  const tilesPerBlock = mask.blockSize[1] / l.blockN;
  const rowOf = (m: number) => Math.min(Math.floor((m * blockM) / mask.blockSize[0]), mask.QB - 1);
  // Cost per (mask plane, query block); heads that share a plane share costs.
  const planes = mask.B * mask.H;
  const cost = new Int32Array(planes * nM);
  for (let p = 0; p < planes; p++) {
    for (let m = 0; m < nM; m++) {
      const r = p * mask.QB + rowOf(m);
      cost[p * nM + m] = 15 + tilesPerBlock * (10 * mask.fullKvNumBlocks[r]! + 16 * mask.kvNumBlocks[r]!);
    }
  }
  const planeOf = (bh: number) => {
    const b = Math.floor(bh / l.Hq), h = bh - b * l.Hq;
    return (mask.B === 1 ? 0 : b) * mask.H + (mask.H === 1 ? 0 : h);
  };
  const G = ctaOrderGroup(l.kvHeadBytes, BH);
  const out = new Uint32Array(BH * nM);
  let o = 0;
  for (let g0 = 0; g0 < BH; g0 += G) {
    const gs = Math.min(G, BH - g0);
    // Entry k of the group in the built-in order: query block nM-1-floor(k/gs), head g0 + k % gs.
    const keys = new Float64Array(gs * nM);
    const work = new Uint32Array(gs * nM);
    for (let k = 0; k < gs * nM; k++) {
      const m = nM - 1 - Math.floor(k / gs), bh = g0 + (k % gs);
      work[k] = m + nM * bh;
      // Higher cost first, then the built-in position: one exact numeric key.
      keys[k] = -cost[planeOf(bh) * nM + m]! * gs * nM + k;
    }
    const idx = Array.from({ length: gs * nM }, (_, k) => k).sort((a, b) => keys[a]! - keys[b]!);
    for (const k of idx) out[o++] = work[k]!;
  }
  return out;
}

/**
 * The CTA order of a block-sparse Hopper launch over `bm` (the mask the kernel
 * walks) as a device tensor, made once per launch shape and freed with the mask.
 */
export function ctaOrderTensor(bm: BlockMask, d: QkvDims, dtype: DType, tile: { blockM: number; blockN: number }, nM: number): Tensor {
  const kvHeadBytes = (2 * d.Skv * d.D * itemSize(dtype)) / (d.Hq / d.Hkv);
  const G = ctaOrderGroup(kvHeadBytes, d.B * d.Hq);
  const key = `cta:${d.B}:${d.Hq}:${nM}:${tile.blockM}:${tile.blockN}:${G}`;
  return derivedTensor(bm, key, () => {
    const order = ctaOrder(
      { B: bm.B, H: bm.H, QB: bm.numQBlocks, blockSize: bm.blockSize, kvNumBlocks: bm.host.kvNumBlocks, fullKvNumBlocks: bm.host.fullKvNumBlocks },
      { B: d.B, Hq: d.Hq, blockM: tile.blockM, blockN: tile.blockN, nM, kvHeadBytes });
    return Tensor.fromHost(new Int32Array(order.buffer, order.byteOffset, order.length), [order.length], 'i32', { device: bm.device });
  });
}
