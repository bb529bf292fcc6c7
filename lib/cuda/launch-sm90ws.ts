/**
 * One launch of the warp-specialised Hopper forward (family `sm90ws`,
 * native/kernels/sm90_ws_entry.cuh): encodes the q/k/v tensor maps on the host
 * (native encodeTensorMap: cuTensorMapEncodeTiled), packs them with WsParams
 * into the kernel's one by-value parameter and enqueues a 1-D grid. Dense and
 * causal SDPA (sm90_ws_entry.cuh), or flex (sm90_ws_flex.cuh: WsBlockMask and
 * the mods' FlexModArgs after WsParams); the planner picks it only on opt-in
 * (FLEXATTN_KERNEL_FAMILY=sm90ws) and the callers guard it with
 * requireVerifiedGpuPath: it has not yet run on a GPU.
 * Internal: not exported from the package.
 * @module
 */
import type { BlockMask } from '../blockmask/mask.js';
import { InternalError, ShapeError } from '../errors.js';
import type { KernelEntry } from '../jit.js';
import { native } from '../native.js';
import type { Tensor } from '../tensor.js';
import type { QkvDims } from '../validate.js';
import { packWsBlockMask, type WsMaskValues } from './generated/sm90-ws-block-mask.js';
import { packWsParams } from './generated/sm90-ws-params.js';
import { ptr } from './mod-code.js';
import { paramScratch } from './param-scratch.js';
import { SM90WS_MIN_ROWS, SM90WS_TILE, type Mode } from './plan.js';

const MAP_BYTES = 128;
const WS_PARAMS_BYTES = 56;
/** Offset of WsBlockMask in WsFlexArgs (sm90_ws_flex.cuh kWsFlexMaskOffset): after the maps and WsParams. */
export const WS_MASK_OFFSET = 3 * MAP_BYTES + WS_PARAMS_BYTES;
/** sizeof(WsBlockMask) (interface/sm90_ws_block_mask.json). */
export const WS_MASK_BYTES = 80;

/**
 * @internal WsBlockMask values for a flex launch: the mask's own lists (block sizes multiples of the
 * 128×128 tile, as the planner checked; broadcast B or H as stride 0), or none without a mask.
 */
export function blockMaskValues(bm: Pick<BlockMask, 'blockSize' | 'B' | 'H' | 'numQBlocks' | 'numKvBlocks'> | undefined,
  arrays: readonly { devicePtr(): bigint }[] | undefined, d: Pick<QkvDims, 'Sq' | 'Skv'>, scale: number): WsMaskValues {
  const base = { Sq: d.Sq, Skv: d.Skv, scale };
  if (!bm) {
    return { ...base, kvNumBlocks: 0n, kvIndices: 0n, fullKvNumBlocks: 0n, fullKvIndices: 0n, bmQBlock: SM90WS_TILE.BM,
      bmKvBlock: SM90WS_TILE.BN, bmNumStrideB: 0, bmNumStrideH: 0, bmIdxStrideB: 0, bmIdxStrideH: 0, bmIdxStrideQb: 0 };
  }
  const [bq, bkv] = bm.blockSize;
  if (bq % SM90WS_TILE.BM !== 0 || bkv % SM90WS_TILE.BN !== 0) throw new InternalError(`sm90ws planned for block size ${bq}×${bkv}`);
  if (!arrays || arrays.length !== 4) throw new InternalError('sm90ws flex launch without the block mask\'s four arrays');
  const { B, H, numQBlocks: QB, numKvBlocks: KVB } = bm;
  const [n, i, fn, fi] = arrays.map((t) => t.devicePtr()) as [bigint, bigint, bigint, bigint];
  return {
    ...base, kvNumBlocks: n, kvIndices: i, fullKvNumBlocks: fn, fullKvIndices: fi, bmQBlock: bq, bmKvBlock: bkv,
    bmNumStrideB: B === 1 ? 0 : H * QB, bmNumStrideH: H === 1 ? 0 : QB,
    bmIdxStrideB: B === 1 ? 0 : H * QB * KVB, bmIdxStrideH: H === 1 ? 0 : QB * KVB, bmIdxStrideQb: KVB,
  };
}

/**
 * @internal The tensor-map view of `t` [B, H, S, D] (16-bit): 3-D {D, S, B·H} with byte strides
 * {S stride, H stride}, or undefined when TMA cannot address it that way (base or strides not
 * multiples of 16 bytes, batches not H heads apart, or strides out of order as in [B, S, H, D]
 * storage): the caller then makes a contiguous copy.
 */
export function tmaView(t: Pick<Tensor, 'shape' | 'strides' | 'offset'>, base: bigint):
  { rows: number; planes: number; rowStride: number; planeStride: number } | undefined {
  const [B, H, S] = t.shape as [number, number, number, number];
  const [sb, sh, ss] = t.strides as [number, number, number, number];
  // B·H planes one H stride apart: batches must follow heads (a single batch or head needs nothing).
  const planeStride = H > 1 ? sh : B > 1 ? sb : ss * S;
  if (B > 1 && H > 1 && sb !== H * sh) return undefined;
  const addr = base + BigInt(t.offset * 2);
  if (addr % 16n !== 0n || (ss * 2) % 16 !== 0 || (planeStride * 2) % 16 !== 0) return undefined;
  // Only layouts whose strides grow with the dimension and do not overlap (rows of D elements, planes of S
  // rows): the driver's checks of other orders are not known here (not yet run on a GPU), so those are copied.
  if (ss < t.shape[3]! || planeStride < S * ss) return undefined;
  return { rows: S, planes: B * H, rowStride: ss * 2, planeStride: planeStride * 2 };
}

/**
 * @internal Heads per scheduler group (sm90_ws_scheduler.cuh): causal, as many (b, h) as one wave of one CTA
 * per SM covers whole (their K/V stays in L2, longest query blocks first); non-causal one at a time.
 */
export function groupHeads(causal: boolean, nM: number, BH: number, smCount: number): number {
  return causal ? Math.max(1, Math.min(BH, Math.ceil(smCount / nM))) : 1;
}

function encode(t: Tensor, boxRows: number): Uint8Array {
  const view = tmaView(t, t.devicePtr());
  if (!view) throw new InternalError('sm90ws: a tensor TMA cannot address reached the launch (aligned() copies those)');
  return native().encodeTensorMap(ptr(t), t.dtype === 'bf16' ? 0 : 1, t.shape[3]!, view.rows, view.planes,
    view.rowStride, view.planeStride, boxRows);
}

/** @internal `t` itself when TMA can address it, else a contiguous copy (the caller frees it after the launch). */
export function tmaAddressable(t: Tensor): Tensor {
  return tmaView(t, t.devicePtr()) ? t : t.contiguous();
}

/**
 * @internal Packs the maps and WsParams (and, flex, WsBlockMask and the mods' bytes) into the kernel's
 * parameter buffer and enqueues it (synchronous).
 */
export function launchSm90ws(entry: KernelEntry, d: QkvDims, mode: Mode, scale: number, smCount: number,
  t: { q: Tensor; k: Tensor; v: Tensor; out: Tensor; lse: Tensor | undefined },
  flex?: { mask: WsMaskValues; mod: Uint8Array }): void {
  const { cfg } = entry;
  if (d.Sq < SM90WS_MIN_ROWS || d.Skv < SM90WS_MIN_ROWS) throw new InternalError(`sm90ws planned for Sq=${d.Sq}, Skv=${d.Skv}`);
  const nM = Math.ceil(d.Sq / cfg.blockM);
  const grid = nM * d.Hq * d.B;
  if (grid >= 2 ** 31) throw new ShapeError('q', 'fewer than 2^31 query tiles in all', `[${d.B}, ${d.Hq}, ${d.Sq}, ${d.D}]`);
  const buf = paramScratch(cfg);
  if (flex) {
    // WsFlexArgs: WsParams at 3 maps, WsBlockMask after it, FlexModArgs at the cfg's modOffset
    if (cfg.modOffset < WS_MASK_OFFSET + WS_MASK_BYTES || buf.byteLength < cfg.modOffset + flex.mod.byteLength) {
      throw new InternalError(`sm90ws flex kernel config: mods at ${cfg.modOffset} of ${cfg.paramBytes} bytes (${flex.mod.byteLength} to pack)`);
    }
  } else if (cfg.modOffset !== 3 * MAP_BYTES || buf.byteLength < cfg.modOffset + WS_PARAMS_BYTES) {
    throw new InternalError(`sm90ws kernel config: params at ${cfg.modOffset} of ${cfg.paramBytes} bytes`);
  }
  buf.fill(0);
  buf.set(encode(t.q, cfg.blockM), 0);
  buf.set(encode(t.k, cfg.blockN), MAP_BYTES);
  buf.set(encode(t.v, cfg.blockN), 2 * MAP_BYTES);
  packWsParams({
    o: ptr(t.out), lse: t.lse ? ptr(t.lse) : 0n, B: d.B, Hq: d.Hq, Hkv: d.Hkv, Sq: d.Sq, Skv: d.Skv,
    // the kernel orders causal and flex work last query block first, in groups of heads (sm90_ws_kernel.cuh)
    scaleLog2: scale * Math.LOG2E, numMBlocks: nM, groupHeads: groupHeads(mode !== 'kDense' || !!flex, nM, d.B * d.Hq, smCount),
  }, buf.subarray(3 * MAP_BYTES, 3 * MAP_BYTES + WS_PARAMS_BYTES));
  if (flex) {
    packWsBlockMask(flex.mask, buf.subarray(WS_MASK_OFFSET, WS_MASK_OFFSET + WS_MASK_BYTES));
    buf.set(flex.mod, cfg.modOffset);
  }
  entry.handle.launch([grid, 1, 1], [cfg.threads, 1, 1], cfg.smemBytes, buf);
}
