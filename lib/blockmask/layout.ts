/**
 * Host-side block-mask layout: dense block classes <-> PyTorch's ordered
 * (num, indices) form, transposes, rendering. Pure functions on typed arrays,
 * no device or mod dependencies.
 * Internal: not exported from the package.
 * @module
 */

/** Block class codes used by the dense form (`BlockMask.toDense()`). */
export const EMPTY = 0;
export const PARTIAL = 1;
export const FULL = 2;

/** The eight arrays of a block mask, host copies, row-major and contiguous. */
export interface BlockMaskArrays {
  /** [B,H,QB] */
  kvNumBlocks: Int32Array;
  /** [B,H,QB,KVB] */
  kvIndices: Int32Array;
  /** [B,H,QB] */
  fullKvNumBlocks: Int32Array;
  /** [B,H,QB,KVB] */
  fullKvIndices: Int32Array;
  /** [B,H,KVB] */
  qNumBlocks: Int32Array;
  /** [B,H,KVB,QB] */
  qIndices: Int32Array;
  /** [B,H,KVB] */
  fullQNumBlocks: Int32Array;
  /** [B,H,KVB,QB] */
  fullQIndices: Int32Array;
}

/** Batch/grid dimensions of a block mask. */
export interface BlockDims {
  B: number;
  H: number;
  /** Number of query blocks (rows). */
  QB: number;
  /** Number of key/value blocks (columns). */
  KVB: number;
}

/**
 * Ordered form of one boolean dense matrix family `sel[g, r, c]` (g = flattened
 * batch dims), as `torch.argsort(dense, descending=True, stable=True)` gives it:
 * per row, the selected columns ascending, then the others ascending.
 * `transpose` reads `sel[g, c, r]` instead (rows and columns swapped).
 */
function orderRows(
  G: number, rows: number, cols: number,
  isSel: (g: number, r: number, c: number) => boolean,
): { num: Int32Array; idx: Int32Array } {
  const num = new Int32Array(G * rows);
  const idx = new Int32Array(G * rows * cols);
  for (let g = 0; g < G; g++) {
    for (let r = 0; r < rows; r++) {
      const row = g * rows + r;
      const base = row * cols;
      let n = 0;
      for (let c = 0; c < cols; c++) if (isSel(g, r, c)) idx[base + n++] = c;
      num[row] = n;
      let m = n;
      if (n < cols) for (let c = 0; c < cols; c++) if (!isSel(g, r, c)) idx[base + m++] = c;
    }
  }
  return { num, idx };
}

/**
 * Pads row `idx[base .. base+n)` whose first `num` entries hold ascending
 * selected indices: the remaining indices of [0, n) follow in ascending order
 * (what PyTorch's stable argsort leaves there).
 */
function padRow(idx: Int32Array, base: number, num: number, n: number): void {
  if (num === n) return;
  let p = base + num;
  let next = 0;
  for (let j = 0; j < num; j++) {
    const sel = idx[base + j]!;
    for (let k = next; k < sel; k++) idx[p++] = k;
    next = sel + 1;
  }
  for (let k = next; k < n; k++) idx[p++] = k;
}

/** Fast path of {@link orderRows} over a dense class array, kv side and q side at once. */
export function arraysFromClasses(cls: Uint8Array, d: BlockDims): BlockMaskArrays {
  const { B, H, QB, KVB } = d;
  const G = B * H;
  const kvNumBlocks = new Int32Array(G * QB);
  const fullKvNumBlocks = new Int32Array(G * QB);
  const kvIndices = new Int32Array(G * QB * KVB);
  const fullKvIndices = new Int32Array(G * QB * KVB);
  const qNumBlocks = new Int32Array(G * KVB);
  const fullQNumBlocks = new Int32Array(G * KVB);
  const qIndices = new Int32Array(G * KVB * QB);
  const fullQIndices = new Int32Array(G * KVB * QB);
  const plane = QB * KVB;
  for (let g = 0; g < G; g++) {
    const off = g * plane;
    const kvRow0 = g * QB, qRow0 = g * KVB;
    for (let r = 0; r < QB; r++) {
      const row = kvRow0 + r;
      const base = row * KVB;
      const co = off + r * KVB;
      let np = 0, nf = 0;
      for (let c = 0; c < KVB; c++) {
        const v = cls[co + c];
        if (v === 0) continue;
        if (v === PARTIAL) {
          kvIndices[base + np++] = c;
          // q side: rows r arrive in ascending order, so each column's list stays sorted.
          const qr = qRow0 + c;
          qIndices[qr * QB + qNumBlocks[qr]!++] = r;
        } else {
          fullKvIndices[base + nf++] = c;
          const qr = qRow0 + c;
          fullQIndices[qr * QB + fullQNumBlocks[qr]!++] = r;
        }
      }
      kvNumBlocks[row] = np;
      fullKvNumBlocks[row] = nf;
      padRow(kvIndices, base, np, KVB);
      padRow(fullKvIndices, base, nf, KVB);
    }
    for (let c = 0; c < KVB; c++) {
      const qr = qRow0 + c;
      padRow(qIndices, qr * QB, qNumBlocks[qr]!, QB);
      padRow(fullQIndices, qr * QB, fullQNumBlocks[qr]!, QB);
    }
  }
  return { kvNumBlocks, kvIndices, fullKvNumBlocks, fullKvIndices, qNumBlocks, qIndices, fullQNumBlocks, fullQIndices };
}

/** Repeats single-(b,h) arrays over G = B·H identical planes. */
export function replicateArrays(a: BlockMaskArrays, G: number): BlockMaskArrays {
  if (G === 1) return a;
  const rep = (x: Int32Array) => {
    const out = new Int32Array(x.length * G);
    for (let g = 0; g < G; g++) out.set(x, g * x.length);
    return out;
  };
  return {
    kvNumBlocks: rep(a.kvNumBlocks), kvIndices: rep(a.kvIndices), fullKvNumBlocks: rep(a.fullKvNumBlocks), fullKvIndices: rep(a.fullKvIndices),
    qNumBlocks: rep(a.qNumBlocks), qIndices: rep(a.qIndices), fullQNumBlocks: rep(a.fullQNumBlocks), fullQIndices: rep(a.fullQIndices),
  };
}

/** Dense 0/1 membership of an ordered (num, indices) pair: `sel[g*rows*cols + r*cols + c]`. */
export function orderedToDense(num: Int32Array, idx: Int32Array, G: number, rows: number, cols: number): Uint8Array {
  const sel = new Uint8Array(G * rows * cols);
  for (let row = 0; row < G * rows; row++) {
    const n = Math.min(num[row]!, cols);
    const base = row * cols;
    for (let j = 0; j < n; j++) sel[base + idx[base + j]!] = 1;
  }
  return sel;
}

/** Transposed ordered form (q side from kv side), as PyTorch's `_transpose_ordered`. */
export function transposeOrdered(num: Int32Array, idx: Int32Array, G: number, rows: number, cols: number):
  { num: Int32Array; idx: Int32Array } {
  const sel = orderedToDense(num, idx, G, rows, cols);
  const plane = rows * cols;
  return orderRows(G, cols, rows, (g, r, c) => sel[g * plane + c * cols + r] === 1);
}

/** Dense class array [G, QB, KVB] (0 empty, 1 partial, 2 full) from the kv-side arrays. */
export function classesFromArrays(a: BlockMaskArrays, d: BlockDims): Uint8Array {
  const G = d.B * d.H;
  const p = orderedToDense(a.kvNumBlocks, a.kvIndices, G, d.QB, d.KVB);
  const f = orderedToDense(a.fullKvNumBlocks, a.fullKvIndices, G, d.QB, d.KVB);
  for (let i = 0; i < p.length; i++) if (f[i]) p[i] = FULL;
  return p;
}

/** Sums an Int32Array. */
export function sum(a: Int32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]!;
  return s;
}

/** Options of `BlockMask.toString()`. */
export interface ToStringOptions {
  /** Maximum rows × columns of the picture; larger masks are summarised (default [20, 20]; -1: no limit). */
  gridSize?: number | [number, number];
  /** Maximum number of (batch, head) pictures (default 4). */
  limit?: number;
}

/**
 * PyTorch's `BlockMask.to_string`, distinguishing full ('█') from partial
 * ('░') blocks: a summarised cell is '█' when all its blocks are full, ' '
 * when all are empty, '░' otherwise. Each cell is two characters wide.
 */
export function renderClasses(cls: Uint8Array, d: BlockDims, opts: ToStringOptions = {}): string {
  const { B, H, QB, KVB } = d;
  const grid = opts.gridSize ?? [20, 20];
  const limit = opts.limit ?? 4;
  let maxRows: number, maxCols: number;
  if (grid === -1) { maxRows = QB; maxCols = KVB; }
  else if (typeof grid === 'number') { maxRows = grid; maxCols = grid; }
  else [maxRows, maxCols] = grid;
  const cdiv = (a: number, b: number) => Math.floor((a + b - 1) / b);
  const rowStep = Math.max(1, cdiv(QB, Math.max(1, maxRows)));
  const colStep = Math.max(1, cdiv(KVB, Math.max(1, maxCols)));
  const out: string[] = [];
  let count = 0;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      if (count === limit) {
        out.push('...');
        out.push('To print out more, use toString({ limit: N })');
        out.push('You can also slice (blockMask.slice(b, h)) to choose a specific batch or head');
        return out.join('\n');
      }
      count++;
      const off = (b * H + h) * QB * KVB;
      let vis = `(${b}, ${h})\n`;
      for (let r = 0; r < QB; r += rowStep) {
        for (let c = 0; c < KVB; c += colStep) {
          let allFull = true, allEmpty = true;
          for (let rr = r; rr < Math.min(QB, r + rowStep); rr++) {
            for (let cc = c; cc < Math.min(KVB, c + colStep); cc++) {
              const v = cls[off + rr * KVB + cc];
              if (v !== FULL) allFull = false;
              if (v !== EMPTY) allEmpty = false;
            }
          }
          const ch = allFull ? '█' : allEmpty ? ' ' : '░';
          vis += ch + ch;
        }
        vis += '\n';
      }
      out.push(vis);
    }
  }
  return out.join('\n');
}
