// Typed errors and defaults on a GPU host: an allocation the card cannot hold
// is an OutOfMemoryError that names the shape and prints its remedies once,
// and the process keeps allocating; synchronize/memoryStats default to
// cuda:0; `await using` (Symbol.asyncDispose) waits for the device.
import { expect, it } from 'vitest';
import {
  OutOfMemoryError, Tensor, defaultDevice, memoryStats, synchronize,
} from '../../lib/index.js';
import { describeGpu } from '../gpu-gate.js';
import { randnArray } from '../reference.js';

describeGpu('errors and defaults on cuda:0', () => {
  it('Tensor.empty of 4 TB is an OutOfMemoryError naming shape, with one Possible solutions block; the next allocation works', async () => {
    const before = memoryStats('cuda:0');
    let err: unknown;
    try { Tensor.empty([1e12], 'f32', { device: 'cuda:0' }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(OutOfMemoryError);
    const e = err as OutOfMemoryError;
    expect(e.code).toBe('ERR_FLEXATTN_OUT_OF_MEMORY');
    expect(e.cudaError).toBe('CUDA_ERROR_OUT_OF_MEMORY');
    expect(e.message).toMatch(/shape \[1000000000000\] of f32/);
    expect(e.message.split('Possible solutions:').length - 1).toBe(1);
    expect(memoryStats('cuda:0').allocatedBytes).toBe(before.allocatedBytes);
    const host = randnArray(1531, 5);
    const t = Tensor.fromHost(host, [1531], 'f32', { device: 'cuda:0' });
    expect(await t.toHost()).toEqual(host);
    t.dispose();
  });

  it('synchronize() and memoryStats() default to cuda:0', async () => {
    expect(defaultDevice()).toBe('cuda:0');
    const t = Tensor.randn([1 << 20], 'f32', { device: 'cuda:0' });
    await expect(synchronize()).resolves.toBeUndefined();
    const s = memoryStats();
    expect(s.device).toBe('cuda:0');
    expect(s.allocatedBytes).toBeGreaterThanOrEqual(4 << 20);
    expect(s.allocatedBytes).toBe(memoryStats('cuda:0').allocatedBytes);
    t.dispose();
  });

  it('Symbol.asyncDispose disposes a CUDA tensor after the device passed its work', async () => {
    const before = memoryStats('cuda:0').allocatedBytes;
    const t = Tensor.randn([1 << 22], 'bf16', { device: 'cuda:0' });
    const copy = t.to('f32'); // queued work reading t
    const p = t[Symbol.asyncDispose]();
    expect(t.disposed).toBe(false); // still waiting for the device
    await p;
    expect(t.disposed).toBe(true);
    const v = await copy.toHost();
    expect(v.length).toBe(1 << 22);
    expect(Number.isFinite(v[12345]!)).toBe(true);
    copy.dispose();
    expect(memoryStats('cuda:0').allocatedBytes).toBe(before);
  });
});
