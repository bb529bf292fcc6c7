/**
 * KV-sharded decoding: a long KV cache split by tokens across the ranks of a
 * transport, and attention over it.
 *
 * Distribution: round-robin by chunks of `chunkTokens` tokens. Global token t
 * of a sequence lies in chunk j = ⌊t / C⌋ on rank j mod G, at local position
 * ⌊j / G⌋·C + t mod C; so every rank holds about 1/G of a long sequence, and
 * a rank's part is its chunks back to back. Appends go to the ranks the new
 * positions fall on (C a multiple of the page size wastes no page).
 *
 * `shardedPagedAttention`: every local rank runs pagedAttention over its
 * part with mods at GLOBAL positions (`kv` mapped back through the chunk
 * rule, `q` shifted by the sequence's global length minus the shard's, so the
 * causal end alignment uses the global length); a sequence with no token on a
 * rank gives that rank LSE −∞. The partial (out, LSE) of every rank are
 * all-gathered (small: T × Hq rows) and merged by LSE on every local rank.
 * @module
 */
import { requireVerifiedGpuPath } from '../cuda/switches.js';
import { checkSignal, throwIfAborted } from '../abort.js';
import { DeviceError, InvalidArgumentError, ShapeError, UnknownSequenceError } from '../errors.js';
import { describeValue } from '../messages.js';
import { Expr, MaskMod, ScoreMod, modArgs, param, substituteArgs } from '../mods/ir.js';
import { KvCache, type KvDType } from '../serving/kv-cache.js';
import { pagedAttentionIn, type PagedAttentionOptions } from '../serving/paged-attention.js';
import type { AttentionWithLse } from '../sdpa.js';
import { Tensor } from '../tensor.js';
import { checkBool, checkKeys } from '../validate.js';
import { emptyAccumulator, mergeInto } from './lse-merge.js';
import { lseMergeKernel } from './lse-merge-cuda.js';
import type { Transport } from './transport.js';

/** Options of {@link ShardedKvCache}. */
export interface ShardedKvCacheOptions {
  /** The ranks (a virtual transport or an NCCL communicator); one cache per local rank, on its device. */
  transport: Transport;
  /** Tokens per chunk of the round-robin distribution (default: 64 × pageSize). */
  chunkTokens?: number;
  /** Tokens per page of each rank's cache. */
  pageSize: number;
  /** Pages of each rank's cache. */
  numPages: number;
  numKvHeads: number;
  headDim: number;
  dtype?: KvDType;
}

/** A sequence's id in a {@link ShardedKvCache}. */
export type ShardedSequenceId = number;

/**
 * A KV cache sharded by tokens across a transport's ranks (see the module
 * comment for the distribution), with `newSequence` / `append` / `length` /
 * `free` like {@link KvCache}. `caches[i]` is local rank i's cache.
 */
export class ShardedKvCache {
  readonly transport: Transport;
  readonly chunkTokens: number;
  /** One cache per local rank (order of `transport.localRanks`). */
  readonly caches: readonly KvCache[];
  readonly #seqs = new Map<ShardedSequenceId, { local: number[]; length: number }>();
  #next = 0;

  constructor(options: ShardedKvCacheOptions) {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an options object', describeValue(options));
    const t = options.transport;
    if (!t || typeof t !== 'object' || typeof t.allGather !== 'function' || !Array.isArray(t.localRanks)) {
      throw new InvalidArgumentError('options.transport', 'a Transport (createVirtualTransport(...) or an NCCL Communicator)', describeValue(t));
    }
    const C = options.chunkTokens ?? 64 * options.pageSize;
    if (typeof C !== 'number' || !Number.isInteger(C) || C < 1) {
      throw new InvalidArgumentError('options.chunkTokens', 'a positive integer token count', describeValue(C));
    }
    this.transport = t;
    this.chunkTokens = C;
    const caches: KvCache[] = [];
    try {
      for (const device of t.devices) {
        caches.push(new KvCache({
          pageSize: options.pageSize, numPages: options.numPages, numKvHeads: options.numKvHeads, headDim: options.headDim,
          ...(options.dtype ? { dtype: options.dtype } : {}), device,
        }));
      }
    } catch (e) {
      for (const c of caches) c.dispose();
      throw e;
    }
    this.caches = Object.freeze(caches);
  }

  get numKvHeads(): number { return this.caches[0]!.numKvHeads; }
  get headDim(): number { return this.caches[0]!.headDim; }
  get dtype(): KvDType { return this.caches[0]!.dtype; }

  /** A new empty sequence (on every local rank). */
  newSequence(): ShardedSequenceId {
    const id = this.#next++;
    this.#seqs.set(id, { local: this.caches.map((c) => c.newSequence()), length: 0 });
    return id;
  }

  /** The sequence's global length (tokens over all ranks). */
  length(seq: ShardedSequenceId): number { return this.#state(seq, 'seq').length; }

  /** Tokens of the sequence on local rank i. */
  localLength(seq: ShardedSequenceId, i: number): number { return this.caches[i]!.length(this.#state(seq, 'seq').local[i]!); }

  /** @internal The local sequence id of `seq` in local rank i's cache. */
  localSequence(seq: ShardedSequenceId, i: number): number { return this.#state(seq, 'seq').local[i]!; }

  /** Frees the sequence on every rank. */
  free(seq: ShardedSequenceId): void {
    const st = this.#state(seq, 'seq');
    st.local.forEach((l, i) => this.caches[i]!.free(l));
    this.#seqs.delete(seq);
  }

  /** Frees every rank's pools. */
  dispose(): void {
    for (const c of this.caches) c.dispose();
    this.#seqs.clear();
  }

  /** Rank and local position of global token t. */
  place(t: number): { rank: number; local: number } {
    const C = this.chunkTokens, G = this.transport.size;
    const j = Math.floor(t / C);
    return { rank: j % G, local: Math.floor(j / G) * C + (t % C) };
  }

  /**
   * Appends new tokens `k`, `v` `[T, Hkv, D]` (packed in the order of `seqs`,
   * `options.tokens` per sequence; on the local ranks' device, so one process
   * driving several GPUs appends per device) to the ranks their global
   * positions fall on. Every local rank's cache receives
   * its tokens; tokens of ranks this process does not drive are dropped (each
   * process appends the same tokens).
   */
  async append(seqs: readonly ShardedSequenceId[], k: Tensor, v: Tensor, options: { tokens: readonly number[]; signal?: AbortSignal }): Promise<void> {
    const signal = checkSignal(options?.signal);
    if (!Array.isArray(seqs)) throw new InvalidArgumentError('seqs', 'an array of sequences', describeValue(seqs));
    const tokens = options?.tokens;
    if (!Array.isArray(tokens) || tokens.length !== seqs.length) {
      throw new ShapeError('options.tokens', `${seqs.length} counts (one per sequence of seqs)`, describeValue(tokens));
    }
    const states = seqs.map((s, i) => this.#state(s, `seqs[${i}]`));
    if (new Set(seqs).size !== seqs.length) throw new InvalidArgumentError('seqs', 'sequences that appear once each', 'a repeated sequence');
    let total = 0;
    tokens.forEach((n, i) => {
      if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`options.tokens[${i}]`, 'a non-negative integer', describeValue(n));
      total += n;
    });
    if (!(k instanceof Tensor) || !(v instanceof Tensor) || k.ndim !== 3 || v.ndim !== 3 || k.shape[0] !== total || v.shape[0] !== total) {
      throw new ShapeError('k', `k and v of shape [${total}, Hkv, D] (the tokens of options.tokens)`, `${String(k)} / ${String(v)}`);
    }
    // Per local rank: runs of rows (src row, count) of each sequence, in order.
    const plans = this.caches.map(() => ({ seqs: [] as number[], counts: [] as number[], runs: [] as Array<[number, number]> }));
    const rankIndex = new Map(this.transport.localRanks.map((r, i) => [r, i] as const));
    let row = 0;
    states.forEach((st, si) => {
      const per = new Map<number, number>();
      for (let t = st.length; t < st.length + tokens[si]!; ) {
        const { rank } = this.place(t);
        const runEnd = Math.min(st.length + tokens[si]!, (Math.floor(t / this.chunkTokens) + 1) * this.chunkTokens);
        const i = rankIndex.get(rank);
        if (i !== undefined) {
          plans[i]!.runs.push([row + t - st.length, runEnd - t]);
          per.set(i, (per.get(i) ?? 0) + runEnd - t);
        }
        t = runEnd;
      }
      for (const [i, n] of per) { plans[i]!.seqs.push(st.local[i]!); plans[i]!.counts.push(n); }
      row += tokens[si]!;
    });
    throwIfAborted(signal, 'ShardedKvCache.append');
    const made: Tensor[] = [];
    try {
      await Promise.all(plans.map(async (p, i) => {
        if (p.seqs.length === 0) return;
        const device = this.caches[i]!.device;
        const n = p.counts.reduce((a, b) => a + b, 0);
        const gather = (x: Tensor): Tensor => {
          const src = x.device === device ? x : undefined;
          const dst = Tensor.empty([n, x.shape[1]!, x.shape[2]!], x.dtype, { device });
          made.push(dst);
          let o = 0;
          for (const [r, c] of p.runs) {
            if (!src) throw new DeviceError('k', `tokens on ${device} (rank ${this.transport.localRanks[i]}'s device)`, x.device);
            dst.narrow(0, o, c).copyFrom(src.narrow(0, r, c));
            o += c;
          }
          return dst;
        };
        await this.caches[i]!.append(p.seqs, gather(k), gather(v), { tokens: p.counts, ...(signal ? { signal } : {}) });
      }));
      states.forEach((st, i) => { st.length += tokens[i]!; });
    } finally {
      for (const t of made) t.dispose();
    }
  }

  #state(seq: unknown, argument: string): { local: number[]; length: number } {
    const st = this.#seqs.get(seq as number);
    if (!st) throw new UnknownSequenceError(argument, 'a live sequence of this ShardedKvCache', describeValue(seq));
    return st;
  }
}

/**
 * Options of {@link shardedPagedAttention}: pagedAttention's, with positions
 * global (`q` absolute, `kv` the token's position in the whole sequence, `b`
 * the index in seqs; `causal` aligned to the END of the global sequence), the
 * sharded cache's sequence ids, and the transport (default: the cache's) in
 * place of `backend`.
 */
export interface ShardedPagedAttentionOptions extends Omit<PagedAttentionOptions, 'seqs' | 'backend'> {
  seqs: readonly ShardedSequenceId[];
  /** Defaults to the cache's transport. */
  transport?: Transport;
}

const KEYS = ['seqs', 'queryTokens', 'causal', 'scoreMod', 'maskMod', 'scale', 'returnLse', 'params', 'transport', 'signal'] as const;
const RANK = 'cp_rank';
const QSHIFT = 'cp_q_shift';

/**
 * pagedAttention over a {@link ShardedKvCache}: equal (within rounding) to
 * pagedAttention on one KvCache holding every token. `q` `[T, Hq, D]`: one
 * tensor per local rank (on its device), or one tensor when every local rank
 * shares its device. Returns one result per local rank (every rank gets the
 * merged output).
 */
export async function shardedPagedAttention(q: Tensor | readonly Tensor[], cache: ShardedKvCache, options: ShardedPagedAttentionOptions):
  Promise<{ out: Tensor[]; lse?: Tensor[] }> {
  if (!(cache instanceof ShardedKvCache)) throw new InvalidArgumentError('cache', 'a ShardedKvCache', describeValue(cache));
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an object with seqs and queryTokens', describeValue(options));
  checkKeys(options, KEYS);
  const signal = checkSignal(options.signal);
  const transport = options.transport ?? cache.transport;
  if (transport !== cache.transport) throw new InvalidArgumentError('options.transport', "the cache's transport", 'another transport');
  const L = transport.localRanks.length, G = transport.size;
  const qs = Array.isArray(q) ? [...q as Tensor[]] : transport.devices.map(() => q as Tensor);
  if (qs.length !== L) throw new InvalidArgumentError('q', `${L} tensors (one per local rank)`, `${qs.length}`);
  qs.forEach((x, i) => {
    if (!(x instanceof Tensor)) throw new InvalidArgumentError(`q[${i}]`, 'a Tensor', describeValue(x));
    if (x.device !== transport.devices[i]) throw new DeviceError(Array.isArray(q) ? `q[${i}]` : 'q', `a tensor on ${transport.devices[i]} (rank ${transport.localRanks[i]}'s device)`, x.device);
    if (x.ndim !== 3 || x.shape.some((d, j) => d !== qs[0]!.shape[j])) throw new ShapeError(`q[${i}]`, `shape [${qs[0]!.shape.join(', ')}] ([T, Hq, D] on every rank)`, `[${x.shape.join(', ')}]`);
  });
  // Its CUDA LSE merge and the shards shorter than their query tokens have not yet run on a GPU.
  if (qs.some((x) => x.isCuda)) requireVerifiedGpuPath('shardedPagedAttention', "virtual ranks on the CPU backend (device 'cpu') compute it");
  const { seqs, queryTokens } = options;
  if (!Array.isArray(seqs) || !Array.isArray(queryTokens) || seqs.length !== queryTokens.length) {
    throw new ShapeError('options.queryTokens', 'one count per sequence of options.seqs', describeValue(queryTokens));
  }
  const [T, Hq, D] = qs[0]!.shape as [number, number, number];
  const lens = seqs.map((s) => cache.length(s));
  let sum = 0;
  queryTokens.forEach((m, i) => {
    if (!Number.isInteger(m) || m < 0) throw new InvalidArgumentError(`options.queryTokens[${i}]`, 'a non-negative integer', describeValue(m));
    if (m > lens[i]!) throw new ShapeError(`options.queryTokens[${i}]`, `at most ${lens[i]} (the tokens cached for seqs[${i}]; append the query tokens first)`, String(m));
    sum += m;
  });
  if (sum !== T) throw new ShapeError('options.queryTokens', `counts adding up to q.shape[0] = ${T}`, `counts adding up to ${sum}`);
  const isCausal = checkBool(options.causal, 'options.causal', true);
  const returnLse = checkBool(options.returnLse, 'options.returnLse');
  for (const m of [options.scoreMod, options.maskMod]) {
    for (const p of m?.params ?? []) if (p.name === RANK || p.name === QSHIFT) throw new InvalidArgumentError('options.maskMod', `a mod without a param named ${p.name}`, p.name);
  }
  const C = cache.chunkTokens;
  const starts: number[] = [];
  queryTokens.reduce((a, m, i) => { starts[i] = a; return a + m; }, 0);

  const made: Tensor[] = [];
  const own = <X extends Tensor>(t: X): X => { made.push(t); return t; };
  try {
    for (const d of new Set(transport.devices)) if (d !== 'cpu') await lseMergeKernel(Number(d.slice(5)));
    const parts = await Promise.all(transport.localRanks.map(async (rank, i) => {
      const device = transport.devices[i]!;
      const out = own(Tensor.zeros([T, Hq, D], qs[i]!.dtype, { device }));
      const lse = own(Tensor.fromHost(new Float32Array(T * Hq).fill(-Infinity), [T, Hq], 'f32', { device }));
      // The sequences with tokens on this rank; the others keep LSE −∞.
      const idx = seqs.map((_, b) => b).filter((b) => queryTokens[b]! > 0 && cache.localLength(seqs[b]!, i) > 0);
      if (idx.length === 0) return { out, lse };
      const Tr = idx.reduce((a, b) => a + queryTokens[b]!, 0);
      const qr = own(Tensor.empty([Tr, Hq, D], qs[i]!.dtype, { device }));
      let o = 0;
      for (const b of idx) { qr.narrow(0, o, queryTokens[b]!).copyFrom(qs[i]!.narrow(0, starts[b]!, queryTokens[b]!)); o += queryTokens[b]!; }
      // q (pagedAttention: local length − m + i) + shift = global length − m + i.
      const shift = Int32Array.from(idx, (b) => lens[b]! - cache.localLength(seqs[b]!, i));
      const shiftT = own(Tensor.fromHost(shift, [idx.length], 'i32', { device }));
      // The local batch skips sequences with no token here: b maps back to the index in options.seqs.
      const bT = own(Tensor.fromHost(Int32Array.from(idx), [idx.length], 'i32', { device }));
      const mods = shardMods(options.maskMod, options.scoreMod, isCausal, shiftT, bT, C, G);
      const r = await pagedAttentionIn(qr, cache.caches[i]!, {
        seqs: idx.map((b) => cache.localSequence(seqs[b]!, i)), queryTokens: idx.map((b) => queryTokens[b]!), causal: false,
        maskMod: mods.maskMod, ...(mods.scoreMod ? { scoreMod: mods.scoreMod } : {}), returnLse: true,
        params: { ...(options.params ?? {}), [RANK]: rank },
        ...(options.scale !== undefined ? { scale: options.scale } : {}), ...(signal ? { signal } : {}),
      }, true) as AttentionWithLse;
      try {
        o = 0;
        for (const b of idx) {
          const m = queryTokens[b]!;
          out.narrow(0, starts[b]!, m).copyFrom(r.out.narrow(0, o, m));
          lse.narrow(0, starts[b]!, m).copyFrom(r.lse.narrow(0, o, m));
          o += m;
        }
      } finally {
        r.out.dispose();
        r.lse.dispose();
      }
      return { out, lse };
    }));
    throwIfAborted(signal, 'shardedPagedAttention');
    const gOut = parts.map((p) => own(Tensor.empty([G * T, Hq, D], p.out.dtype, { device: p.out.device })));
    const gLse = parts.map((p) => own(Tensor.empty([G * T, Hq], 'f32', { device: p.lse.device })));
    await transport.allGather(parts.map((p) => p.out), gOut, signal ? { signal } : {});
    await transport.allGather(parts.map((p) => p.lse), gLse, signal ? { signal } : {});
    const outs: Tensor[] = [], lses: Tensor[] = [];
    gOut.forEach((go, i) => {
      const a = emptyAccumulator(1, 1, T * Hq, D, go.device);
      own(a.acc); own(a.lse);
      for (let g = 0; g < G; g++) {
        mergeInto(a.acc, a.lse, {
          out: go.narrow(0, g * T, T).reshape(1, 1, T * Hq, D), lse: gLse[i]!.narrow(0, g * T, T).reshape(1, 1, T * Hq), rowOffset: 0,
        });
      }
      // Fresh outputs: the accumulators are freed with the other temporaries.
      const cast = go.dtype === 'f32' ? Tensor.empty([T, Hq, D], 'f32', { device: go.device }).copyFrom(a.acc.reshape(T, Hq, D))
        : a.acc.to(go.dtype).reshape(T, Hq, D);
      outs.push(cast);
      if (returnLse) lses.push(Tensor.empty([T, Hq], 'f32', { device: go.device }).copyFrom(a.lse.reshape(T, Hq)));
    });
    return returnLse ? { out: outs, lse: lses } : { out: outs };
  } finally {
    for (const t of made) t.dispose();
  }
}

/** The shard's mods: kv and q at global positions (see the module comment), causal by the global end. */
function shardMods(mask: MaskMod | undefined, score: ScoreMod | undefined, isCausal: boolean, shift: Tensor, bMap: Tensor, C: number, G: number) {
  const { b, q, kv } = modArgs;
  const kvG = kv.floorDiv(C).mul(G * C).add(param(RANK, 'int').mul(C)).add(kv.mod(C));
  const qG = q.add(shift.at(b));
  const sub = (n: Expr): Expr => new Expr(substituteArgs(n.node, { q: qG.node, kv: kvG.node, b: bMap.at(b).node }));
  let m: Expr = isCausal ? kvG.le(qG) : new Expr({ op: 'const', type: 'bool', args: [], value: 1 });
  if (mask) m = m.and(sub(mask.expr));
  return {
    maskMod: new MaskMod(m),
    scoreMod: score ? new ScoreMod('score', sub(score.expr)) : undefined,
  };
}
