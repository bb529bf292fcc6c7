/**
 * native/cpu/mod_vm.cc against the JS interpreter, through the throwaway test
 * addon of mods-vm-harness.ts. Skips when no C++ compiler exists.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { NativeModProgram } from '../lib/native.js';
import {
  alibi, andMasks, causal, composeScoreMods, documentMask, encodeProgram, imageBlocks, logitClip, relativeBias, slidingWindow,
  softcap, type MaskMod, type ScoreMod,
} from '../lib/mods/index.js';
import { fakeEnv, hostTensor, mulberry32, randomMod, randomTensor } from './random-mods.js';
import { loadModVm, vmSkipReason, type VmEval } from './mods-vm-harness.js';

let evalVm: VmEval | undefined;

const suite = vmSkipReason === null ? describe : describe.skip;
if (vmSkipReason !== null) console.log(`[mods-vm] skipped: ${vmSkipReason}`);

suite('native mod VM (mod_vm.cc)', () => {
  beforeAll(() => { evalVm = loadModVm(); }, 120_000);

  function points(rng: () => number, n: number): Float64Array {
    const p = new Float64Array(5 * n);
    for (let i = 0; i < n; i++) {
      p[5 * i] = Math.fround((rng() - 0.5) * 50);
      p[5 * i + 1] = Math.floor(rng() * 4);
      p[5 * i + 2] = Math.floor(rng() * 8);
      p[5 * i + 3] = Math.floor((rng() - 0.2) * 300);
      p[5 * i + 4] = Math.floor((rng() - 0.2) * 300);
    }
    return p;
  }

  function compare(mod: ScoreMod | MaskMod, env: ReturnType<typeof fakeEnv>, rng: () => number, n = 200): number {
    const prog = encodeProgram(mod, env.tensors, env.params as Record<string, number>);
    const pts = points(rng, n);
    const got = evalVm!(prog, pts);
    const f = mod.toJs(env) as (...a: number[]) => number | boolean;
    let mismatches = 0;
    for (let i = 0; i < n; i++) {
      const [s, b, h, q, kv] = Array.from(pts.subarray(5 * i, 5 * i + 5)) as [number, number, number, number, number];
      const want = mod.kind === 'mask' ? (f(b, h, q, kv) ? 1 : 0) : (f(s, b, h, q, kv) as number);
      const g = got[i]!;
      const ok = Object.is(g, want) || (Number.isNaN(g) && Number.isNaN(want)) || (g === 0 && want === 0);
      if (!ok) {
        mismatches++;
        if (mod.kind === 'mask' || Math.abs(g - want) > 1e-6 * Math.abs(want)) {
          throw new Error(`VM mismatch for ${mod.toString()}\nat ${[s, b, h, q, kv]}: vm ${g} js ${want}`);
        }
      }
    }
    return mismatches;
  }

  it('built-ins match the JS interpreter', () => {
    const rng = mulberry32(5);
    const ids = hostTensor(Int32Array.from({ length: 2 * 300 }, (_, i) => Math.floor((i % 300) / 37)), [2, 300], 'i32');
    const slopes = randomTensor(rng, 'bf16', [8]);
    const tab = randomTensor(rng, 'f16', [8, 31]);
    const mx = randomTensor(rng, 'f32', [8]);
    const mods: (ScoreMod | MaskMod)[] = [causal(), slidingWindow(16, { lookahead: 2 }), documentMask(ids),
      andMasks(causal(), documentMask(ids, { causal: false })), imageBlocks([{ start: 10, length: 40 }]),
      alibi(slopes), softcap(20), logitClip(mx), relativeBias(tab), composeScoreMods(alibi(slopes), softcap(5))];
    for (const m of mods) expect(compare(m, fakeEnv(m.tensors), rng, 2000)).toBe(0);
  });

  it('300 random programs match the JS interpreter (ints exactly, floats within f32 rounding)', () => {
    const rng = mulberry32(4242);
    let mism = 0;
    for (let n = 0; n < 300; n++) {
      const r = randomMod(rng, { kind: n % 2 ? 'score' : 'mask', depth: 1 + (n % 7) });
      mism += compare(r.mod, r.env, rng, 100);
    }
    expect(mism).toBeLessThan(20); // last-bit differences of libm vs V8 transcendentals (observed: 3 of 15000)
  });

  it('rejects malformed programs without crashing', () => {
    const m = documentMask(hostTensor(new Int32Array(8), [2, 4], 'i32'));
    const good = encodeProgram(m, fakeEnv(m.tensors).tensors);
    const bad = (mut: (p: { code: Int32Array; consts: Float64Array; params: Float64Array; tensors: NativeModProgram['tensors'] }) => void): void => {
      const p = { code: good.code.slice(), consts: good.consts.slice(), params: good.params.slice(),
        tensors: good.tensors.map((t) => ({ ...t, shape: [...t.shape], strides: [...t.strides] })) };
      mut(p);
      expect(() => evalVm!(p as NativeModProgram, new Float64Array(5))).toThrow(/mod program/);
    };
    bad((p) => { p.code[0] = 0; });
    bad((p) => { p.code[2] = 3; });
    bad((p) => { p.code = p.code.slice(0, p.code.length - 1); });
    bad((p) => { p.code[4 + 1] = 9999; });
    bad((p) => { p.tensors[0]!.shape = [4, 4]; });
    bad((p) => { p.tensors[0]!.shape = [2]; p.tensors[0]!.strides = [1]; });
    bad((p) => { p.tensors[0]!.dtype = 9; });
    bad((p) => { p.tensors[0]!.strides = [4, -1]; });
    bad((p) => { (p as { consts: unknown }).consts = [1, 2]; });
    bad((p) => { p.code[p.code.length - 2] = 77; });
    expect(Array.from(evalVm!(good, Float64Array.from([0, 1, 0, 3, 2])))).toEqual([1]);
  });
});
