// Bad input to the backward ops: typed errors at the call that name the
// argument and what was expected; CUDA has no backward yet (a typed error,
// never a silent CPU run); disposal, abort, and the process keeps working.
import { describe, expect, it } from 'vitest';
import {
  AbortError, DTypeError, DeviceError, DisposedError, InvalidArgumentError, NoGradientError, NotImplementedError, ShapeError, Tensor,
  alibi, createBlockMask, documentMask, flexAttention, flexAttentionBackward, scaledDotProductAttention,
  scaledDotProductAttentionBackward, scoreMod, where,
} from '../lib/index.js';
import { backwardBackend } from '../lib/backward/checks.js';
import { checkGradBackend } from '../lib/attention/backward.js';
import { normalize } from '../lib/attention/spec.js';
import { randTensor } from './backward-harness.js';
import { rejection } from './reference.js';

const cpu = { device: 'cpu' } as const;

async function setup(S = 7) {
  const q = (await randTensor([1, 2, S, 4], 'f32', 1)).t, k = (await randTensor([1, 2, S, 4], 'f32', 2)).t;
  const v = (await randTensor([1, 2, S, 4], 'f32', 3)).t, dOut = (await randTensor([1, 2, S, 4], 'f32', 4)).t;
  const { out, lse } = await scaledDotProductAttention(q, k, v, { returnLse: true });
  return { q, k, v, out, lse, dOut };
}

async function expectArgError(p: Promise<unknown>, cls: Function, argument: string, expected?: RegExp) {
  const e = await rejection(p) as InvalidArgumentError;
  expect(e).toBeInstanceOf(cls);
  expect(e.argument).toBe(argument);
  if (expected) expect(e.expected).toMatch(expected);
}

describe('forward results and dOut', () => {
  it('dOut of the wrong shape or dtype', async () => {
    const s = await setup();
    await expectArgError(scaledDotProductAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.out.narrow(2, 0, 5)), ShapeError, 'dOut', /\[1, 2, 7, 4\]/);
    await expectArgError(scaledDotProductAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut.to('bf16')), DTypeError, 'dOut', /f32/);
  });
  it('out of the wrong shape or dtype', async () => {
    const s = await setup();
    await expectArgError(flexAttentionBackward(s.q, s.k, s.v, s.dOut.narrow(3, 0, 3), s.lse, s.dOut), ShapeError, 'out');
    await expectArgError(flexAttentionBackward(s.q, s.k, s.v, s.out.to('f16'), s.lse, s.dOut), DTypeError, 'out', /q's dtype/);
  });
  it("an lse from another call's shape, or not f32", async () => {
    const s = await setup();
    const other = await setup(9);
    await expectArgError(flexAttentionBackward(s.q, s.k, s.v, s.out, other.lse, s.dOut), ShapeError, 'lse', /returnLse/);
    await expectArgError(flexAttentionBackward(s.q, s.k, s.v, s.out, s.out, s.dOut), ShapeError, 'lse');
    await expectArgError(flexAttentionBackward(s.q, s.k, s.v, s.out, s.lse.to('bf16'), s.dOut), DTypeError, 'lse');
  });
  it('disposed tensors name the argument', async () => {
    const s = await setup();
    s.out.dispose();
    expect((await rejection(flexAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut)) as DisposedError).argument).toBe('out');
    s.q.dispose();
    expect(await rejection(scaledDotProductAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut))).toBeInstanceOf(DisposedError);
  });
  it('unknown options and a mask with isCausal', async () => {
    const s = await setup();
    await expectArgError(flexAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut, { causal: true } as never), InvalidArgumentError, 'options.causal');
    const m = Tensor.fromHost(new Uint8Array(49).fill(1), [7, 7], 'bool', cpu);
    await expectArgError(scaledDotProductAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut, { isCausal: true, attnMask: m }),
      ShapeError, 'options.attnMask');
  });
});

describe('gradFor and mods without a gradient', () => {
  const slopes = Tensor.fromHost(Float32Array.from([0.5, 0.25]), [2], 'f32', cpu);
  it('a tensor the mod does not read, a repeat, no scoreMod, not an array', async () => {
    const s = await setup();
    const other = Tensor.fromHost(Float32Array.from([1, 2]), [2], 'f32', cpu);
    const call = (o: object) => flexAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut, o);
    await expectArgError(call({ scoreMod: alibi(slopes), gradFor: [slopes, other] }), InvalidArgumentError, 'options.gradFor[1]', /reads/);
    await expectArgError(call({ scoreMod: alibi(slopes), gradFor: [slopes, slopes] }), InvalidArgumentError, 'options.gradFor[1]', /once/);
    await expectArgError(call({ gradFor: [slopes] }), InvalidArgumentError, 'options.gradFor[0]', /no scoreMod/);
    await expectArgError(call({ scoreMod: alibi(slopes), gradFor: slopes }), InvalidArgumentError, 'options.gradFor');
  });
  it("a tensor only the block mask's maskMod reads", async () => {
    const s = await setup();
    const ids = Tensor.fromHost(Int32Array.from([0, 0, 0, 1, 1, 1, 1]), [7], 'i32', cpu);
    const blockMask = await createBlockMask(documentMask(ids), 1, 1, 7, 7, { device: 'cpu' });
    const e = await rejection(flexAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut,
      { scoreMod: alibi(slopes), blockMask, gradFor: [ids] })) as InvalidArgumentError;
    expect(e.argument).toBe('options.gradFor[0]');
    expect(e.received).toMatch(/only the mask reads/);
  });
  it('an integer tensor is a DTypeError', async () => {
    const s = await setup();
    const ids = Tensor.fromHost(Int32Array.from([1, 2]), [2], 'i32', cpu);
    const m = scoreMod(({ score, h }) => score.add(ids.at(h).toFloat()));
    await expectArgError(flexAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut, { scoreMod: m, gradFor: [ids] }), DTypeError, 'options.gradFor[0]');
  });
  it('score through a comparison only, or a tensor through a comparison only: NoGradientError at the call', async () => {
    const s = await setup();
    const step = scoreMod(({ score }) => where(score.gt(0), 1, 0));
    const e = await rejection(flexAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut, { scoreMod: step })) as NoGradientError;
    expect(e).toBeInstanceOf(NoGradientError);
    expect(e.code).toBe('ERR_FLEXATTN_NO_GRADIENT');
    const gate = scoreMod(({ score, h }) => where(score.gt(slopes.at(h)), score, 0));
    const e2 = await rejection(flexAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut, { scoreMod: gate, gradFor: [slopes] }));
    expect(e2).toBeInstanceOf(NoGradientError);
    expect((e2 as Error).message).toMatch(/options\.gradFor\[0\]/);
  });
});

describe('backends', () => {
  const fakeCuda = { isCuda: true, isCpu: false, device: 'cuda:0' } as unknown as Tensor;
  it('CUDA tensors run on CUDA by default; what the CUDA kernels lack is a typed error at the call', () => {
    expect(backwardBackend(undefined, fakeCuda, 'flexAttentionBackward')).toBe('cuda');
    expect(backwardBackend('cuda', fakeCuda, 'x')).toBe('cuda');
    expect(backwardBackend('cpu', fakeCuda, 'x')).toBe('cpu');
    const dims = { B: 1, Hq: 2, Hkv: 2, Sq: 5, Skv: 5, D: 64, Dv: 64 };
    const t = (dtype: string, D = 64, s3 = 1) => ({ ...fakeCuda, dtype, shape: [1, 2, 5, D], strides: [640, 320, 64, s3] }) as unknown as Tensor;
    const gpu = (q: Tensor, extra: object = {}) => ({ dims: { ...dims, D: q.shape[3]!, Dv: q.shape[3]! }, tensors: { q }, ...extra });
    const bf = t('bf16');
    // gradFor on CUDA: off until its kernels have run on a GPU (FLEXATTN_UNVERIFIED_GPU_PATHS=1 enables them);
    // its partial-buffer bound is planGradFor's (test/gradfor-plan.test.ts).
    const saved = process.env.FLEXATTN_UNVERIFIED_GPU_PATHS;
    try {
      delete process.env.FLEXATTN_UNVERIFIED_GPU_PATHS;
      let e: unknown;
      try { backwardBackend(undefined, bf, 'flexAttentionBackward', gpu(bf, { gradFor: [bf] })); } catch (x) { e = x; }
      expect(e).toBeInstanceOf(NotImplementedError);
      expect((e as NotImplementedError).code).toBe('ERR_FLEXATTN_NOT_IMPLEMENTED');
      expect((e as Error).message).toMatch(/gradFor.*not yet been run on a GPU.*backend: 'cpu'.*FLEXATTN_UNVERIFIED_GPU_PATHS=1/);
      process.env.FLEXATTN_UNVERIFIED_GPU_PATHS = '1';
      expect(backwardBackend(undefined, bf, 'flexAttentionBackward', gpu(bf, { gradFor: [bf] }))).toBe('cuda');
      process.env.FLEXATTN_UNVERIFIED_GPU_PATHS = 'yes';
      expect(() => backwardBackend(undefined, bf, 'flexAttentionBackward', gpu(bf, { gradFor: [bf] }))).toThrow(/FLEXATTN_UNVERIFIED_GPU_PATHS/);
    } finally {
      if (saved === undefined) delete process.env.FLEXATTN_UNVERIFIED_GPU_PATHS; else process.env.FLEXATTN_UNVERIFIED_GPU_PATHS = saved;
    }
    expect(() => backwardBackend(undefined, t('f32'), 'x', gpu(t('f32')))).toThrow(DTypeError);
    const d256 = t('bf16', 256);
    expect(() => backwardBackend(undefined, d256, 'x', gpu(d256))).toThrow(/head dimension 256/);
    expect(() => backwardBackend(undefined, d256, 'x', gpu(d256))).toThrow(NotImplementedError);
    expect(backwardBackend('cpu', d256, 'x', gpu(d256))).toBe('cpu');
    const strided = t('bf16', 64, 2);
    expect(() => backwardBackend(undefined, strided, 'x', gpu(strided))).toThrow(/contiguous last dimension/);
    expect(() => backwardBackend(undefined, bf, 'x', gpu(bf, { blockMask: { blockSize: [32, 128] } }))).toThrow(/multiples of the CUDA backward's 64/);
    expect(backwardBackend(undefined, bf, 'x', gpu(bf))).toBe('cuda');
    expect(() => checkGradBackend(normalize({ requiresGrad: true }), fakeCuda, 256)).toThrow(NotImplementedError);
    expect(() => checkGradBackend(normalize({ requiresGrad: true }), fakeCuda, 128)).not.toThrow();
    expect(() => checkGradBackend(normalize({ requiresGrad: true, backend: 'cpu' }), fakeCuda, 256)).not.toThrow();
  });
  it("backend 'cuda' with CPU tensors is a DeviceError, a bad name an InvalidArgumentError", async () => {
    const s = await setup();
    await expectArgError(flexAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut, { backend: 'cuda' }), DeviceError, 'options.backend');
    await expectArgError(flexAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut, { backend: 'gpu' as never }), InvalidArgumentError, 'options.backend');
  });
});

describe('ownership, abort, recovery', () => {
  it('disposing every input right after the call is safe', async () => {
    const s = await setup(13);
    const want = await flexAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut);
    const p = flexAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut);
    for (const t of Object.values(s)) t.dispose();
    const got = await p;
    expect(await got.dq.toFloat32()).toEqual(await want.dq.toFloat32());
    expect(await got.dv.toFloat32()).toEqual(await want.dv.toFloat32());
  });
  it('an aborted signal rejects with AbortError before any work; an abort in flight too; later calls work', async () => {
    const s = await setup();
    const c = new AbortController();
    c.abort();
    expect(await rejection(flexAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut, { signal: c.signal }))).toBeInstanceOf(AbortError);
    const big = await randTensor([1, 4, 1024, 64], 'f32', 9);
    const { out, lse } = await flexAttention(big.t, big.t, big.t, { returnLse: true });
    const c2 = new AbortController();
    const p = flexAttentionBackward(big.t, big.t, big.t, out, lse!, out, { signal: c2.signal });
    setTimeout(() => c2.abort(), 5);
    expect(await rejection(p)).toBeInstanceOf(AbortError);
    const ok = await flexAttentionBackward(s.q, s.k, s.v, s.out, s.lse, s.dOut);
    expect((await ok.dq.toFloat32()).some((x) => x !== 0)).toBe(true);
  });
});
