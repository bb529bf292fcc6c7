// The decode rows of the attention benchmark (issue 19 §5), shared by
// bench/decode.mjs (ours) and, through `node bench/run.mjs --emit-cases DIR`
// (decode-cases.json), by bench/torch_decode.py, so both sides time the same
// problems. One query token per sequence, bf16, D = 128. Bytes counted: every
// K and V element of every sequence's cached tokens, read once
// (2 · Σ_seq len · Hkv · D · 2 bytes); GB/s = that / time. Sliding-window rows
// count only the tokens inside the window (Σ_seq min(window, len)): the bytes
// a kernel must read (the query is the last position, so it sees the window
// most recent keys). Reading the whole cache is not credited as bandwidth.

/** Deterministic ragged lengths lo..hi (32-bit LCG, reproduced in Python). */
export function raggedLengths(n, lo, hi, seed) {
  let s = seed >>> 0;
  const out = [];
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(lo + Math.floor((s / 2 ** 32) * (hi - lo + 1)));
  }
  return out;
}

function mk(c) {
  const lengths = c.lengths ?? Array(c.B).fill(c.Skv);
  const tokens = lengths.reduce((a, x) => a + (c.window ? Math.min(c.window, x) : x), 0);
  return { Sq: 1, D: 128, layout: 'contiguous', mod: null, ...c, lengths, kvBytes: 2 * tokens * c.Hkv * (c.D ?? 128) * 2 };
}

/** The decode cases; `tiny` keeps the structure at small sizes (dry runs, CPU smoke). */
export function buildDecodeCases({ tiny = false } = {}) {
  const k = tiny ? 1 / 64 : 1;
  const S = (n) => Math.max(16, Math.round(n * k));
  const shapes = [
    { name: 'B8 Hq32 Hkv8 Skv32k', B: 8, Hq: 32, Hkv: 8, Skv: S(32768), paged: true },
    { name: 'B1 Hq32 Hkv8 Skv128k', B: 1, Hq: 32, Hkv: 8, Skv: S(131072), paged: true },
    { name: 'B64 Hq32 Hkv8 Skv4k', B: 64, Hq: 32, Hkv: 8, Skv: S(4096) },
    { name: 'B8 Hq32 Hkv32 Skv8k', B: 8, Hq: 32, Hkv: 32, Skv: S(8192) },
  ];
  const cases = [];
  for (const s of shapes) {
    cases.push(mk({ id: `decode ${s.name}`, group: 'decode', B: s.B, Hq: s.Hq, Hkv: s.Hkv, Skv: s.Skv }));
    if (s.paged) {
      for (const pageSize of [16, 64]) {
        cases.push(mk({ id: `decode ${s.name} paged ${pageSize}`, group: 'decode', B: s.B, Hq: s.Hq, Hkv: s.Hkv, Skv: s.Skv,
          layout: 'paged', pageSize, contiguousId: `decode ${s.name}` }));
      }
    }
  }
  const lengths = raggedLengths(64, S(1024), S(32768), 4242);
  cases.push(mk({ id: 'decode ragged 64 seqs 1k-32k paged 16', group: 'decode', B: 64, Hq: 32, Hkv: 8, Skv: Math.max(...lengths),
    lengths, layout: 'paged', pageSize: 16 }));
  cases.push(mk({ id: 'decode B8 Hq32 Hkv8 Skv32k softcap 30', group: 'decode', B: 8, Hq: 32, Hkv: 8, Skv: S(32768), mod: 'softcap',
    softcap: 30, contiguousId: 'decode B8 Hq32 Hkv8 Skv32k' }));
  // The window row's mod cost is taken against a row that reads the same bytes through the same (ragged)
  // path without a mask: B8 with 4096 cached tokens. Against the 32k row it would also count the fixed
  // cost of a launch spread over 8x fewer bytes, which is not what the mask costs.
  cases.push(mk({ id: 'decode B8 Hq32 Hkv8 Skv4k (window baseline)', group: 'decode', B: 8, Hq: 32, Hkv: 8, Skv: S(4096),
    path: 'ragged', baseline: true }));
  cases.push(mk({ id: 'decode B8 Hq32 Hkv8 Skv32k swa 4096', group: 'decode', B: 8, Hq: 32, Hkv: 8, Skv: S(32768),
    mod: 'swa', window: S(4096), contiguousId: 'decode B8 Hq32 Hkv8 Skv32k', modBaseId: 'decode B8 Hq32 Hkv8 Skv4k (window baseline)' }));
  return cases;
}
