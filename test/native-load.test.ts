/**
 * The addon loads without a GPU (no link-time CUDA dependency) and reports
 * why CUDA is unusable with typed, actionable errors. On a GPU machine the
 * same checks assert the positive case instead.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { envSwitch } from '../lib/env.js';
import { native, nativeAvailable, packageRoot } from '../lib/native.js';
import { CudaUnavailableError, DeviceError, FlexAttnError, InvalidArgumentError } from '../lib/errors.js';

const available = nativeAvailable();
const d = available ? native() : undefined;
const hasDriver = !!d?.cudaStatus().driverLoaded;

describe.skipIf(!available)('native addon loading', () => {
  it('exports the NativeAddon contract', () => {
    for (const name of ['setErrorClasses', 'cudaStatus', 'deviceProps', 'alloc', 'copyHtoD', 'copyDtoH',
      'copyDtoD', 'memset', 'randn', 'castStrided', 'synchronize', 'memoryStats', 'emptyCache',
      'jitCompileForTest', 'jitCacheDir', 'jitClearMemoryCache', 'kernelOrigin', 'jitLaunch']) {
      expect(typeof (d as unknown as Record<string, unknown>)[name], name).toBe('function');
    }
    expect(d!.abiVersion).toBe(1);
  });

  it('a DeviceBuffer cannot be constructed from JS (only alloc() makes one)', () => {
    const Ctor = (d as unknown as { DeviceBuffer: new (...a: unknown[]) => unknown }).DeviceBuffer;
    expect(typeof Ctor).toBe('function');
    expect(() => new Ctor()).toThrow(/cannot be constructed from JS; use alloc\(\)/);
    expect(() => new Ctor({})).toThrow(FlexAttnError);
  });

  it('links no CUDA library (libcuda/libcudart/libnvrtc are dlopened)', () => {
    const bin = readFileSync(join(packageRoot, 'build', 'Release', 'flexattn.node'));
    // ELF DT_NEEDED names live in .dynstr; a linked CUDA lib would appear as its soname.
    const text = bin.toString('latin1');
    expect(text).not.toMatch(/libcudart\.so/);
    expect(text.includes('libcuda.so.1')).toBe(true); // only as a dlopen string
  });

  it('cudaStatus never throws and describes the build', () => {
    const s = d!.cudaStatus();
    expect(typeof s.driverLoaded).toBe('boolean');
    expect(typeof s.nvrtcLoaded).toBe('boolean');
    expect(Array.isArray(s.fatbinArchs)).toBe(true);
    if (s.fatbinBytes > 0) expect(s.fatbinArchs.length).toBeGreaterThan(0);
    else expect(s.fatbinArchs).toEqual([]);
    if (!s.nvrtcLoaded) {
      expect(s.nvrtcError).toMatch(/libnvrtc\.so\.13/);
      expect(s.nvrtcError).toMatch(/Possible solutions/);
      expect(s.nvrtcError).toMatch(/FLEXATTN_NVRTC/);
    } else {
      expect(s.nvrtcVersion).toMatch(/^\d+\.\d+$/);
    }
  });

  it('jitCacheDir honours FLEXATTN_CACHE_DIR', () => {
    const prev = process.env.FLEXATTN_CACHE_DIR;
    process.env.FLEXATTN_CACHE_DIR = '/tmp/flexattn-test-cache';
    try {
      expect(d!.jitCacheDir()).toBe('/tmp/flexattn-test-cache');
    } finally {
      if (prev === undefined) delete process.env.FLEXATTN_CACHE_DIR;
      else process.env.FLEXATTN_CACHE_DIR = prev;
    }
    if (!envSwitch('FLEXATTN_CACHE_DIR')) expect(d!.jitCacheDir()).toMatch(/flexattn$/);
  });
});

describe.skipIf(!available || hasDriver)('native addon without a CUDA driver', () => {
  it('cudaStatus reports driverLoaded=false with a helpful driverError', () => {
    const s = d!.cudaStatus();
    expect(s.driverLoaded).toBe(false);
    expect(s.deviceCount).toBe(0);
    expect(s.driverPath).toBe('');
    expect(s.driverError).toMatch(/libcuda\.so\.1/);
    expect(s.driverError).toMatch(/Possible solutions/);
    expect(s.driverError).toMatch(/nvidia-smi/);
  });

  it('alloc throws CudaUnavailableError naming libcuda.so.1', () => {
    let err: unknown;
    try { d!.alloc(0, 1024); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(CudaUnavailableError);
    expect(err).toBeInstanceOf(FlexAttnError);
    expect((err as Error).message).toMatch(/libcuda\.so\.1/);
    expect((err as Error).message).toMatch(/Possible solutions/);
    expect((err as CudaUnavailableError).details).toMatch(/libcuda\.so\.1/);
  });

  it('deviceProps, synchronize and memoryStats throw typed errors', () => {
    expect(() => d!.deviceProps(0)).toThrow(CudaUnavailableError);
    expect(() => d!.synchronize(0)).toThrow(CudaUnavailableError);
    expect(() => d!.memoryStats(0)).toThrow(CudaUnavailableError);
    expect(() => d!.jitCompileForTest('extern "C" __global__ void k() {}', 'k')).toThrow(CudaUnavailableError);
  });

  it('argument errors are typed before CUDA is touched', () => {
    expect(() => d!.copyHtoD({} as never, 0, new Uint8Array(4))).toThrow(InvalidArgumentError);
    try {
      d!.copyHtoD({} as never, 0, new Uint8Array(4));
    } catch (e) {
      expect((e as InvalidArgumentError).argument).toBe('dst');
    }
    expect(() => d!.alloc(-1, 16)).toThrow(CudaUnavailableError); // range needs the driver to count devices
  });
});

describe.skipIf(!available || !hasDriver)('native addon with a CUDA driver', () => {
  it('cudaStatus reports the driver and devices', () => {
    const s = d!.cudaStatus();
    expect(s.driverLoaded).toBe(true);
    expect(s.driverError).toBe('');
    expect(s.driverPath).toMatch(/libcuda/);
    expect(s.driverVersion).toBeGreaterThanOrEqual(12000);
    expect(s.deviceCount).toBeGreaterThan(0);
  });

  it('deviceProps throws DeviceError naming `device` out of range', () => {
    const n = d!.cudaStatus().deviceCount;
    let err: unknown;
    try { d!.deviceProps(n); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(DeviceError);
    expect((err as DeviceError).argument).toBe('device');
  });
});
