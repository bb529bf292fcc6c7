/**
 * CUDA graphs without a GPU (the GPU suite is test/gpu/graphs.test.ts):
 * argument checks of captureGraph, the typed error when no CUDA device is
 * usable, the one-capture-at-a-time rule, the error classes, and
 * Tensor.copyFrom (the way new inputs reach a captured step) on the CPU.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { cudaAvailable } from '../lib/device.js';
import {
  CudaUnavailableError, DeviceError, DTypeError, ERROR_CODES, GraphCaptureError, GraphReplayError, InvalidArgumentError, ShapeError,
} from '../lib/errors.js';
import { captureGraph } from '../lib/serving/graph.js';
import { GraphCapture, activeCapture, beginActive, endActive } from '../lib/serving/capture-state.js';
import { KvCache } from '../lib/serving/kv-cache.js';
import { Tensor } from '../lib/tensor.js';

describe('captureGraph argument checks', () => {
  it('rejects a non-function, unknown options and a bad maxSeqLen before touching a device', async () => {
    await expect(captureGraph(42 as never)).rejects.toMatchObject({ name: 'InvalidArgumentError', argument: 'fn' });
    await expect(captureGraph(async () => {}, { devise: 'cuda:0' } as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    for (const bad of [0, -1, 1.5, 2 ** 31, '8' as never, Number.NaN]) {
      await expect(captureGraph(async () => {}, { maxSeqLen: bad })).rejects.toMatchObject({ argument: 'options.maxSeqLen' });
    }
    await expect(captureGraph(async () => {}, null as never)).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it("rejects device 'cpu' (graphs record GPU work)", async () => {
    const err = await captureGraph(async () => {}, { device: 'cpu' }).catch((e: unknown) => e);
    // Without a GPU, naming any device but cpu is CudaUnavailable; cpu itself is a DeviceError.
    expect(err).toBeInstanceOf(DeviceError);
  });

  it.runIf(!cudaAvailable())('without a usable GPU: CudaUnavailableError (code ERR_FLEXATTN_CUDA_UNAVAILABLE), callback never run', async () => {
    let ran = false;
    const err = await captureGraph(() => { ran = true; }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CudaUnavailableError);
    expect((err as CudaUnavailableError).code).toBe('ERR_FLEXATTN_CUDA_UNAVAILABLE');
    expect(ran).toBe(false);
    await expect(captureGraph(() => { ran = true; }, { device: 'cuda:0' })).rejects.toBeInstanceOf(CudaUnavailableError);
    expect(ran).toBe(false);
    expect(activeCapture()).toBeUndefined();
  });

  it('an aborted signal rejects before anything starts', async () => {
    let ran = false;
    const err = await captureGraph(() => { ran = true; }, { signal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect((err as Error).name).toBe(cudaAvailable() ? 'AbortError' : 'CudaUnavailableError');
    expect(ran).toBe(false);
  });
});

describe('one capture at a time', () => {
  afterEach(() => {
    const c = activeCapture();
    if (c) endActive(c);
  });

  it('a second capture while one is active is a GraphCaptureError; ending makes room again', () => {
    const a = new GraphCapture(0, 8192), b = new GraphCapture(1, 8192);
    beginActive(a);
    expect(() => beginActive(b)).toThrow(GraphCaptureError);
    expect(() => beginActive(b)).toThrow(/cannot nest or overlap/);
    expect(activeCapture()).toBe(a);
    endActive(b); // not the active one: no effect
    expect(activeCapture()).toBe(a);
    endActive(a);
    expect(activeCapture()).toBeUndefined();
    beginActive(b);
    expect(activeCapture()).toBe(b);
  });

  it('end callbacks all run once, the first error rethrown after the others', () => {
    const c = new GraphCapture(0, 64);
    const ran: number[] = [];
    c.onEnd(() => ran.push(1));
    c.onEnd(() => { ran.push(2); throw new RangeError('two'); });
    c.onEnd(() => ran.push(3));
    expect(() => c.runEnds()).toThrow(RangeError);
    expect(ran).toEqual([1, 2, 3]);
    c.runEnds();
    expect(ran).toEqual([1, 2, 3]);
  });

  it('a CPU KvCache is not affected by a capture on a GPU device', () => {
    const cache = new KvCache({ pageSize: 4, numPages: 8, numKvHeads: 1, headDim: 4, device: 'cpu', dtype: 'f32' });
    beginActive(new GraphCapture(0, 64));
    const s = cache.newSequence();
    cache.free(cache.fork(s));
    expect(cache.has(s)).toBe(true);
    cache.dispose();
  });
});

describe('graph error classes', () => {
  it('have stable codes', () => {
    expect(new GraphCaptureError('x').code).toBe('ERR_FLEXATTN_GRAPH_CAPTURE');
    expect(new GraphReplayError('x').code).toBe('ERR_FLEXATTN_GRAPH_REPLAY');
    expect(ERROR_CODES.ERR_FLEXATTN_GRAPH_CAPTURE).toBe('GraphCaptureError');
    expect(ERROR_CODES.ERR_FLEXATTN_GRAPH_REPLAY).toBe('GraphReplayError');
  });
});

describe('Tensor.copyFrom (CPU)', () => {
  it('copies a tensor of the same shape and dtype, strided sources included, in place', async () => {
    const dst = Tensor.zeros([3, 4], 'f32', { device: 'cpu' });
    const src = Tensor.randn([4, 3], 'f32', { device: 'cpu', seed: 3 });
    expect(dst.copyFrom(src.transpose(0, 1))).toBe(dst);
    const want = await src.transpose(0, 1).contiguous().toHost();
    expect(Array.from(await dst.toHost())).toEqual(Array.from(want));
    // Into a contiguous view at an offset: only its elements change.
    const big = Tensor.zeros([4, 4], 'f32', { device: 'cpu' });
    big.narrow(0, 1, 2).copyFrom(Tensor.fromHost(new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]), [2, 4], 'f32', { device: 'cpu' }));
    expect(Array.from(await big.toHost())).toEqual([0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0]);
  });

  it('copies host data (typed arrays, Float32Array rounded into bf16, untyped bytes)', async () => {
    const t = Tensor.zeros([2, 2], 'i32', { device: 'cpu' });
    t.copyFrom(new Int32Array([7, -1, 3, 9]));
    expect(Array.from(await t.toHost())).toEqual([7, -1, 3, 9]);
    const b = Tensor.zeros([2], 'bf16', { device: 'cpu' });
    b.copyFrom(new Float32Array([1, -2]));
    expect(Array.from(await b.toFloat32())).toEqual([1, -2]);
    t.copyFrom(new Uint8Array(new Int32Array([1, 2, 3, 4]).buffer));
    expect(Array.from(await t.toHost())).toEqual([1, 2, 3, 4]);
  });

  it('refuses mismatched shapes, dtypes, sizes, a strided destination and disposed tensors', () => {
    const dst = Tensor.zeros([2, 3], 'f32', { device: 'cpu' });
    expect(() => dst.copyFrom(Tensor.zeros([3, 2], 'f32', { device: 'cpu' }))).toThrow(ShapeError);
    expect(() => dst.copyFrom(Tensor.zeros([2, 3], 'bf16', { device: 'cpu' }))).toThrow(DTypeError);
    expect(() => dst.copyFrom(new Float32Array(5))).toThrow(ShapeError);
    expect(() => dst.copyFrom(new Int32Array(6))).toThrow(DTypeError);
    expect(() => dst.transpose(0, 1).copyFrom(Tensor.zeros([3, 2], 'f32', { device: 'cpu' }))).toThrow(/contiguous/);
    const gone = Tensor.zeros([2, 3], 'f32', { device: 'cpu' });
    gone.dispose();
    expect(() => dst.copyFrom(gone)).toThrow(/dispose/);
    expect(() => gone.copyFrom(dst)).toThrow(/dispose/);
    const before = Array.from(dst.hostStorage());
    expect(before.every((x) => x === 0)).toBe(true);
  });
});
