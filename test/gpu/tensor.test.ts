// Tensor on the GPU through the public API: device randn, copies, strided
// views, dtype conversion round trips, allocator behaviour and error paths.
import { expect, it } from 'vitest';
import {
  Tensor, memoryStats, emptyCache, synchronize, deviceInfo, DeviceError, DisposedError, OutOfMemoryError,
  toBf16, fromBf16, toF16, fromF16,
} from '../../lib/index.js';
import { describeGpu } from '../gpu-gate.js';
import { randnArray, rng } from '../reference.js';

const gpu = { device: 'cuda:0' as const };

describeGpu('Tensor on cuda:0', () => {
  it('deviceInfo names the GPU and its compute capability', () => {
    const d = deviceInfo();
    expect(d.driverLoaded).toBe(true);
    expect(d.gpus.length).toBeGreaterThan(0);
    expect(d.gpus[0]!.name.length).toBeGreaterThan(0);
    expect(Number(d.gpus[0]!.computeCapability)).toBeGreaterThanOrEqual(8);
    console.log(`GPU: ${d.gpus[0]!.name} (sm ${d.gpus[0]!.computeCapability}), NVRTC ${d.nvrtcVersion}`);
  });

  it('host -> device -> host round trips every dtype bit-exactly', async () => {
    const r = rng(11);
    const n = 4097;
    const cases: [Tensor['dtype'], ArrayBufferView][] = [
      ['f32', Float32Array.from({ length: n }, () => r() * 100 - 50)],
      ['bf16', Uint16Array.from({ length: n }, () => Math.floor(r() * 65536))],
      ['f16', Uint16Array.from({ length: n }, () => Math.floor(r() * 65536))],
      ['i32', Int32Array.from({ length: n }, () => Math.floor(r() * 2 ** 32) - 2 ** 31)],
      ['bool', Uint8Array.from({ length: n }, () => (r() < 0.5 ? 1 : 0))],
    ];
    for (const [dtype, data] of cases) {
      const t = Tensor.fromHost(data, [n], dtype, gpu);
      expect(t.device).toBe('cuda:0');
      const back = await t.toHost();
      expect(Buffer.from(back.buffer, back.byteOffset, back.byteLength).equals(
        Buffer.from(data.buffer, data.byteOffset, data.byteLength))).toBe(true);
      t.dispose();
    }
  });

  it('randn on the device is standard normal, seeded and dtype-correct', async () => {
    const a = Tensor.randn([1 << 20], 'f32', { ...gpu, seed: 123 });
    const b = Tensor.randn([1 << 20], 'f32', { ...gpu, seed: 123 });
    const c = Tensor.randn([1 << 20], 'f32', { ...gpu, seed: 124 });
    const [ha, hb, hc] = await Promise.all([a.toHost(), b.toHost(), c.toHost()]);
    expect(Buffer.from(ha.buffer).equals(Buffer.from(hb.buffer))).toBe(true);
    expect(Buffer.from(ha.buffer).equals(Buffer.from(hc.buffer))).toBe(false);
    let s = 0, s2 = 0, s4 = 0;
    for (const x of ha as Float32Array) { s += x; s2 += x * x; s4 += x ** 4; }
    const n = ha.length, mean = s / n, varr = s2 / n - mean * mean;
    expect(Math.abs(mean)).toBeLessThan(0.005);
    expect(Math.abs(Math.sqrt(varr) - 1)).toBeLessThan(0.005);
    expect(Math.abs(s4 / n - 3)).toBeLessThan(0.05); // Gaussian kurtosis
    const h = Tensor.randn([1 << 16], 'bf16', { ...gpu, seed: 5 });
    const hf = await h.toFloat32();
    let hs2 = 0;
    for (const x of hf) hs2 += x * x;
    expect(Math.abs(Math.sqrt(hs2 / hf.length) - 1)).toBeLessThan(0.02);
    for (const t of [a, b, c, h]) t.dispose();
  });

  it('contiguous() of a permuted GPU tensor matches the CPU result', async () => {
    const data = randnArray(3 * 5 * 7 * 9, 3);
    const g = Tensor.fromHost(data, [3, 5, 7, 9], 'f32', gpu);
    const c = Tensor.fromHost(data, [3, 5, 7, 9], 'f32', { device: 'cpu' });
    const gp = g.permute(2, 0, 3, 1).narrow(1, 1, 2), cp = c.permute(2, 0, 3, 1).narrow(1, 1, 2);
    expect(Array.from(await gp.toHost())).toEqual(Array.from(await cp.toHost()));
    // [B, S, H, D] storage viewed as [B, H, S, D]
    const bshd = g.transpose(1, 2);
    expect(Array.from(await bshd.contiguous().toHost())).toEqual(Array.from(await c.transpose(1, 2).toHost()));
    g.dispose();
  });

  it('to(dtype) on the GPU agrees with the host conversions', async () => {
    const xs = randnArray(10007, 9).map((x) => x * 1000);
    const g = Tensor.fromHost(xs, [10007], 'f32', gpu);
    const bf = await g.to('bf16').toHost();
    expect(Array.from(bf)).toEqual(Array.from(toBf16(xs)));
    const hf = await g.to('f16').toHost();
    expect(Array.from(hf)).toEqual(Array.from(toF16(xs)));
    const back = await g.to('bf16').to('f32').toHost();
    expect(Array.from(back)).toEqual(Array.from(fromBf16(toBf16(xs))));
    const backH = await g.to('f16').to('f32').toHost();
    expect(Array.from(backH)).toEqual(Array.from(fromF16(toF16(xs))));
    const ints = await g.to('i32').toHost();
    expect(Array.from(ints)).toEqual(Array.from(xs, (x) => Math.trunc(x)));
    const bools = await g.to('bool').toHost();
    expect(Array.from(bools)).toEqual(Array.from(xs, (x) => (x !== 0 ? 1 : 0)));
    g.dispose();
  });

  it('zeros are zero; the caching allocator reuses freed blocks', async () => {
    const z = Tensor.zeros([1000, 3], 'f32', gpu);
    expect((await z.toHost()).every((x) => x === 0)).toBe(true);
    z.dispose();
    emptyCache();
    const before = memoryStats();
    for (let i = 0; i < 50; i++) Tensor.empty([256, 1024], 'bf16', gpu).dispose();
    const after = memoryStats();
    expect(after.numCudaMallocs - before.numCudaMallocs).toBeLessThanOrEqual(1);
    expect(after.numCacheHits - before.numCacheHits).toBeGreaterThanOrEqual(49);
    expect(after.reservedBytes).toBeGreaterThanOrEqual(256 * 1024 * 2);
    emptyCache();
    expect(memoryStats().reservedBytes).toBeLessThan(after.reservedBytes);
  });

  it('toHost does not block the event loop', async () => {
    const t = Tensor.randn([4096, 4096], 'f32', gpu);
    let ticked = false;
    setImmediate(() => { ticked = true; });
    const p = t.toHost();
    const host = await p;
    expect(ticked).toBe(true);
    expect(host.length).toBe(4096 * 4096);
    await synchronize();
    t.dispose();
  });

  it('errors are typed and the process keeps working', async () => {
    expect(() => Tensor.zeros([4], 'f32', { device: 'cuda:99' })).toThrow(DeviceError);
    expect(() => Tensor.empty([1e15], 'bf16', gpu)).toThrow(OutOfMemoryError);
    const t = Tensor.randn([16], 'f32', gpu);
    t.dispose();
    t.dispose();
    await expect(t.toHost()).rejects.toThrow(DisposedError);
    // still works afterwards
    const u = Tensor.fromHost(new Float32Array([1, 2, 3]), [3], 'f32', gpu);
    expect(Array.from(await u.toHost())).toEqual([1, 2, 3]);
    u.dispose();
  });
});
