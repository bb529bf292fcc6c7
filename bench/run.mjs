#!/usr/bin/env node
// Attention benchmark suite: our kernels, timed from Node.js (`flexattn bench --help` lists the cases and flags).
//
//   npm run build:ts && node bench/run.mjs --out ours.json [--quick] [--only dense,flex,gqa,jit,overhead] [--case TEXT]
//   flexattn bench [same flags]
//   node bench/run.mjs --emit-cases DIR    # case list + doc ids for bench/torch_attention.py (no GPU)
//   node bench/run.mjs --dry-run           # builds every case and its pair count, no GPU work
//   node bench/run.mjs --smoke-cpu         # tiny shapes on the CPU backend: exercises the timing code
//
// What is timed (see bench/README.md): one sample = N back-to-back calls of the
// op (`await op()` resolves once the kernel is enqueued; the output is disposed
// right away, the stream-ordered allocator makes that safe) followed by
// `await synchronize()`; per-call time = sample wall time / N. N ≥ 20, raised so
// a sample lasts ≥ 10 ms (the synchronize round trip then costs < 1 %). The
// result is the median of REPS ≥ 20 samples after warm-up (1 call, a 5-call estimate, one n-call sample).
// TFLOPs = 4·D·Hq·(unmasked (q, kv) pairs summed over the batch) / time, pairs
// counted exactly from the mask definition (closed form per query row).
import { writeFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { spawnSync } from 'node:child_process';
import { parseArgs as nodeParseArgs } from 'node:util';
import { tmpdir } from 'node:os';
import { CASES_VERSION, buildCases, docIds, alibiSlopesF64 } from './cases.mjs';
import { buildDecodeCases } from './decode-cases.mjs';
import { raggedModule, runDecodeCase } from './decode.mjs';
import { BACKWARD_CASES_VERSION, buildBackwardCases } from './backward-cases.mjs';
import { flexSetup, formatBackwardRow, runBackwardCase } from './backward.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..');
const SELF = fileURLToPath(import.meta.url);

async function lib() {
  return import(pathToFileURL(join(ROOT, 'dist', 'lib', 'index.js')).href);
}

// backward last: it is opt-in (not part of a run without --only)
const GROUPS = ['dense', 'flex', 'gqa', 'decode', 'jit', 'overhead', 'backward'];

const USAGE = `usage: flexattn bench [options]        (or: node bench/run.mjs [options])

Times scaledDotProductAttention and flexAttention (bf16, cuda:0) on the
benchmark cases of bench/cases.mjs and prints one line per case (median time per
call, TFLOP/s counted on the unmasked (q, kv) pairs). Progress ("case i of N",
time left) goes to stderr, so stdout stays a clean table.

case groups (--only):
  dense     SDPA dense sweep: 16k tokens (B = 16384 / S), H = 16, D = 64 and 128,
            S = 512 ... 16384, causal and non-causal (24 cases)
  flex      flexAttention mask and score-mod patterns at B = 2, H = 16, S = 8192,
            D = 128: causal, sliding window, document-causal, prefix-LM, softcap,
            ALiBi, plus dense causal SDPA on the same shape as the reference
  gqa       grouped-query prefill, Hq = 32, Hkv = 8, S = 4096, D = 128, causal
            (SDPA and flex)
  decode    one query token against long KV (bench/decode-cases.mjs): contiguous,
            paged (page 16 and 64), a ragged batch of 64 sequences 1k-32k,
            softcap and sliding window; GB/s of K and V read
  jit       first call of a new flex kernel in a fresh process: cold (NVRTC
            compile, empty cache directory) and warm (kernel disk cache)
  overhead  host cost per call on a tiny shape (B = 1, H = 1, S = 128, D = 64)
  backward  gradients (bench/backward-cases.mjs): dense causal SDPA at D = 128
            and 64 and every flex pattern (plus a learnable relative-bias table
            with and without its gradient) at B = 2, H = 16, S = 8192;
            backward-only and forward + backward, and a determinism check;
            only when --only names it (not part of the default run)

options:
  --only GROUPS      comma-separated groups from the list above (default: all but backward)
  --case TEXT        only cases whose name contains TEXT (case-insensitive;
                     repeatable); see the names with --dry-run
  --quick            fewer, shorter samples (5 samples of >= 2 ms instead of 20 of >= 10 ms)
  --budget SECONDS   stop starting new cases after this long (default 150);
                     the cases left are recorded as skipped
  --reps N           samples per case (median reported; default 20, --quick 5)
  --n N              at least N back-to-back calls per sample (default 20, --quick 5)
  --out FILE.json    also write every result (with the card, versions and
                     timing method) to FILE.json; bench/report.mjs turns it into
                     bench/results/attention.<card>.{json,md,svg}
  --dry-run          list every case with its pair count and trace its mods; no GPU work
  --smoke-cpu        tiny shapes on the CPU backend (checks the timing code, not a benchmark)
  --emit-cases DIR   write the case list and document ids for bench/torch_attention.py
  -h, --help         show this text

See bench/README.md for the method and for timing PyTorch on the same cases.`;

/** One-line message for a bad command line (node:util's parseArgs messages run to several sentences). */
function argError(e) {
  const name = /'([^']*)'/.exec(e?.message ?? '')?.[1];
  if (e?.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown option '${name}'`;
  if (e?.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') return `unexpected argument '${name}'`;
  if (e?.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') { const m = String(e.message).split('. ')[0]; return m[0].toLowerCase() + m.slice(1); }
  return String(e?.message ?? e);
}

function positiveNumber(name, text, integer) {
  const x = Number(text);
  if (!(x > 0) || (integer && !Number.isInteger(x))) throw new Error(`--${name} needs a positive ${integer ? 'integer' : 'number'}, got '${text}'`);
  return x;
}

/** Strict command line (unknown options are errors); throws with a one-line message. */
export function parseBenchArgs(argv) {
  let v;
  try {
    ({ values: v } = nodeParseArgs({
      args: argv, strict: true, allowPositionals: false,
      options: {
        out: { type: 'string' }, quick: { type: 'boolean' }, 'dry-run': { type: 'boolean' },
        'smoke-cpu': { type: 'boolean' }, only: { type: 'string' }, case: { type: 'string', multiple: true },
        budget: { type: 'string' }, reps: { type: 'string' }, n: { type: 'string' }, 'emit-cases': { type: 'string' },
        'first-call-child': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    throw new Error(argError(e));
  }
  let only = null;
  if (v.only !== undefined) {
    only = new Set(v.only.split(',').map((g) => g.trim()).filter(Boolean));
    const bad = [...only].filter((g) => !GROUPS.includes(g));
    if (bad.length || only.size === 0) throw new Error(`--only takes groups from ${GROUPS.join(',')}, got '${v.only}'`);
  }
  return {
    out: v.out ?? null, quick: !!v.quick, dryRun: !!v['dry-run'], smokeCpu: !!v['smoke-cpu'], only,
    cases: (v.case ?? []).map((t) => t.toLowerCase()),
    budget: v.budget === undefined ? 150 : positiveNumber('budget', v.budget, false),
    reps: v.reps === undefined ? null : positiveNumber('reps', v.reps, true),
    minN: v.n === undefined ? null : positiveNumber('n', v.n, true),
    emitCases: v['emit-cases'] ?? null, child: v['first-call-child'] ?? null, help: !!v.help,
  };
}

/** "1m05s" / "42s". */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/**
 * Progress on stderr: "[case i of N] name (elapsed, ~time left)". The estimate
 * is the mean time of the steps done so far times the steps left, capped by
 * what is left of the time budget (cases past it are skipped, not run).
 */
export function progressLine(i, total, name, elapsedS, budgetLeftS) {
  let left = '';
  if (i > 1) {
    const est = Math.min((elapsedS / (i - 1)) * (total - i + 1), Math.max(0, budgetLeftS));
    left = `, ~${formatDuration(est)} left`;
  }
  return `[case ${i} of ${total}] ${name} (${formatDuration(elapsedS)} elapsed${left})`;
}

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const median = (xs) => { const s = [...xs].sort((p, q) => p - q); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const tflops = (flops, ms) => flops / (ms * 1e-3) / 1e12;
const round = (x, d = 4) => (typeof x === 'number' && Number.isFinite(x) ? Number(x.toFixed(d)) : x);

function disposeResult(r) {
  if (!r) return;
  if (typeof r.dispose === 'function') { r.dispose(); return; }
  r.out?.dispose();
  r.lse?.dispose();
}

/**
 * Amortised per-call time of `op` (ms): median over `reps` samples of
 * (wall time of n back-to-back calls + one synchronize) / n.
 */
async function timeOp(L, device, op, { reps, minN, targetSampleMs }) {
  const run = async (n) => {
    const t0 = nowMs();
    for (let i = 0; i < n; i++) disposeResult(await op());
    await L.synchronize(device);
    return (nowMs() - t0) / n;
  };
  const first = await run(1); // compiles / loads the kernel
  await L.jitIdle(); // a tiered JIT kernel: time its optimized build, not the quick first tier
  const est = await run(Math.max(3, Math.min(minN, 5)));
  const n = Math.max(minN, Math.min(400, Math.ceil(targetSampleMs / Math.max(est, 1e-3))));
  await run(n);
  const samples = [];
  for (let r = 0; r < reps; r++) samples.push(await run(n));
  return { ms: median(samples), minMs: Math.min(...samples), maxMs: Math.max(...samples), n, reps, firstCallMs: first };
}

// ------------------------------------------------------------------ cases

function maskFor(L, c, device) {
  switch (c.pattern) {
    case 'causal': case 'softcap': case 'alibi': return L.causal();
    case 'swa': return L.slidingWindow(c.window);
    case 'prefix': return L.prefixLM(c.prefix);
    case 'doc': {
      const ids = L.Tensor.fromHost(docIds(c.B, c.S, c.docSeed, c.docMin, c.docSpan).ids, [c.B, c.S], 'i32', { device });
      return L.documentMask(ids);
    }
    default: throw new Error(`unknown pattern ${c.pattern}`);
  }
}

function scoreModFor(L, c, device) {
  if (c.pattern === 'softcap') return L.softcap(c.softcap);
  if (c.pattern === 'alibi') return L.alibi(L.Tensor.fromHost(Float32Array.from(alibiSlopesF64(c.Hq)), [c.Hq], 'f32', { device }));
  return undefined;
}

async function runCase(L, c, device, opts) {
  const mk = (H) => L.Tensor.randn([c.B, H, c.S, c.D], 'bf16', { device });
  const q = mk(c.Hq), k = mk(c.Hkv), v = mk(c.Hkv);
  const row = { id: c.id, group: c.group, op: c.op, B: c.B, Hq: c.Hq, Hkv: c.Hkv, S: c.S, D: c.D, pattern: c.pattern ?? null,
    causal: c.causal ?? null, pairs: c.pairs, density: c.density, flops: c.flops, ...(c.blockSize ? { blockSize: c.blockSize } : {}) };
  let bm;
  try {
    let op;
    if (c.op === 'sdpa') {
      const o = { isCausal: !!c.causal, ...(c.Hq !== c.Hkv ? { enableGQA: true } : {}) };
      op = () => L.scaledDotProductAttention(q, k, v, o);
    } else {
      const t0 = nowMs();
      bm = await L.createBlockMask(maskFor(L, c, device), c.pattern === 'doc' ? c.B : 1, 1, c.S, c.S,
        { device, ...(c.blockSize ? { blockSize: c.blockSize } : {}) });
      await L.synchronize(device);
      row.blockMaskMs = nowMs() - t0;
      row.blockMaskMethod = bm.method;
      row.blockDensity = 1 - bm.sparsity() / 100; // fraction of (q, kv) pairs inside computed blocks
      const sm = scoreModFor(L, c, device);
      const o = { blockMask: bm, ...(sm ? { scoreMod: sm } : {}), ...(c.Hq !== c.Hkv ? { enableGQA: true } : {}) };
      op = () => L.flexAttention(q, k, v, o);
    }
    const t = await timeOp(L, device, op, opts);
    Object.assign(row, t, { tflops: tflops(c.flops, t.ms) });
  } finally {
    bm?.dispose();
    for (const t of [q, k, v]) t.dispose();
  }
  return row;
}

// ------------------------------------------------------ first-call latency

/** Child process: times the first flexAttention call of new kernels (FLEXATTN_CACHE_DIR decides cold/warm). */
async function firstCallChild(device) {
  const t0 = nowMs();
  const L = await lib();
  const importMs = nowMs() - t0;
  const mk = () => L.Tensor.randn([1, 2, 1024, 128], 'bf16', { device });
  const t1 = nowMs();
  const q = mk(), k = mk(), v = mk();
  // Context, allocator and a precompiled dense kernel: kept out of the flex numbers.
  disposeResult(await L.scaledDotProductAttention(q, k, v, { isCausal: true }));
  await L.synchronize(device);
  const contextMs = nowMs() - t1;
  const bm = await L.createBlockMask(L.causal(), 1, 1, 1024, 1024, { device }); // analytic: no JIT
  const slopes = L.Tensor.fromHost(Float32Array.from(alibiSlopesF64(2)), [2], 'f32', { device });
  const kernels = [];
  for (const [name, sm] of [['softcap(30) + causal', L.softcap(30)], ['alibi + causal', L.alibi(slopes)]]) {
    const a = nowMs();
    disposeResult(await L.flexAttention(q, k, v, { blockMask: bm, scoreMod: sm }));
    await L.synchronize(device);
    const firstMs = nowMs() - a;
    const st = (await L.jitStatus()).filter((s) => s.kernel.startsWith('flexattn_flex_')).pop();
    const firstTier = st?.tier, firstOrigin = st?.origin, quickCompileMs = st?.quickCompileMs ?? null;
    await L.jitIdle(); // tiered JIT: the optimized build replaces the quick one
    const readyMs = nowMs() - a;
    const st2 = (await L.jitStatus()).filter((s) => s.kernel === st?.kernel).pop();
    const b = nowMs();
    disposeResult(await L.flexAttention(q, k, v, { blockMask: bm, scoreMod: sm }));
    await L.synchronize(device);
    kernels.push({ kernel: name, firstMs, secondMs: nowMs() - b, firstTier, firstOrigin, quickCompileMs,
      optimizedReadyMs: readyMs, optimizedCompileMs: st2?.compileMs ?? null, finalTier: st2?.tier, finalOrigin: st2?.origin });
  }
  process.stdout.write(`${JSON.stringify({ importMs, contextMs, kernels, cacheDir: process.env.FLEXATTN_CACHE_DIR })}\n`);
}

function spawnChild(device, cacheDir) {
  const r = spawnSync(process.execPath, [SELF, '--first-call-child', device], {
    // CUDA_CACHE_DISABLE: NVRTC results are also cached in the CUDA compute cache
    // (~/.nv/ComputeCache), which would turn the "cold" rows into cache hits; only
    // our own disk cache may serve the warm row.
    env: { ...process.env, FLEXATTN_CACHE_DIR: cacheDir, CUDA_CACHE_DISABLE: '1' }, encoding: 'utf8', timeout: 120_000,
  });
  if (r.status !== 0) throw new Error(`first-call child failed (status ${r.status}): ${(r.stderr || '').slice(-800)}`);
  const line = r.stdout.trim().split('\n').pop();
  return JSON.parse(line);
}

async function firstCall(device) {
  const dir = mkdtempSync(join(tmpdir(), 'flexattn-bench-cache-'));
  try {
    const cold = spawnChild(device, dir);
    const warm = spawnChild(device, dir);
    return { shape: 'B=1 H=2 S=1024 D=128 bf16, causal BlockMask', what: 'await flexAttention(...) + await synchronize(), first call of a kernel in a fresh process', cold, warmDisk: warm };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------ host overhead

export async function hostOverhead(L, device, calls) {
  const mk = () => L.Tensor.randn([1, 1, 128, 64], 'bf16', { device });
  const q = mk(), k = mk(), v = mk();
  const bm = await L.createBlockMask(L.causal(), 1, 1, 128, 128, { device });
  const sc = L.softcap(30);
  const ops = {
    'scaledDotProductAttention (causal)': () => L.scaledDotProductAttention(q, k, v, { isCausal: true }),
    'flexAttention (causal BlockMask + softcap)': () => L.flexAttention(q, k, v, { blockMask: bm, scoreMod: sc }),
  };
  // Steady state: the first rounds run while V8 is still optimising the call path, so each figure is the
  // median over ROUNDS rounds after a warm-up of `calls` calls (one round is 300-2000 calls).
  const ROUNDS = 5;
  const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
  const rows = [];
  for (const [name, op] of Object.entries(ops)) {
    for (let i = 0; i < calls; i++) disposeResult(await op());
    await L.synchronize(device);
    const ret = [], awaited = [], withSync = [], window8 = [];
    for (let round = 0; round < ROUNDS; round++) {
      // (a) the synchronous part: time for the call to return its promise (all calls in flight at once)
      let ps = new Array(calls);
      let t0 = nowMs();
      for (let i = 0; i < calls; i++) ps[i] = op();
      ret.push((nowMs() - t0) * 1e3 / calls);
      for (const r of await Promise.all(ps)) disposeResult(r);
      await L.synchronize(device);
      ps = null;
      // (b) awaited: call, await the enqueue, dispose; one synchronize at the end
      t0 = nowMs();
      for (let i = 0; i < calls; i++) disposeResult(await op());
      awaited.push((nowMs() - t0) * 1e3 / calls);
      await L.synchronize(device);
      withSync.push((nowMs() - t0) * 1e3 / calls);
      // (c) pipelined: 8 calls in flight, the oldest awaited and disposed before the next is issued
      // (how a server issues one layer's attention after another without waiting for each)
      t0 = nowMs();
      const win = [];
      for (let i = 0; i < calls; i++) { win.push(op()); if (win.length >= 8) disposeResult(await win.shift()); }
      for (const p of win) disposeResult(await p);
      window8.push((nowMs() - t0) * 1e3 / calls);
      await L.synchronize(device);
    }
    rows.push({ op: name, calls, rounds: ROUNDS, returnUs: median(ret), awaitedUs: median(awaited), withSyncUs: median(withSync),
      pipelinedUs: median(window8), awaitedMinUs: Math.min(...awaited) });
  }
  bm.dispose();
  for (const t of [q, k, v]) t.dispose();
  return { shape: 'B=1 H=1 S=128 D=64 bf16', rows };
}

// ------------------------------------------------------------------- main

export async function main(argv = []) {
  let a;
  try { a = parseBenchArgs(argv); } catch (e) { console.error(`flexattn bench: ${e.message}\n\n${USAGE}`); return 2; }
  if (a.help) { console.log(USAGE); return 0; }
  if (a.child) { await firstCallChild(a.child); return 0; }
  const tiny = a.smokeCpu;
  // The backward rows are opt-in (--only backward): they would double the default run's time.
  const withBackward = !!a.emitCases || !!a.only?.has('backward');
  const cases = [...buildCases({ tiny }), ...buildDecodeCases({ tiny }), ...(withBackward ? buildBackwardCases({ tiny }) : [])]
    .filter((c) => !a.cases.length || a.cases.some((t) => c.id.toLowerCase().includes(t)));
  if (!cases.length) { console.error(`flexattn bench: no case name contains ${a.cases.map((t) => `'${t}'`).join(' or ')} (see --dry-run)`); return 2; }
  if (a.emitCases) {
    mkdirSync(a.emitCases, { recursive: true });
    const docs = {};
    const docsBwd = {};
    for (const c of cases) {
      if (c.pattern !== 'doc') continue;
      const d = docIds(c.B, c.S, c.docSeed, c.docMin, c.docSpan);
      const file = `docids-B${c.B}-S${c.S}-seed${c.docSeed}.i32`;
      writeFileSync(join(a.emitCases, file), Buffer.from(d.ids.buffer));
      c.docIdsFile = file;
      (c.group === 'backward' ? docsBwd : docs)[c.id] = d.lengths;
    }
    // The attention cases for bench/torch_attention.py; the decode rows for bench/torch_decode.py.
    writeFileSync(join(a.emitCases, 'cases.json'),
      JSON.stringify({ version: CASES_VERSION, cases: cases.filter((c) => c.group !== 'decode' && c.group !== 'backward'), docLengths: docs }, null, 1));
    writeFileSync(join(a.emitCases, 'decode-cases.json'),
      JSON.stringify({ version: CASES_VERSION, cases: cases.filter((c) => c.group === 'decode') }, null, 1));
    // The backward rows for bench/torch_backward.py.
    writeFileSync(join(a.emitCases, 'backward-cases.json'),
      JSON.stringify({ version: BACKWARD_CASES_VERSION, cases: cases.filter((c) => c.group === 'backward'), docLengths: docsBwd }, null, 1));
    console.log(`wrote ${cases.length} cases to ${join(a.emitCases, 'cases.json')}`);
    return 0;
  }
  if (a.dryRun) {
    for (const c of cases) {
      if (c.group === 'decode') console.log(`${c.id.padEnd(44)} ${c.layout.padEnd(10)} B=${c.B} Hq=${c.Hq} Hkv=${c.Hkv} Skv=${c.Skv} D=${c.D} KV MB=${(c.kvBytes / 1e6).toFixed(1)}`);
      else if (c.group === 'backward') console.log(`${c.id.padEnd(50)} ${c.op.padEnd(5)} B=${c.B} Hq=${c.Hq} S=${c.S} D=${c.D} density=${c.density.toFixed(4)} bwd GFLOP=${(c.bwdFlops / 1e9).toFixed(1)}`);
      else console.log(`${c.id.padEnd(44)} ${c.op.padEnd(5)} B=${c.B} Hq=${c.Hq} Hkv=${c.Hkv} S=${c.S} D=${c.D} density=${c.density.toFixed(4)} GFLOP=${(c.flops / 1e9).toFixed(1)}`);
    }
    const L = await lib();
    for (const c of cases.filter((x) => x.op === 'flex' && x.group !== 'backward')) { maskFor(L, { ...c, B: 1, S: 256 }, 'cpu'); scoreModFor(L, c, 'cpu'); }
    for (const c of cases.filter((x) => x.group === 'backward' && x.op === 'flex')) {
      const own = [];
      flexSetup(L, { ...c, B: 1, S: 64 }, 'cpu', own);
      for (const t of own) t.dispose();
    }
    console.log(`dry run: ${cases.length} cases built (mods traced on the host); no GPU work`);
    return 0;
  }

  const L = await lib();
  const device = tiny ? 'cpu' : 'cuda:0';
  if (!tiny && !L.cudaAvailable()) {
    console.error('flexattn bench: no usable CUDA device (see `flexattn info`); use --dry-run or --smoke-cpu');
    return 2;
  }
  const info = L.deviceInfo();
  const gpu = tiny ? 'cpu (smoke test)' : info.gpus[0]?.name ?? '?';
  const opts = {
    reps: a.reps ?? (a.quick || tiny ? 5 : 20),
    minN: a.minN ?? (a.quick || tiny ? 5 : 20),
    targetSampleMs: a.quick || tiny ? 2 : 10,
  };
  const want = (g) => !a.only || a.only.has(g);
  // jit and overhead are not named cases: a --case filter leaves them out unless --only names them.
  const wantExtra = (g) => (a.only ? a.only.has(g) : !a.cases.length);
  // The decode rows need the GPU's ragged path (no CPU smoke run of them).
  const selected = cases.filter((c) => want(c.group) && !(tiny && c.group === 'decode'));
  const R = selected.some((c) => c.group === 'decode') ? await raggedModule(ROOT) : null;
  const steps = selected.length + (wantExtra('jit') && !tiny ? 1 : 0) + (wantExtra('overhead') ? 1 : 0);
  let step = 0;
  const t0 = nowMs();
  const deadline = t0 + a.budget * 1e3;
  const progress = (name) => {
    step++;
    process.stderr.write(`${progressLine(step, steps, name, (nowMs() - t0) / 1e3, (deadline - nowMs()) / 1e3)}\n`);
  };
  const result = {
    side: 'flexattn', version: CASES_VERSION, gpu, device, node: process.version,
    date: new Date().toISOString(), addon: { fatbinArchs: info.fatbinArchs, nvrtc: info.nvrtcVersion, driver: info.driverVersion },
    timing: { ...opts, method: 'median over reps of (wall time of n back-to-back awaited calls, output disposed, + await synchronize()) / n' },
    counting: 'exact unmasked (q,kv) pairs from the mask definition; FLOPs = 4*D*Hq*pairs(summed over batch)',
    cases: [], firstCall: null, hostOverhead: null, errors: [],
  };
  const save = () => { if (a.out) writeFileSync(a.out, JSON.stringify(result, null, 1)); };
  console.log(`flexattn bench on ${gpu} (${device}), reps=${opts.reps}, n>=${opts.minN}, budget ${a.budget}s`);
  for (const c of selected) {
    const bucket = () => (c.group === 'decode' ? (result.decode ??= []) : c.group === 'backward' ? (result.backward ??= []) : result.cases);
    if (nowMs() > deadline) { step++; bucket().push({ id: c.id, group: c.group, skipped: 'time budget' }); continue; }
    progress(c.id);
    try {
      if (c.group === 'decode') {
        const row = await runDecodeCase(L, R, c, device, opts, timeOp);
        (result.decode ??= []).push(row);
        console.log(`${c.id.padEnd(44)} ${row.ms.toFixed(4).padStart(9)} ms  ${row.gbs.toFixed(0).padStart(6)} GB/s    (n=${row.n}, spread ${((row.maxMs - row.minMs) / row.ms * 100).toFixed(1)}%)`);
        save();
        continue;
      }
      if (c.group === 'backward') {
        // Per-measurement errors (e.g. no CUDA backward yet) stay inside the row; the run goes on.
        const row = await runBackwardCase(L, c, device, opts, timeOp);
        (result.backward ??= []).push(row);
        if (row.error) result.errors.push(`${c.id}: ${row.error}`);
        console.log(formatBackwardRow(row));
        save();
        continue;
      }
      const row = await runCase(L, c, device, opts);
      result.cases.push(row);
      console.log(`${c.id.padEnd(44)} ${row.ms.toFixed(4).padStart(9)} ms  ${row.tflops.toFixed(1).padStart(6)} TFLOPs  (n=${row.n}, spread ${((row.maxMs - row.minMs) / row.ms * 100).toFixed(1)}%)`);
    } catch (e) {
      const msg = String(e?.stack ?? e).split('\n').slice(0, 3).join(' | ');
      bucket().push({ id: c.id, group: c.group, error: msg });
      result.errors.push(`${c.id}: ${msg}`);
      console.log(`${c.id.padEnd(44)} ERROR ${msg}`);
    }
    save();
  }
  if (wantExtra('jit') && !tiny) {
    progress('first call of a new flex kernel (cold and warm cache, child processes)');
    try {
      result.firstCall = await firstCall(device);
      for (const [k, r] of [['cold (empty cache dir)', result.firstCall.cold], ['warm disk cache', result.firstCall.warmDisk]]) {
        console.log(`first call, ${k}: ${r.kernels.map((x) => `${x.kernel} ${x.firstMs.toFixed(1)} ms (2nd call ${x.secondMs.toFixed(2)} ms)`).join('; ')}; import ${r.importMs.toFixed(0)} ms, context ${r.contextMs.toFixed(0)} ms`);
      }
    } catch (e) { result.errors.push(`firstCall: ${e.message}`); console.log(`first call: ERROR ${e.message}`); }
    save();
  }
  if (wantExtra('overhead')) {
    progress('host overhead per call');
    try {
      result.hostOverhead = await hostOverhead(L, device, a.quick || tiny ? 200 : 1000);
      for (const r of result.hostOverhead.rows) {
        console.log(`host overhead ${r.op}: returns promise in ${r.returnUs.toFixed(1)} us, awaited ${r.awaitedUs.toFixed(1)} us/call, pipelined (8 in flight) ${r.pipelinedUs.toFixed(1)} us/call, incl. final sync ${r.withSyncUs.toFixed(1)} us/call (medians of ${r.rounds} rounds)`);
      }
    } catch (e) { result.errors.push(`hostOverhead: ${e.message}`); console.log(`host overhead: ERROR ${e.message}`); }
  }
  result.totalSeconds = (nowMs() - t0) / 1e3;
  result.cases = result.cases.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, round(v, 6)])));
  save();
  if (a.out) console.log(`wrote ${a.out} (${result.totalSeconds.toFixed(1)} s)`);
  return result.errors.length ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === SELF) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e) => {
    console.error(e?.stack ?? String(e));
    process.exitCode = 1;
  });
}
