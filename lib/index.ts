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
export { Tensor, manualSeed, contiguousStrides, type TensorOptions } from './tensor.js';
export {
  type DType, DTYPES, itemSize, toBf16, fromBf16, toF16, fromF16,
  f32ToBf16Bits, bf16BitsToF32, f32ToF16Bits, f16BitsToF32,
} from './dtype.js';
export {
  type Device, type DeviceInfo, type GpuInfo, type MemoryStats,
  cudaAvailable, deviceCount, deviceInfo, defaultDevice, memoryStats, emptyCache, synchronize,
} from './device.js';
export * from './errors.js';
export { BackendUnavailableError } from './cuda-backend.js';
export { scaledDotProductAttention, type SdpaOptions, type AttentionWithLse } from './sdpa.js';
export type { Backend } from './validate.js';
