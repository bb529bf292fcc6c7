// Run by test/serving-tables.test.ts as
//   FAKE_MEMORY=1 node --require bench/host-overhead/preload.cjs test/fake-addon/serving-child.mjs
// The serving path on the fake addon with its memory on: a random run of newSequence / fork / free / append /
// pagedAttention (awaited one by one, and pipelined) and replays of a captured step, checking at every launch
// that the tables the kernel reads at that point of the stream (the fake decodes its parameter block and reads
// the bytes uploaded so far) are the cache's state when the call was made: the lengths, query offsets and page
// rows of each decode launch, and for each append the page and slot of every new token (never a page another
// sequence holds). Prints a JSON report: counts of what was checked, and the first failures.
import * as L from '../../dist/lib/index.js';

const fake = globalThis.__fakeAddon;
let seed = 20261207;
const rnd = (n) => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return (seed >>> 8) % n; };
const P = 16, HKV = 2, D = 64, HQ = 4, DEV = 'cuda:0';
const cache = new L.KvCache({ pageSize: P, numPages: 6000, numKvHeads: HKV, headDim: D, dtype: 'bf16', device: DEV });
const live = [];
const failures = [];
const counts = { decode: 0, append: 0, tokens: 0, replays: 0, pipelined: 0, rowsChecked: 0 };
const fail = (what) => { if (failures.length < 20) failures.push(what); };
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const log = () => fake.__tableLog();

/** What a decode launch over `seqs` with `qt` query tokens must read, taken when the call is made. */
function expectDecode(seqs, qt) {
  const starts = [0];
  for (const m of qt) starts.push(starts[starts.length - 1] + m);
  return { lens: seqs.map((s) => cache.length(s)), starts, rows: seqs.map((s) => cache.pageTable(s)) };
}
function checkDecode(got, want, what) {
  counts.decode++;
  if (!got || got.kernel !== 'decode') return fail(`${what}: no decode launch recorded`);
  if (!same(got.lens, want.lens)) return fail(`${what}: lens ${got.lens} want ${want.lens}`);
  if (!same(got.starts, want.starts)) return fail(`${what}: starts ${got.starts} want ${want.starts}`);
  for (let i = 0; i < want.rows.length; i++) {
    counts.rowsChecked++;
    if (!same(got.rows[i], want.rows[i])) return fail(`${what}: row ${i} ${got.rows[i]} want ${want.rows[i]}`);
  }
}
/** An append's recorded placements against the pages its sequences hold after it. */
function checkAppend(got, seqs, toks, before, what) {
  counts.append++;
  if (!got || got.kernel !== 'append') return fail(`${what}: no append launch recorded`);
  const owners = new Map();
  for (const s of live) for (const p of cache.pageTable(s)) owners.set(p, [...(owners.get(p) ?? []), s]);
  seqs.forEach((s, i) => {
    const pt = cache.pageTable(s);
    for (let j = 0; j < toks[i]; j++) {
      counts.tokens++;
      const pos = before[i] + j, place = got.places[i]?.[j];
      if (!place || place[0] !== pt[Math.floor(pos / P)] || place[1] !== pos % P) {
        return fail(`${what}: seq ${s} token ${j} at ${place} want ${[pt[Math.floor(pos / P)], pos % P]}`);
      }
      if (owners.get(place[0]).length !== 1) return fail(`${what}: seq ${s} token ${j} written into page ${place[0]} held by ${owners.get(place[0])}`);
    }
  });
}
function tokens(n) { const t = L.Tensor.randn([n, HKV, D], 'bf16', { device: DEV, seed: rnd(1000) }); return t; }
async function append(seqs, toks, what) {
  const before = seqs.map((s) => cache.length(s));
  const T = toks.reduce((a, b) => a + b, 0);
  const k = tokens(T);
  const n0 = log().length;
  await cache.append(seqs, k, k, { tokens: toks });
  k.dispose();
  if (T > 0) checkAppend(log()[n0], seqs, toks, before, what);
}
function queryTokens(seqs) { return seqs.map((s) => Math.min(cache.length(s), 1 + rnd(3))); }
async function paged(seqs, what) {
  const qt = queryTokens(seqs);
  const T = qt.reduce((a, b) => a + b, 0);
  if (T === 0) return;
  const q = L.Tensor.randn([T, HQ, D], 'bf16', { device: DEV, seed: 1 });
  const want = expectDecode(seqs, qt), n0 = log().length;
  const out = await L.pagedAttention(q, cache, { seqs, queryTokens: qt });
  checkDecode(log()[n0], want, what);
  out.dispose(); q.dispose();
}
const pick = () => live[rnd(live.length)];
function subset(maxN, distinct) {
  const n = 1 + rnd(Math.min(maxN, live.length)), out = [];
  while (out.length < n) { const s = pick(); if (!distinct || !out.includes(s)) out.push(s); }
  return out;
}

for (let i = 0; i < 6; i++) live.push(cache.newSequence());
await append([...live], live.map(() => 1 + rnd(40)), 'prefill');
// A few batches reused call after call (the table cache's case), rebuilt when one of theirs is freed.
const batches = [subset(6, true), subset(6, true), subset(6, false)];
for (let it = 0; it < 500; it++) {
  const op = rnd(12);
  if (op === 0 && live.length < 24) live.push(cache.newSequence());
  else if (op === 1) live.push(cache.fork(pick()));
  else if (op === 2 && live.length > 4) {
    const s = live.splice(rnd(live.length), 1)[0];
    cache.free(s);
    for (let b = 0; b < batches.length; b++) if (batches[b].includes(s)) batches[b] = subset(6, b < 2);
  } else if (op <= 4) {
    const seqs = rnd(2) ? batches[rnd(2)] : subset(8, true);
    await append(seqs, seqs.map(() => (rnd(4) ? 1 : rnd(40))), `it ${it} append`);
  } else if (op === 5 && it > 20) {
    // Pipelined: attention, an append, attention again, none awaited before the next is made. Every other
    // time with a new score mod, whose kernel is still loading: both attention calls launch after the append.
    const scoreMod = it % 2 ? L.softcap(10 + it) : undefined;
    const seqs = batches[rnd(2)], q1 = queryTokens(seqs);
    const T1 = q1.reduce((a, b) => a + b, 0);
    if (T1 === 0) continue;
    const q = L.Tensor.randn([T1, HQ, D], 'bf16', { device: DEV, seed: 2 });
    const k = tokens(seqs.length);
    const w1 = expectDecode(seqs, q1), before = seqs.map((s) => cache.length(s)), n0 = log().length;
    const p1 = L.pagedAttention(q, cache, { seqs, queryTokens: q1, scoreMod });
    const pa = cache.append(seqs, k, k, { tokens: seqs.map(() => 1) });
    const w2 = expectDecode(seqs, q1);
    const p2 = L.pagedAttention(q, cache, { seqs, queryTokens: q1, scoreMod });
    const [o1, , o2] = await Promise.all([p1, pa, p2]);
    counts.pipelined++;
    const rec = log().slice(n0), dec = rec.filter((r) => r.kernel === 'decode');
    if (scoreMod && rec[0]?.kernel === 'append') counts.pipelinedLoading = (counts.pipelinedLoading ?? 0) + 1;
    checkDecode(dec[0], w1, `it ${it} pipelined first`);
    checkAppend(rec.find((r) => r.kernel === 'append'), seqs, seqs.map(() => 1), before, `it ${it} pipelined append`);
    checkDecode(dec[1], w2, `it ${it} pipelined second`);
    for (const t of [o1, o2, q, k]) t.dispose();
  } else {
    await paged(rnd(3) ? batches[rnd(batches.length)] : subset(8, false), `it ${it} paged`);
  }
  if (it % 100 === 50) {
    // A captured step on a batch: each replay appends a token to each and attends; eager calls between replays.
    const seqs = batches[0], ones = seqs.map(() => 1);
    const q = L.Tensor.randn([seqs.length, HQ, D], 'bf16', { device: DEV, seed: 3 });
    const k = tokens(seqs.length);
    let out;
    const graph = await L.captureGraph(async () => {
      await cache.append(seqs, k, k, { tokens: ones });
      out = await L.pagedAttention(q, cache, { seqs, queryTokens: ones });
    }, { device: DEV, maxSeqLen: 4096 });
    for (let r = 0; r < 6; r++) {
      const before = seqs.map((s) => cache.length(s)), n0 = log().length;
      await graph.replay();
      counts.replays++;
      checkAppend(log()[n0], seqs, ones, before, `it ${it} replay ${r} append`);
      checkDecode(log()[n0 + 1], expectDecode(seqs, ones), `it ${it} replay ${r} attention`);
      await paged(seqs, `it ${it} eager after replay ${r}`);
      if (r === 3) await append(seqs, seqs.map(() => rnd(20)), `it ${it} eager append between replays`);
    }
    graph.dispose();
    for (const t of [q, k, out]) t.dispose();
  }
}
// Unchanged lengths: a second call on the same batch uploads nothing.
const seqs = batches[0], qt = seqs.map(() => 1);
const q = L.Tensor.randn([seqs.length, HQ, D], 'bf16', { device: DEV, seed: 4 });
(await L.pagedAttention(q, cache, { seqs, queryTokens: qt })).dispose();
const before = fake.__counters();
(await L.pagedAttention(q, cache, { seqs, queryTokens: qt })).dispose();
const after = fake.__counters();
const idleUpload = { spans: after.copyHtoDSpans - before.copyHtoDSpans, copies: after.copyHtoD - before.copyHtoD };
cache.dispose();
console.log(JSON.stringify({ counts, failures, idleUpload }));
