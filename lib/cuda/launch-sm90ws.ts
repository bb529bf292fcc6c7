/**
 * One launch of the warp-specialised Hopper forward (family `sm90ws`,
 * native/kernels/sm90_ws_entry.cuh): encodes the q/k/v tensor maps on the host
 * (native encodeTensorMap: cuTensorMapEncodeTiled), packs them with WsParams
 * into the kernel's one by-value parameter and enqueues a 1-D grid. Dense and
 * causal only (no mods, no block mask); the planner picks it only on opt-in
 * (FLEXATTN_KERNEL_FAMILY=sm90ws) and the caller guards it with
 * requireVerifiedGpuPath: it has not yet run on a GPU.
 * Internal: not exported from the package.
 * @module
 */
import { InternalError, ShapeError } from '../errors.js';
import type { KernelEntry } from '../jit.js';
import { native } from '../native.js';
import type { Tensor } from '../tensor.js';
import type { QkvDims } from '../validate.js';
import { packWsParams } from './generated/sm90-ws-params.js';
import { ptr } from './mod-code.js';
import { paramScratch } from './param-scratch.js';
import { SM90WS_MIN_ROWS } from './plan.js';

const MAP_BYTES = 128;

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

/** @internal Packs the maps and WsParams into the kernel's parameter buffer and enqueues it (synchronous). */
export function launchSm90ws(entry: KernelEntry, d: QkvDims, causal: boolean, scale: number, smCount: number,
  t: { q: Tensor; k: Tensor; v: Tensor; out: Tensor; lse: Tensor | undefined }): void {
  const { cfg } = entry;
  if (d.Sq < SM90WS_MIN_ROWS || d.Skv < SM90WS_MIN_ROWS) throw new InternalError(`sm90ws planned for Sq=${d.Sq}, Skv=${d.Skv}`);
  const nM = Math.ceil(d.Sq / cfg.blockM);
  const grid = nM * d.Hq * d.B;
  if (grid >= 2 ** 31) throw new ShapeError('q', 'fewer than 2^31 query tiles in all', `[${d.B}, ${d.Hq}, ${d.Sq}, ${d.D}]`);
  const buf = paramScratch(cfg);
  if (cfg.modOffset !== 3 * MAP_BYTES || buf.byteLength < cfg.modOffset + 56) {
    throw new InternalError(`sm90ws kernel config: params at ${cfg.modOffset} of ${cfg.paramBytes} bytes`);
  }
  buf.fill(0);
  buf.set(encode(t.q, cfg.blockM), 0);
  buf.set(encode(t.k, cfg.blockN), MAP_BYTES);
  buf.set(encode(t.v, cfg.blockN), 2 * MAP_BYTES);
  packWsParams({
    o: ptr(t.out), lse: t.lse ? ptr(t.lse) : 0n, B: d.B, Hq: d.Hq, Hkv: d.Hkv, Sq: d.Sq, Skv: d.Skv,
    scaleLog2: scale * Math.LOG2E, numMBlocks: nM, groupHeads: groupHeads(causal, nM, d.B * d.Hq, smCount),
  }, buf.subarray(cfg.modOffset, cfg.modOffset + 56));
  entry.handle.launch([grid, 1, 1], [cfg.threads, 1, 1], cfg.smemBytes, buf);
}
