#!/usr/bin/env node
// Block-mask creation benchmark (ours only; see bench/compare-blockmask-torch.mjs for PyTorch).
//
//   npm run build:ts && node bench/blockmask.mjs [out.json]
//
// Times `await createBlockMask(...)` end to end (including device synchronize)
// for each path: 'analytic' (built-ins, host O(blocks)), 'gpu' (generated
// classify kernel) and, for small sizes, 'cpu' (host evaluator). Median of REPS
// (default 20) after 3 warm-up calls. FLEXATTN_BM_DEVICE=cpu runs without a GPU
// (analytic and cpu paths only).
import { writeFileSync, existsSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => join(root, 'dist', 'lib', p);
if (!existsSync(dist('blockmask.js'))) { console.error('run `npm run build:ts` first'); process.exit(2); }
const { createBlockMask } = await import(dist('blockmask.js'));
const { causal, slidingWindow, prefixLM, documentMask, andMasks, docIdsFromOffsets } = await import(dist('mods/index.js'));
const { Tensor } = await import(dist('tensor.js'));
const { synchronize, deviceInfo, cudaAvailable } = await import(dist('device.js'));

const device = process.env.FLEXATTN_BM_DEVICE ?? (cudaAvailable() ? 'cuda:0' : 'cpu');
const reps = Number(process.env.REPS ?? 20);
const gpuName = device === 'cpu' ? 'cpu' : deviceInfo().gpus[0]?.name ?? '?';
const budgetMs = Number(process.env.BUDGET_MS ?? 60_000);
const t0All = Date.now();

function docIds(B, S, meanLen, seed) {
  let s = seed >>> 0;
  const rnd = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
  const ids = new Int32Array(B * S);
  for (let b = 0; b < B; b++) {
    const offs = [0];
    while (offs[offs.length - 1] < S) offs.push(offs[offs.length - 1] + Math.max(1, Math.floor(meanLen * (0.25 + 1.75 * rnd()))));
    ids.set(docIdsFromOffsets(offs.filter((o) => o < S), S), b * S);
  }
  return Tensor.fromHost(ids, [B, S], 'i32', { device });
}

async function time(fn) {
  for (let i = 0; i < 3; i++) { const bm = await fn(); await synchronize(device === 'cpu' ? 'cpu' : device); bm.dispose(); }
  const ts = [];
  let method = '';
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    const bm = await fn();
    await synchronize(device === 'cpu' ? 'cpu' : device);
    ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
    method = bm.method;
    bm.dispose();
  }
  ts.sort((a, b) => a - b);
  return { median: ts[Math.floor(ts.length / 2)], min: ts[0], method };
}

const cases = [];
for (const S of [8192, 32768, 131072]) {
  cases.push({ name: `causal S=${S}`, B: 1, H: 1, S, mod: () => causal() });
  cases.push({ name: `sliding1024 S=${S}`, B: 1, H: 1, S, mod: () => slidingWindow(1024) });
  cases.push({ name: `prefix2048 S=${S}`, B: 1, H: 1, S, mod: () => prefixLM(2048) });
  cases.push({ name: `doc-causal B=2 S=${S}`, B: 2, H: 1, S, mod: () => documentMask(docIds(2, S, 700, S)), dataDependent: true });
  cases.push({ name: `doc-causal∧sliding B=2 S=${S}`, B: 2, H: 1, S, mod: () => andMasks(documentMask(docIds(2, S, 2000, S + 1)), slidingWindow(1024)), dataDependent: true });
}

const rows = [];
for (const c of cases) {
  const mod = c.mod();
  // [label, options]: analytic (built-ins), generated GPU kernel with and without the
  // position pre-filter, host evaluator (cpu runs only, S <= 8192).
  const paths = [];
  if (!c.dataDependent) paths.push(['analytic', { path: 'analytic' }]);
  if (device !== 'cpu') {
    paths.push(['gpu', { path: 'gpu' }]);
    if (c.S <= 32768) paths.push(['gpu, no prefilter', { path: 'gpu', prefilter: false }]);
  } else if (c.S <= 8192) {
    paths.push(['cpu', { path: 'cpu' }]);
  }
  for (const [path, popts] of paths) {
    if (Date.now() - t0All > budgetMs) { rows.push({ case: c.name, path, skipped: 'time budget' }); continue; }
    try {
      const r = await time(() => createBlockMask(mod, c.B, c.H, c.S, c.S, { device, ...popts }));
      const bm = await createBlockMask(mod, c.B, c.H, c.S, c.S, { device, ...popts });
      rows.push({ case: c.name, B: c.B, S: c.S, path, ms: r.median, minMs: r.min, sparsity: bm.sparsity() });
      bm.dispose();
    } catch (e) {
      rows.push({ case: c.name, path, error: String(e.message ?? e).split('\n')[0] });
    }
  }
}

console.log(`\ncreateBlockMask, ${gpuName} (device ${device}), block 128, median of ${reps}`);
console.log('| case | path | ms | min ms | sparsity % |');
console.log('|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.case} | ${r.path} | ${r.ms?.toFixed(3) ?? (r.error ?? r.skipped)} | ${r.minMs?.toFixed(3) ?? '-'} | ${r.sparsity?.toFixed(2) ?? '-'} |`);
}
if (process.argv[2]) {
  writeFileSync(process.argv[2], JSON.stringify({ gpu: gpuName, device, reps, date: new Date().toISOString(), rows }, null, 1));
  console.log(`wrote ${process.argv[2]}`);
}
