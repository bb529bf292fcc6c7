// Host overhead per call and two S=8192 flex cases for one build of the package, so that several builds
// (e.g. old commits built into other directories) can be compared on the same card in one GPU call:
//   node bench/compare-builds.mjs <package root>   (prints one JSON line)
import { pathToFileURL } from 'node:url';
import { join, resolve } from 'node:path';
const root = resolve(process.argv[2] ?? '.');
const L = await import(pathToFileURL(join(root, 'dist/lib/index.js')).href);
const device = 'cuda:0';
const now = () => performance.now();
const disp = (r) => { if (r?.out) { r.out.dispose(); r.lse?.dispose(); } else r?.dispose?.(); };
async function timeOp(op, calls) {
  for (let i = 0; i < 30; i++) disp(await op());
  await L.synchronize(device);
  const res = {};
  let t0 = now(); const ps = []; for (let i = 0; i < calls; i++) ps.push(op()); res.returnUs = (now() - t0) * 1e3 / calls;
  for (const r of await Promise.all(ps)) disp(r); await L.synchronize(device);
  const samples = [];
  for (let s = 0; s < 7; s++) { t0 = now(); for (let i = 0; i < calls; i++) disp(await op()); await L.synchronize(device); samples.push((now() - t0) * 1e3 / calls); }
  samples.sort((a, b) => a - b); res.awaitedUs = samples[3]; res.awaitedMinUs = samples[0];
  // GPU-bound: enqueue all, then wait (host cost hidden behind the kernels when they are longer)
  const g = [];
  for (let s = 0; s < 5; s++) { t0 = now(); const p = []; for (let i = 0; i < calls; i++) p.push(op()); for (const r of await Promise.all(p)) disp(r); await L.synchronize(device); g.push((now() - t0) * 1e3 / calls); }
  g.sort((a, b) => a - b); res.pipelinedUs = g[2];
  return res;
}
const out = { root, rows: {} };
{
  const mk = () => L.Tensor.randn([1, 1, 128, 64], 'bf16', { device });
  const q = mk(), k = mk(), v = mk();
  const bm = await L.createBlockMask(L.causal(), 1, 1, 128, 128, { device });
  const sc = L.softcap(30);
  out.rows['sdpa tiny causal'] = await timeOp(() => L.scaledDotProductAttention(q, k, v, { isCausal: true }), 400);
  out.rows['flex tiny causal+softcap'] = await timeOp(() => L.flexAttention(q, k, v, { blockMask: bm, scoreMod: sc }), 400);
}
{
  const mk = () => L.Tensor.randn([2, 16, 8192, 128], 'bf16', { device });
  const q = mk(), k = mk(), v = mk();
  const swa = await L.createBlockMask(L.andMasks(L.causal(), L.slidingWindow(1024)), 1, 1, 8192, 8192, { device });
  out.rows['flex swa1024 S8192 d128'] = await timeOp(() => L.flexAttention(q, k, v, { blockMask: swa }), 40);
  const cz = await L.createBlockMask(L.causal(), 1, 1, 8192, 8192, { device });
  out.rows['flex causal S8192 d128'] = await timeOp(() => L.flexAttention(q, k, v, { blockMask: cz }), 20);
  try {
    const fine = await import(pathToFileURL(join(root, 'dist/lib/cuda/schedules/fine.js')).href);
    out.fineScheduleBuilt = { swa: !!fine.builtFineSchedule(swa, {}), causal: !!fine.builtFineSchedule(cz, {}) };
  } catch { out.fineScheduleBuilt = 'n/a (older layout)'; }
}
console.log(JSON.stringify(out));
