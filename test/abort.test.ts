// Cancellation (issue 17, item 5) on the CPU backend: every async op and the
// tensor methods that wait take `signal`; an aborted signal rejects with an
// AbortError before any work, an abort in flight rejects at once and what the
// op still makes is freed; the abort listener goes when the op settles.
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import {
  Tensor, scaledDotProductAttention, flexAttention, attention, createBlockMask, clearAttentionCache, documentMask,
  causal, andMasks, AbortError, InvalidArgumentError,
} from '../lib/index.js';
import { hostMemoryStats } from '../lib/tensor.js';
import { randnArray, rejection } from './reference.js';

const cpu = { device: 'cpu' as const };

function qkv(B: number, H: number, S: number, D: number, seed = 1): [Tensor, Tensor, Tensor] {
  const mk = (s: number) => Tensor.fromHost(randnArray(B * H * S * D, s), [B, H, S, D], 'f32', cpu);
  return [mk(seed), mk(seed + 1), mk(seed + 2)];
}

function ids(S: number): Tensor {
  return Tensor.fromHost(Int32Array.from({ length: S }, (_, i) => Math.floor(i / 29)), [S], 'i32', cpu);
}

function expectAbort(err: unknown, reason: unknown): void {
  expect(err).toBeInstanceOf(AbortError);
  const e = err as AbortError;
  expect(e.name).toBe('AbortError');
  expect(e.code).toBe('ABORT_ERR');
  expect(e.cause).toBe(reason);
}

/** Polls until the host memory counters equal `want` (a background job finishing), or fails after `ms`. */
async function settlesTo(want: ReturnType<typeof hostMemoryStats>, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const now = hostMemoryStats();
    if (now.storages === want.storages && now.bytes === want.bytes) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  expect(hostMemoryStats()).toEqual(want);
}

describe('cancellation (cpu)', () => {
  const S = 77, D = 16;

  it('an already aborted signal rejects every op with an AbortError and starts nothing', async () => {
    const [q, k, v] = qkv(1, 2, S, D);
    const docs = ids(S);
    const ac = new AbortController();
    const reason = new Error('stop');
    ac.abort(reason);
    const signal = ac.signal;
    const start = hostMemoryStats();
    const calls: Promise<unknown>[] = [
      scaledDotProductAttention(q, k, v, { signal }),
      flexAttention(q, k, v, { signal }),
      attention(q, k, v, { impl: 'flex', docIds: docs, signal }),
      attention(q, k, v, { impl: 'sdpa', docIds: docs, signal }),
      createBlockMask(documentMask(docs), 1, 1, S, S, { device: 'cpu', signal }),
      q.toHost({ signal }),
      q.toFloat32({ signal }),
      q.toDevice('cpu', { signal }),
    ];
    for (const p of calls) expectAbort(await rejection(p), reason);
    expect(hostMemoryStats()).toEqual(start);   // no output was made
    expect(getEventListeners(signal, 'abort')).toHaveLength(0);
    clearAttentionCache();
    for (const t of [q, k, v, docs]) t.dispose();
  });

  it('a signal that is not an AbortSignal is an InvalidArgumentError naming it', async () => {
    const [q, k, v] = qkv(1, 1, 8, D);
    const bad = { aborted: true } as unknown as AbortSignal;
    await expect(scaledDotProductAttention(q, k, v, { signal: bad })).rejects.toThrow(InvalidArgumentError);
    await expect(scaledDotProductAttention(q, k, v, { signal: bad })).rejects.toThrow(/options\.signal/);
    await expect(flexAttention(q, k, v, { signal: bad })).rejects.toThrow(/options\.signal/);
    await expect(attention(q, k, v, { signal: bad })).rejects.toThrow(/spec\.signal/);
    await expect(createBlockMask(causal(), 1, 1, 8, 8, { device: 'cpu', signal: bad })).rejects.toThrow(/options\.signal/);
    await expect(q.toHost({ signal: bad })).rejects.toThrow(/options\.signal/);
    await expect(q.toDevice('cpu', { signal: bad })).rejects.toThrow(/options\.signal/);
    for (const t of [q, k, v]) t.dispose();
  });

  it('an abort while the call is in flight rejects with an AbortError; its outputs are freed, never handed out', async () => {
    const start = hostMemoryStats();
    const [q, k, v] = qkv(2, 2, S, D, 5);
    const docs = ids(S);
    const run = async (call: (signal: AbortSignal) => Promise<unknown>) => {
      const ac = new AbortController();
      const p = call(ac.signal);
      ac.abort('user');                       // the call has returned: its work is under way
      expectAbort(await rejection(p), 'user');
      expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
    };
    await run((signal) => scaledDotProductAttention(q, k, v, { isCausal: true, returnLse: true, signal }));
    await run((signal) => flexAttention(q, k, v, { returnLse: true, signal }));
    await run((signal) => attention(q, k, v, { impl: 'flex', isCausal: true, docIds: docs, signal }));
    await run((signal) => createBlockMask(andMasks(causal(), documentMask(docs)), 2, 1, S, S, { device: 'cpu', blockSize: 16, signal }));
    // The jobs finish in the background: then the inputs they hold and whatever they made go back.
    for (const t of [q, k, v, docs]) t.dispose();
    clearAttentionCache();
    await settlesTo(start);
  });

  it('a long CPU call is aborted mid-flight (AbortSignal.timeout): prompt AbortError, outputs and inputs released', async () => {
    // Long enough (seconds on a loaded machine) that the timeout fires while the native job runs.
    const start = hostMemoryStats();
    const [q, k, v] = qkv(1, 4, 2048, 64, 9);
    const t0 = performance.now();
    const reference = await scaledDotProductAttention(q, k, v);
    const jobMs = performance.now() - t0;
    reference.dispose();
    const signal = AbortSignal.timeout(Math.round(Math.max(5, Math.min(50, jobMs / 10))));
    const t1 = performance.now();
    const p = scaledDotProductAttention(q, k, v, { returnLse: true, signal });
    q.dispose(); k.dispose(); v.dispose();     // the job still holds them
    const err = await rejection(p);
    const rejectMs = performance.now() - t1;
    // Rejected while the native job still held its inputs and the out/lse it
    // writes into (it releases all five when it stops, at its next chunk).
    expect(hostMemoryStats().storages).toBe(start.storages + 5);
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).code).toBe('ABORT_ERR');
    expect(((err as AbortError).cause as Error).name).toBe('TimeoutError');
    expect(rejectMs).toBeLessThan(jobMs);
    await settlesTo(start);
  });

  it('many calls on one long-lived signal leave no abort listener behind', async () => {
    const ac = new AbortController();
    const [q, k, v] = qkv(1, 1, 16, D, 11);
    const docs = ids(16);
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < 40; i++) {
      pending.push(scaledDotProductAttention(q, k, v, { signal: ac.signal }).then((o) => o.dispose()));
      pending.push(flexAttention(q, k, v, { signal: ac.signal }).then((r) => r.out.dispose()));
      pending.push(q.toHost({ signal: ac.signal }));
    }
    pending.push(createBlockMask(documentMask(docs), 1, 1, 16, 16, { device: 'cpu', signal: ac.signal }));
    pending.push(attention(q, k, v, { impl: 'flex', docIds: docs, signal: ac.signal }).then((o) => o.dispose()));
    expect(getEventListeners(ac.signal, 'abort').length).toBeGreaterThan(0);
    await Promise.all(pending);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
    clearAttentionCache();
    for (const t of [q, k, v, docs]) t.dispose();
  });
});
