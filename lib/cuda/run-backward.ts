/**
 * GPU backward pass (native/kernels/flash_bwd.cuh): checks what the kernels
 * can take, allocates the gradients and the f32 workspaces (Delta and the LSE
 * in the log2 domain), loads the three kernels (the preprocess and dense or
 * causal passes precompiled; flex passes JIT-compiled with the mods' code and
 * the score mod's derivative) and enqueues preprocess → dK/dV → dQ on the
 * device's stream; with `gradFor`, the dK/dV pass also fills per-warp partial
 * sums of the captured tensors' gradients (gradfor-plan.ts) and a reduce
 * kernel adds them up last. Deterministic: no atomics, every sum in a fixed order.
 * Internal: not exported from the package.
 * @module
 */
import type { BlockMask } from '../blockmask/mask.js';
import { DTypeError, NotImplementedError, ShapeError } from '../errors.js';
import { itemSize } from '../dtype.js';
import { loadKernel, type KernelEntry, type KernelSpec } from '../jit.js';
import type { CudaModCode, GradBufValues, GradForCode, IrNode, MaskMod, ScoreMod } from '../mods/index.js';
import { native } from '../native.js';
import { throwIfAborted } from '../abort.js';
import type { Hold } from '../ownership.js';
import { Tensor } from '../tensor.js';
import type { QkvDims } from '../validate.js';
import { packFlashBwdParams, type BwdStrides3, type FlashBwdValues } from './generated/flash-bwd-params.js';
import { aligned } from './launch.js';
import { backwardModCode, capturedOnDevice, packMod, ptr } from './mod-code.js';
import type { Mode } from './plan.js';
import { onDevice } from './run-flex.js';
import { BWD_DKDV_WARPS, type GradForPlan } from './gradfor-plan.js';

/** Head dims the backward kernels are instantiated for. */
export const BWD_HEAD_DIMS: readonly number[] = [32, 64, 96, 128];
/** The backward kernels' q and kv tile (flash_bwd.cuh BwdTile): block-mask blocks must be multiples of it. */
export const BWD_TILE = 64;

/** Arguments of one GPU backward call (tensors are the call's held handles). */
export interface CudaBackwardArgs {
  q: Tensor; k: Tensor; v: Tensor; out: Tensor; lse: Tensor; dOut: Tensor;
  dims: QkvDims;
  scale: number;
  /** Top-left causal (SDPA isCausal); not with a block mask. */
  isCausal: boolean;
  scoreMod?: ScoreMod;
  /** `∂ scoreMod / ∂ score` (lib/mods/grad.ts), with `scoreMod`. */
  dScore?: IrNode;
  blockMask?: BlockMask;
  /**
   * Captured-tensor gradients (with `scoreMod`): the generated sites, the
   * partial-buffer plan (gradfor-plan.ts, checked at the call) and the gradFor
   * tensors (held handles, in order).
   */
  gradFor?: { code: GradForCode; plan: GradForPlan; tensors: readonly Tensor[] };
  params: Record<string, number>;
  /** The call's claims: captured tensors and block-mask arrays are read through it. */
  hold: Hold;
  signal?: AbortSignal;
}

/** Gradients in the inputs' dtype on their device; `dCaptured[i]` that of `gradFor.tensors[i]` (its shape, dtype and device). */
export interface CudaGradients { dq: Tensor; dk: Tensor; dv: Tensor; dCaptured: Tensor[] }

/** Typed errors for what the backward kernels cannot take (before anything is allocated). */
export function checkBackwardGpu(q: Tensor, d: QkvDims, blockMask: BlockMask | undefined, tensors: Record<string, Tensor>): void {
  if (q.dtype !== 'bf16' && q.dtype !== 'f16') {
    throw new DTypeError('q', "bf16 or f16 for the CUDA backward (convert with .to('bf16'), or pass backend: 'cpu' for f32)", q.dtype);
  }
  if (!BWD_HEAD_DIMS.includes(d.D)) {
    throw new NotImplementedError(`the CUDA backward has no kernel for head dimension ${d.D} (it has ${BWD_HEAD_DIMS.join(', ')}); `
      + "pass backend: 'cpu' to run this backward on the CPU reference");
  }
  if (d.Dv !== d.D) throw new ShapeError('v', `head dimension ${d.D} (same as q) for the CUDA backward`, String(d.Dv));
  for (const [name, t] of Object.entries(tensors)) {
    if (t.strides[3] !== 1) throw new ShapeError(name, 'a contiguous last dimension (stride 1); call contiguous()', `stride ${t.strides[3]}`);
  }
  if (blockMask) {
    const [bq, bkv] = blockMask.blockSize;
    if (bq % BWD_TILE !== 0 || bkv % BWD_TILE !== 0) {
      throw new ShapeError('options.blockMask',
        `block sizes that are multiples of the CUDA backward's ${BWD_TILE}×${BWD_TILE} tile (e.g. createBlockMask(..., { blockSize: 128 }))`,
        `${bq}×${bkv}`);
    }
  }
}

function modeOf(a: CudaBackwardArgs): Mode {
  return a.blockMask ? 'kBlockSparse' : a.isCausal ? 'kCausal' : 'kDense';
}

/** @internal The kernels of one backward call: preprocess (always precompiled), dK/dV and dQ. */
export function backwardKernels(D: number, dtype: string, mode: Mode, code: CudaModCode | undefined,
  gradFor = false): { pre: KernelSpec; dkdv: KernelSpec; dq: KernelSpec; reduce?: KernelSpec } {
  const preName = `flexattn_bwd_pre_d${D}_${dtype}`;
  const pre = { kernel: preName, module: preName, source: `#include "flash_bwd.cuh"\nFLEXATTN_BWD_PRE_KERNEL(${preName}, ${D}, ${dtype})\n` };
  if (!code) {
    const tag = `d${D}_${dtype}${mode === 'kCausal' ? '_causal' : ''}`;
    const one = (pass: 'dkdv' | 'dq'): KernelSpec => {
      const name = `flexattn_bwd_${pass}_${tag}`;
      const macro = pass === 'dkdv' ? 'FLEXATTN_BWD_DKDV_KERNEL' : 'FLEXATTN_BWD_DQ_KERNEL';
      return { kernel: name, module: name, source: `#include "flash_bwd.cuh"\n${macro}(${name}, ${D}, ${dtype}, ${mode})\n` };
    };
    return { pre, dkdv: one('dkdv'), dq: one('dq') };
  }
  // One generated module holds both passes (the second load finds it in the JIT's memory cache).
  const base = `flexattn_bwd_flex_${code.hash.slice(0, 16)}_d${D}_${dtype}_${mode.slice(1).toLowerCase()}`;
  // With gradFor (code.source defines FLEX_GRAD_SITES) the module also holds the partials' reduce.
  const source = `${code.source}\n#include "flash_bwd.cuh"\n`
    + `FLEXATTN_BWD_DKDV_KERNEL(${base}_dkdv, ${D}, ${dtype}, ${mode})\nFLEXATTN_BWD_DQ_KERNEL(${base}_dq, ${D}, ${dtype}, ${mode})\n`
    + (gradFor ? `FLEXATTN_BWD_GRAD_REDUCE_KERNEL(${base}_gred)\n` : '');
  return {
    pre, dkdv: { kernel: `${base}_dkdv`, source }, dq: { kernel: `${base}_dq`, source },
    ...(gradFor ? { reduce: { kernel: `${base}_gred`, source } } : {}),
  };
}

const strides3 = (t: Tensor): BwdStrides3 => [t.strides[0]!, t.strides[1]!, t.strides[2]!];

/**
 * Runs the backward on the GPU. Call it before the op's first await: its
 * synchronous part claims the block mask's device arrays in `a.hold`.
 */
export function runBackward(a: CudaBackwardArgs): Promise<CudaGradients> {
  const { q, dims: d } = a;
  checkBackwardGpu(q, d, a.blockMask, { q: a.q, k: a.k, v: a.v, out: a.out, dOut: a.dOut });
  const bm = a.blockMask ? onDevice(a.blockMask, q.device) : undefined;
  const lists = bm
    ? ([bm.kvNumBlocks, bm.kvIndices, bm.fullKvNumBlocks, bm.fullKvIndices, bm.qNumBlocks, bm.qIndices, bm.fullQNumBlocks, bm.fullQIndices]
      .map((t) => a.hold.tensor(t, 'options.blockMask')))
    : undefined;
  return run(a, bm, lists);
}

async function run(a: CudaBackwardArgs, bm: BlockMask | undefined, lists: Tensor[] | undefined): Promise<CudaGradients> {
  const { q, dims: d } = a;
  const dev = { device: q.device };
  const dq = Tensor.empty([d.B, d.Hq, d.Sq, d.D], q.dtype, dev);
  const dk = Tensor.empty([d.B, d.Hkv, d.Skv, d.D], q.dtype, dev);
  const dv = Tensor.empty([d.B, d.Hkv, d.Skv, d.D], q.dtype, dev);
  const gf = a.gradFor && a.gradFor.tensors.length > 0 ? a.gradFor : undefined;
  // The captured gradients are made on q's device (contiguous), then moved to their tensor's device.
  const dCap = (gf?.tensors ?? []).map((t) => Tensor.empty(t.shape, t.dtype, dev));
  const outputs = [dq, dk, dv, ...dCap];
  const temps: Tensor[] = [];
  const zero = (t: Tensor): void => { if (t.numel > 0) native().memset(t.buffer(), 0, t.numel * itemSize(t.dtype), 0); };
  try {
    if (d.B * d.Hq * d.Sq === 0 || d.Skv === 0) {
      // No query rows (dk, dv and the captured gradients are 0) or no keys (every row fully masked: all is 0).
      for (const t of outputs) zero(t);
      return { dq, dk, dv, dCaptured: await capturedHome(gf, dCap, temps) };
    }
    const mode = modeOf(a);
    const maskMod: MaskMod | undefined = bm?.maskMod ?? undefined;
    const code = a.scoreMod || maskMod || mode === 'kBlockSparse' ? backwardModCode(a.scoreMod, maskMod, a.dScore, gf?.code) : undefined;
    const specs = backwardKernels(d.D, q.dtype, mode, code, gf !== undefined);
    const device = q.deviceIndex;
    const pre = await loadKernel(device, specs.pre);
    const dkdv = await loadKernel(device, specs.dkdv);
    const dqk = await loadKernel(device, specs.dq);
    const red = specs.reduce ? await loadKernel(device, specs.reduce) : undefined;
    throwIfAborted(a.signal, 'attention backward');
    const cap = code ? await capturedOnDevice(code, q.device, a.hold) : { tensors: [], temps: [] };
    temps.push(...cap.temps);
    throwIfAborted(a.signal, 'attention backward');
    const gradBufs = gf ? gradForBuffers(gf.plan, dCap, dev, temps) : undefined;
    const mod = code ? packMod(code, cap.tensors, a.params, gradBufs) : new Uint8Array(0);
    const ali = (t: Tensor): Tensor => { const x = aligned(t); if (x !== t) temps.push(x); return x; };
    const tq = ali(a.q), tk = ali(a.k), tv = ali(a.v), to = ali(a.out), tg = ali(a.dOut);
    const delta = Tensor.empty([d.B, d.Hq, d.Sq], 'f32', dev), lse2 = Tensor.empty([d.B, d.Hq, d.Sq], 'f32', dev);
    temps.push(delta, lse2);
    const bmv = bm ? blockValues(bm, lists!) : NO_BLOCKS;
    const values: FlashBwdValues = {
      q: ptr(tq), k: ptr(tk), v: ptr(tv), o: ptr(to), dO: ptr(tg), lse: ptr(a.lse), delta: ptr(delta), lse2: ptr(lse2),
      dq: ptr(dq), dk: ptr(dk), dv: ptr(dv),
      ...bmv,
      qStrides: strides3(tq), kStrides: strides3(tk), vStrides: strides3(tv), oStrides: strides3(to), dOStrides: strides3(tg),
      dqStrides: strides3(dq), dkStrides: strides3(dk), dvStrides: strides3(dv),
      lseStrides: [a.lse.strides[0]!, a.lse.strides[1]!, a.lse.strides[2]!],
      B: d.B, Hq: d.Hq, Hkv: d.Hkv, Sq: d.Sq, Skv: d.Skv, scale: a.scale, mod,
    };
    checkGrid(d);
    const go = (e: KernelEntry, grid: [number, number, number], v: FlashBwdValues = values): void => {
      e.handle.launch(grid, [e.cfg.threads, 1, 1], e.cfg.smemBytes, packFlashBwdParams(e.cfg, v));
    };
    // The preprocess kernel is compiled without the mods: its FlexModArgs is the empty default.
    go(pre, [Math.ceil(d.Sq / pre.cfg.blockM), d.Hq, d.B], { ...values, mod: new Uint8Array(0) });
    go(dkdv, [Math.ceil(d.Skv / dkdv.cfg.blockN), d.Hkv, d.B]);
    go(dqk, [Math.ceil(d.Sq / dqk.cfg.blockM), d.Hq, d.B]);
    if (gf && red) {
      const maxNumel = Math.max(...gf.plan.tensors.map((t) => t.numel));
      if (maxNumel > 0) go(red, [Math.ceil(maxNumel / red.cfg.blockM), gf.plan.tensors.length, 1]);
    }
    return { dq, dk, dv, dCaptured: await capturedHome(gf, dCap, temps) };
  } catch (err) {
    // Stream-ordered allocator: anything already enqueued that writes them runs before any reuse.
    for (const t of outputs) t.dispose();
    throw err;
  } finally {
    for (const t of temps) t.dispose();
  }
}

/**
 * The partial buffers of every gradFor tensor (zeroed: a warp's slice holds
 * elements it never touched) and the CTAs' window starts, on the device.
 */
function gradForBuffers(plan: GradForPlan, outs: readonly Tensor[], dev: { device: Tensor['device'] }, temps: Tensor[]): GradBufValues[] {
  return plan.tensors.map((t, k) => {
    // At least one element each: an empty tensor has no device address to pack.
    const part = Tensor.empty([Math.max(1, plan.ctas * BWD_DKDV_WARPS * t.width)], 'f32', dev);
    temps.push(part);
    native().memset(part.buffer(), 0, part.numel * 4, 0);
    const lo = Tensor.fromHost(t.lo.length > 0 ? t.lo : new Int32Array(1), [Math.max(1, t.lo.length)], 'i32', dev);
    temps.push(lo);
    const out = outs[k]!;
    return { part: ptr(part), lo: ptr(lo), out: out.numel > 0 ? ptr(out) : ptr(part), width: t.width, numel: t.numel };
  });
}

/** The captured gradients on their tensors' devices (a tensor living elsewhere gets a copy; the device one is freed). */
async function capturedHome(gf: CudaBackwardArgs['gradFor'], dCap: Tensor[], temps: Tensor[]): Promise<Tensor[]> {
  if (!gf) return [];
  const out: Tensor[] = [];
  for (const [i, t] of dCap.entries()) {
    const home = gf.tensors[i]!.device;
    if (home === t.device) { out.push(t); continue; }
    out.push(await t.toDevice(home));
    temps.push(t);
  }
  return out;
}

function checkGrid(d: QkvDims): void {
  if (d.Hq > 65535 || d.B > 65535 || Math.ceil(Math.max(d.Sq, d.Skv) / BWD_TILE) * d.Hq * d.B >= 2 ** 31) {
    throw new ShapeError('q', 'at most 65535 heads, 65535 batches and fewer than 2^31 tiles in all', `[${d.B}, ${d.Hq}, ${d.Sq}, ${d.D}]`);
  }
}

type BlockValues = Pick<FlashBwdValues, 'kvNumBlocks' | 'kvIndices' | 'fullKvNumBlocks' | 'fullKvIndices' | 'qNumBlocks' | 'qIndices'
  | 'fullQNumBlocks' | 'fullQIndices' | 'bmQBlock' | 'bmKvBlock' | 'bmNumStrides' | 'bmIdxStrides' | 'bmQNumStrides' | 'bmQIdxStrides'>;

const NO_BLOCKS: BlockValues = {
  kvNumBlocks: 0n, kvIndices: 0n, fullKvNumBlocks: 0n, fullKvIndices: 0n, qNumBlocks: 0n, qIndices: 0n, fullQNumBlocks: 0n, fullQIndices: 0n,
  bmQBlock: BWD_TILE, bmKvBlock: BWD_TILE, bmNumStrides: [0, 0], bmIdxStrides: [0, 0, 0], bmQNumStrides: [0, 0], bmQIdxStrides: [0, 0, 0],
};

/** The block mask's lists (kv side for the dQ pass, q side for the dK/dV pass); B and H of 1 broadcast (stride 0). */
function blockValues(bm: BlockMask, l: readonly Tensor[]): BlockValues {
  const { B, H, numQBlocks: QB, numKvBlocks: KVB } = bm;
  const sb = (n: number): number => (B === 1 ? 0 : n), sh = (n: number): number => (H === 1 ? 0 : n);
  return {
    kvNumBlocks: ptr(l[0]!), kvIndices: ptr(l[1]!), fullKvNumBlocks: ptr(l[2]!), fullKvIndices: ptr(l[3]!),
    qNumBlocks: ptr(l[4]!), qIndices: ptr(l[5]!), fullQNumBlocks: ptr(l[6]!), fullQIndices: ptr(l[7]!),
    bmQBlock: bm.blockSize[0], bmKvBlock: bm.blockSize[1],
    bmNumStrides: [sb(H * QB), sh(QB)], bmIdxStrides: [sb(H * QB * KVB), sh(QB * KVB), KVB],
    bmQNumStrides: [sb(H * KVB), sh(KVB)], bmQIdxStrides: [sb(H * KVB * QB), sh(KVB * QB), QB],
  };
}
