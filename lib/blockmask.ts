/**
 * Block masks: PyTorch's `BlockMask` layout and `create_block_mask`.
 *
 * ```ts
 * import { createBlockMask, causal, slidingWindow, andMasks } from 'flexattn';
 * const bm = await createBlockMask(andMasks(causal(), slidingWindow(1024)), 1, 1, 8192, 8192);
 * console.log(bm.toString());          // ASCII picture, '█' full, '░' partial
 * bm.kvNumBlocks; bm.kvIndices;        // i32 tensors on bm.device
 * bm.host.kvIndices;                   // the same as an Int32Array
 * ```
 * @module
 */
export {
  BlockMask, type BlockMaskArrays, type BlockMaskIndex, type BlockMaskMethod, type BlockArrayInput,
  type FromKvBlocksOptions, type ToStringOptions,
} from './blockmask/mask.js';
export { createBlockMask, type CreateBlockMaskOptions, type BlockMaskPath } from './blockmask/create.js';
