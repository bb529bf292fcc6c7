/**
 * Kernel loading for the CUDA backend: precompiled (embedded fatbin) or
 * NVRTC-compiled, once per device and kernel name, off the main thread.
 *
 * Tiered JIT for generated (flex) kernels. A kernel found in neither the
 * memory nor the disk cache is compiled twice, concurrently, on worker threads:
 *
 * - **quick**: NVRTC with `--Ofast-compile=min`: a much shorter compile for a
 *   kernel that runs a little slower (figures: bench/results/kernel-notes.md,
 *   run 6), so a new mod's first call does not wait for the full build.
 *   The first call runs on it.
 * - **optimized**: the full build. It replaces the quick kernel as soon as it
 *   is ready (calls enqueued after that use it) and is written to the disk
 *   cache, so a later process loads it directly and never sees a quick tier.
 *
 * A process that exits while an optimized compile is still running waits for
 * it (up to about a second) so that it lands in the disk cache.
 * `FLEXATTN_JIT_TIERED=0` turns tiering off: first calls then wait for the
 * optimized compile. {@link jitIdle} waits for pending upgrades (benchmarks
 * call it before timing); {@link jitStatus} reports what was loaded.
 * `NODE_DEBUG=flexattn` logs each compile as it starts and ends (`util.debuglog`).
 *
 * Disk cache (native/jit/disk_cache.h): `FLEXATTN_CACHE_MAX_MB` (default 1024,
 * 0 = off) caps it, least recently used entries go first; a bad value is an
 * InvalidArgumentError at the first kernel load. A cache that cannot be
 * written (read-only, full disk) never fails a call: the kernel is used from
 * memory and one warning says so.
 * @module
 */
import { debuglog } from 'node:util';
import { envSwitch } from './env.js';
import { InternalError } from './errors.js';
import { kernelConfig, type KernelConfig } from './cuda/generated/flash-fwd-params.js';
import { native, type NativeKernelHandle } from './native.js';

/** Compile progress on stderr under NODE_DEBUG=flexattn (a first flex call can take a second). */
const debug = debuglog('flexattn');

/** Which build of a kernel is in use. */
export type KernelTier = 'precompiled' | 'quick' | 'optimized';

/** One loaded kernel, as reported by {@link jitStatus}. */
export interface KernelStatus {
  /** Kernel name (generated kernels carry a hash of their mods). */
  readonly kernel: string;
  /** CUDA device index. */
  readonly device: number;
  /** Build in use now: 'precompiled' (embedded fatbin), 'quick' (first tier, upgrade pending) or 'optimized'. */
  readonly tier: KernelTier;
  /** Where the build in use came from: 'fatbin', 'nvrtc' (compiled in this process), 'disk' or 'memory' (cache). */
  readonly origin: string;
  /** Milliseconds spent obtaining the build in use (compile or cache load), on a worker thread. */
  readonly compileMs: number;
  /** Milliseconds of the quick-tier compile, when this kernel started on one. */
  readonly quickCompileMs?: number;
  /** The optimized build is still compiling. */
  readonly upgradePending: boolean;
  /** Why the optimized build failed, when it did (the quick build stays in use). */
  readonly upgradeError?: string;
}

/** A loaded kernel; `handle` may be swapped once (quick → optimized). @internal */
export interface KernelEntry {
  handle: NativeKernelHandle;
  cfg: KernelConfig;
  kernel: string;
  device: number;
  tier: KernelTier;
  quickCompileMs?: number;
  upgradePending: boolean;
  upgradeError?: string;
}

/** Same math flags as the precompiled fatbin (CMakeLists.txt), so JIT and precompiled twins agree. */
const BASE_OPTIONS = ['--use_fast_math'];
const QUICK_OPTIONS = [...BASE_OPTIONS, '--Ofast-compile=min'];

const kernels = new Map<string, Promise<KernelEntry>>();
/** The entries of `kernels` that have resolved. */
const loaded = new Map<string, KernelEntry>();
const upgrades = new Set<Promise<void>>();

function tieredEnabled(): boolean {
  const v = envSwitch('FLEXATTN_JIT_TIERED');
  return v === undefined || v === '' || v === '1' || v.toLowerCase() === 'true';
}

function toEntry(handle: NativeKernelHandle, kernel: string, device: number, tier: KernelTier): KernelEntry {
  if (!handle.config) throw new InternalError(`kernel ${kernel} has no ${kernel}_cfg`);
  return { handle, cfg: kernelConfig(handle.config), kernel, device, tier, upgradePending: false };
}

/**
 * Turns the first disk-cache problem of the process (recorded natively by the
 * JIT's cache writes and reads) into one warning: an entry that was not
 * written costs the next process a compile, which should not go unnoticed.
 * @internal
 */
export function reportDiskCacheProblem(): void {
  const problem = native().jitCacheWarning();
  if (problem === null) return;
  debug('disk cache: %s', problem);
  process.emitWarning(`flexattn: ${problem}. Compiled kernels stay in memory for this process only; ` +
    'set FLEXATTN_CACHE_DIR to a writable directory, or FLEXATTN_CACHE_MAX_MB=0 to turn the disk cache off.',
    { code: 'FLEXATTN_CACHE' });
}

/** native().loadKernel, then any disk-cache problem it met is reported. */
async function nativeLoad(device: number, spec: KernelSpec, options: string[]): Promise<NativeKernelHandle> {
  try {
    return await native().loadKernel(device, { ...spec, options });
  } finally {
    reportDiskCacheProblem();
  }
}

async function loadSingle(device: number, spec: KernelSpec): Promise<KernelEntry> {
  debug('loading kernel %s…', spec.kernel);
  const handle = await nativeLoad(device, spec, BASE_OPTIONS);
  debug('loading kernel %s… done in %d ms (%s)', spec.kernel, Math.round(handle.compileMs), handle.origin);
  return toEntry(handle, spec.kernel, device, handle.origin === 'fatbin' ? 'precompiled' : 'optimized');
}

async function loadTiered(device: number, spec: KernelSpec): Promise<KernelEntry> {
  if (native().jitCached(device, spec.source, BASE_OPTIONS)) return loadSingle(device, spec);
  // Both compiles start now (quick first); the global JIT lock covers only the caches.
  debug('compiling flex kernel %s (quick tier, optimized build alongside)…', spec.kernel);
  const quick = nativeLoad(device, spec, QUICK_OPTIONS);
  const optimized = nativeLoad(device, spec, BASE_OPTIONS);
  optimized.catch(() => {}); // handled below; avoids an unhandled rejection while `quick` is awaited
  let entry: KernelEntry;
  try {
    entry = toEntry(await quick, spec.kernel, device, 'quick');
  } catch {
    // No quick build (e.g. an NVRTC without --Ofast-compile): the optimized
    // compile is the answer, and its error (a CompileError for a bad mod) the one to report.
    return toEntry(await optimized, spec.kernel, device, 'optimized');
  }
  entry.quickCompileMs = entry.handle.compileMs;
  debug('compiling flex kernel %s (quick tier)… done in %d ms', spec.kernel, Math.round(entry.quickCompileMs));
  entry.upgradePending = true;
  const upgrade = optimized.then(
    (h) => {
      entry.handle = h;
      entry.tier = 'optimized';
      debug('optimized build of %s ready in %d ms; it replaces the quick build', spec.kernel, Math.round(h.compileMs));
    },
    (e: unknown) => {
      entry.upgradeError = e instanceof Error ? e.message : String(e);
      process.emitWarning(`flexattn: the optimized build of ${spec.kernel} failed; the quick build stays in use. ${entry.upgradeError}`,
        { code: 'FLEXATTN_JIT_UPGRADE' });
    },
  ).finally(() => {
    entry.upgradePending = false;
    upgrades.delete(upgrade);
  });
  upgrades.add(upgrade);
  return entry;
}

/** What loadKernel needs: kernel name, NVRTC source, and the fatbin module to try first (dense kernels). @internal */
export interface KernelSpec { kernel: string; source: string; module?: string }

/**
 * Loads a kernel once per device and name. With `module`, the embedded fatbin
 * first and NVRTC as the fallback; without it, a generated kernel through the
 * tiered JIT. Failures are not cached, so a later call retries. The disk
 * cache settings are checked first, for every kernel (precompiled ones too), so
 * a bad FLEXATTN_CACHE_MAX_MB is reported at the first load rather than only
 * when some later kernel happens to need a compile. @internal
 */
export function loadKernel(device: number, spec: KernelSpec): Promise<KernelEntry> {
  const key = `${device}|${spec.kernel}`;
  let p = kernels.get(key);
  if (!p) {
    p = (async () => {
      native().jitCacheConfig(); // throws InvalidArgumentError naming FLEXATTN_CACHE_MAX_MB
      return spec.module || !tieredEnabled() ? loadSingle(device, spec) : loadTiered(device, spec);
    })();
    kernels.set(key, p);
    p.then((e) => loaded.set(key, e), () => kernels.delete(key));
  }
  return p;
}

/**
 * The entry of a kernel {@link loadKernel} has already loaded on `device`, or
 * undefined: launches use it to skip an await (a microtask hop and a promise
 * per launch) once their kernel is resident. @internal
 */
export function loadedKernel(device: number, kernel: string): KernelEntry | undefined {
  return loaded.get(`${device}|${kernel}`);
}

/**
 * Resolves when no optimized kernel build is pending (see the module notes on
 * tiered JIT). Call it before timing a kernel, or before handing the process a
 * latency-critical phase, so that every generated kernel runs its optimized build.
 */
export async function jitIdle(): Promise<void> {
  while (upgrades.size > 0) await Promise.allSettled([...upgrades]);
}

/** Kernels loaded in this process, with the build (tier) each one uses now. */
export async function jitStatus(): Promise<KernelStatus[]> {
  const settled = await Promise.allSettled([...kernels.values()]);
  const out: KernelStatus[] = [];
  for (const s of settled) {
    if (s.status !== 'fulfilled') continue;
    const e = s.value;
    out.push({
      kernel: e.kernel, device: e.device, tier: e.tier, origin: e.handle.origin, compileMs: e.handle.compileMs,
      ...(e.quickCompileMs !== undefined ? { quickCompileMs: e.quickCompileMs } : {}),
      upgradePending: e.upgradePending,
      ...(e.upgradeError !== undefined ? { upgradeError: e.upgradeError } : {}),
    });
  }
  return out;
}
