// The decode kernel's launch planning (lib/cuda/plan-decode.ts), without a GPU:
// split-KV counts from the SM count and the shape, row tiles for GQA packing,
// and when flex / SDPA calls take the decode kernel.
import { describe, expect, it } from 'vitest';
import { explainAttention } from '../lib/index.js';
import {
  DECODE_HEAD_DIMS, DECODE_MAX_QUERY, DECODE_MAX_SPLITS, DECODE_TILE, decodeRoute, decodeSplits, planDecode,
} from '../lib/cuda/plan-decode.js';

const H100 = { smCount: 132, smemPerBlockOptin: 227 * 1024 };

describe('decodeSplits', () => {
  const base = { smCount: 132, blockN: 64 };
  // One CTA per SM per wave: on an H100 (132 SMs) the split sweep of the decode kernel measured
  // 16 splits best for B1 Hkv8 Skv128k (8 CTAs) and 2 for B8 Hkv8 Skv32k (64 CTAs).
  it('splits a long single sequence across the whole GPU, one CTA per SM (B1 Hkv8 Skv128k: 8 CTAs)', () => {
    const s = decodeSplits({ ...base, ctas: 8, maxKvLen: 131072 });
    expect(s).toBe(16);
    expect(8 * s).toBeLessThanOrEqual(132);
  });
  it('splits B8 Hkv8 Skv32k (64 CTAs) into one wave of one CTA per SM', () => {
    expect(decodeSplits({ ...base, ctas: 64, maxKvLen: 32768 })).toBe(2);
  });
  it('counts two CTAs per SM in a wave for pages smaller than a kv tile (page-table latency)', () => {
    expect(decodeSplits({ ...base, ctasPerWave: 2, ctas: 64, maxKvLen: 32768 })).toBe(4);
    const s = { numSeqs: 8, Hq: 32, Hkv: 8, D: 128, maxQueryTokens: 1, maxSeqLen: 32768 };
    expect(planDecode({ ...s, pageSize: 16 }, H100).numSplits).toBe(4);
    expect(planDecode({ ...s, pageSize: 64 }, H100).numSplits).toBe(2);
    expect(planDecode(s, H100).numSplits).toBe(2);
  });
  it('does not split a launch that already fills the GPU (B64 Hkv8 Skv4k; MHA B8 Hkv32 Skv8k)', () => {
    expect(decodeSplits({ ...base, ctas: 512, maxKvLen: 4096 })).toBe(1);
    expect(decodeSplits({ ...base, ctas: 256, maxKvLen: 8192 })).toBe(1);
  });
  it('never splits finer than one kv tile per split, nor short sequences', () => {
    expect(decodeSplits({ ...base, ctas: 1, maxKvLen: 64 * 5 })).toBeLessThanOrEqual(5);
    expect(decodeSplits({ ...base, ctas: 1, maxKvLen: 64 })).toBe(1);
    expect(decodeSplits({ ...base, ctas: 1, maxKvLen: 0 })).toBe(1);
    expect(decodeSplits({ ...base, ctas: 1, maxKvLen: 1 })).toBe(1);
    expect(decodeSplits({ ...base, ctas: 1, maxKvLen: 2 ** 28 })).toBe(DECODE_MAX_SPLITS);
  });
  it('is 1 without an SM count', () => {
    expect(decodeSplits({ ...base, smCount: 0, ctas: 1, maxKvLen: 100000 })).toBe(1);
  });
  it('prefers fewer splits on a smaller GPU', () => {
    const big = decodeSplits({ ...base, ctas: 8, maxKvLen: 131072 });
    const small = decodeSplits({ ...base, smCount: 16, ctas: 8, maxKvLen: 131072 });
    expect(small).toBeLessThan(big);
  });
});

describe('planDecode', () => {
  it('packs the G query heads of a KV head and the query tokens into BLOCK_M-row tiles', () => {
    const bm = DECODE_TILE[128]!.BM;
    const p = (m: number, Hq: number, Hkv: number) =>
      planDecode({ numSeqs: 3, Hq, Hkv, D: 128, maxQueryTokens: m, maxSeqLen: 100 }, H100, 1);
    expect(p(1, 32, 8).rowTiles).toBe(1);                       // 4 rows
    expect(p(4, 32, 8).rowTiles).toBe(Math.ceil(16 / bm));      // 16 rows
    expect(p(16, 32, 4).rowTiles).toBe(Math.ceil(128 / bm));    // GQA 8 x 16 tokens
    expect(p(5, 8, 8).rowTiles).toBe(Math.ceil(5 / bm));        // MHA
    expect(p(600, 32, 8).rowTiles).toBe(Math.ceil(2400 / bm));  // chunked prefill
    const q = p(16, 32, 4);
    expect(q.gridX).toBe(3 * 4 * q.rowTiles);
    expect(q.combineGridX).toBe(q.gridX);
  });
  it('takes a forced split count (clamped) and otherwise plans one from the device', () => {
    const s = { numSeqs: 1, Hq: 32, Hkv: 8, D: 128, maxQueryTokens: 1, maxSeqLen: 131072 };
    expect(planDecode(s, H100, 7).numSplits).toBe(7);
    expect(planDecode(s, H100, 1000).numSplits).toBe(DECODE_MAX_SPLITS);
    expect(planDecode(s, H100, 0).numSplits).toBe(1);
    const auto = planDecode(s, H100);
    expect(auto.numSplits).toBeGreaterThan(8);
    expect(auto.gridX).toBe(8 * auto.numSplits);
    expect(auto.combineGridX).toBe(8);
  });
  it('has a tile for every decode head dim', () => {
    expect(DECODE_HEAD_DIMS).toEqual([64, 128]);
    expect(() => planDecode({ numSeqs: 1, Hq: 1, Hkv: 1, D: 96, maxQueryTokens: 1, maxSeqLen: 1 }, H100, 0)).toThrow(/no decode tile for head dim 96/);
  });
});

describe('decodeRoute', () => {
  const ok = { Sq: 1, D: 128, Dv: 128, dtype: 'bf16', blockMask: false, kernelOptions: false, disabled: false };
  it(`takes the decode kernel for Sq <= ${DECODE_MAX_QUERY}, with or without a block mask`, () => {
    for (const Sq of [1, 4, 16]) expect(decodeRoute({ ...ok, Sq }).decode).toBe(true);
    expect(decodeRoute({ ...ok, blockMask: true })).toMatchObject({ decode: true, reason: expect.stringMatching(/block mask's kv block lists/) });
    expect(decodeRoute(ok).reason).not.toMatch(/block mask/);
    expect(decodeRoute({ ...ok, D: 64, Dv: 64, dtype: 'f16' }).decode).toBe(true);
    expect(decodeRoute(ok).reason).toMatch(/decode kernel/);
  });
  it('keeps the forward kernels otherwise, saying why', () => {
    const cases: [Partial<typeof ok>, RegExp][] = [
      [{ Sq: 17 }, /Sq = 17 > 16/], [{ Sq: 17, blockMask: true }, /Sq = 17 > 16/], [{ kernelOptions: true }, /kernelOptions/],
      [{ D: 96, Dv: 96 }, /head dim 96/], [{ Dv: 64 }, /128\/64/], [{ dtype: 'f32' }, /f32/], [{ disabled: true }, /FLEXATTN_DECODE=0/],
    ];
    for (const [c, why] of cases) {
      const r = decodeRoute({ ...ok, ...c });
      expect(r.decode).toBe(false);
      expect(r.reason).toMatch(why);
    }
  });
});

describe('explainAttention with shapes', () => {
  it('names the decode kernel for few query tokens, flex block masks included', () => {
    const shapes = (Sq: number, D = 128) => ({ q: [2, 32, Sq, D], k: [2, 8, 4096, D] });
    expect(explainAttention({ enableGQA: true }, shapes(1))).toMatchObject({ kernel: 'decode', reason: expect.stringMatching(/decode kernel/) });
    expect(explainAttention({ impl: 'flex', softcap: 30, enableGQA: true }, shapes(16)).kernel).toBe('decode');
    expect(explainAttention({ enableGQA: true }, shapes(17))).toMatchObject({ kernel: 'forward', reason: expect.stringMatching(/Sq = 17/) });
    expect(explainAttention({ enableGQA: true }, shapes(1, 96)).kernel).toBe('forward');
    expect(explainAttention({ impl: 'flex', enableGQA: true, slidingWindow: 64 }, shapes(1)))
      .toMatchObject({ kernel: 'decode', reason: expect.stringMatching(/walks the block mask's kv block lists/) });
    expect(explainAttention({ impl: 'flex', enableGQA: true, slidingWindow: 64 }, shapes(17)).kernel).toBe('forward');
    expect(explainAttention({ enableGQA: true })).not.toHaveProperty('kernel');
    expect(explainAttention({ enableGQA: true, backend: 'cpu' }, shapes(1))).not.toHaveProperty('kernel');
  });
});
