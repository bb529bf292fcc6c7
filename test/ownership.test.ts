// An op owns its inputs from the moment it is called (issue 17, item 8): the
// user may dispose q/k/v, masks, captured tensors and block masks right after
// the call, before awaiting it, and still gets the result of an undisturbed
// run; their memory goes back only once the op is done with it. CPU backend.
import { describe, expect, it } from 'vitest';
import {
  Tensor, scaledDotProductAttention, flexAttention, attention, createBlockMask, clearAttentionCache, documentMask,
  alibi, andMasks, causal, maskMod, DisposedError, type BlockMask,
} from '../lib/index.js';
import { hostMemoryStats } from '../lib/tensor.js';
import { randnArray } from './reference.js';

const cpu = { device: 'cpu' as const };
const B = 2, Hq = 4, Hkv = 2, S = 77, D = 16;

/** Fresh q/k/v (same values for the same seed), so a run that disposes and one that does not see equal data. */
function qkv(seed: number): [Tensor, Tensor, Tensor] {
  return [
    Tensor.fromHost(randnArray(B * Hq * S * D, seed), [B, Hq, S, D], 'f32', cpu),
    Tensor.fromHost(randnArray(B * Hkv * S * D, seed + 1), [B, Hkv, S, D], 'f32', cpu),
    Tensor.fromHost(randnArray(B * Hkv * S * D, seed + 2), [B, Hkv, S, D], 'f32', cpu),
  ];
}

/** Three documents per batch row, different per row. */
function docIds(): Tensor {
  const ids = new Int32Array(B * S);
  for (let b = 0; b < B; b++) for (let s = 0; s < S; s++) ids[b * S + s] = s < 20 + 7 * b ? 0 : s < 50 ? 1 : 2;
  return Tensor.fromHost(ids, [B, S], 'i32', cpu);
}

function slopes(): Tensor {
  return Tensor.fromHost(Float32Array.from({ length: Hq }, (_, h) => 0.05 * (h + 1) + 0.013), [Hq], 'f32', cpu);
}

async function values(t: Tensor): Promise<number[]> {
  return Array.from(await t.toFloat32());
}

/** What one run gets: its tensors (all disposed right after the call) and other things to dispose with them. */
interface Inputs { tensors: Tensor[]; masks?: BlockMask[] }

/**
 * Runs `call` on fresh inputs twice: once keeping them, once disposing every
 * input right after the call (twice, and a view too). While the second call is
 * in flight the inputs are unusable for the user but their memory is still
 * held; afterwards everything is released. `call` must call the op at once
 * (return its promise), as a user would.
 */
async function compareWithDispose(
  make: () => Promise<Inputs> | Inputs,
  call: (inputs: Tensor[], masks: BlockMask[]) => Promise<Tensor | { out: Tensor; lse?: Tensor }>,
): Promise<void> {
  const outputs = (r: Tensor | { out: Tensor; lse?: Tensor }): Tensor[] => (r instanceof Tensor ? [r] : [r.out, ...(r.lse ? [r.lse] : [])]);

  const keep = await make();
  const expected = outputs(await call(keep.tensors, keep.masks ?? []));
  const want = await Promise.all(expected.map(values));
  for (const t of [...keep.tensors, ...expected]) t.dispose();
  for (const m of keep.masks ?? []) m.dispose();
  clearAttentionCache();

  const start = hostMemoryStats();
  const { tensors: inputs, masks = [] } = await make();
  const held = hostMemoryStats();
  expect(held.storages).toBe(start.storages + inputs.length);
  const pending = call(inputs, masks);
  for (const t of inputs) {
    t.reshape(-1).dispose(); // a view: disposes the shared storage
    t.dispose();
    t.dispose();             // harmless
    expect(t.disposed).toBe(true);
  }
  for (const m of masks) m.dispose();
  // Unusable for the user at once, but the memory stays until the op is done with it.
  await expect(inputs[0]!.toHost()).rejects.toBeInstanceOf(DisposedError);
  expect(() => inputs[0]!.transpose(0, 1)).toThrow(DisposedError);
  expect(hostMemoryStats().storages).toBeGreaterThanOrEqual(held.storages);
  const got = outputs(await pending);
  expect(await Promise.all(got.map(values))).toEqual(want);
  for (const t of got) t.dispose();
  clearAttentionCache();
  expect(hostMemoryStats()).toEqual(start);
}

describe('ops own their inputs from the call (cpu)', () => {
  it('scaledDotProductAttention: q, k, v and attnMask disposed right after the call', async () => {
    await compareWithDispose(() => {
      const mask = Tensor.fromHost(randnArray(S * S, 9), [1, 1, S, S], 'f32', cpu);
      return { tensors: [...qkv(1), mask] };
    }, ([q, k, v, mask]) => scaledDotProductAttention(q!, k!, v!, { attnMask: mask!, enableGQA: true, returnLse: true }));
    await compareWithDispose(() => ({ tensors: qkv(2) }), ([q, k, v]) => scaledDotProductAttention(q!, k!, v!, { isCausal: true, enableGQA: true }));
  });

  it('flexAttention: q, k, v, a captured tensor, the block mask and its captured ids disposed right after the call', async () => {
    await compareWithDispose(async () => {
      const ids = docIds();
      const bm = await createBlockMask(andMasks(causal(), documentMask(ids)), B, 1, S, S, { device: 'cpu', blockSize: 16 });
      return { tensors: [...qkv(3), slopes(), ids], masks: [bm] };
    }, ([q, k, v, sl], [bm]) => flexAttention(q!, k!, v!, { scoreMod: alibi(sl!), blockMask: bm!, enableGQA: true, returnLse: true }));
  });

  it('flexAttention: a user mask mod whose captured tensor is disposed right after the call', async () => {
    // The ids the mask mod reads inside partial blocks go right after the call.
    await compareWithDispose(async () => {
      const ids = docIds();
      const keep = maskMod(({ b, q: qi, kv }) => ids.at(b, qi).eq(ids.at(b, kv)).and(kv.le(qi.add(3))));
      const bm = await createBlockMask(keep, B, 1, S, S, { device: 'cpu', blockSize: 32 });
      return { tensors: [...qkv(4), ids], masks: [bm] };
    }, ([q, k, v], [bm]) => flexAttention(q!, k!, v!, { blockMask: bm!, enableGQA: true }));
  });

  it('attention (flex and sdpa): q, k, v, docIds and alibi slopes disposed right after the call', async () => {
    await compareWithDispose(() => ({ tensors: [...qkv(5), docIds(), slopes()] }),
      ([q, k, v, ids, sl]) => attention(q!, k!, v!, { impl: 'flex', isCausal: true, docIds: ids!, alibiSlopes: sl!, enableGQA: true }));
    await compareWithDispose(() => ({ tensors: [...qkv(6), docIds()] }),
      ([q, k, v, ids]) => attention(q!, k!, v!, { impl: 'sdpa', isCausal: true, docIds: ids!, enableGQA: true, returnLse: true }));
  });

  it('createBlockMask: the captured ids disposed right after the call', async () => {
    const build = (ids: Tensor) => createBlockMask(andMasks(causal(), documentMask(ids)), B, 1, S, S, { device: 'cpu', blockSize: 16 });
    const keepIds = docIds();
    const want = await build(keepIds);
    keepIds.dispose();
    const start = hostMemoryStats();
    const ids = docIds();
    const p = build(ids);
    ids.dispose();
    expect(ids.disposed).toBe(true);
    const got = await p;
    for (const key of Object.keys(want.host) as (keyof typeof want.host)[]) expect(got.host[key]).toEqual(want.host[key]);
    expect(hostMemoryStats()).toEqual(start);
  });

  it('an input disposed before the call is a DisposedError naming it; nothing is held afterwards', async () => {
    const start = hostMemoryStats();
    const [q, k, v] = qkv(7);
    k.dispose();
    await expect(scaledDotProductAttention(q, k, v, { enableGQA: true })).rejects.toThrow(/\bk\b/);
    await expect(flexAttention(q, k, v, { enableGQA: true })).rejects.toBeInstanceOf(DisposedError);
    const sl = slopes();
    sl.dispose();
    await expect(flexAttention(q, q, q, { scoreMod: alibi(sl) })).rejects.toThrow(/captured tensor #0/);
    q.dispose();
    v.dispose();
    expect(hostMemoryStats()).toEqual(start);
  });
});
