// Host cost of a CUDA graph replay against the same decode step run call by call.
//
//   node bench/graphs.mjs [--layers 8] [--seqs 32] [--len 1000] [--hq 32] [--hkv 8] [--d 128]
//                         [--page 16] [--steps 200] [--json out.json]
//
// A decode step is L layers of `cache.append` (one token per sequence) +
// `pagedAttention` over one KvCache (a sequence per request and layer, as in
// examples/server). Three ways, on separate caches with the same prompts:
//   eager    await each call (what a server does today)
//   replay   one `await graph.replay()` of the step captured once
//   flex     a captured flexAttention decode call (Sq = 1, softcap) vs the call itself
// Host time is the wall time of the awaited calls (they return once enqueued);
// the GPU is drained every 20 steps outside the timed region so queue depth never
// throttles the host. GPU time per step is the drained wall time over all steps.
// Prints one line per row (median / p90 µs) and, with --json, writes the rows.
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import {
  KvCache, Tensor, captureGraph, deviceInfo, flexAttention, pagedAttention, softcap, synchronize,
} from '../dist/lib/index.js';

const { values: a } = parseArgs({
  options: {
    layers: { type: 'string', default: '8' }, seqs: { type: 'string', default: '32' }, len: { type: 'string', default: '1000' },
    hq: { type: 'string', default: '32' }, hkv: { type: 'string', default: '8' }, d: { type: 'string', default: '128' },
    page: { type: 'string', default: '16' }, steps: { type: 'string', default: '200' }, json: { type: 'string' },
  },
});
const L = +a.layers, B = +a.seqs, LEN = +a.len, HQ = +a.hq, HKV = +a.hkv, D = +a.d, P = +a.page, STEPS = +a.steps;
const DEV = 'cuda:0';
const DRAIN = 20;
const card = deviceInfo().gpus[0]?.name ?? 'unknown';

const med = (xs, q = 0.5) => { const s = [...xs].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(q * s.length))]; };

function makeCache() {
  const perSeq = Math.ceil((LEN + STEPS + 40) / P);
  const cache = new KvCache({ pageSize: P, numPages: L * B * perSeq + 16, numKvHeads: HKV, headDim: D, dtype: 'bf16', device: DEV });
  const seqs = Array.from({ length: L }, () => Array.from({ length: B }, () => cache.newSequence()));
  return { cache, seqs };
}

async function prefill({ cache, seqs }) {
  const k = Tensor.randn([B * LEN, HKV, D], 'bf16', { device: DEV, seed: 1 });
  for (const s of seqs) await cache.append(s, k, k, { tokens: s.map(() => LEN) });
  k.dispose();
}

const q = Array.from({ length: L }, (_, l) => Tensor.randn([B, HQ, D], 'bf16', { device: DEV, seed: 10 + l }));
const kv = Array.from({ length: L }, (_, l) => Tensor.randn([B, HKV, D], 'bf16', { device: DEV, seed: 50 + l }));
const ones = Array.from({ length: B }, () => 1);

/** Times `step` STEPS times (after 10 warm-ups): host µs per step, and GPU ms per step. */
async function timeSteps(step) {
  for (let i = 0; i < 10; i++) await step();
  await synchronize(DEV);
  const host = [];
  const t0 = performance.now();
  for (let i = 0; i < STEPS; i++) {
    const s = performance.now();
    await step();
    host.push((performance.now() - s) * 1000);
    if ((i + 1) % DRAIN === 0) await synchronize(DEV);
  }
  await synchronize(DEV);
  return { hostUs: med(host), hostP90Us: med(host, 0.9), gpuMsPerStep: (performance.now() - t0) / STEPS };
}

const rows = [];
function report(name, r, calls) {
  const row = { name, calls, ...r, hostUsPerCall: r.hostUs / calls };
  rows.push(row);
  console.log(`${name.padEnd(34)} host ${r.hostUs.toFixed(1).padStart(8)} us/step (p90 ${r.hostP90Us.toFixed(1).padStart(8)})  ` +
    `${row.hostUsPerCall.toFixed(2).padStart(7)} us/call  wall ${r.gpuMsPerStep.toFixed(3)} ms/step`);
}

console.log(`# ${card}: L=${L} layers, ${B} sequences of ${LEN} tokens, Hq ${HQ} Hkv ${HKV} D ${D}, page ${P}, ${STEPS} steps`);

// eager: await each op
{
  const c = makeCache();
  await prefill(c);
  const outs = [];
  const r = await timeSteps(async () => {
    for (let l = 0; l < L; l++) {
      await c.cache.append(c.seqs[l], kv[l], kv[l], { tokens: ones });
      outs.push(await pagedAttention(q[l], c.cache, { seqs: c.seqs[l], queryTokens: ones }));
    }
    for (const o of outs.splice(0)) o.dispose();
  });
  report(`decode step eager (${2 * L} calls)`, r, 2 * L);
  c.cache.dispose();
}

// replay: the same step captured once
{
  const c = makeCache();
  await prefill(c);
  const outs = [];
  const graph = await captureGraph(async () => {
    for (let l = 0; l < L; l++) {
      await c.cache.append(c.seqs[l], kv[l], kv[l], { tokens: ones });
      outs.push(await pagedAttention(q[l], c.cache, { seqs: c.seqs[l], queryTokens: ones }));
    }
  }, { device: DEV, maxSeqLen: LEN + STEPS + 40 });
  const r = await timeSteps(() => graph.replay());
  report(`decode step replay (${graph.numNodes} nodes)`, r, 2 * L);
  graph.dispose();
  for (const o of outs) o.dispose();
  c.cache.dispose();
}

// one flexAttention decode call (softcap), eager vs captured
{
  const fq = Tensor.randn([B, HQ, 1, D], 'bf16', { device: DEV, seed: 3 });
  const fk = Tensor.randn([B, HKV, LEN, D], 'bf16', { device: DEV, seed: 4 });
  const opts = { enableGQA: true, scoreMod: softcap(30) };
  const r1 = await timeSteps(async () => { (await flexAttention(fq, fk, fk, opts)).out.dispose(); });
  report('flexAttention decode eager', r1, 1);
  let out;
  const graph = await captureGraph(async () => { out = (await flexAttention(fq, fk, fk, opts)).out; });
  const r2 = await timeSteps(() => graph.replay());
  report('flexAttention decode replay', r2, 1);
  graph.dispose();
  for (const t of [fq, fk, out]) t.dispose();
}

if (a.json) {
  writeFileSync(a.json, JSON.stringify({ card, when: new Date().toISOString(), config: { L, B, LEN, HQ, HKV, D, P, STEPS }, rows }, null, 2));
  console.log(`wrote ${a.json}`);
}
