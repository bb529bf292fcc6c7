/**
 * Several GPUs (and virtual ranks): context-parallel ring attention,
 * KV-sharded decoding, the sequence split, and the transports they run on.
 * @module
 */
export type { Transport } from './transport.js';
export { createVirtualTransport, type VirtualTransportOptions } from './virtual-transport.js';
export {
  shardSequence, unshardSequence, shardSegments, shardPositions, chunkCount,
  type ShardLayout, type ShardSegment, type ShardOptions,
} from './shard.js';
export { contextParallelAttention, type ContextParallelOptions, type ContextParallelResult } from './context-parallel.js';
export {
  ShardedKvCache, shardedPagedAttention, type ShardedKvCacheOptions, type ShardedSequenceId, type ShardedPagedAttentionOptions,
} from './sharded-kv.js';
