#!/usr/bin/env node
// Compares flexattn's createBlockMask with PyTorch's create_block_mask on the same
// cases (dumped by bench/torch_blockmask.py) and times ours on the GPU.
//
//   python3 bench/torch_blockmask.py bench/results/torch_blockmask
//   npm run build:ts
//   node bench/compare-blockmask-torch.mjs bench/results/torch_blockmask bench/results/blockmask.json
//
// Correctness: kv_num_blocks / full_kv_num_blocks equal, and per row the first
// `num` entries of kv_indices / full_kv_indices equal (PyTorch's padding beyond
// `num` is unspecified). Timing: `await createBlockMask(...)` end to end
// (classification, host compaction, upload, device synchronize), 3 warm-up
// calls (the first compiles the kernel), median of 20.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => join(root, 'dist', 'lib', p);
if (!existsSync(dist('blockmask.js'))) {
  console.error('dist/lib/blockmask.js not found: run `npm run build:ts` first');
  process.exit(2);
}
const { createBlockMask } = await import(dist('blockmask.js'));
const { causal, slidingWindow, prefixLM, documentMask } = await import(dist('mods/index.js'));
const { Tensor } = await import(dist('tensor.js'));
const { synchronize, deviceInfo, cudaAvailable } = await import(dist('device.js'));

const torchDir = process.argv[2] ?? 'bench/results/torch_blockmask';
const outJson = process.argv[3] ?? 'bench/results/blockmask.json';
const reps = Number(process.env.REPS ?? 20);
const manifest = JSON.parse(readFileSync(join(torchDir, 'manifest.json'), 'utf8'));
// FLEXATTN_BM_DEVICE=cpu dry-runs the comparison on the host evaluator (no GPU).
const device = process.env.FLEXATTN_BM_DEVICE ?? 'cuda:0';
if (device !== 'cpu' && !cudaAvailable()) { console.error('no CUDA device (set FLEXATTN_BM_DEVICE=cpu for a dry run)'); process.exit(2); }
const gpuName = device === 'cpu' ? 'cpu' : (deviceInfo().gpus[0]?.name ?? '?');

function readI32(file) {
  const b = readFileSync(file);
  const u = new Uint8Array(b.byteLength);
  u.set(b); // own, 4-byte aligned copy
  return new Int32Array(u.buffer);
}

function modFor(c) {
  switch (c.kind) {
    case 'causal': return causal();
    case 'sliding': return slidingWindow(c.window);
    case 'prefix': return prefixLM(c.n);
    case 'document': {
      const ids = readI32(join(torchDir, c.doc_file));
      return documentMask(Tensor.fromHost(ids, [c.B, c.S], 'i32', { device }));
    }
    default: throw new Error(`unknown case kind ${c.kind}`);
  }
}

/** Mismatch count between torch's and our (num, indices) pair, comparing the first num entries per row. */
function compareOrdered(tNum, tIdx, oNum, oIdx, cols) {
  let bad = 0;
  let first = null;
  if (tNum.length !== oNum.length) return { bad: -1, first: `row count ${tNum.length} vs ${oNum.length}` };
  for (let r = 0; r < tNum.length; r++) {
    if (tNum[r] !== oNum[r]) { bad++; first ??= `row ${r}: num ${tNum[r]} vs ${oNum[r]}`; continue; }
    for (let j = 0; j < tNum[r]; j++) {
      if (tIdx[r * cols + j] !== oIdx[r * cols + j]) { bad++; first ??= `row ${r}: index ${j}: ${tIdx[r * cols + j]} vs ${oIdx[r * cols + j]}`; break; }
    }
  }
  return { bad, first };
}

async function timeIt(fn) {
  for (let i = 0; i < 3; i++) { const bm = await fn(); await synchronize(device); bm.dispose(); }
  const ts = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    const bm = await fn();
    await synchronize(device);
    const t1 = process.hrtime.bigint();
    ts.push(Number(t1 - t0) / 1e6);
    bm.dispose();
  }
  ts.sort((a, b) => a - b);
  return { median: ts[Math.floor(ts.length / 2)], min: ts[0] };
}

const results = [];
let failures = 0;
for (const c of manifest.cases) {
  const mod = modFor(c);
  const opts = { device, blockSize: manifest.block ?? 128 };
  const make = () => createBlockMask(mod, c.B, c.H, c.S, c.S, opts);
  // The generic path as well (GPU kernel; host evaluator on a cpu dry run), for built-ins at S <= 8192.
  const generic = device === 'cpu' ? 'cpu' : 'gpu';
  const makeGeneric = c.kind !== 'document' && c.S <= 8192 && (device !== 'cpu' || c.S <= 2500)
    ? () => createBlockMask(mod, c.B, c.H, c.S, c.S, { ...opts, path: generic }) : null;
  const r = { name: c.name, kind: c.kind, B: c.B, H: c.H, S: c.S };
  const check = (bm, label) => {
    if (!c.arrays) return;
    const cols = bm.numKvBlocks;
    const t = Object.fromEntries(Object.keys(c.arrays).map((a) => [a, readI32(join(torchDir, `${c.name}.${a}.bin`))]));
    const shapeOk = JSON.stringify(c.arrays.kv_indices) === JSON.stringify([bm.B, bm.H, bm.numQBlocks, bm.numKvBlocks]);
    const p = compareOrdered(t.kv_num_blocks, t.kv_indices, bm.host.kvNumBlocks, bm.host.kvIndices, cols);
    const f = compareOrdered(t.full_kv_num_blocks, t.full_kv_indices, bm.host.fullKvNumBlocks, bm.host.fullKvIndices, cols);
    const ok = shapeOk && p.bad === 0 && f.bad === 0;
    r.match = (r.match ?? true) && ok;
    if (!ok) {
      failures++;
      (r.mismatch ??= {})[label] = { shape: shapeOk ? 'ok' : `torch ${JSON.stringify(c.arrays.kv_indices)}`, partial: p, full: f };
    }
    r.sparsityTorch = c.sparsity;
    r.sparsityOurs = bm.sparsity();
  };
  const bm = await make();
  r.path = bm.method;
  check(bm, bm.method);
  bm.dispose();
  if (makeGeneric) {
    const g = await makeGeneric();
    check(g, g.method);
    g.dispose();
  }
  if (c.eager_ms !== undefined || c.eager_error !== undefined || c.compiled_ms !== undefined) {
    const t = await timeIt(make);
    r.oursMs = t.median;
    r.oursMinMs = t.min;
    if (c.eager_ms !== undefined) { r.torchEagerMs = c.eager_ms; r.speedupVsEager = c.eager_ms / t.median; }
    if (c.eager_error) r.torchEagerError = c.eager_error;
    if (c.compiled_ms !== undefined) { r.torchCompiledMs = c.compiled_ms; r.speedupVsCompiled = c.compiled_ms / t.median; }
    if (makeGeneric) {
      const tg = await timeIt(makeGeneric);
      r.oursGenericPath = generic;
      r.oursGenericMs = tg.median;
      if (c.eager_ms !== undefined) r.genericSpeedupVsEager = c.eager_ms / tg.median;
    }
  }
  results.push(r);
}

const f = (x, d = 3) => (x === undefined ? '-' : x.toFixed(d));
console.log(`\nblock masks, ${gpuName}, torch ${manifest.torch} on ${manifest.device}, block 128, median of ${reps}`);
console.log('| case | B×H | path | match torch | torch eager ms | torch compiled ms | ours ms | ours vs eager | ours generic-kernel ms | generic vs eager |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
const x = (v) => (v === undefined ? '-' : `${v.toFixed(1)}×`);
for (const r of results) {
  console.log(`| ${r.name} | ${r.B}×${r.H} | ${r.path} | ${r.match === undefined ? '-' : r.match ? 'yes' : 'NO'} | ` +
    `${r.torchEagerError ? r.torchEagerError.slice(0, 30) : f(r.torchEagerMs)} | ${f(r.torchCompiledMs)} | ${f(r.oursMs)} | ` +
    `${x(r.speedupVsEager)} | ${f(r.oursGenericMs)} | ${x(r.genericSpeedupVsEager)} |`);
}
for (const r of results) if (r.mismatch) console.log(`MISMATCH ${r.name}: ${JSON.stringify(r.mismatch)}`);
writeFileSync(outJson, JSON.stringify({
  gpu: gpuName, torch: manifest.torch, torchDevice: manifest.device, reps, block: manifest.block ?? 128,
  date: new Date().toISOString(), results,
}, null, 1));
console.log(`wrote ${outJson}; ${failures ? `${failures} case(s) differ from PyTorch` : 'all cases match PyTorch'}`);
process.exit(failures ? 1 : 0);
