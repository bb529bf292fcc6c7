// node --require ./preload.cjs overhead.mjs <treeRoot> [--calls N] [--reps R] [--only flex|sdpa] [--json]
// Runs bench/run.mjs hostOverhead() (the same loop) on the fake addon, for the build at <treeRoot>.
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const argv = process.argv.slice(2);
const root = resolve(argv[0] ?? '.');
const opt = (k, d) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : d; };
const calls = Number(opt('--calls', 2000));
const reps = Number(opt('--reps', 1));
const only = opt('--only', '');
const json = argv.includes('--json');
const native = argv.includes('--native'); // the real addon over stub-libcuda.c (FLEXATTN_LIBCUDA)
if (!globalThis.__fakeAddon && !native) throw new Error('run with --require preload.cjs, or --native with FLEXATTN_LIBCUDA=<stub>');

const L = await import(pathToFileURL(join(root, 'dist', 'lib', 'index.js')).href);
// The loop of `flexattn bench --only overhead` itself, run on the given build's library.
const { hostOverhead } = await import('../run.mjs');
const short = (name) => (name.startsWith('flexAttention') ? 'flex' : 'sdpa');

const before = globalThis.__fakeAddon?.__launches() ?? 0;
for (let r = 0; r < reps; r++) {
  const { rows } = await hostOverhead(L, 'cuda:0', calls);
  for (const row of rows) {
    const x = { op: short(row.op), returnUs: row.returnUs, awaitedUs: row.awaitedUs, pipelinedUs: row.pipelinedUs };
    if (only && x.op !== only) continue;
    if (json) console.log(JSON.stringify({ tree: root, rep: r, ...x }));
    else console.log(`${root} rep ${r} ${x.op}: sync ${x.returnUs.toFixed(2)} us, awaited ${x.awaitedUs.toFixed(2)} us, pipelined ${x.pipelinedUs.toFixed(2)} us`);
  }
}
const launched = (globalThis.__fakeAddon?.__launches() ?? 0) - before;
if (!json) console.log(`kernel launches seen by the fake: ${launched}`);
