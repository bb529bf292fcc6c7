/**
 * `attention`: the model-facing backend switch. One attention spec (causal,
 * packed documents, sliding window, prefix LM, image spans, soft-capping,
 * ALiBi, custom masks) runs on either implementation:
 *
 * - `impl: 'sdpa'` (default): {@link scaledDotProductAttention}, the fused
 *   dense kernel. Plain and causal attention need nothing else; masks SDPA has
 *   no native flag for become a dense bool `attnMask` `[B|1, H|1, Sq, Skv]`.
 * - `impl: 'flex'`: {@link flexAttention} with a {@link BlockMask} built from
 *   the spec and score mods for `softcap` / `alibiSlopes`.
 * - `impl: 'auto'`: flex when the spec has anything beyond plain causal
 *   attention, else sdpa; the choice is reported (`onChoice`, {@link explainAttention}).
 *
 * Masks (block masks and dense masks) are cached per (mask, B, H, Sq, Skv,
 * device, impl) in a small LRU, so a decode or training loop does not rebuild
 * them on every call.
 *
 * ```ts
 * const out = await attention(q, k, v, { impl: 'flex', isCausal: true, docIds, softcap: 50 });
 * ```
 * @module
 */
import { DeviceError, InternalError, InvalidArgumentError } from './errors.js';
import { Tensor } from './tensor.js';
import { sdpaIn, type AttentionWithLse } from './sdpa.js';
import { flexIn } from './flex.js';
import { flexBackwardIn } from './backward/flex.js';
import { sdpaBackwardIn } from './backward/sdpa.js';
import type { BlockMask } from './blockmask.js';
import type { Device } from './device.js';
import type { ScoreMod } from './mods/index.js';
import { checkGradBackend, saveInputs, withBackward, type AttentionWithGrad } from './attention/backward.js';
import { runOp, type Hold } from './ownership.js';
import { checkQkv, type QkvDims } from './validate.js';
import { choose, hasMaskBeyondCausal, rejectForSdpa } from './attention/choice.js';
import { decodeEnabled, decodeRoute, planSwitches, SM90_HEAD_DIMS, SM90WS_MIN_ROWS } from './cuda/index.js';
import { buildBlockMask, buildDenseMask } from './attention/mask-build.js';
import { acquire, cacheKey, clearMaskCache, maskDims, unpin } from './attention/mask-cache.js';
import { checkAgainstShapes, normalize, type AttentionChoice, type AttentionSpec, type Normalized } from './attention/spec.js';
import { clearModMemo, idOf, maskFastKey, memoMod, specMask, specScoreMod } from './attention/spec-mods.js';

export type { AttentionImpl, AttentionChoice, AttentionSpec, SlidingWindowSpec } from './attention/spec.js';
export type { AttentionWithGrad, AttentionBackwardOptions, AttentionBackwardResult } from './attention/backward.js';
export { attentionCacheStats, configureAttentionCache, type AttentionCacheStats } from './attention/mask-cache.js';

/**
 * Drops every cached mask (device memory is freed as soon as no call in flight
 * uses it) and resets the counters. Call it after changing a `docIds` tensor
 * (or a tensor captured by `spec.maskMod`) in place.
 */
export function clearAttentionCache(): void {
  clearMaskCache();
  clearModMemo();
}

/**
 * Which implementation {@link attention} would run for `spec`, and why, without
 * running anything (checks the spec; pass `shapes` to check it against them too).
 *
 * ```ts
 * explainAttention({ impl: 'auto', isCausal: true, docIds });
 * // { impl: 'flex', requested: 'auto', reason: 'auto: docIds is a mask SDPA has no flag for; ...' }
 * ```
 * With shapes it also says which GPU kernel runs (`kernel`): the decode kernel for at most
 * 16 query tokens (sdpa, or flex with its block mask's kv lists walked), else the forward kernels.
 * @param shapes optional `{ q, k, v }` shapes (`[B, H, S, D]`) to validate the spec against.
 */
export function explainAttention(
  spec: AttentionSpec = {},
  shapes?: { q: readonly number[]; k: readonly number[]; v?: readonly number[] },
): AttentionChoice {
  const n = normalize(spec);
  const dims = shapes && {
    B: shapes.q[0]!, Hq: shapes.q[1]!, Sq: shapes.q[2]!, D: shapes.q[3]!, Hkv: shapes.k[1]!, Skv: shapes.k[2]!, Dv: (shapes.v ?? shapes.k)[3]!,
  };
  if (dims) checkAgainstShapes(n, dims);
  const c = choose(n);
  if (c.impl === 'sdpa') rejectForSdpa(n);
  if (!dims || n.backend === 'cpu') return c;
  const { Sq, D, Dv } = dims;
  // flex builds a block mask for any mask option (causal included); sdpa streams masks densely.
  const route = decodeRoute({
    Sq, D, Dv, dtype: 'bf16', blockMask: c.impl === 'flex' && (n.isCausal || hasMaskBeyondCausal(n) !== null),
    kernelOptions: false, disabled: !decodeEnabled(),
  });
  const wsSdpa = c.impl === 'sdpa' && hasMaskBeyondCausal(n) === null;
  const wsNote = sm90wsShapeNote(dims);
  const ws = !route.decode && (wsSdpa || c.impl === 'flex') && planSwitches().sm90ws
    ? `; FLEXATTN_KERNEL_FAMILY=sm90ws: on an H100/H200 the warp-specialised Hopper kernel (family sm90ws, not yet ` +
      `verified on a GPU: it also needs FLEXATTN_UNVERIFIED_GPU_PATHS=1) ${wsNote}` +
      (c.impl === 'flex' && wsNote === SM90WS_RUNS ? ' (flex: it walks the 128×128 block mask\'s own lists with score_mod on every tile and ' +
        'mask_mod on partial ones; no 64×64 schedule, segmented document grid or CTA order, which the sm90 kernel ' +
        'would use for some masks; kernelOptions naming a family or tile keep the sm90 / sm80 kernels)' : '')
    : '';
  return {
    ...c, kernel: route.decode ? 'decode' : 'forward',
    reason: `${c.reason}; on the GPU ${route.decode ? route.reason : `the forward kernel (${route.reason})`}${ws}`,
  };
}

/** Whether the sm90ws kernel takes these dims, in words (lib/cuda/plan.ts sm90wsFits, less the device). */
function sm90wsShapeNote(d: { D: number; Sq: number; Skv: number }): string {
  if (!SM90_HEAD_DIMS.includes(d.D)) return `does not take head dim ${d.D} (${SM90_HEAD_DIMS.join(' or ')}): the usual kernel runs`;
  if (d.Sq < SM90WS_MIN_ROWS || d.Skv < SM90WS_MIN_ROWS) {
    return `is not used for Sq=${d.Sq}, Skv=${d.Skv} (its TMA boxes are ${SM90WS_MIN_ROWS} rows; shorter sequences take the sm90 kernel)`;
  }
  return SM90WS_RUNS;
}
const SM90WS_RUNS = 'runs it';

/**
 * Attention from one spec, on either implementation (see {@link AttentionSpec}):
 * `impl: 'sdpa'` (default) runs the fused dense kernel (with a cached dense bool
 * mask for docIds / sliding window / prefix LM / image spans / maskMod), `'flex'`
 * runs flex attention with a cached {@link BlockMask} and score mods for softcap /
 * ALiBi, `'auto'` picks flex when the spec has anything beyond plain causal
 * attention and reports the choice through `spec.onChoice`. Both give the same
 * result within bf16 tolerance.
 *
 * Works for self- and cross-attention (`Sq ≠ Skv`; `docIds` needs `Sq == Skv`)
 * and grouped-query attention (`enableGQA`).
 *
 * @param q Queries `[B, Hq, Sq, D]` (bf16/f16 on the GPU; f32 too on the CPU).
 * @param k Keys `[B, Hkv, Skv, D]`.
 * @param v Values `[B, Hkv, Skv, Dv]`.
 * @returns Output `[B, Hq, Sq, Dv]` (or `{ out, lse }` with `returnLse`; with `requiresGrad`,
 *   `{ out, lse?, backward, release }`: `await backward(dOut)` gives `{ dq, dk, dv, dCaptured }`, see {@link AttentionWithGrad}).
 * @throws InvalidArgumentError (and its ShapeError / DTypeError / DeviceError
 *   subclasses) naming the option, e.g. `spec.docIds`, `spec.softcap` under `impl: 'sdpa'`;
 *   NotImplementedError for `requiresGrad` on CUDA with a head dim the CUDA backward has no kernel for.
 */
export async function attention(q: Tensor, k: Tensor, v: Tensor, spec: AttentionSpec & { requiresGrad: true }): Promise<AttentionWithGrad>;
export async function attention(q: Tensor, k: Tensor, v: Tensor, spec?: AttentionSpec & { returnLse?: false }): Promise<Tensor>;
export async function attention(q: Tensor, k: Tensor, v: Tensor, spec: AttentionSpec & { returnLse: true }): Promise<AttentionWithLse>;
export async function attention(q: Tensor, k: Tensor, v: Tensor, spec?: AttentionSpec): Promise<Tensor | AttentionWithLse>;
export async function attention(q: Tensor, k: Tensor, v: Tensor, spec: AttentionSpec = {}): Promise<Tensor | AttentionWithLse | AttentionWithGrad> {
  const n = normalize(spec);
  const d = checkQkv(q, k, v, n.enableGQA);
  checkAgainstShapes(n, d);
  if (n.backend === 'cuda' && !q.isCuda) {
    throw new DeviceError('spec.backend', "CUDA tensors for backend 'cuda' (move them with toDevice('cuda'))", q.device);
  }
  checkGradBackend(n, q, d.D);
  const choice = choose(n);
  if (choice.impl === 'sdpa') rejectForSdpa(n);
  n.onChoice?.(choice);
  const saved = n.requiresGrad ? saveInputs(n, q, k, v) : undefined;
  // The call holds every tensor of the spec from now on (the inner op and the
  // mask build read them through `hold`); the mods and the cache keep the user's.
  let qkv!: [Tensor, Tensor, Tensor];
  const withLse = n.returnLse || n.requiresGrad;
  const fwd = runOp('attention', n.signal, undefined, (hold) => {
    qkv = [hold.tensor(q, 'q'), hold.tensor(k, 'k'), hold.tensor(v, 'v')];
    if (n.docIds) hold.tensor(n.docIds, 'spec.docIds');
    if (n.slopes instanceof Tensor) hold.tensor(n.slopes, 'spec.alibiSlopes');
    hold.captured(n.maskMod, 'spec.maskMod');
    hold.captured(n.scoreMod, 'spec.scoreMod');
  }, (hold) => {
    const [hq, hk, hv] = qkv;
    return runSpec<Tensor | AttentionWithLse>(hold, n, d, choice, q.device, {
      sdpa: (o) => sdpaIn(hold, hq, hk, hv, { ...o, returnLse: withLse }),
      flex: (o) => flexIn(hold, hq, hk, hv, { ...o, returnLse: withLse }).then((r) => unwrap(r, withLse)),
    });
  });
  if (!saved) return fwd;
  let res: AttentionWithLse;
  try {
    res = await fwd as AttentionWithLse;
  } catch (e) {
    saved.release();
    throw e;
  }
  return withBackward(saved, q, k, v, res, n.returnLse, (r) => runSpec(r.hold, { ...n, signal: r.signal }, d, choice, q.device, {
    sdpa: (o) => sdpaBackwardIn(r.hold, r.q, r.k, r.v, r.out, r.lse, r.dOut, backwardOptions(o, r.gradFor))
      .then((g) => ({ ...g, dCaptured: [] })),
    flex: (o) => flexBackwardIn(r.hold, r.q, r.k, r.v, r.out, r.lse, r.dOut, {
      ...backwardOptions(o), ...(r.gradFor.length ? { gradFor: r.gradFor } : {}),
    }),
  }));
}

/** The forward's options for the backward op (same backend as the forward; see checkGradBackend). */
function backwardOptions<O extends { backend?: 'cuda' | 'cpu' }>(o: O, gradFor: readonly Tensor[] = []): O {
  if (gradFor.length > 0) {
    throw new InvalidArgumentError('options.gradFor', "impl: 'flex' (the sdpa implementation has no score mod, so no captured tensors)", `${gradFor.length} tensor(s)`);
  }
  return o;
}

/** Common options of the ops a spec runs. */
interface CommonOptions { scale?: number; backend?: 'cuda' | 'cpu'; signal?: AbortSignal; enableGQA: boolean }

/** What runs a spec once its masks and mods are built: the forward ops, or the backward ones. */
interface SpecTarget<T> {
  sdpa(o: CommonOptions & { isCausal?: boolean; attnMask?: Tensor }): Promise<T>;
  flex(o: CommonOptions & { scoreMod?: ScoreMod; blockMask?: BlockMask; params: Record<string, number> }): Promise<T>;
}

async function runSpec<T>(hold: Hold, n: Normalized, d: QkvDims, choice: AttentionChoice, device: Device, target: SpecTarget<T>): Promise<T> {
  const common: CommonOptions = {
    ...(n.scale !== undefined ? { scale: n.scale } : {}),
    ...(n.backend ? { backend: n.backend } : {}),
    ...(n.signal ? { signal: n.signal } : {}),
    enableGQA: n.enableGQA,
  };

  if (choice.impl === 'sdpa') {
    const { mod: mask, key: modKey } = hasMaskBeyondCausal(n) ? memoMod(n.docIds ?? n.maskMod, maskFastKey(n), () => specMask(n)) : { mod: null, key: '' };
    if (!mask) return target.sdpa({ ...common, isCausal: n.isCausal });
    const { B, H } = maskDims(mask, d);
    const entry = await acquire(cacheKey('dense', mask, modKey, n.params, B, H, d.Sq, d.Skv, device),
      () => buildDenseMask(hold, mask, n.params, B, H, d, device));
    try {
      const built = entry.built!;
      if (built.kind !== 'dense') throw new InternalError('dense mask expected');
      return await target.sdpa({ ...common, attnMask: built.mask });
    } finally {
      unpin(entry);
    }
  }

  // flex
  let slopes: Tensor | undefined;
  let ownSlopes = false;
  if (n.slopes instanceof Float32Array) {
    slopes = Tensor.fromHost(n.slopes, [n.slopes.length], 'f32', { device });
    ownSlopes = true;
  } else {
    slopes = n.slopes;
  }
  try {
    const sm = ownSlopes ? specScoreMod(n, slopes)
      : memoMod(n.scoreMod ?? slopes, `s${n.scoreMod ? idOf(n.scoreMod) : ''}|${slopes ? idOf(slopes) : ''}|${n.softcap ?? ''}`,
        () => specScoreMod(n, slopes) ?? null).mod ?? undefined;
    const { mod: mask, key: modKey } = memoMod(n.docIds ?? n.maskMod, maskFastKey(n), () => specMask(n));
    const opts = { ...common, ...(sm ? { scoreMod: sm } : {}), params: n.params };
    if (!mask) return await target.flex(opts);
    const { B, H } = maskDims(mask, d);
    const entry = await acquire(cacheKey('block', mask, modKey, n.params, B, H, d.Sq, d.Skv, device),
      () => buildBlockMask(hold, mask, n.params, B, H, d, device));
    try {
      const built = entry.built!;
      if (built.kind !== 'block') throw new InternalError('block mask expected');
      return await target.flex({ ...opts, blockMask: built.blockMask });
    } finally {
      unpin(entry);
    }
  } finally {
    // The inner call holds it from the moment it is called.
    if (ownSlopes) slopes!.dispose();
  }
}

function unwrap(r: { out: Tensor; lse?: Tensor }, returnLse: boolean): Tensor | AttentionWithLse {
  return returnLse ? { out: r.out, lse: r.lse! } : r.out;
}
