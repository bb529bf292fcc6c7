// The decode kernel's kv range (lib/cuda/kv-range.ts), without a GPU: the
// program built from a mask's position structure, its host evaluation (the
// twin of decode.cuh's kv_hull), soundness against point evaluation of the
// mask (a hull that misses a visible key would be a wrong answer), tightness
// for the built-ins (so the kernel really skips), and the planner's reduced work.
import { describe, expect, it } from 'vitest';
import {
  andMasks, causal, documentMask, maskMod, notMask, orMasks, prefixLM, slidingWindow, type MaskMod,
} from '../lib/mods/index.js';
import { KV_OP, KV_RANGE_MAX_OPS, kvRangeHull, kvRangeOf, kvRangeProgram, maxTileKvWork, rangePred } from '../lib/cuda/kv-range.js';
import { DECODE_TILE, planDecode } from '../lib/cuda/plan-decode.js';
import { hostTensor } from './random-mods.js';

let seed = 987654321;
const rnd = (n: number): number => { seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0; return seed % n; };

/** Every (q, kv) the mask keeps for q in [qa, qb] lies in the hull, which stays inside [0, n). */
function expectSound(mod: MaskMod, qa: number, qb: number, n: number): [number, number] {
  const prog = kvRangeOf(mod);
  const [lo, hi] = kvRangeHull(prog, qa, qb, n);
  expect(lo).toBeGreaterThanOrEqual(0);
  expect(hi).toBeLessThanOrEqual(n);
  const keep = mod.toJs();
  for (let q = qa; q <= qb; q++) {
    for (let kv = 0; kv < n; kv++) {
      if (keep(0, 0, q, kv) && (kv < lo || kv >= hi)) {
        throw new Error(`${mod.toString()}: q=${q} keeps kv=${kv} outside the hull [${lo}, ${hi}) for q in [${qa}, ${qb}], n=${n}`);
      }
    }
  }
  return [lo, hi];
}

/** The smallest interval holding every kept key (brute force). */
function trueHull(mod: MaskMod, qa: number, qb: number, n: number): [number, number] {
  const keep = mod.toJs();
  let lo = n, hi = 0;
  for (let q = qa; q <= qb; q++) for (let kv = 0; kv < n; kv++) if (keep(0, 0, q, kv)) { lo = Math.min(lo, kv); hi = Math.max(hi, kv + 1); }
  return lo < hi ? [lo, hi] : [0, 0];
}

describe('kv range program', () => {
  it('is sound for the built-ins and their compositions on random row spans', () => {
    const mods: MaskMod[] = [
      causal(), slidingWindow(1), slidingWindow(7), slidingWindow(64), slidingWindow(5, { lookahead: 3 }), prefixLM(0), prefixLM(9),
      andMasks(slidingWindow(20), prefixLM(6)), andMasks(causal(), slidingWindow(13)), orMasks(slidingWindow(4), prefixLM(3)),
      notMask(slidingWindow(10)), andMasks(prefixLM(5), notMask(causal())),
      maskMod(({ q, kv }) => kv.le(q.add(7)).and(kv.ge(q.sub(30)))),  // a user mask: the IR's envelope
    ];
    for (const mod of mods) {
      for (let trial = 0; trial < 40; trial++) {
        const n = 1 + rnd(150), qa = rnd(170), qb = qa + rnd(20);
        expectSound(mod, qa, qb, n);
      }
    }
  });

  it('is the exact hull for sliding windows, causal and prefix LM (the kernel skips what no row sees)', () => {
    const mods = [causal(), slidingWindow(1), slidingWindow(33), slidingWindow(8, { lookahead: 2 }), prefixLM(12),
      andMasks(causal(), slidingWindow(16)), andMasks(slidingWindow(25), prefixLM(4))];
    for (const mod of mods) {
      for (let trial = 0; trial < 30; trial++) {
        const n = 1 + rnd(200), qa = rnd(220), qb = qa + rnd(17);
        const got = kvRangeHull(kvRangeOf(mod), qa, qb, n);
        const want = trueHull(mod, qa, qb, n);
        // An and of intervals may be wider than the true hull only when empty parts meet; not for these.
        expect(got, `${mod.toString()} q=[${qa},${qb}] n=${n}`).toEqual(want);
      }
    }
  });

  it('reads 4096 of 32768 keys for one token under slidingWindow(4096) (end-aligned)', () => {
    const prog = kvRangeOf(slidingWindow(4096));
    expect(kvRangeHull(prog, 32767, 32767, 32768)).toEqual([32768 - 4096, 32768]);
    // a tile of GQA rows: 4 heads x 1 token share one position
    expect(maxTileKvWork(prog, { n: 32768, m: 1, G: 4, BM: 16, causal: true, endAligned: true })).toBe(4096);
    // speculative decoding: 16 tokens x 4 heads over 4 tiles, each 4 positions: window + 3
    expect(maxTileKvWork(prog, { n: 32768, m: 16, G: 4, BM: 16, causal: true, endAligned: true })).toBe(4096 + 3);
    // no mask: the whole sequence; causal top-left (SDPA): up to the last row
    expect(maxTileKvWork(new Int32Array(0), { n: 1000, m: 1, G: 4, BM: 16, causal: false, endAligned: false })).toBe(1000);
    expect(maxTileKvWork(new Int32Array(0), { n: 1000, m: 4, G: 4, BM: 16, causal: true, endAligned: false })).toBe(4);
  });

  it('says "whole sequence" (an empty program) for masks without position structure', () => {
    const docs = hostTensor(Int32Array.from({ length: 64 }, (_, i) => i >> 4), [64], 'i32');
    expect(kvRangeOf(documentMask(docs, { causal: false })).length).toBe(0);
    expect(kvRangeOf(undefined).length).toBe(0);
    expect(kvRangeOf(maskMod(({ b }) => b.ne(1))).length).toBe(0);
    expect(kvRangeHull(new Int32Array(0), 5, 9, 77)).toEqual([0, 77]);
    // ... but a data-dependent mask anded with a window keeps the window's bound (the IR's envelope)
    // the causal document mask keeps its kv <= q (read off its IR)
    expect(kvRangeHull(kvRangeOf(documentMask(docs)), 20, 23, 64)).toEqual([0, 24]);
    const docWin = andMasks(documentMask(docs, { causal: false }), slidingWindow(10));
    expect(kvRangeOf(docWin).length).toBeGreaterThan(0);
    expect(kvRangeHull(kvRangeOf(docWin), 40, 40, 64)).toEqual([31, 41]);
    expect(rangePred(documentMask(docs, { causal: false }))).toBeNull();
  });

  it('encodes ops as the kernel reads them, and gives up (whole sequence) past the op limit', () => {
    expect(Array.from(kvRangeOf(slidingWindow(100, { lookahead: 2 })))).toEqual([KV_OP.band, -2, 99, 0, 0]);
    expect(Array.from(kvRangeOf(causal()))).toEqual([KV_OP.band, 0, 2 ** 30, 0, 0]);
    expect(Array.from(kvRangeOf(prefixLM(7)))).toEqual([KV_OP.kvLt, 7, 0, 0, 0, KV_OP.band, 0, 2 ** 30, 0, 0, KV_OP.or, 2, 0, 0, 0]);
    const many = { t: 'or' as const, c: Array.from({ length: KV_RANGE_MAX_OPS }, (_, i) => ({ t: 'box' as const, q0: i, q1: i + 1, kv0: i, kv1: i + 1 })) };
    expect(kvRangeProgram(many).length).toBe(0);
    const few = { t: 'or' as const, c: many.c.slice(0, KV_RANGE_MAX_OPS - 1) };
    expect(kvRangeProgram(few).length).toBe(5 * KV_RANGE_MAX_OPS);
    expect(kvRangeHull(kvRangeProgram(few), 3, 4, 100)).toEqual([3, 5]);
    expect(kvRangeHull(kvRangeProgram({ t: 'const', value: false }), 0, 9, 100)).toEqual([0, 0]);
  });
});

describe('planDecode with a reduced kv range or a block mask', () => {
  const H100 = { smCount: 132, smemPerBlockOptin: 227 * 1024 };
  it('sizes split-KV by the work a tile reads, not the sequence length', () => {
    const s = { numSeqs: 1, Hq: 32, Hkv: 8, D: 128, maxQueryTokens: 1, maxSeqLen: 131072 };
    const full = planDecode(s, H100);
    const windowed = planDecode({ ...s, maxKvWork: 512 }, H100);
    expect(windowed.numSplits).toBeLessThan(full.numSplits);
    expect(windowed.numSplits).toBeLessThanOrEqual(512 / 64);
    expect(planDecode({ ...s, maxKvWork: 64 }, H100).numSplits).toBe(1);
  });
  it('cuts rows into one segment per q block (and per head for a per-head mask)', () => {
    const bm = DECODE_TILE[128]!.BM;
    const s = { numSeqs: 2, Hq: 32, Hkv: 8, D: 128, maxQueryTokens: 16, maxSeqLen: 1000 };
    const dense = planDecode(s, H100, 1);
    expect([dense.packHeads, dense.qSegments, dense.segTiles, dense.rowTiles]).toEqual([4, 1, Math.ceil(64 / bm), Math.ceil(64 / bm)]);
    expect(dense.segTokens).toBe(2 ** 30);
    const q128 = planDecode({ ...s, blockSparse: { qBlock: 128, perHead: false } }, H100, 1);
    expect([q128.packHeads, q128.qSegments, q128.rowTiles]).toEqual([4, 1, dense.rowTiles]);
    const q4 = planDecode({ ...s, blockSparse: { qBlock: 4, perHead: false } }, H100, 1);
    expect([q4.packHeads, q4.segTokens, q4.qSegments, q4.segTiles, q4.rowTiles]).toEqual([4, 4, 4, Math.ceil(16 / bm), 4 * Math.ceil(16 / bm)]);
    const perHead = planDecode({ ...s, maxQueryTokens: 3, blockSparse: { qBlock: 2, perHead: true } }, H100, 1);
    expect([perHead.packHeads, perHead.qSegments, perHead.segTiles, perHead.rowTiles]).toEqual([1, 2, 1, 4 * 2 * 1]);
    expect(perHead.gridX).toBe(2 * 8 * perHead.rowTiles);
  });
});
