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
import { classifyModTiles } from './classify.js';
import { expandClasses } from './cpu.js';
import { jitLauncher } from './gpu.js';
import { BlockMask, checkBlockSize, checkLength, checkMaskMod, type BlockMaskMethod } from './mask.js';
import { analyticPred } from './mods-adapter.js';
import { describeValue } from '../messages.js';

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
  if (typeof B !== 'number' || !Number.isInteger(B) || B < 1) throw new InvalidArgumentError('B', 'a positive integer batch size', describeValue(B));
  if (typeof H !== 'number' || !Number.isInteger(H) || H < 1) throw new InvalidArgumentError('H', 'a positive integer head count', describeValue(H));
  checkLength(qLen, 'qLen');
  checkLength(kvLen, 'kvLen');
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an options object', describeValue(options));
  const signal = checkSignal(options.signal);
  const [bq, bkv] = checkBlockSize(options.blockSize ?? 128, 'options.blockSize');
  if (bq > MAX_BLOCK || bkv > MAX_BLOCK) throw new InvalidArgumentError('options.blockSize', `at most ${MAX_BLOCK}`, `[${bq}, ${bkv}]`);
  const path = options.path ?? 'auto';
  if (!['auto', 'analytic', 'cpu', 'gpu'].includes(path)) {
    throw new InvalidArgumentError('options.path', "'auto', 'analytic', 'cpu' or 'gpu'", describeValue(path));
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

    const gpu = path === 'gpu' || (path === 'auto' && index >= 0 && jitLauncher() !== null);
    let grid: Uint8Array;
    let method: BlockMaskMethod;
    if (pred) {
      grid = classifyAnalytic(pred, qLen, kvLen, bq, bkv);
      method = 'analytic';
    } else {
      const { cls, Bn, Hn } = await classifyModTiles({
        mod: reader(), params: options.params, B, H, qLen, kvLen, bq, bkv, gpu,
        deviceIndex: index >= 0 || !gpu ? index : parseDevice('cuda', 'options.device').index,
        prefilter: options.prefilter !== false, checkpoint,
      });
      grid = Bn * Hn === 1 ? cls : expandClasses(cls, Bn, Hn, B, H, plane);
      method = gpu ? 'gpu' : 'cpu';
    }
    const bm = BlockMask.fromClasses(grid, { ...base, method, ...params });
    if (index >= 0) bm.materialize();
    return bm;
  });
}
