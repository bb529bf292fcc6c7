// Our side of the decode rows (bench/decode-cases.mjs): one query token per
// sequence against contiguous, paged and ragged KV. Contiguous rows go through
// flexAttention (which takes the decode kernel for Sq <= 16); paged, ragged
// and sliding-window rows through runRaggedAttentionCuda over a RaggedKv (the
// call pagedAttention makes). Timed by bench/run.mjs's timeOp; GB/s counts the
// K and V bytes of every cached token once.
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** The ragged launch path (internal module of the built package). */
export async function raggedModule(root) {
  return import(pathToFileURL(join(root, 'dist', 'lib', 'cuda', 'run-ragged.js')).href);
}

/** Deterministic page order: a 32-bit LCG shuffle of 0..n-1 (pages of different sequences interleave). */
function shuffled(n, seed) {
  let s = seed >>> 0;
  const a = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = Math.floor((s / 2 ** 32) * (i + 1));
    const t = a[i]; a[i] = a[j]; a[j] = t;
  }
  return a;
}

function lengthsOf(L, c, device) {
  const lens = Int32Array.from(c.lengths);
  const qs = Int32Array.from({ length: c.B + 1 }, (_, i) => i);
  return {
    seqLens: L.Tensor.fromHost(lens, [c.B], 'i32', { device }), queryStart: L.Tensor.fromHost(qs, [c.B + 1], 'i32', { device }),
    numSeqs: c.B, maxSeqLen: Math.max(...c.lengths), maxQueryTokens: 1, seqLensHost: lens, queryStartHost: qs,
  };
}

/** A paged pool holding every sequence's tokens in shuffled pages. */
function pagedKv(L, c, device) {
  const ps = c.pageSize;
  const per = c.lengths.map((n) => Math.ceil(n / ps));
  const total = per.reduce((a, x) => a + x, 0);
  const maxPages = Math.max(...per);
  const order = shuffled(total, 977);
  const table = new Int32Array(c.B * maxPages);
  let next = 0;
  per.forEach((np, s) => { for (let p = 0; p < np; p++) table[s * maxPages + p] = order[next++]; });
  const pool = () => L.Tensor.randn([total, ps, c.Hkv, c.D], 'bf16', { device });
  return {
    k: pool(), v: pool(), pageSize: ps, pageStride: ps * c.Hkv * c.D, tokenStride: c.Hkv * c.D, headStride: c.D,
    pageTable: L.Tensor.fromHost(table, [c.B, maxPages], 'i32', { device }), ...lengthsOf(L, c, device),
  };
}

/** Contiguous [B, Skv, Hkv, D] KV as a RaggedKv: page b is sequence b. */
function contiguousKv(L, c, k, v, device) {
  return {
    k, v, pageSize: 2 ** 30, pageStride: k.strides[0], tokenStride: k.strides[1], headStride: k.strides[2],
    pageTable: L.Tensor.fromHost(Int32Array.from({ length: c.B }, (_, b) => b), [c.B, 1], 'i32', { device }), ...lengthsOf(L, c, device),
  };
}

/** Times one decode case; returns its result row. */
export async function runDecodeCase(L, R, c, device, opts, timeOp) {
  const row = { id: c.id, group: c.group, layout: c.layout, pageSize: c.pageSize ?? null, mod: c.mod, B: c.B, Hq: c.Hq, Hkv: c.Hkv,
    Skv: c.Skv, D: c.D, kvBytes: c.kvBytes, ...(c.contiguousId ? { contiguousId: c.contiguousId } : {}),
    ...(c.modBaseId ? { modBaseId: c.modBaseId } : {}), ...(c.baseline ? { baseline: true } : {}) };
  const own = [];
  try {
    const scale = 1 / Math.sqrt(c.D);
    let op;
    if (c.layout === 'paged' || c.mod === 'swa' || c.path === 'ragged') {
      const q = L.Tensor.randn([c.B, c.Hq, c.D], 'bf16', { device });
      own.push(q);
      let kv;
      if (c.layout === 'paged') kv = pagedKv(L, c, device);
      else {
        // [B, Skv, Hkv, D] (the usual cache layout): a RaggedKv reads Hkv from k's second-last dim.
        const k = L.Tensor.randn([c.B, c.Skv, c.Hkv, c.D], 'bf16', { device }), v = L.Tensor.randn([c.B, c.Skv, c.Hkv, c.D], 'bf16', { device });
        kv = contiguousKv(L, c, k, v, device);
      }
      own.push(kv.k, kv.v, kv.pageTable, kv.seqLens, kv.queryStart);
      const o = { scale, causal: true, returnLse: false, ...(c.mod === 'swa' ? { maskMod: L.slidingWindow(c.window) } : {}) };
      op = () => R.runRaggedAttentionCuda(q, kv, o);
    } else {
      const q = L.Tensor.randn([c.B, c.Hq, 1, c.D], 'bf16', { device });
      const k = L.Tensor.randn([c.B, c.Hkv, c.Skv, c.D], 'bf16', { device }), v = L.Tensor.randn([c.B, c.Hkv, c.Skv, c.D], 'bf16', { device });
      own.push(q, k, v);
      const o = { enableGQA: c.Hq !== c.Hkv, ...(c.mod === 'softcap' ? { scoreMod: L.softcap(c.softcap) } : {}) };
      op = () => L.flexAttention(q, k, v, o);
    }
    const t = await timeOp(L, device, op, opts);
    Object.assign(row, t, { gbs: c.kvBytes / (t.ms * 1e-3) / 1e9 });
  } finally {
    for (const t of own) t.dispose();
  }
  return row;
}
