/**
 * One parameter buffer per loaded kernel, reused by every launch of it: the
 * packers write into it (clearing it first) and `launch` hands it to the
 * driver, which copies the parameters when the launch is enqueued, so the
 * buffer is free again as soon as `launch` returns. A fresh buffer per launch
 * is an ArrayBuffer with an off-heap backing store for the GC to track.
 * Pack and launch with no await between them.
 * Internal: not exported from the package.
 * @module
 */
const scratch = new WeakMap<object, Uint8Array>();

/** The buffer of the kernel whose config is `cfg` (the entry's own object, so one per kernel). */
export function paramScratch(cfg: { readonly paramBytes: number }): Uint8Array {
  let b = scratch.get(cfg);
  if (!b || b.byteLength !== cfg.paramBytes) scratch.set(cfg, (b = new Uint8Array(cfg.paramBytes)));
  return b;
}
