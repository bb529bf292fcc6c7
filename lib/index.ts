/**
 * flexattn: FlexAttention and fused flash attention for Node.js on NVIDIA GPUs.
 *
 * ```ts
 * import { Tensor, scaledDotProductAttention } from 'flexattn';
 * const q = Tensor.randn([1, 8, 1024, 64], 'bf16');
 * const out = await scaledDotProductAttention(q, q, q, { isCausal: true });
 * ```
 * @module
 */
import './disposable.js'; // types: Symbol.dispose / Symbol.asyncDispose on an ES2022 lib
export { Tensor, manualSeed, contiguousStrides, type TensorOptions, type WaitOptions } from './tensor.js';
export {
  type DType, DTYPES, itemSize, toBf16, fromBf16, toF16, fromF16,
  f32ToBf16Bits, bf16BitsToF32, f32ToF16Bits, f16BitsToF32,
} from './dtype.js';
export {
  type Device, type DeviceInfo, type GpuInfo, type MemoryStats,
  cudaAvailable, deviceCount, deviceInfo, defaultDevice, memoryStats, emptyCache, synchronize,
} from './device.js';
export * from './errors.js';
export { scaledDotProductAttention, type SdpaOptions, type AttentionWithLse } from './sdpa.js';
export type { Backend } from './validate.js';
export { flexAttention, type FlexAttentionOptions, type FlexAttentionResult, type KernelOptions } from './flex.js';
export {
  flexAttentionBackward, type FlexAttentionBackwardOptions, type FlexAttentionGradients,
} from './backward/flex.js';
export {
  scaledDotProductAttentionBackward, type SdpaBackwardOptions, type AttentionGradients,
} from './backward/sdpa.js';
export {
  BlockMask, createBlockMask, type BlockMaskArrays, type BlockMaskIndex, type BlockMaskMethod, type BlockArrayInput,
  type CreateBlockMaskOptions, type BlockMaskPath,
} from './blockmask.js';
export {
  Expr, ScoreMod, MaskMod, scoreMod, maskMod, param, where,
  causal, fullMask, slidingWindow, prefixLM, documentMask, docIdsFromOffsets, imageBlocks, imageBlocksFromIds,
  imageIdsFromSpans, alibi, alibiSlopes, softcap, logitClip, relativeBias, andMasks, orMasks, notMask, composeScoreMods,
  type ImageSpan, type MaskDescriptor, type ScoreModArgs, type MaskModArgs,
} from './mods/index.js';
export {
  attention, explainAttention, attentionCacheStats, clearAttentionCache, configureAttentionCache,
  type AttentionSpec, type AttentionImpl, type AttentionChoice, type AttentionCacheStats, type SlidingWindowSpec,
  type AttentionWithGrad, type AttentionBackwardOptions, type AttentionBackwardResult,
} from './attention.js';
export { jitIdle, jitStatus, type KernelStatus, type KernelTier } from './jit.js';
export {
  KvCache, type KvCacheOptions, type KvCacheStats, type KvDType, type AppendOptions, type SequenceId,
} from './serving/kv-cache.js';
export { pagedAttention, type PagedAttentionOptions } from './serving/paged-attention.js';
export { captureGraph, CudaGraph, type CaptureGraphOptions, type ReplayOptions } from './serving/graph.js';
export { varlenAttention, type VarlenAttentionOptions, type CuSeqlens } from './serving/varlen-attention.js';
export type { Transport } from './parallel/transport.js';
export {
  createCommunicator, Communicator, type CreateCommunicatorOptions, type TransferOptions,
} from './parallel/communicator.js';
export { ncclInfo, ncclUniqueId, type NcclInfo } from './parallel/nccl.js';
export {
  createVirtualTransport, shardSequence, unshardSequence, shardSegments, shardPositions, chunkCount, contextParallelAttention,
  type VirtualTransportOptions, type ShardLayout, type ShardSegment, type ShardOptions,
  type ContextParallelOptions, type ContextParallelResult,
  ShardedKvCache, shardedPagedAttention, type ShardedKvCacheOptions, type ShardedSequenceId, type ShardedPagedAttentionOptions,
} from './parallel/index.js';
