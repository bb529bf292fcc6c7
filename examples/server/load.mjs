// Load generator for the example server: hundreds of concurrent SSE streams of
// different prompt lengths over loopback with Node's built-in fetch; reports
// steps/s, tokens/s, time to first token, time per token (p50/p99), the
// server's event-loop delay and memory, and writes <out>.json and <out>.md.
//
//   node examples/server/load.mjs --url http://127.0.0.1:8080 --streams 256 --out bench/results/server.h100-80gb-hbm3
//   node examples/server/load.mjs --spawn --streams 32 --prompt 16-256 --max-tokens 32 --results-dir /tmp -- --device cpu
import { spawn } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { writeResults, cardSlug } from './load-report.mjs';
import { streamOnce } from './sse-client.mjs';

/** mulberry32: a small seeded generator, so a run's request mix can be repeated. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function range(text, name) {
  const m = /^(\d+)(?:-(\d+))?$/.exec(String(text));
  if (!m) throw new Error(`--${name} must be N or MIN-MAX, got ${JSON.stringify(text)}`);
  const lo = Number(m[1]), hi = Number(m[2] ?? m[1]);
  if (lo < 1 || hi < lo) throw new Error(`--${name}: need 1 <= MIN <= MAX, got ${text}`);
  return [lo, hi];
}

/** Nearest-rank percentile of an array (sorted here). */
function summary(values) {
  if (values.length === 0) return { n: 0, p50: 0, p99: 0, mean: 0, max: 0 };
  const s = Float64Array.from(values).sort();
  const at = (q) => s[Math.min(s.length - 1, Math.max(0, Math.ceil((q / 100) * s.length) - 1))];
  return { n: s.length, p50: at(50), p99: at(99), mean: s.reduce((a, b) => a + b, 0) / s.length, max: s[s.length - 1] };
}

async function getStats(url, reset = false) {
  const res = await fetch(`${url}/stats${reset ? '?reset=1' : ''}`);
  if (!res.ok) throw new Error(`GET /stats: HTTP ${res.status}`);
  return res.json();
}

/** Whether a stream's token events are i = 0, 1, 2, … with integer ids. */
function inOrder(tokens) {
  return tokens.every((t, j) => t.i === j && Number.isInteger(t.token) && t.token >= 0);
}

/**
 * Runs the load against a started server. Options: url, streams (concurrent
 * clients), requests (total, default = streams), prompt/maxTokens ([min, max]),
 * seed, disconnectFraction (that share of requests hang up halfway), maxRetries
 * (per request on 503), timeoutMs, warmup (short requests sent before the
 * measured window, which starts with a /stats reset). Resolves to the result object written by
 * load-report.mjs.
 */
export async function runLoad({
  url, streams = 256, requests, prompt = [64, 1024], maxTokens = [128, 128], seed = 1, disconnectFraction = 0,
  maxRetries = 1000, timeoutMs = 600_000, warmup = 2,
}) {
  const total = requests ?? streams;
  const rand = rng(seed);
  const pick = ([lo, hi]) => lo + Math.floor(rand() * (hi - lo + 1));
  const plan = Array.from({ length: total }, () => ({ promptTokens: pick(prompt), maxTokens: pick(maxTokens) }));
  // The first `hangUps` of a shuffled order disconnect halfway through their tokens.
  const hangUps = Math.round(disconnectFraction * total);
  const order = plan.map((_, j) => j);
  for (let j = total - 1; j > 0; j--) {
    const k = Math.floor(rand() * (j + 1));
    [order[j], order[k]] = [order[k], order[j]];
  }
  for (const j of order.slice(0, hangUps)) plan[j].abortAfter = Math.max(1, Math.floor(plan[j].maxTokens / 2));

  // Warm-up (kernel JIT, first allocations) outside the measured window.
  await Promise.all(Array.from({ length: warmup }, (_, j) => streamOnce(url, { promptTokens: 16 + 31 * j, maxTokens: 4, timeoutMs })));
  const before = await getStats(url, true);
  const clientLoop = monitorEventLoopDelay({ resolution: 2 });
  clientLoop.enable();
  const t0 = performance.now();
  const outcomes = new Array(total);
  let next = 0, retries = 0, rejected = 0;
  async function worker() {
    while (next < total) {
      const j = next++;
      const p = plan[j];
      let r;
      for (let attempt = 0; ; attempt++) {
        r = await streamOnce(url, { ...p, timeoutMs });
        if (r.status !== 503 || attempt >= maxRetries) break;
        rejected++;
        retries++;
        await sleep(Math.max(1, r.retryAfterS) * 1000);
      }
      outcomes[j] = { ...p, ...r };
    }
  }
  await Promise.all(Array.from({ length: Math.min(streams, total) }, worker));
  const wallS = (performance.now() - t0) / 1000;
  clientLoop.disable();
  let after = await getStats(url);
  // A hang-up's sequences are freed at the server's next step boundary.
  for (let k = 0; k < 100 && (after.cache.sequences > 0 || after.active > 0); k++) {
    await sleep(20);
    after = await getStats(url);
  }

  const ttft = [], tpot = [], errors = [];
  let tokens = 0, completed = 0, hungUp = 0, failed = 0, ordered = true;
  for (const o of outcomes) {
    tokens += o.tokens.length;
    if (o.tokens.length) ttft.push(o.tokens[0].t - o.startedAt);
    for (let j = 1; j < o.tokens.length; j++) tpot.push(o.tokens[j].t - o.tokens[j - 1].t);
    if (!inOrder(o.tokens)) ordered = false;
    if (o.aborted) hungUp++;
    else if (o.status === 200 && o.done && o.tokens.length === o.maxTokens) completed++;
    else {
      failed++;
      if (errors.length < 5) errors.push({ status: o.status, error: o.error, got: o.tokens.length, wanted: o.maxTokens });
    }
  }
  const ms = (ns) => (Number.isFinite(ns) ? Math.max(0, ns / 1e6 - 2) : 0);
  return {
    when: new Date().toISOString(),
    server: { url, device: after.device, card: after.card, config: after.config },
    load: { streams, requests: total, prompt, maxTokens, seed, disconnectFraction, hangUps },
    results: {
      wallS, completed, hungUp, failed, rejected503: rejected, retries, errors, tokens, inOrder: ordered,
      tokensPerS: tokens / wallS,
      stepsPerS: after.steps / wallS,
      steps: after.steps, meanStepTokens: after.stepTokens.mean,
      stepMs: after.stepMs,
      ttftMs: summary(ttft),
      timePerTokenMs: summary(tpot),
      serverEventLoopDelayMs: after.eventLoopDelayMs,
      clientEventLoopDelayMs: { p50: ms(clientLoop.percentile(50)), p99: ms(clientLoop.percentile(99)), max: ms(clientLoop.max) },
      memory: after.memory,
      cacheBefore: before.cache, cacheAfter: after.cache,
      drained: after.cache.sequences === 0 && after.cache.freePages === after.cache.numPages && after.reservedPages === 0,
    },
  };
}

/** Starts server.mjs in a child process on an ephemeral port; resolves to { url, stop() }. */
export async function spawnServer(serverArgs) {
  const script = fileURLToPath(new URL('./server.mjs', import.meta.url));
  const child = spawn(process.execPath, [script, '--port', '0', ...serverArgs], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (c) => {
      out += c;
      const m = /listening on (\S+)/.exec(out);
      if (m) { console.log(out.trim()); resolve(m[1]); }
    });
    child.once('exit', (code) => reject(new Error(`the server exited (code ${code}) before listening: ${out}`)));
  });
  return {
    url,
    stop: () => new Promise((resolve) => { child.once('exit', resolve); child.kill('SIGTERM'); }),
  };
}

const FLAGS = {
  url: { type: 'string' }, spawn: { type: 'boolean', default: false },
  streams: { type: 'string', default: '256' }, requests: { type: 'string' },
  prompt: { type: 'string', default: '64-1024' }, 'max-tokens': { type: 'string', default: '128' },
  seed: { type: 'string', default: '1' }, 'disconnect-fraction': { type: 'string', default: '0' }, warmup: { type: 'string', default: '2' },
  out: { type: 'string' }, 'results-dir': { type: 'string' }, note: { type: 'string' }, help: { type: 'boolean', default: false },
};

async function main() {
  const { values, positionals } = parseArgs({ options: FLAGS, allowPositionals: true, strict: true });
  if (values.help || (!values.url && !values.spawn)) {
    console.log('usage: node examples/server/load.mjs (--url URL | --spawn [-- server flags]) [--streams 256] [--requests N]\n' +
      '  [--prompt 64-1024] [--max-tokens 128 | MIN-MAX] [--seed 1] [--disconnect-fraction 0] [--warmup 2]\n' +
      '  [--note TEXT] [--out PATH | --results-dir DIR]   (writes PATH.json + PATH.md, or DIR/server.<card-slug>.json/.md)');
    return;
  }
  const server = values.spawn ? await spawnServer(positionals) : undefined;
  try {
    const r = await runLoad({
      url: values.url ?? server.url,
      streams: Number(values.streams), requests: values.requests === undefined ? undefined : Number(values.requests),
      prompt: range(values.prompt, 'prompt'), maxTokens: range(values['max-tokens'], 'max-tokens'),
      seed: Number(values.seed), disconnectFraction: Number(values['disconnect-fraction']), warmup: Number(values.warmup),
    });
    if (values.note) r.note = values.note;
    const out = values.out ?? (values['results-dir'] ? `${values['results-dir']}/server.${cardSlug(r.server.card)}` : undefined);
    const text = out ? writeResults(r, out) : writeResults(r);
    console.log(text);
    if (!r.results.inOrder || r.results.failed > 0 || !r.results.drained) process.exitCode = 1;
  } finally {
    await server?.stop();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
