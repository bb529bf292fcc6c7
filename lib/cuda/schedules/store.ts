/**
 * Where launches keep what they derive from a block mask (finer block lists,
 * segmented grids, CTA orders): a `WeakMap` keyed by the mask, never the mask
 * itself, so a `BlockMask` stays plain data and its derived data goes with it.
 * Device tensors derived from a mask are freed when the mask is disposed (its
 * dispose notifies the store) and made again by the next launch that needs
 * them; host-side results stay cached for the mask's lifetime.
 * Internal: not exported from the package.
 * @module
 */
import type { BlockMask } from '../../blockmask/mask.js';
import type { Tensor } from '../../tensor.js';

interface Derived {
  /** Host-side results (or promises of them) by key. */
  readonly values: Map<string, unknown>;
  /** Device tensors by key; disposed with the mask. */
  readonly tensors: Map<string, Tensor>;
  /** Other masks derived from this one (schedules): disposed with it. */
  readonly masks: Set<BlockMask>;
}

const store = new WeakMap<BlockMask, Derived>();

function entry(bm: BlockMask): Derived {
  let e = store.get(bm);
  if (!e) {
    const d: Derived = { values: new Map(), tensors: new Map(), masks: new Set() };
    bm.onDispose(() => {
      for (const t of d.tensors.values()) if (!t.disposed) t.dispose();
      d.tensors.clear();
      for (const m of d.masks) m.dispose();
    });
    store.set(bm, (e = d));
  }
  return e;
}

/** The value derived from `bm` under `key`, made by `make` on first use. */
export function derived<T>(bm: BlockMask, key: string, make: () => T): T {
  const { values } = entry(bm);
  if (values.has(key)) return values.get(key) as T;
  const v = make();
  values.set(key, v);
  return v;
}

/** The value derived from `bm` under `key`, if it was made. */
export function peekDerived<T>(bm: BlockMask, key: string): T | undefined {
  return store.get(bm)?.values.get(key) as T | undefined;
}

/** Forgets `key` (e.g. a build that failed, so the next launch tries again). */
export function forgetDerived(bm: BlockMask, key: string, value: unknown): void {
  const e = store.get(bm);
  if (e && e.values.get(key) === value) e.values.delete(key);
}

/** A device tensor derived from `bm`, made once per `key` (again after the mask was disposed), freed with the mask. */
export function derivedTensor(bm: BlockMask, key: string, make: () => Tensor): Tensor {
  const { tensors } = entry(bm);
  const t = tensors.get(key);
  if (t && !t.disposed) return t;
  const n = make();
  tensors.set(key, n);
  return n;
}

/** Makes `child` (a mask derived from `bm`, e.g. a schedule) release its device tensors whenever `bm` is disposed. */
export function adoptMask(bm: BlockMask, child: BlockMask): void {
  entry(bm).masks.add(child);
}
