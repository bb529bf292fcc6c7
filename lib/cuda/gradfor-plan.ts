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
import type { GradForCode, IrNode } from '../mods/index.js';
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

/** The partial-sum layout of one gradFor tensor. */
export interface GradForTensorPlan {
  readonly numel: number;
  /** Elements in each warp's slice: the widest CTA window. */
  readonly width: number;
  /** First element of each CTA's window (CTA order of the dK/dV grid: x fastest, then KV head, then batch). */
  readonly lo: Int32Array;
  /** Bytes of its partial buffer `[CTAs, warps, width]` f32. */
  readonly bytes: number;
}

/** The gradFor part of one CUDA backward call. */
export interface GradForPlan {
  readonly ctas: number;
  readonly tensors: readonly GradForTensorPlan[];
}

/**
 * Plans the partial buffers of `gf` (lib/backward/mod-programs.ts
 * gradForSites) for a backward over `d`. Throws an InvalidArgumentError naming
 * `arg` when they would exceed {@link MAX_GRADFOR_PARTIAL_BYTES} (before
 * anything is allocated or launched).
 */
export function planGradFor(gf: GradForCode, numels: readonly number[], d: QkvDims, arg = 'options.gradFor'): GradForPlan {
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
    return { numel, width, lo, bytes };
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
  return { ctas, tensors };
}
