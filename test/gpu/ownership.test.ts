// Ops own their inputs on the GPU (issue 17, items 8 and 5): inputs, captured
// tensors and block masks are disposed right after the call, before the op has
// launched (it awaits its kernel first), while the allocator churns: new
// tensors of the same sizes take whatever blocks were freed and are filled
// with NaN on the stream ahead of the kernel. A block given back too early
// would show as NaN or a wrong value; the result must equal the CPU reference.
// Then cancellation: an abort while a kernel compiles rejects at once, and the
// outputs go back once the work has passed.
import { getEventListeners } from 'node:events';
import { expect, it } from 'vitest';
import {
  Tensor, scaledDotProductAttention, flexAttention, attention, createBlockMask, clearAttentionCache, memoryStats, synchronize,
  documentMask, alibi, andMasks, causal, maskMod, scoreMod, jitIdle, AbortError, DisposedError, type BlockMask,
} from '../../lib/index.js';
import { describeGpu } from '../gpu-gate.js';
import { rejection, relError } from '../reference.js';

const gpu = { device: 'cuda:0' as const };
const NAN_BF16 = 0x7fc0;

interface Dims { B: number; Hq: number; Hkv: number; S: number; D: number }

function qkv(d: Dims): Tensor[] {
  return [
    Tensor.randn([d.B, d.Hq, d.S, d.D], 'bf16', gpu),
    Tensor.randn([d.B, d.Hkv, d.S, d.D], 'bf16', gpu),
    Tensor.randn([d.B, d.Hkv, d.S, d.D], 'bf16', gpu),
  ];
}

/** Three documents per batch row, boundaries differing per row (odd lengths). */
function docIds(B: number, S: number): Tensor {
  const ids = new Int32Array(B * S);
  for (let b = 0; b < B; b++) for (let s = 0; s < S; s++) ids[b * S + s] = s < 137 + 61 * b ? 0 : s < Math.floor(S / 2) + 1 ? 1 : 2;
  return Tensor.fromHost(ids, [B, S], 'i32', gpu);
}

function slopes(H: number): Tensor {
  return Tensor.fromHost(Float32Array.from({ length: H }, (_, h) => 2 ** (-(h + 1) / 2)), [H], 'f32', gpu);
}

/**
 * Allocator churn: one NaN-filled tensor per byte size given (each takes the
 * freed block of that size, if any), kept alive until `release` is called, plus
 * a few short-lived ones of other sizes.
 */
function churn(byteSizes: number[]): { release(): void } {
  const live = byteSizes.map((bytes) => {
    const n = Math.max(1, Math.ceil(bytes / 2));
    return Tensor.fromHost(new Uint16Array(n).fill(NAN_BF16), [n], 'bf16', gpu);
  });
  for (let i = 0; i < 8; i++) Tensor.randn([1 + 997 * i], 'bf16', gpu).dispose();
  return { release: () => { for (const t of live) t.dispose(); } };
}

function bytesOf(t: Tensor): number {
  return t.numel * (t.dtype === 'bf16' || t.dtype === 'f16' ? 2 : t.dtype === 'bool' ? 1 : 4);
}

type Result = Tensor | { out: Tensor; lse?: Tensor };
const parts = (r: Result): Tensor[] => (r instanceof Tensor ? [r] : [r.out, ...(r.lse ? [r.lse] : [])]);

/**
 * `reference` (the CPU backend on the same tensors) first, then `call` on the
 * GPU with every input and mask disposed right after the call and the
 * allocator churning before the launch; the two must agree, and device memory
 * must be back where it started once everything is disposed.
 */
async function checkOwned(
  make: () => Promise<{ tensors: Tensor[]; masks?: BlockMask[] }>,
  call: (t: Tensor[], m: BlockMask[], backend: 'cuda' | 'cpu') => Promise<Result>,
): Promise<void> {
  await synchronize();
  const start = memoryStats('cuda:0').allocatedBytes;
  const { tensors, masks = [] } = await make();
  const want = parts(await call(tensors, masks, 'cpu'));
  const wantHost = await Promise.all(want.map((t) => t.toFloat32()));
  for (const t of want) t.dispose();

  const sizes = tensors.map(bytesOf);
  const pending = call(tensors, masks, 'cuda');
  for (const t of tensors) t.dispose();
  for (const m of masks) m.dispose();
  expect(tensors.every((t) => t.disposed)).toBe(true);
  const c = churn(sizes);
  const got = parts(await pending);
  c.release();
  for (const [i, t] of got.entries()) {
    const g = await t.toFloat32();
    let nan = 0;
    for (let j = 0; j < g.length; j++) if (Number.isNaN(g[j]!)) nan++;
    expect(nan, 'NaN in the GPU output: an input block was reused before the kernel read it').toBe(0);
    const w = wantHost[i]!;
    expect(relError(g.filter((x) => Number.isFinite(x)), w.filter((x) => Number.isFinite(x)))).toBeLessThan(1e-2);
    t.dispose();
  }
  clearAttentionCache();
  await synchronize();
  expect(memoryStats('cuda:0').allocatedBytes).toBe(start);
}

/** Waits until device memory is back to `bytes` (work finishing in the background), or fails after `ms`. */
async function memoryBackTo(bytes: number, ms = 180_000): Promise<void> {
  const end = Date.now() + ms;
  await jitIdle();
  while (Date.now() < end) {
    await synchronize();
    if (memoryStats('cuda:0').allocatedBytes === bytes) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  expect(memoryStats('cuda:0').allocatedBytes).toBe(bytes);
}

/** A score mod no earlier run compiled (its constant is baked into the kernel source), so the call must wait for NVRTC. */
function freshScoreMod() {
  const c = 1 + Math.random() * 1e-3;
  return scoreMod(({ score }) => score.mul(c));
}

describeGpu('ops own their inputs (GPU, allocator churning)', () => {
  const d: Dims = { B: 2, Hq: 4, Hkv: 2, S: 1531, D: 64 };

  it('scaledDotProductAttention: causal; a bool attnMask; S = 1 and 77', async () => {
    await checkOwned(async () => ({ tensors: qkv(d) }),
      ([q, k, v], _, backend) => scaledDotProductAttention(q!, k!, v!, { isCausal: true, enableGQA: true, returnLse: true, backend }));
    for (const S of [1, 77]) {
      await checkOwned(async () => {
        const bits = new Uint8Array(S * S).map((_, i) => ((i * 2654435761) >>> 7) % 3 !== 0 || i % (S + 1) === 0 ? 1 : 0);
        return { tensors: [...qkv({ ...d, S }), Tensor.fromHost(bits, [1, 1, S, S], 'bool', gpu)] };
      }, ([q, k, v, mask], _, backend) => scaledDotProductAttention(q!, k!, v!, { attnMask: mask!, enableGQA: true, backend }));
    }
  });

  it('flexAttention: captured slopes, a document block mask and its ids disposed right after the call', async () => {
    await checkOwned(async () => {
      const ids = docIds(d.B, d.S);
      const bm = await createBlockMask(andMasks(causal(), documentMask(ids)), d.B, 1, d.S, d.S, gpu);
      return { tensors: [...qkv(d), slopes(d.Hq), ids], masks: [bm] };
    }, ([q, k, v, sl], [bm], backend) => flexAttention(q!, k!, v!,
      { scoreMod: alibi(sl!), blockMask: bm!, enableGQA: true, returnLse: true, backend }));
  });

  it('flexAttention: a user mask reading captured ids, a fresh kernel to compile', async () => {
    await checkOwned(async () => {
      const ids = docIds(d.B, d.S);
      const keep = maskMod(({ b, q, kv }) => ids.at(b, q).eq(ids.at(b, kv)).and(kv.le(q.add(5))));
      const bm = await createBlockMask(keep, d.B, 1, d.S, d.S, gpu);
      return { tensors: [...qkv(d), ids], masks: [bm] };
    }, ([q, k, v], [bm], backend) => flexAttention(q!, k!, v!, { scoreMod: freshScoreMod(), blockMask: bm!, enableGQA: true, backend }));
  });

  it('attention: flex (docIds, alibi) and sdpa (docIds) with every spec tensor disposed right after the call', async () => {
    await checkOwned(async () => ({ tensors: [...qkv(d), docIds(d.B, d.S), slopes(d.Hq)] }),
      ([q, k, v, ids, sl], _, backend) => attention(q!, k!, v!,
        { impl: 'flex', isCausal: true, docIds: ids!, alibiSlopes: sl!, enableGQA: true, backend }));
    await checkOwned(async () => ({ tensors: [...qkv({ ...d, S: 333 }), docIds(d.B, 333)] }),
      ([q, k, v, ids], _, backend) => attention(q!, k!, v!, { impl: 'sdpa', isCausal: true, docIds: ids!, enableGQA: true, backend }));
  });

  it('createBlockMask on the GPU: the captured ids disposed right after the call', async () => {
    await synchronize();
    const start = memoryStats('cuda:0').allocatedBytes;
    const mk = (ids: Tensor) => maskMod(({ b, q, kv }) => ids.at(b, q).eq(ids.at(b, kv)).and(kv.le(q)));
    const ids = docIds(d.B, d.S);
    const want = await createBlockMask(mk(ids), d.B, 1, d.S, d.S, { device: 'cpu' });
    const p = createBlockMask(mk(ids), d.B, 1, d.S, d.S, { ...gpu, path: 'gpu' });
    ids.dispose();
    const c = churn([d.B * d.S * 4]);
    const got = await p;
    c.release();
    for (const key of Object.keys(want.host) as (keyof typeof want.host)[]) expect(got.host[key]).toEqual(want.host[key]);
    got.dispose();
    await synchronize();
    expect(memoryStats('cuda:0').allocatedBytes).toBe(start);
  });

  it('a user tensor disposed while an op holds it is unusable at once', async () => {
    const [q, k, v] = qkv({ ...d, S: 77 });
    const p = flexAttention(q!, k!, v!, { scoreMod: freshScoreMod(), enableGQA: true });
    q!.dispose();
    await expect(q!.toHost()).rejects.toBeInstanceOf(DisposedError);
    expect(() => q!.contiguous()).toThrow(DisposedError);
    (await p).out.dispose();
    k!.dispose(); v!.dispose();
  });
});

describeGpu('cancellation (GPU)', () => {
  const d: Dims = { B: 1, Hq: 4, Hkv: 4, S: 1531, D: 128 };

  it('an abort while the kernel compiles rejects at once; nothing is handed out and memory goes back', async () => {
    await synchronize();
    const start = memoryStats('cuda:0').allocatedBytes;
    const [q, k, v] = qkv(d);
    const ac = new AbortController();
    const p = flexAttention(q!, k!, v!, { scoreMod: freshScoreMod(), returnLse: true, signal: ac.signal });
    q!.dispose(); k!.dispose(); v!.dispose();
    await new Promise((r) => setTimeout(r, 20));   // NVRTC takes far longer than this
    const t0 = performance.now();
    ac.abort('user');
    const err = await rejection(p);
    expect(performance.now() - t0).toBeLessThan(50);
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).code).toBe('ABORT_ERR');
    expect((err as AbortError).cause).toBe('user');
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
    await memoryBackTo(start);
  });

  it('AbortSignal.timeout on a call that must compile, and on one already aborted', async () => {
    await synchronize();
    const start = memoryStats('cuda:0').allocatedBytes;
    const [q, k, v] = qkv(d);
    const err = await rejection(flexAttention(q!, k!, v!, { scoreMod: freshScoreMod(), signal: AbortSignal.timeout(30) }));
    expect(err).toBeInstanceOf(AbortError);
    expect(((err as AbortError).cause as Error).name).toBe('TimeoutError');
    const ac = new AbortController();
    ac.abort();
    for (const p of [
      scaledDotProductAttention(q!, k!, v!, { signal: ac.signal }),
      flexAttention(q!, k!, v!, { signal: ac.signal }),
      createBlockMask(causal(), 1, 1, d.S, d.S, { ...gpu, signal: ac.signal }),
      q!.toHost({ signal: ac.signal }),
      q!.toDevice('cpu', { signal: ac.signal }),
    ]) expect(await rejection(p)).toBeInstanceOf(AbortError);
    q!.dispose(); k!.dispose(); v!.dispose();
    await memoryBackTo(start);
  });

  it('toHost: an abort while the copy is queued rejects at once', async () => {
    const big = Tensor.randn([64 << 20], 'bf16', gpu);
    const ac = new AbortController();
    // Queue work ahead of the copy so it waits on the stream.
    const ins = qkv({ ...d, S: 8192 });
    const outs = await Promise.all([1, 2, 3].map(() => scaledDotProductAttention(ins[0]!, ins[1]!, ins[2]!)));
    const p = big.toHost({ signal: ac.signal });
    big.dispose();   // the copy is already enqueued
    ac.abort();
    expect(await rejection(p)).toBeInstanceOf(AbortError);
    for (const t of [...ins, ...outs]) t.dispose();
    await synchronize();
  });

  it('many GPU calls on one long-lived signal leave no abort listener behind', async () => {
    const ac = new AbortController();
    const [q, k, v] = qkv({ ...d, S: 77 });
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < 50; i++) {
      pending.push(scaledDotProductAttention(q!, k!, v!, { isCausal: true, signal: ac.signal }).then((o) => o.dispose()));
      pending.push(q!.toHost({ signal: ac.signal }));
    }
    expect(getEventListeners(ac.signal, 'abort').length).toBeGreaterThan(0);
    await Promise.all(pending);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
    q!.dispose(); k!.dispose(); v!.dispose();
  });
});
