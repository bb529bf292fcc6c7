// Every error flexattn throws or rejects with is a FlexAttnError with a stable
// code: the class table (ERROR_CODES), the paths that used to leak raw
// RangeError/TypeError/Error, untyped bytes in fromHost, the default device of
// synchronize/memoryStats on a host without a GPU, and one "Possible
// solutions" block per message.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as errors from '../lib/errors.js';
import {
  CudaUnavailableError, DeviceError, DTypeError, ERROR_CODES, FlexAttnError, InternalError, InvalidArgumentError,
  OutOfMemoryError, ShapeError,
} from '../lib/errors.js';
import {
  Tensor, cudaAvailable, emptyCache, manualSeed, memoryStats, scaledDotProductAttention, synchronize,
} from '../lib/index.js';
import { withSolutions } from '../lib/messages.js';
import { native, nativeAvailable, toFlexAttnError, typedErrors } from '../lib/native.js';
import { randnArray } from './reference.js';

const cpu = { device: 'cpu' as const };

function caught(fn: () => unknown): unknown {
  try { fn(); } catch (e) { return e; }
  throw new Error('expected a throw');
}

function solutionsBlocks(message: string): number {
  return message.split('Possible solutions:').length - 1;
}

describe('ERROR_CODES', () => {
  const classes = Object.entries(errors).filter(
    ([, v]) => typeof v === 'function' && (v === FlexAttnError || (v as { prototype?: unknown }).prototype instanceof FlexAttnError),
  ) as [string, new (...a: string[]) => FlexAttnError][];

  it('lists every exported error class once, each code once', () => {
    expect(classes.length).toBeGreaterThanOrEqual(15);
    expect(Object.values(ERROR_CODES).sort()).toEqual(classes.map(([n]) => n).sort());
    expect(new Set(Object.keys(ERROR_CODES)).size).toBe(Object.keys(ERROR_CODES).length);
  });

  it.each(Object.entries(ERROR_CODES))('%s is the code of %s, with its name and instanceof chain', (code, className) => {
    const cls = (errors as unknown as Record<string, new (...a: string[]) => FlexAttnError>)[className]!;
    expect(cls).toBeTypeOf('function');
    const e = new cls('a', 'b', 'c', 'd');
    expect(e.code).toBe(code);
    expect(e.name).toBe(className);
    expect(e).toBeInstanceOf(cls);
    expect(e).toBeInstanceOf(FlexAttnError);
    expect(e).toBeInstanceOf(Error);
    expect(e.stack).toContain(className);
    // The prototype chain runs through the documented parents up to FlexAttnError.
    const chain: string[] = [];
    for (let c: unknown = cls; c && c !== Error; c = Object.getPrototypeOf(c)) chain.push((c as { name: string }).name);
    expect(chain.at(-1)).toBe('FlexAttnError');
    if (['ShapeError', 'DTypeError', 'DeviceError'].includes(className)) expect(e).toBeInstanceOf(InvalidArgumentError);
    if (className === 'OutOfMemoryError') expect(e).toBeInstanceOf(errors.CudaError);
  });

  it('the README\'s Errors table lists every code with its class', () => {
    const readme = readFileSync(join(import.meta.dirname, '..', 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Errors'));
    expect(section.length).toBeLessThan(readme.length);
    for (const [code, cls] of Object.entries(ERROR_CODES)) expect(section).toContain(`| \`${code}\` | \`${cls}\``);
  });

  it('branching on code works across subclasses', () => {
    const e: unknown = new ShapeError('q', 'a 4-D tensor', '3-D');
    expect(e instanceof FlexAttnError && e.code === 'ERR_FLEXATTN_SHAPE').toBe(true);
    expect((e as InvalidArgumentError).argument).toBe('q');
  });
});

describe('no raw Error/RangeError/TypeError is thrown by lib/', () => {
  it('lib sources throw only FlexAttnError subclasses', () => {
    const root = join(import.meta.dirname, '..', 'lib');
    const offenders: string[] = [];
    const walk = (dir: string): void => {
      for (const ent of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, ent.name);
        if (ent.isDirectory()) walk(p);
        else if (p.endsWith('.ts')) {
          readFileSync(p, 'utf8').split('\n').forEach((line, i) => {
            if (/\bnew (Error|RangeError|TypeError|SyntaxError)\(/.test(line)) offenders.push(`${p}:${i + 1}: ${line.trim()}`);
          });
        }
      }
    };
    walk(root);
    expect(offenders).toEqual([]);
  });
});

describe('Tensor factories: typed errors for what V8 and BigInt reject raw', () => {
  it('Tensor.empty beyond the largest typed array is a ShapeError naming shape', () => {
    const e = caught(() => Tensor.empty([1e12], 'f32', cpu));
    expect(e).toBeInstanceOf(ShapeError);
    expect((e as ShapeError).code).toBe('ERR_FLEXATTN_SHAPE');
    expect((e as ShapeError).argument).toBe('shape');
    expect((e as Error).message).toMatch(/1000000000000/);
    for (const dt of ['bf16', 'i32', 'bool'] as const) {
      expect(() => Tensor.zeros([2 ** 33], dt, cpu)).toThrow(ShapeError);
    }
    expect(() => Tensor.randn([2 ** 20, 2 ** 20], 'f32', cpu)).toThrow(ShapeError);
    expect(caught(() => Tensor.empty([2 ** 30, 2 ** 30, 2 ** 30], 'f32', cpu))).toBeInstanceOf(ShapeError);
    // The process keeps working.
    expect(Tensor.zeros([3], 'f32', cpu).numel).toBe(3);
  });

  it('seeds that BigInt() rejects are InvalidArgumentErrors', () => {
    for (const seed of [1.5, NaN, Infinity, '12' as unknown as number, undefined as unknown as number]) {
      expect(() => manualSeed(seed)).toThrow(InvalidArgumentError);
    }
    const e = caught(() => Tensor.randn([2], 'f32', { ...cpu, seed: 0.5 }));
    expect((e as InvalidArgumentError).argument).toBe('options.seed');
    expect(Tensor.randn([2], 'f32', { ...cpu, seed: 7n }).numel).toBe(2);
  });

  it('values JSON.stringify cannot print (bigint, cycles, null prototype) still give typed errors', () => {
    const cyc: Record<string, unknown> = {};
    cyc.self = cyc;
    expect(caught(() => Tensor.zeros([2], 10n as never, cpu))).toBeInstanceOf(DTypeError);
    expect(caught(() => Tensor.zeros([2], 'f32', { device: 10n as never }))).toBeInstanceOf(DeviceError);
    expect(caught(() => Tensor.zeros([2], 'f32', { device: cyc as never }))).toBeInstanceOf(DeviceError);
    expect(caught(() => Tensor.zeros([Object.create(null)] as never, 'f32', cpu))).toBeInstanceOf(ShapeError);
    expect(caught(() => Tensor.fromHost(null as never, [2]))).toBeInstanceOf(InvalidArgumentError);
    expect(caught(() => Tensor.fromHost({ length: 2 } as never, [2], 'f32'))).toBeInstanceOf(InvalidArgumentError);
  });

  it('an option a String() call cannot print is an InvalidArgumentError, not a TypeError', async () => {
    const q = Tensor.randn([1, 1, 3, 8], 'f32', cpu);
    await expect(scaledDotProductAttention(q, q, q, { scale: Object.create(null) as never }))
      .rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe('Tensor.fromHost with untyped bytes', () => {
  it('a Buffer, Uint8Array, ArrayBuffer or DataView without dtype is a DTypeError that says what to pass', () => {
    const bytes = new Uint8Array([1, 0, 1, 1]);
    for (const data of [Buffer.from(bytes), bytes, bytes.buffer, new DataView(bytes.buffer), new Int8Array(4)]) {
      const e = caught(() => Tensor.fromHost(data as never, [4]));
      expect(e).toBeInstanceOf(DTypeError);
      expect((e as DTypeError).argument).toBe('dtype');
      expect((e as Error).message).toMatch(/'bool'/);
      expect((e as Error).message).toMatch(/bits/);
    }
  });

  it('typed arrays still infer their dtype', () => {
    expect(Tensor.fromHost(new Float32Array(3), [3], undefined, cpu).dtype).toBe('f32');
    expect(Tensor.fromHost(new Int32Array(3), [3], undefined, cpu).dtype).toBe('i32');
  });

  it('bytes with a dtype are read as that dtype\'s bits, from any byte offset, copied', async () => {
    const f32 = randnArray(7, 17);
    // An unaligned view into a larger buffer (as a Buffer slice from Node's pool can be).
    const big = Buffer.alloc(f32.byteLength + 3);
    Buffer.from(f32.buffer).copy(big, 1);
    const slice = big.subarray(1, 1 + f32.byteLength);
    const t = Tensor.fromHost(slice, [7], 'f32', cpu);
    big.fill(0); // the tensor holds a copy
    expect(await t.toHost()).toEqual(f32);

    const ids = Int32Array.from(randnArray(5, 18), (x) => Math.round(x * 1e6));
    const ti = Tensor.fromHost(ids.buffer, [5], 'i32', cpu);
    expect(await ti.toHost()).toEqual(ids);
    const tb = Tensor.fromHost(new DataView(ids.buffer), [10], 'bf16', cpu);
    expect(await tb.toHost()).toEqual(new Uint16Array(ids.buffer));

    const flags = Buffer.from([1, 0, 3, 0]);
    const tbool = Tensor.fromHost(flags, [4], 'bool', cpu);
    flags[0] = 0;
    expect([...await tbool.toHost()]).toEqual([1, 0, 3, 0]);
  });

  it('a byte count that does not match the shape is a ShapeError naming data', () => {
    const e = caught(() => Tensor.fromHost(Buffer.alloc(10), [3], 'f32', cpu));
    expect(e).toBeInstanceOf(ShapeError);
    expect((e as ShapeError).argument).toBe('data');
    expect((e as Error).message).toMatch(/12 bytes/);
  });
});

describe('native calls: raw JS errors become typed', () => {
  it('typedErrors types throws and rejections, passes FlexAttnErrors and classes through', async () => {
    class Thing {}
    const typed = new ShapeError('q', 'x');
    const fake = typedErrors({
      Thing,
      oom: () => { throw new RangeError('Array buffer allocation failed'); },
      bad: () => { throw new TypeError('A number was expected'); },
      typedThrow: () => { throw typed; },
      rejects: () => Promise.reject(new Error('worker failed')),
      ok: (a: number) => a + 1,
      n: 3,
    });
    expect(fake.Thing).toBe(Thing);
    expect(fake.n).toBe(3);
    expect(fake.ok(1)).toBe(2);
    const oom = caught(() => fake.oom());
    expect(oom).toBeInstanceOf(OutOfMemoryError);
    expect((oom as OutOfMemoryError).call).toBe('oom');
    expect(solutionsBlocks((oom as Error).message)).toBe(1);
    const bad = caught(() => fake.bad());
    expect(bad).toBeInstanceOf(InternalError);
    expect((bad as Error).cause).toBeInstanceOf(TypeError);
    expect(caught(() => fake.typedThrow())).toBe(typed);
    const rej = await fake.rejects().catch((e: unknown) => e);
    expect(rej).toBeInstanceOf(InternalError);
    expect((rej as InternalError).code).toBe('ERR_FLEXATTN_INTERNAL');
    expect(toFlexAttnError('str', 'x')).toBeInstanceOf(InternalError);
  });

  it.skipIf(!nativeAvailable())('a malformed program given to the native CPU backend rejects typed, not with a plain Error', async () => {
    const view = { data: new Float32Array([0.5]), dtype: 2, shape: [1, 1, 1, 1], strides: [1, 1, 1, 1] };
    const args = { q: view, k: view, v: view, scale: 1, isCausal: false, returnLse: false,
      scoreMod: { code: 'not a typed array', consts: new Float64Array(0), tensors: [], params: new Float64Array(0) } };
    let err: unknown;
    try { await native().cpuAttention(args as never); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(FlexAttnError);
    expect((err as Error).message).toMatch(/mod program/);
    // The addon keeps working.
    const ok = await native().cpuAttention({ ...args, scoreMod: undefined } as never);
    expect(ok.out.length).toBe(1);
  });
});

describe('Possible solutions appear once', () => {
  it('withSolutions merges a carried block instead of adding a second one', () => {
    const nativeMsg = 'driver missing\nTried:\n  - libcuda.so.1: not found\nPossible solutions:\n  - Install the driver\n  - Use cpu';
    const m = withSolutions(`device: no GPU: ${nativeMsg}`, ['Use cpu', 'Pass device cpu']);
    expect(solutionsBlocks(m)).toBe(1);
    expect(m).toContain('  - libcuda.so.1: not found'); // the "Tried" list stays in the problem text
    expect(m.match(/ {2}- Use cpu/g)).toHaveLength(1);
    expect(m).toMatch(/- Pass device cpu[\s\S]*- Install the driver/);
    expect(withSolutions('plain', [])).toBe('plain');
  });
});

describe.skipIf(cudaAvailable())('defaults on a host without a usable GPU', () => {
  it('synchronize() resolves and memoryStats()/emptyCache() describe the cpu', async () => {
    await expect(synchronize()).resolves.toBeUndefined();
    await expect(synchronize('cpu')).resolves.toBeUndefined();
    const s = memoryStats();
    expect(s.device).toBe('cpu');
    expect(s).toMatchObject({ allocatedBytes: 0, reservedBytes: 0, peakAllocatedBytes: 0, numAllocs: 0 });
    expect(memoryStats('cpu').device).toBe('cpu');
    expect(() => emptyCache()).not.toThrow();
  });

  it('naming a CUDA device is a CudaUnavailableError with one Possible solutions block', async () => {
    const errs: unknown[] = [
      caught(() => memoryStats('cuda')),
      caught(() => Tensor.zeros([2], 'f32', { device: 'cuda:0' })),
      caught(() => emptyCache('cuda:0')),
      await synchronize('cuda').catch((e: unknown) => e),
    ];
    for (const e of errs) {
      expect(e).toBeInstanceOf(CudaUnavailableError);
      expect((e as CudaUnavailableError).code).toBe('ERR_FLEXATTN_CUDA_UNAVAILABLE');
      const msg = (e as Error).message;
      expect(solutionsBlocks(msg)).toBe(1);
      expect(msg).toMatch(/Use device 'cpu'/);
      // No remedy printed twice.
      const items = msg.slice(msg.indexOf('Possible solutions:')).split('\n').filter((l) => l.startsWith('  - '));
      expect(new Set(items).size).toBe(items.length);
    }
  });
});
