/**
 * GPU attention dispatch (native/kernels via native/jit).
 * @internal
 * @module
 */
import { FlexAttnError } from './errors.js';
import type { Tensor } from './tensor.js';
import type { QkvDims } from './validate.js';

/** Arguments of one GPU attention launch. */
export interface CudaAttentionArgs {
  q: Tensor; k: Tensor; v: Tensor;
  dims: QkvDims;
  scale: number;
  isCausal: boolean;
  returnLse: boolean;
  mask?: Tensor;
}

/** Thrown while this build has no GPU attention kernels wired in. */
export class BackendUnavailableError extends FlexAttnError {}

/** Runs attention on the GPU. */
export async function runCudaAttention(_args: CudaAttentionArgs): Promise<{ out: Tensor; lse?: Tensor }> {
  throw new BackendUnavailableError(
    "backend 'cuda': the GPU attention kernels are not wired into this version yet.\n" +
    "Possible solutions:\n  - pass { backend: 'cpu' } to run the reference backend on the same tensors");
}

/** Arguments of one GPU flex-attention launch. */
export interface CudaFlexArgs {
  q: Tensor; k: Tensor; v: Tensor;
  dims: QkvDims;
  scale: number;
  returnLse: boolean;
  params: Record<string, number>;
  scoreMod?: import('./mods/index.js').ScoreMod;
  blockMask?: import('./blockmask.js').BlockMask;
  kernelOptions?: import('./flex.js').KernelOptions;
}

/** Runs flex attention on the GPU. */
export async function runCudaFlexAttention(_args: CudaFlexArgs): Promise<{ out: Tensor; lse?: Tensor }> {
  return runCudaAttention(undefined as never);
}
