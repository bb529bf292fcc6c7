// Score mods in the CPU backward: softcap, ALiBi, a relative-bias table, a
// per-head clip through min/max, `where`, params; gradients of captured
// tensors (gradFor) against finite differences of the f64 forward loss,
// element by element; determinism (same bits run after run).
import { describe, expect, it } from 'vitest';
import {
  Tensor, alibi, causal, composeScoreMods, logitClip, param, relativeBias, scoreMod, slidingWindow, softcap, where,
} from '../lib/index.js';
import { fdGradient, maxRelErr } from './backward-reference.js';
import { runFlexCase, type FlexCase } from './backward-harness.js';
import { randnArray } from './reference.js';
import { native } from '../lib/native.js';
import { hostView } from '../lib/cpu-backend.js';
import { backwardPrograms, scoreModGradient } from '../lib/backward/mod-programs.js';
import { bindHost } from '../lib/mods/index.js';

const TOL = 2e-5;
const H = 3;
const cpu = { device: 'cpu' } as const;

async function check(c: FlexCase, fdOf: Tensor[] = c.gradFor ?? []) {
  const r = await runFlexCase(c);
  expect(maxRelErr(r.dq, r.ref.dq), 'dq').toBeLessThanOrEqual(TOL);
  expect(maxRelErr(r.dk, r.ref.dk), 'dk').toBeLessThanOrEqual(TOL);
  expect(maxRelErr(r.dv, r.ref.dv), 'dv').toBeLessThanOrEqual(TOL);
  for (const [i, t] of fdOf.entries()) {
    const slot = c.scoreMod!.tensors.indexOf(t);
    const fd = fdGradient(r.lossNow, r.modTensors[slot]!.data as Float64Array);
    const got = r.dCaptured[i]!;
    expect(r.grads.dCaptured[i]!.shape).toEqual(t.shape);
    expect(r.grads.dCaptured[i]!.dtype).toBe(t.dtype);
    expect(maxRelErr(got, fd), `dCaptured[${i}]`).toBeLessThanOrEqual(t.dtype === 'f32' ? 1e-4 : 1e-2);
    expect(Math.max(...fd.map(Math.abs)), 'a gradient that is not zero').toBeGreaterThan(1e-3);
  }
  return r;
}

describe('score mods in the backward', () => {
  it('softcap (tanh) with a causal mask', () => check({ Hq: H, Sq: 33, D: 8, scoreMod: softcap(0.8), maskMod: causal() }));
  it('softcap through a param', () => check({ Sq: 17, D: 8, scoreMod: softcap(param('cap')), params: { cap: 0.6 } }));

  it('ALiBi with gradFor slopes (GQA)', async () => {
    const slopes = Tensor.fromHost(Float32Array.from([0.5, -0.25, 0.125, 0.3]), [4], 'f32', cpu);
    await check({ Hq: 4, Hkv: 2, Sq: 13, Skv: 11, D: 8, scoreMod: alibi(slopes), gradFor: [slopes] });
  });

  it('a relative-bias table [H, R] with gradFor (distances beyond the table clamp to its edges)', async () => {
    const table = Tensor.fromHost(randnArray(H * 9, 3), [H, 9], 'f32', cpu);
    await check({ Hq: H, Sq: 13, D: 8, scoreMod: relativeBias(table), maskMod: slidingWindow(11), blockSize: 4, gradFor: [table] });
  });

  it('a bf16 relative-bias table: its gradient in bf16', async () => {
    const table = Tensor.fromHost(randnArray(15, 4), [15], 'f32', cpu).to('bf16');
    await check({ Sq: 9, D: 8, scoreMod: relativeBias(table), gradFor: [table] });
  });

  it('a per-head clip via min/max (logitClip) with gradFor: clipped scores send their gradient to the bound', async () => {
    const bound = Tensor.fromHost(Float32Array.from([0.3, 0.9, 40]), [H], 'f32', cpu);
    const r = await check({ Hq: H, Sq: 11, D: 8, scale: 1, scoreMod: logitClip(bound), gradFor: [bound] });
    // head 2's bound is never reached: no gradient
    expect(r.dCaptured[0]![2]).toBe(0);
  });

  it('where: a per-head choice of branches', () => check({
    Hq: H, Sq: 15, D: 8,
    scoreMod: scoreMod(({ score, h, q, kv }) => where(h.eq(1).and(kv.gt(q.sub(3))), score.mul(score).mul(0.5), score.sigmoid().mul(2))),
  }));

  it('two captured tensors, composed mods, gradients of both', async () => {
    const table = Tensor.fromHost(randnArray(H * 7, 5), [H, 7], 'f32', cpu);
    const slopes = Tensor.fromHost(Float32Array.from([0.2, -0.1, 0.05]), [H], 'f32', cpu);
    await check({ Hq: H, Sq: 10, D: 8, scoreMod: composeScoreMods(relativeBias(table), alibi(slopes), softcap(1.5)), gradFor: [slopes, table] });
  });

  it('gradFor is optional: a mod with captured tensors gives dCaptured = []', async () => {
    const slopes = Tensor.fromHost(Float32Array.from([0.5, -0.25]), [2], 'f32', cpu);
    const r = await check({ Sq: 7, D: 8, scoreMod: alibi(slopes) });
    expect(r.grads.dCaptured).toEqual([]);
  });
});

describe('determinism', () => {
  it('the same inputs give the same bits, dq, dk, dv and dCaptured, run after run', async () => {
    const table = Tensor.fromHost(randnArray(4 * 31, 6), [4, 31], 'f32', cpu);
    const slopes = Tensor.fromHost(Float32Array.from([0.5, -0.25, 0.125, 0.3]), [4], 'f32', cpu);
    const c: FlexCase = {
      B: 2, Hq: 4, Hkv: 2, Sq: 77, D: 16, maskMod: causal(), blockSize: 16,
      scoreMod: composeScoreMods(relativeBias(table), alibi(slopes)), gradFor: [table, slopes],
    };
    const runs = [await runFlexCase(c), await runFlexCase(c), await runFlexCase(c)];
    const bits = (x: Float32Array) => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length));
    for (const r of runs.slice(1)) {
      expect(bits(r.dq)).toEqual(bits(runs[0]!.dq));
      expect(bits(r.dk)).toEqual(bits(runs[0]!.dk));
      expect(bits(r.dv)).toEqual(bits(runs[0]!.dv));
      expect(bits(r.dCaptured[0]!)).toEqual(bits(runs[0]!.dCaptured[0]!));
      expect(bits(r.dCaptured[1]!)).toEqual(bits(runs[0]!.dCaptured[1]!));
    }
    expect(maxRelErr(runs[0]!.dq, runs[0]!.ref.dq)).toBeLessThan(TOL);
  });

  it('the same bits for 1, 2 and 7 worker threads (the partition does not depend on the thread count)', async () => {
    const table = Tensor.fromHost(randnArray(2 * 61, 8), [2, 61], 'f32', cpu);
    const mod = composeScoreMods(relativeBias(table), softcap(2));
    const r = await runFlexCase({ Hq: 2, Sq: 31, D: 8, scoreMod: mod, gradFor: [table] });
    const grad = scoreModGradient(mod, [table], ['gradFor[0]']);
    const progs = backwardPrograms(mod, grad, (await bindHost(mod)).tensors, [table], {});
    const { q, k, v, out, lse, dOutT } = r.inputs;
    const [qv, kv, vv, ov, lv, gv] = await Promise.all([q, k, v, out, lse, dOutT].map(hostView));
    const run = (numThreads: number) => native().cpuAttentionBackward({
      q: qv!, k: kv!, v: vv!, out: ov!, lse: lv!, dOut: gv!, scale: 1 / Math.sqrt(8), isCausal: false, gradDtype: 2, numThreads,
      scoreMod: progs.scoreMod!, scoreGrad: progs.scoreGrad!, captured: progs.captured,
    });
    const runs = [await run(1), await run(2), await run(7)];
    const b = (x: Float32Array | Uint16Array) => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length));
    for (const x of runs) {
      expect(b(x.dq)).toEqual(b(runs[0]!.dq));
      expect(b(x.dk)).toEqual(b(runs[0]!.dk));
      expect(b(x.captured[0]!)).toEqual(b(runs[0]!.captured[0]!));
    }
    // and the same as the public op
    expect(b(runs[0]!.captured[0]!)).toEqual(b(r.dCaptured[0]!));
  });
});
