// The GPU kernels' 64x64 schedule (createBlockMask on a CUDA device classifies at
// 64x64 and derives the requested blocks from it): the derived classes must be
// exactly what classifying at the requested size gives, and a mask only hands
// its schedule to a kernel whose tile and mask params match.
import { describe, expect, it } from 'vitest';
import { BlockMask, createBlockMask } from '../lib/blockmask.js';
import { coarsenClasses, EMPTY, FULL, PARTIAL } from '../lib/blockmask/layout.js';
import { andMasks, causal, documentMask, imageBlocks, notMask, orMasks, prefixLM, slidingWindow } from '../lib/mods/builtins.js';
import { maskMod, param, type MaskMod } from '../lib/mods/ir.js';
import { mulberry32, randomMod } from './random-mods.js';
import { Tensor } from '../lib/tensor.js';

const cpu = { device: 'cpu' as const };

async function derivedMatchesDirect(mask: MaskMod, B: number, H: number, qLen: number, kvLen: number,
  bq: number, bkv: number, params?: Record<string, number>): Promise<void> {
  const opts = { device: 'cpu' as const, ...(params ? { params } : {}) };
  const fine = await createBlockMask(mask, B, H, qLen, kvLen, { ...opts, blockSize: 64 });
  const direct = await createBlockMask(mask, B, H, qLen, kvLen, { ...opts, blockSize: [bq, bkv] });
  const f = fine.classes(), want = direct.classes();
  const G = f.length / (fine.numQBlocks * fine.numKvBlocks);
  const got = coarsenClasses(f, G, fine.numQBlocks, fine.numKvBlocks, bq / 64, bkv / 64);
  // Both grids cover every (b, h) here: B·H planes, or one plane when the mask ignores b and h.
  expect(want.length % got.length === 0 || got.length % want.length === 0).toBe(true);
  const planes = Math.max(got.length, want.length) / (direct.numQBlocks * direct.numKvBlocks);
  const at = (g: Uint8Array, i: number) => g[i % g.length]!;
  for (let i = 0; i < planes * direct.numQBlocks * direct.numKvBlocks; i++) {
    if (at(got, i) !== at(want, i)) {
      throw new Error(`${mask} q${qLen} kv${kvLen} [${bq},${bkv}]: block ${i} derived ${at(got, i)} direct ${at(want, i)}`);
    }
  }
}

describe('64x64 kernel schedule', () => {
  it('coarsenClasses: full iff all children full, empty iff all empty, missing children empty', () => {
    // fine plane 3 x 3 (last row/column are the sequence end), coarsened 2 x 2
    const fine = Uint8Array.from([FULL, FULL, FULL, FULL, FULL, EMPTY, EMPTY, EMPTY, EMPTY]);
    expect(Array.from(coarsenClasses(fine, 1, 3, 3, 2, 2))).toEqual([FULL, PARTIAL, EMPTY, EMPTY]);
    const two = Uint8Array.from([FULL, PARTIAL, EMPTY, EMPTY, /* plane 2 */ EMPTY, EMPTY, EMPTY, EMPTY]);
    expect(Array.from(coarsenClasses(two, 2, 2, 2, 2, 1))).toEqual([PARTIAL, PARTIAL, EMPTY, EMPTY]);
  });

  it('derived classes equal direct classification: built-ins, ragged lengths, rectangular blocks', async () => {
    const r = mulberry32(5);
    const ids = new Int32Array(2 * 1000);
    for (let b = 0; b < 2; b++) { let d = 0; for (let s = 0; s < 1000; s++) { if (r() < 0.01) d++; ids[b * 1000 + s] = d; } }
    const docs = Tensor.fromHost(ids, [2, 1000], 'i32', cpu);
    const masks: [MaskMod, number][] = [
      [causal(), 1], [slidingWindow(100), 1], [prefixLM(50), 1], [documentMask(docs), 2],
      [documentMask(docs, { causal: false }), 2], [andMasks(causal(), notMask(slidingWindow(40))), 1],
      [orMasks(prefixLM(200), slidingWindow(30)), 1],
      [imageBlocks([{ start: 100, length: 256 }, { start: 500, length: 300 }], { seqLen: 1000 }), 1],
    ];
    for (const [m, B] of masks) {
      for (const [qLen, kvLen] of [[1000, 1000], [1000, 777], [65, 1000], [1, 1000]] as const) {
        for (const [bq, bkv] of [[128, 128], [128, 64], [64, 128], [256, 128]] as const) {
          await derivedMatchesDirect(m, B, 2, qLen, kvLen, bq, bkv);
        }
      }
    }
    docs.dispose();
  });

  it('derived classes equal direct classification: 15 random mask mods with params', async () => {
    const r = mulberry32(99);
    for (let i = 0; i < 15; i++) {
      const { mod, params } = randomMod(r, { kind: 'mask', depth: 3 + (i % 3), tensors: false });
      await derivedMatchesDirect(mod as MaskMod, 1, 2, 300 + 37 * i, 250 + 29 * i, 128, 128, params);
    }
  });

  it('a mask hands its schedule only to a matching tile and the creation params; built once, on first use', () => {
    const m = maskMod(({ q, kv }) => q.sub(kv).abs().le(param('w', 'int')));
    const grid = Uint8Array.from([FULL, PARTIAL, EMPTY, FULL]);
    const bm = BlockMask.fromClasses(Uint8Array.from([PARTIAL]), {
      dims: { B: 1, H: 1, QB: 1, KVB: 1 }, qLen: 128, kvLen: 128, blockSize: [128, 128], maskMod: m, device: 'cpu', method: 'cpu',
      fine: { grid, dims: { B: 1, H: 1, QB: 2, KVB: 2 }, blockSize: [64, 64], method: 'cpu' }, params: { w: 3 },
    });
    const s = bm.kernelSchedule(64, 64, { w: 3 });
    expect(s?.blockSize).toEqual([64, 64]);
    expect(Array.from(s!.classes())).toEqual(Array.from(grid));
    expect(bm.kernelSchedule(64, 64, { w: 3 })).toBe(s);            // cached
    expect(bm.kernelSchedule(64, 64, { w: 4 })).toBeUndefined();   // blocks were listed for w = 3
    expect(bm.kernelSchedule(64, 128, { w: 3 })).toBeUndefined();  // another tile
    expect(bm.to('cpu').kernelSchedule(64, 64, { w: 3 })?.blockSize).toEqual([64, 64]);
    expect(bm.slice(0, 0).kernelSchedule(64, 64, { w: 3 })).toBeUndefined(); // a new mask mod
    expect(bm.and(bm).kernelSchedule(64, 64, { w: 3 })).toBeUndefined();
    // An analytic mask's fine grid is computed on first use, once.
    let calls = 0;
    const lazy = BlockMask.fromClasses(Uint8Array.from([PARTIAL]), {
      dims: { B: 2, H: 1, QB: 1, KVB: 1 }, qLen: 128, kvLen: 128, blockSize: [128, 128], maskMod: m, device: 'cpu', method: 'analytic',
      fine: { grid: () => { calls++; return grid; }, dims: { B: 2, H: 1, QB: 2, KVB: 2 }, blockSize: [64, 64], method: 'analytic' },
      params: { w: 3 },
    });
    expect(calls).toBe(0);
    const ls = lazy.kernelSchedule(64, 64, { w: 3 })!;
    expect(lazy.kernelSchedule(64, 64, { w: 3 })).toBe(ls);
    expect(calls).toBe(1);
    expect(Array.from(ls.classes())).toEqual([...grid, ...grid]);   // one plane, repeated over B
  });
});
