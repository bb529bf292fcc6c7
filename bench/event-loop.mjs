#!/usr/bin/env node
// Event-loop delay while CPU attention runs: does a CPU call keep the main
// thread free for the rest of a server?
//
//   npm run build:ts && node bench/event-loop.mjs [--calls 32] [--shape 1,8,1024,64] [--dtype bf16] [--md out.md]
//
// Starts CALLS concurrent `scaledDotProductAttention(q, k, v, { backend: 'cpu' })`
// calls on the same inputs and records the event-loop delay with
// perf_hooks.monitorEventLoopDelay (1 ms resolution) from the first call to the
// last result. Prints max / p99 / mean delay, the idle baseline (the same
// monitor for 1 s with nothing running), the wall time of the batch and of
// one call alone; with --md, also writes them as a Markdown report (machine,
// Node version, shape).
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { cpus, hostname, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values: opt } = parseArgs({
  options: {
    calls: { type: 'string', default: '32' },
    shape: { type: 'string', default: '1,8,1024,64' },
    dtype: { type: 'string', default: 'bf16' },
    md: { type: 'string' },
    label: { type: 'string', default: '' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (opt.help) {
  console.log('usage: node bench/event-loop.mjs [--calls N] [--shape B,H,S,D] [--dtype bf16|f16|f32] [--md out.md] [--label text]');
  process.exit(0);
}
const index = join(root, 'dist', 'lib', 'index.js');
if (!existsSync(index)) { console.error('run `npm run build:ts` first'); process.exit(2); }
const { Tensor, scaledDotProductAttention } = await import(index);

const calls = Number(opt.calls);
const [B, H, S, D] = opt.shape.split(',').map(Number);
const dtype = opt.dtype;
const q = Tensor.randn([B, H, S, D], dtype, { device: 'cpu', seed: 1 });
const k = Tensor.randn([B, H, S, D], dtype, { device: 'cpu', seed: 2 });
const v = Tensor.randn([B, H, S, D], dtype, { device: 'cpu', seed: 3 });
const run = () => scaledDotProductAttention(q, k, v, { backend: 'cpu' });

// One call alone (after a warm-up): the cost of the work itself.
await run();
let t = performance.now();
await run();
const singleMs = performance.now() - t;

// The same measurement with nothing running: what the host itself adds
// (other processes, timer jitter).
const idle = monitorEventLoopDelay({ resolution: 1 });
idle.enable();
await new Promise((r) => setTimeout(r, 1000));
idle.disable();

const h = monitorEventLoopDelay({ resolution: 1 });
h.enable();
t = performance.now();
const outs = await Promise.all(Array.from({ length: calls }, run));
const batchMs = performance.now() - t;
h.disable();
if (outs.some((o) => o.dtype !== dtype)) throw new Error('output dtype differs from the input dtype');

const ms = (ns) => ns / 1e6;
const r = {
  maxMs: ms(h.max), p99Ms: ms(h.percentile(99)), meanMs: ms(h.mean), singleMs, batchMs, idleMaxMs: ms(idle.max),
};
const shapeStr = `B=${B} H=${H} S=${S} D=${D} ${dtype}`;
console.log(`event-loop delay, ${calls} concurrent CPU sdpa calls, ${shapeStr}${opt.label ? ` (${opt.label})` : ''}:`);
console.log(`  max ${r.maxMs.toFixed(1)} ms, p99 ${r.p99Ms.toFixed(1)} ms, mean ${r.meanMs.toFixed(1)} ms`);
console.log(`  idle baseline (1 s, nothing running): max ${r.idleMaxMs.toFixed(1)} ms`);
console.log(`  one call alone ${r.singleMs.toFixed(0)} ms, batch of ${calls} ${r.batchMs.toFixed(0)} ms`);

if (opt.md) {
  const cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? '?';
  const row = `| ${opt.label || '-'} | ${shapeStr} | ${calls} | ${r.maxMs.toFixed(1)} | ${r.p99Ms.toFixed(1)} | ` +
    `${r.meanMs.toFixed(1)} | ${r.idleMaxMs.toFixed(1)} | ${r.singleMs.toFixed(0)} | ${r.batchMs.toFixed(0)} | ${loadavg()[0].toFixed(1)} |`;
  let text;
  if (existsSync(opt.md)) {
    // a new row goes after the table's last row (notes below it stay below)
    const lines = readFileSync(opt.md, 'utf8').split('\n');
    let last = -1;
    lines.forEach((l, i) => { if (l.startsWith('|')) last = i; });
    lines.splice(last + 1, 0, row);
    text = lines.join('\n');
  } else {
    text = [
      '# Event-loop delay under concurrent CPU attention',
      '',
      `Written by \`node bench/event-loop.mjs\` on ${new Date().toISOString().slice(0, 10)}.`,
      '',
      `- host: ${hostname()}, ${cpus().length} logical CPUs (nproc), ${cpuModel}`,
      `- Node.js ${process.version}; libuv threadpool ${process.env.UV_THREADPOOL_SIZE ?? 4} threads`,
      `- each call: \`scaledDotProductAttention(q, k, v, { backend: 'cpu' })\` on the same inputs, all started at once;`,
      '  delay from `perf_hooks.monitorEventLoopDelay({ resolution: 1 })` between the first call and the last result',
      '',
      '| code | shape | calls | max delay (ms) | p99 (ms) | mean (ms) | idle max (ms) | one call (ms) | batch (ms) | load avg |',
      '|---|---|---|---|---|---|---|---|---|---|',
      row,
      '',
    ].join('\n');
  }
  mkdirSync(dirname(resolve(opt.md)), { recursive: true });
  writeFileSync(opt.md, text);
  console.log(`wrote ${opt.md}`);
}
