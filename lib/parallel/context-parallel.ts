/**
 * `contextParallelAttention`: ring attention over a sequence split across G
 * ranks (lib/parallel/shard.ts). Each rank keeps its Q shard; the K/V shards
 * travel around the ring (G steps, `transport.ringShift`, double-buffered so
 * the next shift is in flight while the current block is attended to). At
 * step s rank r holds the K/V shard of rank (r − s) mod G and attends its Q
 * chunks to that shard's chunks with flexAttention; every partial (out, LSE)
 * is merged into a running fp32 accumulator per rank (lse-merge.ts), cast to
 * the input dtype at the end.
 *
 * Masks and score mods see GLOBAL positions: a (q chunk, kv chunk) pair runs
 * the mods with `q`/`kv` shifted by the chunks' global starts (runtime params,
 * one kernel for every pair). Pairs a causal mask excludes entirely are
 * skipped; pairs it allows entirely run unmasked; the diagonal pairs, and any
 * pair of a mask that depends only on `q − kv` with equal offsets, use the
 * mask as is (an analytic block mask).
 * @module
 */
import { requireVerifiedGpuPath } from '../cuda/switches.js';
import { checkSignal, throwIfAborted } from '../abort.js';
import { createBlockMask } from '../blockmask.js';
import { DeviceError, DTypeError, InvalidArgumentError, NotImplementedError, ShapeError } from '../errors.js';
import { flexAttention } from '../flex.js';
import { describeValue } from '../messages.js';
import { andMasks, causal, MaskMod, ScoreMod } from '../mods/index.js';
import { maskDims } from '../attention/mask-cache.js';
import { Tensor } from '../tensor.js';
import { checkBool, checkKeys, checkQkv, checkScale, type QkvDims } from '../validate.js';
import { emptyAccumulator, mergeInto } from './lse-merge.js';
import { lseMergeKernel } from './lse-merge-cuda.js';
import { checkLayout, shardSegments, type ShardLayout, type ShardSegment } from './shard.js';
import { impliesCausal, KV_OFFSET, Q_OFFSET, shiftInvariant, shiftMaskMod, shiftScoreMod } from './shift-mods.js';
import type { Transport } from './transport.js';

/** Options of {@link contextParallelAttention}. */
export interface ContextParallelOptions {
  /** The ranks: a virtual transport ({@link createVirtualTransport}) or an NCCL communicator. */
  transport?: Transport;
  /** Same as `transport` (a Communicator implements Transport). */
  communicator?: Transport;
  /** How the shards were cut ({@link shardSequence}): `'zigzag'` (default) or `'contiguous'`. */
  layout?: ShardLayout;
  /** Causal over global positions (`kv <= q`), combined with `maskMod` by AND. */
  isCausal?: boolean;
  /** `score_mod(score, b, h, q, kv)` with global positions. */
  scoreMod?: ScoreMod;
  /** `mask_mod(b, h, q, kv)` with global positions (e.g. `documentMask(docIds)` with docIds over the whole sequence). */
  maskMod?: MaskMod;
  /** Not supported: a block mask is built per shard pair from `maskMod` (pass the mask there). */
  blockMask?: never;
  /** Allow `Hq` to be a multiple of `Hkv`. */
  enableGQA?: boolean;
  /** Multiplier of q·k; default `1 / sqrt(D)`. */
  scale?: number;
  /** Also return each rank's LSE (f32 `[B, Hq, S/G]`, natural log, −Infinity on fully masked rows). */
  returnLse?: boolean;
  /** Values of the mods' own `param(...)` scalars. */
  params?: Record<string, number>;
  /** Cancels the call between steps; what it made is freed. */
  signal?: AbortSignal;
}

const KEYS = ['transport', 'communicator', 'layout', 'isCausal', 'scoreMod', 'maskMod', 'blockMask', 'enableGQA', 'scale',
  'returnLse', 'params', 'signal'] as const;

/** Output of {@link contextParallelAttention}: one entry per local rank. */
export interface ContextParallelResult {
  /** `[B, Hq, S/G, Dv]` per local rank, in the input dtype, rows in the layout's local order. */
  out: Tensor[];
  /** `[B, Hq, S/G]` f32 per local rank, with `returnLse`. */
  lse?: Tensor[];
}

/** How one (q chunk, kv chunk) pair is attended. */
type PairPlan = { kind: 'skip' } | { kind: 'full' } | { kind: 'mask'; mask: MaskMod; shifted: boolean };

/**
 * Attention of a sequence sharded across `transport`'s ranks, equal (within
 * rounding) to single-device `flexAttention` on the whole sequence.
 *
 * @param qShards Per local rank `[B, Hq, Sq/G, D]` on the rank's device (from {@link shardSequence}).
 * @param kShards Per local rank `[B, Hkv, Skv/G, D]`.
 * @param vShards Per local rank `[B, Hkv, Skv/G, Dv]`.
 *
 * ```ts
 * const t = createVirtualTransport({ size: 4, device: 'cpu' });
 * const [qs, ks, vs] = [q, k, v].map((x) => shardSequence(x, 4));
 * const { out } = await contextParallelAttention(qs, ks, vs, { transport: t, isCausal: true });
 * const whole = unshardSequence(out);                   // == flexAttention(q, k, v, causal)
 * ```
 */
export async function contextParallelAttention(
  qShards: readonly Tensor[], kShards: readonly Tensor[], vShards: readonly Tensor[], options: ContextParallelOptions,
): Promise<ContextParallelResult> {
  if (options === null || typeof options !== 'object') {
    throw new InvalidArgumentError('options', 'an options object with transport', describeValue(options));
  }
  checkKeys(options, KEYS);
  const transport = checkTransport(options.transport ?? options.communicator, options.transport !== undefined && options.communicator !== undefined);
  if (options.blockMask !== undefined) {
    throw new NotImplementedError('contextParallelAttention: options.blockMask is not supported; pass the mask as options.maskMod ' +
      '(with global positions): a block mask is built for each pair of shards');
  }
  const signal = checkSignal(options.signal);
  const layout = checkLayout(options.layout);
  const enableGQA = checkBool(options.enableGQA, 'options.enableGQA');
  const isCausal = checkBool(options.isCausal, 'options.isCausal');
  const returnLse = checkBool(options.returnLse, 'options.returnLse');
  const n = transport.localRanks.length;
  const G = transport.size;
  const qs = checkShards(qShards, 'qShards', transport), ks = checkShards(kShards, 'kShards', transport), vs = checkShards(vShards, 'vShards', transport);
  const dims = checkQkv(qs[0], ks[0], vs[0], enableGQA);
  for (let i = 1; i < n; i++) checkQkv(qs[i], ks[i], vs[i], enableGQA);
  // Its CUDA LSE merge (lse-merge-cuda.ts) has not yet run on a GPU.
  if (qs.some((x) => x.isCuda)) requireVerifiedGpuPath('contextParallelAttention', "virtual ranks on the CPU backend (device 'cpu') compute it");
  const scale = checkScale(options.scale, dims.D);
  const userParams = options.params ?? {};
  if (typeof userParams !== 'object' || userParams === null) throw new InvalidArgumentError('options.params', 'an object of numbers', typeof userParams);
  if (options.scoreMod !== undefined && !(options.scoreMod instanceof ScoreMod)) {
    throw new InvalidArgumentError('options.scoreMod', 'a ScoreMod (from scoreMod(...) or a built-in such as softcap(30))', describeValue(options.scoreMod));
  }
  if (options.maskMod !== undefined && !(options.maskMod instanceof MaskMod)) {
    throw new InvalidArgumentError('options.maskMod', 'a MaskMod (from maskMod(...) or a built-in such as causal())', describeValue(options.maskMod));
  }
  const SqG = dims.Sq * G, SkvG = dims.Skv * G;
  const qSegs = transport.localRanks.map((r) => shardSegments(SqG, G, r, layout, 'qShards[i].shape[2] × size'));
  const kvSegsOf = (rank: number): ShardSegment[] => shardSegments(SkvG, G, rank, layout, 'kShards[i].shape[2] × size');
  kvSegsOf(0);

  const scoreMod = options.scoreMod && shiftScoreMod(options.scoreMod);
  const mask = isCausal && options.maskMod ? andMasks(causal(), options.maskMod) : isCausal ? causal() : options.maskMod;
  const causalOnly = mask !== undefined && mask.analytic?.kind === 'causal';
  const skipsFuture = mask !== undefined && (isCausal || impliesCausal(mask.analytic));
  const invariant = mask !== undefined && shiftInvariant(mask.analytic);
  let shifted: MaskMod | undefined;
  const plan = (a: ShardSegment, b: ShardSegment): PairPlan => {
    if (!mask || a.length === 0 || b.length === 0) return { kind: 'full' };
    if (skipsFuture && b.start > a.start + a.length - 1) return { kind: 'skip' };
    if (causalOnly && b.start + b.length - 1 <= a.start) return { kind: 'full' };
    if (invariant && a.start === b.start) return { kind: 'mask', mask, shifted: false };
    return { kind: 'mask', mask: (shifted ??= shiftMaskMod(mask)), shifted: true };
  };

  const devices = transport.devices;
  const made: Tensor[] = [];
  const own = <T extends Tensor>(t: T): T => { made.push(t); return t; };
  try {
    for (const d of new Set(devices)) if (d !== 'cpu') await lseMergeKernel(Number(d.slice(5)));
    // Ring buffers: contiguous copies (the caller's shards stay untouched), two per tensor kind.
    let cur = ks.map((k, i) => ({ k: own(Tensor.empty(k.shape, k.dtype, { device: k.device })).copyFrom(k),
      v: own(Tensor.empty(vs[i]!.shape, vs[i]!.dtype, { device: vs[i]!.device })).copyFrom(vs[i]!) }));
    let next = G > 1 ? ks.map((k, i) => ({ k: own(Tensor.empty(k.shape, k.dtype, { device: k.device })),
      v: own(Tensor.empty(vs[i]!.shape, vs[i]!.dtype, { device: vs[i]!.device })) })) : cur;
    const accs = qs.map((q) => {
      const a = emptyAccumulator(dims.B, dims.Hq, dims.Sq, dims.Dv, q.device);
      own(a.acc); own(a.lse);
      return a;
    });
    for (let s = 0; s < G; s++) {
      throwIfAborted(signal, 'contextParallelAttention');
      const shift = s < G - 1 ? Promise.all([
        transport.ringShift(cur.map((c) => c.k), next.map((c) => c.k), signal ? { signal } : {}),
        transport.ringShift(cur.map((c) => c.v), next.map((c) => c.v), signal ? { signal } : {}),
      ]) : undefined;
      // Settle the shift even when attention fails, so no copy is left writing into freed buffers.
      const work = Promise.all(transport.localRanks.map(async (rank, i) => {
        const src = (rank - s + G) % G;
        const pairs: Array<{ a: ShardSegment; b: ShardSegment; p: PairPlan }> = [];
        for (const a of qSegs[i]!) for (const b of kvSegsOf(src)) pairs.push({ a, b, p: plan(a, b) });
        const results = await Promise.all(pairs.map(({ a, b, p }) => p.kind === 'skip' ? undefined
          : attendPair(qs[i]!, cur[i]!.k, cur[i]!.v, a, b, p, dims, { scale, enableGQA, scoreMod, params: userParams, signal })));
        for (let j = 0; j < pairs.length; j++) {
          const r = results[j];
          if (!r) continue;
          try {
            mergeInto(accs[i]!.acc, accs[i]!.lse, { out: r.out, lse: r.lse!, rowOffset: pairs[j]!.a.localStart });
          } finally {
            r.out.dispose();
            r.lse?.dispose();
          }
        }
      }));
      const [w] = await Promise.allSettled([work, shift]);
      await shift;
      if (w.status === 'rejected') throw w.reason;
      if (s < G - 1) [cur, next] = [next, cur];
    }
    throwIfAborted(signal, 'contextParallelAttention');
    const out = accs.map((a, i) => (qs[i]!.dtype === 'f32' ? a.acc : a.acc.to(qs[i]!.dtype)));
    const keep = new Set<Tensor>([...out, ...(returnLse ? accs.map((a) => a.lse) : [])]);
    for (const t of made) if (!keep.has(t)) t.dispose();
    made.length = 0;
    return returnLse ? { out, lse: accs.map((a) => a.lse) } : { out };
  } finally {
    for (const t of made) t.dispose();
  }
}

interface PairOptions {
  scale: number; enableGQA: boolean; scoreMod: ScoreMod | undefined; params: Record<string, number>; signal: AbortSignal | undefined;
}

/** flexAttention of one (q chunk, kv chunk) pair, with LSE, mods at the chunks' global offsets. */
async function attendPair(q: Tensor, k: Tensor, v: Tensor, a: ShardSegment, b: ShardSegment, p: PairPlan, dims: QkvDims,
  o: PairOptions) {
  const qc = q.narrow(2, a.localStart, a.length);
  const kc = k.narrow(2, b.localStart, b.length), vc = v.narrow(2, b.localStart, b.length);
  const params = { ...o.params, [Q_OFFSET]: a.start, [KV_OFFSET]: b.start };
  const common = {
    scale: o.scale, enableGQA: o.enableGQA, returnLse: true, params,
    ...(o.scoreMod ? { scoreMod: o.scoreMod } : {}), ...(o.signal ? { signal: o.signal } : {}),
  };
  if (p.kind !== 'mask') return flexAttention(qc, kc, vc, common);
  const { B, H } = maskDims(p.mask, dims);
  const bm = await createBlockMask(p.mask, B, H, a.length, b.length, {
    device: q.device, ...(p.shifted ? { params } : Object.keys(o.params).length ? { params: o.params } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  try {
    // A pair the mask excludes entirely (e.g. two different documents) contributes nothing.
    const h = bm.host;
    if (!h.kvNumBlocks.some((x) => x > 0) && !h.fullKvNumBlocks.some((x) => x > 0)) return undefined;
    return await flexAttention(qc, kc, vc, { ...common, blockMask: bm });
  } finally {
    bm.dispose();
  }
}

function checkTransport(t: unknown, both: boolean): Transport {
  if (both) throw new InvalidArgumentError('options.communicator', 'either options.transport or options.communicator, not both', 'both');
  const x = t as Transport | undefined;
  if (!x || typeof x !== 'object' || typeof x.ringShift !== 'function' || typeof x.allGather !== 'function'
    || !Number.isInteger(x.size) || !Array.isArray(x.localRanks) || !Array.isArray(x.devices)) {
    throw new InvalidArgumentError('options.transport', 'a Transport (createVirtualTransport(...) or an NCCL Communicator)', describeValue(t));
  }
  return x;
}

function checkShards(ts: readonly Tensor[], name: string, t: Transport): Tensor[] {
  const n = t.localRanks.length;
  if (!Array.isArray(ts) || ts.length !== n) {
    throw new InvalidArgumentError(name, `an array of ${n} tensors (one per local rank of the transport: transport.localRanks.length)`,
      Array.isArray(ts) ? `${ts.length} tensors` : describeValue(ts));
  }
  const first = ts[0];
  ts.forEach((x, i) => {
    if (!(x instanceof Tensor)) throw new InvalidArgumentError(`${name}[${i}]`, 'a Tensor', describeValue(x));
    x.assertAlive(`${name}[${i}]`);
    if (x.device !== t.devices[i]) {
      throw new DeviceError(`${name}[${i}]`, `a tensor on ${t.devices[i]} (rank ${t.localRanks[i]}'s device)`, x.device);
    }
    if (x.ndim !== first!.ndim || x.shape.some((d, j) => d !== first!.shape[j])) {
      throw new ShapeError(`${name}[${i}]`, `shape [${first!.shape.join(', ')}] (${name}[0]'s: every rank's shard has the same shape)`, `[${x.shape.join(', ')}]`);
    }
    if (x.dtype !== first!.dtype) throw new DTypeError(`${name}[${i}]`, `dtype ${first!.dtype} (${name}[0]'s)`, x.dtype);
  });
  return [...ts];
}
