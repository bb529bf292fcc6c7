/**
 * Cancelling CPU attention: runCpuAttention(…, { signal }) and the native
 * cancel flag. A call that would run for many minutes (S = 2^20) stops within
 * a second or two of AbortSignal.timeout(200) firing, the process keeps
 * working, and the listener does not outlive the call.
 */
import { getEventListeners } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it, vi } from 'vitest';
import { runCpuAttention } from '../lib/cpu-backend.js';
import { AbortError, FlexAttnError } from '../lib/errors.js';
import { native, type NativeHostView } from '../lib/native.js';
import { Tensor } from '../lib/tensor.js';
import { randnArray, referenceAttention, relError } from './reference.js';

/** A CPU bf16 tensor [1, 1, S, D] of random values of magnitude in [2^-7, 2), both signs (raw bits, cheap for large S). */
function bigBf16(S: number, D: number, seed: number): Tensor {
  const n = S * D;
  const bits = new Uint16Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    // sign | exponent 120..127 | 7 mantissa bits
    bits[i] = ((x >>> 31) << 15) | ((120 + ((x >>> 7) & 7)) << 7) | (x & 0x7f);
  }
  return Tensor.fromHost(bits, [1, 1, S, D], 'bf16', { device: 'cpu' });
}

/** A small random case and its float64 reference, to show the backend still computes right. */
async function smallCallIsCorrect(): Promise<void> {
  const B = 1, H = 2, S = 37, D = 16;
  const [qa, ka, va] = [1, 2, 3].map((s) => randnArray(B * H * S * D, 40 + s));
  const t = (a: Float32Array) => Tensor.fromHost(a, [B, H, S, D], 'f32', { device: 'cpu' });
  const scale = 0.25;
  const res = await runCpuAttention({ scale, isCausal: false, returnLse: true }, t(qa!), t(ka!), t(va!),
    { signal: new AbortController().signal });
  const ref = referenceAttention({ q: qa!, k: ka!, v: va!, B, Hq: H, Hkv: H, Sq: S, Skv: S, D, Dv: D, scale });
  expect(relError(res.out.hostStorage() as Float32Array, ref.out)).toBeLessThan(1e-5);
  expect(relError(res.lse!.hostStorage() as Float32Array, ref.lse)).toBeLessThan(1e-5);
}

/** Nice value of each thread of this process (Linux /proc), by thread id. */
function threadNice(): Map<number, number> {
  const m = new Map<number, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      m.set(Number(tid), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]));
    } catch { /* the thread just ended */ }
  }
  return m;
}

describe('CPU attention cancellation', () => {
  it('an S = 2^20 call (minutes of work) stops within ~1 s of AbortSignal.timeout(200); the next call works', async () => {
    const S = 1 << 20, D = 8;
    const q = bigBf16(S, D, 1), k = bigBf16(S, D, 2), v = bigBf16(S, D, 3);
    const signal = AbortSignal.timeout(200);
    let abortedAt = 0;
    signal.addEventListener('abort', () => { abortedAt = performance.now(); });
    const t0 = performance.now();
    const err = await runCpuAttention({ scale: 0.35, isCausal: false, returnLse: true }, q, k, v, { signal })
      .then(() => undefined, (e: unknown) => e);
    const settledAt = performance.now();
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).code).toBe('ABORT_ERR');
    expect((err as AbortError).cause).toBe(signal.reason);
    expect((signal.reason as Error).name).toBe('TimeoutError');
    expect(abortedAt).toBeGreaterThan(0);
    console.log(`S=2^20 call: aborted after ${(abortedAt - t0).toFixed(0)} ms, settled ${(settledAt - abortedAt).toFixed(0)} ms later`);
    expect(settledAt - abortedAt).toBeLessThan(1500);
    expect(settledAt - t0).toBeLessThan(2500);
    expect(getEventListeners(signal, 'abort')).toHaveLength(1); // only this test's own listener
    await smallCallIsCorrect();
  });

  it('an already aborted signal rejects with AbortError (its reason as cause) without starting native work', async () => {
    const q = Tensor.fromHost(randnArray(64, 1), [1, 1, 8, 8], 'f32', { device: 'cpu' });
    const ac = new AbortController();
    const reason = new Error('client went away');
    ac.abort(reason);
    const spy = vi.spyOn(native(), 'cpuAttention');
    try {
      const err = await runCpuAttention({ scale: 1, isCausal: false, returnLse: false }, q, q, q, { signal: ac.signal })
        .then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(AbortError);
      expect((err as AbortError).cause).toBe(reason);
      expect(spy).not.toHaveBeenCalled();
    } finally {
      spy.mockRestore();
    }
  });

  it('abort during a call: AbortError with the given reason; other calls in flight are unaffected', async () => {
    const S = 1 << 17, D = 16;
    const q = bigBf16(S, D, 7), k = bigBf16(S, D, 8), v = bigBf16(S, D, 9);
    const ac = new AbortController();
    const p = runCpuAttention({ scale: 0.25, isCausal: true, returnLse: false }, q, k, v, { signal: ac.signal });
    const other = smallCallIsCorrect();
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1);
    // While it runs, its compute threads are at background priority and the
    // JS thread is not (so the event loop stays responsive).
    // (polled: the job's threads are restarted between its phases)
    const mainNice = threadNice().get(process.pid)!;
    let background = 0;
    for (let i = 0; i < 40 && background === 0 && mainNice < 10; i++) {
      await new Promise((r) => setTimeout(r, 25));
      const nice = threadNice();
      expect(nice.get(process.pid)).toBe(mainNice);
      background = [...nice.values()].filter((n) => n === 10).length;
    }
    if (mainNice < 10) expect(background).toBeGreaterThanOrEqual(1);
    ac.abort('stop');
    const t0 = performance.now();
    const err = await p.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).cause).toBe('stop');
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
    await other;
  });

  it('the abort listener is removed when a call completes or fails', async () => {
    const q = Tensor.fromHost(randnArray(2 * 9 * 8, 3), [1, 2, 9, 8], 'f32', { device: 'cpu' });
    const ac = new AbortController();
    const p = runCpuAttention({ scale: 1, isCausal: false, returnLse: false }, q, q, q, { signal: ac.signal });
    await Promise.resolve();
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1);
    const res = await p;
    expect(res.out.shape).toEqual([1, 2, 9, 8]);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
    // a failing call (block mask index out of range, found by the worker) removes it too
    const bad = runCpuAttention({
      scale: 1, isCausal: false, returnLse: false,
      blockMask: {
        B: 1, H: 1, numQBlocks: 1, numKvBlocks: 1, qBlock: 16, kvBlock: 16,
        kvNumBlocks: Int32Array.of(1), kvIndices: Int32Array.of(5),
      },
    }, q, q, q, { signal: ac.signal });
    await expect(bad).rejects.toThrow(/blockMask\.kvIndices/);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
    // aborting after completion changes nothing
    ac.abort();
    expect(res.out.isCpu).toBe(true);
  });

  it('native flag: a set cancel flag rejects with cancelled: true; a bad flag is an InvalidArgumentError', async () => {
    const data = randnArray(4 * 64 * 16, 5);
    const hv: NativeHostView = { data, dtype: 2, shape: [1, 4, 64, 16], strides: [4096, 1024, 16, 1] };
    const base = { q: hv, k: hv, v: hv, scale: 0.25, isCausal: false, returnLse: false };
    const cancel = new Int32Array(new SharedArrayBuffer(4));
    Atomics.store(cancel, 0, 1);
    const err = await native().cpuAttention({ ...base, cancel }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(FlexAttnError);
    expect((err as { cancelled?: boolean }).cancelled).toBe(true);
    Atomics.store(cancel, 0, 0);
    const ok = await native().cpuAttention({ ...base, cancel });
    const plain = await native().cpuAttention(base);
    expect(ok.out).toEqual(plain.out);
    expect(() => native().cpuAttention({ ...base, cancel: new Float32Array(1) as unknown as Int32Array })).toThrow(/cancel/);
    expect(() => native().cpuAttention({ ...base, cancel: new Int32Array(0) })).toThrow(/cancel/);
  });
});
