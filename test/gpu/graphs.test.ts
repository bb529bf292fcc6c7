/**
 * CUDA graphs on the GPU (lib/serving/graph.ts).
 *  - A captured multi-layer decode step (append + pagedAttention per layer,
 *    one KvCache, a sequence per request and layer) replays bit for bit like
 *    the same step run eagerly on a twin cache, over 20 steps in which
 *    sequences of odd lengths take new pages (page 16) and the pools end up
 *    the same bits; outputs are poisoned before every replay.
 *  - Longer growth (the longest sequence crossing kernel tiles, so the eager
 *    call may plan another split count): replay agrees with eager (bf16 rel.
 *    error <= 1e-2) and the pools stay bit-identical.
 *  - Captured flexAttention with a softcap score mod (decode and prefill
 *    kernels) and SDPA: replay equals the eager call, and follows new inputs
 *    copied in with copyFrom.
 *  - Errors: host copies/waits, nested captures and sequence changes inside a
 *    capture are GraphCaptureErrors and leave the device working and the cache
 *    unchanged; replay of a freed sequence, past maxSeqLen or with a full cache
 *    throws before anything changes; a disposed graph cannot replay.
 *  - Memory: what the graph pins survives its tensors' dispose (a replay after
 *    it still reads the captured data), and memoryStats().allocatedBytes is
 *    back to its start once the graph and the step's tensors are disposed.
 */
import { afterAll, expect, it } from 'vitest';
import { describeGpu } from '../gpu-gate.js';
import { native } from '../../lib/native.js';
import { memoryStats, synchronize } from '../../lib/device.js';
import {
  DisposedError, GraphCaptureError, GraphReplayError, KvCacheFullError, UnknownSequenceError,
} from '../../lib/errors.js';
import { flexAttention } from '../../lib/flex.js';
import { softcap } from '../../lib/mods/index.js';
import { scaledDotProductAttention } from '../../lib/sdpa.js';
import { captureGraph, type CudaGraph } from '../../lib/serving/graph.js';
import { KvCache, type SequenceId } from '../../lib/serving/kv-cache.js';
import { pagedAttention } from '../../lib/serving/paged-attention.js';
import { Tensor } from '../../lib/tensor.js';
import { relError } from '../reference.js';

const DEV = 'cuda:0' as const;
const Hq = 8, Hkv = 2, D = 128, P = 16;

function poison(t: Tensor): void {
  native().memset(t.buffer(), 0, t.numel * (t.dtype === 'f32' ? 4 : 2), 0xff);
}

function bitsEqual(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function newCache(numPages = 2048): KvCache {
  const c = new KvCache({ pageSize: P, numPages, numKvHeads: Hkv, headDim: D, dtype: 'bf16', device: DEV });
  poison(c.keys);
  poison(c.values);
  return c;
}

/** A decode step over L layers on two caches: `eager` runs it call by call, `graph` is captured once and replayed. */
class Step {
  readonly eager = newCache();
  readonly graphed = newCache();
  readonly seqsE: SequenceId[][] = [];
  readonly seqsG: SequenceId[][] = [];
  readonly q: Tensor[] = [];
  readonly k: Tensor[] = [];
  readonly v: Tensor[] = [];
  outs: Tensor[] = [];
  graph: CudaGraph | undefined;
  seed = 100;
  constructor(readonly L: number, readonly lengths: number[]) {
    const n = lengths.length;
    for (let l = 0; l < L; l++) {
      this.seqsE.push(lengths.map(() => this.eager.newSequence()));
      this.seqsG.push(lengths.map(() => this.graphed.newSequence()));
      this.q.push(Tensor.empty([n, Hq, D], 'bf16', { device: DEV }));
      this.k.push(Tensor.empty([n, Hkv, D], 'bf16', { device: DEV }));
      this.v.push(Tensor.empty([n, Hkv, D], 'bf16', { device: DEV }));
    }
  }
  get ones(): number[] { return this.lengths.map(() => 1); }

  /** The same random prompts in both caches (eager appends). */
  async prefill(): Promise<void> {
    const T = this.lengths.reduce((a, b) => a + b, 0);
    for (let l = 0; l < this.L; l++) {
      const k = Tensor.randn([T, Hkv, D], 'bf16', { device: DEV, seed: this.seed++ });
      const v = Tensor.randn([T, Hkv, D], 'bf16', { device: DEV, seed: this.seed++ });
      await this.eager.append(this.seqsE[l]!, k, v, { tokens: this.lengths });
      await this.graphed.append(this.seqsG[l]!, k, v, { tokens: this.lengths });
      k.dispose();
      v.dispose();
    }
    // Warm up: the attention kernels are loaded outside the capture (as the docs advise).
    for (const [c, ids] of [[this.eager, this.seqsE[0]!], [this.graphed, this.seqsG[0]!]] as const) {
      (await pagedAttention(this.q[0]!, c, { seqs: ids, queryTokens: this.ones })).dispose();
    }
  }

  async capture(maxSeqLen?: number): Promise<void> {
    const outs: Tensor[] = [];
    this.graph = await captureGraph(async () => {
      for (let l = 0; l < this.L; l++) {
        await this.graphed.append(this.seqsG[l]!, this.k[l]!, this.v[l]!, { tokens: this.ones });
        outs.push(await pagedAttention(this.q[l]!, this.graphed, { seqs: this.seqsG[l]!, queryTokens: this.ones }));
      }
    }, { device: DEV, ...(maxSeqLen ? { maxSeqLen } : {}) });
    this.outs = outs;
  }

  /** New random inputs in the captured buffers; the eager step on them; the replay. Returns [eager, replayed] outputs per layer. */
  async run(): Promise<{ eager: Tensor[]; replayed: Tensor[] }> {
    const n = this.lengths.length;
    const eager: Tensor[] = [];
    for (let l = 0; l < this.L; l++) {
      for (const [buf, H] of [[this.q[l]!, Hq], [this.k[l]!, Hkv], [this.v[l]!, Hkv]] as const) {
        const src = Tensor.randn([n, H, D], 'bf16', { device: DEV, seed: this.seed++ });
        buf.copyFrom(src);
        src.dispose();
      }
      await this.eager.append(this.seqsE[l]!, this.k[l]!, this.v[l]!, { tokens: this.ones });
      eager.push(await pagedAttention(this.q[l]!, this.eager, { seqs: this.seqsE[l]!, queryTokens: this.ones }));
    }
    for (const o of this.outs) poison(o);
    await this.graph!.replay();
    return { eager, replayed: this.outs };
  }

  async expectPoolsEqual(): Promise<void> {
    for (let l = 0; l < this.L; l++) {
      this.seqsE[l]!.forEach((s, i) => {
        expect(this.graphed.length(this.seqsG[l]![i]!)).toBe(this.eager.length(s));
        expect(this.graphed.pageTable(this.seqsG[l]![i]!)).toEqual(this.eager.pageTable(s));
      });
    }
    for (const [a, b] of [[this.eager.keys, this.graphed.keys], [this.eager.values, this.graphed.values]] as const) {
      expect(bitsEqual(await a.toHost(), await b.toHost())).toBe(true);
    }
  }

  dispose(): void {
    this.graph?.dispose();
    for (const t of [...this.q, ...this.k, ...this.v, ...this.outs]) t.dispose();
    this.eager.dispose();
    this.graphed.dispose();
  }
}

describeGpu('CUDA graphs', () => {
  afterAll(async () => { await synchronize(DEV); });

  it('a captured 3-layer decode step replays bit for bit like the eager step, 20 steps with page crossings', async () => {
    // The longest sequence (1537) stays within one 64-key kernel tile over the 20 steps, so the
    // eager calls plan the split count the capture planned: the same kernels on the same data.
    const s = new Step(3, [1, 15, 77, 1537, 33]);
    try {
      await s.prefill();
      const before = s.seqsG.map((ids) => ids.map((id) => s.graphed.length(id)));
      const free = s.graphed.stats().freePages;
      await s.capture();
      // The capture ran nothing and changed no host state.
      expect(s.seqsG.map((ids) => ids.map((id) => s.graphed.length(id)))).toEqual(before);
      expect(s.graphed.stats().freePages).toBe(free);
      expect(s.graph!.numNodes).toBeGreaterThanOrEqual(2 * s.L);
      for (let step = 0; step < 20; step++) {
        const { eager, replayed } = await s.run();
        for (let l = 0; l < s.L; l++) {
          const [e, r] = await Promise.all([eager[l]!.toHost(), replayed[l]!.toHost()]);
          if (!bitsEqual(e, r)) throw new Error(`step ${step} layer ${l}: replay differs from the eager step (rel ${relError(await eager[l]!.toFloat32(), await replayed[l]!.toFloat32())})`);
        }
        eager.forEach((t) => t.dispose());
      }
      await s.expectPoolsEqual();
      expect(s.graphed.length(s.seqsG[0]![1]!)).toBe(15 + 20);
    } finally {
      s.dispose();
    }
  });

  it('replays after 70 steps of growth (tiles crossed): replay agrees with eager, pools bit-identical', async () => {
    const s = new Step(2, [100, 3, 64, 47]);
    try {
      await s.prefill();
      await s.capture();
      for (let step = 0; step < 70; step++) {
        const { eager, replayed } = await s.run();
        if (step % 10 === 0 || step === 69) {
          for (let l = 0; l < s.L; l++) expect(relError(await replayed[l]!.toFloat32(), await eager[l]!.toFloat32())).toBeLessThan(1e-2);
        }
        eager.forEach((t) => t.dispose());
      }
      await s.expectPoolsEqual();
    } finally {
      s.dispose();
    }
  });

  it('a replay is checked before anything changes: freed sequence, past maxSeqLen, full cache; a disposed graph throws', async () => {
    const s = new Step(1, [40, 5]);
    try {
      await s.prefill();
      await s.capture(48);
      for (let i = 0; i < 8; i++) await s.graph!.replay(); // 40 -> 48: still inside maxSeqLen
      expect(s.graphed.length(s.seqsG[0]![0]!)).toBe(48);
      const lens = () => s.seqsG[0]!.map((id) => s.graphed.length(id));
      const at = lens(), free = s.graphed.stats().freePages;
      await expect(s.graph!.replay()).rejects.toBeInstanceOf(GraphReplayError);
      expect(lens()).toEqual(at);
      expect(s.graphed.stats().freePages).toBe(free);
    } finally {
      s.dispose();
    }

    const t = new Step(1, [16, 16, 16]);
    try {
      await t.prefill();
      await t.capture();
      // Fill the cache so the next replay (3 new pages) cannot run.
      const hog = t.graphed.newSequence();
      const spare = t.graphed.stats().freePages;
      const k = Tensor.randn([spare * P - 1, Hkv, D], 'bf16', { device: DEV });
      await t.graphed.append([hog], k, k, { tokens: [spare * P - 1] });
      k.dispose();
      const lens = t.seqsG[0]!.map((id) => t.graphed.length(id));
      await expect(t.graph!.replay()).rejects.toBeInstanceOf(KvCacheFullError);
      expect(t.seqsG[0]!.map((id) => t.graphed.length(id))).toEqual(lens);
      t.graphed.free(hog);
      await t.graph!.replay();
      expect(t.seqsG[0]!.map((id) => t.graphed.length(id))).toEqual(lens.map((n) => n + 1));
      t.graphed.free(t.seqsG[0]![1]!);
      const free = t.graphed.stats().freePages;
      await expect(t.graph!.replay()).rejects.toBeInstanceOf(UnknownSequenceError);
      expect(t.graphed.stats().freePages).toBe(free);
      expect(t.graphed.length(t.seqsG[0]![0]!)).toBe(lens[0]! + 1);
      t.graph!.dispose();
      await expect(t.graph!.replay()).rejects.toBeInstanceOf(DisposedError);
    } finally {
      t.dispose();
    }
  });

  it('captured flexAttention (softcap; decode and prefill kernels) and SDPA replay like the eager calls and follow copyFrom', async () => {
    for (const Sq of [1, 77]) {
      const q = Tensor.randn([2, Hq, Sq, D], 'bf16', { device: DEV, seed: 1 });
      const k = Tensor.randn([2, Hkv, 1531, D], 'bf16', { device: DEV, seed: 2 });
      const v = Tensor.randn([2, Hkv, 1531, D], 'bf16', { device: DEV, seed: 3 });
      const opts = { enableGQA: true, scoreMod: softcap(20), returnLse: true } as const;
      // Warm up (kernels loaded) outside the capture, as the docs advise.
      const warm = await flexAttention(q, k, v, opts);
      warm.out.dispose(); warm.lse?.dispose();
      (await scaledDotProductAttention(q, k, v, { enableGQA: true, isCausal: Sq > 1 })).dispose();
      let cap!: { out: Tensor; lse?: Tensor };
      let sd!: Tensor;
      const graph = await captureGraph(async () => {
        cap = await flexAttention(q, k, v, opts);
        sd = await scaledDotProductAttention(q, k, v, { enableGQA: true, isCausal: Sq > 1 });
      });
      try {
        for (let round = 0; round < 2; round++) {
          if (round === 1) {
            const nq = Tensor.randn([2, Hq, Sq, D], 'bf16', { device: DEV, seed: 9 });
            q.copyFrom(nq);
            nq.dispose();
          }
          poison(cap.out);
          poison(sd);
          await graph.replay();
          const e = await flexAttention(q, k, v, opts);
          const es = await scaledDotProductAttention(q, k, v, { enableGQA: true, isCausal: Sq > 1 });
          expect(bitsEqual(await cap.out.toHost(), await e.out.toHost())).toBe(true);
          expect(bitsEqual(await cap.lse!.toHost(), await e.lse!.toHost())).toBe(true);
          expect(bitsEqual(await sd.toHost(), await es.toHost())).toBe(true);
          e.out.dispose(); e.lse?.dispose(); es.dispose();
        }
      } finally {
        graph.dispose();
        for (const t of [q, k, v, cap.out, cap.lse!, sd]) t.dispose();
      }
    }
  });

  it('host copies, waits, nested captures and sequence changes inside a capture are GraphCaptureErrors; the device keeps working', async () => {
    const cache = newCache(64);
    const a = cache.newSequence();
    const kv = Tensor.randn([5, Hkv, D], 'bf16', { device: DEV });
    await cache.append([a], kv, kv, { tokens: [5] });
    const x = Tensor.randn([4, 4], 'f32', { device: DEV });
    const attempts: [string, () => Promise<unknown>][] = [
      ['toHost', () => x.toHost()],
      ['fromHost', async () => Tensor.fromHost(new Float32Array(4), [4], 'f32', { device: DEV })],
      ['copyFrom host', async () => x.copyFrom(new Float32Array(16))],
      ['synchronize', () => synchronize(DEV)],
      ['nested capture', () => captureGraph(async () => {})],
      ['newSequence', async () => cache.newSequence()],
      ['fork', async () => cache.fork(a)],
      ['free', async () => cache.free(a)],
      ['append twice', async () => {
        const one = Tensor.randn([1, Hkv, D], 'bf16', { device: DEV });
        await cache.append([a], one, one, { tokens: [1] });
        await cache.append([a], one, one, { tokens: [1] });
      }],
    ];
    for (const [what, f] of attempts) {
      const err = await captureGraph(f).then(() => undefined, (e: unknown) => e);
      expect(err, what).toBeInstanceOf(GraphCaptureError);
      expect(native().captureStatus(0)).toMatchObject({ capturing: false, streamCapturing: false });
      expect(cache.length(a), what).toBe(5);
    }
    // A callback that throws its own error: rethrown, nothing left behind.
    await expect(captureGraph(async () => { throw new RangeError('mine'); })).rejects.toBeInstanceOf(RangeError);
    // The device and the cache still work.
    await cache.append([a], kv.narrow(0, 0, 1), kv.narrow(0, 0, 1), { tokens: [1] });
    const out = await pagedAttention(Tensor.randn([1, Hq, D], 'bf16', { device: DEV }), cache, { seqs: [a], queryTokens: [1] });
    expect((await out.toFloat32()).every(Number.isFinite)).toBe(true);
    for (const t of [kv, x, out]) t.dispose();
    cache.dispose();
  });

  it('the graph keeps what it reads after its tensors are disposed; memoryStats is back to the start after dispose', async () => {
    await synchronize(DEV);
    const start = memoryStats(DEV).allocatedBytes;
    const q = Tensor.randn([1, Hq, 1, D], 'bf16', { device: DEV, seed: 5 });
    const k = Tensor.randn([1, Hkv, 300, D], 'bf16', { device: DEV, seed: 6 });
    const v = Tensor.randn([1, Hkv, 300, D], 'bf16', { device: DEV, seed: 7 });
    (await flexAttention(q, k, v, { enableGQA: true })).out.dispose(); // warm-up outside the capture
    let out!: Tensor;
    const graph = await captureGraph(async () => { out = (await flexAttention(q, k, v, { enableGQA: true })).out; });
    await graph.replay();
    const first = await out.toHost();
    const held = memoryStats(DEV).allocatedBytes;
    q.dispose(); k.dispose(); v.dispose();
    expect(memoryStats(DEV).allocatedBytes).toBe(held); // pinned: not back in the cache yet
    // Fresh tensors of the same sizes would reuse the freed blocks if they were not pinned.
    const junk = [Tensor.randn([1, Hq, 1, D], 'bf16', { device: DEV }), Tensor.randn([1, Hkv, 300, D], 'bf16', { device: DEV }),
      Tensor.randn([1, Hkv, 300, D], 'bf16', { device: DEV })];
    poison(out);
    await graph.replay();
    expect(bitsEqual(await out.toHost(), first)).toBe(true);
    junk.forEach((t) => t.dispose());
    graph.dispose();
    out.dispose();
    expect(memoryStats(DEV).allocatedBytes).toBe(start);

    // The same for a captured decode step (tables, workspace, outputs).
    const s = new Step(2, [33, 200]);
    await s.prefill();
    const before = memoryStats(DEV).allocatedBytes;
    await s.capture();
    await s.graph!.replay();
    s.graph!.dispose();
    s.outs.forEach((t) => t.dispose());
    s.outs = [];
    expect(memoryStats(DEV).allocatedBytes).toBe(before);
    s.dispose();
  });
});
