/**
 * native cpuAttention (native/cpu) against a brute-force double-precision
 * attention written here: dtypes, strides, GQA, causal, dense masks with
 * broadcasting, block-sparse iteration, fully masked rows, errors, asynchrony.
 */
import { rng } from './reference.js';
import { describe, expect, it } from 'vitest';
import { native, type NativeCpuAttentionArgs, type NativeHostView } from '../lib/native.js';
import { InvalidArgumentError } from '../lib/errors.js';

const F32 = 2, BF16 = 0, F16 = 1, BOOL = 4;
type DT = 'f32' | 'bf16' | 'f16';

// ---------------------------------------------------------------- helpers

/** Random value in (-1, 1), never 0. */
function nz(r: () => number): number {
  const x = r() * 2 - 1;
  return x === 0 ? 0.5 : x;
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** f32 -> bf16 bits, round to nearest even (NaN stays NaN). */
function f32ToBf16Bits(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0]!;
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0) return ((u >>> 16) | 0x40) & 0xffff;
  const rounding = 0x7fff + ((u >>> 16) & 1);
  return ((u + rounding) >>> 16) & 0xffff;
}
function bf16BitsToF32(b: number): number {
  u32buf[0] = (b << 16) >>> 0;
  return f32buf[0]!;
}
function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}
/** double -> IEEE half bits, round to nearest even (finite inputs). */
function toF16Bits(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a < 2 ** -14) return sign | roundHalfEven(a / 2 ** -24); // subnormal (1024 rounds up into 0x0400)
  let e = Math.floor(Math.log2(a));
  while (2 ** e > a) e--;
  while (2 ** (e + 1) <= a) e++;
  let m = roundHalfEven((a / 2 ** e - 1) * 1024);
  if (m === 1024) { m = 0; e++; }
  if (e + 15 >= 31) return sign | 0x7c00;
  return sign | ((e + 15) << 10) | m;
}
function f16BitsToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  if (e === 0) return s * m * 2 ** -24;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

interface T4 {
  view: NativeHostView;
  /** Logical [B, H, S, D] values exactly as stored (after rounding to the dtype). */
  vals: Float64Array;
}

/**
 * Random 4-D tensor [B, H, S, D] in `layout` storage ('bhsd' or 'bshd'), with
 * an optional gap between last-dim elements (lastStride > 1).
 */
function tensor(r: () => number, shape: number[], dtype: DT = 'f32', layout: 'bhsd' | 'bshd' = 'bhsd',
  lastStride = 1, scaleBy = 1): T4 {
  const [B, H, S, D] = shape as [number, number, number, number];
  const numel = B * H * S * D;
  const ls = lastStride;
  const strides = layout === 'bhsd'
    ? [H * S * D * ls, S * D * ls, D * ls, ls]
    : [S * H * D * ls, D * ls, H * D * ls, ls];
  const phys = numel * ls;
  const store = dtype === 'f32' ? new Float32Array(phys) : new Uint16Array(phys);
  for (let i = 0; i < phys; i++) {
    const x = nz(r) * scaleBy;
    if (dtype === 'f32') store[i] = x;
    else if (dtype === 'bf16') store[i] = f32ToBf16Bits(x);
    else store[i] = toF16Bits(x);
  }
  const vals = new Float64Array(numel);
  let n = 0;
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let s = 0; s < S; s++) for (let d = 0; d < D; d++) {
    const raw = store[b * strides[0]! + h * strides[1]! + s * strides[2]! + d * strides[3]!]!;
    vals[n++] = dtype === 'f32' ? raw : dtype === 'bf16' ? bf16BitsToF32(raw) : f16BitsToNumber(raw);
  }
  const code = dtype === 'f32' ? F32 : dtype === 'bf16' ? BF16 : F16;
  return { view: { data: store, dtype: code, shape: [B, H, S, D], strides }, vals };
}

/** A contiguous mask of the given (broadcast) shape filled by fn(logical index). */
function maskView(shape: number[], kind: 'bool' | 'f32', fn: (idx: number[]) => number | boolean): NativeHostView {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = kind === 'bool' ? new Uint8Array(n) : new Float32Array(n);
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const idx = new Array<number>(shape.length).fill(0);
  for (let flat = 0; flat < n; flat++) {
    let rem = flat;
    for (let i = 0; i < shape.length; i++) { idx[i] = Math.floor(rem / strides[i]!); rem %= strides[i]!; }
    const v = fn(idx);
    data[flat] = typeof v === 'boolean' ? (v ? 1 : 0) : v;
  }
  return { data, dtype: kind === 'bool' ? BOOL : F32, shape, strides };
}

/** Reads a right-aligned broadcast view at logical [b, h, i, j]. */
function maskAt(m: NativeHostView, b: number, h: number, i: number, j: number): number {
  const full = [b, h, i, j];
  const off = 4 - m.shape.length;
  let o = 0;
  for (let d = 0; d < m.shape.length; d++) o += (m.shape[d] === 1 ? 0 : full[d + off]!) * m.strides[d]!;
  return (m.data as unknown as ArrayLike<number>)[o]!;
}

interface Ref {
  q: T4; k: T4; v: T4; scale: number; causal?: boolean;
  keep?: (b: number, h: number, i: number, j: number) => boolean;
  /** score_mod on the scaled score (applied before `add`, as in native/cpu). */
  mod?: (s: number, b: number, h: number, i: number, j: number) => number;
  add?: (b: number, h: number, i: number, j: number) => number;
}

/** Brute-force attention in double precision: out [B,Hq,Sq,Dv], lse [B,Hq,Sq]. */
function reference(c: Ref): { out: Float64Array; lse: Float64Array } {
  const [B, Hq, Sq, D] = c.q.view.shape as [number, number, number, number];
  const [, Hkv, Skv] = c.k.view.shape as [number, number, number, number];
  const Dv = c.v.view.shape[3]!;
  const out = new Float64Array(B * Hq * Sq * Dv);
  const lse = new Float64Array(B * Hq * Sq);
  const s = new Float64Array(Skv);
  for (let b = 0; b < B; b++) for (let h = 0; h < Hq; h++) {
    const hk = Math.floor(h / (Hq / Hkv));
    for (let i = 0; i < Sq; i++) {
      const row = (b * Hq + h) * Sq + i;
      let m = -Infinity;
      for (let j = 0; j < Skv; j++) {
        s[j] = -Infinity;
        if (c.causal && j > i) continue;
        if (c.keep && !c.keep(b, h, i, j)) continue;
        let dot = 0;
        const qo = row * D, ko = ((b * Hkv + hk) * Skv + j) * D;
        for (let d = 0; d < D; d++) dot += c.q.vals[qo + d]! * c.k.vals[ko + d]!;
        let x = dot * c.scale;
        if (c.mod) x = c.mod(x, b, h, i, j);
        if (c.add) x += c.add(b, h, i, j);
        s[j] = x;
        if (x > m) m = x;
      }
      if (m === -Infinity) { lse[row] = -Infinity; continue; }
      let sum = 0;
      for (let j = 0; j < Skv; j++) { s[j] = Math.exp(s[j]! - m); sum += s[j]!; }
      lse[row] = m + Math.log(sum);
      for (let j = 0; j < Skv; j++) {
        if (s[j] === 0) continue;
        const p = s[j]! / sum, vo = ((b * Hkv + hk) * Skv + j) * Dv;
        for (let d = 0; d < Dv; d++) out[row * Dv + d] += p * c.v.vals[vo + d]!;
      }
    }
  }
  return { out, lse };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!, y = b[i]!;
    if (x === y) continue; // equal infinities
    const d = Math.abs(x - y);
    if (!(d <= m)) m = d; // NaN propagates
  }
  return m;
}

async function run(args: Partial<NativeCpuAttentionArgs> & Pick<NativeCpuAttentionArgs, 'q' | 'k' | 'v'>) {
  return native().cpuAttention({ scale: 1, isCausal: false, returnLse: true, ...args });
}

/** Runs cpuAttention and the reference on the same case and compares. */
async function check(c: Ref, extra: Partial<NativeCpuAttentionArgs> = {}, tol = 2e-5) {
  const r = await run({ q: c.q.view, k: c.k.view, v: c.v.view, scale: c.scale, isCausal: !!c.causal, ...extra });
  const ref = reference(c);
  expect(r.out).toBeInstanceOf(Float32Array);
  expect(r.lse).toBeInstanceOf(Float32Array);
  for (const x of r.out) expect(Number.isNaN(x)).toBe(false);
  expect(maxAbsDiff(r.out, ref.out)).toBeLessThan(tol);
  expect(maxAbsDiff(r.lse!, ref.lse)).toBeLessThan(tol * 10);
  return { r, ref };
}

// Hand-encoded mod VM programs (layout in lib/mods/bytecode.ts / native/cpu/mod_vm.h).
const MAGIC = 0x464c5831;
function program(kind: 0 | 1, numRegs: number, words: number[], consts: number[]) {
  const code = new Int32Array(4 + words.length);
  code.set([MAGIC, kind, numRegs, words.length]);
  code.set(words, 4);
  return { code, consts: Float64Array.from(consts), tensors: [], params: new Float64Array(0) };
}
/** mask_mod: (q + kv) % 3 != 0 */
const maskProg = program(1, 10, [10, 5, 3, 4, 2, 6, 0, 14, 7, 5, 6, 2, 8, 1, 45, 9, 7, 8, 90, 9], [3, 0]);
const maskFn = (b: number, h: number, i: number, j: number) => (i + j) % 3 !== 0;
/** score_mod: 2 * tanh((score + 0.01 * (kv - q)) / 2)  (bias + softcap) */
const scoreProg = program(0, 14, [
  11, 5, 4, 3, /* SUB_I r5 = kv - q */ 70, 6, 5, /* I2F */ 1, 7, 0, /* 0.01 */ 22, 8, 6, 7, /* MUL_F */
  20, 9, 0, 8, /* ADD_F score + bias */ 1, 10, 1, /* 2 */ 23, 11, 9, 10, /* DIV_F */ 33, 12, 11, /* TANH */
  22, 13, 12, 10, /* MUL_F */ 90, 13], [0.01, 2]);
const scoreFn = (s: number, b: number, h: number, i: number, j: number) => 2 * Math.tanh((s + 0.01 * (j - i)) / 2);

// ---------------------------------------------------------------- tests

describe('cpuAttention vs brute force', () => {
  it('exports hardwareConcurrency', () => {
    const n = native().hardwareConcurrency();
    expect(Number.isInteger(n) && n >= 1).toBe(true);
  });

  for (const [Sq, Skv, D, Dv] of [[1, 1, 16, 16], [7, 7, 32, 32], [77, 130, 64, 48], [130, 77, 33, 17], [1, 130, 128, 128]] as const) {
    it(`dense f32 Sq=${Sq} Skv=${Skv} D=${D} Dv=${Dv}`, async () => {
      const r = rng(Sq * 1000 + Skv);
      const B = 2, H = 3;
      await check({
        q: tensor(r, [B, H, Sq, D]), k: tensor(r, [B, H, Skv, D]), v: tensor(r, [B, H, Skv, Dv]),
        scale: 1 / Math.sqrt(D),
      });
    });
  }

  it('large scores (scale 3, values up to 4) stay exact', async () => {
    const r = rng(5);
    await check({
      q: tensor(r, [1, 2, 33, 64], 'f32', 'bhsd', 1, 4), k: tensor(r, [1, 2, 47, 64], 'f32', 'bhsd', 1, 4),
      v: tensor(r, [1, 2, 47, 64]), scale: 3,
    }, {}, 5e-5);
  });

  it('GQA: Hq=6 over Hkv=2 and Hkv=3', async () => {
    for (const Hkv of [2, 3, 1]) {
      const r = rng(10 + Hkv);
      await check({
        q: tensor(r, [2, 6, 19, 32]), k: tensor(r, [2, Hkv, 23, 32]), v: tensor(r, [2, Hkv, 23, 24]), scale: 0.2,
      });
    }
  });

  for (const [Sq, Skv] of [[77, 77], [130, 77], [77, 130], [1, 7]] as const) {
    it(`causal, top-left aligned, Sq=${Sq} Skv=${Skv}`, async () => {
      const r = rng(Sq + 7 * Skv);
      await check({
        q: tensor(r, [1, 4, Sq, 64]), k: tensor(r, [1, 2, Skv, 64]), v: tensor(r, [1, 2, Skv, 64]),
        scale: 0.125, causal: true,
      });
    });
  }

  it('[B, S, H, D] storage and a non-contiguous last dim', async () => {
    const r = rng(21);
    await check({
      q: tensor(r, [2, 4, 37, 32], 'f32', 'bshd'), k: tensor(r, [2, 2, 41, 32], 'f32', 'bshd'),
      v: tensor(r, [2, 2, 41, 32], 'f32', 'bshd', 3), scale: 0.18, causal: true,
    });
    await check({
      q: tensor(r, [1, 2, 9, 16], 'f32', 'bhsd', 2), k: tensor(r, [1, 2, 11, 16], 'f32', 'bshd', 2),
      v: tensor(r, [1, 2, 11, 16]), scale: 0.3,
    });
  });

  it('broadcast (stride 0) batch and head dims of k/v', async () => {
    const r = rng(22);
    const k1 = tensor(r, [1, 1, 29, 32]), v1 = tensor(r, [1, 1, 29, 32]);
    const expand = (t: T4): T4 => {
      const vals = new Float64Array(2 * 2 * 29 * 32);
      for (let i = 0; i < 4; i++) vals.set(t.vals, i * 29 * 32);
      return { view: { ...t.view, shape: [2, 2, 29, 32], strides: [0, 0, 32, 1] }, vals };
    };
    await check({ q: tensor(r, [2, 4, 13, 32]), k: expand(k1), v: expand(v1), scale: 0.2 });
  });

  for (const dt of ['bf16', 'f16'] as const) {
    it(`${dt} inputs in [B, S, H, D] storage`, async () => {
      const r = rng(dt === 'bf16' ? 31 : 32);
      await check({
        q: tensor(r, [2, 4, 77, 64], dt, 'bshd'), k: tensor(r, [2, 2, 130, 64], dt, 'bshd'),
        v: tensor(r, [2, 2, 130, 64], dt, 'bshd'), scale: 0.125, causal: true,
      });
    });
  }

  it('bf16/f16 conversion is exact: subnormals, Inf, NaN, extremes (Skv = 1 copies v)', async () => {
    const r = rng(33);
    const bf = [0x3f80, 0x0001, 0x007f, 0x0080, 0x8001, 0x7f7f, 0xff7f, 0x7f80, 0xff80, 0x7fc1, 0x3eab, 0xc2f7];
    const hf = [0x3c00, 0x0001, 0x03ff, 0x0400, 0x8001, 0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e01, 0x3555, 0xc7b1];
    const f16v = (b: number) => f16BitsToNumber(b);
    for (const [bits, dtype, dec] of [[bf, BF16, bf16BitsToF32], [hf, F16, f16v]] as const) {
      const n = bits.length;
      const q = tensor(r, [1, 1, 2, 8], dtype === BF16 ? 'bf16' : 'f16');
      const k = tensor(r, [1, 1, 1, 8], dtype === BF16 ? 'bf16' : 'f16');
      const v: NativeHostView = { data: Uint16Array.from(bits), dtype, shape: [1, 1, 1, n], strides: [n, n, n, 1] };
      const res = await run({ q: q.view, k: k.view, v });
      for (let row = 0; row < 2; row++) {
        for (let d = 0; d < n; d++) {
          const want = Math.fround(dec(bits[d]!));
          const got = res.out[row * n + d]!;
          if (Number.isNaN(want)) expect(Number.isNaN(got)).toBe(true);
          else expect(got).toBe(want);
        }
      }
    }
    // f32 subnormals and f16 subnormals in q/k reach the dot product unflushed
    expect(f16BitsToNumber(0x0001)).toBe(2 ** -24);
  });

  it('bool mask broadcast [1, 1, Sq, Skv], [B, 1, 1, Skv] and rank-2 [Sq, Skv]', async () => {
    const r = rng(41);
    const B = 2, H = 3, Sq = 37, Skv = 45;
    const q = tensor(r, [B, H, Sq, 32]), k = tensor(r, [B, H, Skv, 32]), v = tensor(r, [B, H, Skv, 32]);
    const shapes = [[1, 1, Sq, Skv], [B, 1, 1, Skv], [Sq, Skv], [B, H, Sq, Skv]];
    for (const shape of shapes) {
      const mr = rng(shape.length * 100 + shape[0]!);
      const mask = maskView(shape, 'bool', () => mr() < 0.7);
      await check({ q, k, v, scale: 0.17, keep: (b, h, i, j) => maskAt(mask, b, h, i, j) !== 0 }, { mask });
    }
  });

  it('additive f32 mask with broadcasting and -Infinity entries, plus causal', async () => {
    const r = rng(42);
    const B = 2, H = 4, Sq = 31, Skv = 53;
    const q = tensor(r, [B, H, Sq, 16]), k = tensor(r, [B, 2, Skv, 16]), v = tensor(r, [B, 2, Skv, 16]);
    const mr = rng(43);
    const mask = maskView([1, H, Sq, Skv], 'f32', () => (mr() < 0.15 ? -Infinity : nz(mr) * 3));
    const add = (b: number, h: number, i: number, j: number) => maskAt(mask, b, h, i, j);
    await check({ q, k, v, scale: 0.25, add }, { mask });
    await check({ q, k, v, scale: 0.25, add, causal: true }, { mask, isCausal: true });
    // mask given with explicit zero strides over full-size dims
    const bmask: NativeHostView = { ...mask, shape: [B, H, Sq, Skv], strides: [0, ...mask.strides.slice(1)] };
    await check({ q, k, v, scale: 0.25, add }, { mask: bmask });
  });

  it('fully masked rows give out = 0 and lse = -inf (bool, additive -inf, Skv = 0)', async () => {
    const r = rng(51);
    const B = 1, H = 2, Sq = 9, Skv = 13;
    const q = tensor(r, [B, H, Sq, 16]), k = tensor(r, [B, H, Skv, 16]), v = tensor(r, [B, H, Skv, 16]);
    const dead = (h: number, i: number) => i % 3 === 1 || (h === 1 && i === 0);
    const bmask = maskView([1, H, Sq, Skv], 'bool', ([, h, i, j]) => !dead(h!, i!) && (j! + i!) % 4 !== 0);
    const fmask = maskView([1, H, Sq, Skv], 'f32', ([, h, i, j]) => (!dead(h!, i!) && (j! + i!) % 4 !== 0 ? 0.5 : -Infinity));
    for (const mask of [bmask, fmask]) {
      const { r: res } = await check({
        q, k, v, scale: 0.3,
        keep: (b, h, i, j) => !dead(h, i) && (j + i) % 4 !== 0,
        add: mask === fmask ? () => 0.5 : undefined,
      }, { mask });
      for (let h = 0; h < H; h++) for (let i = 0; i < Sq; i++) {
        const row = h * Sq + i;
        if (!dead(h, i)) { expect(Number.isFinite(res.lse![row])).toBe(true); continue; }
        expect(res.lse![row]).toBe(-Infinity);
        for (let d = 0; d < 16; d++) expect(Object.is(res.out[row * 16 + d], 0) || res.out[row * 16 + d] === 0).toBe(true);
      }
    }
    const empty = { data: new Float32Array(0), dtype: F32, shape: [B, H, 0, 16], strides: [0, 0, 16, 1] };
    const res = await run({ q: q.view, k: empty, v: empty, isCausal: true });
    expect(Array.from(res.out).every((x) => x === 0)).toBe(true);
    expect(Array.from(res.lse!).every((x) => x === -Infinity)).toBe(true);
  });

  it('returnLse: false gives no lse; numThreads 1 and default agree bit for bit', async () => {
    const r = rng(61);
    const q = tensor(r, [1, 3, 50, 32]), k = tensor(r, [1, 3, 61, 32]), v = tensor(r, [1, 3, 61, 32]);
    const a = await run({ q: q.view, k: k.view, v: v.view, returnLse: false, numThreads: 1 });
    expect(a.lse).toBeUndefined();
    const b = await run({ q: q.view, k: k.view, v: v.view, returnLse: false, numThreads: 0 });
    const c = await run({ q: q.view, k: k.view, v: v.view, returnLse: false, numThreads: 7 });
    expect(Array.from(b.out)).toEqual(Array.from(a.out));
    expect(Array.from(c.out)).toEqual(Array.from(a.out));
  });
});

describe('cpuAttention block-sparse iteration', () => {
  /**
   * Random BlockMask with block states none / partial / full per (b, h, qb, kb)
   * in PyTorch's layout. Without a mask_mod, partial and full blocks are both
   * fully visible, so the dense equivalent is "kv block listed".
   */
  function blockMask(seed: number, Bm: number, Hm: number, Sq: number, Skv: number, qBlock: number, kvBlock: number,
    withFull: boolean) {
    const r = rng(seed);
    const QB = Math.ceil(Sq / qBlock), KVB = Math.ceil(Skv / kvBlock);
    const kvNumBlocks = new Int32Array(Bm * Hm * QB), kvIndices = new Int32Array(Bm * Hm * QB * KVB).fill(999);
    const fullKvNumBlocks = new Int32Array(Bm * Hm * QB), fullKvIndices = new Int32Array(Bm * Hm * QB * KVB).fill(-5);
    const listed = new Uint8Array(Bm * Hm * QB * KVB);
    for (let row = 0; row < Bm * Hm * QB; row++) {
      // visit order shuffled: indices need not be sorted
      const order = Array.from({ length: KVB }, (_, i) => i).sort(() => r() - 0.5);
      for (const kb of order) {
        const x = r();
        if (x < 0.35) continue; // not listed: masked
        if (withFull && x < 0.65) {
          listed[row * KVB + kb] = 2;
          fullKvIndices[row * KVB + fullKvNumBlocks[row]!++] = kb;
        } else {
          listed[row * KVB + kb] = 1;
          kvIndices[row * KVB + kvNumBlocks[row]!++] = kb;
        }
      }
    }
    const bm: NonNullable<NativeCpuAttentionArgs['blockMask']> = {
      B: Bm, H: Hm, numQBlocks: QB, numKvBlocks: KVB, qBlock, kvBlock, kvNumBlocks, kvIndices,
      ...(withFull ? { fullKvNumBlocks, fullKvIndices } : {}),
    };
    /** 0 = not listed (masked), 1 = partial, 2 = full. */
    const state = (b: number, h: number, i: number, j: number) => {
      const row = ((Bm === 1 ? 0 : b) * Hm + (Hm === 1 ? 0 : h)) * QB + Math.floor(i / qBlock);
      return listed[row * KVB + Math.floor(j / kvBlock)]!;
    };
    const keep = (b: number, h: number, i: number, j: number) => state(b, h, i, j) !== 0;
    return { bm, keep, state };
  }

  for (const [Bm, Hm, withFull] of [[1, 1, true], [2, 4, true], [1, 4, false], [2, 1, true]] as const) {
    it(`block mask B=${Bm} H=${Hm} ${withFull ? 'partial+full' : 'partial only'} (block 16, Sq=77, Skv=130)`, async () => {
      const r = rng(70 + Bm * 10 + Hm);
      const B = 2, Hq = 4, Sq = 77, Skv = 130;
      const q = tensor(r, [B, Hq, Sq, 32]), k = tensor(r, [B, 2, Skv, 32]), v = tensor(r, [B, 2, Skv, 32]);
      const { bm, keep } = blockMask(Bm * 7 + Hm, Bm, Hm, Sq, Skv, 16, 16, withFull);
      await check({ q, k, v, scale: 0.2, keep }, { blockMask: bm });
      // with causal and a dense bool mask on top
      const mr = rng(3);
      const mask = maskView([Sq, Skv], 'bool', () => mr() < 0.8);
      await check({ q, k, v, scale: 0.2, causal: true, keep: (b, h, i, j) => keep(b, h, i, j) && maskAt(mask, b, h, i, j) !== 0 },
        { blockMask: bm, mask, isCausal: true });
    });
  }

  it('block mask: mask_mod applies in partial blocks only, score_mod in both', async () => {
    const r = rng(120);
    const B = 2, Hq = 4, Sq = 77, Skv = 130;
    const q = tensor(r, [B, Hq, Sq, 32]), k = tensor(r, [B, 2, Skv, 32]), v = tensor(r, [B, 2, Skv, 32]);
    for (const [Bm, Hm] of [[1, 1], [2, 4]] as const) {
      const { bm, state } = blockMask(121 + Bm, Bm, Hm, Sq, Skv, 16, 16, true);
      const keep = (b: number, h: number, i: number, j: number) => {
        const st = state(b, h, i, j);
        return st === 2 || (st === 1 && maskFn(b, h, i, j));
      };
      await check({ q, k, v, scale: 0.3, keep, mod: scoreFn }, { blockMask: bm, scoreMod: scoreProg, maskMod: maskProg }, 5e-5);
      await check({ q, k, v, scale: 0.3, keep, causal: true }, { blockMask: bm, maskMod: maskProg, isCausal: true });
    }
  });

  it('non-square blocks (q 8, kv 32), kv tail past Skv, equals dense mask', async () => {
    const r = rng(80);
    const B = 1, H = 2, Sq = 41, Skv = 70;
    const q = tensor(r, [B, H, Sq, 16]), k = tensor(r, [B, H, Skv, 16]), v = tensor(r, [B, H, Skv, 16]);
    const { bm, keep } = blockMask(81, 1, H, Sq, Skv, 8, 32, true);
    const dense = maskView([1, H, Sq, Skv], 'bool', ([b, h, i, j]) => keep(b!, h!, i!, j!));
    const a = await run({ q: q.view, k: k.view, v: v.view, scale: 0.3, blockMask: bm });
    const d = await run({ q: q.view, k: k.view, v: v.view, scale: 0.3, mask: dense });
    expect(maxAbsDiff(a.out, d.out)).toBeLessThan(1e-6);
    expect(maxAbsDiff(a.lse!, d.lse!)).toBeLessThan(1e-6);
  });

  it('q blocks with no kv blocks are fully masked', async () => {
    const r = rng(90);
    const q = tensor(r, [1, 1, 32, 16]), k = tensor(r, [1, 1, 32, 16]), v = tensor(r, [1, 1, 32, 16]);
    const bm = {
      B: 1, H: 1, numQBlocks: 2, numKvBlocks: 2, qBlock: 16, kvBlock: 16,
      kvNumBlocks: Int32Array.from([0, 2]), kvIndices: Int32Array.from([7, 7, 1, 0]),
    };
    const res = await run({ q: q.view, k: k.view, v: v.view, blockMask: bm });
    for (let i = 0; i < 16; i++) expect(res.lse![i]).toBe(-Infinity);
    for (let i = 16; i < 32; i++) expect(Number.isFinite(res.lse![i])).toBe(true);
    expect(Array.from(res.out.subarray(0, 16 * 16)).every((x) => x === 0)).toBe(true);
  });
});

describe('cpuAttention with mod VM programs', () => {
  it('scoreMod + maskMod everywhere without a block mask (GQA, causal, additive mask after score_mod)', async () => {
    const r = rng(110);
    const B = 2, Sq = 45, Skv = 67;
    const q = tensor(r, [B, 4, Sq, 32], 'bf16'), k = tensor(r, [B, 2, Skv, 32], 'bf16'), v = tensor(r, [B, 2, Skv, 32], 'bf16');
    await check({ q, k, v, scale: 0.5, keep: maskFn, mod: scoreFn }, { scoreMod: scoreProg, maskMod: maskProg }, 5e-5);
    await check({ q, k, v, scale: 0.5, keep: maskFn, causal: true }, { maskMod: maskProg, isCausal: true });
    const mr = rng(111);
    const mask = maskView([B, 1, Sq, Skv], 'f32', () => nz(mr));
    await check({ q, k, v, scale: 0.5, mod: scoreFn, add: (b, h, i, j) => maskAt(mask, b, h, i, j) },
      { scoreMod: scoreProg, mask }, 5e-5);
  });
});

describe('cpuAttention argument errors', () => {
  const r = rng(100);
  const q = tensor(r, [2, 4, 10, 16]), k = tensor(r, [2, 2, 12, 16]), v = tensor(r, [2, 2, 12, 8]);
  const base = { q: q.view, k: k.view, v: v.view };

  const cases: [string, Partial<NativeCpuAttentionArgs>, string][] = [
    ['q rank 3', { q: { ...q.view, shape: [2, 4, 10], strides: [640, 160, 16] } }, 'q'],
    ['q dtype i32', { q: { ...q.view, dtype: 3 } }, 'q'],
    ['q dtype code 9', { q: { ...q.view, dtype: 9 } }, 'q.dtype'],
    ['q data too short', { q: { ...q.view, data: new Float32Array(100) } }, 'q.data'],
    ['q data not a typed array', { q: { ...q.view, data: [1, 2, 3] as unknown as Float32Array } }, 'q.data'],
    ['q strides length', { q: { ...q.view, strides: [1, 1] } }, 'q.strides'],
    ['k batch mismatch', { k: { ...k.view, shape: [1, 2, 12, 16] } }, 'k'],
    ['k head dim mismatch', { k: { ...k.view, shape: [2, 2, 12, 8] } }, 'k'],
    ['Hq not divisible by Hkv', { k: { ...k.view, shape: [2, 3, 12, 16], strides: [0, 192, 16, 1] } }, 'k'],
    ['v Skv mismatch', { v: { ...v.view, shape: [2, 2, 11, 8] } }, 'v'],
    ['mask not broadcastable', { mask: maskView([10, 5], 'bool', () => true) }, 'mask'],
    ['mask rank 5', { mask: maskView([1, 1, 1, 10, 12], 'bool', () => true) }, 'mask'],
    ['scale NaN', { scale: NaN }, 'scale'],
    ['isCausal not boolean', { isCausal: 1 as unknown as boolean }, 'isCausal'],
    ['blockMask too few q blocks', {
      blockMask: { B: 1, H: 1, numQBlocks: 1, numKvBlocks: 1, qBlock: 8, kvBlock: 16, kvNumBlocks: new Int32Array(1), kvIndices: new Int32Array(1) },
    }, 'blockMask.numQBlocks'],
    ['blockMask index out of range', {
      blockMask: { B: 1, H: 1, numQBlocks: 1, numKvBlocks: 1, qBlock: 16, kvBlock: 16, kvNumBlocks: Int32Array.from([1]), kvIndices: Int32Array.from([3]) },
    }, 'blockMask.kvIndices'],
    ['blockMask H mismatch', {
      blockMask: { B: 1, H: 3, numQBlocks: 1, numKvBlocks: 1, qBlock: 16, kvBlock: 16, kvNumBlocks: new Int32Array(3), kvIndices: new Int32Array(3) },
    }, 'blockMask.H'],
    ['blockMask arrays too short', {
      blockMask: { B: 2, H: 4, numQBlocks: 1, numKvBlocks: 1, qBlock: 16, kvBlock: 16, kvNumBlocks: new Int32Array(3), kvIndices: new Int32Array(8) },
    }, 'blockMask.kvNumBlocks'],
  ];

  for (const [name, patch, argument] of cases) {
    it(`${name} -> InvalidArgumentError naming ${argument}`, async () => {
      const p = (async () => run({ ...base, ...patch }))();
      await expect(p).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(p).rejects.toMatchObject({ argument });
      await expect(p).rejects.toThrow(new RegExp(`^${argument.replace(/[.[\]]/g, '\\$&')}: expected`));
    });
  }

  it('the addon keeps working after errors', async () => {
    const ref = reference({ q, k, v, scale: 0.5 });
    const res = await run({ ...base, scale: 0.5 });
    expect(maxAbsDiff(res.out, ref.out)).toBeLessThan(2e-5);
  });

  it('a malformed mod program is rejected without breaking the addon', async () => {
    const bad = { code: new Int32Array([12345]), consts: new Float64Array(0), tensors: [], params: new Float64Array(0) };
    await expect((async () => run({ ...base, maskMod: bad }))()).rejects.toThrow();
    const res = await run({ ...base, scale: 0.5 });
    expect(res.out.length).toBe(2 * 4 * 10 * 8);
  });
});

describe('cpuAttention asynchrony and speed', () => {
  it('resolves asynchronously (a setImmediate callback runs first)', async () => {
    const r = rng(200);
    const q = tensor(r, [1, 8, 512, 64]), k = tensor(r, [1, 8, 512, 64]), v = tensor(r, [1, 8, 512, 64]);
    let immediate = false;
    let resolved = false;
    const t0 = performance.now();
    const p = run({ q: q.view, k: k.view, v: v.view, scale: 0.125 }).then((x) => { resolved = true; return x; });
    const callMs = performance.now() - t0;
    setImmediate(() => { immediate = true; expect(resolved).toBe(false); });
    const res = await p;
    expect(immediate).toBe(true);
    expect(res.out.length).toBe(8 * 512 * 64);
    expect(callMs).toBeLessThan(250);
  });

  it('B=1 H=8 S=2048 D=128 (timing)', async () => {
    const r = rng(300);
    const q = tensor(r, [1, 8, 2048, 128]), k = tensor(r, [1, 8, 2048, 128]), v = tensor(r, [1, 8, 2048, 128]);
    const t0 = performance.now();
    const res = await run({ q: q.view, k: k.view, v: v.view, scale: 1 / Math.sqrt(128) });
    const ms = performance.now() - t0;
    console.log(`cpuAttention B=1 H=8 S=2048 D=128 f32: ${ms.toFixed(0)} ms on ${native().hardwareConcurrency()} threads`);
    // spot-check a few rows against the reference on a slice (head 3, rows 0..3)
    const sl = (t: T4, s: number) => {
      const vals = t.vals.slice(3 * 2048 * 128, 3 * 2048 * 128 + s * 128);
      return { view: { ...t.view, shape: [1, 1, s, 128] }, vals } as T4;
    };
    const ref = reference({ q: sl(q, 4), k: sl(k, 2048), v: sl(v, 2048), scale: 1 / Math.sqrt(128) });
    expect(maxAbsDiff(res.out.subarray(3 * 2048 * 128, 3 * 2048 * 128 + 4 * 128), ref.out)).toBeLessThan(2e-5);
    expect(ms).toBeLessThan(20_000);
  });
});
