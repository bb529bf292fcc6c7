/**
 * Host brute-force block classification: evaluates the mask element by
 * element inside each block, stopping as soon as a block is known to be
 * partial. Reference for the analytic and GPU paths; the path used for
 * `device: 'cpu'`.
 * Internal: not exported from the package.
 * @module
 */
import { EMPTY, FULL, PARTIAL } from './layout.js';

/** `(b, h, q, kv) => keep`. */
export type MaskFn = (b: number, h: number, q: number, kv: number) => boolean;

/**
 * Classifies the blocks of batches `0..B-1` and heads `0..H-1` into a dense
 * [B,H,QB,KVB] Uint8Array (0 empty, 1 partial, 2 full), or [B,H,L] for the L
 * plane tiles listed in `tiles` (`qb * KVB + kvb`). Positions beyond
 * qLen/kvLen count as false, as PyTorch pads the mask with False, so a block
 * that overhangs the end is never full.
 */
export function classifyBruteForce(fn: MaskFn, B: number, H: number, qLen: number, kvLen: number, bq: number, bkv: number,
  tiles: Int32Array | null = null): Uint8Array {
  const QB = Math.ceil(qLen / bq), KVB = Math.ceil(kvLen / bkv);
  const L = tiles ? tiles.length : QB * KVB;
  const out = new Uint8Array(B * H * L);
  let o = 0;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let j = 0; j < L; j++) {
        const tile = tiles ? tiles[j]! : j;
        const r = Math.floor(tile / KVB), c = tile - r * KVB;
        const q0 = r * bq, q1 = Math.min(q0 + bq, qLen);
        const k0 = c * bkv, k1 = Math.min(k0 + bkv, kvLen);
        let sawF = q0 + bq > qLen || k0 + bkv > kvLen;
        let sawT = false;
        outer: for (let q = q0; q < q1; q++) {
          for (let kv = k0; kv < k1; kv++) {
            if (fn(b, h, q, kv)) {
              if (!sawT) { sawT = true; if (sawF) break outer; }
            } else if (!sawF) {
              sawF = true;
              if (sawT) break outer;
            }
          }
        }
        out[o++] = sawT ? (sawF ? PARTIAL : FULL) : EMPTY;
      }
    }
  }
  return out;
}

/** Repeats a [1,H,QB,KVB] or [B,1,QB,KVB] grid to [B,H,QB,KVB]. */
export function expandClasses(cls: Uint8Array, srcB: number, srcH: number, B: number, H: number, plane: number): Uint8Array {
  if (srcB === B && srcH === H) return cls;
  const out = new Uint8Array(B * H * plane);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const s = ((srcB === 1 ? 0 : b) * srcH + (srcH === 1 ? 0 : h)) * plane;
      out.set(cls.subarray(s, s + plane), (b * H + h) * plane);
    }
  }
  return out;
}
