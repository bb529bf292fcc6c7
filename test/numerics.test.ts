// NaN and ±Inf on the CPU backend follow PyTorch (see test/numerics-fixtures.ts
// for the rules): every op (SDPA causal / bool / additive mask, flexAttention
// with a BlockMask and a score mod, attention()) against an oracle written from
// those rules, element by element, LSE included, f32 and bf16, GQA.
import { describe, expect, it } from 'vitest';
import {
  Tensor, scaledDotProductAttention, flexAttention, attention, createBlockMask, causal, maskMod, scoreMod, where,
  toBf16, fromBf16, type MaskMod,
} from '../lib/index.js';
import { at, census, expectOracle, oracle, randomQkv, rowKind, type Problem } from './numerics-fixtures.js';

const cpu = { device: 'cpu' as const };
type DT = 'f32' | 'bf16';
const DTYPES: readonly DT[] = ['f32', 'bf16'];
const TOL: Record<DT, number> = { f32: 1e-5, bf16: 1e-2 };

interface Dims { B: number; Hq: number; Hkv: number; Sq: number; Skv: number; D: number }
const GQA: Dims = { B: 2, Hq: 4, Hkv: 2, Sq: 40, Skv: 40, D: 16 };

/** Random q, k, v with `plant` applied, as tensors of `dtype` and as the values the oracle sees. */
function setup(d: Dims, dtype: DT, seed: number, plant: (x: { q: Float32Array; k: Float32Array; v: Float32Array }) => void) {
  const raw = randomQkv(d.B, d.Hq, d.Hkv, d.Sq, d.Skv, d.D, seed);
  plant(raw);
  const round = (x: Float32Array) => (dtype === 'bf16' ? fromBf16(toBf16(x)) : x);
  const mk = (x: Float32Array, H: number, S: number) =>
    dtype === 'bf16' ? Tensor.fromHost(toBf16(x), [d.B, H, S, d.D], 'bf16', cpu) : Tensor.fromHost(x, [d.B, H, S, d.D], 'f32', cpu);
  const problem: Problem = { ...d, scale: 1 / Math.sqrt(d.D), q: round(raw.q), k: round(raw.k), v: round(raw.v) };
  return { q: mk(raw.q, d.Hq, d.Sq), k: mk(raw.k, d.Hkv, d.Skv), v: mk(raw.v, d.Hkv, d.Skv), problem };
}

const qAt = (d: Dims, b: number, h: number, s: number, e = 0) => at(d.Hq, d.Sq, d.D, b, h, s, e);
const kvAt = (d: Dims, b: number, hk: number, s: number, e = 0) => at(d.Hkv, d.Skv, d.D, b, hk, s, e);
const rowOf = (d: Dims, b: number, h: number, s: number) => (b * d.Hq + h) * d.Sq + s;

async function host(r: { out: Tensor; lse?: Tensor }) {
  return { out: await r.out.toFloat32(), ...(r.lse ? { lse: await r.lse.toFloat32() } : {}) };
}

const causalKeep = (_b: number, _h: number, i: number, j: number) => j <= i;

describe('NaN and Inf follow PyTorch on the CPU backend', () => {
  for (const dtype of DTYPES) {
    it(`${dtype}: NaN in one element of a q row makes that row NaN (LSE NaN), and only that row`, async () => {
      const d = { ...GQA, Sq: 37, Skv: 45 };
      const { q, k, v, problem } = setup(d, dtype, 11, (x) => { x.q[qAt(d, 1, 2, 5, 3)] = NaN; });
      const r = await host(await scaledDotProductAttention(q, k, v, { enableGQA: true, returnLse: true }));
      const want = oracle(problem);
      expectOracle(r, want, TOL[dtype], 'sdpa');
      expect(rowKind(r.out, rowOf(d, 1, 2, 5), d.D)).toBe('nan');
      expect(r.lse![rowOf(d, 1, 2, 5)]).toBeNaN();
      expect(census(want.out, want.lse, d.D)).toMatchObject({ nanRows: 1, finiteRows: d.B * d.Hq * d.Sq - 1 });
      // causal: the first row (one key) and a later one
      const d2 = GQA;
      const c = setup(d2, dtype, 12, (x) => { x.q[qAt(d2, 0, 1, 0, 0)] = NaN; x.q[qAt(d2, 1, 3, 21, 15)] = NaN; });
      const rc = await host(await scaledDotProductAttention(c.q, c.k, c.v, { isCausal: true, enableGQA: true, returnLse: true }));
      expectOracle(rc, oracle({ ...c.problem, keep: causalKeep }), TOL[dtype], 'sdpa causal');
      expect(rowKind(rc.out, rowOf(d2, 0, 1, 0), d2.D)).toBe('nan');
      expect(rc.lse![rowOf(d2, 0, 1, 0)]).toBeNaN();
      expect(rowKind(rc.out, rowOf(d2, 1, 3, 21), d2.D)).toBe('nan');
      expect(rowKind(rc.out, rowOf(d2, 1, 2, 21), d2.D)).toBe('finite');   // same kv head, other q head
    });

    it(`${dtype}: NaN in a k row poisons exactly the rows that attend to that key (causal SDPA and a causal BlockMask, GQA)`, async () => {
      const d = GQA;
      const { q, k, v, problem } = setup(d, dtype, 21, (x) => {
        x.k[kvAt(d, 0, 1, 0, 2)] = NaN;    // key 0 of kv head 1, batch 0: every row of q heads 2 and 3 sees it
        x.k[kvAt(d, 1, 0, 17, 5)] = NaN;   // key 17 of kv head 0, batch 1: rows >= 17 of q heads 0 and 1
      });
      const want = oracle({ ...problem, keep: causalKeep });
      const bm = await createBlockMask(causal(), 1, 1, d.Sq, d.Skv, { blockSize: 16, ...cpu });
      for (const [name, res] of [
        ['sdpa', await scaledDotProductAttention(q, k, v, { isCausal: true, enableGQA: true, returnLse: true })],
        ['flex', await flexAttention(q, k, v, { blockMask: bm, enableGQA: true, returnLse: true })],
      ] as const) {
        const r = await host(res);
        expectOracle(r, want, TOL[dtype], name);
        expect(rowKind(r.out, rowOf(d, 0, 2, 0), d.D), `${name}: row 0 sees only the NaN key`).toBe('nan');
        expect(r.lse![rowOf(d, 0, 2, 0)]).toBeNaN();
        expect(rowKind(r.out, rowOf(d, 0, 3, 39), d.D)).toBe('nan');
        expect(rowKind(r.out, rowOf(d, 0, 1, 39), d.D)).toBe('finite');  // other kv head
        expect(rowKind(r.out, rowOf(d, 1, 1, 16), d.D)).toBe('finite');  // before key 17: causal masks it
        expect(rowKind(r.out, rowOf(d, 1, 0, 17), d.D)).toBe('nan');
      }
      expect(census(want.out, want.lse, d.D).nanRows).toBe(2 * d.Sq + 2 * (d.Sq - 17));
    });

    it(`${dtype}: NaN in one element of v reaches that column of the attending rows only; a masked key never contributes`, async () => {
      const d = { ...GQA, Sq: 33, Skv: 41 };
      const { q, k, v, problem } = setup(d, dtype, 31, (x) => { x.v[kvAt(d, 0, 0, 9, 4)] = NaN; });
      // bool mask: key 9 hidden from even rows, plus random holes
      const keepBits = new Uint8Array(d.Sq * d.Skv);
      for (let i = 0; i < d.Sq; i++) for (let j = 0; j < d.Skv; j++) keepBits[i * d.Skv + j] = (j === 9 ? i % 2 === 1 : (i * 31 + j * 17) % 7 !== 0) ? 1 : 0;
      const keep = (_b: number, _h: number, i: number, j: number) => keepBits[i * d.Skv + j] === 1;
      const want = oracle({ ...problem, keep });
      const attnMask = Tensor.fromHost(keepBits, [d.Sq, d.Skv], 'bool', cpu);
      const mm = maskMod(({ q: i, kv }) => kv.ne(9).or(i.mod(2).eq(1)).and(i.mul(31).add(kv.mul(17)).mod(7).ne(0).or(kv.eq(9))));
      const bm = await createBlockMask(mm, 1, 1, d.Sq, d.Skv, { blockSize: 16, ...cpu });
      for (const [name, res] of [
        ['sdpa bool mask', await scaledDotProductAttention(q, k, v, { attnMask, enableGQA: true, returnLse: true })],
        ['flex maskMod', await flexAttention(q, k, v, { blockMask: bm, enableGQA: true, returnLse: true })],
      ] as const) {
        const r = await host(res);
        expectOracle(r, want, TOL[dtype], name);
        for (const h of [0, 1]) {
          expect(r.out[qAt(d, 0, h, 3, 4)], `${name}: row 3 attends key 9`).toBeNaN();
          expect(Number.isFinite(r.out[qAt(d, 0, h, 3, 5)]!)).toBe(true);
          expect(rowKind(r.out, rowOf(d, 0, h, 4), d.D), `${name}: row 4 does not`).toBe('finite');
          expect(Number.isFinite(r.lse![rowOf(d, 0, h, 3)]!)).toBe(true);   // v does not reach the LSE
        }
        expect(rowKind(r.out, rowOf(d, 0, 2, 3), d.D)).toBe('finite');     // other kv head
      }
      expect(census(want.out, want.lse, d.D)).toMatchObject({ nanRows: 0, nonFinite: 2 * Math.floor(d.Sq / 2) });
    });

    it(`${dtype}: a NaN from a score mod poisons its row (flexAttention, causal BlockMask + scoreMod)`, async () => {
      const d = GQA;
      const { q, k, v, problem } = setup(d, dtype, 41, () => {});
      const at00 = (i: number, j: number) => (i === 0 && j === 0) || (i === 20 && j === 7);
      const mods = [
        scoreMod(({ score, q: i, kv }) => where(i.eq(0).and(kv.eq(0)).or(i.eq(20).and(kv.eq(7))), NaN, score)),
        // computed, not a constant: inf - inf
        scoreMod(({ score, q: i, kv }) => where(i.eq(0).and(kv.eq(0)).or(i.eq(20).and(kv.eq(7))), score.add(Infinity).sub(Infinity), score)),
      ];
      const want = oracle({ ...problem, keep: causalKeep, mod: (s, _b, _h, i, j) => (at00(i, j) ? NaN : s) });
      const bm = await createBlockMask(causal(), 1, 1, d.Sq, d.Skv, { blockSize: 16, ...cpu });
      for (const sm of mods) {
        const r = await host(await flexAttention(q, k, v, { blockMask: bm, scoreMod: sm, enableGQA: true, returnLse: true }));
        expectOracle(r, want, TOL[dtype], 'flex');
        for (let b = 0; b < d.B; b++) for (let h = 0; h < d.Hq; h++) {
          expect(rowKind(r.out, rowOf(d, b, h, 0), d.D)).toBe('nan');   // its only key
          expect(r.lse![rowOf(d, b, h, 0)]).toBeNaN();
          expect(rowKind(r.out, rowOf(d, b, h, 20), d.D)).toBe('nan');
          expect(rowKind(r.out, rowOf(d, b, h, 19), d.D)).toBe('finite');
        }
      }
      expect(census(want.out, want.lse, d.D).nanRows).toBe(2 * d.B * d.Hq);
    });

    it(`${dtype}: ±Inf in q and k: a +Inf score makes its row NaN, a −Inf score is a masked key`, async () => {
      const d = GQA;
      const { q, k, v, problem } = setup(d, dtype, 51, (x) => {
        x.q[qAt(d, 0, 1, 3, 0)] = Infinity;
        x.q[qAt(d, 1, 3, 8, 1)] = -Infinity;
        x.k[kvAt(d, 1, 1, 12, 2)] = Infinity;   // rows of q heads 2, 3 (batch 1) at or after 12: ±Inf by the sign of q[.., 2]
      });
      for (const isCausal of [false, true]) {
        const want = oracle({ ...problem, ...(isCausal ? { keep: causalKeep } : {}) });
        const r = await host(await scaledDotProductAttention(q, k, v, { isCausal, enableGQA: true, returnLse: true }));
        expectOracle(r, want, TOL[dtype], `sdpa causal=${isCausal}`);
        expect(rowKind(r.out, rowOf(d, 0, 1, 3), d.D)).toBe('nan');
        expect(rowKind(r.out, rowOf(d, 1, 3, 8), d.D)).toBe('nan');
        // key 12 with +Inf: q[.., 2] > 0 gives +Inf (NaN row), q[.., 2] < 0 gives -Inf (the key drops out)
        let plus = 0, minus = 0;
        for (const h of [2, 3]) for (let i = isCausal ? 12 : 0; i < d.Sq; i++) {
          if (h === 3 && i === 8) continue;
          const sign = problem.q[qAt(d, 1, h, i, 2)]!;
          const kind = rowKind(r.out, rowOf(d, 1, h, i), d.D);
          if (sign > 0) { plus++; expect(kind).toBe('nan'); } else { minus++; expect(kind).toBe('finite'); }
        }
        expect(plus).toBeGreaterThan(3);
        expect(minus).toBeGreaterThan(3);
      }
      // the −Inf score equals masking the key: same row as with key 12 masked out
      const i = Array.from({ length: d.Sq }, (_, t) => t).find((t) => problem.q[qAt(d, 1, 2, t, 2)]! < 0)!;
      const masked = oracle({ ...problem, keep: (b, h, qi, j) => !(b === 1 && h === 2 && qi === i && j === 12) });
      const r = await host(await scaledDotProductAttention(q, k, v, { enableGQA: true }).then((out) => ({ out })));
      const row = rowOf(d, 1, 2, i);
      expectOracle({ out: r.out.slice(row * d.D, (row + 1) * d.D) },
        { out: masked.out.slice(row * d.D, (row + 1) * d.D), lse: new Float64Array(0) }, TOL[dtype], 'masked key 12');
    });

    it(`${dtype}: ±Inf in v gives ±Inf in that column of the attending rows`, async () => {
      const d = GQA;
      const { q, k, v, problem } = setup(d, dtype, 61, (x) => {
        x.v[kvAt(d, 0, 1, 5, 7)] = Infinity;
        x.v[kvAt(d, 1, 0, 6, 7)] = -Infinity;
      });
      const want = oracle({ ...problem, keep: causalKeep });
      const r = await host(await scaledDotProductAttention(q, k, v, { isCausal: true, enableGQA: true, returnLse: true }));
      expectOracle(r, want, TOL[dtype], 'sdpa causal');
      expect(r.out[qAt(d, 0, 2, 5, 7)]).toBe(Infinity);
      expect(r.out[qAt(d, 1, 1, 39, 7)]).toBe(-Infinity);
      expect(Number.isFinite(r.out[qAt(d, 0, 2, 5, 6)]!)).toBe(true);
      expect(rowKind(r.out, rowOf(d, 0, 2, 4), d.D)).toBe('finite');   // before the key
      expect(census(want.out, want.lse, d.D)).toMatchObject({ nanRows: 0, nonFinite: 2 * (d.Sq - 5) + 2 * (d.Sq - 6) });
    });

    it(`${dtype}: fully masked rows stay exactly 0 with LSE −∞ while NaN is elsewhere (bool, additive −∞, maskMod, empty q block)`, async () => {
      const d = { ...GQA, Sq: 48, Skv: 45 };
      const { q, k, v, problem } = setup(d, dtype, 71, (x) => {
        x.v[kvAt(d, 0, 0, 2, 0)] = NaN;        // every row of heads 0, 1 that sees key 2
        x.k[kvAt(d, 0, 1, 3, 1)] = NaN;        // every row of heads 2, 3 that sees key 3
        x.q[qAt(d, 1, 0, 4, 5)] = NaN;         // a fully masked row with NaN in q: still 0
        x.q[qAt(d, 1, 1, 7, 5)] = NaN;
      });
      const dead = (i: number) => i === 4 || i === 30 || (i >= 16 && i < 32);
      const keep = (_b: number, _h: number, i: number, j: number) => !dead(i) && j <= i + 3;
      const want = oracle({ ...problem, keep });
      const keepBits = new Uint8Array(d.Sq * d.Skv), bias = new Float32Array(d.Sq * d.Skv);
      for (let i = 0; i < d.Sq; i++) for (let j = 0; j < d.Skv; j++) {
        keepBits[i * d.Skv + j] = keep(0, 0, i, j) ? 1 : 0;
        bias[i * d.Skv + j] = keepBits[i * d.Skv + j] ? 0 : -Infinity;
      }
      const mm: MaskMod = maskMod(({ q: i, kv }) => i.ne(4).and(i.ne(30)).and(i.lt(16).or(i.ge(32))).and(kv.le(i.add(3))));
      const bm = await createBlockMask(mm, 1, 1, d.Sq, d.Skv, { blockSize: 16, ...cpu });
      expect(bm.host.kvNumBlocks[1]! + bm.host.fullKvNumBlocks[1]!).toBe(0);   // q block 1 lists no kv block at all
      const biasT = dtype === 'bf16' ? Tensor.fromHost(toBf16(bias), [d.Sq, d.Skv], 'bf16', cpu) : Tensor.fromHost(bias, [d.Sq, d.Skv], 'f32', cpu);
      for (const [name, res] of [
        ['sdpa bool', await scaledDotProductAttention(q, k, v, { attnMask: Tensor.fromHost(keepBits, [d.Sq, d.Skv], 'bool', cpu), enableGQA: true, returnLse: true })],
        ['flex', await flexAttention(q, k, v, { blockMask: bm, enableGQA: true, returnLse: true })],
      ] as const) {
        const r = await host(res);
        expectOracle(r, want, TOL[dtype], name);
        for (let b = 0; b < d.B; b++) for (let h = 0; h < d.Hq; h++) for (let i = 0; i < d.Sq; i++) {
          if (!dead(i)) continue;
          expect(rowKind(r.out, rowOf(d, b, h, i), d.D), `${name} (${b}, ${h}, ${i})`).toBe('zero');
          expect(r.lse![rowOf(d, b, h, i)]).toBe(-Infinity);
        }
        expect(rowKind(r.out, rowOf(d, 0, 2, 40), d.D)).toBe('nan');
        expect(rowKind(r.out, rowOf(d, 1, 1, 7), d.D)).toBe('nan');
      }
      const c = census(want.out, want.lse, d.D);
      expect(c.zeroRows).toBe(d.B * d.Hq * 17);
      expect(c.nanRows).toBeGreaterThan(d.Sq);
      // The same rows masked by an additive -inf: 0 where the scores are not NaN; a NaN
      // score (NaN q, NaN k) plus -inf stays NaN, as in PyTorch's SDPA.
      const biasR = dtype === 'bf16' ? fromBf16(toBf16(bias)) : bias;
      const wantAdd = oracle({ ...problem, bias: (_b, _h, i, j) => biasR[i * d.Skv + j]! });
      const r = await host(await scaledDotProductAttention(q, k, v, { attnMask: biasT, enableGQA: true, returnLse: true }));
      expectOracle(r, wantAdd, TOL[dtype], 'sdpa additive');
      for (let i = 16; i < 32; i++) {
        for (const h of [0, 1]) {
          expect(rowKind(r.out, rowOf(d, 0, h, i), d.D)).toBe('zero');   // NaN v at key 2 is not read
          expect(r.lse![rowOf(d, 0, h, i)]).toBe(-Infinity);
        }
        expect(rowKind(r.out, rowOf(d, 0, 2, i), d.D)).toBe('nan');      // NaN k at key 3: NaN + -inf
      }
      expect(rowKind(r.out, rowOf(d, 1, 0, 4), d.D)).toBe('nan');        // NaN q: NaN + -inf
      expect(rowKind(r.out, rowOf(d, 1, 2, 4), d.D)).toBe('zero');
    });

    it(`${dtype}: additive masks: −∞ drops a key whose v is NaN; a NaN score plus −∞ is still NaN (as in PyTorch)`, async () => {
      const d = { ...GQA, Sq: 30, Skv: 36 };
      const { q, k, v, problem } = setup(d, dtype, 81, (x) => {
        x.v[kvAt(d, 0, 0, 9, 4)] = NaN;
        x.k[kvAt(d, 0, 1, 13, 0)] = NaN;
      });
      const bias = new Float32Array(d.Sq * d.Skv);
      const br = randomQkv(1, 1, 1, 1, 1, d.Sq * d.Skv, 7).q;
      for (let i = 0; i < d.Sq; i++) for (let j = 0; j < d.Skv; j++) {
        bias[i * d.Skv + j] = (j === 9 && i % 2 === 1) || (j === 13 && i % 3 === 0) ? -Infinity : br[i * d.Skv + j]!;
      }
      const biasR = dtype === 'bf16' ? fromBf16(toBf16(bias)) : bias;
      const want = oracle({ ...problem, bias: (_b, _h, i, j) => biasR[i * d.Skv + j]! });
      const mask = dtype === 'bf16' ? Tensor.fromHost(toBf16(bias), [d.Sq, d.Skv], 'bf16', cpu) : Tensor.fromHost(bias, [d.Sq, d.Skv], 'f32', cpu);
      const r = await host(await scaledDotProductAttention(q, k, v, { attnMask: mask, enableGQA: true, returnLse: true }));
      expectOracle(r, want, TOL[dtype], 'sdpa additive');
      expect(rowKind(r.out, rowOf(d, 0, 0, 1), d.D)).toBe('finite');     // -inf at key 9: its NaN v is not read
      expect(r.out[qAt(d, 0, 0, 2, 4)]).toBeNaN();                        // key 9 attended
      expect(rowKind(r.out, rowOf(d, 0, 2, 0), d.D)).toBe('nan');         // NaN score + -inf = NaN
      expect(rowKind(r.out, rowOf(d, 0, 3, 1), d.D)).toBe('nan');
    });

    it(`${dtype}: attention() with impl sdpa and flex: NaN rows, NaN keys, a sliding window`, async () => {
      const d = GQA;
      const { q, k, v, problem } = setup(d, dtype, 91, (x) => {
        x.q[qAt(d, 1, 0, 6, 2)] = NaN;
        x.k[kvAt(d, 0, 1, 0, 3)] = NaN;   // only rows 0..4 of heads 2, 3 see key 0 through a window of 5
      });
      const window = 5;
      const keep = (_b: number, _h: number, i: number, j: number) => j <= i && i - j < window;
      const want = oracle({ ...problem, keep });
      for (const impl of ['sdpa', 'flex'] as const) {
        const r = await host(await attention(q, k, v, { impl, slidingWindow: window, enableGQA: true, returnLse: true }));
        expectOracle(r, want, TOL[dtype], `attention ${impl}`);
        expect(rowKind(r.out, rowOf(d, 1, 0, 6), d.D)).toBe('nan');
        expect(rowKind(r.out, rowOf(d, 0, 2, 0), d.D)).toBe('nan');
        expect(rowKind(r.out, rowOf(d, 0, 3, 4), d.D)).toBe('nan');
        expect(rowKind(r.out, rowOf(d, 0, 3, 5), d.D)).toBe('finite');   // key 0 left the window
      }
      expect(census(want.out, want.lse, d.D).nanRows).toBe(1 + 2 * window);
    });
  }
});
