// NaN and ±Inf on the GPU kernels (sm90 wgmma and sm80 mma.sync families)
// against the CPU backend, whose semantics test/numerics.test.ts pins to
// PyTorch's. One input per shape carries a different plant in each (batch,
// kv head) group, so a single launch checks them all:
//   (b0, kv head 0): NaN in one element of v          (q heads 0, 1)
//   (b0, kv head 1): NaN in one element of k          (q heads 2, 3)
//   (b1, kv head 0): NaN in a q row of head 0, +Inf in a q row of head 1, -Inf in k
//   (b1, kv head 1): +Inf and -Inf in two elements of one v row
// Modes: SDPA plain, causal, bool mask and additive mask (both with fully
// masked rows), flexAttention with a BlockMask (fully masked rows and, at 1531,
// an empty q block) and a score mod that plants NaN at one (q, kv), attention()
// with a sliding window.
//
// What must match (the GPU guarantee): NaN wherever the CPU has NaN; a
// non-finite value wherever the CPU has ±Inf; fully masked rows exactly 0 with
// LSE -inf; LSE NaN / -inf / finite as on the CPU; every other value finite and
// within bf16 tolerance. One exception, the tile caveat (README, numerics): P·V
// multiplies the masked keys of a visited tile by p = 0, so a NaN/Inf in v may
// also show (0 · NaN) in that column of rows that do not attend the key but
// whose tiles cover it. Those positions may be NaN; rows whose tiles cannot
// cover the key (a causal or windowed row block that ends before it, with
// 128-row blocks: every kernel's BLOCK_M and BLOCK_N divide 128) must match.
import { expect, it } from 'vitest';
import {
  Tensor, scaledDotProductAttention, flexAttention, attention, createBlockMask, maskMod, scoreMod, param, where,
  deviceInfo, toBf16, toF16, type DType,
} from '../../lib/index.js';
import { describeGpu } from '../gpu-gate.js';
import { envSwitch } from '../../lib/env.js';
import { relError } from '../reference.js';
import { at, randomQkv } from '../numerics-fixtures.js';

const gpu = { device: 'cuda:0' as const };
const hopper = deviceInfo().gpus[0]?.computeCapability === '9.0';
const B = 2, Hq = 4, Hkv = 2, G = Hq / Hkv;
const WINDOW = 100;

/** Fills the allocator's cached block of this size with NaN so unwritten outputs show. */
function poison(numel: number, dtype: DType): void {
  Tensor.fromHost(new Uint16Array(numel).fill(0x7fc0), [numel], dtype, gpu).dispose();
}

interface Shape { D: number; Sq: number; Skv: number; dtype: 'bf16' | 'f16'; families: readonly ('sm90' | 'sm80')[] }

/** Where the plants are, as fractions of the lengths (all 0 when S = 1). */
function plants(Sq: number, Skv: number) {
  const f = (x: number, n: number) => Math.min(n - 1, Math.floor(x * n));
  return {
    jv: f(0.91, Skv), jk: f(0.45, Skv), jik: f(0.2, Skv), jiv: f(0.75, Skv),
    iq: f(0.6, Sq), iq2: f(0.3, Sq),
    nq: f(0.55, Sq), nk: f(0.25, Math.min(Sq, Skv)),   // score-mod NaN at (nq, nk), nk <= nq
  };
}

function planted(s: Shape, seed: number) {
  const { D, Sq, Skv } = s;
  const x = randomQkv(B, Hq, Hkv, Sq, Skv, D, seed);
  const p = plants(Sq, Skv);
  x.v[at(Hkv, Skv, D, 0, 0, p.jv, 3)] = NaN;
  x.k[at(Hkv, Skv, D, 0, 1, p.jk, 2)] = NaN;
  x.q[at(Hq, Sq, D, 1, 0, p.iq, 4)] = NaN;
  x.q[at(Hq, Sq, D, 1, 1, p.iq2, 0)] = Infinity;
  x.k[at(Hkv, Skv, D, 1, 0, p.jik, 1)] = -Infinity;
  x.v[at(Hkv, Skv, D, 1, 1, p.jiv, 5)] = Infinity;
  x.v[at(Hkv, Skv, D, 1, 1, p.jiv, 6)] = -Infinity;
  const mk = (a: Float32Array, H: number, S: number) =>
    Tensor.fromHost(s.dtype === 'bf16' ? toBf16(a) : toF16(a), [B, H, S, D], s.dtype, gpu);
  // NaN/Inf in v at (batch, kv head, key, column): the positions the tile caveat is about.
  const vPlants = [{ b: 0, hk: 0, j: p.jv, col: 3 }, { b: 1, hk: 1, j: p.jiv, col: 5 }, { b: 1, hk: 1, j: p.jiv, col: 6 }];
  return { q: mk(x.q, Hq, Sq), k: mk(x.k, Hkv, Skv), v: mk(x.v, Hkv, Skv), p, vPlants };
}

/** Rows fully masked by the masked modes: every 61st from 7, and q block [128, 256) at lengths from 384. */
const deadRange = (Sq: number) => (Sq >= 384 ? [128, 256] : [0, 0]);
const isDead = (i: number, Sq: number) => i % 61 === 7 || (i >= deadRange(Sq)[0]! && i < deadRange(Sq)[1]!);

type Visits = (i: number, j: number) => boolean;
const everyTile: Visits = () => true;
const blk = (x: number) => Math.floor(x / 128);
const causalTiles: Visits = (i, j) => blk(j) <= blk(i);
const windowTiles: Visits = (i, j) => blk(j) <= blk(i) && blk(j) >= blk(Math.max(0, 128 * blk(i) - WINDOW + 1));

interface Result { out: Float32Array; lse: Float32Array }
interface Mode { name: string; visits: Visits; run: (backend: 'cuda' | 'cpu', family: 'sm90' | 'sm80') => Promise<Result> }

async function read(r: { out: Tensor; lse?: Tensor }): Promise<Result> {
  const res = { out: await r.out.toFloat32(), lse: await r.lse!.toFloat32() };
  r.out.dispose();
  r.lse!.dispose();
  return res;
}

/** Runs fn with FLEXATTN_KERNEL_FAMILY set for `family` (SDPA and attention() pick their family from it). */
async function withFamily<T>(family: 'sm90' | 'sm80', fn: () => Promise<T>): Promise<T> {
  const saved = process.env.FLEXATTN_KERNEL_FAMILY;
  if (family === 'sm80') process.env.FLEXATTN_KERNEL_FAMILY = 'sm80';
  else delete process.env.FLEXATTN_KERNEL_FAMILY;
  try { return await fn(); } finally {
    if (saved === undefined) delete process.env.FLEXATTN_KERNEL_FAMILY;
    else process.env.FLEXATTN_KERNEL_FAMILY = saved;
  }
}

async function modes(s: Shape, q: Tensor, k: Tensor, v: Tensor, p: ReturnType<typeof plants>) {
  const { Sq, Skv } = s;
  const base = { enableGQA: true, returnLse: true } as const;
  const keepBits = new Uint8Array(Sq * Skv), bias = new Float32Array(Sq * Skv);
  const noise = randomQkv(1, 1, 1, 1, 1, Sq * Skv, 5).q;
  for (let i = 0; i < Sq; i++) for (let j = 0; j < Skv; j++) {
    const kept = !isDead(i, Sq) && (i * 7 + j * 3) % 11 !== 0;
    keepBits[i * Skv + j] = kept ? 1 : 0;
    bias[i * Skv + j] = kept ? 0.5 * noise[i * Skv + j]! : -Infinity;
  }
  const keepT = Tensor.fromHost(keepBits, [Sq, Skv], 'bool', gpu);
  const biasT = Tensor.fromHost(bias, [Sq, Skv], 'f32', gpu);
  const [d0, d1] = deadRange(Sq) as [number, number];
  const params = { d0, d1, nq: p.nq, nk: p.nk };
  const mm = maskMod(({ q: i, kv }) =>
    kv.le(i).and(i.mod(61).ne(7)).and(i.lt(param('d0', 'int')).or(i.ge(param('d1', 'int')))));
  const sm = scoreMod(({ score, q: i, kv }) => where(i.eq(param('nq', 'int')).and(kv.eq(param('nk', 'int'))), NaN, score));
  const bm = await createBlockMask(mm, 1, 1, Sq, Skv, { device: 'cuda:0', params });
  const list: Mode[] = [
    { name: 'sdpa', visits: everyTile, run: async (backend) => read(await scaledDotProductAttention(q, k, v, { ...base, backend })) },
    { name: 'sdpa causal', visits: causalTiles, run: async (backend) => read(await scaledDotProductAttention(q, k, v, { ...base, isCausal: true, backend })) },
    { name: 'sdpa bool mask', visits: everyTile, run: async (backend) => read(await scaledDotProductAttention(q, k, v, { ...base, attnMask: keepT, backend })) },
    { name: 'sdpa additive mask', visits: everyTile, run: async (backend) => read(await scaledDotProductAttention(q, k, v, { ...base, attnMask: biasT, backend })) },
    {
      name: 'flex blockMask + scoreMod', visits: causalTiles,
      run: async (backend, family) => read(await flexAttention(q, k, v,
        { ...base, blockMask: bm, scoreMod: sm, params, backend, ...(backend === 'cuda' ? { kernelOptions: { family } } : {}) })),
    },
    {
      name: 'attention flex window', visits: windowTiles,
      run: async (backend) => read(await attention(q, k, v, { ...base, impl: 'flex', slidingWindow: WINDOW, backend })),
    },
  ];
  return { list, dispose: () => { keepT.dispose(); biasT.dispose(); bm.dispose(); } };
}

/** Counts of what a comparison covered (so the suite can show it checked every kind). */
interface Seen { nanRows: number; zeroRows: number; infCells: number; maybe: number; finite: number }

/** The GPU guarantee against the CPU result (see the header). */
function expectGuaranteed(got: Result, want: Result, s: Shape, mayBeNaN: (row: number, col: number) => boolean,
  label: string, seen: Seen): void {
  const { D } = s;
  expect(got.out.length, label).toBe(want.out.length);
  const a: number[] = [], b: number[] = [];
  let bad = '';
  for (let r = 0; r < want.lse.length && !bad; r++) {
    const wl = want.lse[r]!, gl = got.lse[r]!;
    if (wl === -Infinity) {   // fully masked: exactly 0, LSE -inf
      seen.zeroRows++;
      if (gl !== -Infinity) bad = `lse[${r}] = ${gl}, want -inf (fully masked row)`;
      for (let d = 0; d < D && !bad; d++) if (got.out[r * D + d] !== 0) bad = `out[${r}, ${d}] = ${got.out[r * D + d]}, want 0 (fully masked row)`;
      continue;
    }
    if (Number.isNaN(wl)) {
      seen.nanRows++;
      if (!Number.isNaN(gl)) bad = `lse[${r}] = ${gl}, want NaN`;
    } else if (!(Math.abs(gl - wl) < 2e-2 * Math.max(1, Math.abs(wl)))) bad = `lse[${r}] = ${gl}, want ${wl}`;
    for (let d = 0; d < D && !bad; d++) {
      const w = want.out[r * D + d]!, g = got.out[r * D + d]!;
      if (Number.isNaN(w)) { if (!Number.isNaN(g)) bad = `out[${r}, ${d}] = ${g}, want NaN`; continue; }
      if (!Number.isFinite(w)) { seen.infCells++; if (Number.isFinite(g)) bad = `out[${r}, ${d}] = ${g}, want ${w} (non-finite)`; continue; }
      if (!Number.isFinite(g)) {
        if (Number.isNaN(g) && mayBeNaN(r, d)) { seen.maybe++; continue; }
        bad = `out[${r}, ${d}] = ${g}, want ${w}`;
        continue;
      }
      a.push(g);
      b.push(w);
    }
  }
  expect(bad, `${label}: ${bad}`).toBe('');
  seen.finite += a.length;
  if (a.length) expect(relError(a, b), label).toBeLessThan(1e-2);
}

const families: readonly ('sm90' | 'sm80')[] = hopper && envSwitch('FLEXATTN_KERNEL_FAMILY') !== 'sm80' ? ['sm90', 'sm80'] : ['sm80'];
const SHAPES: Shape[] = [];
for (const D of [64, 128, 96]) {
  for (const S of [1, 77, 1531]) SHAPES.push({ D, Sq: S, Skv: S, dtype: 'bf16', families: D === 96 ? ['sm80'] : families });
}
SHAPES.push({ D: 64, Sq: 77, Skv: 300, dtype: 'f16', families });   // cross-attention, f16 P

describeGpu('NaN and Inf on the GPU match the CPU backend (PyTorch semantics), sm90 and sm80', () => {
  const total: Seen = { nanRows: 0, zeroRows: 0, infCells: 0, maybe: 0, finite: 0 };
  for (const s of SHAPES) {
    it(`D=${s.D} Sq=${s.Sq} Skv=${s.Skv} ${s.dtype}: ${s.families.join(', ')}`, async () => {
      const { q, k, v, p, vPlants } = planted(s, s.D * 1000 + s.Sq);
      const m = await modes(s, q, k, v, p);
      for (const mode of m.list) {
        const want = await mode.run('cpu', 'sm80');
        // The tile caveat: (row, col) may be NaN where a v plant sits in that column of the row's
        // group and the row's tiles may cover its key.
        const mayBeNaN = (row: number, col: number) => {
          const i = row % s.Sq, h = Math.floor(row / s.Sq) % Hq, b = Math.floor(row / (s.Sq * Hq));
          return vPlants.some((t) => t.b === b && t.hk === Math.floor(h / G) && t.col === col && mode.visits(i, t.j));
        };
        for (const family of s.families) {
          poison(B * Hq * s.Sq * s.D, s.dtype);
          const got = await withFamily(family, () => mode.run('cuda', family));
          expectGuaranteed(got, want, s, mayBeNaN, `${family} ${mode.name}`, total);
        }
      }
      m.dispose();
      for (const t of [q, k, v]) t.dispose();
    });
  }
  it('the cases above covered NaN rows, fully masked rows, infinities and clean finite values', () => {
    expect(total.nanRows).toBeGreaterThan(100);
    expect(total.zeroRows).toBeGreaterThan(100);
    expect(total.infCells).toBeGreaterThan(100);
    expect(total.finite).toBeGreaterThan(1e6);
  });
});

// Where the caveat cannot apply, the guarantee is exact: a causal launch at 1531 whose NaN v key
// (1393) lies in kv block 10 leaves rows 0..1279 of its group finite in that column.
describeGpu('a NaN in v does not leak past the tiles that cover its key', () => {
  it('causal SDPA and a causal BlockMask, both families, D=128, S=1531', async () => {
    const s: Shape = { D: 128, Sq: 1531, Skv: 1531, dtype: 'bf16', families };
    const { q, k, v, p } = planted(s, 7);
    expect(blk(p.jv)).toBe(10);
    const bm = await createBlockMask(maskMod(({ q: i, kv }) => kv.le(i)), 1, 1, s.Sq, s.Skv, { device: 'cuda:0' });
    for (const family of families) {
      for (const run of [
        () => scaledDotProductAttention(q, k, v, { isCausal: true, enableGQA: true, returnLse: true }),
        () => flexAttention(q, k, v, { blockMask: bm, enableGQA: true, returnLse: true, kernelOptions: { family } }),
      ]) {
        poison(B * Hq * s.Sq * s.D, s.dtype);
        const r = await read(await withFamily(family, run));
        for (const h of [0, 1]) {
          for (let i = 0; i < s.Sq; i++) {
            const x = r.out[at(Hq, s.Sq, s.D, 0, h, i, 3)]!;
            if (i >= p.jv) expect(x, `${family} row ${i}: attends the NaN key`).toBeNaN();
            else if (i < 1280) expect(Number.isFinite(x), `${family} row ${i} = ${x}`).toBe(true);
          }
        }
      }
    }
    bm.dispose();
    for (const t of [q, k, v]) t.dispose();
  });
});
