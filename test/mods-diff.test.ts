// Differential testing of the mod pipeline on the CPU (issue 17 item 11): many
// seeded random mods, each evaluated by the compiled JS closure (toJs), the
// recursive JS reference (evaluateReference) and the C++ VM (native/cpu/mod_vm.cc,
// which the CPU attention backend runs), on random (score, b, h, q, kv) points.
//
// Agreement rule: bool results and every float result are bitwise equal (any NaN
// equals any NaN). The one allowed difference: V8 and libm compute exp, exp2,
// log, tanh (and the exp inside sigmoid) in double, each within an ulp of the
// true value, and both round that double to f32; where the double lies within a
// few double ulps of an f32 rounding boundary the two may round apart. Such a
// point is recognised (a transcendental's double result straddles a boundary when
// nudged by ±2^-50 relative) and may differ; a difference anywhere else fails.
// The CUDA code generator against the CPU backend is test/gpu/mods-diff.test.ts.
import { beforeAll, describe, expect, it } from 'vitest';
import { encodeProgram, evaluateReference, scoreMod, type LinearNode, type MaskMod, type ModProgram, type Op, type ScoreMod } from '../lib/mods/index.js';
import { evalOp, type HostEnv } from '../lib/mods/interpret.js';
import { resolveParams } from '../lib/mods/ir.js';
import { fakeEnv, mulberry32, randomMod, type RandomMod } from './random-mods.js';
import { loadModVm, vmSkipReason, type VmEval } from './mods-vm-harness.js';

const fr = Math.fround;
const ALL_OPS: readonly Op[] = ['const', 'arg', 'param', 'load', 'add', 'sub', 'mul', 'div', 'floorDiv', 'mod', 'min', 'max',
  'neg', 'abs', 'exp', 'exp2', 'log', 'tanh', 'sigmoid', 'sqrt', 'lt', 'le', 'gt', 'ge', 'eq', 'ne', 'and', 'or', 'not', 'where',
  'toFloat', 'toInt'];
const TRANSCENDENTAL = new Set<Op>(['exp', 'exp2', 'log', 'tanh', 'sigmoid']);

const SPECIAL_SCORES = [NaN, Infinity, -Infinity, -0, 0, 3.4e38, -3.4e38, 1e-45, -1e-40, 88.5, -104, 0.5];
const EDGE_INTS = [0, 1, -1, 2147483647, -2147483648, 65536, -65537];

/** Random points `[score, b, h, q, kv]*`: mostly realistic, some special scores and extreme indices. */
function points(rng: () => number, n: number): Float64Array {
  const p = new Float64Array(5 * n);
  for (let i = 0; i < n; i++) {
    const r = rng();
    p[5 * i] = r < 0.1 ? SPECIAL_SCORES[Math.floor(rng() * SPECIAL_SCORES.length)]! : fr((rng() - 0.5) * (r < 0.5 ? 8 : 200));
    for (let j = 1; j < 5; j++) {
      p[5 * i + j] = rng() < 0.05 ? EDGE_INTS[Math.floor(rng() * EDGE_INTS.length)]! : Math.floor((rng() - 0.2) * (j < 3 ? 10 : 400));
    }
  }
  return p;
}

function doubleOf(op: Op, a: number): number {
  switch (op) {
    case 'exp': return Math.exp(a);
    case 'exp2': return 2 ** a;
    case 'log': return Math.log(a);
    case 'tanh': return Math.tanh(a);
    default: return 1 / (1 + Math.exp(-a)); // sigmoid
  }
}

/** Whether a transcendental's double result at this point is too close to an f32 rounding boundary to fix its f32 value. */
function nearRoundingBoundary(p: ModProgram, env: HostEnv, args: Record<string, number>): boolean {
  const paramVals = resolveParams(p.params, env.params);
  const vals: number[] = [];
  let near = false;
  p.nodes.forEach((n: LinearNode, i) => {
    const v = n.args.map((k) => vals[k]!);
    vals[i] = evalOp(n, v, env, paramVals, p, args);
    if (TRANSCENDENTAL.has(n.op)) {
      const y = doubleOf(n.op, v[0]!);
      if (Number.isFinite(y) && y !== 0 && fr(y * (1 - 2 ** -50)) !== fr(y * (1 + 2 ** -50))) near = true;
      if (n.op === 'sigmoid') { // e^-x is only a double ulp apart too, before 1 / (1 + e)
        const e = Math.exp(-v[0]!);
        if (Number.isFinite(e) && fr(1 / (1 + e * (1 - 2 ** -50))) !== fr(1 / (1 + e * (1 + 2 ** -50)))) near = true;
      }
    }
  });
  return near;
}

const same = (a: number, b: number): boolean => Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));

interface Tally { points: number; nearBoundary: number; finiteScores: number; scorePoints: number }

function compareAll(evalVm: VmEval, r: RandomMod, pts: Float64Array, t: Tally): void {
  const mod = r.mod as ScoreMod | MaskMod;
  const prog = encodeProgram(mod, r.env.tensors, r.params);
  const vm = evalVm(prog, pts);
  const js = mod.toJs(r.env) as (...a: number[]) => number | boolean;
  const n = pts.length / 5;
  for (let i = 0; i < n; i++) {
    const [s, b, h, q, kv] = Array.from(pts.subarray(5 * i, 5 * i + 5)) as [number, number, number, number, number];
    const args = { score: fr(s), b, h, q, kv };
    const got = mod.kind === 'mask' ? (js(b, h, q, kv) ? 1 : 0) : (js(s, b, h, q, kv) as number);
    const ref = evaluateReference(mod.ir, r.env, args);
    const v = vm[i]!;
    t.points++;
    if (mod.kind === 'score') { t.scorePoints++; if (Number.isFinite(got)) t.finiteScores++; }
    if (!same(got, ref)) throw new Error(`toJs ${got} != reference ${ref} for ${mod.toString()} at ${[s, b, h, q, kv]}`);
    if (same(v, got)) continue;
    if (nearRoundingBoundary(mod.ir, r.env, args)) { t.nearBoundary++; continue; }
    throw new Error(`C++ VM ${v} != JS ${got} for ${mod.toString()}\nat score=${s} b=${b} h=${h} q=${q} kv=${kv}; params ${JSON.stringify(r.params)}`);
  }
}

const suite = vmSkipReason === null ? describe : describe.skip;
if (vmSkipReason !== null) console.log(`[mods-diff] skipped: ${vmSkipReason}`);

suite('random mods: JS interpreter == C++ VM', () => {
  let evalVm: VmEval;
  beforeAll(() => { evalVm = loadModVm(); }, 120_000);

  it('1200 seeded random mods (every IR op, each captured dtype, params, nesting) on 150 points each', () => {
    const rng = mulberry32(20240917);
    const t: Tally = { points: 0, nearBoundary: 0, finiteScores: 0, scorePoints: 0 };
    const seenOps = new Set<Op>();
    const seenDtypes = new Set<string>();
    const seenRanks = new Set<number>();
    const seenParams = new Set<string>();
    let emptyTensors = 0, deepest = 0;
    for (let n = 0; n < 1200; n++) {
      const r = randomMod(rng, { kind: n % 2 ? 'score' : 'mask', depth: 1 + (n % 8), wide: n % 3 !== 0, emptyTensors: true });
      r.mod.ir.nodes.forEach((x) => seenOps.add(x.op));
      r.mod.ir.tensors.forEach((x) => { seenDtypes.add(x.dtype); seenRanks.add(x.rank); });
      r.mod.ir.params.forEach((x) => seenParams.add(x.type));
      emptyTensors += r.mod.tensors.filter((x) => x.shape.includes(0)).length;
      deepest = Math.max(deepest, depthOf(r.mod.ir));
      compareAll(evalVm, r, points(rng, 150), t);
    }
    // The generator must keep covering what the test claims (a test that silently lost coverage proves less).
    expect(ALL_OPS.filter((o) => !seenOps.has(o))).toEqual([]);
    expect([...seenDtypes].sort()).toEqual(['bf16', 'bool', 'f16', 'f32', 'i32']);
    expect([...seenRanks].sort()).toEqual([1, 2, 3]);
    expect([...seenParams].sort()).toEqual(['float', 'int']);
    expect(emptyTensors).toBeGreaterThan(0);
    expect(deepest).toBeGreaterThanOrEqual(6);
    // Informative: most score results are finite numbers, and boundary cases stay rare.
    expect(t.finiteScores / t.scorePoints).toBeGreaterThan(0.3);
    expect(t.nearBoundary / t.points).toBeLessThan(1e-3);
    console.log(`[mods-diff] ${t.points} points, ${t.nearBoundary} at an f32 rounding boundary of a transcendental, ${(100 * t.finiteScores / t.scorePoints).toFixed(0)}% of scores finite`);
  });

  it('the agreement rule can fail: a VM result one f32 ulp off is caught', () => {
    const mod = scoreMod(({ score, q, kv }) => score.mul(1.5).add(q.sub(kv).toFloat().mul(0.25)));
    const r: RandomMod = { mod, tensors: [], params: {}, env: fakeEnv([]) };
    const pts = Float64Array.from([0.75, 0, 0, 3, 1, -2.5, 1, 1, 7, 9]);
    const t: Tally = { points: 0, nearBoundary: 0, finiteScores: 0, scorePoints: 0 };
    compareAll(evalVm, r, pts, t);
    const oneUlpOff: VmEval = (prog, p) => evalVm(prog, p).map((x) => fr(x * (1 + 2 ** -23)));
    expect(() => compareAll(oneUlpOff, r, pts, t)).toThrow(/C\+\+ VM/);
  });
});

function depthOf(p: ModProgram): number {
  const d: number[] = [];
  p.nodes.forEach((n, i) => { d[i] = 1 + Math.max(0, ...n.args.map((a) => d[a]!)); });
  return d[p.root]!;
}
