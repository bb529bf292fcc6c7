// Block-class helpers for tests: coarsening a 64x64 class grid to larger
// blocks, the oracle a finer schedule is checked against (a coarse block is
// full iff its children are, empty iff all are).
import { EMPTY, FULL, PARTIAL } from '../lib/blockmask/layout.js';

/**
 * Coarsens a class grid of `G` planes [QB, KVB] (fine blocks) by `rq × rk`
 * into planes [ceil(QB / rq), ceil(KVB / rk)]: a coarse block is full iff all
 * its children are, empty iff all are; children past the grid's end count as
 * empty (positions past the sequence end are masked), so a coarse block at the
 * end is never full — exactly what classifying at the coarse size gives.
 */
export function coarsenClasses(fine: Uint8Array, G: number, QB: number, KVB: number, rq: number, rk: number): Uint8Array {
  const cQB = Math.ceil(QB / rq), cKVB = Math.ceil(KVB / rk);
  const out = new Uint8Array(G * cQB * cKVB);
  // One pass over each fine row, and-ing "all full" / "all empty" into the coarse row.
  const allFull = new Uint8Array(cKVB), allEmpty = new Uint8Array(cKVB);
  for (let g = 0; g < G; g++) {
    const f0 = g * QB * KVB, c0 = g * cQB * cKVB;
    for (let i = 0; i < cQB; i++) {
      allFull.fill(1);
      allEmpty.fill(1);
      for (let a = 0; a < rq; a++) {
        const fi = i * rq + a;
        if (fi >= QB) { allFull.fill(0); break; }   // rows past the end: empty children
        const r0 = f0 + fi * KVB;
        for (let j = 0, fj = 0; j < cKVB; j++) {
          const end = Math.min(fj + rk, KVB);
          let full = allFull[j]!, empty = allEmpty[j]!;
          for (; fj < end; fj++) {
            const v = fine[r0 + fj]!;
            full &= +(v === FULL);
            empty &= +(v === EMPTY);
          }
          allFull[j] = full;
          allEmpty[j] = empty;
        }
      }
      if (KVB % rk !== 0) allFull[cKVB - 1] = 0;     // columns past the end: empty children
      const o = c0 + i * cKVB;
      for (let j = 0; j < cKVB; j++) out[o + j] = allFull[j] ? FULL : allEmpty[j] ? EMPTY : PARTIAL;
    }
  }
  return out;
}
