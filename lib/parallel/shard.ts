/**
 * Splitting a sequence across G ranks for context parallelism, and putting it
 * back together.
 *
 * Layouts:
 * - `'zigzag'` (default, load-balanced for causal masks): the S tokens are cut
 *   into 2G equal chunks; rank r holds chunks r and 2G-1-r, in that order. Under
 *   a causal mask every rank then has the same amount of work (an early chunk
 *   sees little, its partner at the back sees much).
 * - `'contiguous'`: G equal chunks, rank r holds chunk r.
 *
 * Lengths must divide evenly (S a multiple of 2G, resp. G), as in PyTorch's
 * context parallelism: a {@link ShapeError} names the length to pad to. Equal
 * chunks keep every rank's tensors the same shape, which the ring needs (a
 * rank sends its K/V shard into a buffer of the receiver's shape).
 * @module
 */
import { InvalidArgumentError, ShapeError } from '../errors.js';
import { describeValue } from '../messages.js';
import { Tensor } from '../tensor.js';

/** How a sequence is split across ranks. */
export type ShardLayout = 'zigzag' | 'contiguous';

/** A run of tokens a rank holds: global positions `[start, start + length)` at local positions `[localStart, ...)`. */
export interface ShardSegment {
  readonly start: number;
  readonly length: number;
  readonly localStart: number;
}

/** @internal Checks a layout name. */
export function checkLayout(layout: unknown, argument = 'options.layout'): ShardLayout {
  if (layout === undefined) return 'zigzag';
  if (layout !== 'zigzag' && layout !== 'contiguous') {
    throw new InvalidArgumentError(argument, "'zigzag' or 'contiguous'", describeValue(layout));
  }
  return layout;
}

function checkRanks(G: unknown, argument: string): number {
  if (typeof G !== 'number' || !Number.isInteger(G) || G < 1) {
    throw new InvalidArgumentError(argument, 'a positive integer number of ranks', describeValue(G));
  }
  return G;
}

/** Number of chunks a sequence is cut into: 2G for zigzag, G for contiguous. */
export function chunkCount(G: number, layout: ShardLayout = 'zigzag'): number {
  return layout === 'zigzag' ? 2 * G : G;
}

/**
 * The segments rank `rank` holds of a sequence of `S` tokens split over `G`
 * ranks (global positions of its tokens, in local order). Throws a
 * {@link ShapeError} naming the length to pad to when S does not divide.
 */
export function shardSegments(S: number, G: number, rank: number, layout: ShardLayout = 'zigzag', argument = 'S'): ShardSegment[] {
  checkRanks(G, 'G');
  const lay = checkLayout(layout, 'layout');
  const n = chunkCount(G, lay);
  if (typeof S !== 'number' || !Number.isInteger(S) || S < 0) throw new InvalidArgumentError(argument, 'a non-negative integer length', describeValue(S));
  if (S % n !== 0) {
    throw new ShapeError(argument, `a sequence length that is a multiple of ${n} (${lay} layout over ${G} ranks: ${n} equal chunks); ` +
      `pad it to ${Math.ceil(S / n) * n}`, String(S));
  }
  if (!Number.isInteger(rank) || rank < 0 || rank >= G) throw new InvalidArgumentError('rank', `a rank in [0, ${G})`, describeValue(rank));
  const c = S / n;
  if (lay === 'contiguous') return [{ start: rank * c, length: c, localStart: 0 }];
  return [{ start: rank * c, length: c, localStart: 0 }, { start: (n - 1 - rank) * c, length: c, localStart: c }];
}

/** Global positions of the tokens rank `rank` holds, in local order (an Int32Array of S / G entries). */
export function shardPositions(S: number, G: number, rank: number, layout: ShardLayout = 'zigzag'): Int32Array {
  const segs = shardSegments(S, G, rank, layout);
  const out = new Int32Array(segs.reduce((a, s) => a + s.length, 0));
  for (const s of segs) for (let i = 0; i < s.length; i++) out[s.localStart + i] = s.start + i;
  return out;
}

/** Options of {@link shardSequence} and {@link unshardSequence}. */
export interface ShardOptions {
  /** The sequence dimension (default 2, attention's `[B, H, S, D]`). */
  dim?: number;
  /** `'zigzag'` (default) or `'contiguous'`. */
  layout?: ShardLayout;
}

function checkDim(dim: unknown, ndim: number, argument: string): number {
  const d = dim === undefined ? 2 : dim;
  if (typeof d !== 'number' || !Number.isInteger(d) || d < -ndim || d >= ndim) {
    throw new InvalidArgumentError(argument, `a dimension in [${-ndim}, ${ndim})`, describeValue(dim));
  }
  return d < 0 ? d + ndim : d;
}

/**
 * A new tensor of `shape` on `device` laid out with `dim` outermost (so that
 * a run along `dim` is one contiguous block any copy can fill), and that
 * storage seen in `shape`'s dimension order.
 */
function seqMajor(shape: readonly number[], dim: number, like: Tensor): { storage: Tensor; view: Tensor } {
  const order = [dim, ...shape.map((_, i) => i).filter((i) => i !== dim)];
  const storage = Tensor.empty(order.map((i) => shape[i]!), like.dtype, { device: like.device });
  const inverse = shape.map((_, i) => order.indexOf(i));
  return { storage, view: storage.permute(...inverse) };
}

/** `t` with `dim` moved to the front (the order {@link seqMajor} stores). */
function dimFirst(t: Tensor, dim: number): Tensor {
  return t.permute(dim, ...t.shape.map((_, i) => i).filter((i) => i !== dim));
}

/**
 * Splits `x` along `options.dim` into the G per-rank shards of the layout
 * (new tensors on x's device; x may be disposed afterwards). Each shard is
 * strided with the sequence dimension outermost, which attention takes as is
 * (call `.contiguous()` for a packed copy).
 *
 * ```ts
 * const qs = shardSequence(q, 4);                    // zigzag over 4 ranks: [B, H, S/4, D] each
 * ```
 */
export function shardSequence(x: Tensor, G: number, options: ShardOptions = {}): Tensor[] {
  if (!(x instanceof Tensor)) throw new InvalidArgumentError('x', 'a Tensor', describeValue(x));
  x.assertAlive('x');
  checkRanks(G, 'G');
  const dim = checkDim(options.dim, x.ndim, 'options.dim');
  const layout = checkLayout(options.layout);
  const S = x.shape[dim]!;
  const out: Tensor[] = [];
  try {
    for (let r = 0; r < G; r++) {
      const segs = shardSegments(S, G, r, layout, `x.shape[${dim}]`);
      const shape = [...x.shape];
      shape[dim] = S / G;
      const { storage, view } = seqMajor(shape, dim, x);
      out.push(view);
      for (const s of segs) {
        if (s.length > 0) storage.narrow(0, s.localStart, s.length).copyFrom(dimFirst(x.narrow(dim, s.start, s.length), dim));
      }
    }
  } catch (e) {
    for (const t of out) t.dispose();
    throw e;
  }
  return out;
}

/**
 * Reassembles the per-rank shards of {@link shardSequence} (or the per-rank
 * outputs of {@link contextParallelAttention}) into one contiguous tensor in
 * global order, on the first shard's device.
 */
export function unshardSequence(parts: readonly Tensor[], options: ShardOptions = {}): Tensor {
  if (!Array.isArray(parts) || parts.length === 0) throw new InvalidArgumentError('parts', 'a non-empty array of per-rank tensors', describeValue(parts));
  parts.forEach((p, i) => {
    if (!(p instanceof Tensor)) throw new InvalidArgumentError(`parts[${i}]`, 'a Tensor', describeValue(p));
    p.assertAlive(`parts[${i}]`);
  });
  const G = parts.length;
  const first = parts[0]!;
  const dim = checkDim(options.dim, first.ndim, 'options.dim');
  const layout = checkLayout(options.layout);
  parts.forEach((p, i) => {
    if (p.ndim !== first.ndim || p.shape.some((d: number, j: number) => d !== first.shape[j])) {
      throw new ShapeError(`parts[${i}]`, `shape [${first.shape.join(', ')}] (parts[0]'s)`, `[${p.shape.join(', ')}]`);
    }
    if (p.dtype !== first.dtype) throw new ShapeError(`parts[${i}]`, `dtype ${first.dtype} (parts[0]'s)`, p.dtype);
    if (p.device !== first.device) throw new ShapeError(`parts[${i}]`, `device ${first.device} (parts[0]'s)`, p.device);
  });
  const S = first.shape[dim]! * G;
  const shape = [...first.shape];
  shape[dim] = S;
  const { storage, view } = seqMajor(shape, dim, first);
  try {
    for (let r = 0; r < G; r++) {
      for (const s of shardSegments(S, G, r, layout, 'the total length')) {
        if (s.length > 0) storage.narrow(0, s.start, s.length).copyFrom(dimFirst(parts[r]!.narrow(dim, s.localStart, s.length), dim));
      }
    }
    if (dim === 0) return storage;
    const packed = view.contiguous();
    storage.dispose();
    return packed;
  } catch (e) {
    storage.dispose();
    throw e;
  }
}
