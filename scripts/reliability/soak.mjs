// Soak phase: for --minutes, random attention calls (shapes small to medium with
// odd lengths, bf16/f16, head dims 32-256, GQA, cross-attention, built-in masks and
// score mods, random mods from the tests' generator (test/random-mods.ts, built to
// dist/test/), both kernel families)
// with --concurrency calls in flight; every --check-every'th result is compared
// with the CPU reference and every other one must at least be finite (the built-in
// mods never produce NaN). memoryStats() at the start and, after everything is
// disposed and emptyCache(), at the end; event-loop delay throughout. Progress is
// written to soak.json every --progress-seconds, so a run cut short (or one that
// runs detached across two device calls) still leaves its figures.
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { compare, delaySummary, describeError, environment, load, loadInternals, phaseArgs, writeJson } from './common.mjs';
import { hostFns, referenceAttention } from './reference.mjs';

const a = phaseArgs('soak', {
  minutes: { type: 'string', default: '10.5' },
  concurrency: { type: 'string', default: '8' },
  'check-every': { type: 'string', default: '3' },
  'progress-seconds': { type: 'string', default: '30' },
  'max-seq': { type: 'string' },
}, 'Random attention calls for --minutes with several in flight; writes soak.json as it goes.');
const { fa, device, gpu } = await load(a.device);
const { random } = await loadInternals();
const { Tensor } = fa;
const MINUTES = Number(a.minutes), K = Number(a.concurrency), N = Number(a['check-every']);
const MAX_SEQ = Number(a['max-seq'] ?? (gpu ? 2048 : 160));
const file = join(a.results, 'soak.json');
const rng = random.mulberry32(a.seed * 104729);
const pick = (xs) => xs[Math.floor(rng() * xs.length)];
const int = (lo, hi) => lo + Math.floor(rng() * (hi - lo + 1));
const hopper = gpu && fa.deviceInfo().gpus[0]?.computeCapability === '9.0';

// A fixed pool of random mods: each is compiled once per kernel variant it meets,
// so the soak exercises the JIT without being bound by it.
const randomMasks = Array.from({ length: 8 }, () => random.randomMod(rng, { kind: 'mask', depth: 4, tensors: false }));
const randomScores = Array.from({ length: 8 }, () => random.randomMod(rng, { kind: 'score', depth: 3, tensors: false }));
// Random mods with a float op that jumps with its inputs (float mod/floorDiv/comparisons, float -> int) still
// run (JIT, kernels, memory), but their outputs are not compared: a last-bit difference in a score (summation
// order) may land on either side of a step — `0.001 % score^3` is finite on the GPU and NaN on the CPU when the
// CPU's score^3 rounds to 0. The same rule as test/gpu/mods-diff.test.ts.
const illConditioned = (c) => (c.score === 'random' && !random.structurallyContinuous(randomScores[c.randomScore].mod.ir))
  || (c.mask === 'random' && randomMasks[c.randomMask].mod.ir.nodes.some((n) => n.type === 'float'));
const paramWindow = fa.maskMod(({ q, kv }) => q.sub(kv).abs().le(fa.param('w', 'int')));

function randomLen() {
  const r = rng();
  if (r < 0.1) return 1;
  if (r < 0.2) return 77;
  return 1 + Math.floor(MAX_SEQ * rng() * rng());
}

function randomCase() {
  const Hkv = int(1, 2);
  const Sq = randomLen();
  const cross = rng() < 0.3;
  const Skv = cross ? randomLen() : Sq;
  const D = rng() < 0.85 ? pick([64, 128]) : pick([32, 96, 256]);
  const op = rng() < 0.2 ? 'sdpa' : 'flex';
  const masks = ['none', 'causal', 'sliding', 'causal+sliding', 'prefixLM', 'param window', 'random'];
  if (!cross) masks.push('document', 'document');
  return {
    op, B: int(1, 3), Hq: Hkv * pick([1, 2, 4]), Hkv, Sq, Skv, D, dtype: pick(['bf16', 'f16']),
    mask: op === 'sdpa' ? pick(['none', 'causal']) : pick(masks),
    score: op === 'sdpa' ? 'none' : pick(['none', 'none', 'softcap', 'alibi', 'random']),
    family: gpu && rng() < 0.3 ? 'sm80' : 'auto',
    w: pick([64, 128, 256, 500, 1000]), n: pick([16, 100, 333]), cap: pick([20, 30, 50]),
    randomMask: int(0, randomMasks.length - 1), randomScore: int(0, randomScores.length - 1),
    pw: int(0, 300), seed: int(1, 2 ** 30),
  };
}

/** Builds the call's mods; captured tensors go to `held`. */
function mods(c, held) {
  const params = {};
  let mask, score;
  switch (c.mask) {
    case 'causal': mask = fa.causal(); break;
    case 'sliding': mask = fa.slidingWindow(c.w); break;
    case 'causal+sliding': mask = fa.andMasks(fa.causal(), fa.slidingWindow(c.w)); break;
    case 'prefixLM': mask = fa.prefixLM(c.n); break;
    case 'param window': mask = paramWindow; params.w = c.pw; break;
    case 'random': mask = randomMasks[c.randomMask].mod; Object.assign(params, randomMasks[c.randomMask].params); break;
    case 'document': {
      const ids = new Int32Array(c.B * c.Sq);
      for (let b = 0, r = random.mulberry32(c.seed); b < c.B; b++) { let d = 0; for (let s = 0; s < c.Sq; s++) { if (r() < 0.01) d++; ids[b * c.Sq + s] = d; } }
      const t = Tensor.fromHost(ids, [c.B, c.Sq], 'i32', { device });
      held.push(t);
      mask = fa.documentMask(t);
      break;
    }
    default: break;
  }
  switch (c.score) {
    case 'softcap': score = fa.softcap(c.cap); break;
    case 'alibi': { const t = Tensor.fromHost(fa.alibiSlopes(c.Hq), [c.Hq], 'f32', { device }); held.push(t); score = fa.alibi(t); break; }
    case 'random': score = randomScores[c.randomScore].mod; Object.assign(params, randomScores[c.randomScore].params); break;
    default: break;
  }
  return { mask, score, params };
}

function call(c, q, k, v, m, bm, backend) {
  if (c.op === 'sdpa') {
    return fa.scaledDotProductAttention(q, k, v, { isCausal: c.mask === 'causal', enableGQA: true, ...(backend ? { backend } : {}) });
  }
  return fa.flexAttention(q, k, v, {
    enableGQA: true, ...(bm ? { blockMask: bm } : {}), ...(m.score ? { scoreMod: m.score } : {}), params: m.params,
    ...(backend ? { backend } : c.family === 'sm80' ? { kernelOptions: { family: 'sm80' } } : {}),
  }).then((r) => r.out);
}

const state = {
  phase: 'soak', status: 'running', env: environment(fa, device), pid: process.pid,
  requestedMinutes: MINUTES, concurrency: K, checkEvery: N, maxSeq: MAX_SEQ,
  startedAt: new Date().toISOString(), elapsedMinutes: 0,
  calls: 0, completed: 0, checked: 0, finiteChecked: 0, notCompared: 0, failures: 0, errors: 0,
  byOp: {}, byMask: {}, byScore: {}, byDtype: {}, byFamily: {}, errorCodes: {}, failureSamples: [],
};
const count = (o, key) => { o[key] = (o[key] ?? 0) + 1; };
const t0 = performance.now();
const eld = monitorEventLoopDelay({ resolution: 1 });
eld.enable();
if (gpu) state.statsStart = fa.memoryStats();

async function one(index) {
  const c = randomCase();
  const held = [];
  state.calls++;
  try {
    const q = Tensor.randn([c.B, c.Hq, c.Sq, c.D], c.dtype, { device, seed: c.seed });
    const k = Tensor.randn([c.B, c.Hkv, c.Skv, c.D], c.dtype, { device, seed: c.seed + 1 });
    const v = Tensor.randn([c.B, c.Hkv, c.Skv, c.D], c.dtype, { device, seed: c.seed + 2 });
    held.push(q, k, v);
    const m = mods(c, held);
    // A random mask may read h: its block mask needs every head (H = 1 broadcasts head 0's blocks).
    const bm = c.op === 'flex' && m.mask ? await fa.createBlockMask(m.mask, c.B, c.mask === 'random' ? c.Hq : 1, c.Sq, c.Skv, { device, params: m.params }) : undefined;
    if (bm) held.push(bm);
    const out = await call(c, q, k, v, m, bm, device === 'cpu' ? 'cpu' : undefined);
    held.push(out);
    const got = await out.toFloat32();
    state.completed++;
    const randomMod = c.mask === 'random' || c.score === 'random';
    let verdict = { ok: true };
    if (index % N === 0 && illConditioned(c)) {
      state.notCompared++;
    } else if (index % N === 0) {
      let want;
      if (gpu) {
        const r = await call(c, q, k, v, m, bm, 'cpu');
        held.push(r);
        want = await r.toFloat32();
      } else {
        const fns = c.op === 'sdpa' ? { keep: c.mask === 'causal' ? (b, h, qi, kv) => kv <= qi : undefined } : await hostFns(m.mask, m.score, m.params);
        want = referenceAttention({
          q: await q.toFloat32(), k: await k.toFloat32(), v: await v.toFloat32(), B: c.B, Hq: c.Hq, Hkv: c.Hkv, Sq: c.Sq, Skv: c.Skv, D: c.D,
          scale: 1 / Math.sqrt(c.D), keep: fns.keep, score: fns.score,
        }).out;
      }
      // GPU transcendental approximations loosen the bound for random score mods, as in the GPU tests.
      verdict = compare(got, want, randomMod ? 3e-2 : 1e-2);
      state.checked++;
    } else if (!randomMod) {
      const bad = got.findIndex((x) => !Number.isFinite(x));
      verdict = bad < 0 ? { ok: true } : { ok: false, reason: `non-finite output ${got[bad]} at ${bad}` };
      state.finiteChecked++;
    }
    if (!verdict.ok) {
      state.failures++;
      if (state.failureSamples.length < 20) {
        state.failureSamples.push({ case: c, reason: verdict.reason, ...(c.mask === 'random' ? { mask: String(randomMasks[c.randomMask].mod) } : {}), ...(c.score === 'random' ? { score: String(randomScores[c.randomScore].mod) } : {}) });
      }
    }
  } catch (e) {
    state.errors++;
    const d = describeError(e);
    count(state.errorCodes, d.code ?? d.name);
    if (state.failureSamples.length < 20) state.failureSamples.push({ case: c, error: d });
  } finally {
    for (const t of held) t.dispose();
  }
  count(state.byOp, c.op); count(state.byMask, c.mask); count(state.byScore, c.score); count(state.byDtype, c.dtype); count(state.byFamily, c.family);
}

function progress() {
  state.elapsedMinutes = (performance.now() - t0) / 60000;
  state.callsPerSecond = state.completed / Math.max(1e-9, (performance.now() - t0) / 1000);
  state.eventLoopDelay = delaySummary(eld);
  if (gpu) state.statsNow = fa.memoryStats();
  state.updatedAt = new Date().toISOString();
  writeJson(file, state);
}

progress();
const timer = setInterval(progress, Number(a['progress-seconds']) * 1000);
const deadline = t0 + MINUTES * 60000;
const inflight = new Set();
let index = 0;
while (performance.now() < deadline) {
  while (inflight.size < K) {
    const p = one(index++).finally(() => inflight.delete(p));
    inflight.add(p);
  }
  await Promise.race(inflight);
}
await Promise.all(inflight);
clearInterval(timer);
eld.disable();
if (gpu) {
  await fa.synchronize();
  fa.emptyCache();
  state.statsEnd = fa.memoryStats();
  state.memoryBack = state.statsEnd.allocatedBytes === state.statsStart.allocatedBytes;
}
state.durationMinutes = (performance.now() - t0) / 60000;
state.checksPass = state.failures === 0 && state.errors === 0 && (state.memoryBack ?? true);
state.status = 'done';
state.kernelsLoaded = gpu ? (await fa.jitStatus()).length : 0;
progress();
process.exitCode = state.checksPass ? 0 : 1;
console.log(`soak: ${state.durationMinutes.toFixed(2)} min, ${state.completed} calls (${state.checked} checked against the reference, ${state.finiteChecked} checked finite), ` +
  `${state.failures} failures, ${state.errors} errors${gpu ? `, allocated ${state.statsStart.allocatedBytes} -> ${state.statsEnd.allocatedBytes}` : ''}, ` +
  `event-loop delay p99 ${state.eventLoopDelay.p99Ms} ms max ${state.eventLoopDelay.maxMs} ms`);
