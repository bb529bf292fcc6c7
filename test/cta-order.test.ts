// CTA order of block-sparse launches on Hopper (lib/cuda/schedules/cta-order.ts): a
// permutation of the grid's work, heads in L2-sized groups, and within a group
// the query blocks by estimated cost, highest first.
import { describe, expect, it } from 'vitest';
import { ctaOrder, ctaOrderGroup, type CtaOrderMask } from '../lib/cuda/schedules/cta-order.js';
import { mulberry32 } from './random-mods.js';

function randomMask(r: () => number, B: number, H: number, QB: number, blockSize: [number, number]): CtaOrderMask {
  const n = B * H * QB;
  return {
    B, H, QB, blockSize,
    kvNumBlocks: Int32Array.from({ length: n }, () => Math.floor(r() * 6)),
    fullKvNumBlocks: Int32Array.from({ length: n }, () => Math.floor(r() * 20)),
  };
}

/** Cost of work index e as the order defines it (tenths of a tile). */
function costOf(mask: CtaOrderMask, e: number, nM: number, Hq: number, blockM: number, blockN: number): number {
  const m = e % nM, bh = Math.floor(e / nM), b = Math.floor(bh / Hq), h = bh % Hq;
  const r = ((mask.B === 1 ? 0 : b) * mask.H + (mask.H === 1 ? 0 : h)) * mask.QB + Math.floor((m * blockM) / mask.blockSize[0]);
  const sub = mask.blockSize[1] / blockN;
  return 15 + sub * (10 * mask.fullKvNumBlocks[r]! + 16 * mask.kvNumBlocks[r]!);
}

describe('CTA order for block-sparse launches', () => {
  it('group size: 32 MB of K/V per group, at most 32 heads, at least 1', () => {
    const MB = 1024 * 1024;
    expect(ctaOrderGroup(4 * MB, 32)).toBe(8);      // S=8192, D=128 bf16 (the flex benchmark shape)
    expect(ctaOrderGroup(MB / 4, 512)).toBe(32);    // S=512: capped
    expect(ctaOrderGroup(MB / 4, 6)).toBe(6);       // fewer heads than a group
    expect(ctaOrderGroup(64 * MB, 32)).toBe(1);
  });

  it('a permutation; groups of heads in order; costs non-increasing within a group, ties in the built-in order', () => {
    const r = mulberry32(7);
    for (const [B, Hq, mB, mH, S, bs, BM, BN] of [
      [2, 16, 2, 1, 8192, [128, 128], 64, 64], [3, 5, 3, 5, 1000, [128, 256], 64, 64], [1, 40, 1, 40, 512, [64, 64], 64, 128],
      [2, 4, 1, 1, 777, [256, 128], 128, 64],
    ] as [number, number, number, number, number, [number, number], number, number][]) {
      const nM = Math.ceil(S / BM), QB = Math.ceil(S / bs[0]);
      const mask = randomMask(r, mB, mH, QB, bs);
      const kvHeadBytes = 2 * S * 256;
      const order = ctaOrder(mask, { B, Hq, blockM: BM, blockN: BN, nM, kvHeadBytes });
      expect(Array.from(order).sort((a, b) => a - b)).toEqual(Array.from({ length: B * Hq * nM }, (_, i) => i));
      const G = ctaOrderGroup(kvHeadBytes, B * Hq);
      for (let i = 0; i < order.length; i++) {
        const bh = Math.floor(order[i]! / nM);
        expect(Math.floor(bh / G)).toBe(Math.floor(i / (G * nM)));   // the i-th CTA belongs to group floor(i / (G·nM))
        if (i % (G * nM) === 0) continue;
        const prev = order[i - 1]!, cur = order[i]!;
        const cp = costOf(mask, prev, nM, Hq, BM, BN), cc = costOf(mask, cur, nM, Hq, BM, BN);
        expect(cc).toBeLessThanOrEqual(cp);
        if (cc === cp) {
          // built-in order within a group: later query block first, then head
          const [mp, mc] = [prev % nM, cur % nM];
          expect(mc < mp || (mc === mp && cur > prev)).toBe(true);
        }
      }
    }
  });

  it('a broadcast mask plane orders like the same plane repeated per (b, h)', () => {
    const r = mulberry32(3);
    const one = randomMask(r, 1, 1, 16, [128, 128]);
    const rep: CtaOrderMask = { ...one, B: 2, H: 3, kvNumBlocks: new Int32Array(6 * 16), fullKvNumBlocks: new Int32Array(6 * 16) };
    for (let g = 0; g < 6; g++) { rep.kvNumBlocks.set(one.kvNumBlocks, g * 16); rep.fullKvNumBlocks.set(one.fullKvNumBlocks, g * 16); }
    const l = { B: 2, Hq: 3, blockM: 64, blockN: 64, nM: 32, kvHeadBytes: 1 << 20 };
    expect(Array.from(ctaOrder(one, l))).toEqual(Array.from(ctaOrder(rep, l)));
  });

  it('a document-like mask: the heaviest block goes first, not the last one', () => {
    // One head, 4 query blocks; the second is the end of a long document.
    const mask: CtaOrderMask = { B: 1, H: 1, QB: 4, blockSize: [64, 64],
      kvNumBlocks: Int32Array.from([1, 1, 1, 1]), fullKvNumBlocks: Int32Array.from([0, 9, 0, 2]) };
    const order = ctaOrder(mask, { B: 1, Hq: 1, blockM: 64, blockN: 64, nM: 4, kvHeadBytes: 1 << 20 });
    expect(Array.from(order)).toEqual([1, 3, 2, 0]);   // costs 106, 46, 26, 26 (ties: later block first)
  });
});
