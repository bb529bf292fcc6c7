/**
 * Planning of captured-tensor gradients (`gradFor`) in the CUDA backward.
 *
 * Each dK/dV CTA (one kv tile of one (b, KV head), flash_bwd.cuh) adds
 * `dS · ∂mod/∂t[idx]` of the elements it recomputes into private f32 partial
 * sums, one slice per warp (no two writers share an address: deterministic),
 * and a reduce kernel sums the slices in a fixed order. A slice need not span
 * the whole tensor: interval arithmetic over the IR of each load site's flat
 * index, with b fixed, h over the KV head's query heads, kv over the tile and
 * q over [0, Sq), bounds the elements a CTA can touch (a relative-bias table
 * `[H, Sq+Skv-1]` read at `kv - q + Skv - 1` gives ~Sq + 64 elements of one
 * head, ALiBi slopes one element). Where the analysis cannot bound an index (a
 * read through another tensor, a param) the window is the whole tensor.
 * Pure (no device work); internal.
 * @module
 */
import { InvalidArgumentError } from '../errors.js';
import type { GradForCode, GradSiteClass, IrNode } from '../mods/index.js';
import type { QkvDims } from '../validate.js';

/** Warps of a dK/dV CTA (flash_bwd.cuh BwdTile::kWarps): one partial slice each. */
export const BWD_DKDV_WARPS = 4;
/** kv rows of a dK/dV CTA (BwdTile::kBlockN). */
export const BWD_DKDV_ROWS = 64;
/** Largest partial buffer (all gradFor tensors together) a call may allocate. */
export const MAX_GRADFOR_PARTIAL_BYTES = 2 ** 30;

/** A closed integer interval, or null: not bounded by the analysis. */
export type Interval = readonly [number, number] | null;

const I32_MIN = -(2 ** 31), I32_MAX = 2 ** 31 - 1;

/** Ranges of the index arguments (inclusive). */
export interface IndexRanges { b: Interval; h: Interval; q: Interval; kv: Interval }

/**
 * Bounds of an int (or toFloat of int) IR expression over `r`, or null where it
 * reads something the analysis does not bound (tensors, params, score) or an
 * intermediate could leave int32 (the device would wrap).
 */
export function intervalOf(node: IrNode, r: IndexRanges, memo = new Map<IrNode, Interval>()): Interval {
  const hit = memo.get(node);
  if (hit !== undefined) return hit;
  const v = evalInterval(node, r, memo);
  const out = v && v[0] >= I32_MIN && v[1] <= I32_MAX ? v : null;
  memo.set(node, out);
  return out;
}

function evalInterval(n: IrNode, r: IndexRanges, memo: Map<IrNode, Interval>): Interval {
  const arg = (i: number): Interval => intervalOf(n.args[i]!, r, memo);
  switch (n.op) {
    case 'const': return n.type === 'int' && Number.isInteger(n.value) ? [n.value!, n.value!] : null;
    case 'arg': return n.name === 'b' ? r.b : n.name === 'h' ? r.h : n.name === 'q' ? r.q : n.name === 'kv' ? r.kv : null;
    case 'toFloat': return n.args[0]!.type === 'int' ? arg(0) : null;
    case 'neg': { const a = arg(0); return a && [-a[1], -a[0]]; }
    case 'abs': {
      const a = arg(0);
      if (!a) return null;
      return a[0] >= 0 ? a : a[1] <= 0 ? [-a[1], -a[0]] : [0, Math.max(-a[0], a[1])];
    }
    case 'add': case 'sub': case 'mul': case 'min': case 'max': {
      if (n.type !== 'int') return null;
      const a = arg(0), b = arg(1);
      if (!a || !b) return null;
      if (n.op === 'add') return [a[0] + b[0], a[1] + b[1]];
      if (n.op === 'sub') return [a[0] - b[1], a[1] - b[0]];
      if (n.op === 'min') return [Math.min(a[0], b[0]), Math.min(a[1], b[1])];
      if (n.op === 'max') return [Math.max(a[0], b[0]), Math.max(a[1], b[1])];
      const p = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]];
      return [Math.min(...p), Math.max(...p)];
    }
    case 'floorDiv': case 'mod': {
      // Only by a positive constant (floor division is monotone; mod lies in [0, d)).
      if (n.type !== 'int') return null;
      const a = arg(0), d = arg(1);
      if (!a || !d || d[0] !== d[1] || d[0] <= 0) return null;
      if (n.op === 'mod') return [0, d[0] - 1];
      return [Math.floor(a[0] / d[0]), Math.floor(a[1] / d[0])];
    }
    case 'where': {
      const a = arg(1), b = arg(2);
      return a && b ? [Math.min(a[0], b[0]), Math.max(a[1], b[1])] : null;
    }
    default: return null;
  }
}

// ---------------------------------------------------------------------------
// Index classes (the fast accumulation paths of flash_bwd.cuh).
//
// Two index shapes cover the common captured tensors and have a cheaper,
// still bit-deterministic accumulation than the general per-element one:
//   uniform   the flat index reads only b, h (and constants, params, loads of
//             such): slopes[h], scale[h]. Within one query head of a dK/dV
//             CTA every element hits one index: each lane keeps a register sum,
//             one fixed butterfly per warp and head, one write.
//   diagonal  the flat index is base(b, h) + sign · (kv − q), sign ±1, with
//             every clamp provably inactive over q ∈ [0, Sq), kv ∈ [0, Skv):
//             table[h, q − kv + off]. The elements of one diagonal are known
//             statically in the warp's mma fragment: per-lane sums per
//             diagonal, then one fixed-order sum and one update per diagonal.
//   general   everything else: the per-element path.
// The class is proved on the IR (affineOf below) and the proof is checked by
// brute force in test/gradfor-plan.test.ts.

/** How one load site's gradient is accumulated on the GPU (the type lives with the code generator that emits it). */
export type { GradSiteClass as GradForSiteClass } from '../mods/index.js';

/** An index expression as c_q · q + c_kv · kv + r(b, h): null where it is not of that form (or not provably so). */
interface Affine { readonly q: number; readonly kv: number; readonly value?: number }

const RESIDUAL: Affine = { q: 0, kv: 0 };
const isResidual = (a: Affine | null): a is Affine => a !== null && a.q === 0 && a.kv === 0;

/**
 * The coefficients of q and kv in `n` over the ranges `r` (b, h, q, kv each
 * their full range), with the rest depending on b, h, constants, params and
 * loads of such only; null where the form does not hold or the analysis
 * cannot prove it (a clamp that may bind on a term in q or kv, int32 overflow,
 * a float or truncating op on such a term, a non-integer coefficient).
 */
export function affineOf(n: IrNode, r: IndexRanges, memo = new Map<IrNode, Affine | null>()): Affine | null {
  const hit = memo.get(n);
  if (hit !== undefined) return hit;
  let out = evalAffine(n, r, memo);
  // A term in q or kv must be int arithmetic that provably stays in int32 (the device wraps), except the final toFloat.
  if (out && !isResidual(out) && !(n.op === 'toFloat' || (n.type === 'int' && intervalOf(n, r) !== null))) out = null;
  memo.set(n, out);
  return out;
}

function evalAffine(n: IrNode, r: IndexRanges, memo: Map<IrNode, Affine | null>): Affine | null {
  const args = n.args.map((a) => affineOf(a, r, memo));
  const allResidual = args.every(isResidual);
  switch (n.op) {
    case 'const': return n.type === 'bool' ? RESIDUAL : { q: 0, kv: 0, value: n.value! };
    case 'arg': return n.name === 'q' ? { q: 1, kv: 0 } : n.name === 'kv' ? { q: 0, kv: 1 } : n.name === 'score' ? null : RESIDUAL;
    case 'param': return RESIDUAL;
    case 'toFloat': return args[0] ?? null;
    case 'neg': { const a = args[0]; return a ? { q: -a.q, kv: -a.kv, ...(a.value !== undefined ? { value: -a.value } : {}) } : null; }
    case 'add': case 'sub': {
      const [a, b] = args;
      if (!a || !b) return null;
      const s = n.op === 'add' ? 1 : -1;
      const value = a.value !== undefined && b.value !== undefined ? a.value + s * b.value : undefined;
      return { q: a.q + s * b.q, kv: a.kv + s * b.kv, ...(value !== undefined ? { value } : {}) };
    }
    case 'mul': {
      const [a, b] = args;
      if (!a || !b) return null;
      if (isResidual(a) && isResidual(b)) {
        return a.value !== undefined && b.value !== undefined ? { q: 0, kv: 0, value: a.value * b.value } : RESIDUAL;
      }
      // A term in q or kv times a known integer constant only (a coefficient that varies with h is not affine).
      const [x, c] = isResidual(a) ? [b, a] : [a, b];
      if (!isResidual(c) || c.value === undefined || !Number.isInteger(c.value)) return null;
      return { q: x.q * c.value, kv: x.kv * c.value };
    }
    case 'min': case 'max': {
      // A clamp: where one side provably never crosses the other over the ranges, the op is that side.
      const [a, b] = args;
      if (allResidual) return RESIDUAL;
      const ia = intervalOf(n.args[0]!, r), ib = intervalOf(n.args[1]!, r);
      if (!ia || !ib) return null;
      const lowFirst = ia[1] <= ib[0], lowSecond = ib[1] <= ia[0];
      if (n.op === 'min') return lowFirst ? a! : lowSecond ? b! : null;
      return lowFirst ? b! : lowSecond ? a! : null;
    }
    default:
      // load, where, floorDiv, mod, abs, div, comparisons, ...: a function of (b, h) only when all its inputs are.
      return allResidual ? RESIDUAL : null;
  }
}

/** The class of a site reading flat index `index`, over a call's dims. */
export function classifySite(index: IrNode, d: QkvDims): GradSiteClass {
  const r: IndexRanges = { b: [0, Math.max(d.B - 1, 0)], h: [0, Math.max(d.Hq - 1, 0)], q: [0, Math.max(d.Sq - 1, 0)],
    kv: [0, Math.max(d.Skv - 1, 0)] };
  const a = affineOf(index, r);
  if (!a) return { kind: 'general' };
  if (a.q === 0 && a.kv === 0) return { kind: 'uniform' };
  if ((a.kv === 1 || a.kv === -1) && a.q === -a.kv) return { kind: 'diagonal', sign: a.kv };
  return { kind: 'general' };
}

/** The partial-sum layout of one gradFor tensor. */
export interface GradForTensorPlan {
  readonly numel: number;
  /** Elements in each warp's slice: the widest CTA window. */
  readonly width: number;
  /** First element of each CTA's window (CTA order of the dK/dV grid: x fastest, then KV head, then batch). */
  readonly lo: Int32Array;
  /** Bytes of its partial buffer `[CTAs, warps, width]` f32. */
  readonly bytes: number;
  /** The class each of its sites was proved to have (classifySite), whether or not the fast path runs. */
  readonly classes: readonly GradSiteClass[];
  /** How the kernel accumulates each site: its class on the fast path (a diagonal site general where its stage does not fit), else general. */
  readonly accumulate: readonly GradSiteClass[];
}

/** The gradFor part of one CUDA backward call. */
export interface GradForPlan {
  readonly ctas: number;
  readonly tensors: readonly GradForTensorPlan[];
  /**
   * `'fast'`: uniform and diagonal sites take their fast accumulation
   * (flash_bwd.cuh), the rest the general one; `'general'`: every site the
   * general one. Both are correct and deterministic (different summation
   * orders, so the bits may differ between them); this is a plan choice.
   */
  readonly path: 'fast' | 'general';
  /** Why {@link path} (for tests and diagnostics). */
  readonly reason: string;
}

/** How {@link planGradFor} picks the path (lib/cuda/switches.ts gradForFastSwitch reads them at the call). */
export interface GradForPathSwitches {
  /** FLEXATTN_UNVERIFIED_GPU_PATHS=1: the fast kernels may run (until their GPU run verifies them). */
  readonly unverifiedGpuPaths: boolean;
  /** FLEXATTN_GRADFOR_FAST is not `0`. */
  readonly fastAllowed: boolean;
  /**
   * The device's shared memory per block (opt-in): each diagonal site adds a
   * {@link DIAG_STAGE_BYTES} stage to the dK/dV kernel's, so where that would
   * not fit (D = 128 on sm86/sm89) its sites stay general. Unknown: assumed to fit.
   */
  readonly smemPerBlockOptin?: number;
}

/** Static shared memory of one diagonal site's stage in the dK/dV kernel (flash_bwd.cuh gstage: warps × 18 slots × 32 lanes × f32). */
export const DIAG_STAGE_BYTES = BWD_DKDV_WARPS * 18 * 32 * 4;
/**
 * Dynamic shared memory of the dK/dV kernel at head dim D (flash_bwd.cuh DkdvConfig: K, V and two stages of Q
 * and dO, each a tiles.cuh SmemTile of 64 rows: D 16-bit values, plus a 16-byte pad where D / 8 is not a power of two ≥ 8).
 */
export function dkdvSmemBytes(D: number): number {
  const chunks = D / 8;
  const swizzled = chunks % 8 === 0 && (chunks & (chunks - 1)) === 0;
  return 6 * BWD_DKDV_ROWS * (swizzled ? D * 2 : D * 2 + 16);
}

/**
 * Plans the partial buffers of `gf` (lib/backward/mod-programs.ts
 * gradForSites) for a backward over `d`. Throws an InvalidArgumentError naming
 * `arg` when they would exceed {@link MAX_GRADFOR_PARTIAL_BYTES} (before
 * anything is allocated or launched).
 */
export function planGradFor(gf: GradForCode, numels: readonly number[], d: QkvDims, arg = 'options.gradFor',
  sw: GradForPathSwitches = { unverifiedGpuPaths: false, fastAllowed: true }): GradForPlan {
  const tiles = Math.ceil(d.Skv / BWD_DKDV_ROWS);
  const ctas = tiles * d.Hkv * d.B;
  const group = d.Hq / d.Hkv;
  let total = 0;
  const tensors = gf.tensors.map((t, k) => {
    const numel = numels[k]!;
    const lo = new Int32Array(ctas);
    let width = numel > 0 ? 1 : 0;
    if (numel > 0 && ctas > 0) {
      const q: Interval = [0, Math.max(d.Sq - 1, 0)];
      // The window of one CTA: the union of every site's index interval, clipped to the tensor.
      const windowOf = (b: number, hk: number, x: number): readonly [number, number] => {
        const r: IndexRanges = { b: [b, b], h: [hk * group, hk * group + group - 1], q,
          kv: [x * BWD_DKDV_ROWS, Math.min(x * BWD_DKDV_ROWS + BWD_DKDV_ROWS, d.Skv) - 1] };
        const memo = new Map<IrNode, Interval>();
        let a = Infinity, z = -Infinity;
        for (const s of t.sites) {
          const iv = intervalOf(s.index, r, memo);
          if (!iv) return [0, numel - 1];
          a = Math.min(a, iv[0]); z = Math.max(z, iv[1]);
        }
        return [Math.max(0, Math.min(a, numel - 1)), Math.max(0, Math.min(z, numel - 1))];
      };
      let c = 0;
      for (let b = 0; b < d.B; b++) for (let hk = 0; hk < d.Hkv; hk++) for (let x = 0; x < tiles; x++, c++) {
        const [a, z] = windowOf(b, hk, x);
        lo[c] = a;
        width = Math.max(width, z - a + 1);
      }
    }
    const bytes = ctas * BWD_DKDV_WARPS * width * 4;
    total += bytes;
    const classes = t.sites.map((s) => classifySite(s.index, d));
    return { numel, width, lo, bytes, classes, accumulate: classes };
  });
  if (total > MAX_GRADFOR_PARTIAL_BYTES) {
    const worst = tensors.reduce((w, t, i) => (t.bytes > tensors[w]!.bytes ? i : w), 0);
    throw new InvalidArgumentError(arg,
      `captured tensors whose CUDA gradient partial sums fit in 1 GiB (${ctas} dK/dV tiles × ${BWD_DKDV_WARPS} warps × the elements each tile can touch, f32; `
      + `here ${(total / 2 ** 30).toFixed(2)} GiB, most for ${arg}[${worst}]: ${tensors[worst]!.width} of its ${tensors[worst]!.numel} elements per tile). `
      + 'Use fewer heads or batches per call, a smaller table, index the table so each kv tile reads a narrow range of it, '
      + "or pass backend: 'cpu'",
      `${gf.tensors.length} tensor(s)`);
  }
  // The fast kernel code has not yet run on a GPU: without the switch the verified general path runs (a choice
  // between two correct kernels, not a refusal; the guard comes off with the GPU run that verifies them).
  const anyFast = tensors.some((t) => t.classes.some((c) => c.kind !== 'general'));
  const general: GradSiteClass = { kind: 'general' };
  let reason: string;
  let out: GradForTensorPlan[];
  if (!anyFast || !sw.fastAllowed || !sw.unverifiedGpuPaths) {
    reason = !anyFast ? 'no uniform or diagonal site' : !sw.fastAllowed ? 'FLEXATTN_GRADFOR_FAST=0'
      : 'the fast accumulation has not yet run on a GPU (FLEXATTN_UNVERIFIED_GPU_PATHS=1 enables it)';
    out = tensors.map((t) => ({ ...t, accumulate: t.classes.map(() => general) }));
  } else {
    const diagonals = tensors.reduce((n, t) => n + t.classes.filter((c) => c.kind === 'diagonal').length, 0);
    const fits = sw.smemPerBlockOptin === undefined || dkdvSmemBytes(d.D) + diagonals * DIAG_STAGE_BYTES <= sw.smemPerBlockOptin;
    out = fits ? tensors : tensors.map((t) => ({ ...t, accumulate: t.classes.map((c) => (c.kind === 'diagonal' ? general : c)) }));
    reason = 'fast accumulation: ' + out.map((t, k) => `[${k}] ${t.accumulate.map((c) => c.kind).join(',')}`).join(' ')
      + (fits ? '' : ` (diagonal sites general: their ${diagonals * DIAG_STAGE_BYTES} B stage does not fit the device's shared memory at D ${d.D})`);
  }
  const path = out.some((t) => t.accumulate.some((c) => c.kind !== 'general')) ? 'fast' : 'general';
  return { ctas, tensors: out, path, reason };
}

/** `gf` with each site's accumulation as `plan` chose it (general everywhere on the general path): what the kernel is generated from. */
export function gradForCodeFor(gf: GradForCode, plan: GradForPlan): GradForCode {
  return {
    tensors: gf.tensors.map((t, k) => ({
      ...t,
      sites: t.sites.map((s, i) => ({ index: s.index, weight: s.weight,
        accumulate: plan.tensors[k]!.accumulate[i]! })),
    })),
  };
}
