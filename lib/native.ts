/**
 * Loads the Node-API addon (local build first, then `prebuilds/`) and
 * describes what it exports. Loading never touches CUDA; the driver and NVRTC
 * are dlopen'ed by the addon on first GPU use.
 * Internal: not exported from the package.
 * @module
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as errors from './errors.js';

/** Numeric dtype codes shared with native code (native/cpu/attention.h, native/runtime). */
export const DTYPE_CODE = { bf16: 0, f16: 1, f32: 2, i32: 3, bool: 4 } as const;

/** An opaque device allocation owned by the caching allocator. */
export interface NativeDeviceBuffer {
  readonly device: number;
  readonly bytes: number;
  /** Device address, for diagnostics. */
  readonly ptr: bigint;
  readonly disposed: boolean;
  /** Returns the block to the allocator's cache (stream-ordered; safe to call twice). */
  dispose(): void;
}

/** Strided operand description passed to native kernels (element units). */
export interface NativeStrided {
  buffer: NativeDeviceBuffer;
  offset: number;
  dtype: number;
  shape: number[];
  strides: number[];
}

export interface NativeCudaStatus {
  driverLoaded: boolean;
  driverPath: string;
  driverError: string;
  driverVersion: number;
  deviceCount: number;
  nvrtcLoaded: boolean;
  nvrtcPath: string;
  nvrtcError: string;
  nvrtcVersion: string;
  fatbinBytes: number;
  fatbinArchs: string[];
}

export interface NativeDeviceProps {
  index: number;
  name: string;
  major: number;
  minor: number;
  totalMemory: number;
  multiprocessors: number;
  sharedMemoryPerBlockOptin: number;
}

export interface NativeMemoryStats {
  allocatedBytes: number;
  reservedBytes: number;
  peakAllocatedBytes: number;
  numAllocs: number;
  numFrees: number;
  numCudaMallocs: number;
  numCacheHits: number;
  numOomRetries: number;
}

/** Strided host view for the CPU reference backend (element strides). */
export interface NativeHostView {
  data: ArrayBufferView;
  dtype: number;
  shape: number[];
  strides: number[];
}

/** Serialized mod program for the native VM (see lib/mods and native/cpu/mod_vm.h). */
export interface NativeModProgram {
  code: Int32Array;
  consts: Float64Array;
  tensors: NativeHostView[];
  params: Float64Array;
}

/** Arguments of `cpuAttentionBackward` (native/cpu/backward_register.cc). */
export interface NativeCpuBackwardArgs {
  q: NativeHostView; k: NativeHostView; v: NativeHostView;
  out: NativeHostView; dOut: NativeHostView;
  /** f32 `[B, Hq, Sq]`. */
  lse: NativeHostView;
  scale: number;
  isCausal: boolean;
  /** Rank 4 `[B, Hq, Sq, Skv]` (stride 0 to broadcast). */
  mask?: NativeHostView;
  scoreMod?: NativeModProgram;
  /** `∂ scoreMod / ∂ score` (required with scoreMod). */
  scoreGrad?: NativeModProgram;
  maskMod?: NativeModProgram;
  blockMask?: NativeCpuAttentionArgs['blockMask'];
  /** Dtype code of dq/dk/dv (q's). */
  gradDtype: number;
  dq?: Uint16Array | Float32Array; dk?: Uint16Array | Float32Array; dv?: Uint16Array | Float32Array;
  /** Captured-tensor gradients: sites' `index` programs return the clamped flat element index as a float. */
  captured?: { numel: number; dtype: number; out?: Uint16Array | Float32Array; sites: { index: NativeModProgram; weight: NativeModProgram }[] }[];
  numThreads?: number;
  cancel?: Int32Array;
}

export interface NativeCpuAttentionArgs {
  q: NativeHostView;
  k: NativeHostView;
  v: NativeHostView;
  scale: number;
  isCausal: boolean;
  mask?: NativeHostView;
  scoreMod?: NativeModProgram;
  maskMod?: NativeModProgram;
  blockMask?: {
    B: number; H: number; numQBlocks: number; numKvBlocks: number;
    qBlock: number; kvBlock: number;
    kvNumBlocks: Int32Array; kvIndices: Int32Array;
    fullKvNumBlocks?: Int32Array; fullKvIndices?: Int32Array;
  };
  returnLse: boolean;
  numThreads?: number;
  /** Output dtype code (bf16 0, f16 1, f32 2; default f32): rounded in the worker, bits as lib/dtype.ts. */
  outDtype?: number;
  /** Where to write out: `B·Hq·Sq·Dv` elements, Uint16Array (bf16/f16 bits) or Float32Array; default: a new array. */
  out?: Uint16Array | Float32Array;
  /** Where to write lse (`B·Hq·Sq` floats) when returnLse; default: a new array. */
  lse?: Float32Array;
  /** Stop flag: element 0 set nonzero (Atomics.store) stops the job at its next chunk; it then rejects with `cancelled: true`. */
  cancel?: Int32Array;
}

/** Arguments of the ragged (paged / varlen) CPU reference (native/cpu/ragged_attention.h). */
export interface NativeCpuRaggedArgs {
  /** Packed queries [T, Hq, D]. */
  q: NativeHostView;
  /** K and V pools from element 0 (Uint16Array bits for bf16/f16, Float32Array for f32). */
  k: Uint16Array | Float32Array;
  v: Uint16Array | Float32Array;
  kvDtype: number;
  pageSize: number; pageStride: number; tokenStride: number; headStride: number;
  numKvHeads: number;
  /** [numSeqs, maxPagesPerSeq] page indices. */
  pageTable: Int32Array;
  maxPagesPerSeq: number;
  seqLens: Int32Array;
  /** numSeqs + 1 cumulative query-token offsets. */
  queryStart: Int32Array;
  numSeqs: number;
  scale: number;
  causal: boolean;
  scoreMod?: NativeModProgram;
  maskMod?: NativeModProgram;
  returnLse: boolean;
  numThreads?: number;
  outDtype?: number;
  /** [T, Hq, D] in outDtype; default: a new array. */
  out?: Uint16Array | Float32Array;
  /** [T, Hq] when returnLse; default: a new array. */
  lse?: Float32Array;
  cancel?: Int32Array;
}

/** A resolved kernel (native/jit/kernel_handle.cc). */
export interface NativeKernelHandle {
  /** Where it came from: 'fatbin' | 'nvrtc' | 'none' (compiled now) | 'memory' | 'disk'. */
  readonly origin: string;
  /** `<kernel>_cfg[8]` when the module defines it. */
  readonly config: Int32Array | null;
  readonly compileMs: number;
  /** Enqueues the kernel on the device's stream; `params` are the bytes of its one struct parameter. */
  launch(grid: [number, number, number], block: [number, number, number], sharedBytes: number, params: Uint8Array): void;
}

/** An instantiated CUDA graph (native/runtime/graph.cc). */
export interface NativeGraphHandle {
  readonly numNodes: number;
  readonly disposed: boolean;
  /** Enqueues one replay on the device's stream. */
  launch(): void;
  /** Frees the graph; the blocks it pinned go back to the cache. Idempotent. */
  dispose(): void;
}

/** What the addon's NCCL loader found (native/cuda/nccl.cc); loading it never throws. */
export interface NativeNcclStatus {
  loaded: boolean;
  path: string;
  /** e.g. "2.21.5"; '' when not loaded. */
  version: string;
  error: string;
  /** The typed error (NcclUnavailableError, NcclVersionError or NcclSymbolError) when not loaded. */
  errorObject?: Error;
}

/** One process's NCCL communicator(s) (native/runtime/nccl_comm.cc). Byte offsets and counts. */
export interface NativeNcclComm {
  /** Every local rank i sends bytes of send[i] to rank ranks[i]+1 and receives from ranks[i]-1 (mod size). */
  ringShift(send: NativeDeviceBuffer[], sendOffsets: number[], recv: NativeDeviceBuffer[], recvOffsets: number[],
    bytes: number, ranks: number[]): Promise<void>;
  /** output[i][r * bytes, (r + 1) * bytes) receives rank r's input. */
  allGather(input: NativeDeviceBuffer[], inputOffsets: number[], output: NativeDeviceBuffer[], outputOffsets: number[],
    bytes: number): Promise<void>;
  /** ncclCommDestroy on the communicator's thread, after the work queued before it. Idempotent. */
  destroy(): Promise<void>;
}

/** Everything the addon exports. */
export interface NativeAddon {
  abiVersion: number;
  /** Registers the JS error classes so native code throws typed errors. */
  setErrorClasses(classes: Record<string, unknown>): void;

  // native/cuda
  cudaStatus(): NativeCudaStatus;
  deviceProps(index: number): NativeDeviceProps;

  // native/runtime
  alloc(device: number, bytes: number): NativeDeviceBuffer;
  copyHtoD(dst: NativeDeviceBuffer, byteOffset: number, src: ArrayBufferView): void;
  copyDtoH(src: NativeDeviceBuffer, byteOffset: number, bytes: number): Promise<ArrayBuffer>;
  copyDtoD(dst: NativeDeviceBuffer, dstByteOffset: number, src: NativeDeviceBuffer, srcByteOffset: number, bytes: number): void;
  memset(dst: NativeDeviceBuffer, byteOffset: number, bytes: number, value: number): void;
  randn(dst: NativeDeviceBuffer, offset: number, numel: number, dtype: number, seed: bigint, subsequence: bigint): void;
  /** dst (contiguous, dstDtype) = cast(src strided). */
  castStrided(src: NativeStrided, dst: NativeDeviceBuffer, dstOffset: number, dstDtype: number): void;
  /**
   * A CUtensorMap (128 bytes) from cuTensorMapEncodeTiled (native/addon/tensor_map.cc): a 3-D map {D, rows,
   * planes} of a 16-bit tensor at `address` (dtype 0 bf16, 1 f16), box {64, boxRows, 1}, 128-byte swizzle.
   */
  encodeTensorMap(address: bigint, dtype: number, D: number, rows: number, planes: number, rowStrideBytes: number,
    planeStrideBytes: number, boxRows: number): Uint8Array;
  synchronize(device: number): Promise<void>;
  memoryStats(device: number): NativeMemoryStats;
  emptyCache(device: number): void;

  // native/runtime/nccl_comm.cc (lib/parallel)
  ncclStatus(): NativeNcclStatus;
  /** 128 bytes from ncclGetUniqueId. */
  ncclGetUniqueId(): ArrayBuffer;
  /** Without uniqueId: ncclCommInitAll over devices (size = devices.length, rank 0); with it: ncclCommInitRank. */
  ncclCommCreate(devices: number[], size: number, rank: number, uniqueId: Uint8Array | null): Promise<NativeNcclComm>;

  // native/runtime/graph.cc: CUDA graph capture (lib/serving/graph.ts)
  /** Starts capturing the device's stream (relaxed mode); returns the capture id. */
  beginCapture(device: number): number;
  /** Ends the capture and instantiates its graph (GraphCaptureError when it failed: the capture is over either way). */
  endCapture(device: number): NativeGraphHandle;
  /** Ends a capture without a graph (its callback failed). No-op when none is in progress. */
  abortCapture(device: number): void;
  captureStatus(device: number): { capturing: boolean; id: number; streamCapturing: boolean; graphsSupported: boolean };
  /** Keeps `buffer`'s block out of the free lists until the capture in progress on its device has its graph disposed. */
  graphPin(buffer: NativeDeviceBuffer): void;
  /** Copies src[off, off+len) to dst[off, off+len) for each (off, len) byte pair of `spans`, through one staging block. */
  copyHtoDSpans(dst: NativeDeviceBuffer, src: ArrayBufferView, spans: Float64Array): void;

  // native/jit
  /** Directory of the on-disk kernel cache. */
  jitCacheDir(): string;
  /** Whether compiling `source` with `options` (after the defaults) would hit the memory or disk cache. */
  jitCached(device: number, source: string, options?: string[]): boolean;
  /** Compiles (or fetches from cache) a kernel: test hook for the JIT cache. */
  jitCompileForTest(source: string, kernelName: string, device?: number):
    { cacheHit: 'memory' | 'disk' | 'none'; ms: number; key: string; path: string; target: string };
  /** Compiles `source` (memory/disk cache) and launches `kernelName` on the device's stream.
   * `params` is the kernel parameter buffer in CUDA ABI layout (one struct parameter: its bytes). */
  jitLaunch(device: number, source: string, kernelName: string, grid: [number, number, number],
    block: [number, number, number], sharedBytes: number, params: Uint8Array): void;
  /** Forgets in-memory compiled modules (the disk cache stays): test hook. */
  jitClearMemoryCache(): void;
  /** Disk cache settings from FLEXATTN_CACHE_DIR / FLEXATTN_CACHE_MAX_MB; InvalidArgumentError for a bad size. */
  jitCacheConfig(): { dir: string; maxBytes: number; enabled: boolean };
  /** The first disk-cache problem of this process (an entry not written or not readable), once; else null. */
  jitCacheWarning(): string | null;
  /** @internal Disk cache test hooks (native/jit/disk_cache_js.cc): the code the JIT uses, on any directory. */
  diskCachePut(dir: string, key: string, bytes: Uint8Array, maxBytes?: number):
    { ok: boolean; error: string; evictedEntries: number; evictedBytes: number };
  /** @internal */
  diskCacheGet(dir: string, key: string): {
    status: 'hit' | 'missing' | 'corrupt' | 'stale' | 'wrong-key' | 'error';
    detail: string; removed: boolean; bytes: Uint8Array | null;
  };
  /** @internal Entries oldest (least recently used) first. */
  diskCacheStats(dir: string):
    { entries: { key: string; bytes: number; mtimeMs: number }[]; bytes: number; tempFiles: number };
  /** @internal */
  diskCacheEvict(dir: string, maxBytes: number): { evictedEntries: number; evictedBytes: number };
  /** @internal An entry file's bytes (to forge entries of another format in tests). */
  diskCacheEncode(key: string, bytes: Uint8Array): Uint8Array;
  /** Where kernel `kernel` of module `module` comes from on `device`: 'fatbin' or 'nvrtc' (loads it). */
  kernelOrigin(device: number, module: string, kernel: string): 'fatbin' | 'nvrtc';

  /**
   * Resolves a kernel once, off the main thread: with `module`, the embedded
   * fatbin first and `source` (NVRTC) as the fallback; without it, `source` is
   * JIT-compiled through the memory/disk cache.
   */
  loadKernel(device: number, spec: { kernel: string; source: string; module?: string; options?: string[] }): Promise<NativeKernelHandle>;

  // native/cpu
  cpuAttention(args: NativeCpuAttentionArgs): Promise<{ out: Float32Array | Uint16Array; lse?: Float32Array }>;
  hardwareConcurrency(): number;
  cpuAttentionBackward(args: NativeCpuBackwardArgs): Promise<{
    dq: Float32Array | Uint16Array; dk: Float32Array | Uint16Array; dv: Float32Array | Uint16Array; captured: (Float32Array | Uint16Array)[];
  }>;
  cpuRaggedAttention(args: NativeCpuRaggedArgs): Promise<{ out: Float32Array | Uint16Array; lse?: Float32Array }>;
}

/** Package root: the nearest folder above this file holding flexattn's package.json
 * (lib/ when run from source by vitest, dist/lib/ when compiled). */
export const packageRoot = findPackageRoot(dirname(fileURLToPath(import.meta.url)));

function findPackageRoot(start: string): string {
  let dir = start;
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (pkg.name === 'flexattn') return dir;
    } catch { /* keep walking up */ }
    dir = dirname(dir);
  }
  return join(start, '..', '..');
}

let cached: NativeAddon | undefined;
let loadError: Error | undefined;

/** Returns the addon, loading it on first use. Throws a descriptive error if it cannot load. */
export function native(): NativeAddon {
  if (cached) return cached;
  if (loadError) throw loadError;
  const require = createRequire(import.meta.url);
  try {
    if (unsupportedHost()) throw new errors.FlexAttnError(unsupportedHost());
    const load = require('node-gyp-build') as (dir: string) => NativeAddon;
    const addon = load(packageRoot);
    addon.setErrorClasses({ ...errors });
    cached = typedErrors(addon);
    return cached;
  } catch (e) {
    loadError = new errors.FlexAttnError(loadFailureMessage(e as Error));
    throw loadError;
  }
}

/**
 * The JS-side safety net for "every error is a FlexAttnError": native code
 * throws typed errors itself, but a few JS exceptions can still come out of
 * it (V8's RangeError when an ArrayBuffer cannot be allocated, a
 * node-addon-api TypeError, a mod-program check): those become an
 * OutOfMemoryError (host memory) or an InternalError carrying the original
 * as `cause`. Applies to throws and to rejected promises of every exported
 * function (classes such as DeviceBuffer are left as they are).
 * @internal
 */
export function typedErrors<T extends object>(addon: T): T {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(addon)) {
    if (typeof value !== 'function' || /^[A-Z]/.test(key)) { out[key] = value; continue; }
    const fn = value as (...args: unknown[]) => unknown;
    out[key] = (...args: unknown[]): unknown => {
      let r: unknown;
      try {
        r = fn.apply(addon, args);
      } catch (e) {
        throw toFlexAttnError(e, key);
      }
      if (r instanceof Promise) return r.catch((e: unknown) => { throw toFlexAttnError(e, key); });
      return r;
    };
  }
  return out as T;
}

/** `e` itself when it is a FlexAttnError; otherwise the typed error that stands for it (see {@link typedErrors}). @internal */
export function toFlexAttnError(e: unknown, call: string): errors.FlexAttnError {
  if (e instanceof errors.FlexAttnError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  if (e instanceof RangeError && /allocation failed|invalid (typed )?array length|array buffer/i.test(msg)) {
    const remedy = '  - Free tensors you no longer need (dispose()) or use smaller shapes\n' +
      '  - Give Node.js more memory (e.g. --max-old-space-size) or the container a higher limit';
    const err = new errors.OutOfMemoryError(
      `flexattn: host memory could not be allocated in ${call} (${msg}).\nPossible solutions:\n${remedy}`, '', call, remedy);
    Object.defineProperty(err, 'cause', { value: e, enumerable: false, writable: true, configurable: true });
    return err;
  }
  return new errors.InternalError(
    `flexattn: internal error in native ${call}: ${msg} (please report it with the call that caused it)`, { cause: e });
}

/** Why this host cannot run flexattn at all ('' when it can): platform or Node version. */
function unsupportedHost(): string {
  if (process.platform !== 'linux' || process.arch !== 'x64') return `unsupported platform ${process.platform}-${process.arch}`;
  if (Number(process.versions.node.split('.')[0]) < 20) return `unsupported Node.js ${process.version}`;
  return '';
}

const BUILD_FROM_SOURCE = 'needs cmake >= 3.18 and a C++17 compiler; nvcc optional';

/** The message of a failed load: names the cause (platform, Node version, glibc, missing binary) and the remedy.
 * @internal */
export function loadFailureMessage(e: Error): string {
  const msg = e.message;
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    return `flexattn: ${process.platform}-${process.arch} is not supported; the native addon is built for Linux x64 only.\n` +
      'Possible solutions:\n  - Run on Linux x64 with an NVIDIA GPU (Windows: WSL2; macOS: a Linux x64 machine or container)';
  }
  if (Number(process.versions.node.split('.')[0]) < 20) {
    return `flexattn: Node.js ${process.version} is not supported; flexattn needs Node.js >= 20.\n` +
      'Possible solutions:\n  - Upgrade Node.js (e.g. `nvm install 22`) and reinstall flexattn';
  }
  const glibc = /GLIBC_(\d+\.\d+)/.exec(msg)?.[1];
  if (glibc) {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
    const host = report?.header?.glibcVersionRuntime;
    return `flexattn: the prebuilt binary needs glibc >= ${glibc}${host ? `, this host has glibc ${host}` : ''} (${msg.split('\n')[0]})\n` +
      'Possible solutions:\n' +
      `  - Build it for this host: \`npm rebuild flexattn --build-from-source\` (${BUILD_FROM_SOURCE})\n` +
      `  - Or run on a distribution with glibc >= ${glibc} (\`ldd --version\` shows yours)`;
  }
  return `flexattn: the native addon failed to load: ${msg}\n` +
    'Possible solutions:\n' +
    (/No native build was found/.test(msg)
      ? `  - Installed with --ignore-scripts or the install-time build failed: \`npm rebuild flexattn\` (${BUILD_FROM_SOURCE})\n`
      : `  - Rebuild it for this host: \`npm rebuild flexattn --build-from-source\` (${BUILD_FROM_SOURCE})\n`) +
    `  - In a source checkout: \`npm run build:native\``;
}

/** True when the addon loads (it does not need a GPU to load). */
export function nativeAvailable(): boolean {
  try { native(); return true; } catch { return false; }
}
