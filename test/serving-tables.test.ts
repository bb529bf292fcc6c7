/**
 * The serving path's kept tables never go stale: a GPU pagedAttention reads
 * its batch's page table and lengths from device tables the cache keeps and
 * updates where they changed, and an append uploads only the pages it writes.
 * On the fake addon with its memory on (test/fake-addon/serving-child.mjs),
 * every launch's tables are checked against the cache's state at the call
 * through random runs of newSequence / fork / free / append / pagedAttention,
 * pipelined calls (also while a kernel is still loading) and graph replays
 * with eager calls between them. On the CPU backend the same kind of run is
 * checked against the float64 reference (the append's page planning is shared).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { KvCache, type SequenceId } from '../lib/serving/kv-cache.js';
import { pagedAttention } from '../lib/serving/paged-attention.js';
import { rng } from './reference.js';
import { Ledger, compare, raggedReference, randomQueries } from './serving-reference.js';

const root = new URL('..', import.meta.url).pathname;

describe('kept serving tables on the fake addon', () => {
  it('every decode and append launch reads the cache state of its call (random run, pipelined, replays)', () => {
    expect(existsSync(`${root}dist/lib/index.js`), 'run npm run build:ts first').toBe(true);
    const r = spawnSync(process.execPath, ['--require', './bench/host-overhead/preload.cjs', 'test/fake-addon/serving-child.mjs'],
      { cwd: root, encoding: 'utf8', env: { ...process.env, FAKE_MEMORY: '1' } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const rep = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(rep.failures).toEqual([]);
    expect(rep.counts.decode).toBeGreaterThan(300);
    expect(rep.counts.append).toBeGreaterThan(100);
    expect(rep.counts.replays).toBeGreaterThanOrEqual(30);
    expect(rep.counts.pipelined).toBeGreaterThan(10);
    expect(rep.counts.pipelinedLoading).toBeGreaterThan(3); // calls made while their kernel was still loading
    // A call whose batch did not change since the last one uploads nothing.
    expect(rep.idleUpload).toEqual({ spans: 0, copies: 0 });
  });
});

describe('append, fork and free between pagedAttention calls on the CPU backend', () => {
  it('a random run matches the float64 reference after every step', async () => {
    const P = 16, Hkv = 2, D = 32, Hq = 4;
    const c = new KvCache({ pageSize: P, numPages: 400, numKvHeads: Hkv, headDim: D, dtype: 'bf16', device: 'cpu' });
    const led = new Ledger(c, 91);
    const r = rng(5);
    const n = (k: number) => Math.floor(r() * k);
    const live: SequenceId[] = [];
    for (let i = 0; i < 4; i++) live.push(led.newSequence());
    await led.append([...live], live.map(() => 1 + n(40)));
    let checked = 0;
    for (let it = 0; it < 60; it++) {
      const op = n(6);
      if (op === 0 && live.length < 10) live.push(led.fork(live[n(live.length)]!));
      else if (op === 1 && live.length > 3) led.free(live.splice(n(live.length), 1)[0]!);
      else if (op === 2) live.push(led.newSequence());
      const seqs = live.filter(() => r() < 0.7);
      if (!seqs.length) seqs.push(live[0]!);
      await led.append(seqs, seqs.map(() => (r() < 0.7 ? 1 : 1 + n(2 * P))));
      const batch = live.filter((s) => c.length(s) > 0 && r() < 0.8);
      if (!batch.length) continue;
      const qt = batch.map((s) => Math.min(c.length(s), 1 + n(3)));
      const T = qt.reduce((a, b) => a + b, 0);
      const { q, vals } = randomQueries(T, Hq, D, 100 + it);
      const out = await pagedAttention(q, c, { seqs: batch, queryTokens: qt, backend: 'cpu' });
      const ref = raggedReference({
        q: vals, seqs: batch.map((s, i) => led.refSeq(s, qt[i]!)), Hq, Hkv, D, scale: 1 / Math.sqrt(D), causal: true,
      });
      const cmp = compare(await out.toFloat32(), ref.out);
      expect(cmp.sameNonFinite).toBe(true);
      expect(cmp.maxAbs).toBeLessThan(1.5e-2);
      checked++;
      q.dispose();
      out.dispose();
    }
    expect(checked).toBeGreaterThan(40);
    c.dispose();
  });
});
