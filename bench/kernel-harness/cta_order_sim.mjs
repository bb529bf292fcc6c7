#!/usr/bin/env node
// Greedy list-scheduling model of the document-causal flex launch (B=2, H=16,
// S=8192, 64-row query blocks, 3 CTAs/SM x 132 SMs): makespan / ideal for the
// kernel's CTA order (work_tile: head groups of G, query blocks last-first)
// and for longest-first orders. CTA cost = 1.5 + unmasked tiles + 1.6 x masked
// tiles (kernel-notes runs 8-12). A model only: a lone CTA at the tail runs
// faster than one sharing its SM, so real tails are shorter.
//   node bench/kernel-harness/cta_order_sim.mjs      (CPU, ~10 s)
import { docIds } from '../cases.mjs';

const B = 2, H = 16, S = 8192, BM = 64, BN = 64, SLOTS = 132 * 3;
const { ids } = docIds(B, S, 12345);
const nM = S / BM;

/** Computed and masked 64-wide kv tiles of q block m when the mask's blocks are gran x gran. */
function tiles(b, m, gran) {
  let t = 0, part = 0;
  const qb0 = Math.floor((m * BM) / gran) * gran;
  for (let kb = 0; kb < S / gran; kb++) {
    let n = 0;
    for (let q = qb0; q < qb0 + gran; q++) for (let k = kb * gran; k < (kb + 1) * gran; k++) if (k <= q && ids[b * S + q] === ids[b * S + k]) n++;
    if (n) { t += gran / BN; if (n < gran * gran) part += gran / BN; }
  }
  return 1.5 + (t - part) + 1.6 * part;
}

function makespan(order) {
  const slot = new Array(SLOTS).fill(0);
  for (const c of order) { let i = 0; for (let j = 1; j < SLOTS; j++) if (slot[j] < slot[i]) i = j; slot[i] += c; }
  return Math.max(...slot);
}

console.log('| mask blocks | G (heads per group) | work_tile order | longest-first within groups |');
console.log('| --- | --- | --- | --- |');
for (const gran of [128, 64]) {
  const cost = [];
  for (let b = 0; b < B; b++) for (let m = 0; m < nM; m++) cost.push(tiles(b, m, gran));
  const ideal = cost.reduce((a, c) => a + c * H, 0) / SLOTS;
  for (const G of [2, 8, 32]) {
    const plain = [], sorted = [];
    for (let g = 0; g < (B * H) / G; g++) {
      const grp = [];
      for (let r = 0; r < G * nM; r++) {
        const bh = g * G + (r % G), m = nM - 1 - Math.floor(r / G);
        grp.push(cost[Math.floor(bh / H) * nM + m]);
      }
      plain.push(...grp);
      sorted.push(...grp.sort((x, y) => y - x));
    }
    console.log(`| ${gran}x${gran} | ${G} | ${(makespan(plain) / ideal).toFixed(3)} | ${(makespan(sorted) / ideal).toFixed(3)} |`);
  }
}
