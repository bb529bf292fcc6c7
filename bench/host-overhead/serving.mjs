// node --require ./preload.cjs serving.mjs <treeRoot> [--rounds 5] [--steps 100] [--only name,...] [--json]
// Host cost of the serving paths on the fake addon (no GPU), in steady state: a warm-up as long as a round,
// then the median of the per-op times over all rounds. Shapes as bench/graphs.mjs (8 layers, 32 sequences of 1000 tokens, Hq 32
// Hkv 8 D 128 bf16, page 16). Rows (µs per step or per call, awaited one after another):
//   step     one eager decode step: per layer cache.append (a token per sequence) + pagedAttention
//   paged    one pagedAttention call over the 32 sequences (lengths unchanged between calls)
//   append   one cache.append of a token per sequence
//   flex     flexAttention at Sq = 1, B32 Hq32 Hkv8 Skv1000, GQA + softcap(30) (the decode kernel)
//   replay   one graph.replay() of the captured step (its host steps and table uploads)
//   pagedPipe, flexPipe  paged / flex issued without awaiting each result, 8 in flight (the oldest awaited
//            and disposed before the next is issued, as bench/run.mjs's pipelined row): µs per call, the
//            median over rounds of a round's time over its calls
// --crossings: also the calls into the addon per op (N-API crossings on the real addon), by name, from
// the fake's counters over the last round.
// Each round starts from a fresh cache with the prompts prefilled (outside the timed region), so the
// sequences have the same lengths in every round.
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

const argv = process.argv.slice(2);
const root = resolve(argv[0] ?? '.');
const opt = (k, d) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : d; };
const ROUNDS = Number(opt('--rounds', 5));
const STEPS = Number(opt('--steps', 100));
const only = opt('--only', '').split(',').filter(Boolean);
const json = argv.includes('--json');
const native = argv.includes('--native'); // the real addon over stub-libcuda.c (FLEXATTN_LIBCUDA)
const countCrossings = argv.includes('--crossings') && !native;
let lastCrossings = null;
const crossingsNow = () => globalThis.__fakeAddon.__crossings();
function crossingsPer(before, after, n) {
  const out = {};
  for (const [k, v] of Object.entries(after)) { const d = (v - (before[k] ?? 0)) / n; if (d) out[k] = +d.toFixed(2); }
  return out;
}
if (!globalThis.__fakeAddon && !native) throw new Error('run with --require preload.cjs, or --native with FLEXATTN_LIBCUDA=<stub>');
const L = await import(pathToFileURL(join(root, 'dist', 'lib', 'index.js')).href);

const LAYERS = 8, B = 32, LEN = 1000, HQ = 32, HKV = 8, D = 128, P = 16, DEV = 'cuda:0';
const ones = Array.from({ length: B }, () => 1);
const med = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };

function makeCache(layers, growth) {
  const perSeq = Math.ceil((LEN + growth + 40) / P);
  const cache = new L.KvCache({ pageSize: P, numPages: layers * B * perSeq + 16, numKvHeads: HKV, headDim: D, dtype: 'bf16', device: DEV });
  const seqs = Array.from({ length: layers }, () => Array.from({ length: B }, () => cache.newSequence()));
  return { cache, seqs };
}
async function prefill({ cache, seqs }) {
  const k = L.Tensor.randn([B * LEN, HKV, D], 'bf16', { device: DEV, seed: 1 });
  for (const s of seqs) await cache.append(s, k, k, { tokens: s.map(() => LEN) });
  k.dispose();
}
const q = Array.from({ length: LAYERS }, (_, l) => L.Tensor.randn([B, HQ, D], 'bf16', { device: DEV, seed: 10 + l }));
const kv = Array.from({ length: LAYERS }, (_, l) => L.Tensor.randn([B, HKV, D], 'bf16', { device: DEV, seed: 50 + l }));

/**
 * Runs `setup()` (untimed) then `n` awaited `op()`s, ROUNDS + 1 times (the first a warm-up), timing each op;
 * returns the median µs of one op over all measured rounds (as bench/graphs.mjs reports a step: robust to the
 * process being descheduled now and then on a busy machine). `setup` returns a context handed to `op` and `teardown`.
 */
async function rounds(setup, op, teardown, n) {
  const per = [];
  for (let r = 0; r <= ROUNDS; r++) {
    const ctx = await setup();
    await L.synchronize(DEV);
    const c0 = r === ROUNDS && countCrossings ? crossingsNow() : null;
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await op(ctx, i);
      if (r > 0) per.push((performance.now() - t0) * 1000);
    }
    if (c0) lastCrossings = crossingsPer(c0, crossingsNow(), n);
    await teardown(ctx);
  }
  return med(per);
}

/** As rounds(), but `n` calls issued with 8 in flight per round; returns the median over rounds of µs per call. */
async function pipelined(setup, call, teardown, n) {
  const per = [];
  for (let r = 0; r <= ROUNDS; r++) {
    const ctx = await setup();
    await L.synchronize(DEV);
    const c0 = r === ROUNDS && countCrossings ? crossingsNow() : null;
    const win = [];
    const t0 = performance.now();
    for (let i = 0; i < n; i++) { win.push(call(ctx)); if (win.length >= 8) dispose(await win.shift()); }
    for (const p of win) dispose(await p);
    if (r > 0) per.push((performance.now() - t0) * 1000 / n);
    if (c0) lastCrossings = crossingsPer(c0, crossingsNow(), n);
    await teardown(ctx);
  }
  return med(per);
}
const dispose = (r) => (r.out ?? r).dispose();

const rows = {
  async step() {
    return rounds(async () => { const c = makeCache(LAYERS, STEPS); await prefill(c); return c; }, async (c) => {
      for (let l = 0; l < LAYERS; l++) {
        await c.cache.append(c.seqs[l], kv[l], kv[l], { tokens: ones });
        (await L.pagedAttention(q[l], c.cache, { seqs: c.seqs[l], queryTokens: ones })).dispose();
      }
    }, (c) => c.cache.dispose(), STEPS);
  },
  async paged() {
    return rounds(async () => { const c = makeCache(1, 0); await prefill(c); return c; }, async (c) => {
      (await L.pagedAttention(q[0], c.cache, { seqs: c.seqs[0], queryTokens: ones })).dispose();
    }, (c) => c.cache.dispose(), STEPS * 2 * LAYERS);
  },
  async append() {
    const n = STEPS * LAYERS;
    return rounds(async () => { const c = makeCache(1, n); await prefill(c); return c; }, async (c) => {
      await c.cache.append(c.seqs[0], kv[0], kv[0], { tokens: ones });
    }, (c) => c.cache.dispose(), n);
  },
  async flex() {
    const fq = L.Tensor.randn([B, HQ, 1, D], 'bf16', { device: DEV, seed: 3 });
    const fk = L.Tensor.randn([B, HKV, LEN, D], 'bf16', { device: DEV, seed: 4 });
    const opts = { enableGQA: true, scoreMod: L.softcap(30) };
    const us = await rounds(() => null, async () => { (await L.flexAttention(fq, fk, fk, opts)).out.dispose(); }, () => {}, STEPS * 2 * LAYERS);
    fq.dispose(); fk.dispose();
    return us;
  },
  async pagedPipe() {
    return pipelined(async () => { const c = makeCache(1, 0); await prefill(c); return c; },
      (c) => L.pagedAttention(q[0], c.cache, { seqs: c.seqs[0], queryTokens: ones }), (c) => c.cache.dispose(), STEPS * 2 * LAYERS);
  },
  async flexPipe() {
    const fq = L.Tensor.randn([B, HQ, 1, D], 'bf16', { device: DEV, seed: 3 });
    const fk = L.Tensor.randn([B, HKV, LEN, D], 'bf16', { device: DEV, seed: 4 });
    const opts = { enableGQA: true, scoreMod: L.softcap(30) };
    const us = await pipelined(() => null, () => L.flexAttention(fq, fk, fk, opts), () => {}, STEPS * 2 * LAYERS);
    fq.dispose(); fk.dispose();
    return us;
  },
  async replay() {
    return rounds(async () => {
      const c = makeCache(LAYERS, STEPS); await prefill(c);
      const outs = [];
      c.graph = await L.captureGraph(async () => {
        for (let l = 0; l < LAYERS; l++) {
          await c.cache.append(c.seqs[l], kv[l], kv[l], { tokens: ones });
          outs.push(await L.pagedAttention(q[l], c.cache, { seqs: c.seqs[l], queryTokens: ones }));
        }
      }, { device: DEV, maxSeqLen: LEN + STEPS + 40 });
      c.outs = outs;
      return c;
    }, (c) => c.graph.replay(), (c) => { c.graph.dispose(); for (const o of c.outs) o.dispose(); c.cache.dispose(); }, STEPS);
  },
};
const calls = { step: 2 * LAYERS, paged: 1, append: 1, flex: 1, pagedPipe: 1, flexPipe: 1, replay: 2 * LAYERS };

for (const [name, run] of Object.entries(rows)) {
  if (only.length && !only.includes(name)) continue;
  lastCrossings = null;
  const us = await run();
  const perCall = us / calls[name];
  const cr = lastCrossings ? { crossings: lastCrossings } : {};
  if (json) console.log(JSON.stringify({ tree: root, op: name, us, perCallUs: perCall, ...cr }));
  else {
    console.log(`${name.padEnd(9)} ${us.toFixed(1).padStart(8)} us${calls[name] > 1 ? `  (${perCall.toFixed(2)} us per call of ${calls[name]})` : ''}`);
    if (lastCrossings) {
      const total = Object.values(lastCrossings).reduce((a, b) => a + b, 0);
      console.log(`          crossings per op ${total.toFixed(1)}: ${Object.entries(lastCrossings).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    }
  }
}
