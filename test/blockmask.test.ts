import { describe, expect, it } from 'vitest';
import { BlockMask, createBlockMask } from '../lib/blockmask.js';
import { classifyAnalytic, type Pred } from '../lib/blockmask/analytic.js';
import { FULL, PARTIAL } from '../lib/blockmask/layout.js';
import { InvalidArgumentError, ShapeError } from '../lib/errors.js';
import {
  andMasks, causal, documentMask, fullMask, imageBlocks, notMask, orMasks, prefixLM, slidingWindow, softcap,
} from '../lib/mods/builtins.js';
import { maskMod, type MaskMod } from '../lib/mods/ir.js';
import { bindHost } from '../lib/mods/interpret.js';
import { Tensor } from '../lib/tensor.js';

const cpu = { device: 'cpu' as const };

/** Deterministic PRNG. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Arrays = Record<string, Int32Array>;

/**
 * PyTorch's algorithm, literally: materialise the mask, pad with False to a
 * multiple of the block size, sum per block, then stable descending argsort.
 */
function torchReference(fn: (b: number, h: number, q: number, kv: number) => boolean,
  B: number, H: number, qLen: number, kvLen: number, bq: number, bkv: number): Arrays {
  const QB = Math.ceil(qLen / bq), KVB = Math.ceil(kvLen / bkv);
  const partial = new Uint8Array(B * H * QB * KVB), full = new Uint8Array(B * H * QB * KVB);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
    const sums = new Int32Array(QB * KVB);
    for (let q = 0; q < qLen; q++) for (let kv = 0; kv < kvLen; kv++) {
      if (fn(b, h, q, kv)) sums[Math.floor(q / bq) * KVB + Math.floor(kv / bkv)]! += 1;
    }
    for (let i = 0; i < QB * KVB; i++) {
      const o = (b * H + h) * QB * KVB + i;
      full[o] = sums[i] === bq * bkv ? 1 : 0;
      partial[o] = sums[i]! > 0 && sums[i]! < bq * bkv ? 1 : 0;
    }
  }
  const ordered = (dense: Uint8Array, G: number, rows: number, cols: number, transpose: boolean) => {
    const R = transpose ? cols : rows, C = transpose ? rows : cols;
    const num = new Int32Array(G * R), idx = new Int32Array(G * R * C);
    for (let g = 0; g < G; g++) for (let r = 0; r < R; r++) {
      const at = (c: number) => dense[g * rows * cols + (transpose ? c * cols + r : r * cols + c)]!;
      const order = [...Array(C).keys()].sort((x, y) => (at(y) - at(x)) || (x - y));
      order.forEach((c, j) => { idx[(g * R + r) * C + j] = c; });
      num[g * R + r] = order.filter((c) => at(c) === 1).length;
    }
    return { num, idx };
  };
  const G = B * H;
  const kv = ordered(partial, G, QB, KVB, false), fkv = ordered(full, G, QB, KVB, false);
  const q = ordered(partial, G, QB, KVB, true), fq = ordered(full, G, QB, KVB, true);
  return {
    kvNumBlocks: kv.num, kvIndices: kv.idx, fullKvNumBlocks: fkv.num, fullKvIndices: fkv.idx,
    qNumBlocks: q.num, qIndices: q.idx, fullQNumBlocks: fq.num, fullQIndices: fq.idx,
  };
}

const KEYS = ['kvNumBlocks', 'kvIndices', 'fullKvNumBlocks', 'fullKvIndices', 'qNumBlocks', 'qIndices', 'fullQNumBlocks', 'fullQIndices'] as const;

function expectSameArrays(bm: BlockMask, ref: Arrays, label: string): void {
  for (const k of KEYS) {
    expect(Array.from(bm.host[k]), `${label}: ${k}`).toEqual(Array.from(ref[k]!));
  }
}

async function refFor(mod: MaskMod, B: number, H: number, qLen: number, kvLen: number, bq: number, bkv: number): Promise<Arrays> {
  const fn = mod.toJs(await bindHost(mod));
  return torchReference(fn, B, H, qLen, kvLen, bq, bkv);
}

const builtins: [string, () => MaskMod][] = [
  ['causal', () => causal()],
  ['full', () => fullMask()],
  ['sliding 37', () => slidingWindow(37)],
  ['sliding 50 lookahead 20', () => slidingWindow(50, { lookahead: 20 })],
  ['sliding 1', () => slidingWindow(1)],
  ['prefix 45', () => prefixLM(45)],
  ['prefix 0', () => prefixLM(0)],
  ['causal and sliding 40', () => andMasks(causal(), slidingWindow(40))],
  ['prefix or sliding', () => orMasks(prefixLM(20), slidingWindow(30, { lookahead: 9 }))],
  ['not causal', () => notMask(causal())],
  ['not sliding and causal', () => andMasks(notMask(slidingWindow(33)), causal())],
  ['xor-like', () => orMasks(andMasks(causal(), notMask(slidingWindow(17))), andMasks(notMask(causal()), slidingWindow(60, { lookahead: 25 })))],
  ['image boxes', () => imageBlocks([{ start: 10, length: 30 }, { start: 70, length: 47 }])],
  ['empty or', () => orMasks()],
];

describe('analytic classification matches PyTorch\'s algorithm', () => {
  const sizes: [number, number][] = [[100, 100], [257, 131], [64, 200], [1, 1], [129, 33]];
  const blocks: (number | [number, number])[] = [16, 32, [16, 32], 128];
  for (const [name, make] of builtins) {
    it(name, async () => {
      const mod = make();
      expect(mod.analytic, `${name} has an analytic descriptor`).toBeDefined();
      for (const [qLen, kvLen] of sizes) {
        for (const bs of blocks) {
          const [bq, bkv] = typeof bs === 'number' ? [bs, bs] : bs;
          const ref = await refFor(mod, 1, 1, qLen, kvLen, bq, bkv);
          const a = await createBlockMask(mod, 1, 1, qLen, kvLen, { blockSize: bs, ...cpu, path: 'analytic' });
          expect(a.method).toBe('analytic');
          expectSameArrays(a, ref, `${name} analytic ${qLen}x${kvLen} bs ${bs}`);
          const c = await createBlockMask(mod, 1, 1, qLen, kvLen, { blockSize: bs, ...cpu, path: 'cpu' });
          expect(c.method).toBe('cpu');
          expectSameArrays(c, ref, `${name} cpu ${qLen}x${kvLen} bs ${bs}`);
        }
      }
    });
  }

  it('random predicate trees (analytic vs point evaluation)', () => {
    const r = rng(7);
    const atom = (): Pred => {
      const k = Math.floor(r() * 4);
      if (k === 0) return { t: 'band', lo: Math.floor(r() * 60) - 30, hi: r() < 0.3 ? Infinity : Math.floor(r() * 80) - 10 };
      if (k === 1) return { t: 'kvLt', n: Math.floor(r() * 120) };
      if (k === 2) return { t: 'qLt', n: Math.floor(r() * 120) };
      const q0 = Math.floor(r() * 100), kv0 = Math.floor(r() * 100);
      return { t: 'box', q0, q1: q0 + Math.floor(r() * 50), kv0, kv1: kv0 + Math.floor(r() * 50) };
    };
    const tree = (d: number): Pred => {
      if (d === 0 || r() < 0.3) return atom();
      const k = Math.floor(r() * 3);
      if (k === 2) return { t: 'not', c: tree(d - 1) };
      return { t: k === 0 ? 'and' : 'or', c: [tree(d - 1), tree(d - 1), ...(r() < 0.3 ? [tree(d - 1)] : [])] };
    };
    const ev = (p: Pred, q: number, kv: number): boolean => {
      switch (p.t) {
        case 'band': return q - kv >= p.lo && q - kv <= p.hi;
        case 'kvLt': return kv < p.n;
        case 'qLt': return q < p.n;
        case 'box': return q >= p.q0 && q < p.q1 && kv >= p.kv0 && kv < p.kv1;
        case 'const': return p.value;
        case 'and': return p.c.every((c) => ev(c, q, kv));
        case 'or': return p.c.some((c) => ev(c, q, kv));
        case 'not': return !ev(p.c, q, kv);
      }
    };
    for (let i = 0; i < 60; i++) {
      const p = tree(3);
      const qLen = 1 + Math.floor(r() * 130), kvLen = 1 + Math.floor(r() * 130);
      const bq = 2 ** (2 + Math.floor(r() * 4)), bkv = 2 ** (2 + Math.floor(r() * 4));
      const got = classifyAnalytic(p, qLen, kvLen, bq, bkv);
      const ref = torchReference((_b, _h, q, kv) => ev(p, q, kv), 1, 1, qLen, kvLen, bq, bkv);
      const KVB = Math.ceil(kvLen / bkv);
      const cls = new Uint8Array(got.length);
      for (let row = 0; row < ref.kvNumBlocks!.length; row++) {
        for (let j = 0; j < ref.kvNumBlocks![row]!; j++) cls[row * KVB + ref.kvIndices![row * KVB + j]!] = PARTIAL;
        for (let j = 0; j < ref.fullKvNumBlocks![row]!; j++) cls[row * KVB + ref.fullKvIndices![row * KVB + j]!] = FULL;
      }
      expect(Array.from(got), JSON.stringify({ p, qLen, kvLen, bq, bkv })).toEqual(Array.from(cls));
    }
  });

  it('B and H broadcast: arrays repeat per (b, h)', async () => {
    const a = await createBlockMask(causal(), 2, 3, 100, 90, { blockSize: 16, ...cpu });
    expect(a.shape).toEqual([2, 3, 100, 90]);
    expect(a.kvNumBlocks.shape).toEqual([2, 3, 7]);
    expect(a.kvIndices.shape).toEqual([2, 3, 7, 6]);
    expect(a.qIndices.shape).toEqual([2, 3, 6, 7]);
    const ref = await refFor(causal(), 2, 3, 100, 90, 16, 16);
    expectSameArrays(a, ref, 'causal 2x3');
  });

  it('sliding window at S=131072 stays O(blocks)', async () => {
    const t0 = Date.now();
    const bm = await createBlockMask(andMasks(causal(), slidingWindow(1024)), 1, 1, 131072, 131072, cpu);
    expect(bm.method).toBe('analytic');
    expect(bm.numQBlocks).toBe(1024);
    // Row r: full blocks r-7..r-1 (when they exist), partial: the diagonal and the block 8 to the left.
    expect(bm.host.fullKvNumBlocks[500]).toBe(7);
    expect(bm.host.kvNumBlocks[500]).toBe(2);
    expect(Array.from(bm.host.kvIndices.subarray(500 * 1024, 500 * 1024 + 2))).toEqual([492, 500]);
    expect(Date.now() - t0).toBeLessThan(5000);
  });
});

describe('data-dependent masks (host evaluator)', () => {
  it('document mask from random doc ids, causal and not, per batch', async () => {
    const r = rng(11);
    const B = 2, S = 203;
    const ids = new Int32Array(B * S);
    for (let b = 0; b < B; b++) {
      let d = 0;
      for (let i = 0; i < S; i++) { if (r() < 0.03) d++; ids[b * S + i] = d; }
    }
    const docIds = Tensor.fromHost(ids, [B, S], 'i32', cpu);
    for (const isCausal of [true, false]) {
      const mod = documentMask(docIds, { causal: isCausal });
      expect(mod.analytic).toBeUndefined();
      for (const bs of [16, 32, [32, 16] as [number, number]]) {
        const [bq, bkv] = typeof bs === 'number' ? [bs, bs] : bs;
        const bm = await createBlockMask(mod, B, 2, S, S, { blockSize: bs, ...cpu });
        expect(bm.method).toBe('cpu');
        expectSameArrays(bm, await refFor(mod, B, 2, S, S, bq, bkv), `doc causal=${isCausal} bs ${bs}`);
      }
    }
  });

  it('user mask reading h and a runtime param', async () => {
    const { param } = await import('../lib/mods/ir.js');
    const mod = maskMod(({ h, q, kv }) => q.sub(kv).mod(h.add(2)).eq(0).or(kv.lt(param('n', 'int'))));
    const bm = await createBlockMask(mod, 1, 3, 77, 91, { blockSize: 8, ...cpu, params: { n: 10 } });
    const fn = mod.toJs(await bindHost(mod, { n: 10 }));
    expectSameArrays(bm, torchReference(fn, 1, 3, 77, 91, 8, 8), 'user mask');
  });
});

describe('position bounds read from the IR (envelope pre-classification)', () => {
  it('hand-written position-only masks: decided tiles agree with brute force', async () => {
    const { preclassify } = await import('../lib/blockmask/envelope.js');
    const mods: MaskMod[] = [
      maskMod(({ q, kv }) => kv.le(q)),
      maskMod(({ q, kv }) => q.sub(kv).lt(37).and(kv.le(q))),
      maskMod(({ q, kv }) => kv.add(5).ge(q).or(q.lt(20))),
      maskMod(({ q, kv }) => q.sub(kv).ne(3)),
      maskMod(({ q, kv }) => kv.sub(q).le(-2).not()),
      maskMod(({ q, kv }) => q.eq(kv.add(1)).or(kv.gt(90))),
      maskMod(({ q, kv }) => q.neg().add(kv).gt(-10).and(kv.sub(7).lt(q))),
      maskMod(({ q, kv }) => kv.ge(q.add(q).sub(q))),
    ];
    for (const [i, mod] of mods.entries()) {
      for (const bs of [8, 16, [16, 32] as [number, number]]) {
        const [bq, bkv] = typeof bs === 'number' ? [bs, bs] : bs;
        const bm = await createBlockMask(mod, 1, 1, 111, 97, { blockSize: bs, ...cpu });
        expectSameArrays(bm, await refFor(mod, 1, 1, 111, 97, bq, bkv), `mask ${i} bs ${bs}`);
      }
    }
    // Exact position comparisons leave only the partial tiles to evaluate.
    const pre = preclassify(mods[1]!, 1024, 1024, 64, 64)!;
    expect(pre.undecided.length).toBe(16 + 15); // the diagonal and the sub-diagonal
    expect(preclassify(maskMod(({ b, q }) => b.lt(q)), 100, 100, 16, 16)).toBeNull();
  });

  it('document mask: the causal part decides the upper triangle', async () => {
    const { preclassify } = await import('../lib/blockmask/envelope.js');
    const docIds = Tensor.fromHost(new Int32Array(256), [256], 'i32', cpu);
    const pre = preclassify(documentMask(docIds), 256, 256, 32, 32)!;
    expect(pre.undecided.length).toBe(8 * 9 / 2);
    expect(preclassify(documentMask(docIds, { causal: false }), 256, 256, 32, 32)).toBeNull();
  });

  it('random masks (tensors, params, where, floats) match PyTorch\'s algorithm', async () => {
    const { mulberry32, randomMod } = await import('./random-mods.js');
    const r = mulberry32(42);
    for (let i = 0; i < 60; i++) {
      const rm = randomMod(r, { kind: 'mask', depth: 4 });
      const mod = rm.mod as MaskMod;
      const qLen = 1 + Math.floor(r() * 70), kvLen = 1 + Math.floor(r() * 70);
      const bs = 2 ** (1 + Math.floor(r() * 4));
      const fn = mod.toJs(rm.env);
      const ref = torchReference(fn, 2, 2, qLen, kvLen, bs, bs);
      for (const prefilter of [true, false]) {
        const bm = await createBlockMask(mod, 2, 2, qLen, kvLen, { blockSize: bs, ...cpu, params: rm.params, prefilter });
        expectSameArrays(bm, ref, `random ${i} prefilter ${prefilter}: ${mod.toString()}`);
      }
    }
  });
});

describe('BlockMask methods', () => {
  it('toDense / toString / sparsity', async () => {
    const bm = await createBlockMask(causal(), 1, 1, 512, 512, cpu);
    expect(bm.sparsity()).toBeCloseTo(100 * (1 - 10 / 16), 10); // 4 partial + 6 full of 16
    const dense = await bm.toDense().toHost();
    expect(Array.from(dense)).toEqual([1, 0, 0, 0, 2, 1, 0, 0, 2, 2, 1, 0, 2, 2, 2, 1]);
    expect(bm.toString()).toBe(
      'BlockMask(shape=(1, 1, 512, 512), sparsity=37.50%, \n(0, 0)\n░░      \n██░░    \n████░░  \n██████░░\n)');
    // Non-multiple lengths: the tail row/column can't be full; every position is in a listed block.
    const odd = await createBlockMask(fullMask(), 1, 1, 130, 130, cpu);
    expect(Array.from(await odd.toDense().toHost())).toEqual([2, 1, 1, 1]);
    expect(odd.sparsity()).toBe(0);
  });

  it('sparsity counts blocks by their extent inside the sequences (masks shorter than a block, tails)', async () => {
    // PyTorch's whole-block formula gave 100 * (1 - 128 * 128 / (16 * 16)) = -6300 % here.
    const tiny = await createBlockMask(causal(), 1, 1, 16, 16, cpu);
    expect(tiny.sparsity()).toBe(0);
    expect(tiny.toString()).toContain('sparsity=0.00%');
    // causal 200 x 300, 128 blocks: q block 0 keeps kv block 0 (128 x 128); q block 1 (72 rows)
    // keeps kv blocks 0 and 1 (256 columns); kv block 2 (44 columns) is never visited.
    const c = await createBlockMask(causal(), 1, 1, 200, 300, cpu);
    expect(c.sparsity()).toBeCloseTo(100 * (1 - (128 * 128 + 72 * 256) / (200 * 300)), 10);
    // Brute force from the definition: the share of positions (b, h, i, j) whose block is listed.
    const share = async (bm: BlockMask) => {
      const cls = await bm.toDense().toHost() as Int32Array;
      const [bq, bkv] = bm.blockSize;
      let kept = 0;
      for (let p = 0; p < bm.B * bm.H; p++) {
        for (let i = 0; i < bm.qLen; i++) {
          for (let j = 0; j < bm.kvLen; j++) if (cls[(p * bm.numQBlocks + Math.floor(i / bq)) * bm.numKvBlocks + Math.floor(j / bkv)] !== 0) kept++;
        }
      }
      return 100 * (1 - kept / (bm.B * bm.H * bm.qLen * bm.kvLen));
    };
    const w = maskMod(({ b, h, q, kv }) => q.sub(kv).abs().lt(h.add(1).mul(9)).and(kv.ge(b.mul(20))));
    for (const [mm, B, H, S, Skv, blockSize] of [
      [w, 2, 3, 77, 300, 32], [w, 1, 2, 5, 700, [64, 128]], [causal(), 1, 1, 1, 1, 128], [causal(), 2, 1, 130, 131, 16],
    ] as const) {
      const bm = await createBlockMask(mm, B, H, S, Skv, { blockSize, ...cpu });
      const want = await share(bm);
      expect(bm.sparsity(), `${B}x${H}x${S}x${Skv} /${String(blockSize)}`).toBeCloseTo(want, 10);
      expect(bm.sparsity()).toBeGreaterThanOrEqual(0);
    }
    const some = await createBlockMask(w, 2, 3, 77, 300, { blockSize: 32, ...cpu });
    expect(some.sparsity()).toBeGreaterThan(20);   // the brute force above is not trivially 0
    expect(some.sparsity()).toBeLessThan(95);
  });

  it('toString summarises large masks and limits the number of heads', async () => {
    const bm = await createBlockMask(causal(), 1, 6, 64 * 100, 64 * 100, { blockSize: 64, ...cpu });
    const s = bm.toString();
    const lines = s.split('\n');
    expect(lines[1]).toBe('(0, 0)');
    expect(lines[2]!.length).toBe(40); // 20 cells of two characters
    expect(s).toContain('...');
    expect(s.match(/\(0, \d\)/g)).toEqual(['(0, 0)', '(0, 1)', '(0, 2)', '(0, 3)']);
    expect(bm.toPicture({ gridSize: -1, limit: 1 }).split('\n')[1]!.length).toBe(200);
  });

  it('slice by index and range', async () => {
    const r = rng(3);
    const ids = Int32Array.from({ length: 3 * 64 }, () => Math.floor(r() * 3));
    const docIds = Tensor.fromHost(ids, [3, 64], 'i32', cpu);
    const bm = await createBlockMask(documentMask(docIds, { causal: false }), 3, 2, 64, 64, { blockSize: 8, ...cpu });
    const one = bm.slice(1, 0);
    expect(one.shape).toEqual([1, 1, 64, 64]);
    const plane = 8 * 8;
    expect(Array.from(one.classes())).toEqual(Array.from(bm.classes().subarray((1 * 2 + 0) * plane, (1 * 2 + 1) * plane)));
    const rng2 = bm.slice([1, 3]);
    expect(rng2.shape).toEqual([2, 2, 64, 64]);
    expect(Array.from(rng2.host.kvIndices)).toEqual(Array.from(bm.host.kvIndices.subarray(2 * 8 * 8)));
    expect(Array.from(bm.slice(-1, [-1, 2]).classes())).toEqual(Array.from(bm.classes().subarray(5 * plane)));
    // The sliced mask mod reads the selected batch: rebuilding from it gives the same blocks.
    const again = await createBlockMask(rng2.maskMod!, 2, 2, 64, 64, { blockSize: 8, ...cpu });
    expect(Array.from(again.classes())).toEqual(Array.from(rng2.classes()));
    const again1 = await createBlockMask(one.maskMod!, 1, 1, 64, 64, { blockSize: 8, ...cpu });
    expect(Array.from(again1.classes())).toEqual(Array.from(one.classes()));
    expect(bm.slice(0).maskMod).toBe(bm.maskMod);
    expect(() => bm.slice(3)).toThrow(InvalidArgumentError);
    expect(() => bm.slice(undefined, [1, 1])).toThrow(InvalidArgumentError);
  });

  it('and / or composition with block rules and combined mask mods', async () => {
    const o = { blockSize: 16, ...cpu };
    const a = await createBlockMask(causal(), 1, 1, 100, 100, o);
    const b = await createBlockMask(slidingWindow(40, { lookahead: 20 }), 1, 1, 100, 100, o);
    const and = a.and(b), or = a.or(b);
    const ca = a.classes(), cb = b.classes();
    for (let i = 0; i < ca.length; i++) {
      const x = ca[i]!, y = cb[i]!;
      expect(and.classes()[i]).toBe(x === 0 || y === 0 ? 0 : x === 2 && y === 2 ? 2 : 1);
      expect(or.classes()[i]).toBe(x === 2 || y === 2 ? 2 : x === 0 && y === 0 ? 0 : 1);
    }
    expect(and.method).toBe('composed');
    const fn = and.maskMod!.toJs();
    expect(fn(0, 0, 50, 20)).toBe(true);
    expect(fn(0, 0, 50, 5)).toBe(false);
    expect(fn(0, 0, 50, 60)).toBe(false);
    // Block-level composition is conservative: exact classification is never "more skipped".
    const exact = await createBlockMask(and.maskMod!, 1, 1, 100, 100, o);
    const ce = exact.classes();
    for (let i = 0; i < ce.length; i++) if (ce[i] !== 0) expect(and.classes()[i]).not.toBe(0);
    // Broadcasting B/H of 1.
    const docIds = Tensor.fromHost(Int32Array.from({ length: 200 }, (_, i) => (i % 100) >> 5), [2, 100], 'i32', cpu);
    const d = await createBlockMask(documentMask(docIds), 2, 1, 100, 100, o);
    expect(a.and(d).shape).toEqual([2, 1, 100, 100]);
    // Mismatches.
    const other = await createBlockMask(causal(), 1, 1, 100, 90, o);
    expect(() => a.and(other)).toThrow(ShapeError);
    const other2 = await createBlockMask(causal(), 1, 1, 100, 100, { blockSize: 32, ...cpu });
    expect(() => a.or(other2)).toThrow(ShapeError);
    const d3 = await createBlockMask(causal(), 3, 1, 100, 100, o);
    expect(() => d.and(d3)).toThrow(ShapeError);
    expect(() => a.and({} as BlockMask)).toThrow(InvalidArgumentError);
  });

  it('q-side arrays are the transposes of the kv side', async () => {
    const bm = await createBlockMask(orMasks(prefixLM(40), slidingWindow(25)), 1, 1, 150, 170, { blockSize: [16, 32], ...cpu });
    const QB = bm.numQBlocks, KVB = bm.numKvBlocks;
    const pairs = (num: Int32Array, idx: Int32Array, rows: number, cols: number, swap: boolean) => {
      const s: string[] = [];
      for (let r = 0; r < rows; r++) for (let j = 0; j < num[r]!; j++) {
        const c = idx[r * cols + j]!;
        s.push(swap ? `${c},${r}` : `${r},${c}`);
      }
      return s.sort();
    };
    expect(pairs(bm.host.qNumBlocks, bm.host.qIndices, KVB, QB, true)).toEqual(pairs(bm.host.kvNumBlocks, bm.host.kvIndices, QB, KVB, false));
    expect(pairs(bm.host.fullQNumBlocks, bm.host.fullQIndices, KVB, QB, true))
      .toEqual(pairs(bm.host.fullKvNumBlocks, bm.host.fullKvIndices, QB, KVB, false));
  });

  it('fromKvBlocks round trip (tensors and host arrays)', async () => {
    const bm = await createBlockMask(andMasks(causal(), slidingWindow(50)), 2, 1, 200, 200, { blockSize: 32, ...cpu });
    const rt = await BlockMask.fromKvBlocks(bm.kvNumBlocks, bm.kvIndices, bm.fullKvNumBlocks, bm.fullKvIndices,
      { qLen: 200, kvLen: 200, blockSize: 32, maskMod: bm.maskMod, device: 'cpu' });
    for (const k of KEYS) expect(Array.from(rt.host[k]), k).toEqual(Array.from(bm.host[k]));
    expect(rt.method).toBe('kv-blocks');
    // 2-D input, default lengths, no full blocks, PyTorch-style transposes.
    const num = { data: Int32Array.from([1, 2]), shape: [2] };
    const idx = { data: Int32Array.from([1, 0, 0, 1]), shape: [2, 2] };
    const m = await BlockMask.fromKvBlocks(num, idx, null, null, { blockSize: 16, device: 'cpu' });
    expect(m.shape).toEqual([1, 1, 32, 32]);
    expect(Array.from(m.host.qNumBlocks)).toEqual([1, 2]);
    expect(Array.from(m.host.qIndices)).toEqual([1, 0, 0, 1]);
    expect(Array.from(m.host.fullKvNumBlocks)).toEqual([0, 0]);
    expect(m.maskMod).toBeNull();
    expect(Array.from(m.classes())).toEqual([0, 1, 1, 1]);
  });

  it('fromKvBlocks rejects bad input', async () => {
    const idx = { data: Int32Array.from([0, 1, 0, 1]), shape: [2, 2] };
    const ok = { data: Int32Array.from([1, 1]), shape: [2] };
    await expect(BlockMask.fromKvBlocks({ data: Int32Array.from([1, 1, 1]), shape: [3] }, idx, null, null, cpu)).rejects.toThrow(ShapeError);
    await expect(BlockMask.fromKvBlocks({ data: Int32Array.from([3, 1]), shape: [2] }, idx, null, null, cpu)).rejects.toThrow(/kvNumBlocks/);
    await expect(BlockMask.fromKvBlocks(ok, { data: Int32Array.from([5, 1, 0, 1]), shape: [2, 2] }, null, null, cpu)).rejects.toThrow(/kvIndices/);
    await expect(BlockMask.fromKvBlocks(ok, idx, ok, null, cpu)).rejects.toThrow(/fullKvIndices/);
    await expect(BlockMask.fromKvBlocks(ok, idx, ok, idx, cpu)).rejects.toThrow(/at most once/);
    await expect(BlockMask.fromKvBlocks(ok, idx, null, null, { ...cpu, qLen: 1000 })).rejects.toThrow(ShapeError);
    await expect(BlockMask.fromKvBlocks(ok, idx, null, null, { ...cpu, blockSize: 24 })).rejects.toThrow(/power of two/);
    await expect(BlockMask.fromKvBlocks(ok, idx, null, null, { ...cpu, maskMod: softcap(3) as unknown as MaskMod })).rejects.toThrow(/ScoreMod/);
  });
});

describe('createBlockMask validates its arguments', () => {
  const bad: [string, () => Promise<unknown>, RegExp][] = [
    ['qLen 0', () => createBlockMask(causal(), 1, 1, 0, 10, cpu), /^qLen/],
    ['kvLen fractional', () => createBlockMask(causal(), 1, 1, 10, 2.5, cpu), /^kvLen/],
    ['qLen string', () => createBlockMask(causal(), 1, 1, '8' as unknown as number, 10, cpu), /^qLen/],
    ['B 0', () => createBlockMask(causal(), 0, 1, 10, 10, cpu), /^B/],
    ['H -1', () => createBlockMask(causal(), 1, -1, 10, 10, cpu), /^H/],
    ['block 100', () => createBlockMask(causal(), 1, 1, 10, 10, { blockSize: 100, ...cpu }), /options.blockSize.*power of two/],
    ['block [16, 0]', () => createBlockMask(causal(), 1, 1, 10, 10, { blockSize: [16, 0], ...cpu }), /options.blockSize\[1\]/],
    ['score mod', () => createBlockMask(softcap(20) as unknown as MaskMod, 1, 1, 10, 10, cpu), /^maskMod.*ScoreMod/],
    ['function', () => createBlockMask(((_b: number) => true) as unknown as MaskMod, 1, 1, 10, 10, cpu), /^maskMod.*function/],
    ['path', () => createBlockMask(causal(), 1, 1, 10, 10, { path: 'tpu' as 'cpu', ...cpu }), /options.path/],
    ['analytic without descriptor', () => createBlockMask(maskMod(({ q, kv }) => q.ge(kv)), 1, 1, 10, 10, { path: 'analytic', ...cpu }), /options.path/],
    ['missing param', async () => {
      const { param } = await import('../lib/mods/ir.js');
      return createBlockMask(maskMod(({ kv }) => kv.lt(param('n', 'int'))), 1, 1, 10, 10, cpu);
    }, /params.n/],
  ];
  for (const [name, fn, re] of bad) {
    it(name, async () => {
      const p = fn();
      await expect(p).rejects.toThrow(InvalidArgumentError);
      await expect(p).rejects.toThrow(re);
    });
  }
});
