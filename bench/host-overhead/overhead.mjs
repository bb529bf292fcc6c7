// node --require ./preload.cjs overhead.mjs <treeRoot> [--calls N] [--reps R] [--only flex|sdpa] [--json]
// Reproduces bench/run.mjs hostOverhead() on the fake addon.
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const argv = process.argv.slice(2);
const root = resolve(argv[0] ?? '.');
const opt = (k, d) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : d; };
const calls = Number(opt('--calls', 2000));
const reps = Number(opt('--reps', 1));
const only = opt('--only', '');
const json = argv.includes('--json');
if (!globalThis.__fakeAddon) throw new Error('run with --require preload.cjs');

const L = await import(pathToFileURL(join(root, 'dist', 'lib', 'index.js')).href);
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
function disposeResult(r) {
  if (!r) return;
  if (typeof r.dispose === 'function') { r.dispose(); return; }
  r.out?.dispose();
  r.lse?.dispose();
}

async function hostOverhead(device, calls) {
  const mk = () => L.Tensor.randn([1, 1, 128, 64], 'bf16', { device });
  const q = mk(), k = mk(), v = mk();
  const bm = await L.createBlockMask(L.causal(), 1, 1, 128, 128, { device });
  const sc = L.softcap(30);
  const ops = {
    sdpa: () => L.scaledDotProductAttention(q, k, v, { isCausal: true }),
    flex: () => L.flexAttention(q, k, v, { blockMask: bm, scoreMod: sc }),
  };
  const rows = [];
  for (const [name, op] of Object.entries(ops)) {
    if (only && name !== only) continue;
    for (let i = 0; i < 100; i++) disposeResult(await op());
    await L.synchronize(device);
    let ps = new Array(calls);
    let t0 = nowMs();
    for (let i = 0; i < calls; i++) ps[i] = op();
    const returnUs = (nowMs() - t0) * 1e3 / calls;
    for (const r of await Promise.all(ps)) disposeResult(r);
    await L.synchronize(device);
    ps = null;
    t0 = nowMs();
    for (let i = 0; i < calls; i++) disposeResult(await op());
    const awaitedUs = (nowMs() - t0) * 1e3 / calls;
    await L.synchronize(device);
    rows.push({ op: name, returnUs, awaitedUs });
  }
  bm.dispose();
  for (const t of [q, k, v]) t.dispose();
  return rows;
}

const before = globalThis.__fakeAddon.__launches();
for (let r = 0; r < reps; r++) {
  const rows = await hostOverhead('cuda:0', calls);
  for (const x of rows) {
    if (json) console.log(JSON.stringify({ tree: root, rep: r, ...x }));
    else console.log(`${root} rep ${r} ${x.op}: sync ${x.returnUs.toFixed(2)} us, awaited ${x.awaitedUs.toFixed(2)} us`);
  }
}
const launched = globalThis.__fakeAddon.__launches() - before;
if (!json) console.log(`kernel launches seen by the fake: ${launched}`);
