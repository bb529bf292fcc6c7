// The benchmark cases (issue 4, item 5), shared by bench/run.mjs and, through
// `node bench/run.mjs --emit-cases DIR` (cases.json + doc-id .i32 files), by
// bench/torch_attention.py, so both sides time exactly the same problems.
//
// Unmasked pairs are counted exactly from each mask's definition, in closed
// form per query row (no S×S evaluation):
//   causal kv <= q                         → q + 1
//   sliding window (causal, q - kv < w)    → min(q + 1, w)
//   prefix-LM n (kv < n || kv <= q)        → max(q + 1, n)
//   document-causal (same doc && kv <= q)  → q - start(doc(q)) + 1
// FLOPs = 4 · D · Hq · Σ_batch Σ_q pairs(q)  (two matmuls, 2 FLOPs per MAC).

export const CASES_VERSION = 1;

/** Deterministic document ids [B, S]: lengths 200 + floor(u · 2800) from a 32-bit LCG (reproduced in Python). */
export function docIds(B, S, seed, minLen = 200, spanLen = 2800) {
  let s = seed >>> 0;
  const ids = new Int32Array(B * S);
  const lengths = [];
  for (let b = 0; b < B; b++) {
    const lens = [];
    let pos = 0, doc = 0;
    while (pos < S) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      const len = Math.min(minLen + Math.floor((s / 2 ** 32) * spanLen), S - pos);
      ids.fill(doc, b * S + pos, b * S + pos + len);
      lens.push(len);
      pos += len;
      doc++;
    }
    lengths.push(lens);
  }
  return { ids, lengths };
}

/** Standard ALiBi slopes for a power-of-two head count: 2^(-8(i+1)/H). */
export function alibiSlopesF64(H) {
  return Array.from({ length: H }, (_, i) => 2 ** (-8 * (i + 1) / H));
}

/** Σ_q unmasked pairs of one batch row. */
export function rowPairs(pattern, S, p = {}, lengths = null) {
  let n = 0;
  switch (pattern) {
    case null: case undefined: case 'full':
      return S * S;
    case 'causal': case 'softcap': case 'alibi':
      return (S * (S + 1)) / 2;
    case 'swa':
      for (let q = 0; q < S; q++) n += Math.min(q + 1, p.window);
      return n;
    case 'prefix':
      for (let q = 0; q < S; q++) n += Math.max(q + 1, Math.min(p.prefix, S));
      return n;
    case 'doc':
      for (const len of lengths) n += (len * (len + 1)) / 2; // causal within each document
      return n;
    default: throw new Error(`unknown pattern ${pattern}`);
  }
}

function mk(c) {
  const Hkv = c.Hkv ?? c.Hq;
  let pairs;
  if (c.pattern === 'doc') {
    const { lengths } = docIds(c.B, c.S, c.docSeed, c.docMin, c.docSpan);
    pairs = lengths.reduce((acc, l) => acc + rowPairs('doc', c.S, c, l), 0);
  } else {
    pairs = c.B * rowPairs(c.pattern ?? (c.causal ? 'causal' : 'full'), c.S, c);
  }
  return { ...c, Hkv, pairs, density: pairs / (c.B * c.S * c.S), flops: 4 * c.D * c.Hq * pairs };
}

/** All cases; `tiny` gives the same structure at CPU-friendly sizes (smoke test). */
export function buildCases({ tiny = false } = {}) {
  const cases = [];
  const tokens = tiny ? 256 : 16384;
  const H = tiny ? 2 : 16;
  for (const D of [64, 128]) {
    for (const S of tiny ? [64, 128] : [512, 1024, 2048, 4096, 8192, 16384]) {
      for (const causal of [false, true]) {
        cases.push(mk({ id: `dense d${D} S${S} ${causal ? 'causal' : 'non-causal'}`, group: 'dense', op: 'sdpa',
          B: tokens / S, Hq: H, S, D, causal, pattern: causal ? 'causal' : 'full' }));
      }
    }
  }
  // flex patterns at B=2 H=16 S=8192 D=128, plus our dense causal on that shape (the 80 % bar's reference)
  const F = tiny ? { B: 2, Hq: 2, S: 256, D: 64 } : { B: 2, Hq: 16, S: 8192, D: 128 };
  const win = tiny ? 64 : 1024, prefix = tiny ? 64 : 2048;
  cases.push(mk({ id: 'flex-shape dense causal (sdpa)', group: 'flex', op: 'sdpa', ...F, causal: true, pattern: 'causal' }));
  cases.push(mk({ id: 'flex causal', group: 'flex', op: 'flex', ...F, pattern: 'causal' }));
  cases.push(mk({ id: `flex sliding window ${win}`, group: 'flex', op: 'flex', ...F, pattern: 'swa', window: win }));
  cases.push(mk({ id: 'flex document-causal', group: 'flex', op: 'flex', ...F, pattern: 'doc', docSeed: 12345,
    ...(tiny ? { docMin: 20, docSpan: 80 } : {}) }));
  cases.push(mk({ id: `flex prefix-LM ${prefix}`, group: 'flex', op: 'flex', ...F, pattern: 'prefix', prefix }));
  cases.push(mk({ id: 'flex softcap 30 + causal', group: 'flex', op: 'flex', ...F, pattern: 'softcap', softcap: 30 }));
  cases.push(mk({ id: 'flex ALiBi + causal', group: 'flex', op: 'flex', ...F, pattern: 'alibi' }));
  // Sliding window and documents again with a 64x64-block BlockMask (the GPU kernels' tile): what the default
  // 128x128 granularity costs them. Informational rows, outside the 80 % bar.
  cases.push(mk({ id: `flex sliding window ${win}, 64x64 blocks`, group: 'flex', op: 'flex', ...F, pattern: 'swa', window: win,
    blockSize: 64 }));
  cases.push(mk({ id: 'flex document-causal, 64x64 blocks', group: 'flex', op: 'flex', ...F, pattern: 'doc', docSeed: 12345,
    blockSize: 64, ...(tiny ? { docMin: 20, docSpan: 80 } : {}) }));
  // GQA prefill: Hq=32 Hkv=8 S=4096 D=128 causal, 16k tokens (B=4)
  const G = tiny ? { B: 1, Hq: 4, Hkv: 2, S: 128, D: 64 } : { B: 4, Hq: 32, Hkv: 8, S: 4096, D: 128 };
  cases.push(mk({ id: 'gqa causal (sdpa)', group: 'gqa', op: 'sdpa', ...G, causal: true, pattern: 'causal' }));
  cases.push(mk({ id: 'gqa causal (flex)', group: 'gqa', op: 'flex', ...G, pattern: 'causal' }));
  return cases;
}
