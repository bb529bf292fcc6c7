// Segmented kernel grid for document masks (lib/cuda/schedules/segments.ts): which
// masks give one, where its tiles start, and that its schedule covers exactly
// the mask (every kept pair once, full tiles all kept) the way the kernel walks
// it: query tile i = rows [st[i], st[i+1]), a kv list entry e = columns
// [e >> 7, (e >> 7) + (e & 127)) (the arrays the launch passes, decoded here).
import { describe, expect, it } from 'vitest';
import { BlockMask, createBlockMask } from '../lib/blockmask.js';
import { hostMaskFn } from '../lib/blockmask/mods-adapter.js';
import {
  buildSegmentedSchedule, segmentStarts, type SegmentedSchedule, type TileEvaluator,
} from '../lib/cuda/schedules/segments.js';
import { documentIds, maskWithinSegments } from '../lib/mods/transform.js';
import {
  andMasks, causal, docIdsFromOffsets, documentMask, notMask, orMasks, slidingWindow,
} from '../lib/mods/builtins.js';
import { maskMod, type MaskMod } from '../lib/mods/ir.js';
import { mulberry32 } from './random-mods.js';
import { Tensor } from '../lib/tensor.js';

const cpu = { device: 'cpu' as const };

function ids2d(rows: number[][]): Tensor {
  const S = rows[0]!.length;
  return Tensor.fromHost(Int32Array.from(rows.flat()), [rows.length, S], 'i32', cpu);
}

/** Host classification of segmented tiles (what the GPU kernel computes). */
async function cpuEvaluator(mod: MaskMod): Promise<TileEvaluator> {
  const fn = await hostMaskFn(mod);
  return async (tiles, st, b) => {
    const nM = st.length - 1;
    return Uint8Array.from(tiles, (t) => {
      const i = Math.floor(t / nM), j = t % nM;
      let anyT = false, anyF = false;
      for (let q = st[i]!; q < st[i + 1]!; q++) for (let kv = st[j]!; kv < st[j + 1]!; kv++) (fn(b, 0, q, kv) ? (anyT = true) : (anyF = true));
      return anyT ? (anyF ? 1 : 2) : 0;
    });
  };
}

/** Checks the kernel's walk of a segmented schedule against the mask, pair by pair. */
async function expectExactCover(mod: MaskMod, B: number, S: number, sched: SegmentedSchedule,
  want: Int32Array): Promise<void> {
  const fn = await hostMaskFn(mod);
  // the mask the segmented kernel evaluates (ids conjunct dropped) equals the mask on every listed tile
  const within = await hostMaskFn(sched.maskMod);
  const { mask, nM } = sched;
  const t = sched.tensors();
  const starts = (await t.starts.toHost()) as Int32Array;
  expect(Array.from(starts)).toEqual(Array.from(want));
  const h = { kvNumBlocks: mask.host.kvNumBlocks, fullKvNumBlocks: mask.host.fullKvNumBlocks,
    kvIndices: (await t.kvIndices.toHost()) as Int32Array, fullKvIndices: (await t.fullKvIndices.toHost()) as Int32Array };
  for (let b = 0; b < B; b++) {
    const r = mask.B === 1 ? 0 : b;
    const st = starts.subarray(r * (nM + 1), (r + 1) * (nM + 1));
    const cover = new Uint8Array(S * S);
    for (let i = 0; i < nM; i++) {
      const row = r * nM + i;
      for (const [num, idx, full] of [[h.fullKvNumBlocks, h.fullKvIndices, true], [h.kvNumBlocks, h.kvIndices, false]] as const) {
        for (let k = 0; k < num[row]!; k++) {
          const e = idx[row * nM + k]!, k0 = e >> 7, k1 = k0 + (e & 127);
          expect(k1 - k0).toBeGreaterThan(0);
          expect(k1 - k0).toBeLessThanOrEqual(64);
          for (let q = st[i]!; q < st[i + 1]!; q++) {
            for (let kv = k0; kv < k1; kv++) {
              const keep = fn(b, 0, q, kv);
              if (within(b, 0, q, kv) !== keep) throw new Error(`b${b} (${q}, ${kv}): the grid's mask ${String(sched.maskMod)} gives ${!keep}`);
              if (full && !keep) throw new Error(`b${b} tile (${i}, ${k0}) listed full but (${q}, ${kv}) is masked`);
              if (keep) cover[q * S + kv]!++;
            }
          }
        }
      }
    }
    for (let q = 0; q < S; q++) {
      for (let kv = 0; kv < S; kv++) {
        const want = fn(b, 0, q, kv) ? 1 : 0;
        if (cover[q * S + kv] !== want) throw new Error(`b${b} (${q}, ${kv}) covered ${cover[q * S + kv]} times, want ${want}`);
      }
    }
  }
}

/** The segmented schedule as the launch builds it (`always`: regardless of the cost rule). */
async function schedule(mod: MaskMod, B: number, S: number, always = false) {
  const fine = await createBlockMask(mod, B, 1, S, S, { ...cpu, blockSize: 64 });
  const bm = await createBlockMask(mod, B, 1, S, S, cpu);
  const seg = await buildSegmentedSchedule(bm, fine, {}, -1, { evaluateTiles: await cpuEvaluator(mod), always });
  return { seg, fine, bm };
}

describe('segmented grid for document masks', () => {
  it('documentIds finds an ids[q] == ids[kv] conjunct of the top-level AND only', () => {
    const ids = ids2d([[0, 0, 1, 1], [0, 1, 1, 1]]);
    const flat = Tensor.fromHost(Int32Array.from([0, 0, 1, 1]), [4], 'i32', cpu);
    expect(documentIds(documentMask(ids))).toBe(ids);
    expect(documentIds(documentMask(flat, { causal: false }))).toBe(flat);
    expect(documentIds(andMasks(slidingWindow(100), documentMask(ids)))).toBe(ids);
    expect(documentIds(maskMod(({ b, q, kv }) => ids.at(b, kv).eq(ids.at(b, q))))).toBe(ids);
    expect(documentIds(orMasks(documentMask(ids), causal()))).toBeNull();
    expect(documentIds(notMask(documentMask(ids)))).toBeNull();
    expect(documentIds(causal())).toBeNull();
    const other = ids2d([[0, 0, 0, 0], [1, 1, 1, 1]]);
    expect(documentIds(maskMod(({ b, q, kv }) => ids.at(b, q).eq(other.at(b, kv))))).toBeNull();
    expect(documentIds(maskMod(({ b, q, kv }) => ids.at(b, q).eq(ids.at(b, q).add(kv.mul(0)))))).toBeNull();
  });

  it('maskWithinSegments drops the ids conjunct wherever it occurs and keeps the rest', () => {
    const ids = ids2d([[0, 0, 1, 1], [0, 1, 1, 1]]);
    const noLoads = (m: MaskMod) => m.ir.nodes.every((n) => n.op !== 'load');
    const doc = maskWithinSegments(documentMask(ids))!;
    expect(String(doc)).toBe(String(causal()));
    expect(noLoads(doc)).toBe(true);
    const nonCausal = maskWithinSegments(documentMask(ids, { causal: false }))!;
    expect(nonCausal.ir.nodes).toHaveLength(1);
    expect(nonCausal.ir.nodes[0]).toMatchObject({ op: 'const', type: 'bool', value: 1 });
    const win = maskWithinSegments(andMasks(slidingWindow(100), documentMask(ids)))!;
    expect(noLoads(win)).toBe(true);
    expect(String(win)).toContain('100');
    // other captured data stays; the conjunct inside an OR is the same node, true on the grid too
    const keepIds = ids2d([[1, 0, 1, 1], [0, 0, 0, 1]]);
    const mixed = maskMod(({ b, q, kv }) => {
      const eq = ids.at(b, q).eq(ids.at(b, kv));
      return eq.and(keepIds.at(b, kv).eq(1)).and(eq.or(q.lt(2)));
    });
    const w = maskWithinSegments(mixed)!;
    expect(w.tensors).toEqual([keepIds]);
    expect(maskWithinSegments(causal())).toBeNull();
    expect(maskWithinSegments(orMasks(documentMask(ids), causal()))).toBeNull();
  });

  it('segmentStarts: tiles restart at every id change, rows padded with S, clamped id reads', () => {
    const ids = Int32Array.from([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, /* row 1 */ 5, 5, 5, 5, 5, 5, 5, 5, 5, 5]);
    const { starts, nM } = segmentStarts(ids, [2, 10], 2, 10, 4);
    expect(nM).toBe(4);
    expect(Array.from(starts)).toEqual([0, 4, 6, 9, 10, /* row 1 */ 0, 4, 8, 10, 10]);
    // ids shorter than S: positions past the end read the last id (one more run of it)
    const short = segmentStarts(Int32Array.from([0, 1]), [2], 1, 7, 4);
    expect(Array.from(short.starts)).toEqual([0, 1, 5, 7]);
    // one row of ids serves every batch row
    const bcast = segmentStarts(Int32Array.from([0, 0, 1]), [1, 3], 2, 3, 4);
    expect(Array.from(bcast.starts)).toEqual([0, 2, 3, 0, 2, 3]);
  });

  it('covers the mask exactly: odd documents, documents shorter than a tile, ids that repeat, B=2', async () => {
    const S = 700;
    const a = docIdsFromOffsets([0, 1, 64, 129, 200, 263, 500, 517], S);
    for (let p = 600; p < 650; p++) a[p] = 2;      // id 2 again, far from its first run
    const b = docIdsFromOffsets([0, 300, 301, 333], S);
    const ids = ids2d([Array.from(a), Array.from(b)]);
    const sparse = maskMod(({ kv }) => kv.mod(3).ne(1));
    for (const mod of [documentMask(ids), documentMask(ids, { causal: false }), andMasks(documentMask(ids), slidingWindow(90)),
      andMasks(sparse, documentMask(ids))]) {
      const { seg } = await schedule(mod, 2, S, true);
      expect(seg, String(mod)).not.toBeNull();
      const { starts } = segmentStarts(Int32Array.from([...a, ...b]), [2, S], 2, S);
      await expectExactCover(mod, 2, S, seg!, starts);
    }
  });

  it('random documents: exact cover', async () => {
    const r = mulberry32(9);
    for (let trial = 0; trial < 3; trial++) {
      const S = 300 + Math.floor(r() * 500);
      const rows = [0, 1].map(() => { let d = 0; return Array.from({ length: S }, () => (r() < 0.008 ? ++d : d)); });
      const ids = ids2d(rows);
      const mod = documentMask(ids);
      const { seg } = await schedule(mod, 2, S, true);
      const { starts } = segmentStarts(Int32Array.from(rows.flat()), [2, S], 2, S);
      await expectExactCover(mod, 2, S, seg!, starts);
    }
  });

  it('no segmented grid: masks without document ids, documents on tile boundaries, one id per token', async () => {
    const S = 256;
    expect((await schedule(causal(), 1, S, true)).seg).toBeNull();
    const aligned = ids2d([Array.from(docIdsFromOffsets([0, 64, 192], S))]);
    expect((await schedule(documentMask(aligned), 1, S, true)).seg).toBeNull();
    const perToken = ids2d([Array.from({ length: S }, (_, i) => i)]);
    expect((await schedule(documentMask(perToken), 1, S, true)).seg).toBeNull();
    // a window narrower than two tiles: the segmented grid costs more than it saves
    const docs = ids2d([Array.from(docIdsFromOffsets([0, 100, 190], S))]);
    expect((await schedule(andMasks(documentMask(docs), slidingWindow(40)), 1, S)).seg).toBeNull();
    // a mask made for every batch (B = 1) from ids that differ per batch row
    const two = ids2d([Array.from(docIdsFromOffsets([0, 100, 190], S)), Array.from(docIdsFromOffsets([0, 30], S))]);
    expect((await schedule(documentMask(two), 1, S, true)).seg).toBeNull();
  });

  it('documents like the benchmark\'s: chosen, with fewer computed and partial tiles than the uniform grid', async () => {
    const S = 2048;
    const ids = ids2d([Array.from(docIdsFromOffsets([0, 257, 503, 1223, 1800], S))]);
    const mod = documentMask(ids);
    const { seg, fine } = await schedule(mod, 1, S);
    expect(seg).not.toBeNull();
    const count = (m: BlockMask) => m.host.kvNumBlocks.reduce((x, y) => x + y, 0) + m.host.fullKvNumBlocks.reduce((x, y) => x + y, 0);
    const partial = (m: BlockMask) => m.host.kvNumBlocks.reduce((x, y) => x + y, 0);
    expect(count(seg!.mask)).toBeLessThan(count(fine));
    expect(partial(seg!.mask)).toBeLessThan(partial(fine));
  });
});
