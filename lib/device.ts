/**
 * Devices: discovery, default device, memory statistics.
 * @module
 */
import { DeviceError, CudaUnavailableError } from './errors.js';
import { describeValue, withSolutions } from './messages.js';
import { native, nativeAvailable, type NativeCudaStatus, type NativeMemoryStats } from './native.js';

/** `'cpu'` or `'cuda:N'`. */
export type Device = 'cpu' | `cuda:${number}`;

/** What {@link deviceInfo} reports about one GPU. */
export interface GpuInfo {
  index: number;
  name: string;
  /** Compute capability, e.g. `"9.0"`. */
  computeCapability: string;
  totalMemoryBytes: number;
  multiprocessors: number;
}

/** Everything {@link deviceInfo} knows about the CUDA stack on this host. */
export interface DeviceInfo {
  addonLoaded: boolean;
  addonError: string;
  driverLoaded: boolean;
  driverPath: string;
  /** CUDA driver API version, e.g. 13000 for 13.0; 0 when unknown. */
  driverVersion: number;
  driverError: string;
  gpus: GpuInfo[];
  nvrtcLoaded: boolean;
  nvrtcPath: string;
  nvrtcVersion: string;
  nvrtcError: string;
  /** Size of the precompiled kernel image embedded in the addon (0: kernels are JIT-compiled). */
  fatbinBytes: number;
  fatbinArchs: string[];
}

let statusCache: NativeCudaStatus | undefined;

function status(): NativeCudaStatus | undefined {
  if (statusCache) return statusCache;
  if (!nativeAvailable()) return undefined;
  statusCache = native().cudaStatus();
  return statusCache;
}

/** True when the CUDA driver loads and at least one GPU is present. Never throws. */
export function cudaAvailable(): boolean {
  try {
    const s = status();
    return !!s && s.driverLoaded && s.deviceCount > 0;
  } catch {
    return false;
  }
}

/** Number of CUDA devices (0 without a driver). */
export function deviceCount(): number {
  return cudaAvailable() ? status()!.deviceCount : 0;
}

/** Describes the addon, driver, GPUs and NVRTC. Never throws: missing pieces are reported in the fields. */
export function deviceInfo(): DeviceInfo {
  let addonError = '';
  let s: NativeCudaStatus | undefined;
  try { native(); s = status(); } catch (e) { addonError = (e as Error).message; }
  const gpus: GpuInfo[] = [];
  if (s?.driverLoaded) {
    for (let i = 0; i < s.deviceCount; i++) {
      const p = native().deviceProps(i);
      gpus.push({
        index: i, name: p.name, computeCapability: `${p.major}.${p.minor}`,
        totalMemoryBytes: p.totalMemory, multiprocessors: p.multiprocessors,
      });
    }
  }
  return {
    addonLoaded: !!s, addonError,
    driverLoaded: !!s?.driverLoaded, driverPath: s?.driverPath ?? '', driverVersion: s?.driverVersion ?? 0,
    driverError: s?.driverError ?? '',
    gpus,
    nvrtcLoaded: !!s?.nvrtcLoaded, nvrtcPath: s?.nvrtcPath ?? '', nvrtcVersion: s?.nvrtcVersion ?? '',
    nvrtcError: s?.nvrtcError ?? '',
    fatbinBytes: s?.fatbinBytes ?? 0, fatbinArchs: s?.fatbinArchs ?? [],
  };
}

/** The device tensors go to when none is named: `cuda:0` when a GPU is usable, else `cpu`. */
export function defaultDevice(): Device {
  return cudaAvailable() ? 'cuda:0' : 'cpu';
}

/**
 * Parses and checks a device string (`'cpu'`, `'cuda'`, `'cuda:N'`).
 * Throws {@link DeviceError} for malformed strings or indices out of range,
 * and {@link CudaUnavailableError} when a GPU is asked for and none is usable.
 */
export function parseDevice(value: unknown, argument = 'device'): { device: Device; index: number } {
  if (value === undefined) value = defaultDevice();
  if (value === 'cpu') return { device: 'cpu', index: -1 };
  const m = typeof value === 'string' ? /^cuda(?::(\d+))?$/.exec(value) : null;
  if (!m) throw new DeviceError(argument, `'cpu', 'cuda' or 'cuda:N'`, describeValue(value));
  const index = m[1] === undefined ? 0 : Number(m[1]);
  if (!cudaAvailable()) {
    const s = status();
    // The driver's own message already carries its "Possible solutions";
    // withSolutions merges ours into that block so it prints once.
    throw new CudaUnavailableError(
      withSolutions(
        `${argument}: '${value}' requested but no CUDA device is usable: ` +
        `${s ? (s.driverError || 'no GPU found') : 'native addon not loaded'}`,
        ["Use device 'cpu' (the reference backend)",
          ...(s?.driverError ? [] : ['Install the NVIDIA driver and check that `nvidia-smi` lists a GPU'])]),
      s?.driverError ?? '');
  }
  const n = status()!.deviceCount;
  if (index >= n) throw new DeviceError(argument, `a device index below ${n} (this host has ${n} GPU${n === 1 ? '' : 's'})`, String(value));
  return { device: `cuda:${index}`, index };
}

/**
 * Caching-allocator statistics of one device (bytes and counts). For `'cpu'`
 * every figure is 0: CPU tensors are JavaScript typed arrays, owned by the
 * JS heap, not by flexattn's allocator.
 */
export type MemoryStats = NativeMemoryStats & {
  /** The device these figures describe. */
  device: Device;
};

/** Resolves `device` (default: {@link defaultDevice}) to its canonical name and CUDA index (-1 for cpu). */
function resolve(device: unknown): { device: Device; index: number } {
  return parseDevice(device, 'device');
}

/**
 * Caching-allocator statistics for `device` (default: {@link defaultDevice},
 * so `cpu` on a host without a GPU, where every figure is 0). Naming a CUDA
 * device on such a host throws {@link CudaUnavailableError}.
 */
export function memoryStats(device?: Device | 'cuda'): MemoryStats {
  const { device: dev, index } = resolve(device);
  if (index < 0) {
    return {
      device: dev, allocatedBytes: 0, reservedBytes: 0, peakAllocatedBytes: 0, numAllocs: 0, numFrees: 0,
      numCudaMallocs: 0, numCacheHits: 0, numOomRetries: 0,
    };
  }
  return { ...native().memoryStats(index), device: dev };
}

/**
 * Returns every cached, unused block of `device` (default: {@link defaultDevice})
 * to the driver; nothing to do for `cpu`.
 */
export function emptyCache(device?: Device | 'cuda'): void {
  const { index } = resolve(device);
  if (index >= 0) native().emptyCache(index);
}

/**
 * Waits (off the main thread) until all work queued on `device` (default:
 * {@link defaultDevice}) has finished. Resolves at once for `cpu` (CPU work
 * is awaited through its own promises), so on a host without a GPU
 * `await synchronize()` resolves; naming a CUDA device there rejects with
 * {@link CudaUnavailableError}.
 */
export async function synchronize(device?: Device | 'cuda'): Promise<void> {
  const { index } = resolve(device);
  if (index >= 0) await native().synchronize(index);
}
