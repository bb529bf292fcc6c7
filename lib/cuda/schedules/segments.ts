/**
 * Segmented kernel grid for document-style masks (`FlashFwdParams.tile_starts`).
 *
 * The kernels walk 64×64 tiles. On the uniform grid a document that starts
 * mid-tile leaves tiles that straddle two documents: their rows or columns on
 * the far side of the boundary are computed and masked. A segmented grid
 * restarts the tiling at every document start, so tiles lie inside one
 * document and a document of L tokens costs what causal attention over L
 * tokens costs: ceil(L/64) query tiles whose kv tiles are the document's own,
 * with only the diagonal (and each document's short last tile) partial: less
 * area outside the mask is computed and fewer tiles evaluate the mask
 * (bench/results/kernel-notes.md, "Segmented grid").
 *
 * Any segmentation is exact: tiles are classified on their own rows and
 * columns (so the mask's classes, not the segmentation, decide correctness),
 * and the kernel masks a short tile's columns past its end (they belong to
 * the next tile) and never stores a query tile's rows past its end. The
 * document structure only decides where tiles start: from the ids of a
 * conjunct `ids[b, q] == ids[b, kv]` of the mask (what `documentMask` writes),
 * read once on the host. The segmented schedule replaces the uniform one only
 * when its estimated cost (the CTA-order cost model) is lower.
 * Internal: not exported from the package.
 * @module
 */
import type { MaskMod } from '../../mods/ir.js';
import { documentIds, maskWithinSegments } from '../../mods/transform.js';
import { Tensor } from '../../tensor.js';
import { classifyGpu } from '../../blockmask/gpu.js';
import { BlockMask } from '../../blockmask/mask.js';
import { encodeKvEntry, MAX_SEGMENTED_LENGTH, SEGMENT_TILE } from '../tiles.js';
import { adoptMask, derived, derivedTensor, forgetDerived, peekDerived } from './store.js';
import { paramsKey } from './params-key.js';

/** The segmented schedule of one mask: its lists on the segmented grid and the tile starts. */
export interface SegmentedSchedule {
  /** Block mask over the grid's tiles: `[rows, 1, nM]` rows of `nM` kv tiles, block size 64. */
  mask: BlockMask;
  /**
   * Device tensors the kernel reads (derived from the user's mask, freed with it): the tile starts
   * `[rows, nM + 1]` (padded with the sequence length) and the mask's partial / full kv lists
   * with each entry as the kernel takes it on a segmented grid, `kv_start * 128 + length`.
   */
  tensors(): { starts: Tensor; kvIndices: Tensor; fullKvIndices: Tensor };
  /** Elements between batch rows of `starts` (0 when one row serves every batch). */
  strideB: number;
  /** Query tiles per batch row (the launch grid's x extent). */
  nM: number;
  /** The mask the kernel evaluates on this grid ({@link maskWithinSegments}). */
  maskMod: MaskMod;
}

/**
 * Classes (0 empty, 1 partial, 2 full) of the listed tiles `i * nM + j` of a
 * segmented grid with tile starts `starts` (`nM + 1` entries), at batch `b`.
 */
export type TileEvaluator = (tiles: Int32Array, starts: Int32Array, b: number) => Promise<Uint8Array>;

/**
 * Tile starts per batch row for ids of shape `[S']` or `[B', S']` (read with
 * the mods' clamped indexing): tiles of at most `tile` positions that restart
 * wherever the id changes. Returns `[rows, nM + 1]` starts padded with `S`.
 */
export function segmentStarts(ids: Int32Array, idsShape: readonly number[], rows: number, S: number,
  tile = SEGMENT_TILE): { starts: Int32Array; nM: number } {
  const len = idsShape[idsShape.length - 1] ?? 0;
  const idRows = idsShape.length === 2 ? Math.max(idsShape[0]!, 1) : 1;
  const lists: number[][] = [];
  for (let b = 0; b < rows; b++) {
    const base = Math.min(b, idRows - 1) * len;
    const id = (x: number) => (len === 0 ? 0 : ids[base + Math.min(x, len - 1)]!);
    const st: number[] = [];
    for (let x = 0; x < S;) {
      const v = id(x);
      let e = x + 1;
      while (e < S && id(e) === v) e++;
      for (let t = x; t < e; t += tile) st.push(t);
      x = e;
    }
    lists.push(st);
  }
  const nM = Math.max(1, ...lists.map((l) => l.length));
  const starts = new Int32Array(rows * (nM + 1)).fill(S);
  lists.forEach((l, b) => starts.set(l, b * (nM + 1)));
  return { starts, nM };
}

/** Estimated cost of a schedule (cta-order.ts's model): 15 per query tile + 10 per full + 16 per partial tile. */
function scheduleCost(kvNum: Int32Array, fullNum: Int32Array, rowsUsed: (r: number) => boolean): number {
  let c = 0;
  for (let r = 0; r < kvNum.length; r++) if (rowsUsed(r)) c += 15 + 10 * fullNum[r]! + 16 * kvNum[r]!;
  return c;
}

/**
 * Classes of one batch row's segmented tiles `[nM, nM]`: from the uniform
 * 64×64 classes where the uniform tiles covering a segmented tile agree
 * (all empty, or all full), and on the GPU for the rest.
 */
async function classifyRow(evaluateTiles: TileEvaluator, fine: BlockMask, fineRow: number, st: Int32Array, nM: number,
  S: number): Promise<Uint8Array> {
  const T = SEGMENT_TILE;
  const fcls = fine.classes();
  const QB = fine.numQBlocks, KVB = fine.numKvBlocks;
  const plane = fineRow * QB * KVB;
  const cls = new Uint8Array(nM * nM);
  // Segmented tiles that intersect uniform kv block v: [firstOf[v], lastOf[v]].
  const firstOf = new Int32Array(KVB).fill(-1), lastOf = new Int32Array(KVB).fill(-2);
  for (let j = 0; j < nM && st[j]! < S; j++) {
    for (let v = Math.floor(st[j]! / T); v <= Math.floor((st[j + 1]! - 1) / T); v++) {
      if (firstOf[v] === -1) firstOf[v] = j;
      lastOf[v] = j;
    }
  }
  const stamp = new Int32Array(nM).fill(-1);
  const evaluate: number[] = [];
  for (let i = 0; i < nM && st[i]! < S; i++) {
    const u0 = Math.floor(st[i]! / T), u1 = Math.floor((st[i + 1]! - 1) / T);
    for (let u = u0; u <= u1; u++) {
      const row = plane + u * KVB;
      for (let v = 0; v < KVB; v++) {
        if (fcls[row + v] === 0) continue;
        for (let j = firstOf[v]!; j <= lastOf[v]!; j++) {
          if (stamp[j] === i) continue;
          stamp[j] = i;
          const v0 = Math.floor(st[j]! / T), v1 = Math.floor((st[j + 1]! - 1) / T);
          let any0 = false, any2 = false, other = false;
          for (let uu = u0; uu <= u1; uu++) {
            for (let vv = v0; vv <= v1; vv++) {
              const c = fcls[plane + uu * KVB + vv]!;
              if (c === 0) any0 = true; else if (c === 2) any2 = true; else other = true;
            }
          }
          if (!any0 && !other) cls[i * nM + j] = 2;          // inside full tiles only
          else if (!any2 && !other && any0) cls[i * nM + j] = 0;
          else evaluate.push(i * nM + j);
        }
      }
    }
  }
  if (evaluate.length > 0) {
    const got = await evaluateTiles(Int32Array.from(evaluate), st, fineRow);
    evaluate.forEach((t, k) => { cls[t] = got[k]!; });
  }
  return cls;
}

/**
 * Builds the segmented schedule of `bm` (a mask on `deviceIndex`) from its
 * uniform 64×64 kernel schedule `fine`, or returns null when the mask has no
 * document ids, the grid would equal the uniform one, or it is not cheaper.
 * Tiles the uniform classes leave open are classified by `opts.evaluateTiles`
 * (default: the generated classification kernel on the GPU); `opts.always`
 * skips the cost comparison (tests).
 */
export async function buildSegmentedSchedule(bm: BlockMask, fine: BlockMask, params: Readonly<Record<string, number>>,
  deviceIndex: number, opts: { evaluateTiles?: TileEvaluator; always?: boolean; readMod?: () => MaskMod } = {}): Promise<SegmentedSchedule | null> {
  const mod = bm.maskMod;
  const T = SEGMENT_TILE;
  if (!mod || bm.qLen !== bm.kvLen || fine.H !== 1 || fine.blockSize[0] !== T || fine.blockSize[1] !== T) return null;
  const idsTensor = documentIds(mod);
  if (!idsTensor) return null;
  const S = bm.qLen, rows = fine.B;
  // A mask made for every batch (B = 1) whose ids differ per batch row: the block mask holds
  // batch 0's blocks only, and the conjunct would be dropped for rows it does not describe.
  if (rows === 1 && idsTensor.shape.length === 2 && idsTensor.shape[0]! > 1) return null;
  if (S >= MAX_SEGMENTED_LENGTH) return null;   // every kv entry must fit an int32
  // Data is read through `readMod` (the calling op's handles on the captured tensors,
  // lib/ownership.ts); what is kept refers to the mask's own mod.
  const reader = opts.readMod?.() ?? mod;
  const ids = (await (documentIds(reader) ?? idsTensor).toHost()) as Int32Array;
  const { starts, nM } = segmentStarts(ids, idsTensor.shape, rows, S);
  const uniformM = Math.ceil(S / T);
  if (nM > 2 * uniformM) return null;   // tiny segments: more tiles than the uniform grid saves
  let same = nM === uniformM;
  for (let r = 0; same && r < rows; r++) for (let i = 0; same && i < nM; i++) same = starts[r * (nM + 1) + i] === i * T;
  if (same) return null;

  const evaluate: TileEvaluator = opts.evaluateTiles
    ?? ((tiles, st, b) => classifyGpu(reader, params, deviceIndex, 1, 1, S, S, T, T, tiles, { starts: st, b }));
  const cls = new Uint8Array(rows * nM * nM);
  for (let r = 0; r < rows; r++) {
    const st = starts.subarray(r * (nM + 1), (r + 1) * (nM + 1));
    cls.set(await classifyRow(evaluate, fine, r, st, nM, S), r * nM * nM);
  }
  const mask = BlockMask.fromClasses(cls, {
    dims: { B: rows, H: 1, QB: nM, KVB: nM }, qLen: S, kvLen: S, blockSize: [T, T], maskMod: mod,
    device: bm.device, method: fine.method,
  });
  const segCost = scheduleCost(mask.host.kvNumBlocks, mask.host.fullKvNumBlocks,
    (r) => starts[Math.floor(r / nM) * (nM + 1) + (r % nM)]! < S);
  const uniCost = scheduleCost(fine.host.kvNumBlocks, fine.host.fullKvNumBlocks, () => true);
  if (!opts.always && segCost >= 0.98 * uniCost) return null;
  adoptMask(bm, mask);
  // kv list entries as the kernel reads them: block j of batch row r -> its start and length.
  const encode = (idx: Int32Array) => {
    const out = new Int32Array(idx.length), per = nM * nM;
    for (let k = 0; k < idx.length; k++) {
      const base = Math.floor(k / per) * (nM + 1), j = idx[k]!;
      out[k] = encodeKvEntry(starts[base + j]!, starts[base + j + 1]! - starts[base + j]!);
    }
    return out;
  };
  const upload = (key: string, data: () => Int32Array, shape: number[]) =>
    derivedTensor(bm, `segments:${key}`, () => Tensor.fromHost(data(), shape, 'i32', { device: bm.device }));
  return {
    mask, strideB: rows > 1 ? nM + 1 : 0, nM, maskMod: maskWithinSegments(mod)!,
    tensors: () => ({
      starts: upload('starts', () => starts, [rows, nM + 1]),
      kvIndices: upload('kv', () => encode(mask.host.kvIndices), [rows, 1, nM, nM]),
      fullKvIndices: upload('fullkv', () => encode(mask.host.fullKvIndices), [rows, 1, nM, nM]),
    }),
  };
}

/**
 * {@link buildSegmentedSchedule}, once per (mask, mask params): the plan asks
 * for it only where `fine` lists the mask's own classes at these params. A
 * failure rejects this call and is retried by the next one.
 */
export function segmentedSchedule(bm: BlockMask, fine: BlockMask, params: Readonly<Record<string, number>>,
  deviceIndex: number, readMod?: () => MaskMod): Promise<SegmentedSchedule | null> {
  const key = segmentsKey(bm, params);
  const p = derived(bm, key, () => buildSegmentedSchedule(bm, fine, params, deviceIndex, readMod ? { readMod } : {}));
  p.catch(() => forgetDerived(bm, key, p));
  return p;
}

function segmentsKey(bm: BlockMask, params: Readonly<Record<string, number>>): string {
  return `segments|${paramsKey(bm.maskMod, params)}`;
}

/** The segmented schedule a launch built for (bm, params), if any was asked for. */
export function cachedSegmentedSchedule(bm: BlockMask, params: Readonly<Record<string, number>>): Promise<SegmentedSchedule | null> | undefined {
  return peekDerived(bm, segmentsKey(bm, params));
}
