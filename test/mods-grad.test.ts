// Symbolic derivatives of score mods (lib/mods/grad.ts) on their own: the
// derivative programs, run by the f32 interpreter, against central
// differences of the mod evaluated in f64, at random points; the gradient
// rules PyTorch uses at ties; and the NoGradientError cases.
import { describe, expect, it } from 'vitest';
import {
  Expr, NoGradientError, ScoreMod, Tensor, alibi, composeScoreMods, logitClip, param, relativeBias, scoreMod, softcap, where,
} from '../lib/index.js';
import { bindHost, evaluateReference, type IrNode } from '../lib/mods/index.js';
import { differentiateScoreMod } from '../lib/mods/grad.js';
import { centralDiff, f64Mod, type F64Tensor } from './backward-reference.js';
import { randnArray, rng } from './reference.js';

const H = 3;
const slopes = Tensor.fromHost(Float32Array.from([0.5, -0.25, 0.125]), [H], 'f32', { device: 'cpu' });
const table = Tensor.fromHost(randnArray(H * 9, 5), [H, 9], 'f32', { device: 'cpu' });
const clip = Tensor.fromHost(Float32Array.from([0.7, 1.5, 2.5]), [H], 'f32', { device: 'cpu' });

const mods: Record<string, ScoreMod> = {
  softcap: softcap(1.5),
  alibi: alibi(slopes),
  relativeBias: relativeBias(table),
  logitClip: logitClip(clip),
  relu: scoreMod(({ score }) => where(score.gt(0), score, 0)),
  whereScale: scoreMod(({ score, q, kv }) => where(kv.le(q), score.mul(2), score.neg().exp())),
  abs: scoreMod(({ score }) => score.abs().mul(score)),
  expLog: scoreMod(({ score }) => score.exp().add(1).log().sub(score.exp2().mul(0.1))),
  sqrtSigmoid: scoreMod(({ score }) => score.mul(score).add(1).sqrt().add(score.sigmoid())),
  divMod: scoreMod(({ score }) => lift2(score).div(score.mul(score).add(2)).add(score.mod(0.75))),
  minMax: scoreMod(({ score, h }) => score.min(h.toFloat().add(0.5)).max(score.mul(0.3))),
  intMix: scoreMod(({ score, q, kv }) => score.mul(q.sub(kv).toFloat()).add(score.tanh().mul(q.add(1)))),
  param: scoreMod(({ score }) => score.mul(param('t')).tanh()),
  composed: composeScoreMods(relativeBias(table), alibi(slopes), softcap(2)),
};
function lift2(e: Expr): Expr { return e.mul(3).sub(1); }

function host(mod: ScoreMod): Promise<F64Tensor[]> {
  return Promise.all((mod.tensors as Tensor[]).map(async (t) => ({ shape: t.shape, data: Float64Array.from(await t.toFloat32()) })));
}
const program = (n: IrNode): ScoreMod => new ScoreMod('score', new Expr(n));
const params = { t: 0.8 };

describe('d scoreMod / d score', () => {
  it.each(Object.keys(mods))('%s: the derivative program matches central differences of the f64 mod', async (name) => {
    const mod = mods[name]!;
    const g = differentiateScoreMod(mod.expr.node, true, []);
    const dmod = program(g.dScore);
    const env = await bindHost(dmod, params);
    const f = f64Mod(mod, await host(mod), params);
    const r = rng(7);
    let checked = 0;
    for (let t = 0; t < 200; t++) {
      const s = Math.fround((r() - 0.5) * 8), h = Math.floor(r() * H), q = Math.floor(r() * 6), kv = Math.floor(r() * 6);
      const want = centralDiff((x) => f(x, 0, h, q, kv), s);
      const got = evaluateReference(dmod.ir, env, { score: s, b: 0, h, q, kv });
      // skip points within a step of a kink (where, min/max, abs, mod)
      const left = (f(s, 0, h, q, kv) - f(s - 1e-3, 0, h, q, kv)) / 1e-3, right = (f(s + 1e-3, 0, h, q, kv) - f(s, 0, h, q, kv)) / 1e-3;
      if (Math.abs(left - right) > 0.05 * (1 + Math.abs(left))) continue;
      expect(Math.abs(got - want), `${name} at s=${s} h=${h} q=${q} kv=${kv}`).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(want)));
      checked++;
    }
    expect(checked).toBeGreaterThan(150);
  });

  it('min/max give the selected operand the gradient and halve it on a tie (torch.minimum/maximum)', async () => {
    const m = scoreMod(({ score }) => score.max(0));
    const d = program(differentiateScoreMod(m.expr.node, true, []).dScore);
    const env = await bindHost(d);
    const at = (s: number) => evaluateReference(d.ir, env, { score: s, b: 0, h: 0, q: 0, kv: 0 });
    expect([at(2), at(-2), at(0)]).toEqual([1, 0, 0.5]);
    const both = program(differentiateScoreMod(scoreMod(({ score }) => score.min(score)).expr.node, true, []).dScore);
    expect(evaluateReference(both.ir, await bindHost(both), { score: 1.25, b: 0, h: 0, q: 0, kv: 0 })).toBe(1);
  });

  it('where sends the gradient to the chosen branch only', async () => {
    const m = scoreMod(({ score, q, kv }) => where(kv.gt(q), score.mul(5), score.mul(-3)));
    const d = program(differentiateScoreMod(m.expr.node, true, []).dScore);
    const env = await bindHost(d);
    expect(evaluateReference(d.ir, env, { score: 0.3, b: 0, h: 0, q: 1, kv: 2 })).toBe(5);
    expect(evaluateReference(d.ir, env, { score: 0.3, b: 0, h: 0, q: 2, kv: 1 })).toBe(-3);
  });

  it('a mod that does not read score has derivative 0', async () => {
    const m = scoreMod(({ q, kv }) => q.sub(kv).toFloat());
    const d = program(differentiateScoreMod(m.expr.node, true, []).dScore);
    expect(evaluateReference(d.ir, await bindHost(d), { score: 3, b: 0, h: 0, q: 4, kv: 1 })).toBe(0);
  });

  it.each([
    ['a comparison only', scoreMod(({ score }) => where(score.gt(0), 1, -1))],
    ['floorDiv', scoreMod(({ score }) => score.floorDiv(0.5))],
    ['toInt', scoreMod(({ score, h }) => score.toInt().add(h).toFloat())],
    ['an index', scoreMod(({ score }) => table.at(0, score.toInt()))],
  ])('score reaching the result through %s only is a NoGradientError', (_, m) => {
    let err: unknown;
    try { differentiateScoreMod(m.expr.node, true, []); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(NoGradientError);
    expect((err as NoGradientError).code).toBe('ERR_FLEXATTN_NO_GRADIENT');
    expect((err as NoGradientError).expression).toContain('score');
  });
});

describe('d scoreMod / d captured tensor', () => {
  it.each(['alibi', 'relativeBias', 'logitClip', 'composed'])('%s: each site\'s weight matches finite differences of the element it reads', async (name) => {
    const mod = mods[name]!;
    const tensors = await host(mod);
    const f = f64Mod(mod, tensors);
    const r = rng(11);
    for (const [slot, t] of (mod.tensors as Tensor[]).entries()) {
      const g = differentiateScoreMod(mod.expr.node, true, [t]);
      const sites = g.sites.get(t)!;
      expect(sites.length).toBeGreaterThan(0);
      const weights = sites.map((s) => program(s.weight));
      const envs = await Promise.all(weights.map((w) => bindHost(w)));
      const data = tensors[slot]!.data as Float64Array;
      const strides = t.shape.length === 2 ? [t.shape[1]!, 1] : [1];
      for (let n = 0; n < 60; n++) {
        const s = Math.fround((r() - 0.5) * 6), h = Math.floor(r() * H), q = Math.floor(r() * 6), kv = Math.floor(r() * 6);
        // the total derivative w.r.t. each element read = sum of the weights of the sites reading it
        const total = new Map<number, number>();
        sites.forEach((site, i) => {
          const idx = site.indices.map((ix) => evaluateReference(program({ op: 'toFloat', type: 'float', args: [ix] }).ir, { tensors: [] },
            { score: s, b: 0, h, q, kv }));
          const flat = idx.reduce((acc, x, d) => acc + Math.min(Math.max(x, 0), t.shape[d]! - 1) * strides[d]!, 0);
          total.set(flat, (total.get(flat) ?? 0) + evaluateReference(weights[i]!.ir, envs[i]!, { score: s, b: 0, h, q, kv }));
        });
        for (const [flat, got] of total) {
          const x0 = data[flat]!;
          const want = centralDiff((x) => { data[flat] = x; const y = f(s, 0, h, q, kv); data[flat] = x0; return y; }, x0);
          if (Math.abs(Math.abs(s) - clip.shape[0]!) < 1e-3) continue;
          expect(Math.abs(got - want), `${name} t${slot}[${flat}] s=${s} h=${h}`).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(want)));
        }
      }
    }
  });

  it('a tensor the mod does not read, or reads only as an index, is a NoGradientError', () => {
    const ids = Tensor.fromHost(Int32Array.from([0, 1, 2]), [3], 'i32', { device: 'cpu' });
    const m = scoreMod(({ score, h }) => score.add(table.at(h, ids.at(h))));
    expect(() => differentiateScoreMod(m.expr.node, true, [ids])).toThrow(NoGradientError);
    expect(() => differentiateScoreMod(m.expr.node, true, [slopes])).toThrow(/does not read this tensor/);
    const clipIdx = scoreMod(({ score }) => where(score.gt(clip.at(0)), score, 0));
    expect(() => differentiateScoreMod(clipIdx.expr.node, true, [clip])).toThrow(/only through comparisons/);
  });
});
