// gradFor on CUDA, the host side: the interval analysis and partial-buffer plan
// (lib/cuda/gradfor-plan.ts, checked against brute force over every element a
// dK/dV tile recomputes), the 1 GiB bound, and the generated CUDA's gradFor
// part (lib/mods/codegen-cuda.ts: sites, FlexModArgs fields, packing).
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, Tensor, alibi, composeScoreMods, relativeBias, scoreMod, type ScoreMod } from '../lib/index.js';
import { generateCuda, packArgs } from '../lib/mods/index.js';
import { gradForSites, scoreModGradient } from '../lib/backward/mod-programs.js';
import { BWD_DKDV_ROWS, BWD_DKDV_WARPS, MAX_GRADFOR_PARTIAL_BYTES, intervalOf, planGradFor } from '../lib/cuda/gradfor-plan.js';
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
