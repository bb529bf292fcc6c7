// Dispose phase: inputs disposed while their call is in flight, with the allocator
// churning (blocks of the same sizes taken, filled with random data and given back
// between the calls), several calls in flight at once. Each result must be right
// (against the CPU reference computed from undisposed copies) or a typed error,
// never garbage. Which of the two happened is recorded per variant: until ops retain
// their inputs when called (issue 17, item 8) a DisposedError is expected.
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { compare, describeError, environment, load, loadInternals, phaseArgs, sleep, writeJson } from './common.mjs';

const a = phaseArgs('dispose', {
  rounds: { type: 'string', default: '24' },
  concurrency: { type: 'string', default: '8' },
  churn: { type: 'string', default: '6' },
}, 'Disposes inputs of in-flight calls under allocator churn; writes dispose.json.');
const { fa, device, gpu } = await load(a.device);
const { random } = await loadInternals();
const { Tensor } = fa;
const rng = random.mulberry32(a.seed * 7919);
const pick = (xs) => xs[Math.floor(rng() * xs.length)];
const int = (lo, hi) => lo + Math.floor(rng() * (hi - lo + 1));
const ROUNDS = Number(a.rounds), K = Number(a.concurrency), CHURN = Number(a.churn);
const VARIANTS = ['control (nothing disposed)', 'q, k, v disposed after the call', 'q, k, v and block mask + ids disposed', 'disposed through views', 'output: toHost() then dispose()'];
const file = join(a.results, 'dispose.json');
const stats0 = gpu ? fa.memoryStats() : null;
const t0 = performance.now();

function randomCase() {
  const S = pick([1, 77, int(2, 700)]);
  const Hkv = pick([1, 2]);
  return {
    op: pick(['sdpa', 'flex', 'flex']), mask: pick(['causal', 'sliding', 'document', 'none']),
    B: int(1, 2), Hq: Hkv * pick([1, 2]), Hkv, S, D: pick([64, 128]), dtype: pick(['bf16', 'f16']),
    variant: int(0, VARIANTS.length - 1), seed: int(1, 2 ** 30),
  };
}

/** CPU originals (kept) and device copies (disposed by the variant); the mask is built per device. */
async function prepare(c) {
  const shape = (H) => [c.B, H, c.S, c.D];
  const host = {
    q: Tensor.randn(shape(c.Hq), c.dtype, { device: 'cpu', seed: c.seed }),
    k: Tensor.randn(shape(c.Hkv), c.dtype, { device: 'cpu', seed: c.seed + 1 }),
    v: Tensor.randn(shape(c.Hkv), c.dtype, { device: 'cpu', seed: c.seed + 2 }),
  };
  const dev = {};
  for (const n of ['q', 'k', 'v']) dev[n] = Tensor.fromHost(await host[n].toHost(), host[n].shape, c.dtype, { device });
  const ids = Int32Array.from({ length: c.S }, (_, i) => Math.floor(i / 50));
  const mk = async (where) => {
    if (c.op !== 'flex' || c.mask === 'none') return {};
    const idsT = c.mask === 'document' ? Tensor.fromHost(ids, [c.S], 'i32', { device: where }) : undefined;
    const m = c.mask === 'causal' ? fa.causal() : c.mask === 'sliding' ? fa.slidingWindow(37) : fa.documentMask(idsT);
    return { bm: await fa.createBlockMask(m, 1, 1, c.S, c.S, { device: where }), idsT };
  };
  const hm = await mk('cpu');
  const ref = await run(c, host, hm.bm, 'cpu');
  const want = await ref.toFloat32();
  ref.dispose();
  for (const t of [...Object.values(host), hm.bm, hm.idsT]) t?.dispose();
  return { dev, ...(await mk(device)), want };
}

function run(c, t, bm, backend) {
  const b = backend === 'cpu' ? { backend: 'cpu' } : {};
  if (c.op === 'sdpa') return fa.scaledDotProductAttention(t.q, t.k, t.v, { isCausal: c.mask !== 'none', enableGQA: true, ...b });
  return fa.flexAttention(t.q, t.k, t.v, { enableGQA: true, ...(bm ? { blockMask: bm } : {}), ...b }).then((r) => r.out);
}

// ---- allocator churn: take blocks of the sizes just given back and overwrite them
const pool = [];
let churned = 0;
function churn(sizes) {
  for (let i = 0; i < CHURN; i++) {
    const n = rng() < 0.6 ? pick(sizes) : int(1, 1 << 20);
    pool.push(Tensor.randn([n], rng() < 0.5 ? 'bf16' : 'f16', { device, seed: int(1, 2 ** 30) }));
    churned++;
  }
  while (pool.length > 48 || (pool.length && rng() < 0.4)) pool.splice(int(0, pool.length - 1), 1)[0].dispose();
}

const byVariant = Object.fromEntries(VARIANTS.map((v) => [v, { correct: 0, typed: {}, wrong: 0, untyped: 0 }]));
const wrong = [];
let calls = 0;
for (let round = 0; round < ROUNDS; round++) {
  const cases = Array.from({ length: K }, randomCase);
  const prepared = await Promise.all(cases.map(prepare));
  const flights = [];
  for (let i = 0; i < K; i++) {
    const c = cases[i], p = prepared[i];
    const sizes = [p.dev.q.numel, p.dev.k.numel, c.B * c.Hq * c.S * c.D];
    let promise = run(c, p.dev, p.bm, device === 'cpu' ? 'cpu' : undefined);
    switch (c.variant) {
      case 1: for (const t of Object.values(p.dev)) t.dispose(); break;
      case 2: for (const t of [...Object.values(p.dev), p.bm, p.idsT]) t?.dispose(); break;
      case 3: p.dev.q.transpose(1, 2).dispose(); p.dev.k.narrow(2, 0, 1).dispose(); p.dev.v.select(0, 0).dispose(); break;
      case 4: promise = promise.then(async (out) => { const h = out.toHost(); out.dispose(); churn(sizes); return { bits: await h, dtype: c.dtype }; }); break;
      default: break;
    }
    churn(sizes);
    flights.push(promise.then((r) => ({ r }), (e) => ({ e })).then((x) => ({ ...x, c, p })));
    if (rng() < 0.5) await sleep(0); // let earlier calls progress between launches
  }
  for (const f of await Promise.all(flights)) {
    calls++;
    const slot = byVariant[VARIANTS[f.c.variant]];
    if (f.e) {
      const d = describeError(f.e);
      if (d.typed) slot.typed[d.code] = (slot.typed[d.code] ?? 0) + 1;
      else { slot.untyped++; wrong.push({ case: f.c, error: d }); }
    } else {
      let got;
      if (f.r.bits) got = f.c.dtype === 'bf16' ? Float32Array.from(f.r.bits, fa.bf16BitsToF32) : Float32Array.from(f.r.bits, fa.f16BitsToF32);
      else { got = await f.r.toFloat32(); f.r.dispose(); }
      const cmp = compare(got, f.p.want, 1e-2);
      if (cmp.ok) slot.correct++;
      else { slot.wrong++; wrong.push({ case: f.c, reason: cmp.reason }); }
    }
    for (const t of [...Object.values(f.p.dev), f.p.bm, f.p.idsT]) t?.dispose();
  }
}
for (const t of pool.splice(0)) t.dispose();
const res = {
  phase: 'dispose', env: environment(fa, device), calls, rounds: ROUNDS, concurrency: K, churnTensors: churned,
  seconds: (performance.now() - t0) / 1000, byVariant, wrong: wrong.slice(0, 20),
  wrongCount: wrong.length,
};
if (gpu) {
  fa.emptyCache();
  res.statsStart = stats0;
  res.statsEnd = fa.memoryStats();
  res.memoryBack = res.statsEnd.allocatedBytes === stats0.allocatedBytes;
  if (!res.memoryBack && typeof globalThis.gc === 'function') {
    // Blocks only the FinalizationRegistry backstop returns (a call that failed after allocating its output).
    for (let i = 0; i < 3; i++) { globalThis.gc(); await sleep(50); }
    fa.emptyCache();
    res.allocatedAfterGc = fa.memoryStats().allocatedBytes;
  }
}
res.pass = wrong.length === 0 && calls === ROUNDS * K;
writeJson(file, res);
process.exitCode = res.pass ? 0 : 1;
for (const [v, s] of Object.entries(byVariant)) console.log(`${v}: ${s.correct} correct, typed ${JSON.stringify(s.typed)}, ${s.wrong} wrong, ${s.untyped} untyped`);
console.log(`dispose: ${res.pass ? 'PASS' : 'FAIL'}: ${calls} calls, ${churned} churn tensors, ${res.seconds.toFixed(1)} s` +
  (gpu ? `, allocated ${stats0.allocatedBytes} -> ${res.statsEnd.allocatedBytes}${res.allocatedAfterGc !== undefined ? ` (${res.allocatedAfterGc} after GC)` : ''}` : ''));
