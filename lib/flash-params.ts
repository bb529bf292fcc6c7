/**
 * Host side of the forward kernel's single by-value parameter
 * (`FlashFwdParams` in native/kernels/flash_fwd.cuh): field offsets and a
 * packer. The struct's size and the offset of its trailing `FlexModArgs`
 * come from the kernel's `<name>_cfg` constant, so the two sides cannot drift.
 * Internal: not exported from the package.
 * @module
 */
import { InternalError } from './errors.js';

/** `<name>_cfg[8]` as read from the module. */
export interface KernelConfig {
  threads: number;
  smemBytes: number;
  blockM: number;
  blockN: number;
  headDim: number;
  stages: number;
  paramBytes: number;
  modOffset: number;
}

export function kernelConfig(cfg: Int32Array): KernelConfig {
  const [threads, smemBytes, blockM, blockN, headDim, stages, paramBytes, modOffset] = Array.from(cfg) as number[];
  return { threads: threads!, smemBytes: smemBytes!, blockM: blockM!, blockN: blockN!, headDim: headDim!, stages: stages!,
    paramBytes: paramBytes!, modOffset: modOffset! };
}

/** Element strides [b, h, s] of a 4-D tensor view. */
export type Strides3 = readonly [number, number, number];

/** Everything the forward kernel reads. Pointers are device addresses (0n = absent). */
export interface FlashFwdValues {
  q: bigint; k: bigint; v: bigint; o: bigint; lse: bigint;
  kvNumBlocks: bigint; kvIndices: bigint; fullKvNumBlocks: bigint; fullKvIndices: bigint;
  qStrides: Strides3; kStrides: Strides3; vStrides: Strides3; oStrides: Strides3;
  B: number; Hq: number; Hkv: number; Sq: number; Skv: number;
  scale: number;
  bmQBlock: number; bmKvBlock: number;
  bmNumStrideB: number; bmNumStrideH: number;
  bmIdxStrideB: number; bmIdxStrideH: number; bmIdxStrideQb: number;
  /** Device address of the CTA order (u32 work indices, see work_tile), or 0n for the built-in order. */
  ctaOrder?: bigint;
  /** Device address of a segmented grid's tile starts (int32 [B', nM + 1], see flash_fwd.cuh), or 0n. */
  tileStarts?: bigint;
  /** Elements between batches of `tileStarts` (0: one row shared by every batch). */
  tileStartsStrideB?: number;
  /** Packed `FlexModArgs` bytes (may be empty for precompiled kernels). */
  mod: Uint8Array;
}

const LOG2E = Math.LOG2E;

/** Packs {@link FlashFwdValues} into the kernel's parameter bytes (layout documented in flash_fwd.cuh). */
export function packFlashParams(cfg: KernelConfig, v: FlashFwdValues): Uint8Array {
  const bytes = new Uint8Array(cfg.paramBytes);
  const dv = new DataView(bytes.buffer);
  const ptrs = [v.q, v.k, v.v, v.o, v.lse, v.kvNumBlocks, v.kvIndices, v.fullKvNumBlocks, v.fullKvIndices];
  ptrs.forEach((p, i) => dv.setBigUint64(i * 8, p, true));
  const strides = [...v.qStrides, ...v.kStrides, ...v.vStrides, ...v.oStrides];
  strides.forEach((s, i) => dv.setBigInt64(72 + i * 8, BigInt(s), true));
  const ints = [v.B, v.Hq, v.Hkv, v.Sq, v.Skv, v.Hq / v.Hkv];
  ints.forEach((x, i) => dv.setInt32(168 + i * 4, x, true));
  dv.setFloat32(192, v.scale, true);
  dv.setFloat32(196, v.scale * LOG2E, true);
  const bm = [v.bmQBlock, v.bmKvBlock, v.bmNumStrideB, v.bmNumStrideH, v.bmIdxStrideB, v.bmIdxStrideH, v.bmIdxStrideQb,
    v.tileStartsStrideB ?? 0];
  bm.forEach((x, i) => dv.setInt32(200 + i * 4, x, true));
  dv.setBigUint64(232, v.ctaOrder ?? 0n, true);
  dv.setBigUint64(240, v.tileStarts ?? 0n, true);
  if (v.mod.length > cfg.paramBytes - cfg.modOffset) {
    throw new InternalError(`FlexModArgs is ${v.mod.length} bytes but the kernel reserves ${cfg.paramBytes - cfg.modOffset}`);
  }
  bytes.set(v.mod, cfg.modOffset);
  return bytes;
}
