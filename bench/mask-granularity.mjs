#!/usr/bin/env node
// How much of the computed tile area a block mask keeps, by block granularity,
// for the flex benchmark's masks (B=2, S=8192; document ids as in cases.mjs).
// The kernel computes every 64x64 tile of a listed block, so `eff` bounds a
// pattern's TFLOPs (counted on kept pairs) against dense causal; `partial` is
// the share of listed blocks that pay for mask-mod evaluation.
//   node bench/mask-granularity.mjs        (CPU only, a few seconds)
import { docIds } from './cases.mjs';

const B = 2, S = 8192;
const { ids } = docIds(B, S, 12345);
const masks = {
  causal: (b, q, k) => k <= q,
  'sliding 1024': (b, q, k) => k <= q && q - k < 1024,
  'document-causal': (b, q, k) => k <= q && ids[b * S + q] === ids[b * S + k],
};

function stats(keep, bq, bk) {
  let tiles = 0, pairs = 0, partial = 0;
  for (let b = 0; b < B; b++) {
    for (let qb = 0; qb < S / bq; qb++) {
      for (let kb = 0; kb < S / bk; kb++) {
        let n = 0;
        for (let q = qb * bq; q < (qb + 1) * bq; q++) for (let k = kb * bk; k < (kb + 1) * bk; k++) if (keep(b, q, k)) n++;
        if (n) { tiles++; pairs += n; if (n < bq * bk) partial++; }
      }
    }
  }
  return { eff: pairs / (tiles * bq * bk), partial: partial / tiles };
}

console.log('| mask | 128x128: kept / computed | partial blocks | 64x64: kept / computed | partial blocks |');
console.log('| --- | --- | --- | --- | --- |');
for (const [name, f] of Object.entries(masks)) {
  const a = stats(f, 128, 128), c = stats(f, 64, 64);
  console.log(`| ${name} | ${a.eff.toFixed(3)} | ${a.partial.toFixed(3)} | ${c.eff.toFixed(3)} | ${c.partial.toFixed(3)} |`);
}
