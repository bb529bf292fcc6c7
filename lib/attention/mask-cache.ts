/**
 * The mask cache of {@link attention}: block masks (flex) and dense masks
 * (sdpa) per (mask structure, captured tensors' identity, params, dims,
 * device), in an LRU with pins (an entry evicted while calls use it is freed
 * when the last one lets go) and a byte limit on dense masks.
 * @module
 */
import { InvalidArgumentError } from '../errors.js';
import { describeValue } from '../messages.js';
import type { BlockMask } from '../blockmask.js';
import { argUse } from '../blockmask/mods-adapter.js';
import type { Device } from '../device.js';
import type { MaskMod } from '../mods/index.js';
import type { Tensor } from '../tensor.js';
import type { QkvDims } from '../validate.js';
import { nonNegInt } from './spec.js';

/** A cached mask: a block mask (flex) or a dense bool mask (sdpa), and tensors made for it. */
export type Built =
  | { kind: 'block'; blockMask: BlockMask; owned: Tensor[] }
  | { kind: 'dense'; mask: Tensor; owned: Tensor[] };

/** A cache entry; calls pin it while they use its mask. */
export interface Entry {
  key: string;
  promise: Promise<Built>;
  built?: Built;
  bytes: number;
  pins: number;
  evicted: boolean;
}

/** Counters of the mask cache of {@link attention} (see {@link attentionCacheStats}). */
export interface AttentionCacheStats {
  /** Masks held now. */
  entries: number;
  /** Calls that found their mask in the cache. */
  hits: number;
  /** Calls that had to build a mask. */
  misses: number;
  /** Masks built so far (block masks for flex, dense bool masks for sdpa). */
  builds: number;
  /** Masks dropped to stay within the limits. */
  evictions: number;
  /** Bytes held by cached dense (sdpa) masks. */
  denseBytes: number;
  /** Bytes held by cached block masks' index arrays (host copies). */
  blockMaskBytes: number;
  /** Limit on the number of cached masks. */
  maxEntries: number;
  /** Limit on the bytes of cached dense masks (the newest mask is always kept). */
  maxDenseBytes: number;
}

const cache = new Map<string, Entry>();
const stats = { hits: 0, misses: 0, builds: 0, evictions: 0 };
let maxEntries = 32;
let maxDenseBytes = 2 ** 30;
function release(e: Entry): void {
  const b = e.built;
  if (!b) return;
  if (b.kind === 'block') b.blockMask.dispose();
  else if (!b.mask.disposed) b.mask.dispose();
  for (const t of b.owned) if (!t.disposed) t.dispose();
  e.built = undefined;
}

function evict(e: Entry): void {
  cache.delete(e.key);
  e.evicted = true;
  stats.evictions++;
  if (e.pins === 0) release(e);
}

function trim(keep: Entry): void {
  for (const e of cache.values()) {
    if (cache.size <= maxEntries) break;
    if (e !== keep) evict(e);
  }
  let dense = 0;
  for (const e of cache.values()) if (e.built?.kind === 'dense') dense += e.bytes;
  for (const e of cache.values()) {
    if (dense <= maxDenseBytes) break;
    if (e !== keep && e.built?.kind === 'dense') { dense -= e.bytes; evict(e); }
  }
}

/** The entry for `key`, built by `build` on a miss, pinned for the caller (see {@link unpin}). */
export async function acquire(key: string, build: () => Promise<Built>): Promise<Entry> {
  let e = cache.get(key);
  if (e) {
    stats.hits++;
    cache.delete(key);
    cache.set(key, e); // most recently used last
  } else {
    stats.misses++;
    stats.builds++;
    const entry: Entry = { key, promise: build(), bytes: 0, pins: 0, evicted: false };
    e = entry;
    cache.set(key, entry);
    entry.promise.then((b) => {
      entry.built = b;
      entry.bytes = b.kind === 'dense' ? b.mask.numel : Object.values(b.blockMask.host).reduce((s, a) => s + a.byteLength, 0);
      if (entry.evicted && entry.pins === 0) release(entry);
      else if (!entry.evicted) trim(entry);
    }, () => {
      if (cache.get(key) === entry) cache.delete(key);
    });
  }
  e.pins++;
  try {
    await e.promise;
  } catch (err) {
    e.pins--;
    throw err;
  }
  return e;
}

/** Lets go of an entry {@link acquire} pinned. */
export function unpin(e: Entry): void {
  e.pins--;
  if (e.evicted && e.pins === 0) release(e);
}

/** Statistics of the mask cache used by {@link attention}. */
export function attentionCacheStats(): AttentionCacheStats {
  let denseBytes = 0, blockMaskBytes = 0;
  for (const e of cache.values()) {
    if (e.built?.kind === 'dense') denseBytes += e.bytes;
    else if (e.built?.kind === 'block') blockMaskBytes += e.bytes;
  }
  return { entries: cache.size, ...stats, denseBytes, blockMaskBytes, maxEntries, maxDenseBytes };
}

/** Drops every cached mask (freed once no call in flight uses it) and resets the counters. */
export function clearMaskCache(): void {
  for (const e of [...cache.values()]) evict(e);
  stats.hits = 0; stats.misses = 0; stats.builds = 0; stats.evictions = 0;
}

/**
 * Sets the limits of the mask cache: `maxEntries` masks (default 32) and
 * `maxDenseBytes` bytes of dense sdpa masks (default 1 GiB; the newest mask
 * is kept even when larger). Shrinking evicts at once.
 */
export function configureAttentionCache(options: { maxEntries?: number; maxDenseBytes?: number }): void {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an object { maxEntries, maxDenseBytes }', describeValue(options));
  if (options.maxEntries !== undefined) maxEntries = nonNegInt(options.maxEntries, 'options.maxEntries', true);
  if (options.maxDenseBytes !== undefined) {
    const b = options.maxDenseBytes;
    if (typeof b !== 'number' || !(b >= 0)) throw new InvalidArgumentError('options.maxDenseBytes', 'a non-negative number of bytes', describeValue(b));
    maxDenseBytes = b;
  }
  const all = [...cache.values()];
  const newest = all[all.length - 1];
  if (newest) trim(newest);
}

/**
 * Cache key: structure of the mask and identity of its captured tensors (`modKey`),
 * its params, dims, device, kind. Equal masks traced twice share a key.
 */
export function cacheKey(kind: 'block' | 'dense', mod: MaskMod, modKey: string, params: Record<string, number>,
  B: number, H: number, Sq: number, Skv: number, device: Device): string {
  const ps = mod.params.map((p) => `${p.name}=${params[p.name]}`).join(',');
  return `${kind}|${device}|${B}x${H}x${Sq}x${Skv}|${modKey}|${ps}`;
}

/** Effective batch/head extents of a mask: 1 where the mask does not read b / h. */
export function maskDims(mod: MaskMod, d: QkvDims): { B: number; H: number } {
  const use = argUse(mod);
  return { B: use.b ? d.B : 1, H: use.h ? d.Hq : 1 };
}
