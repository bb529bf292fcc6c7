// Child process of test/disk-cache.test.ts (race tests): waits for a shared
// start time, then writes and reads disk-cache entries through the addon's
// hooks (the functions the JIT calls) and prints what it saw as JSON.
// argv[2]: JSON { dir, id, startAt, rounds, shared, own, bytes, maxBytes? }
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { payload } from './disk-cache-payload.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const addon = require('node-gyp-build')(root);
const plan = JSON.parse(process.argv[2]);


/** Whether `b` is exactly some writer's payload (never a mix of two). */
function wellFormed(b, bytes) {
  if (b.length !== bytes) return false;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const want = payload(dv.getUint32(0, true), dv.getUint32(4, true), bytes);
  return Buffer.compare(Buffer.from(b), Buffer.from(want)) === 0;
}

// Everyone starts together, so the writes really overlap.
const wait = new Int32Array(new SharedArrayBuffer(4));
while (Date.now() < plan.startAt) Atomics.wait(wait, 0, 0, 1);

const out = { id: plan.id, puts: 0, putErrors: [], gets: {}, malformed: 0 };
const keys = [];
for (let r = 0; r < plan.rounds; r++) {
  if (plan.shared) keys.push(plan.shared);
  for (let j = 0; j < plan.own; j++) keys.push(`own-${plan.id}-${r}-${j}`);
}
let round = 0;
for (const key of keys) {
  const res = plan.maxBytes === undefined
    ? addon.diskCachePut(plan.dir, key, payload(plan.id, round, plan.bytes))
    : addon.diskCachePut(plan.dir, key, payload(plan.id, round, plan.bytes), plan.maxBytes);
  round++;
  if (res.ok) out.puts++; else out.putErrors.push(res.error);
  const got = addon.diskCacheGet(plan.dir, key);
  out.gets[got.status] = (out.gets[got.status] ?? 0) + 1;
  if (got.status === 'hit' && !wellFormed(got.bytes, plan.bytes)) out.malformed++;
}
process.stdout.write(JSON.stringify(out));
