/**
 * The serving API on the GPU.
 *  - KvCache.append's kernel (one launch per ragged batch) writes the same
 *    bits as the CPU append, over pools poisoned with NaN first: random page
 *    order, pages 16 and 128, fork + copy on write, bf16/f16/f32, aligned
 *    (16-byte vectors) and unaligned (element) source rows, a 5000-token prefill.
 *  - pagedAttention / varlenAttention: backend 'cpu' on CUDA tensors equals
 *    the CPU cache bit for bit; backend 'cuda' (the decode/paged kernels of
 *    lib/cuda/run-ragged.ts) agrees with the CPU reference (bf16 rel. error <= 1e-2).
 */
import { expect, it } from 'vitest';
import { describeGpu } from '../gpu-gate.js';
import { native } from '../../lib/native.js';
import { slidingWindow, softcap } from '../../lib/mods/index.js';
import { KvCache, type KvDType, type SequenceId } from '../../lib/serving/kv-cache.js';
import { pagedAttention } from '../../lib/serving/paged-attention.js';
import { varlenAttention } from '../../lib/serving/varlen-attention.js';
import { Tensor } from '../../lib/tensor.js';
import { relError, rng } from '../reference.js';

/** The same operations on a CUDA cache and a CPU cache (same allocation order, so the same page tables). */
class Twin {
  readonly gpu: KvCache;
  readonly cpu: KvCache;
  readonly ids = new Map<SequenceId, SequenceId>(); // gpu id -> cpu id
  #seed = 1;
  constructor(readonly pageSize: number, numPages: number, readonly Hkv: number, readonly D: number, readonly dtype: KvDType = 'bf16') {
    const o = { pageSize, numPages, numKvHeads: Hkv, headDim: D, dtype };
    this.gpu = new KvCache({ ...o, device: 'cuda:0' });
    this.cpu = new KvCache({ ...o, device: 'cpu' });
    // Poison: every byte 0xff is a NaN in bf16, f16 and f32, so a position the kernel misses shows.
    for (const t of [this.gpu.keys, this.gpu.values]) native().memset(t.buffer(), 0, t.numel * (dtype === 'f32' ? 4 : 2), 0xff);
  }
  newSequence(): SequenceId { const g = this.gpu.newSequence(); this.ids.set(g, this.cpu.newSequence()); return g; }
  fork(s: SequenceId): SequenceId { const g = this.gpu.fork(s); this.ids.set(g, this.cpu.fork(this.ids.get(s)!)); return g; }
  free(s: SequenceId): void { this.gpu.free(s); this.cpu.free(this.ids.get(s)!); this.ids.delete(s); }

  /** Appends the same random tokens to both; `padded` feeds the kernel rows of D + 1 elements (unaligned, element path). */
  async append(seqs: SequenceId[], tokens: number[], padded = false): Promise<void> {
    const T = tokens.reduce((a, b) => a + b, 0);
    const width = padded ? this.D + 1 : this.D;
    const kh = Tensor.randn([T, this.Hkv, width], this.dtype, { device: 'cpu', seed: this.#seed++ });
    const vh = Tensor.randn([T, this.Hkv, width], this.dtype, { device: 'cpu', seed: this.#seed++ });
    const [kg, vg] = await Promise.all([kh.toDevice('cuda:0'), vh.toDevice('cuda:0')]);
    const view = (t: Tensor): Tensor => (padded ? t.narrow(2, 0, this.D) : t);
    await this.gpu.append(seqs, view(kg), view(vg), { tokens });
    await this.cpu.append(seqs.map((s) => this.ids.get(s)!), view(kh), view(vh), { tokens });
    for (const t of [kh, vh, kg, vg]) t.dispose();
  }

  /** Every live sequence's tokens, gathered through its page table, must be the same bits in both pools. */
  async expectSame(): Promise<void> {
    const [gk, gv, ck, cv] = await Promise.all([this.gpu.keys.toHost(), this.gpu.values.toHost(), this.cpu.keys.toHost(), this.cpu.values.toHost()]);
    const row = this.Hkv * this.D;
    let compared = 0;
    for (const [g, c] of this.ids) {
      const pg = this.gpu.pageTable(g), pc = this.cpu.pageTable(c);
      expect(pg).toEqual(pc);
      const n = this.gpu.length(g);
      expect(this.cpu.length(c)).toBe(n);
      for (let j = 0; j < n; j++) {
        const off = (pg[Math.floor(j / this.pageSize)]! * this.pageSize + (j % this.pageSize)) * row;
        for (const [a, b] of [[gk, ck], [gv, cv]] as const) {
          const x = a.subarray(off, off + row), y = b.subarray(off, off + row);
          if (!x.every((e, i) => e === y[i])) throw new Error(`sequence ${g} token ${j} differs`);
        }
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(0);
  }

  dispose(): void { this.gpu.dispose(); this.cpu.dispose(); }
}

/** Interleaved random appends (and a scratch sequence freed at the end), so page tables come out of order. */
async function fill(t: Twin, seqs: SequenceId[], lengths: number[], seed: number, padded = false): Promise<void> {
  const r = rng(seed);
  const left = [...lengths];
  const scratch = t.newSequence();
  while (left.some((n) => n > 0)) {
    const pick: SequenceId[] = [], toks: number[] = [];
    seqs.forEach((s, i) => {
      if (left[i]! > 0 && r() < 0.7) {
        const n = Math.min(left[i]!, 1 + Math.floor(r() * 3 * t.pageSize));
        pick.push(s);
        toks.push(n);
        left[i]! -= n;
      }
    });
    if (r() < 0.3) { pick.push(scratch); toks.push(1 + Math.floor(r() * t.pageSize)); }
    if (pick.length) await t.append(pick, toks, padded);
  }
  t.free(scratch);
}

describeGpu('KvCache.append on the GPU', () => {
  for (const [P, Hkv, D, dtype, padded] of [
    [16, 8, 128, 'bf16', false], [128, 2, 64, 'bf16', true], [16, 4, 64, 'f16', false], [32, 1, 32, 'f32', true],
  ] as const) {
    it(`page ${P}, Hkv ${Hkv}, D ${D}, ${dtype}${padded ? ', unaligned source rows' : ''}: same bits as the CPU append`, async () => {
      const t = new Twin(P, Math.ceil(12000 / P) + 64, Hkv, D, dtype);
      const lengths = [1, 77, 1531, 16, 129, 300];
      const seqs = lengths.map(() => t.newSequence());
      await fill(t, seqs, lengths, P + D, padded);
      await t.expectSame();
      // fork + copy on write: both write after the fork (partial shared last pages)
      const f = t.fork(seqs[1]!);
      const g = t.fork(seqs[4]!);
      await t.append([seqs[1]!, f, g], [3, 5, P + 1], padded);
      if (77 > P) expect(t.gpu.pageTable(f)[0]).toBe(t.gpu.pageTable(seqs[1]!)[0]); // a full page stays shared
      await t.expectSame();
      // a long prefill in one launch, then one token for every sequence
      const long = t.newSequence();
      await t.append([long], [5000], padded);
      await t.append([...t.ids.keys()], [...t.ids.keys()].map(() => 1), padded);
      await t.expectSame();
      t.dispose();
    });
  }

  it('64 sequences in one launch', async () => {
    const t = new Twin(16, 2048, 8, 128);
    const seqs = Array.from({ length: 64 }, () => t.newSequence());
    await t.append(seqs, seqs.map((_, i) => 1 + ((i * 37) % 200)));
    await t.append(seqs, seqs.map(() => 1));
    await t.expectSame();
    t.dispose();
  });
});

/** A ragged batch in both caches, ready for attention. */
async function batch(P: number, lengths: number[], Hkv: number, D: number): Promise<{ t: Twin; seqs: SequenceId[] }> {
  const t = new Twin(P, Math.ceil((1.5 * lengths.reduce((a, b) => a + b, 0)) / P) + 2 * lengths.length + 256, Hkv, D);
  const seqs = lengths.map(() => t.newSequence());
  await fill(t, seqs, lengths, P);
  return { t, seqs };
}

describeGpu('pagedAttention with a CUDA cache', () => {
  it('backend cpu on the CUDA cache: the same bits as on the CPU cache', async () => {
    const { t, seqs } = await batch(16, [1, 77, 1531, 300], 2, 64);
    const q = Tensor.randn([1 + 4 + 1 + 16, 8, 64], 'bf16', { device: 'cuda:0', seed: 3 });
    const qh = await q.toDevice('cpu');
    const queryTokens = [1, 4, 1, 16];
    const g = await pagedAttention(q, t.gpu, { seqs, queryTokens, backend: 'cpu', returnLse: true, scoreMod: softcap(30) });
    const c = await pagedAttention(qh, t.cpu, { seqs: seqs.map((s) => t.ids.get(s)!), queryTokens, returnLse: true, scoreMod: softcap(30) });
    expect(g.out.device).toBe('cuda:0');
    expect(Array.from(await g.out.toHost())).toEqual(Array.from(await c.out.toHost()));
    expect(Array.from(await g.lse.toHost())).toEqual(Array.from(await c.lse.toHost()));
    t.dispose();
  });

  for (const P of [16, 128]) {
    it(`backend cuda vs the CPU reference: page ${P}, lengths 1..5000, GQA 4 and 8, softcap, sliding window, chunked prefill then decode`, async () => {
      for (const [Hq, Hkv] of [[32, 8], [8, 1]] as const) {
        const lengths = [1, 77, 1531, 5000, 16, 300];
        const { t, seqs } = await batch(P, lengths, Hkv, 128);
        const cpuSeqs = seqs.map((s) => t.ids.get(s)!);
        for (const [queryTokens, opts] of [
          [lengths.map(() => 1), {}],
          [[1, 4, 16, 1, 16, 7], { scoreMod: softcap(30) }],
          [[1, 77, 200, 1, 3, 300], { maskMod: slidingWindow(256) }],
        ] as const) {
          const T = queryTokens.reduce((a, b) => a + b, 0);
          const q = Tensor.randn([T, Hq, 128], 'bf16', { device: 'cuda:0', seed: T });
          const qh = await q.toDevice('cpu');
          const g = await pagedAttention(q, t.gpu, { seqs, queryTokens: [...queryTokens], returnLse: true, ...opts });
          const c = await pagedAttention(qh, t.cpu, { seqs: cpuSeqs, queryTokens: [...queryTokens], returnLse: true, ...opts });
          expect(g.out.shape).toEqual([T, Hq, 128]);
          expect(relError(await g.out.toFloat32(), await c.out.toFloat32())).toBeLessThan(1e-2);
          const gl = await g.lse.toFloat32(), cl = await c.lse.toFloat32();
          expect(gl.every((x, i) => Math.abs(x - cl[i]!) < 1e-2 || x === cl[i])).toBe(true);
          for (const x of [q, qh, g.out, g.lse, c.out, c.lse]) x.dispose();
        }
        // chunked prefill then decode on one new sequence
        const s = t.newSequence();
        for (const n of [512, 489, 1]) {
          await t.append([s], [n]);
          const q = Tensor.randn([n, Hq, 128], 'bf16', { device: 'cuda:0', seed: n });
          const g = await pagedAttention(q, t.gpu, { seqs: [s], queryTokens: [n] });
          const c = await pagedAttention(await q.toDevice('cpu'), t.cpu, { seqs: [t.ids.get(s)!], queryTokens: [n] });
          expect(relError(await g.toFloat32(), await c.toFloat32())).toBeLessThan(1e-2);
        }
        t.dispose();
      }
    });
  }

  it('varlenAttention backend cuda vs the CPU reference (packed 1, 77, 1531, 5; causal and not)', async () => {
    const lens = [1, 77, 1531, 5];
    const cu = [0];
    for (const n of lens) cu.push(cu.at(-1)! + n);
    const T = cu.at(-1)!;
    const q = Tensor.randn([T, 16, 128], 'bf16', { device: 'cuda:0', seed: 1 });
    const k = Tensor.randn([T, 4, 128], 'bf16', { device: 'cuda:0', seed: 2 });
    const v = Tensor.randn([T, 4, 128], 'bf16', { device: 'cuda:0', seed: 3 });
    for (const isCausal of [false, true]) {
      const g = await varlenAttention(q, k, v, { cuSeqlensQ: cu, cuSeqlensK: cu, isCausal });
      const c = await varlenAttention(q, k, v, { cuSeqlensQ: cu, cuSeqlensK: cu, isCausal, backend: 'cpu' });
      expect(relError(await g.toFloat32(), await c.toFloat32())).toBeLessThan(1e-2);
    }
  });
});
