/**
 * One forward-kernel launch: checks the inputs the kernels can take, allocates
 * the outputs, loads the kernel (precompiled, or JIT-compiled with the mods'
 * code), packs its one parameter struct and enqueues it on the device's
 * stream. Returns without waiting for the GPU.
 * Internal: not exported from the package.
 * @module
 */
import type { BlockMask } from '../blockmask/mask.js';
import { DTypeError, InternalError, ShapeError } from '../errors.js';
import { itemSize } from '../dtype.js';
import { packFlashParams, type Strides3 } from './generated/flash-fwd-params.js';
import { paramScratch } from './param-scratch.js';
import { loadedKernel, loadKernel, type KernelEntry, type KernelSpec } from '../jit.js';
import type { CudaModCode, MaskMod, ScoreMod } from '../mods/index.js';
import { native } from '../native.js';
import { throwIfAborted } from '../abort.js';
import type { Hold } from '../ownership.js';
import { Tensor } from '../tensor.js';
import type { QkvDims } from '../validate.js';
import { deviceCaps } from './device-caps.js';
import { denseKernel, flexKernel, sm90wsFlexKernel, sm90wsKernel } from './kernel-source.js';
import { blockMaskValues, launchSm90ws, tmaAddressable } from './launch-sm90ws.js';
import { capturedHere, capturedOnDevice, modCode, packMod, ptr, type Captured } from './mod-code.js';
import { GPU_HEAD_DIMS, type LaunchPlan } from './plan.js';
import { ctaOrderTensor } from './schedules/cta-order.js';
import type { SegmentedSchedule } from './schedules/segments.js';
import { SEGMENT_TILE } from './tiles.js';

/** Everything one launch needs. */
export interface Launch {
  q: Tensor; k: Tensor; v: Tensor; d: QkvDims; scale: number; returnLse: boolean;
  plan: LaunchPlan;
  scoreMod?: ScoreMod; maskMod?: MaskMod | null;
  /** The block mask the kernel walks (the user's, or a schedule derived from it). */
  blockMask?: BlockMask;
  /** A segmented grid: `blockMask` is its schedule (lib/cuda/schedules/segments.ts). */
  segments?: SegmentedSchedule;
  /** Launch in the longest-first CTA order (block-sparse Hopper launches). */
  ctaOrder?: boolean;
  params: Record<string, number>;
  /** The call's claims (flex): captured tensors are read through it. */
  hold?: Hold;
  /** The block mask's four kv arrays as the call holds them (kvNumBlocks, kvIndices, fullKvNumBlocks, fullKvIndices). */
  blockArrays?: readonly Tensor[];
  /**
   * The call's abort signal, checked after each await: once it has fired
   * nothing is launched and the outputs go back (the caller has already
   * rejected with an AbortError).
   */
  signal?: AbortSignal;
}

function checkGpuInputs(q: Tensor, k: Tensor, v: Tensor, d: QkvDims): void {
  if (q.dtype !== 'bf16' && q.dtype !== 'f16') {
    throw new DTypeError('q', "bf16 or f16 on the GPU (convert with .to('bf16'), or pass backend: 'cpu' for f32)", q.dtype);
  }
  if (!GPU_HEAD_DIMS.includes(d.D)) {
    throw new ShapeError('q', `a head dimension of ${GPU_HEAD_DIMS.join(', ')} on the GPU (or backend: 'cpu')`, String(d.D));
  }
  if (d.Dv !== d.D) throw new ShapeError('v', `head dimension ${d.D} (same as q) on the GPU`, String(d.Dv));
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    if (t.strides[3] !== 1) throw new ShapeError(name, 'a contiguous last dimension (stride 1); call contiguous()', `stride ${t.strides[3]}`);
  }
}

/** @internal The kernel loads 16-byte vectors: base and B/H/S strides must be multiples of 8 elements (else a contiguous copy). */
export function aligned(t: Tensor): Tensor {
  const s = t.strides, n = t.shape;
  const ok = t.offset % 8 === 0 && (s[0]! % 8 === 0 || n[0] === 1) && (s[1]! % 8 === 0 || n[1] === 1)
    && (s[2]! % 8 === 0 || n[2] === 1) && (t.devicePtr() & 15n) === 0n;
  return ok ? t : t.contiguous();
}

function strides3(t: Tensor): Strides3 {
  return [t.strides[0]!, t.strides[1]!, t.strides[2]!];
}

/** Allocates the outputs and launches; outputs go back if anything fails before the launch (nothing half-made is handed out). */
export async function launch(a: Launch): Promise<{ out: Tensor; lse?: Tensor }> {
  const { d } = a;
  checkGpuInputs(a.q, a.k, a.v, d);
  const out = Tensor.empty([d.B, d.Hq, d.Sq, d.D], a.q.dtype, { device: a.q.device });
  let lse: Tensor | undefined;
  try {
    if (a.returnLse) lse = Tensor.empty([d.B, d.Hq, d.Sq], 'f32', { device: a.q.device });
    const pending = launchInto(a, out, lse);
    if (pending) await pending;
  } catch (err) {
    // Stream-ordered allocator: anything already enqueued that writes them runs before any reuse.
    out.dispose();
    lse?.dispose();
    throw err;
  }
  return lse ? { out, lse } : { out };
}

/**
 * Enqueues the launch. With its kernel loaded and the mods' captured tensors
 * on the device (every call after the first) it does so at once and returns
 * undefined, without an await; else it returns the promise of the rest
 * (loading or compiling the kernel, copying captured tensors).
 */
function launchInto(a: Launch, out: Tensor, lse: Tensor | undefined): Promise<void> | undefined {
  const { d, plan } = a;
  const device = a.q.deviceIndex;
  if (d.B * d.Hq * d.Sq === 0) return undefined;
  if (d.Skv === 0) {
    // No keys: every row is fully masked (output 0, LSE -inf), no kernel needed.
    native().memset(out.buffer(), 0, out.numel * itemSize(out.dtype), 0);
    if (lse) native().copyHtoD(lse.buffer(), 0, new Float32Array(lse.numel).fill(-Infinity));
    return undefined;
  }
  const dtype = a.q.dtype;
  let spec: KernelSpec;
  let code: CudaModCode | undefined;
  if (plan.family === 'sm90ws') {
    if (plan.shape || a.segments || a.ctaOrder || (plan.mode === 'kCausal' && (a.scoreMod || a.maskMod))) {
      throw new InternalError(`the sm90ws family takes dense / causal attention or flex on the mask's lists, not ${plan.mode}` +
        `${a.segments ? ' on a segmented grid' : ''}${a.ctaOrder ? ' in a CTA order' : ''}${plan.shape ? ' with a shape' : ''}`);
    }
    if (!a.scoreMod && !a.maskMod && plan.mode !== 'kBlockSparse') {
      spec = sm90wsKernel(d.D, dtype, plan.mode);
    } else {
      code = modCode(a.scoreMod, a.maskMod ?? undefined);
      spec = sm90wsFlexKernel(code, d.D, dtype);
    }
  } else if (!a.scoreMod && !a.maskMod && plan.mode !== 'kBlockSparse' && !plan.shape) {
    spec = denseKernel(d.D, dtype, plan.mode, plan.family);
  } else {
    code = modCode(a.scoreMod, a.maskMod ?? undefined);
    spec = flexKernel(code, d.D, dtype, plan.mode, plan.family, plan.shape, !!a.segments);
  }
  const entry = loadedKernel(device, spec.kernel);
  const captured = code ? capturedHere(code, a.q.device, a.hold) : NO_CAPTURED;
  if (entry && captured) {
    enqueue(a, entry, code, captured, out, lse);
    return undefined;
  }
  return (async () => {
    const e = entry ?? await loadKernel(device, spec);
    throwIfAborted(a.signal, 'attention');
    const cap = captured ?? await capturedOnDevice(code!, a.q.device, a.hold);
    enqueue(a, e, code, cap, out, lse);
  })();
}

const NO_CAPTURED: Captured = Object.freeze({ tensors: [], temps: [] });

/** Packs the mods' arguments and enqueues the kernel; frees the launch's temporaries (synchronous: nothing awaits). */
function enqueue(a: Launch, entry: KernelEntry, code: CudaModCode | undefined, cap: Captured, out: Tensor,
  lse: Tensor | undefined): void {
  const { d } = a;
  const temps: Tensor[] = [...cap.temps];
  try {
    throwIfAborted(a.signal, 'attention');
    const { cfg } = entry;
    if (a.plan.family === 'sm90ws') {
      // TMA addresses the inputs through tensor maps: a view it cannot describe is copied.
      const q = tmaAddressable(a.q), k = tmaAddressable(a.k), v = tmaAddressable(a.v);
      for (const [x, y] of [[q, a.q], [k, a.k], [v, a.v]] as const) if (x !== y) temps.push(x);
      // flex (mods or a block mask): the mask's lists and the mods' arguments follow WsParams
      const flex = code || a.plan.mode === 'kBlockSparse'
        ? { mask: blockMaskValues(a.blockMask, a.blockArrays, d, a.scale), mod: code ? packMod(code, cap.tensors, a.params) : NO_MOD_BYTES }
        : undefined;
      launchSm90ws(entry, d, a.plan.mode, a.scale, deviceCaps(a.q.deviceIndex).smCount ?? 132, { q, k, v, out, lse }, flex);
      return;
    }
    const seg = a.segments;
    if (seg && (a.plan.family !== 'sm90' || a.plan.mode !== 'kBlockSparse' || cfg.blockM !== SEGMENT_TILE || cfg.blockN !== SEGMENT_TILE)) {
      throw new InternalError(`a segmented grid needs the sm90 block-sparse kernel with a ${SEGMENT_TILE}x${SEGMENT_TILE} tile, not ${a.plan.family} ${a.plan.mode} ${cfg.blockM}x${cfg.blockN}`);
    }
    const grid: [number, number, number] = [seg ? seg.nM : Math.ceil(d.Sq / cfg.blockM), d.Hq, d.B];
    // CUDA caps grid y/z at 65535; the kernels index CTAs with 32-bit math (work_tile).
    if (d.Hq > 65535 || d.B > 65535 || grid[0] * grid[1] * grid[2] >= 2 ** 31) {
      throw new ShapeError('q', 'at most 65535 heads, 65535 batches and fewer than 2^31 query tiles in all', `[${d.B}, ${d.Hq}, ${d.Sq}, ${d.D}]`);
    }
    const mod = code ? packMod(code, cap.tensors, a.params) : NO_MOD_BYTES;
    const q = aligned(a.q), k = aligned(a.k), v = aligned(a.v);
    if (q !== a.q) temps.push(q);
    if (k !== a.k) temps.push(k);
    if (v !== a.v) temps.push(v);
    launchKernel(a, entry, grid, mod, { q, k, v, out, lse });
  } finally {
    // Stream-ordered allocator: freeing temporaries right after the enqueue is safe.
    for (const t of temps) t.dispose();
  }
}

const NO_MOD_BYTES = new Uint8Array(0);

/** Packs the parameter struct and enqueues the kernel (synchronous: every pointer is live now). */
function launchKernel(a: Launch, entry: KernelEntry, grid: [number, number, number], mod: Uint8Array,
  t: { q: Tensor; k: Tensor; v: Tensor; out: Tensor; lse: Tensor | undefined }): void {
  const { d } = a;
  const { cfg } = entry;
  const { q, k, v, out, lse } = t;
  const seg = a.segments;
  const bm = a.blockMask;
  let bmArrays: readonly Tensor[] = [];
  let bmDims = { QB: 0, KVB: 0, B: 1, H: 1 };
  const segT = seg?.tensors();
  if (bm) {
    const held = a.blockArrays ?? [bm.kvNumBlocks, bm.kvIndices, bm.fullKvNumBlocks, bm.fullKvIndices];
    bmArrays = segT ? [held[0]!, segT.kvIndices, held[2]!, segT.fullKvIndices] : held;
    bmDims = { QB: bm.numQBlocks, KVB: bm.numKvBlocks, B: bm.B, H: bm.H };
  }
  const params = packFlashParams(cfg, {
    q: ptr(q), k: ptr(k), v: ptr(v), o: ptr(out), lse: lse ? ptr(lse) : 0n,
    kvNumBlocks: bm ? ptr(bmArrays[0]!) : 0n, kvIndices: bm ? ptr(bmArrays[1]!) : 0n,
    fullKvNumBlocks: bm ? ptr(bmArrays[2]!) : 0n, fullKvIndices: bm ? ptr(bmArrays[3]!) : 0n,
    qStrides: strides3(q), kStrides: strides3(k), vStrides: strides3(v), oStrides: strides3(out),
    B: d.B, Hq: d.Hq, Hkv: d.Hkv, Sq: d.Sq, Skv: d.Skv, scale: a.scale,
    bmQBlock: bm ? bm.blockSize[0] : cfg.blockM, bmKvBlock: bm ? bm.blockSize[1] : cfg.blockN,
    bmNumStrideB: bmDims.B === 1 ? 0 : bmDims.H * bmDims.QB, bmNumStrideH: bmDims.H === 1 ? 0 : bmDims.QB,
    bmIdxStrideB: bmDims.B === 1 ? 0 : bmDims.H * bmDims.QB * bmDims.KVB,
    bmIdxStrideH: bmDims.H === 1 ? 0 : bmDims.QB * bmDims.KVB, bmIdxStrideQb: bmDims.KVB,
    ctaOrder: bm && a.ctaOrder ? ptr(ctaOrderTensor(bm, d, a.q.dtype, cfg, grid[0])) : 0n,
    ...(seg && segT ? { tileStarts: ptr(segT.starts), tileStartsStrideB: seg.strideB } : {}),
    mod,
  }, paramScratch(cfg));
  entry.handle.launch(grid, [cfg.threads, 1, 1], cfg.smemBytes, params);
}
