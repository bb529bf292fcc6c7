/**
 * NCCL as the addon finds it: what `flexattn info` reports, the unique id one
 * process makes for the others of a job, and the check before a communicator
 * is created. The library is dlopen'ed on first use (native/cuda/nccl.cc has
 * the search order), never when flexattn loads.
 * @module
 */
import { native, nativeAvailable } from '../native.js';
import { NcclUnavailableError } from '../errors.js';

/** What {@link ncclInfo} reports. */
export interface NcclInfo {
  /** True when a usable libnccl (2.18 or newer, every symbol present) was loaded. */
  loaded: boolean;
  /** The library's path ('' when not loaded). */
  path: string;
  /** e.g. `"2.21.5"` ('' when not loaded). */
  version: string;
  /** Why it did not load: the places searched and how to install it ('' when loaded). */
  error: string;
}

/** Describes the NCCL library flexattn would use. Never throws: a missing piece is reported in `error`. */
export function ncclInfo(): NcclInfo {
  if (!nativeAvailable()) return { loaded: false, path: '', version: '', error: 'native addon not loaded' };
  try {
    const s = native().ncclStatus();
    return { loaded: s.loaded, path: s.path, version: s.version, error: s.error };
  } catch (e) {
    return { loaded: false, path: '', version: '', error: (e as Error).message };
  }
}

/**
 * Loads NCCL or throws why not: {@link NcclUnavailableError} (nothing found),
 * NcclVersionError (older than 2.18) or NcclSymbolError (a symbol missing).
 * @internal
 */
export function requireNccl(): void {
  const s = native().ncclStatus();
  if (s.loaded) return;
  throw s.errorObject ?? new NcclUnavailableError(s.error);
}

/**
 * A new NCCL unique id (128 bytes) for a job of one process per GPU: make it
 * in one process, hand it to the others (over worker_threads' postMessage, a
 * socket, ...), and pass it to `createCommunicator({ uniqueId, rank, size, device })`
 * in every one of them. Needs libnccl, not a GPU.
 */
export function ncclUniqueId(): Uint8Array {
  requireNccl();
  return new Uint8Array(native().ncclGetUniqueId());
}
