// Out-of-memory phase: fill the card with allocations until the allocator (which
// frees its cache and retries once) gives up with OutOfMemoryError; with the card
// full an attention call must reject with OutOfMemoryError (typed, code
// ERR_FLEXATTN_OUT_OF_MEMORY), not crash or return garbage; then free everything,
// emptyCache(), and the next calls (a loaded kernel and one compiled after the OOM)
// must work and be right. Needs the GPU to itself: run it when the soak is over.
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { compare, compareLse, describeError, environment, load, phaseArgs, sleep, writeJson } from './common.mjs';

const a = phaseArgs('oom', { S: { type: 'string', default: '2048' } },
  'Fills the card until OutOfMemoryError, checks a call then fails typed, frees, and checks recovery. Writes oom.json.');
const { fa, device } = await load(a.device);
const file = join(a.results, 'oom.json');
const res = { phase: 'oom', env: environment(fa, device) };
if (device === 'cpu') {
  res.skipped = 'needs a GPU (host memory is not filled)';
  writeJson(file, res);
  console.log(`oom: skipped: ${res.skipped}`);
  process.exit(0);
}
const { Tensor } = fa;
const isOom = (e) => e instanceof fa.OutOfMemoryError && e.code === 'ERR_FLEXATTN_OUT_OF_MEMORY';
const S = Number(a.S), dims = [1, 8, S, 128];
const stats0 = fa.memoryStats();
res.statsStart = stats0;
const t0 = performance.now();

const q = Tensor.randn(dims, 'bf16', { device, seed: 11 });
const k = Tensor.randn(dims, 'bf16', { device, seed: 12 });
const v = Tensor.randn(dims, 'bf16', { device, seed: 13 });
const bm = await fa.createBlockMask(fa.causal(), 1, 1, S, S, { device });
const opts = { blockMask: bm, returnLse: true };
const cpuRef = await fa.flexAttention(q, k, v, { ...opts, backend: 'cpu' });
const want = { out: await cpuRef.out.toFloat32(), lse: await cpuRef.lse.toFloat32() };
cpuRef.out.dispose(); cpuRef.lse.dispose();

async function checkedCall(label, options = opts, ref = want) {
  const r = { label };
  try {
    const g = await fa.flexAttention(q, k, v, options);
    const c = compare(await g.out.toFloat32(), ref.out, 1e-2);
    const l = compareLse(await g.lse.toFloat32(), ref.lse);
    g.out.dispose(); g.lse.dispose();
    Object.assign(r, { outcome: 'completed', correct: c.ok && l.ok, relErr: c.relErr, ...(c.ok && l.ok ? {} : { reason: c.reason ?? l.reason }) });
  } catch (e) {
    Object.assign(r, { outcome: isOom(e) ? 'OutOfMemoryError' : 'other error', error: describeError(e) });
  }
  return r;
}

res.warm = await checkedCall('before filling (kernel loaded)');
// A score mod first compiled while the card is full (its reference made now, on the host).
const cap = fa.softcap(7.5);
const capRefRaw = await fa.flexAttention(q, k, v, { ...opts, scoreMod: cap, backend: 'cpu' });
const capRef = { out: await capRefRaw.out.toFloat32(), lse: await capRefRaw.lse.toFloat32() };
capRefRaw.out.dispose(); capRefRaw.lse.dispose();

// ---- fill: big chunks first, then smaller ones into what is left
const chunks = [];
const fill = [];
let filled = 0;
const total = res.env.totalMemoryBytes;
const tf = performance.now();
for (const size of [1 << 30, 64 << 20, 2 << 20, 64 << 10]) {
  const row = { chunkBytes: size, count: 0 };
  while (filled < total * 1.5) { // the bound only guards against an allocator that never says no
    try {
      chunks.push(Tensor.empty([size / 2], 'bf16', { device }));
      row.count++;
      filled += size;
    } catch (e) {
      row.stoppedBy = describeError(e);
      row.stoppedByOom = isOom(e);
      break;
    }
  }
  fill.push(row);
}
res.fill = { rows: fill, bytesFilled: filled, fractionOfCard: total ? filled / total : null, ms: performance.now() - tf, statsFull: fa.memoryStats() };
res.fill.allStoppedByOom = fill.every((r) => r.stoppedByOom);
console.log(`filled ${(filled / 2 ** 30).toFixed(2)} GiB of ${(total / 2 ** 30).toFixed(2)} GiB in ${fill.map((r) => `${r.count}x${r.chunkBytes >> 10}KiB`).join(' + ')}`);

// ---- calls with the card full
res.whileFull = [];
res.whileFull.push(await checkedCall('flexAttention, kernel already loaded'));
res.whileFull.push(await checkedCall('flexAttention, new score mod (compile + module load while full)', { ...opts, scoreMod: cap }, capRef));
try {
  const out = await fa.scaledDotProductAttention(q, k, v, { isCausal: true });
  res.whileFull.push({ label: 'scaledDotProductAttention', outcome: 'completed' });
  out.dispose();
} catch (e) {
  res.whileFull.push({ label: 'scaledDotProductAttention', outcome: isOom(e) ? 'OutOfMemoryError' : 'other error', error: describeError(e) });
}
try {
  Tensor.randn(dims, 'bf16', { device }).dispose();
  res.whileFull.push({ label: 'Tensor.randn', outcome: 'completed' });
} catch (e) {
  res.whileFull.push({ label: 'Tensor.randn', outcome: isOom(e) ? 'OutOfMemoryError' : 'other error', error: describeError(e) });
}
for (const r of res.whileFull) console.log(`while full: ${r.label}: ${r.outcome}${r.error ? ` (${r.error.name} ${r.error.code})` : ''}`);

// ---- free, empty the cache, recover
for (const c of chunks) c.dispose();
fa.emptyCache();
res.statsAfterFree = fa.memoryStats();
res.recovery = [
  await checkedCall('flexAttention after free + emptyCache'),
  await checkedCall('new score mod after recovery', { ...opts, scoreMod: cap }, capRef),
];
for (const r of res.recovery) console.log(`recovery: ${r.label}: ${r.outcome}, correct ${r.correct} (rel err ${r.relErr?.toExponential(2)})`);
for (const t of [q, k, v]) t.dispose();
bm.dispose();
fa.emptyCache();
res.statsEnd = fa.memoryStats();
res.oomRetries = res.statsEnd.numOomRetries - stats0.numOomRetries;
res.memoryBack = res.statsEnd.allocatedBytes === stats0.allocatedBytes;
if (!res.memoryBack && typeof globalThis.gc === 'function') {
  // What a failed call left behind is freed by the FinalizationRegistry backstop only: show how much.
  for (let i = 0; i < 3; i++) { globalThis.gc(); await sleep(50); }
  fa.emptyCache();
  res.allocatedAfterGc = fa.memoryStats().allocatedBytes;
}
res.seconds = (performance.now() - t0) / 1000;
const firstCall = res.whileFull[0];
res.pass = res.warm.correct === true && firstCall.outcome === 'OutOfMemoryError' && filled > 0 &&
  res.whileFull.every((r) => r.outcome === 'OutOfMemoryError' || (r.outcome === 'completed' && r.correct !== false)) &&
  res.recovery.every((r) => r.outcome === 'completed' && r.correct) && res.memoryBack;
writeJson(file, res);
process.exitCode = res.pass ? 0 : 1;
console.log(`oom: ${res.pass ? 'PASS' : 'FAIL'} (allocated ${stats0.allocatedBytes} -> ${res.statsEnd.allocatedBytes} bytes, ${res.oomRetries} OOM retries, ${res.seconds.toFixed(1)} s)`);
