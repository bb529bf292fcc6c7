// Float64 attention in plain JavaScript: the oracle where the CPU backend cannot
// be (rows of a 21 GB problem in the index phase) or must not be (a local run on
// the CPU backend checks that backend against something independent of it).
import { join } from 'node:path';
import { ROOT } from './common.mjs';

/**
 * One output row: softmax over the keys `kvStart .. kvStart+n-1` of `scale·q·k`
 * (rewritten by `score(s, kv)` and dropped where `keep(kv)` is false), times v.
 * `qRow` has D entries, `kRows`/`vRows` n·D and n·Dv (contiguous).
 * @returns `{ out: Float64Array(Dv), lse }` (out 0 and lse -Infinity when nothing is kept).
 */
export function attendRow(qRow, kRows, vRows, n, kvStart, D, Dv, scale, keep, score) {
  const s = new Float64Array(n);
  let m = -Infinity, anyNaN = false;
  for (let j = 0; j < n; j++) {
    const kv = kvStart + j;
    if (keep && !keep(kv)) { s[j] = -Infinity; continue; }
    let dot = 0;
    for (let d = 0; d < D; d++) dot += qRow[d] * kRows[j * D + d];
    let sc = dot * scale;
    if (score) sc = score(sc, kv);
    s[j] = sc;
    if (Number.isNaN(sc)) anyNaN = true;
    else if (sc > m) m = sc;
  }
  const out = new Float64Array(Dv);
  // PyTorch semantics: a NaN score poisons its row; only a row with nothing kept is 0.
  if (anyNaN || m === Infinity) return { out: out.fill(NaN), lse: NaN };
  if (m === -Infinity) return { out, lse: -Infinity };
  let sum = 0;
  for (let j = 0; j < n; j++) { const e = Math.exp(s[j] - m); s[j] = e; sum += e; }
  for (let j = 0; j < n; j++) {
    const p = s[j] / sum;
    if (p === 0) continue;
    for (let d = 0; d < Dv; d++) out[d] += p * vRows[j * Dv + d];
  }
  return { out, lse: m + Math.log(sum) };
}

/**
 * Whole-problem reference for contiguous host arrays q [B,Hq,Sq,D], k/v [B,Hkv,Skv,D]:
 * `keep(b,h,q,kv)` and `score(s,b,h,q,kv)` as in PyTorch's mods.
 */
export function referenceAttention({ q, k, v, B, Hq, Hkv, Sq, Skv, D, scale, keep, score }) {
  const out = new Float64Array(B * Hq * Sq * D);
  const lse = new Float64Array(B * Hq * Sq);
  const group = Hq / Hkv;
  for (let b = 0; b < B; b++) for (let h = 0; h < Hq; h++) {
    const hk = Math.floor(h / group);
    const kOff = ((b * Hkv + hk) * Skv) * D;
    const kRows = k.subarray(kOff, kOff + Skv * D), vRows = v.subarray(kOff, kOff + Skv * D);
    for (let i = 0; i < Sq; i++) {
      const row = (b * Hq + h) * Sq + i;
      const r = attendRow(q.subarray(row * D, row * D + D), kRows, vRows, Skv, 0, D, D, scale,
        keep ? (kv) => keep(b, h, i, kv) : undefined, score ? (s, kv) => score(s, b, h, i, kv) : undefined);
      out.set(r.out, row * D);
      lse[row] = r.lse;
    }
  }
  return { out, lse };
}

let internals;
async function mods() {
  internals ??= await import(join(ROOT, 'dist/lib/mods/index.js'));
  return internals;
}

/** Host functions of a MaskMod / ScoreMod (captured tensors read once), through the package's JS evaluator. */
export async function hostFns(maskMod, scoreMod, params = {}) {
  const m = await mods();
  const keep = maskMod ? m.toJs(maskMod, await m.bindHost(maskMod, params)) : undefined;
  const score = scoreMod ? m.toJs(scoreMod, await m.bindHost(scoreMod, params)) : undefined;
  return { keep, score };
}
