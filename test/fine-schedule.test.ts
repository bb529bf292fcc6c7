// The Hopper kernels' 64x64 schedule (lib/cuda/schedules/fine.ts), derived from
// a block mask on the first launch that walks it: it must list exactly the
// mask's positions (equal to classifying at 64x64 directly, and coarsening back
// to the mask's own classes), be made once per (mask, params), live beside the
// mask rather than on it, and free its device arrays when the mask is disposed.
import { describe, expect, it } from 'vitest';
import { BlockMask, createBlockMask } from '../lib/blockmask.js';
import { EMPTY, FULL, PARTIAL } from '../lib/blockmask/layout.js';
import { maskFacts } from '../lib/cuda/plan.js';
import { builtFineSchedule, fineSchedule } from '../lib/cuda/schedules/fine.js';
import { andMasks, causal, documentMask, imageBlocks, notMask, orMasks, prefixLM, slidingWindow } from '../lib/mods/builtins.js';
import { maskMod, param, type MaskMod } from '../lib/mods/ir.js';
import { mulberry32, randomMod } from './random-mods.js';
import { Tensor } from '../lib/tensor.js';
import { coarsenClasses } from './block-classes.js';

const cpu = { device: 'cpu' as const };

/** The class of block i of grid g, where a grid of one plane broadcasts over every (b, h). */
const at = (g: Uint8Array, i: number) => g[i % g.length]!;

async function scheduleMatchesDirect(mask: MaskMod, B: number, H: number, qLen: number, kvLen: number,
  bq: number, bkv: number, params: Record<string, number> = {}): Promise<void> {
  const opts = { ...cpu, params };
  const bm = await createBlockMask(mask, B, H, qLen, kvLen, { ...opts, blockSize: [bq, bkv] });
  const direct = await createBlockMask(mask, B, H, qLen, kvLen, { ...opts, blockSize: 64 });
  const fine = await fineSchedule(bm, params, -1, () => mask);
  const label = `${mask} q${qLen} kv${kvLen} [${bq},${bkv}]`;
  expect(fine.blockSize, label).toEqual([64, 64]);
  expect([fine.B, fine.H, fine.numQBlocks, fine.numKvBlocks], label).toEqual([B, H, direct.numQBlocks, direct.numKvBlocks]);
  const f = fine.classes(), want = direct.classes();
  const n = B * H * fine.numQBlocks * fine.numKvBlocks;
  for (let i = 0; i < n; i++) {
    if (at(f, i) !== at(want, i)) throw new Error(`${label}: 64x64 block ${i} scheduled ${at(f, i)}, direct ${at(want, i)}`);
  }
  // ... and coarsened back it is the mask's own classes.
  const back = coarsenClasses(f, B * H, fine.numQBlocks, fine.numKvBlocks, bq / 64, bkv / 64);
  const own = bm.classes();
  for (let i = 0; i < own.length; i++) {
    if (at(back, i) !== at(own, i)) throw new Error(`${label}: block ${i} coarsened ${at(back, i)}, mask ${at(own, i)}`);
  }
}

describe('64x64 kernel schedule', () => {
  it('coarsenClasses (the oracle): full iff all children full, empty iff all empty, missing children empty', () => {
    // fine plane 3 x 3 (last row/column are the sequence end), coarsened 2 x 2
    const fine = Uint8Array.from([FULL, FULL, FULL, FULL, FULL, EMPTY, EMPTY, EMPTY, EMPTY]);
    expect(Array.from(coarsenClasses(fine, 1, 3, 3, 2, 2))).toEqual([FULL, PARTIAL, EMPTY, EMPTY]);
    const two = Uint8Array.from([FULL, PARTIAL, EMPTY, EMPTY, /* plane 2 */ EMPTY, EMPTY, EMPTY, EMPTY]);
    expect(Array.from(coarsenClasses(two, 2, 2, 2, 2, 1))).toEqual([PARTIAL, PARTIAL, EMPTY, EMPTY]);
  });

  it('equals direct 64x64 classification: built-ins, document masks, ragged lengths, rectangular blocks', async () => {
    const r = mulberry32(5);
    const ids = new Int32Array(2 * 1000);
    for (let b = 0; b < 2; b++) { let d = 0; for (let s = 0; s < 1000; s++) { if (r() < 0.01) d++; ids[b * 1000 + s] = d; } }
    const docs = Tensor.fromHost(ids, [2, 1000], 'i32', cpu);
    const masks: [MaskMod, number][] = [
      [causal(), 1], [slidingWindow(100), 1], [prefixLM(50), 1], [documentMask(docs), 2],
      [documentMask(docs, { causal: false }), 2], [andMasks(causal(), notMask(slidingWindow(40))), 1],
      [orMasks(prefixLM(200), slidingWindow(30)), 1],
      [imageBlocks([{ start: 100, length: 256 }, { start: 500, length: 300 }], { seqLen: 1000 }), 1],
      // reads h: one plane per head
      [maskMod(({ h, q, kv }) => kv.le(q).and(q.sub(kv).lt(h.add(1).mul(70)))), 1],
    ];
    for (const [m, B] of masks) {
      for (const [qLen, kvLen] of [[1000, 1000], [1000, 777], [65, 1000], [1, 1000]] as const) {
        for (const [bq, bkv] of [[128, 128], [128, 64], [64, 128], [256, 128]] as const) {
          await scheduleMatchesDirect(m, B, 2, qLen, kvLen, bq, bkv);
        }
      }
    }
    docs.dispose();
  });

  it('equals direct 64x64 classification: 15 random mask mods with params', async () => {
    const r = mulberry32(99);
    for (let i = 0; i < 15; i++) {
      const { mod, params } = randomMod(r, { kind: 'mask', depth: 3 + (i % 3), tensors: false });
      await scheduleMatchesDirect(mod as MaskMod, 1, 2, 300 + 37 * i, 250 + 29 * i, 128, 128, params);
    }
  });

  it('made once per (mask, params), kept beside the mask, never on it; a failed build is retried', async () => {
    const w = maskMod(({ q, kv }) => q.sub(kv).abs().le(param('w', 'int')));
    const bm = await createBlockMask(w, 1, 1, 300, 300, { ...cpu, params: { w: 3 } });
    expect(builtFineSchedule(bm, { w: 3 })).toBeUndefined();
    const s = await fineSchedule(bm, { w: 3 }, -1, () => w);
    expect(await fineSchedule(bm, { w: 3 }, -1, () => w)).toBe(s);
    expect(builtFineSchedule(bm, { w: 3 })).toBe(s);
    expect(builtFineSchedule(bm, { w: 4 })).toBeUndefined();
    // the mask itself carries no schedule: a copy on another device derives its own
    expect(builtFineSchedule(bm.to('cpu'), { w: 3 })).toBeUndefined();
    expect(Object.keys(bm).some((k) => /fine|schedule/i.test(k))).toBe(false);
    // a rejected build is not cached
    const other = await createBlockMask(w, 1, 1, 300, 300, { ...cpu, params: { w: 5 } });
    await expect(fineSchedule(other, { w: 5 }, -1, () => { throw new Error('read failed'); })).rejects.toThrow('read failed');
    expect(builtFineSchedule(other, { w: 5 })).toBeUndefined();
    const again = await fineSchedule(other, { w: 5 }, -1, () => w);
    expect(again.blockSize).toEqual([64, 64]);
  });

  it('only masks whose classes are their mod\'s at the call params may derive one (the plan\'s mask facts)', async () => {
    const w = maskMod(({ q, kv }) => q.sub(kv).abs().le(param('w', 'int')));
    const bm = await createBlockMask(w, 1, 1, 300, 300, { ...cpu, params: { w: 3 } });
    expect(maskFacts(bm, { w: 3 }).classesExact).toBe(true);
    expect(maskFacts(bm, { w: 4 }).classesExact).toBe(false);     // blocks were listed for w = 3
    expect(maskFacts(bm.to('cpu'), { w: 3 }).classesExact).toBe(true);
    expect(maskFacts(bm.slice(0, 0), { w: 3 }).classesExact).toBe(false);
    expect(maskFacts(bm.and(bm), { w: 3 }).classesExact).toBe(false);
    const kv = await BlockMask.fromKvBlocks({ data: Int32Array.from([1]), shape: [1, 1, 1] }, { data: Int32Array.from([0]), shape: [1, 1, 1, 1] },
      null, null, { maskMod: causal(), ...cpu });
    expect(maskFacts(kv, {}).classesExact).toBe(false);
    const c = await createBlockMask(causal(), 2, 1, 300, 300, cpu);
    expect(maskFacts(c, {})).toMatchObject({ classesExact: true, readsData: false, modParams: 0, B: 2, H: 1, blockSize: [128, 128] });
  });

  it('the schedule\'s device arrays go when the mask is disposed, and come back on the next use', async () => {
    const ids = Tensor.fromHost(Int32Array.from({ length: 500 }, (_, i) => Math.floor(i / 90)), [500], 'i32', cpu);
    const m = documentMask(ids);
    const bm = await createBlockMask(m, 1, 1, 500, 500, cpu);
    const fine = await fineSchedule(bm, {}, -1, () => m);
    const t = fine.kvIndices;
    expect(t.disposed).toBe(false);
    bm.dispose();
    expect(t.disposed).toBe(true);
    expect(await fineSchedule(bm, {}, -1, () => m)).toBe(fine);   // the host lists stay cached
    expect(Array.from((await fine.kvIndices.toHost()) as Int32Array)).toEqual(Array.from(fine.host.kvIndices));
    bm.dispose();
    ids.dispose();
  });
});
