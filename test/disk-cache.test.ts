/**
 * The kernel disk cache (native/jit/disk_cache.{h,cc}) through the addon's
 * test hooks, which call the same functions the JIT does: verified reads
 * (corrupt, truncated, foreign entries are removed, never returned), the
 * FLEXATTN_CACHE_MAX_MB cap with least-recently-used eviction, concurrent
 * writers in N processes, and an unwritable directory. No GPU needed.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { InvalidArgumentError } from '../lib/errors.js';
// @ts-expect-error -- plain .mjs test helper without types
import { payload as payloadJs } from './disk-cache-payload.mjs';
import { loadKernel, reportDiskCacheProblem } from '../lib/jit.js';
import { native, nativeAvailable, packageRoot } from '../lib/native.js';

const payload = payloadJs as (id: number, round: number, bytes: number) => Uint8Array;

const available = nativeAvailable();
const n = available ? native() : undefined!;
const HEADER = 40;
const scratch = mkdtempSync(join(tmpdir(), 'flexattn-disk-cache-'));
let dirCount = 0;
/** A fresh, not yet created cache directory (the cache creates it). */
const freshDir = (): string => join(scratch, `c${dirCount++}`, 'cache');
const entryPath = (dir: string, key: string): string => join(dir, `${key}.cubin`);
const entrySize = (key: string, bytes: number): number => HEADER + key.length + bytes;

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function withEnv(name: string, value: string | undefined, fn: () => void): void {
  const saved = process.env[name];
  if (value === undefined) delete process.env[name]; else process.env[name] = value;
  try { fn(); } finally {
    if (saved === undefined) delete process.env[name]; else process.env[name] = saved;
  }
}

describe.skipIf(!available)('disk cache: a directory that cannot be written', () => {
  // Runs first: the JIT reports the first cache problem of a process once, and
  // this block checks that once (later blocks provoke more problems).
  it('put fails without throwing, get misses, and one warning says so', () => {
    const file = join(scratch, 'a-regular-file');
    writeFileSync(file, 'not a directory');
    const dir = join(file, 'sub'); // root ignores chmod, but nobody can mkdir under a file
    expect(n.jitCacheWarning()).toBeNull();
    const r = n.diskCachePut(dir, 'k', randomBytes(100), 1 << 20);
    expect(r.ok).toBe(false);
    expect(r.error).toMatch(/not a directory/i);
    expect(n.diskCacheGet(dir, 'k').status).toBe('missing');
    expect(n.diskCacheStats(dir)).toEqual({ entries: [], bytes: 0, tempFiles: 0 });

    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    try {
      reportDiskCacheProblem();
      expect(warn).toHaveBeenCalledTimes(1);
      const [msg, opts] = warn.mock.calls[0]!;
      expect(String(msg)).toMatch(/disk cache was not written.*not a directory.*FLEXATTN_CACHE_DIR/is);
      expect(opts).toMatchObject({ code: 'FLEXATTN_CACHE' });
      // Once per process, however many writes fail after it.
      expect(n.diskCachePut(dir, 'k2', randomBytes(10), 1 << 20).ok).toBe(false);
      reportDiskCacheProblem();
      expect(warn).toHaveBeenCalledTimes(1);
    } finally {
      warn.mockRestore();
    }
  });
});

describe.skipIf(!available)('disk cache: entries are verified on read', () => {
  it('put/get round trip; the file is header + key + payload; a hit creates no extra files', () => {
    const dir = freshDir();
    const bytes = randomBytes(5000);
    const r = n.diskCachePut(dir, 'sm_90a-0123456789abcdef', bytes, 1 << 20);
    expect(r).toEqual({ ok: true, error: '', evictedEntries: 0, evictedBytes: 0 });
    const g = n.diskCacheGet(dir, 'sm_90a-0123456789abcdef');
    expect(g.status).toBe('hit');
    expect(Buffer.from(g.bytes!).equals(bytes)).toBe(true);
    const file = readFileSync(entryPath(dir, 'sm_90a-0123456789abcdef'));
    expect(file.length).toBe(entrySize('sm_90a-0123456789abcdef', 5000));
    expect(file.subarray(0, 8).toString('latin1')).toBe('FXKCACHE');
    expect(file.readUInt32LE(8)).toBe(2);
    expect(readdirSync(dir)).toEqual(['sm_90a-0123456789abcdef.cubin']);
    // Same key again: replaced, still one entry.
    const other = randomBytes(300);
    expect(n.diskCachePut(dir, 'sm_90a-0123456789abcdef', other, 1 << 20).ok).toBe(true);
    expect(Buffer.from(n.diskCacheGet(dir, 'sm_90a-0123456789abcdef').bytes!).equals(other)).toBe(true);
    expect(n.diskCacheStats(dir).entries.length).toBe(1);
  });

  it('a flipped byte anywhere is detected: get misses and the file is removed', () => {
    const key = 'k-flip';
    const size = entrySize(key, 4000);
    // header fields, key bytes, payload start/middle/end
    const offsets: [number, string][] = [
      [0, 'stale'], [8, 'stale'], [12, 'corrupt'], [16, 'corrupt'], [24, 'corrupt'], [32, 'corrupt'], [39, 'corrupt'],
      [HEADER, 'corrupt'], [HEADER + key.length, 'corrupt'], [HEADER + key.length + 1234, 'corrupt'], [size - 1, 'corrupt'],
    ];
    for (const [off, status] of offsets) {
      const dir = freshDir();
      const bytes = randomBytes(4000);
      expect(n.diskCachePut(dir, key, bytes, 1 << 20).ok).toBe(true);
      const p = entryPath(dir, key);
      const f = readFileSync(p);
      f[off] = f[off]! ^ 0x10;
      writeFileSync(p, f);
      const g = n.diskCacheGet(dir, key);
      expect(g.status, `byte ${off}`).toBe(status);
      expect(g.bytes).toBeNull();
      expect(g.removed).toBe(true);
      expect(existsSync(p), `byte ${off}`).toBe(false);
      // The next writer (the JIT, after recompiling) puts a good one back.
      expect(n.diskCachePut(dir, key, bytes, 1 << 20).ok).toBe(true);
      expect(n.diskCacheGet(dir, key).status).toBe('hit');
    }
  });

  it('a truncated (or extended) entry is detected and removed', () => {
    const key = 'k-trunc';
    const size = entrySize(key, 3000);
    for (const len of [0, 5, 11, 20, HEADER, HEADER + 3, HEADER + key.length, size - 1000, size - 1, size + 1]) {
      const dir = freshDir();
      expect(n.diskCachePut(dir, key, randomBytes(3000), 1 << 20).ok).toBe(true);
      const p = entryPath(dir, key);
      if (len > size) writeFileSync(p, Buffer.concat([readFileSync(p), Buffer.from([0])]));
      else truncateSync(p, len);
      const g = n.diskCacheGet(dir, key);
      expect(g.status, `length ${len}`).toBe('corrupt');
      expect(g.detail).toMatch(/truncated|trailing/);
      expect(existsSync(p)).toBe(false);
    }
  });

  it('an entry stored under another key, or in another format, is a miss and removed', () => {
    const dir = freshDir();
    const a = randomBytes(800);
    expect(n.diskCachePut(dir, 'key-a', a, 1 << 20).ok).toBe(true);
    copyFileSync(entryPath(dir, 'key-a'), entryPath(dir, 'key-b'));
    const g = n.diskCacheGet(dir, 'key-b');
    expect(g.status).toBe('wrong-key');
    expect(g.detail).toMatch(/key-a/);
    expect(existsSync(entryPath(dir, 'key-b'))).toBe(false);
    expect(Buffer.from(n.diskCacheGet(dir, 'key-a').bytes!).equals(a)).toBe(true);

    // A well-formed entry of a future format version (header checksum and all).
    const future = Buffer.from(n.diskCacheEncode('key-v', randomBytes(100)));
    future.writeUInt32LE(3, 8);
    writeFileSync(entryPath(dir, 'key-v'), future);
    const v = n.diskCacheGet(dir, 'key-v');
    expect(v.status).toBe('stale');
    expect(v.detail).toMatch(/version 3/);
    expect(existsSync(entryPath(dir, 'key-v'))).toBe(false);

    // The previous on-disk format ("FXCUBIN1" + u64 key, size, hash) under the same name.
    const legacy = Buffer.alloc(32 + 64);
    legacy.write('FXCUBIN1', 0, 'latin1');
    legacy.writeBigUInt64LE(64n, 16);
    writeFileSync(entryPath(dir, 'sm_80-00000000000000aa'), legacy);
    expect(n.diskCacheGet(dir, 'sm_80-00000000000000aa').status).toBe('stale');
    expect(existsSync(entryPath(dir, 'sm_80-00000000000000aa'))).toBe(false);
  });

  it('missing directories and files are ordinary misses; bad keys are typed errors', () => {
    const dir = freshDir();
    expect(n.diskCacheGet(dir, 'nothing').status).toBe('missing');
    expect(n.diskCacheStats(dir).entries).toEqual([]);
    expect(n.diskCacheEvict(dir, 0)).toEqual({ evictedEntries: 0, evictedBytes: 0 });
    for (const key of ['', '../x', 'a/b', '.hidden', 'x'.repeat(201), 'sp ace']) {
      expect(() => n.diskCacheGet(dir, key), JSON.stringify(key)).toThrow(InvalidArgumentError);
      expect(() => n.diskCachePut(dir, key, new Uint8Array(1), 100)).toThrow(InvalidArgumentError);
    }
  });

  it('temp files of a crashed writer are cleared after an hour; live ones are left alone', () => {
    const dir = freshDir();
    expect(n.diskCachePut(dir, 'k', randomBytes(10), 1 << 20).ok).toBe(true);
    const old = join(dir, 'k.cubin.tmp-999-0000000000000001');
    const live = join(dir, 'k.cubin.tmp-999-0000000000000002');
    writeFileSync(old, 'partial');
    writeFileSync(live, 'partial');
    const past = Date.now() / 1000 - 7200;
    utimesSync(old, past, past);
    const s = n.diskCacheStats(dir);
    expect(s.tempFiles).toBe(1);
    expect(s.entries.map((e) => e.key)).toEqual(['k']);
    expect(existsSync(old)).toBe(false);
    expect(existsSync(live)).toBe(true);
  });
});

describe.skipIf(!available)('disk cache: FLEXATTN_CACHE_MAX_MB and least-recently-used eviction', () => {
  let saved: string | undefined;
  beforeEach(() => { saved = process.env.FLEXATTN_CACHE_MAX_MB; });
  afterEach(() => {
    if (saved === undefined) delete process.env.FLEXATTN_CACHE_MAX_MB; else process.env.FLEXATTN_CACHE_MAX_MB = saved;
  });

  it('evicts the least recently used entries when a write would exceed the cap; a read refreshes an entry', () => {
    const dir = freshDir();
    const one = entrySize('e0', 1000);
    const cap = 5 * one;
    const now = Date.now() / 1000;
    for (let i = 0; i < 5; i++) {
      expect(n.diskCachePut(dir, `e${i}`, payload(i, 0, 1000), cap).ok).toBe(true);
      utimesSync(entryPath(dir, `e${i}`), now - 100 + i, now - 100 + i); // e0 oldest ... e4 newest
    }
    expect(n.diskCacheStats(dir).entries.map((e) => e.key)).toEqual(['e0', 'e1', 'e2', 'e3', 'e4']);
    expect(n.diskCacheGet(dir, 'e0').status).toBe('hit'); // e0 is now the most recently used
    expect(n.diskCacheStats(dir).entries.map((e) => e.key)).toEqual(['e1', 'e2', 'e3', 'e4', 'e0']);

    const r = n.diskCachePut(dir, 'e5', payload(5, 0, 1000), cap);
    expect(r).toMatchObject({ ok: true, evictedEntries: 1, evictedBytes: one });
    expect(n.diskCacheStats(dir).entries.map((e) => e.key).sort()).toEqual(['e0', 'e2', 'e3', 'e4', 'e5']);

    // A bigger entry makes room by evicting the oldest ones (e2, then e3), no more.
    const big = entrySize('e6', 2 * one - HEADER - 2);
    expect(big).toBe(2 * one);
    const r2 = n.diskCachePut(dir, 'e6', payload(6, 0, 2 * one - HEADER - 2), cap);
    expect(r2).toMatchObject({ ok: true, evictedEntries: 2 });
    const s = n.diskCacheStats(dir);
    expect(s.entries.map((e) => e.key).sort()).toEqual(['e0', 'e4', 'e5', 'e6']);
    expect(s.bytes).toBeLessThanOrEqual(cap);
    for (const e of s.entries) expect(n.diskCacheGet(dir, e.key).status).toBe('hit');

    // An entry larger than the whole cap is not written, and evicts nothing.
    const r3 = n.diskCachePut(dir, 'huge', new Uint8Array(cap), cap);
    expect(r3.ok).toBe(false);
    expect(r3.error).toMatch(/exceeds FLEXATTN_CACHE_MAX_MB/);
    expect(r3.evictedEntries).toBe(0);
    expect(n.diskCacheStats(dir).entries.length).toBe(4);

    // The reads above made e6 the most recently used: trimming to its size keeps it alone.
    expect(n.diskCacheEvict(dir, 2 * one)).toMatchObject({ evictedEntries: 3, evictedBytes: 3 * one });
    expect(n.diskCacheStats(dir).entries.map((e) => e.key)).toEqual(['e6']);
  });

  it('the cap comes from FLEXATTN_CACHE_MAX_MB (megabytes of 2^20 bytes, fractions allowed)', () => {
    const dir = freshDir();
    process.env.FLEXATTN_CACHE_MAX_MB = '0.01';
    const cap = Math.floor(0.01 * 2 ** 20);
    expect(n.jitCacheConfig()).toMatchObject({ maxBytes: cap, enabled: true });
    const one = entrySize('k00', 1000);
    for (let i = 0; i < 30; i++) {
      expect(n.diskCachePut(dir, `k${String(i).padStart(2, '0')}`, payload(i, 1, 1000)).ok).toBe(true);
      expect(n.diskCacheStats(dir).bytes).toBeLessThanOrEqual(cap);
    }
    const keys = n.diskCacheStats(dir).entries.map((e) => e.key);
    expect(keys.length).toBe(Math.floor(cap / one));
    expect(keys).toContain('k29');
    expect(keys).not.toContain('k00');

    delete process.env.FLEXATTN_CACHE_MAX_MB;
    expect(n.jitCacheConfig()).toMatchObject({ maxBytes: 1024 * 2 ** 20, enabled: true });
    process.env.FLEXATTN_CACHE_MAX_MB = '';
    expect(n.jitCacheConfig().maxBytes).toBe(1024 * 2 ** 20);
    process.env.FLEXATTN_CACHE_MAX_MB = '64';
    expect(n.jitCacheConfig().maxBytes).toBe(64 * 2 ** 20);
  });

  it('FLEXATTN_CACHE_MAX_MB=0 turns the disk cache off: nothing is written', () => {
    const dir = freshDir();
    process.env.FLEXATTN_CACHE_MAX_MB = '0';
    expect(n.jitCacheConfig()).toMatchObject({ maxBytes: 0, enabled: false });
    const r = n.diskCachePut(dir, 'k', randomBytes(10));
    expect(r.ok).toBe(false);
    expect(r.error).toMatch(/off/);
    expect(existsSync(dir)).toBe(false);
  });

  it('an invalid FLEXATTN_CACHE_MAX_MB is an InvalidArgumentError naming it, also from loadKernel', async () => {
    for (const bad of ['abc', '-1', '1G', '1e3', ' 12', '12 ', '1.2.3', '.', '0x10', 'Infinity']) {
      process.env.FLEXATTN_CACHE_MAX_MB = bad;
      let err: unknown;
      try { n.jitCacheConfig(); } catch (e) { err = e; }
      expect(err, bad).toBeInstanceOf(InvalidArgumentError);
      expect((err as InvalidArgumentError).argument).toBe('FLEXATTN_CACHE_MAX_MB');
      expect((err as InvalidArgumentError).received).toContain(bad);
      expect(() => n.diskCachePut(freshDir(), 'k', new Uint8Array(1))).toThrow(InvalidArgumentError);
    }
    // The JIT checks it before loading any kernel (no GPU needed to see the error).
    process.env.FLEXATTN_CACHE_MAX_MB = 'lots';
    await expect(loadKernel(0, { kernel: 'flexattn_never_loaded', source: '' })).rejects.toThrow(/FLEXATTN_CACHE_MAX_MB/);
    await expect(loadKernel(0, { kernel: 'flexattn_never_loaded', source: '' })).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

interface ChildReport { id: number; puts: number; putErrors: string[]; gets: Record<string, number>; malformed: number }

/** Runs N copies of test/disk-cache-child.mjs that start at the same moment. */
async function race(count: number, plan: (id: number) => Record<string, unknown>): Promise<ChildReport[]> {
  const startAt = Date.now() + 1500; // after every child has loaded the addon
  const runs = Array.from({ length: count }, (_, id) => new Promise<ChildReport>((resolve, reject) => {
    const child = spawn(process.execPath, [join(packageRoot, 'test', 'disk-cache-child.mjs'),
      JSON.stringify({ id, startAt, ...plan(id) })], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d: Buffer) => { out += d; });
    child.stderr.on('data', (d: Buffer) => { err += d; });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`child ${id} exited with ${code}: ${err}`));
      else resolve(JSON.parse(out) as ChildReport);
    });
  }));
  return Promise.all(runs);
}

describe.skipIf(!available)('disk cache: several processes at once', () => {
  it('8 processes writing the same key (and their own keys) all succeed and leave one whole entry per key', async () => {
    const dir = freshDir();
    const bytes = 1 << 18, rounds = 6;
    const reports = await race(8, () => ({ dir, rounds, shared: 'shared-kernel', own: 1, bytes, maxBytes: 1 << 30 }));
    for (const r of reports) {
      expect(r.putErrors, `child ${r.id}`).toEqual([]);
      expect(r.puts).toBe(rounds * 2);
      // A reader sees some writer's whole entry, never part of one.
      expect(r.gets).toEqual({ hit: rounds * 2 });
      expect(r.malformed).toBe(0);
    }
    const s = n.diskCacheStats(dir);
    expect(s.tempFiles).toBe(0);
    expect(readdirSync(dir).filter((f) => !f.endsWith('.cubin'))).toEqual([]);
    expect(s.entries.length).toBe(1 + 8 * rounds);
    expect(s.entries.filter((e) => e.key === 'shared-kernel').length).toBe(1);
    const g = n.diskCacheGet(dir, 'shared-kernel');
    expect(g.status).toBe('hit');
    const dv = new DataView(g.bytes!.buffer, g.bytes!.byteOffset);
    const id = dv.getUint32(0, true), round = dv.getUint32(4, true);
    expect(id).toBeLessThan(8);
    expect(Buffer.from(g.bytes!).equals(Buffer.from(payload(id, round, bytes)))).toBe(true);
    for (const e of s.entries) expect(n.diskCacheGet(dir, e.key).status, e.key).toBe('hit');
  }, 60_000);

  it('8 processes writing past the cap at once: every write succeeds, eviction races are harmless', async () => {
    const dir = freshDir();
    const bytes = 20_000, own = 12;
    const cap = 10 * (bytes + HEADER + 20);
    const reports = await race(8, () => ({ dir, rounds: 1, own, bytes, maxBytes: cap }));
    for (const r of reports) {
      expect(r.putErrors, `child ${r.id}`).toEqual([]);
      expect(r.puts).toBe(own);
      // A concurrent evictor may remove an entry right after it was written; it is never damaged.
      expect(Object.keys(r.gets).filter((k) => k !== 'hit' && k !== 'missing')).toEqual([]);
      expect(r.malformed).toBe(0);
    }
    const s = n.diskCacheStats(dir);
    expect(s.tempFiles).toBe(0);
    expect(s.entries.length).toBeGreaterThan(0);
    for (const e of s.entries) expect(n.diskCacheGet(dir, e.key).status, e.key).toBe('hit');
    // Concurrent writers may each have found room at once; the next pass restores the cap.
    n.diskCacheEvict(dir, cap);
    expect(n.diskCacheStats(dir).bytes).toBeLessThanOrEqual(cap);
    expect(statSync(dir).isDirectory()).toBe(true);
  }, 60_000);
});
