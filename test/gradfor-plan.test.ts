// gradFor on CUDA, the host side: the interval analysis and partial-buffer plan
// (lib/cuda/gradfor-plan.ts, checked against brute force over every element a
// dK/dV tile recomputes), the 1 GiB bound, and the generated CUDA's gradFor
// part (lib/mods/codegen-cuda.ts: sites, FlexModArgs fields, packing).
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, Tensor, alibi, composeScoreMods, relativeBias, scoreMod, type ScoreMod } from '../lib/index.js';
import { generateCuda, packArgs } from '../lib/mods/index.js';
import { gradForSites, scoreModGradient } from '../lib/backward/mod-programs.js';
import {
  BWD_DKDV_ROWS, BWD_DKDV_WARPS, MAX_GRADFOR_PARTIAL_BYTES, DIAG_STAGE_BYTES, classifySite, dkdvSmemBytes, gradForCodeFor, intervalOf, planGradFor,
} from '../lib/cuda/gradfor-plan.js';
import { backwardKernels } from '../lib/cuda/run-backward.js';
import { ScoreMod as ScoreModClass, Expr } from '../lib/mods/ir.js';
import { bindHost } from '../lib/mods/interpret.js';
import type { QkvDims } from '../lib/validate.js';

const dimsOf = (B: number, Hq: number, Hkv: number, Sq: number, Skv: number): QkvDims => ({ B, Hq, Hkv, Sq, Skv, D: 64, Dv: 64 });
const f32 = (shape: number[]) => Tensor.fromHost(new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.5), shape, 'f32');

/** Every flat index each site reads, by brute force (the IR's interpreter), must lie in its CTA's window. */
async function bruteForce(mod: ScoreMod, gradFor: Tensor[], d: QkvDims): Promise<void> {
  const grad = scoreModGradient(mod, gradFor, gradFor.map((_, i) => `g${i}`));
  const code = gradForSites(grad, gradFor);
  const plan = planGradFor(code, gradFor.map((t) => t.numel), d);
  const tiles = Math.ceil(d.Skv / BWD_DKDV_ROWS), G = d.Hq / d.Hkv;
  expect(plan.ctas).toBe(tiles * d.Hkv * d.B);
  for (const [k, t] of code.tensors.entries()) {
    const p = plan.tensors[k]!;
    const fns = await Promise.all(t.sites.map(async (s) => {
      const m = new ScoreModClass('score', new Expr(s.index));
      return m.toJs(await bindHost(m)) as (s: number, b: number, h: number, q: number, kv: number) => number;
    }));
    let touched = 0;
    const bad: string[] = [];
    for (let b = 0; b < d.B; b++) for (let hk = 0; hk < d.Hkv; hk++) for (let x = 0; x < tiles; x++) {
      const c = (b * d.Hkv + hk) * tiles + x, lo = p.lo[c]!;
      for (let h = hk * G; h < (hk + 1) * G; h++) for (let q = 0; q < d.Sq; q++) {
        for (let kv = x * BWD_DKDV_ROWS; kv < Math.min(d.Skv, (x + 1) * BWD_DKDV_ROWS); kv++) {
          for (const f of fns) {
            const e = f(0.25, b, h, q, kv);
            if (!(Number.isInteger(e) && e >= lo && e < lo + p.width) && bad.length < 5) {
              bad.push(`tensor ${k} cta ${c} (b ${b} h ${h} q ${q} kv ${kv}): ${e} not in [${lo}, ${lo + p.width})`);
            }
            touched++;
          }
        }
      }
    }
    expect(bad).toEqual([]);
    expect(touched).toBeGreaterThan(0);
    expect(p.bytes).toBe(plan.ctas * BWD_DKDV_WARPS * p.width * 4);
  }
}

describe('gradFor plan (lib/cuda/gradfor-plan.ts)', () => {
  it('ALiBi slopes [H]: one element per tile (its head), GQA groups widen it to the group', async () => {
    const slopes = f32([4]);
    const p = planGradFor(gradForSites(scoreModGradient(alibi(slopes), [slopes], ['s']), [slopes]), [4], dimsOf(2, 4, 4, 77, 200));
    expect(p.ctas).toBe(2 * 4 * 4);
    expect(p.tensors[0]!.width).toBe(1);
    expect(Array.from(p.tensors[0]!.lo.slice(0, 8))).toEqual([0, 0, 0, 0, 1, 1, 1, 1]);
    const g = planGradFor(gradForSites(scoreModGradient(alibi(slopes), [slopes], ['s']), [slopes]), [4], dimsOf(1, 4, 2, 77, 77));
    expect(g.tensors[0]!.width).toBe(2);
    expect(Array.from(g.tensors[0]!.lo)).toEqual([0, 0, 2, 2]);
    await bruteForce(alibi(slopes), [slopes], dimsOf(1, 4, 2, 33, 130));
  });

  it('relative bias [H, Sq+Skv-1]: about Sq + 64 elements of one head per tile, not the whole table', async () => {
    const Sq = 300, Skv = 200, H = 3;
    const table = f32([H, Sq + Skv - 1]);
    const mod = relativeBias(table, { offset: Skv - 1 });
    const p = planGradFor(gradForSites(scoreModGradient(mod, [table], ['t']), [table]), [table.numel], dimsOf(1, H, H, Sq, Skv));
    expect(p.tensors[0]!.width).toBe(Sq + BWD_DKDV_ROWS - 1);
    await bruteForce(mod, [table], dimsOf(1, H, H, Sq, Skv));
    // Odd lengths, Sq ≠ Skv, GQA, a table narrower than the index range (clamped reads).
    const small = f32([4, 50]);
    await bruteForce(relativeBias(small), [small], dimsOf(2, 4, 2, 77, 131));
    await bruteForce(relativeBias(small), [small], dimsOf(1, 4, 1, 1, 1));
  });

  it('several tensors and sites, and an index the analysis cannot bound (the whole tensor)', async () => {
    const slopes = f32([2]), table = f32([2, 40]), scale = f32([2]);
    const mod = composeScoreMods(alibi(slopes), relativeBias(table), scoreMod(({ score, h }) => score.mul(scale.at(h))),
      scoreMod(({ score, h }) => score.add(slopes.at(h).mul(0.5))));
    await bruteForce(mod, [slopes, table, scale], dimsOf(1, 2, 2, 70, 70));
    const ids = Tensor.fromHost(Int32Array.from({ length: 70 }, (_, i) => i % 5), [70], 'i32');
    const t2 = f32([5]);
    const viaIds = scoreMod(({ score, kv }) => score.add(t2.at(ids.at(kv))));
    const p = planGradFor(gradForSites(scoreModGradient(viaIds, [t2], ['t']), [t2]), [5], dimsOf(1, 1, 1, 70, 70));
    expect(p.tensors[0]!.width).toBe(5);
    expect(Array.from(p.tensors[0]!.lo)).toEqual([0, 0]);
    await bruteForce(viaIds, [t2], dimsOf(1, 1, 1, 70, 70));
  });

  it('intervalOf: int ops, floorDiv/mod by constants, where; null for reads and int32 overflow', () => {
    const c = (v: number) => ({ op: 'const' as const, type: 'int' as const, args: [], value: v });
    const a = (name: string) => ({ op: 'arg' as const, type: 'int' as const, args: [], name });
    const bin = (op: 'add' | 'sub' | 'mul' | 'floorDiv' | 'mod' | 'min' | 'max', x: object, y: object) => ({ op, type: 'int' as const, args: [x, y] }) as never;
    const r = { b: [0, 0] as const, h: [1, 2] as const, q: [0, 9] as const, kv: [64, 127] as const };
    expect(intervalOf(bin('sub', a('kv'), a('q')), r)).toEqual([55, 127]);
    expect(intervalOf(bin('mul', a('h'), c(-3)), r)).toEqual([-6, -3]);
    expect(intervalOf(bin('floorDiv', a('kv'), c(64)), r)).toEqual([1, 1]);
    expect(intervalOf(bin('mod', a('kv'), c(7)), r)).toEqual([0, 6]);
    expect(intervalOf(bin('floorDiv', a('kv'), a('h')), r)).toBeNull();
    expect(intervalOf(bin('mul', a('kv'), c(2 ** 30)), r)).toBeNull();
    expect(intervalOf({ op: 'param', type: 'int', args: [], name: 'x' } as never, r)).toBeNull();
  });

  it('over 1 GiB of partial sums: InvalidArgumentError naming options.gradFor and what to do', () => {
    const t = f32([2 ** 20]);
    const ids = Tensor.fromHost(new Int32Array(8), [8], 'i32');
    const mod = scoreMod(({ score, kv }) => score.add(t.at(ids.at(kv))));
    const code = gradForSites(scoreModGradient(mod, [t], ['t']), [t]);
    // 64 tiles × 4 warps × 2^20 × 4 B = 1 GiB: allowed; one more tile is not.
    expect(planGradFor(code, [t.numel], dimsOf(1, 1, 1, 8, 64 * 64)).tensors[0]!.bytes).toBe(MAX_GRADFOR_PARTIAL_BYTES);
    let e: unknown;
    try { planGradFor(code, [t.numel], dimsOf(1, 1, 1, 8, 65 * 64)); } catch (x) { e = x; }
    expect(e).toBeInstanceOf(InvalidArgumentError);
    expect((e as InvalidArgumentError).argument).toBe('options.gradFor');
    expect((e as InvalidArgumentError).code).toBe('ERR_FLEXATTN_INVALID_ARGUMENT');
    expect((e as Error).message).toMatch(/1 GiB.*fewer heads.*smaller table/);
  });
});

describe('gradFor codegen (lib/mods/codegen-cuda.ts)', () => {
  const slopes = f32([4]);
  const table = Tensor.fromHost(new Uint16Array(4 * 9), [4, 9], 'bf16');
  const mod = composeScoreMods(alibi(slopes), relativeBias(table));
  const grad = scoreModGradient(mod, [slopes, table], ['a', 'b']);
  const code = generateCuda(mod, undefined, grad.dScore, gradForSites(grad, [slopes, table]));

  it('emits the sites, buffers and typed stores; the layout has the buffers after the captured tensors', () => {
    expect(code.source).toMatch(/#define FLEX_GRAD_TENSORS 2/);
    expect(code.source).toMatch(/#define FLEX_GRAD_SITES 2/);
    expect(code.source).toMatch(/case 0: tensor = 0; index = \(int\)flex_gs0_index/);
    expect(code.source).toMatch(/case 1: tensor = 1; index = \(int\)flex_gs1_index/);
    expect(code.source).toMatch(/\(\(float\*\)args\.g0_out\)\[e\] = v;/);
    expect(code.source).toMatch(/\(\(unsigned short\*\)args\.g1_out\)\[e\] = flex_f2bf16\(v\);/);
    const names = code.layout.fields.map((f) => f.name);
    expect(names.slice(0, 8)).toEqual(['t0', 't1', 'g0_part', 'g0_lo', 'g0_out', 'g1_part', 'g1_lo', 'g1_out']);
    expect(names).toContain('g1_width');
    const plain = generateCuda(mod, undefined, grad.dScore);
    expect(plain.source).not.toMatch(/FLEX_GRAD/);
    expect(plain.hash).not.toBe(code.hash);
  });

  it('packs the buffers at their offsets; missing buffers are an error', () => {
    const gradBufs = [
      { part: 0x1000n, lo: 0x2000n, out: 0x3000n, width: 1, numel: 4 },
      { part: 0x4000n, lo: 0x5000n, out: 0x6000n, width: 70, numel: 36 },
    ];
    const base = { tensorPtrs: [0xa0n, 0xb0n], tensorStrides: [[1], [9, 1]], tensorShapes: [[4], [4, 9]] };
    const bytes = packArgs(code.layout, { ...base, gradBufs });
    const dv = new DataView(bytes.buffer);
    const at = (name: string) => code.layout.fields.find((f) => f.name === name)!.offset;
    expect(dv.getBigUint64(at('g1_lo'), true)).toBe(0x5000n);
    expect(dv.getBigUint64(at('g0_out'), true)).toBe(0x3000n);
    expect(dv.getInt32(at('g1_width'), true)).toBe(70);
    expect(dv.getInt32(at('g0_numel'), true)).toBe(4);
    expect(() => packArgs(code.layout, base)).toThrow(InvalidArgumentError);
  });

  it('the backward module with gradFor also holds the reduce kernel', () => {
    const k = backwardKernels(64, 'bf16', 'kBlockSparse', code, true);
    expect(k.reduce?.kernel).toMatch(/_gred$/);
    expect(k.reduce?.source).toBe(k.dkdv.source);
    expect(k.dkdv.source).toMatch(/FLEXATTN_BWD_GRAD_REDUCE_KERNEL\(\S+_gred\)/);
    expect(backwardKernels(64, 'bf16', 'kBlockSparse', code).reduce).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------
// Site classes (the fast accumulation paths): every site a class is claimed for
// is checked against the indices the IR's interpreter actually gives, over
// every (b, h, q, kv) of the call.

type IndexFn = (s: number, b: number, h: number, q: number, kv: number) => number;

/** The classes of every site of `mod` (in gradFor order) after checking each against brute force. */
async function classesChecked(mod: ScoreMod, gradFor: Tensor[], d: QkvDims): Promise<string[]> {
  const grad = scoreModGradient(mod, gradFor, gradFor.map((_, i) => `g${i}`));
  const code = gradForSites(grad, gradFor);
  const plan = planGradFor(code, gradFor.map((t) => t.numel), d);
  const out: string[] = [];
  for (const [k, t] of code.tensors.entries()) {
    for (const [i, s] of t.sites.entries()) {
      const cls = plan.tensors[k]!.classes[i]!;
      expect(cls).toEqual(classifySite(s.index, d));
      out.push(cls.kind === 'diagonal' ? `diagonal${cls.sign > 0 ? '+' : '-'}` : cls.kind);
      if (cls.kind === 'general') continue;
      const m = new ScoreModClass('score', new Expr(s.index));
      const f = m.toJs(await bindHost(m)) as IndexFn;
      const bad: string[] = [];
      for (let b = 0; b < d.B; b++) for (let h = 0; h < d.Hq; h++) {
        let base: number | undefined;
        for (let q = 0; q < d.Sq; q++) for (let kv = 0; kv < d.Skv; kv++) {
          const e = f(0.25, b, h, q, kv);
          // uniform: one index per (b, h); diagonal: index − sign · (kv − q) one value per (b, h).
          const key = cls.kind === 'uniform' ? e : e - cls.sign * (kv - q);
          base ??= key;
          if (key !== base && bad.length < 3) bad.push(`site ${k}.${i} (${cls.kind}) b ${b} h ${h} q ${q} kv ${kv}: index ${e}`);
        }
      }
      expect(bad).toEqual([]);
    }
  }
  return out;
}

describe('gradFor site classes (classifySite: uniform / diagonal / general)', () => {
  it('the common shapes: slopes[h] and scale[h] uniform, table[h, q − kv + Skv − 1] diagonal', async () => {
    const d = dimsOf(2, 4, 2, 37, 70);
    const slopes = f32([4]), scale = f32([4]), table = f32([4, 37 + 70 - 1]);
    expect(await classesChecked(alibi(slopes), [slopes], d)).toEqual(['uniform']);
    expect(await classesChecked(scoreMod(({ score, h }) => score.mul(scale.at(h))), [scale], d)).toEqual(['uniform']);
    expect(await classesChecked(relativeBias(table, { offset: 69 }), [table], d)).toEqual(['diagonal-']);
    const rev = f32([4, 37 + 70 - 1]);
    expect(await classesChecked(scoreMod(({ score, h, q, kv }) => score.add(rev.at(h, kv.sub(q).add(36)))), [rev], d))
      .toEqual(['diagonal+']);
    const perBatch = f32([2, 4]);
    expect(await classesChecked(scoreMod(({ score, b, h }) => score.add(perBatch.at(b, h))), [perBatch], d)).toEqual(['uniform']);
  });

  it('what the fast paths cannot take is general: binding clamps, other coefficients, q or kv alone, reads through tensors', async () => {
    const d = dimsOf(1, 2, 2, 40, 40);
    const narrow = f32([2, 50]);  // the index q − kv + 24 leaves [0, 50): the clamp binds
    expect(await classesChecked(relativeBias(narrow), [narrow], d)).toEqual(['general']);
    const t = f32([2, 200]);
    expect(await classesChecked(scoreMod(({ score, h, q, kv }) => score.add(t.at(h, q.sub(kv).mul(2).add(80)))), [t], d)).toEqual(['general']);
    expect(await classesChecked(scoreMod(({ score, h, q }) => score.add(t.at(h, q))), [t], d)).toEqual(['general']);
    expect(await classesChecked(scoreMod(({ score, h, kv }) => score.add(t.at(h, kv))), [t], d)).toEqual(['general']);
    expect(await classesChecked(scoreMod(({ score, h, q, kv }) => score.add(t.at(h, q.add(kv)))), [t], d)).toEqual(['general']);
    const ids = Tensor.fromHost(Int32Array.from({ length: 40 }, (_, i) => i % 7), [40], 'i32');
    expect(await classesChecked(scoreMod(({ score, kv }) => score.add(t.at(0, ids.at(kv)))), [t], d)).toEqual(['general']);
    // A (b, h)-only read through an index tensor is still uniform.
    const hid = Tensor.fromHost(Int32Array.from([1, 0]), [2], 'i32');
    expect(await classesChecked(scoreMod(({ score, h }) => score.add(t.at(hid.at(h), 3))), [t], d)).toEqual(['uniform']);
  });

  it('random small shapes and mods: every classified site matches its indices (brute force)', async () => {
    let seed = 7;
    const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
    const seen = new Set<string>();
    for (let trial = 0; trial < 24; trial++) {
      const Hkv = 1 + rnd(2), Hq = Hkv * (1 + rnd(2)), Sq = 1 + rnd(60), Skv = 1 + rnd(90), B = 1 + rnd(2);
      const d = dimsOf(B, Hq, Hkv, Sq, Skv);
      const R = Math.max(1, Sq + Skv - 1 - rnd(3) * rnd(20));   // sometimes narrower than the index range
      const table = f32([Hq, R]), slopes = f32([Hq]);
      const off = rnd(Skv + 5), c = 1 + rnd(3);
      const mods: ScoreMod[] = [
        relativeBias(table, { offset: Math.min(off, R - 1) }),
        scoreMod(({ score, h, q, kv }) => score.add(table.at(h, kv.sub(q).add(off)))),
        scoreMod(({ score, h, q, kv }) => score.add(table.at(h, q.sub(kv).mul(c).add(off)))),
        composeScoreMods(alibi(slopes), relativeBias(table, { offset: Math.min(off, R - 1) })),
      ];
      const m = mods[rnd(mods.length)]!;
      const gradFor = m === mods[3] ? [slopes, table] : [table];
      for (const k of await classesChecked(m, gradFor, d)) seen.add(k);
    }
    expect(seen.has('general')).toBe(true);
    expect([...seen].some((k) => k.startsWith('diagonal'))).toBe(true);
  });

  it('the path: fast only with FLEXATTN_UNVERIFIED_GPU_PATHS=1 and not FLEXATTN_GRADFOR_FAST=0; the code says each site\'s kind', () => {
    const slopes = f32([4]), table = f32([4, 100 + 100 - 1]), ids = Tensor.fromHost(new Int32Array(100), [100], 'i32'), t3 = f32([8]);
    const mod = composeScoreMods(alibi(slopes), relativeBias(table, { offset: 99 }), scoreMod(({ score, kv }) => score.add(t3.at(ids.at(kv)))));
    const grad = scoreModGradient(mod, [slopes, table, t3], ['a', 'b', 'c']);
    const sites = gradForSites(grad, [slopes, table, t3]);
    const d = dimsOf(1, 4, 4, 100, 100);
    const numels = [4, table.numel, 8];
    const def = planGradFor(sites, numels, d);
    expect(def.path).toBe('general');
    expect(def.reason).toMatch(/FLEXATTN_UNVERIFIED_GPU_PATHS=1/);
    expect(planGradFor(sites, numels, d, 'x', { unverifiedGpuPaths: true, fastAllowed: false }).reason).toMatch(/FLEXATTN_GRADFOR_FAST=0/);
    const fast = planGradFor(sites, numels, d, 'x', { unverifiedGpuPaths: true, fastAllowed: true });
    expect(fast.path).toBe('fast');
    expect(fast.tensors.map((t) => t.classes.map((c) => c.kind))).toEqual([['uniform'], ['diagonal'], ['general']]);
    // The general path generates every site general (the kernel of before the fast paths).
    const gen = generateCuda(mod, undefined, grad.dScore, gradForCodeFor(sites, def));
    expect(gen.source).toMatch(/#define FLEX_GRAD_UNIFORM 0\n#define FLEX_GRAD_DIAGONAL 0/);
    expect(gen.source).toMatch(/flex_grad_site_kind\(int s\) \{ return s == 0 \? 0 : s == 1 \? 0 : s == 2 \? 0 : 0; \}/);
    const fc = generateCuda(mod, undefined, grad.dScore, gradForCodeFor(sites, fast));
    expect(fc.source).toMatch(/#define FLEX_GRAD_UNIFORM 1\n#define FLEX_GRAD_DIAGONAL 1/);
    expect(fc.source).toMatch(/flex_grad_site_kind\(int s\) \{ return s == 0 \? 1 : s == 1 \? 2 : s == 2 \? 0 : 0; \}/);
    expect(fc.source).toMatch(/flex_grad_site_sign\(int s\) \{ return s == 0 \? 1 : s == 1 \? -1 : s == 2 \? 1 : 0; \}/);
    expect(fc.source).toMatch(/flex_grad_site_tensor\(int s\) \{ return s == 0 \? 0 : s == 1 \? 1 : s == 2 \? 2 : 0; \}/);
    expect(fc.hash).not.toBe(gen.hash);  // two modules, so both paths can run in one process
    // A diagonal stage that does not fit the device's shared memory (D 128 on a 99 KiB sm86): that site general, the rest fast.
    const on = { unverifiedGpuPaths: true, fastAllowed: true };
    const d128 = { ...d, D: 128, Dv: 128 };
    expect(dkdvSmemBytes(128)).toBe(6 * 64 * 256);
    expect(dkdvSmemBytes(96)).toBe(6 * 64 * (192 + 16));
    const small = planGradFor(sites, numels, d128, 'x', { ...on, smemPerBlockOptin: 99 * 1024 });
    expect(small.tensors.map((t) => t.accumulate.map((c) => c.kind))).toEqual([['uniform'], ['general'], ['general']]);
    expect(small.tensors[1]!.classes[0]!.kind).toBe('diagonal');
    expect(small.reason).toMatch(/does not fit/);
    expect(planGradFor(sites, numels, d128, 'x', { ...on, smemPerBlockOptin: dkdvSmemBytes(128) + DIAG_STAGE_BYTES })
      .tensors[1]!.accumulate[0]!.kind).toBe('diagonal');
    expect(generateCuda(mod, undefined, grad.dScore, gradForCodeFor(sites, small)).source).toMatch(/#define FLEX_GRAD_UNIFORM 1\n#define FLEX_GRAD_DIAGONAL 0/);
    // No uniform or diagonal site: general whatever the switches.
    const only = gradForSites(scoreModGradient(scoreMod(({ score, kv }) => score.add(t3.at(ids.at(kv)))), [t3], ['c']), [t3]);
    expect(planGradFor(only, [8], d, 'x', { unverifiedGpuPaths: true, fastAllowed: true }).path).toBe('general');
  });
});
