import { describe, expect, it } from 'vitest';
import {
  Tensor, DisposedError, ShapeError, DTypeError, InvalidArgumentError, DeviceError, fromBf16, toBf16,
} from '../lib/index.js';
import { randnArray } from './reference.js';

const cpu = { device: 'cpu' as const };

describe('Tensor on the CPU', () => {
  it('fromHost copies data and reports shape, strides and dtype', async () => {
    const data = Float32Array.from({ length: 24 }, (_, i) => i * 0.5 - 3);
    const t = Tensor.fromHost(data, [2, 3, 4], 'f32', cpu);
    data[0] = 99; // the tensor owns a copy
    expect(t.shape).toEqual([2, 3, 4]);
    expect(t.strides).toEqual([12, 4, 1]);
    expect(t.device).toBe('cpu');
    expect(t.numel).toBe(24);
    const back = await t.toHost();
    expect(back[0]).toBe(-3);
    expect(Array.from(back).slice(1)).toEqual(Array.from(data).slice(1));
  });

  it('bf16 from Float32Array rounds to nearest even and reads back as bits', async () => {
    const xs = randnArray(100, 5);
    const t = Tensor.fromHost(xs, [10, 10], 'bf16', cpu);
    const bits = await t.toHost();
    expect(bits).toBeInstanceOf(Uint16Array);
    expect(Array.from(bits)).toEqual(Array.from(toBf16(xs)));
    expect(Array.from(await t.toFloat32())).toEqual(Array.from(fromBf16(toBf16(xs))));
  });

  it('views share storage; contiguous() materialises the permuted order', async () => {
    const data = Float32Array.from({ length: 2 * 3 * 4 * 5 }, (_, i) => i);
    const t = Tensor.fromHost(data, [2, 3, 4, 5], 'f32', cpu);
    const p = t.permute(0, 2, 1, 3);
    expect(p.shape).toEqual([2, 4, 3, 5]);
    expect(p.isContiguous).toBe(false);
    const c = p.contiguous();
    expect(c.isContiguous).toBe(true);
    const host = await c.toHost();
    for (let a = 0; a < 2; a++) for (let b = 0; b < 4; b++) for (let cc = 0; cc < 3; cc++) for (let d = 0; d < 5; d++) {
      expect(host[((a * 4 + b) * 3 + cc) * 5 + d]).toBe(data[((a * 3 + cc) * 4 + b) * 5 + d]);
    }
    const tr = t.transpose(1, 2);
    expect(Array.from(await tr.toHost())).toEqual(Array.from(host));
    const n = t.narrow(2, 1, 2).select(0, 1);
    expect(n.shape).toEqual([3, 2, 5]);
    expect((await n.toHost())[0]).toBe(data[60 + 5]);
    expect(t.reshape(6, -1).shape).toEqual([6, 20]);
    expect(() => p.reshape(-1)).toThrow(InvalidArgumentError);
  });

  it('to(dtype) converts and expand broadcasts with stride 0', async () => {
    const t = Tensor.fromHost(new Float32Array([1.25, -7.5, 3]), [3], 'f32', cpu);
    expect(Array.from(await t.to('i32').toHost())).toEqual([1, -7, 3]);
    expect(Array.from(await t.to('bf16').to('f32').toHost())).toEqual([1.25, -7.5, 3]);
    const e = t.reshape(1, 3).expand(2, 3);
    expect(e.strides).toEqual([0, 1]);
    expect(Array.from(await e.toHost())).toEqual([1.25, -7.5, 3, 1.25, -7.5, 3]);
  });

  it('randn is standard normal and reproducible by seed', async () => {
    const a = await Tensor.randn([100000], 'f32', { ...cpu, seed: 7 }).toHost();
    const b = await Tensor.randn([100000], 'f32', { ...cpu, seed: 7 }).toHost();
    const c = await Tensor.randn([100000], 'f32', { ...cpu, seed: 8 }).toHost();
    expect(Array.from(a.slice(0, 50))).toEqual(Array.from(b.slice(0, 50)));
    expect(Array.from(a.slice(0, 50))).not.toEqual(Array.from(c.slice(0, 50)));
    let s = 0, s2 = 0;
    for (const x of a) { s += x; s2 += x * x; }
    const mean = s / a.length, std = Math.sqrt(s2 / a.length - mean * mean);
    expect(Math.abs(mean)).toBeLessThan(0.02);
    expect(Math.abs(std - 1)).toBeLessThan(0.02);
  });

  it('rejects bad input with typed errors naming the argument', () => {
    expect(() => Tensor.fromHost(new Float32Array(5), [2, 3], 'f32', cpu)).toThrow(/data: expected 6 elements/);
    expect(() => Tensor.fromHost(new Float32Array(6), [2, -3], 'f32', cpu)).toThrow(ShapeError);
    expect(() => Tensor.fromHost(new Float32Array(6), [2, 1.5 as number], 'f32', cpu)).toThrow(/shape\[1\]/);
    expect(() => Tensor.fromHost(new Int32Array(6), [6], 'f32', cpu)).toThrow(DTypeError);
    expect(() => Tensor.fromHost(new Float32Array(6), [6], 'f64' as never, cpu)).toThrow(/dtype/);
    expect(() => Tensor.zeros([2], 'f32', { device: 'gpu' as never })).toThrow(DeviceError);
    expect(() => Tensor.randn([2], 'i32', cpu)).toThrow(DTypeError);
    const t = Tensor.zeros([2, 2], 'f32', cpu);
    expect(() => t.transpose(0, 2)).toThrow(/dim1/);
    expect(() => t.permute(0, 0)).toThrow(/dims/);
  });

  it('dispose frees, a second dispose is harmless, use after dispose is a typed error', async () => {
    const t = Tensor.zeros([4], 'f32', cpu);
    const view = t.reshape(2, 2);
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(view.disposed).toBe(true);
    await expect(t.toHost()).rejects.toThrow(DisposedError);
    expect(() => view.contiguous()).toThrow(DisposedError);
    {
      using u = Tensor.zeros([1], 'f32', cpu);
      expect(u.disposed).toBe(false);
      var escaped = u; // eslint-disable-line no-var
    }
    expect(escaped.disposed).toBe(true);
  });
});
