/**
 * `createBlockMask`: classify every (batch, head, q block, kv block) tile of a
 * mask mod as empty / partial / full and build PyTorch's block-mask layout.
 * @module
 */
import { parseDevice, type Device } from '../device.js';
import { InvalidArgumentError } from '../errors.js';
import { checkSignal, throwIfAborted } from '../abort.js';
import { runOp, type Hold } from '../ownership.js';
import type { MaskMod } from '../mods/ir.js';
import { classifyAnalytic } from './analytic.js';
import { classifyBruteForce, expandClasses } from './cpu.js';
import { preclassify } from './envelope.js';
import { classifyGpu, jitLauncher } from './gpu.js';
import { coarsenClasses } from './layout.js';
import { BlockMask, checkBlockSize, checkLength, checkMaskMod, describe, type BlockMaskMethod } from './mask.js';
import { analyticPred, argUse, hostMaskFn } from './mods-adapter.js';

/** How {@link createBlockMask} classifies blocks. */
export type BlockMaskPath = 'auto' | 'analytic' | 'cpu' | 'gpu';

/** Options of {@link createBlockMask}. */
export interface CreateBlockMaskOptions {
  /** Block size, `n` or `[qBlock, kvBlock]`; powers of two (default 128). */
  blockSize?: number | readonly [number, number];
  /** Device of the result's tensors and of the evaluation (default: `cuda:0` if usable, else `cpu`). */
  device?: Device | 'cuda';
  /** Values of the mask's runtime params (`param('name')`). */
  params?: Readonly<Record<string, number>>;
  /**
   * `'auto'` (default): analytic for built-ins with a position-only descriptor,
   * else the GPU kernel on a CUDA device (the host evaluator where the addon
   * has no JIT launcher), else the host evaluator. The others force a path
   * (`'analytic'` throws for masks without a descriptor).
   */
  path?: BlockMaskPath;
  /**
   * Pre-classify tiles from the position comparisons inside the mask (e.g. the
   * `kv <= q` of a causal document mask) so only undecided tiles are evaluated
   * (default true; false evaluates every tile, for tests and benchmarks).
   */
  prefilter?: boolean;
  /** Accepted for PyTorch parity; ignored (the GPU path is always a compiled kernel). */
  _compile?: boolean;
  /**
   * Cancels the call (e.g. `AbortSignal.timeout(ms)`): an aborted signal rejects
   * with an `AbortError` (code `ABORT_ERR`) before any work starts; an abort in
   * flight rejects at once, the classification stops at its next step, and a
   * mask finished meanwhile is disposed, never handed out.
   */
  signal?: AbortSignal;
}

const MAX_BLOCK = 1 << 15;
/** Block size of the GPU kernels' schedule (their 64-row x 64-wide tile at head dim 128). */
const SCHEDULE_BLOCK = 64;
/** Largest 64x64 grid (summed over batch and heads) kept as a schedule: 4M entries, 16 MB per index array. */
const MAX_SCHEDULE_ENTRIES = 1 << 22;

/**
 * Builds a {@link BlockMask} for `maskMod` over `B × H × qLen × kvLen`
 * (B and H of 1 broadcast), as PyTorch's `create_block_mask`. Lengths need
 * not be multiples of the block size: as in PyTorch, positions past the end
 * count as masked, so the last block row/column is never "full".
 *
 * Never allocates anything of size qLen × kvLen: built-in masks (causal,
 * sliding window, prefix LM, image boxes and their and/or/not combinations)
 * are classified analytically in O(blocks); other masks are evaluated per
 * block with early exit, by a generated kernel on the GPU or on the host.
 *
 * The call holds the tensors the mask captures from the moment it is made:
 * disposing them right after the call is safe (the mask returned still
 * refers to them, so evaluating it later needs them alive).
 *
 * ```ts
 * const bm = await createBlockMask(andMasks(causal(), documentMask(docIds)), 2, 1, 8192, 8192);
 * ```
 */
export async function createBlockMask(
  maskMod: MaskMod, B: number, H: number, qLen: number, kvLen: number,
  options: CreateBlockMaskOptions = {},
): Promise<BlockMask> {
  return createBlockMaskIn(undefined, maskMod, B, H, qLen, kvLen, options);
}

/** @internal {@link createBlockMask} called by another op, which may hold the captured tensors. */
export async function createBlockMaskIn(
  outer: Hold | undefined, maskMod: MaskMod, B: number, H: number, qLen: number, kvLen: number,
  options: CreateBlockMaskOptions = {},
): Promise<BlockMask> {
  const mod = checkMaskMod(maskMod, 'maskMod');
  if (B === null || B === undefined) B = 1;
  if (H === null || H === undefined) H = 1;
  if (typeof B !== 'number' || !Number.isInteger(B) || B < 1) throw new InvalidArgumentError('B', 'a positive integer batch size', describe(B));
  if (typeof H !== 'number' || !Number.isInteger(H) || H < 1) throw new InvalidArgumentError('H', 'a positive integer head count', describe(H));
  checkLength(qLen, 'qLen');
  checkLength(kvLen, 'kvLen');
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an options object', describe(options));
  const signal = checkSignal(options.signal);
  const [bq, bkv] = checkBlockSize(options.blockSize ?? 128, 'options.blockSize');
  if (bq > MAX_BLOCK || bkv > MAX_BLOCK) throw new InvalidArgumentError('options.blockSize', `at most ${MAX_BLOCK}`, `[${bq}, ${bkv}]`);
  const path = options.path ?? 'auto';
  if (!['auto', 'analytic', 'cpu', 'gpu'].includes(path)) {
    throw new InvalidArgumentError('options.path', "'auto', 'analytic', 'cpu' or 'gpu'", describe(path));
  }
  const { device, index } = parseDevice(options.device, 'options.device');
  const QB = Math.ceil(qLen / bq), KVB = Math.ceil(kvLen / bkv);
  const plane = QB * KVB;
  const G = B * H;
  if (G * plane > 2 ** 31 - 1) {
    throw new InvalidArgumentError('options.blockSize', `a block grid below 2^31 entries (B·H·QB·KVB = ${G * plane}); use larger blocks`, `[${bq}, ${bkv}]`);
  }
  const base = { dims: { B, H, QB, KVB }, qLen, kvLen, blockSize: [bq, bkv] as const, maskMod: mod, device };

  const pred = path === 'auto' || path === 'analytic' ? analyticPred(mod) : null;
  if (path === 'analytic' && !pred) {
    throw new InvalidArgumentError('options.path', 'a path other than \'analytic\' for a mask without an analytic form', mod.toString());
  }
  const params = options.params ? { params: options.params } : {};
  return runOp('createBlockMask', signal, outer, (hold) => hold.captured(mod, 'maskMod'), async (hold): Promise<BlockMask> => {
    // The evaluators read the captured tensors through the call's handles; the mask keeps `mod`.
    let evalMod: MaskMod | undefined;
    const reader = (): MaskMod => (evalMod ??= hold.maskMod(mod));
    const checkpoint = (): void => throwIfAborted(signal, 'createBlockMask');

    // Classes [B,H,nQB,nKVB] (or one shared plane) at block size cq x ckv.
    const classify = async (cq: number, ckv: number): Promise<{ grid: Uint8Array; method: BlockMaskMethod }> => {
      const nQB = Math.ceil(qLen / cq), nKVB = Math.ceil(kvLen / ckv), nPlane = nQB * nKVB;
      if (pred) return { grid: classifyAnalytic(pred, qLen, kvLen, cq, ckv), method: 'analytic' };
      const use = argUse(mod);
      const Bn = use.b ? B : 1, Hn = use.h ? H : 1;
      const gpu = path === 'gpu' || (path === 'auto' && index >= 0 && jitLauncher() !== null);
      // Position-only structure of the mask (e.g. the causal part of a document mask)
      // decides many tiles without evaluating it; only the rest is visited.
      const pre = options.prefilter !== false && qLen < 2 ** 30 && kvLen < 2 ** 30 ? preclassify(mod, qLen, kvLen, cq, ckv) : null;
      const tiles = pre ? pre.undecided : null;
      let cls: Uint8Array;
      if (gpu) {
        const devIndex = index >= 0 ? index : parseDevice('cuda', 'options.device').index;
        cls = await classifyGpu(reader(), options.params, devIndex, Bn, Hn, qLen, kvLen, cq, ckv, tiles);
      } else {
        const fn = await hostMaskFn(reader(), options.params);
        checkpoint();
        cls = classifyBruteForce(fn, Bn, Hn, qLen, kvLen, cq, ckv, tiles);
      }
      checkpoint();
      if (pre && tiles) {
        const L = tiles.length;
        const full = new Uint8Array(Bn * Hn * nPlane);
        for (let g = 0; g < Bn * Hn; g++) {
          const o = g * nPlane;
          full.set(pre.grid, o);
          for (let j = 0; j < L; j++) full[o + tiles[j]!] = cls[g * L + j]!;
        }
        cls = full;
      }
      return { grid: Bn * Hn === 1 ? cls : expandClasses(cls, Bn, Hn, B, H, nPlane), method: gpu ? 'gpu' : 'cpu' };
    };

    // On a GPU the mask is classified at the kernels' 64x64 tile and the requested
    // blocks are derived from that (a block is full iff its 64x64 children are,
    // empty iff all are): the same masked positions, and the finer lists become
    // the kernels' schedule, so a 64-row query block skips 64-wide kv tiles its
    // own rows never keep (bench/results/kernel-notes.md, "64x64 schedule").
    const F = SCHEDULE_BLOCK;
    const fineGrid = Math.ceil(qLen / F) * Math.ceil(kvLen / F);
    const withSchedule = index >= 0 && process.env.FLEXATTN_FINE_SCHEDULE !== '0' && bq % F === 0 && bkv % F === 0 &&
      (bq > F || bkv > F) && G * fineGrid <= MAX_SCHEDULE_ENTRIES;
    let bm: BlockMask;
    if (withSchedule && pred) {
      // An analytic mask reads no tensors: classify at the requested size now and
      // at 64x64 when a kernel first walks it (both are exact, so they agree).
      const fQB = Math.ceil(qLen / F), fKVB = Math.ceil(kvLen / F);
      bm = BlockMask.fromClasses(classifyAnalytic(pred, qLen, kvLen, bq, bkv), {
        ...base, method: 'analytic', ...params,
        fine: { grid: () => classifyAnalytic(pred, qLen, kvLen, F, F), dims: { B, H, QB: fQB, KVB: fKVB }, blockSize: [F, F], method: 'analytic' },
      });
    } else if (withSchedule) {
      const fine = await classify(F, F);
      const fQB = Math.ceil(qLen / F), fKVB = Math.ceil(kvLen / F);
      const fineG = fine.grid.length / (fQB * fKVB);
      const coarse = coarsenClasses(fine.grid, fineG, fQB, fKVB, bq / F, bkv / F);
      bm = BlockMask.fromClasses(coarse, {
        ...base, method: fine.method, ...params,
        fine: { grid: fine.grid, dims: { B, H, QB: fQB, KVB: fKVB }, blockSize: [F, F], method: fine.method },
      });
    } else {
      const { grid, method } = await classify(bq, bkv);
      bm = BlockMask.fromClasses(grid, { ...base, method, ...params });
    }
    if (index >= 0) bm.materialize();
    return bm;
  });
}
