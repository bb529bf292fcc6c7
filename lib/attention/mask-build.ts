/**
 * Building the masks {@link attention} caches: a block mask on q's device
 * (captured tensors copied there once), or a dense bool mask built from the
 * block classification (only partial tiles are evaluated per element).
 * @module
 */
import { InvalidArgumentError } from '../errors.js';
import { createBlockMaskIn } from '../blockmask/create.js';
import { hostMaskFn } from '../blockmask/mods-adapter.js';
import type { Device } from '../device.js';
import type { CapturedTensorLike, MaskMod } from '../mods/index.js';
import { retargetMask } from '../mods/transform.js';
import type { Hold } from '../ownership.js';
import { Tensor } from '../tensor.js';
import type { QkvDims } from '../validate.js';
import type { Built } from './mask-cache.js';

/** A block mask for `mod` on `device`; `hold`: the claims of the call that builds it (captured tensors are read through it). */
export async function buildBlockMask(hold: Hold, mod: MaskMod, params: Record<string, number>, B: number, H: number, d: QkvDims,
  device: Device): Promise<Built> {
  // Captured tensors (e.g. docIds) not on q's device are copied once, here, instead of on every call.
  const map = new Map<CapturedTensorLike, CapturedTensorLike>();
  const owned: Tensor[] = [];
  for (const t of mod.tensors) {
    if (t instanceof Tensor && t.device !== device) {
      const c = await (hold.get(t) as Tensor).toDevice(device);
      map.set(t, c);
      owned.push(c);
    }
  }
  const m = retargetMask(mod, map);
  const blockMask = await createBlockMaskIn(hold, m, B, H, d.Sq, d.Skv, { device, params });
  return { kind: 'block', blockMask, owned };
}

/**
 * Dense bool mask [B, H, Sq, Skv] (B/H of 1 broadcast): tiles are classified
 * first (analytically or by the block-mask kernel), full tiles are filled,
 * only partial tiles evaluate the mask element by element on the host.
 */
export async function buildDenseMask(hold: Hold, mod: MaskMod, params: Record<string, number>, B: number, H: number, d: QkvDims,
  device: Device): Promise<Built> {
  const { Sq, Skv } = d;
  const n = B * H * Sq * Skv;
  if (n > 2 ** 32 - 1) {
    throw new InvalidArgumentError('spec.impl', `a dense mask below 4 GiB for sdpa (B·H·Sq·Skv = ${n}); use impl: 'flex'`, "'sdpa'");
  }
  const bm = await createBlockMaskIn(hold, mod, B, H, Sq, Skv, { device, params });
  const fn = await hostMaskFn(hold.maskMod(mod), params);
  const [bq, bkv] = bm.blockSize;
  const { kvNumBlocks, kvIndices, fullKvNumBlocks, fullKvIndices } = bm.host;
  const QB = bm.numQBlocks, KVB = bm.numKvBlocks;
  const dense = new Uint8Array(n);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = b * H + h;
      const plane = g * Sq * Skv;
      for (let qb = 0; qb < QB; qb++) {
        const row = g * QB + qb;
        const q0 = qb * bq, q1 = Math.min(Sq, q0 + bq);
        for (let j = 0; j < fullKvNumBlocks[row]!; j++) {
          const kb = fullKvIndices[row * KVB + j]!;
          const k0 = kb * bkv, k1 = Math.min(Skv, k0 + bkv);
          for (let q = q0; q < q1; q++) dense.fill(1, plane + q * Skv + k0, plane + q * Skv + k1);
        }
        for (let j = 0; j < kvNumBlocks[row]!; j++) {
          const kb = kvIndices[row * KVB + j]!;
          const k0 = kb * bkv, k1 = Math.min(Skv, k0 + bkv);
          for (let q = q0; q < q1; q++) {
            const o = plane + q * Skv;
            for (let kv = k0; kv < k1; kv++) if (fn(b, h, q, kv)) dense[o + kv] = 1;
          }
        }
      }
    }
  }
  bm.dispose();
  const mask = Tensor.fromHost(dense, [B, H, Sq, Skv], 'bool', { device });
  return { kind: 'dense', mask, owned: [] };
}
