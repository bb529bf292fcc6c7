// Differential testing of the mod pipeline on the GPU (issue 17 item 11): random
// score and mask mods (test/random-mods.ts, captured device tensors, params)
// through flexAttention on cuda (the CUDA code generator) and on the CPU backend,
// each held to FlashAttention's accuracy rule:
//
//   max|out − ref64| ≤ k · max|out_pt − ref64|   (k = 2; 3 when the score mod uses tanh)
//
// ref64 is float64 attention from the same bf16 inputs (the mod itself is
// evaluated in its defined f32 semantics); out_pt is a bf16 computation done the
// PyTorch way, in JS here: scores in f32 from the bf16 inputs, softmax in f32, P
// rounded to bf16, P·V accumulated in f32, the output rounded to bf16. Outputs
// are poisoned with NaN first, so an unwritten element fails.
//
// Only well-conditioned random score mods take part (an accuracy rule cannot
// judge the others): no float op that is discontinuous in the score (float
// floorDiv / mod / toInt / comparisons), finite outputs of magnitude ≤ 1e3, slope
// in the score ≤ 30, and an output that moves ≤ 0.02 when each transcendental
// moves by its documented GPU error (tanh.approx 2^-11, ex2/lg2.approx 2^-21
// relative). Random mask mods take part when they have no float node (a float
// comparison could flip between FMA-contracted GPU code and the CPU). The number
// skipped is bounded, so the filter cannot hollow the test out.
import { expect, it } from 'vitest';
import { Tensor, flexAttention, createBlockMask, causal, softcap, alibi, andMasks, slidingWindow, scoreMod, where, type MaskMod, type ScoreMod } from '../../lib/index.js';
import { bf16BitsToF32, f32ToBf16Bits } from '../../lib/dtype.js';
import { evalOp, type HostEnv } from '../../lib/mods/interpret.js';
import { resolveParams, type ModProgram, type Op } from '../../lib/mods/ir.js';
import { fakeEnv, hostTensor, mulberry32, randomMod, structurallyContinuous, type FakeTensor } from '../random-mods.js';
import { describeGpu } from '../gpu-gate.js';

const gpu = { device: 'cuda:0' as const };
const fr = Math.fround;
const bf = (x: number): number => bf16BitsToF32(f32ToBf16Bits(x));

interface Dims { B: number; Hq: number; Hkv: number; Sq: number; Skv: number; D: number }

/** Odd lengths, decode (Sq = 1), cross-attention and GQA; small enough for a float64 reference in JS. */
const SHAPES: Dims[] = [
  { B: 1, Hq: 4, Hkv: 1, Sq: 77, Skv: 77, D: 64 },
  { B: 2, Hq: 2, Hkv: 2, Sq: 1, Skv: 131, D: 128 },
  { B: 1, Hq: 6, Hkv: 2, Sq: 150, Skv: 233, D: 64 },
  { B: 1, Hq: 2, Hkv: 1, Sq: 257, Skv: 129, D: 128 },
];

interface Inputs { q: Float32Array; k: Float32Array; v: Float32Array; tq: Tensor; tk: Tensor; tv: Tensor }

function normalBf16(rng: () => number, n: number): Uint16Array {
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(rng(), 1e-12), w = rng();
    out[i] = f32ToBf16Bits(Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * w));
  }
  return out;
}

function makeInputs(rng: () => number, d: Dims): Inputs {
  const mk = (H: number, S: number): [Float32Array, Tensor] => {
    const bits = normalBf16(rng, d.B * H * S * d.D);
    return [Float32Array.from(bits, bf16BitsToF32), Tensor.fromHost(bits, [d.B, H, S, d.D], 'bf16', gpu)];
  };
  const [q, tq] = mk(d.Hq, d.Sq), [k, tk] = mk(d.Hkv, d.Skv), [v, tv] = mk(d.Hkv, d.Skv);
  return { q, k, v, tq, tk, tv };
}

type ScoreFn = (s: number, b: number, h: number, q: number, kv: number) => number;
type MaskFn = (b: number, h: number, q: number, kv: number) => boolean;

/**
 * float64 attention and the PyTorch-way bf16 computation on the same inputs.
 * `onScore(score64, out, b, h, q, kv)` sees every unmasked f64 score and its mod
 * output (for the conditioning filter).
 */
function references(x: Inputs, d: Dims, score: ScoreFn | undefined, mask: MaskFn | undefined,
  onScore?: (s: number, out: number, b: number, h: number, q: number, kv: number) => void): { ref: Float64Array; pt: Float32Array } {
  const { B, Hq, Hkv, Sq, Skv, D } = d;
  const scale = 1 / Math.sqrt(D), scale32 = fr(scale);
  const ref = new Float64Array(B * Hq * Sq * D), pt = new Float32Array(B * Hq * Sq * D);
  const s64 = new Float64Array(Skv), s32 = new Float32Array(Skv), keep = new Uint8Array(Skv);
  for (let b = 0; b < B; b++) for (let h = 0; h < Hq; h++) {
    const hk = Math.floor(h / (Hq / Hkv));
    const kBase = ((b * Hkv + hk) * Skv) * D;
    for (let i = 0; i < Sq; i++) {
      const qBase = ((b * Hq + h) * Sq + i) * D;
      let m64 = -Infinity, m32 = -Infinity, any = false;
      for (let j = 0; j < Skv; j++) {
        keep[j] = mask ? (mask(b, h, i, j) ? 1 : 0) : 1;
        if (!keep[j]) continue;
        any = true;
        let a64 = 0, a32 = 0;
        for (let t = 0; t < D; t++) {
          const p = x.q[qBase + t]! * x.k[kBase + j * D + t]!; // exact in f32 (bf16 × bf16)
          a64 += p;
          a32 = fr(a32 + p);
        }
        const raw64 = a64 * scale, raw32 = fr(a32 * scale32);
        s64[j] = score ? score(raw64, b, h, i, j) : raw64;
        s32[j] = score ? score(raw32, b, h, i, j) : raw32;
        onScore?.(raw64, s64[j]!, b, h, i, j);
        m64 = Math.max(m64, s64[j]!);
        m32 = Math.max(m32, s32[j]!);
      }
      const oBase = qBase;
      if (!any) continue; // fully masked row: 0 in both
      let l64 = 0, l32 = 0;
      for (let j = 0; j < Skv; j++) {
        if (!keep[j]) continue;
        s64[j] = Math.exp(s64[j]! - m64);
        l64 += s64[j]!;
        s32[j] = fr(Math.exp(fr(s32[j]! - m32)));
        l32 = fr(l32 + s32[j]!);
      }
      for (let t = 0; t < D; t++) {
        let o64 = 0, o32 = 0;
        for (let j = 0; j < Skv; j++) {
          if (!keep[j]) continue;
          const vv = x.v[kBase + j * D + t]!;
          o64 += (s64[j]! / l64) * vv;
          o32 = fr(o32 + fr(bf(fr(s32[j]! / l32)) * vv));
        }
        ref[oBase + t] = o64;
        pt[oBase + t] = bf(o32);
      }
    }
  }
  return { ref, pt };
}

const APPROX_REL: Partial<Record<Op, number>> = { tanh: 2 ** -11, exp: 2 ** -21, exp2: 2 ** -21, log: 2 ** -21, sigmoid: 2 ** -21 };


/** Evaluates a program with each approximated transcendental scaled by (1 + sign · its GPU error). */
function evalPerturbed(p: ModProgram, env: HostEnv, args: Record<string, number>, sign: number): number {
  const paramVals = resolveParams(p.params, env.params);
  const vals: number[] = [];
  p.nodes.forEach((n, i) => {
    let y = evalOp(n, n.args.map((k) => vals[k]!), env, paramVals, p, args);
    const e = APPROX_REL[n.op];
    if (e !== undefined && sign !== 0) y = fr(y * (1 + sign * e));
    vals[i] = y;
  });
  return vals[p.root]!;
}

/** The conditioning rule of the header for one score mod (probes every 53rd score it sees). */
function conditioning(mod: ScoreMod, env: HostEnv): Conditioning {
  const f = mod.toJs(env);
  let good = true, seen = 0;
  const self: Conditioning = {
    check(s, b, h, q, kv) { self.see(s, f(s, b, h, q, kv), b, h, q, kv); },
    see(s, out, b, h, q, kv) {
      if (!good) return;
      if (!Number.isFinite(out) || Math.abs(out) > 1e3) { good = false; return; }
      if (seen++ % 53 !== 0) return;
      const delta = 1e-3 * Math.max(1, Math.abs(s));
      if (!(Math.abs(f(s + delta, b, h, q, kv) - out) <= 30 * delta)) good = false;
      const args = { score: fr(s), b, h, q, kv };
      for (const sign of [1, -1]) if (!(Math.abs(evalPerturbed(mod.ir, env, args, sign) - out) <= 0.02)) good = false;
    },
    ok: () => good,
  };
  return self;
}

/** Cheap pre-screen on 300 synthetic points (scores of the size attention produces) before any input is built. */
function screen(rng: () => number, c: Conditioning, d: Dims): boolean {
  for (let i = 0; i < 300 && c.ok(); i++) {
    const s = (rng() - 0.5) * 8;
    const b = Math.floor(rng() * d.B), h = Math.floor(rng() * d.Hq), q = Math.floor(rng() * d.Sq), kv = Math.floor(rng() * d.Skv);
    c.check(s, b, h, q, kv);
  }
  return c.ok();
}

/** Poisons the allocator's cached block for an output of this size with NaN. */
function poison(numel: number): void {
  Tensor.fromHost(new Uint16Array(numel).fill(0x7fc0), [numel], 'bf16', gpu).dispose();
}

function maxAbsErr(got: ArrayLike<number>, ref: Float64Array): number {
  let e = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i]! - ref[i]!);
    if (!(d <= e)) e = Number.isNaN(d) ? Infinity : d;
  }
  return e;
}

interface CaseResult { gpu: number; cpu: number; pt: number; k: number; informative: boolean }

/** A score-mod probe: sees each unmasked f64 score and the mod's output; returns false to drop the case. */
interface Conditioning {
  see(s: number, out: number, b: number, h: number, q: number, kv: number): void;
  /** `see` with the mod's own output at this point. */
  check(s: number, b: number, h: number, q: number, kv: number): void;
  ok(): boolean;
}

async function runCase(rng: () => number, d: Dims, score: { mod: ScoreMod; env: HostEnv } | undefined,
  mask: { mod: MaskMod; env: HostEnv } | undefined, params: Record<string, number>, cond?: Conditioning): Promise<CaseResult | null> {
  const x = makeInputs(rng, d);
  const sfn = score ? score.mod.toJs(score.env) : undefined;
  const mfn = mask ? mask.mod.toJs(mask.env) : undefined;
  const { ref, pt } = references(x, d, sfn, mfn, cond && ((...a) => cond.see(...a)));
  if (cond && !cond.ok()) { for (const t of [x.tq, x.tk, x.tv]) t.dispose(); return null; }
  const bm = mask ? await createBlockMask(mask.mod, d.B, d.Hq, d.Sq, d.Skv, { device: 'cuda:0', params }) : undefined;
  const opts = { enableGQA: true, params, ...(bm ? { blockMask: bm } : {}), ...(score ? { scoreMod: score.mod } : {}) };
  poison(d.B * d.Hq * d.Sq * d.D);
  const g = await flexAttention(x.tq, x.tk, x.tv, opts);
  const c = await flexAttention(x.tq, x.tk, x.tv, { ...opts, backend: 'cpu' });
  const go = await g.out.toFloat32(), co = await c.out.toFloat32();
  for (const t of [x.tq, x.tk, x.tv, g.out, c.out]) t.dispose();
  bm?.dispose();
  const k = score?.mod.ir.nodes.some((n) => n.op === 'tanh') ? 3 : 2;
  return { gpu: maxAbsErr(go, ref), cpu: maxAbsErr(co, ref), pt: maxAbsErr(pt, ref), k, informative: ref.some((v) => v !== 0) };
}

function expectRule(r: CaseResult, what: string): void {
  // 1e-6: an absolute floor far below bf16 resolution, for cases whose outputs are all exactly 0
  expect(r.gpu, `${what}: cuda error ${r.gpu} vs PyTorch-way bf16 ${r.pt} (k=${r.k})`).toBeLessThanOrEqual(r.k * r.pt + 1e-6);
  expect(r.cpu, `${what}: cpu error ${r.cpu} vs PyTorch-way bf16 ${r.pt} (k=${r.k})`).toBeLessThanOrEqual(r.k * r.pt + 1e-6);
}

/** Captured tensors of random mods live on the GPU; the JS references read the same host data. */
const toDevice = (f: FakeTensor): Tensor => Tensor.fromHost(f.data, f.shape, f.dtype, gpu);

describeGpu('random mods: CUDA code generator vs CPU backend, held to the bf16 accuracy rule', () => {
  it('fixed mods on every shape: softcap (k=3), alibi + sliding window, causal', async () => {
    const rng = mulberry32(11);
    const slopes = hostTensor(Float32Array.from({ length: 6 }, (_, i) => 2 ** (-(i + 1))), [6], 'f32');
    for (const [i, d] of SHAPES.entries()) {
      const dev = Tensor.fromHost(slopes.data.slice(0, d.Hq), [d.Hq], 'f32', gpu);
      const hostSlopes = hostTensor(slopes.data.slice(0, d.Hq), [d.Hq], 'f32');
      const al = alibi(dev);
      const cases: [string, { mod: ScoreMod; env: HostEnv } | undefined, { mod: MaskMod; env: HostEnv } | undefined][] = [
        ['softcap(20) + causal', { mod: softcap(20), env: fakeEnv([]) }, { mod: causal(), env: fakeEnv([]) }],
        ['alibi + slidingWindow(40)', { mod: al, env: fakeEnv([hostSlopes]) }, { mod: slidingWindow(40), env: fakeEnv([]) }],
        ['no score mod, causal and window', undefined, { mod: andMasks(causal(), slidingWindow(17)), env: fakeEnv([]) }],
      ];
      for (const [name, s, m] of cases) {
        const r = (await runCase(rng, d, s, m, {}))!;
        expect(r.informative).toBe(true);
        expectRule(r, `shape ${i} ${name}`);
      }
      dev.dispose();
    }
  });

  it('random score mods and mask mods (captured device tensors, params)', async () => {
    const rng = mulberry32(2024);
    let tested = 0, skipped = 0, informative = 0, withTanh = 0, withTensors = 0;
    const wanted = 16;
    for (let attempt = 0; tested < wanted && attempt < 400; attempt++) {
      const d = SHAPES[tested % SHAPES.length]!;
      const useScore = tested % 4 !== 1, useMask = tested % 4 !== 0;
      const sm = useScore ? randomMod(rng, { kind: 'score', depth: 2 + (tested % 4), capture: toDevice }) : undefined;
      const mm = useMask ? randomMod(rng, { kind: 'mask', depth: 3 + (tested % 3), capture: toDevice }) : undefined;
      const release = (): void => { for (const t of [...(sm?.mod.tensors ?? []), ...(mm?.mod.tensors ?? [])]) (t as Tensor).dispose(); };
      if ((sm && !structurallyContinuous(sm.mod.ir)) || (mm && mm.mod.ir.nodes.some((n) => n.type === 'float'))) {
        skipped++; release(); continue;
      }
      const params = { ...(sm?.params ?? {}), ...(mm?.params ?? {}) };
      // Conditioning of the score mod: a quick screen on synthetic points, then the case's own
      // scores (every one bounded, every 53rd one probed for slope and approximation error).
      const cond = sm ? conditioning(sm.mod as ScoreMod, sm.env) : undefined;
      if (sm && cond && !screen(rng, cond, d)) { skipped++; release(); continue; }
      const r = await runCase(rng, d, sm ? { mod: sm.mod as ScoreMod, env: sm.env } : undefined,
        mm ? { mod: mm.mod as MaskMod, env: mm.env } : undefined, params, cond);
      release();
      if (!r) { skipped++; continue; }
      tested++;
      if (r.informative) informative++;
      if (r.k === 3) withTanh++;
      if ((sm?.mod.tensors.length ?? 0) + (mm?.mod.tensors.length ?? 0) > 0) withTensors++;
      expectRule(r, `random case ${tested} on ${JSON.stringify(d)}: score ${sm?.mod.toString() ?? '-'} mask ${mm?.mod.toString() ?? '-'}`);
    }
    console.log(`[gpu mods-diff] ${tested} random cases (${informative} informative, ${withTanh} with tanh, ${withTensors} with captured tensors), ${skipped} candidates skipped`);
    expect(tested).toBe(wanted);
    expect(informative).toBeGreaterThanOrEqual(wanted / 2);
    expect(withTensors).toBeGreaterThan(0);
  });

  it('float division is exact as on the CPU: log(score % score) masks every key (rows 0, LSE -inf), as the reliability soak found', async () => {
    // With --use_fast_math's approximate division, x / x could round below 1, so
    // x % x = x and log(x) gave NaN rows where the CPU backend gives fully masked ones.
    const sm = scoreMod(({ score, q }) => where(q.lt(5), score, score.mod(score).log()));
    const dims = [2, 4, 333, 64];
    const q = Tensor.randn(dims, 'bf16', { ...gpu, seed: 91 }), k = Tensor.randn(dims, 'bf16', { ...gpu, seed: 92 });
    const v = Tensor.randn(dims, 'bf16', { ...gpu, seed: 93 });
    for (const family of ['sm90', 'sm80'] as const) {
      const g = await flexAttention(q, k, v, { scoreMod: sm, returnLse: true, kernelOptions: { family } });
      const c = await flexAttention(q, k, v, { scoreMod: sm, returnLse: true, backend: 'cpu' });
      const [go, co, gl, cl] = await Promise.all([g.out.toFloat32(), c.out.toFloat32(), g.lse!.toFloat32(), c.lse!.toFloat32()]);
      let nanDiff = 0, zeroRows = 0, maxErr = 0;
      for (let i = 0; i < go.length; i++) {
        if (Number.isNaN(go[i]!) !== Number.isNaN(co[i]!)) nanDiff++;
        else if (!Number.isNaN(co[i]!)) maxErr = Math.max(maxErr, Math.abs(go[i]! - co[i]!));
      }
      for (let r = 0; r < cl.length; r++) {
        if (cl[r] === -Infinity) { zeroRows++; expect(gl[r]).toBe(-Infinity); }
      }
      expect(nanDiff).toBe(0);
      expect(zeroRows).toBe(2 * 4 * (333 - 5));
      expect(maxErr).toBeLessThan(3e-2);
      for (const t of [g.out, g.lse!, c.out, c.lse!]) t.dispose();
    }
    for (const t of [q, k, v]) t.dispose();
  });
});
