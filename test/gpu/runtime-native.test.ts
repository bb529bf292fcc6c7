/**
 * The native runtime layer exercised directly (no Tensor facade): caching
 * allocator, copies, memset, randn, castStrided, the JIT cache, typed errors
 * and asynchrony. Needs a CUDA device (skips otherwise; FLEXATTN_REQUIRE_GPU=1
 * turns the skip into a failure).
 */
import { expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { describeGpu } from '../gpu-gate.js';
import { envSwitch } from '../../lib/env.js';
import { native, DTYPE_CODE, type NativeAddon } from '../../lib/native.js';
import {
  CompileError, CudaError, DeviceError, DisposedError, InvalidArgumentError, OutOfMemoryError,
} from '../../lib/errors.js';

const DEV = 0;

function f32ToBf16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
function bf16ToF32(b: number): number {
  return new Float32Array(new Uint32Array([b << 16]).buffer)[0]!;
}
function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

async function readF32(n: NativeAddon, buf: ReturnType<NativeAddon['alloc']>, count: number, off = 0) {
  return new Float32Array(await n.copyDtoH(buf, off, count * 4));
}

function moments(xs: ArrayLike<number>) {
  let s = 0, s2 = 0;
  for (let i = 0; i < xs.length; i++) { s += xs[i]!; s2 += xs[i]! * xs[i]!; }
  const mean = s / xs.length;
  return { mean, std: Math.sqrt(s2 / xs.length - mean * mean) };
}

describeGpu('native runtime (GPU)', () => {
  const n = native();

  it('reports device properties', () => {
    const p = n.deviceProps(DEV);
    expect(p.index).toBe(DEV);
    expect(p.name.length).toBeGreaterThan(0);
    expect(p.major).toBeGreaterThanOrEqual(8);
    expect(p.totalMemory).toBeGreaterThan(1e9);
    expect(p.multiprocessors).toBeGreaterThan(0);
    expect(p.sharedMemoryPerBlockOptin).toBeGreaterThan(48 * 1024);
    const s = n.cudaStatus();
    const origin = n.kernelOrigin(DEV, 'util', 'flexattn_randn');
    const arch = `sm_${p.major}${p.minor}${p.major === 9 && p.minor === 0 ? 'a' : ''}`;
    if (envSwitch('FLEXATTN_DISABLE_FATBIN') === '1' || s.fatbinBytes === 0) expect(origin).toBe('nvrtc');
    else if (s.fatbinArchs.includes(arch)) expect(origin).toBe('fatbin');
    console.log(`[gpu] ${p.name} sm_${p.major}${p.minor}, driver ${s.driverVersion}, nvrtc ${s.nvrtcVersion || s.nvrtcError}, ` +
      `fatbin ${s.fatbinBytes} B [${s.fatbinArchs.join(',')}], randn from ${n.kernelOrigin(DEV, 'util', 'flexattn_randn')}`);
  });

  it('alloc/dispose: buffer fields, idempotent dispose, cache reuse, stats, emptyCache', () => {
    n.emptyCache(DEV);
    const s0 = n.memoryStats(DEV);
    const a = n.alloc(DEV, 1000);
    expect(a.device).toBe(DEV);
    expect(a.bytes).toBe(1000);
    expect(typeof a.ptr).toBe('bigint');
    expect(a.ptr).not.toBe(0n);
    expect(a.disposed).toBe(false);
    const s1 = n.memoryStats(DEV);
    expect(s1.numAllocs).toBe(s0.numAllocs + 1);
    expect(s1.numCudaMallocs).toBe(s0.numCudaMallocs + 1);
    expect(s1.allocatedBytes).toBeGreaterThanOrEqual(s0.allocatedBytes + 1000);
    const ptr = a.ptr;
    a.dispose();
    a.dispose(); // idempotent
    expect(a.disposed).toBe(true);
    const s2 = n.memoryStats(DEV);
    expect(s2.numFrees).toBe(s1.numFrees + 1);
    expect(s2.allocatedBytes).toBe(s0.allocatedBytes);
    expect(s2.reservedBytes).toBe(s1.reservedBytes);
    // Same rounded size: served from the cache, same address, no cuMemAlloc.
    const b = n.alloc(DEV, 900);
    expect(b.ptr).toBe(ptr);
    const s3 = n.memoryStats(DEV);
    expect(s3.numCacheHits).toBe(s2.numCacheHits + 1);
    expect(s3.numCudaMallocs).toBe(s2.numCudaMallocs);
    b.dispose();
    // Large pool: 2 MiB rounding.
    const big = n.alloc(DEV, 3 << 20);
    expect(n.memoryStats(DEV).reservedBytes).toBeGreaterThanOrEqual(s3.reservedBytes + (4 << 20));
    expect(n.memoryStats(DEV).peakAllocatedBytes).toBeGreaterThanOrEqual(4 << 20);
    big.dispose();
    n.emptyCache(DEV);
    const s4 = n.memoryStats(DEV);
    expect(s4.reservedBytes).toBe(s4.allocatedBytes);
    // Use after dispose is a typed error naming the argument.
    expect(() => n.memset(b, 0, 4, 0)).toThrow(DisposedError);
  });

  it('H2D/D2H round trip of random bytes, with offsets', async () => {
    const bytes = 3 * 1024 * 1024 + 17;
    const host = randomBytes(bytes);
    const buf = n.alloc(DEV, bytes + 64);
    n.copyHtoD(buf, 64, host);
    const back = new Uint8Array(await n.copyDtoH(buf, 64, bytes));
    expect(Buffer.from(back).equals(host)).toBe(true);
    // Sub-range, and a view with a non-zero byteOffset.
    const view = new Uint8Array(host.buffer, host.byteOffset + 5, 100);
    n.copyHtoD(buf, 0, view);
    const part = new Uint8Array(await n.copyDtoH(buf, 0, 100));
    expect(Buffer.from(part).equals(Buffer.from(view))).toBe(true);
    // Many small copies back to back reuse pinned staging without waiting.
    const chunks = Array.from({ length: 64 }, (_, i) => Float32Array.from({ length: 256 }, (_, j) => i * 1000 + j));
    chunks.forEach((c, i) => n.copyHtoD(buf, i * 1024, c));
    const all = await readF32(n, buf, 64 * 256);
    for (let i = 0; i < 64; i++) expect(all[i * 256 + 7]).toBe(i * 1000 + 7);
    buf.dispose();
  });

  it('copyDtoH returns a Promise and does not block the event loop', async () => {
    const buf = n.alloc(DEV, 64 << 20);
    n.memset(buf, 0, 64 << 20, 7);
    let immediateFired = false;
    setImmediate(() => { immediateFired = true; });
    const p = n.copyDtoH(buf, 0, 64 << 20);
    expect(p).toBeInstanceOf(Promise);
    const ab = await p;
    expect(immediateFired).toBe(true);
    expect(ab.byteLength).toBe(64 << 20);
    const u8 = new Uint8Array(ab);
    expect(u8[0]).toBe(7);
    expect(u8[u8.length - 1]).toBe(7);
    const sync = n.synchronize(DEV);
    expect(sync).toBeInstanceOf(Promise);
    await sync;
    buf.dispose();
  });

  it('copyDtoD and memset', async () => {
    const a = n.alloc(DEV, 4096), b = n.alloc(DEV, 4096);
    const src = randomBytes(4096);
    n.copyHtoD(a, 0, src);
    n.memset(b, 0, 4096, 0xab);
    n.copyDtoD(b, 100, a, 200, 1000);
    const out = new Uint8Array(await n.copyDtoH(b, 0, 4096));
    expect(out[0]).toBe(0xab);
    expect(out[99]).toBe(0xab);
    expect(Buffer.from(out.subarray(100, 1100)).equals(src.subarray(200, 1200))).toBe(true);
    expect(out[1100]).toBe(0xab);
    a.dispose(); b.dispose();
  });

  it('randn: N(0,1) statistics, deterministic per seed, all float dtypes', async () => {
    const N = 1 << 20;
    const buf = n.alloc(DEV, N * 4);
    n.randn(buf, 0, N, DTYPE_CODE.f32, 1234n, 0n);
    const x = await readF32(n, buf, N);
    const { mean, std } = moments(x);
    expect(Math.abs(mean)).toBeLessThan(0.005);
    expect(Math.abs(std - 1)).toBeLessThan(0.005);
    let within1 = 0, beyond3 = 0;
    for (const v of x) { if (Math.abs(v) < 1) within1++; if (Math.abs(v) > 3) beyond3++; }
    expect(within1 / N).toBeCloseTo(0.6827, 2);
    expect(beyond3 / N).toBeCloseTo(0.0027, 3);
    expect(x.every(Number.isFinite)).toBe(true);
    // Same seed: same values; other seed or subsequence: different values.
    n.randn(buf, 0, N, DTYPE_CODE.f32, 1234n, 0n);
    const again = await readF32(n, buf, N);
    let diff = 0;
    for (let i = 0; i < N; i++) if (again[i] !== x[i]) diff++;
    expect(diff).toBe(0);
    n.randn(buf, 0, N, DTYPE_CODE.f32, 1235n, 0n);
    const y = await readF32(n, buf, 1000);
    n.randn(buf, 0, N, DTYPE_CODE.f32, 1234n, 1n);
    const z = await readF32(n, buf, 1000);
    let sameY = 0, sameZ = 0;
    for (let i = 0; i < 1000; i++) { if (y[i] === x[i]) sameY++; if (z[i] === x[i]) sameZ++; }
    expect(sameY).toBeLessThan(5);
    expect(sameZ).toBeLessThan(5);
    // Offset + odd count leaves neighbours untouched.
    n.memset(buf, 0, 64, 0);
    n.randn(buf, 3, 7, DTYPE_CODE.f32, 9n, 0n);
    const w = await readF32(n, buf, 16);
    expect(w[2]).toBe(0);
    expect(w[3]).not.toBe(0);
    expect(w[9]).not.toBe(0);
    expect(w[10]).toBe(0);
    // bf16 / f16 are the rounded f32 values of the same stream.
    n.randn(buf, 0, 4096, DTYPE_CODE.bf16, 1234n, 0n);
    const hb = new Uint16Array(await n.copyDtoH(buf, 0, 8192));
    let badBf16 = 0;
    for (let i = 0; i < 4096; i++) if (hb[i] !== f32ToBf16(x[i]!)) badBf16++;
    expect(badBf16).toBe(0);
    n.randn(buf, 0, 4096, DTYPE_CODE.f16, 1234n, 0n);
    const hh = new Uint16Array(await n.copyDtoH(buf, 0, 8192));
    let badF16 = 0;
    for (let i = 0; i < 4096; i++) if (!(Math.abs(f16ToF32(hh[i]!) - x[i]!) <= Math.abs(x[i]!) * 1e-3 + 1e-7)) badF16++;
    expect(badF16).toBe(0);
    buf.dispose();
  });

  it('castStrided: transposed f32 view to bf16/f16/f32/i32/bool matches a JS reference', async () => {
    const [B, R, C] = [3, 37, 53];
    const host = Float32Array.from({ length: B * R * C }, (_, i) => Math.sin(i) * 50);
    const src = n.alloc(DEV, host.byteLength);
    n.copyHtoD(src, 0, host);
    // View [B, C, R] of the [B, R, C] storage (transpose of the last two dims), offset by one batch.
    const shape = [B - 1, C, R], strides = [R * C, 1, C], offset = R * C;
    const ref: number[] = [];
    for (let b = 0; b < B - 1; b++) for (let c = 0; c < C; c++) for (let r = 0; r < R; r++) {
      ref.push(host[offset + b * R * C + c + r * C]!);
    }
    const numel = ref.length;
    const dst = n.alloc(DEV, numel * 4 + 16);
    n.castStrided({ buffer: src, offset, dtype: DTYPE_CODE.f32, shape, strides }, dst, 0, DTYPE_CODE.f32);
    expect(Array.from(await readF32(n, dst, numel))).toEqual(ref);
    n.castStrided({ buffer: src, offset, dtype: DTYPE_CODE.f32, shape, strides }, dst, 0, DTYPE_CODE.bf16);
    const bf = new Uint16Array(await n.copyDtoH(dst, 0, numel * 2));
    for (let i = 0; i < numel; i++) expect(bf[i]).toBe(f32ToBf16(ref[i]!));
    n.castStrided({ buffer: src, offset, dtype: DTYPE_CODE.f32, shape, strides }, dst, 0, DTYPE_CODE.i32);
    const i32 = new Int32Array(await n.copyDtoH(dst, 0, numel * 4));
    for (let i = 0; i < numel; i++) expect(i32[i]).toBe(Math.trunc(ref[i]!) | 0);
    n.castStrided({ buffer: src, offset, dtype: DTYPE_CODE.f32, shape, strides }, dst, 4, DTYPE_CODE.bool);
    const u8 = new Uint8Array(await n.copyDtoH(dst, 4, numel));
    for (let i = 0; i < numel; i++) expect(u8[i]).toBe(ref[i] !== 0 ? 1 : 0);
    // bf16 source with a broadcast (stride 0) dim and a negative stride, to f32.
    const bits = Uint16Array.from({ length: 64 }, (_, i) => f32ToBf16(i - 20.5));
    const sb = n.alloc(DEV, 128);
    n.copyHtoD(sb, 0, bits);
    n.castStrided({ buffer: sb, offset: 63, dtype: DTYPE_CODE.bf16, shape: [4, 64], strides: [0, -1] }, dst, 0, DTYPE_CODE.f32);
    const back = await readF32(n, dst, 256);
    for (let r = 0; r < 4; r++) for (let j = 0; j < 64; j++) expect(back[r * 64 + j]).toBe(bf16ToF32(bits[63 - j]!));
    // i32 -> i32 is bit exact (large values).
    const ints = Int32Array.from({ length: 16 }, (_, i) => 2 ** 30 + i * 7 - 3);
    n.copyHtoD(sb, 0, ints);
    n.castStrided({ buffer: sb, offset: 0, dtype: DTYPE_CODE.i32, shape: [16], strides: [1] }, dst, 0, DTYPE_CODE.i32);
    expect(Array.from(new Int32Array(await n.copyDtoH(dst, 0, 64)))).toEqual(Array.from(ints));
    // Out-of-bounds views are rejected.
    expect(() => n.castStrided({ buffer: sb, offset: 0, dtype: DTYPE_CODE.i32, shape: [33], strides: [1] }, dst, 0, DTYPE_CODE.i32))
      .toThrow(InvalidArgumentError);
    src.dispose(); dst.dispose(); sb.dispose();
  });

  it('error paths: device range, bad offsets, OOM then recovery', async () => {
    const count = n.cudaStatus().deviceCount;
    for (const f of [() => n.deviceProps(count), () => n.alloc(count, 16), () => n.memoryStats(99)]) {
      let err: unknown;
      try { f(); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(DeviceError);
      expect((err as DeviceError).argument).toBe('device');
    }
    const buf = n.alloc(DEV, 256);
    const cases: [() => unknown, string][] = [
      [() => n.copyHtoD(buf, 250, new Uint8Array(16)), 'src.byteLength'],
      [() => n.copyHtoD(buf, 1000, new Uint8Array(1)), 'byteOffset'],
      [() => n.copyDtoH(buf, 0, 257), 'bytes'],
      [() => n.copyDtoH(buf, -1, 4), 'byteOffset'],
      [() => n.memset(buf, 0, 16, 256), 'value'],
      [() => n.randn(buf, 60, 8, DTYPE_CODE.f32, 1n, 0n), 'numel'],
      [() => n.randn(buf, 0, 8, DTYPE_CODE.i32, 1n, 0n), 'dtype'],
      [() => n.copyDtoD(buf, 0, buf, 200, 100), 'bytes'],
      [() => n.copyHtoD(buf, 0, [1, 2] as never), 'src'],
    ];
    for (const [f, arg] of cases) {
      let err: unknown;
      try { f(); } catch (e) { err = e; }
      expect(err, arg).toBeInstanceOf(InvalidArgumentError);
      expect((err as InvalidArgumentError).argument, arg).toBe(arg);
    }
    // OOM: a clear typed error naming the request; the process keeps working.
    const before = n.memoryStats(DEV);
    let oom: unknown;
    try { n.alloc(DEV, 1e15); } catch (e) { oom = e; }
    expect(oom).toBeInstanceOf(OutOfMemoryError);
    expect(oom).toBeInstanceOf(CudaError);
    expect((oom as OutOfMemoryError).cudaError).toBe('CUDA_ERROR_OUT_OF_MEMORY');
    expect((oom as OutOfMemoryError).code).toBe('ERR_FLEXATTN_OUT_OF_MEMORY');
    expect((oom as Error).message).toMatch(/1000000000000000 bytes/);
    expect((oom as Error).message).toMatch(/free of/);
    expect((oom as Error).message).toMatch(/Possible solutions/);
    expect(n.memoryStats(DEV).numOomRetries).toBe(before.numOomRetries + 1);
    const ok = n.alloc(DEV, 1 << 20);
    n.memset(ok, 0, 1 << 20, 3);
    expect(new Uint8Array(await n.copyDtoH(ok, 0, 4))[3]).toBe(3);
    ok.dispose(); buf.dispose();
  });

  it('JIT: compile errors carry source and log; memory and disk cache hits', () => {
    const bad = 'extern "C" __global__ void broken(float* x) { x[0] = undefined_name; }\n';
    let err: unknown;
    try { n.jitCompileForTest(bad, 'broken'); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(CompileError);
    expect((err as CompileError).source).toBe(bad);
    expect((err as CompileError).log).toMatch(/undefined_name/);
    expect((err as Error).message).toMatch(/undefined_name/);

    const tag = `${process.pid}_${Date.now()}`;
    const src = `#include "common.cuh"\nextern "C" __global__ void k_${tag}(unsigned short* y, const float* x) {\n` +
      `  y[threadIdx.x] = f32_to_bf16(x[threadIdx.x] * 2.0f);\n}\n`;
    const r1 = n.jitCompileForTest(src, `k_${tag}`);
    expect(r1.cacheHit).toBe('none');
    // CUBIN for the real arch, or PTX (driver-JIT) when forced / NVRTC is older than the GPU.
    if (envSwitch('FLEXATTN_JIT_PTX') === '1') expect(r1.target).toMatch(/^compute_\d+a?$/);
    else expect(r1.target).toMatch(/^(sm|compute)_\d+a?$/);
    expect(existsSync(r1.path)).toBe(true);
    expect(r1.path.startsWith(n.jitCacheDir())).toBe(true);
    const r2 = n.jitCompileForTest(src, `k_${tag}`);
    expect(r2.cacheHit).toBe('memory');
    n.jitClearMemoryCache();
    const r3 = n.jitCompileForTest(src, `k_${tag}`);
    expect(r3.cacheHit).toBe('disk');
    expect(r3.ms).toBeLessThan(r1.ms);
    // A corrupt disk entry is ignored and rewritten.
    writeFileSync(r1.path, 'garbage');
    n.jitClearMemoryCache();
    expect(n.jitCompileForTest(src, `k_${tag}`).cacheHit).toBe('none');
    n.jitClearMemoryCache();
    expect(n.jitCompileForTest(src, `k_${tag}`).cacheHit).toBe('disk');
    // Missing kernel name is a CudaError from cuModuleGetFunction.
    expect(() => n.jitCompileForTest(src, 'no_such_kernel')).toThrow(CudaError);
    console.log(`[gpu] JIT (${r1.target}) compile ${r1.ms.toFixed(1)} ms, memory hit ${r2.ms.toFixed(3)} ms, disk hit ${r3.ms.toFixed(2)} ms`);
  });

  it('jitLaunch: compiles through the cache and launches with a packed parameter struct', async () => {
    const src = `#include "common.cuh"
struct P { unsigned long long out; int n; float scale; };
extern "C" __global__ void fill_scaled(const P p) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < p.n) ((bf16_t*)p.out)[i] = f32_to_bf16(i * p.scale);
}
`;
    const N = 1000;
    const out = n.alloc(DEV, N * 2);
    const params = new Uint8Array(16);
    const dv = new DataView(params.buffer);
    dv.setBigUint64(0, out.ptr, true);
    dv.setInt32(8, N, true);
    dv.setFloat32(12, 0.25, true);
    n.jitLaunch(DEV, src, 'fill_scaled', [Math.ceil(N / 128), 1, 1], [128, 1, 1], 0, params);
    const bits = new Uint16Array(await n.copyDtoH(out, 0, N * 2));
    for (let i = 0; i < N; i += 37) expect(bits[i]).toBe(f32ToBf16(i * 0.25));
    expect(() => n.jitLaunch(DEV, src, 'fill_scaled', [0, 1, 1], [128, 1, 1], 0, params)).toThrow(InvalidArgumentError);
    out.dispose();
  });

  it('garbage-collected buffers return to the cache', async () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    if (!gc) return;
    const before = n.memoryStats(DEV);
    (() => { for (let i = 0; i < 10; i++) n.alloc(DEV, 4096); })();
    for (let i = 0; i < 5; i++) { gc(); await new Promise((r) => setImmediate(r)); }
    // <=: garbage from earlier tests may be collected too.
    expect(n.memoryStats(DEV).allocatedBytes).toBeLessThanOrEqual(before.allocatedBytes);
    expect(n.memoryStats(DEV).numFrees).toBeGreaterThanOrEqual(before.numFrees + 10);
  });

  it('16 concurrent copyDtoH waits leave the libuv pool free (fs/crypto resolve while they are pending)', async () => {
    const { readFile } = await import('node:fs/promises');
    const { pbkdf2 } = await import('node:crypto');
    // One thread spinning ~0.5-1 s on the device stream; every wait queued behind it stays pending.
    const spin = `extern "C" __global__ void flexattn_test_spin(const long long cycles) {
  long long t0 = clock64();
  while (clock64() - t0 < cycles) { }
}
`;
    const params = new Uint8Array(8);
    const N = 16, B = 1 << 20;
    const bufs: ReturnType<NativeAddon['alloc']>[] = [], hosts: Buffer[] = [];
    for (let i = 0; i < N; i++) {
      const h = randomBytes(B), b = n.alloc(DEV, B);
      n.copyHtoD(b, 0, h);
      bufs.push(b); hosts.push(h);
    }
    n.jitLaunch(DEV, spin, 'flexattn_test_spin', [1, 1, 1], [1, 1, 1], 0, params); // compile outside the timing
    await n.synchronize(DEV);
    new DataView(params.buffer).setBigInt64(0, 1_000_000_000n, true);
    const t0 = performance.now();
    n.jitLaunch(DEV, spin, 'flexattn_test_spin', [1, 1, 1], [1, 1, 1], 0, params);
    let copiesAt = -1;
    const copies = Promise.all(bufs.map((b) => n.copyDtoH(b, 0, B))).then((r) => { copiesAt = performance.now() - t0; return r; });
    const sync = n.synchronize(DEV);
    // More pool work (6 reads + 2 pbkdf2) than libuv's 4 threads: with one pool thread
    // blocked per pending wait it could only run after the kernel.
    await Promise.all([
      ...Array.from({ length: 6 }, () => readFile(new URL(import.meta.url))),
      ...Array.from({ length: 2 }, () => new Promise((res, rej) => pbkdf2('k', 's', 1, 32, 'sha256', (e, k) => (e ? rej(e) : res(k))))),
    ]);
    const poolAt = performance.now() - t0;
    const results = await copies;
    await sync;
    console.log(`[gpu] 16 pending copyDtoH: fs/crypto done at ${poolAt.toFixed(1)} ms, copies at ${copiesAt.toFixed(1)} ms`);
    expect(copiesAt).toBeGreaterThan(0);
    expect(poolAt).toBeLessThan(copiesAt);
    for (let i = 0; i < N; i++) expect(Buffer.from(results[i]!).equals(hosts[i]!), `buffer ${i}`).toBe(true);
    // Mixed sizes (empty, odd, offset) complete in order and with the right bytes.
    const parts = await Promise.all([n.copyDtoH(bufs[0]!, 0, 0), n.copyDtoH(bufs[1]!, 7, 13), n.copyDtoH(bufs[2]!, B - 1, 1)]);
    expect(parts[0]!.byteLength).toBe(0);
    expect(Buffer.from(parts[1]!).equals(hosts[1]!.subarray(7, 20))).toBe(true);
    expect(new Uint8Array(parts[2]!)[0]).toBe(hosts[2]![B - 1]);
    for (const b of bufs) b.dispose();
  });

  // Must stay last: a kernel fault leaves this process's CUDA context unusable.
  it('a kernel fault surfaces as a rejected promise with the CUDA error name', async () => {
    const src = `extern "C" __global__ void flexattn_test_fault(const unsigned long long addr) {
  *(volatile int*)addr = 1;
}
`;
    const buf = n.alloc(DEV, 16);
    const params = new Uint8Array(8);
    new DataView(params.buffer).setBigUint64(0, 8n, true); // unmapped address
    n.jitLaunch(DEV, src, 'flexattn_test_fault', [1, 1, 1], [1, 1, 1], 0, params);
    // Enqueue may already see the sticky error (sync throw) or the wait does (rejection).
    const err = await (async () => n.copyDtoH(buf, 0, 16))().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(CudaError);
    expect((err as CudaError).cudaError).toBe('CUDA_ERROR_ILLEGAL_ADDRESS');
    expect((err as Error).message).toMatch(/Possible solutions/);
    const err2 = await (async () => n.synchronize(DEV))().then(() => null, (e: unknown) => e);
    expect(err2).toBeInstanceOf(CudaError);
  });
});
