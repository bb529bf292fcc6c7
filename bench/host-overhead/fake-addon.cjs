'use strict';
// Fake of flexattn's native addon: enough for the GPU flex / SDPA launch path, all GPU work a no-op.
// Costs it cannot capture: N-API call overhead, real allocator, cuLaunchKernel, ObjectWrap getters.
const stats = { allocatedBytes: 0, reservedBytes: 0, peakAllocatedBytes: 0, numAllocs: 0, numFrees: 0,
  numCudaMallocs: 0, numCacheHits: 0, numOomRetries: 0 };
let nextPtr = 0x7f0000000000n;
let launches = 0;
/** Counters of the copies and graph calls the serving path makes (tests read them through __counters()). */
const counters = { copyHtoD: 0, copyHtoDBytes: 0, copyHtoDSpans: 0, spanBytes: 0, copyDtoD: 0, graphPins: 0, graphLaunches: 0 };
/** The last spans call's (offset, bytes) pairs, for tests. */
let lastSpans = [];
let capturing = null;
/**
 * Calls that would cross from JS into the native addon (N-API), by name: every addon function, and every
 * getter or method of a DeviceBuffer or kernel handle (`ptr`, `disposed`, `dispose`, `launch`, ...).
 * serving.mjs --crossings prints them per call; the fake cannot time them, only count them.
 */
const crossings = Object.create(null);
const cross = (name) => { crossings[name] = (crossings[name] ?? 0) + 1; };
/** Every kernel loaded (name, and whether it has NVRTC source of its own) and the params of every launch, for tests. */
const loads = [];
const launchLog = [];

// FAKE_MEMORY=1: buffers up to 64 MiB keep the bytes copied into them (kept from the first write), and every
// decode / append launch records the tables it would read at that point of the stream (tests of the table caches).
const MEMORY = process.env.FAKE_MEMORY === '1';
const MAX_MEMORY_BYTES = 64 << 20;
const live = new Map(); // ptr -> DeviceBuffer, with FAKE_MEMORY
const tableLog = [];

class DeviceBuffer {
  constructor(device, bytes) {
    this.device = device; this.bytes = bytes;
    this._ptr = nextPtr; nextPtr += BigInt((bytes + 511) & ~511) || 512n;
    this._mem = null;
    if (MEMORY) live.set(this._ptr, this);
    this._disposed = false;
    stats.numAllocs++; stats.numCacheHits++; stats.allocatedBytes += bytes;
    if (stats.allocatedBytes > stats.peakAllocatedBytes) stats.peakAllocatedBytes = stats.allocatedBytes;
  }
  get ptr() { cross('buffer.ptr'); return this._ptr; }
  get disposed() { cross('buffer.disposed'); return this._disposed; }
  dispose() {
    cross('buffer.dispose');
    if (this._disposed) return;
    this._disposed = true; stats.numFrees++; stats.allocatedBytes -= this.bytes;
    if (MEMORY) live.delete(this._ptr);
  }
  mem() { if (!this._mem && this.bytes <= MAX_MEMORY_BYTES) this._mem = new Uint8Array(this.bytes); return this._mem; }
}

function write(buf, off, src, srcOff, n) {
  const m = MEMORY && buf.mem();
  if (m) m.set(new Uint8Array(src.buffer, src.byteOffset + srcOff, n), off);
}
/** `count` i32 at device address `p` (0 where nothing was written; throws outside every live buffer). */
function readI32(p, count) {
  for (const b of live.values()) {
    if (p >= b._ptr && p + BigInt(4 * count) <= b._ptr + BigInt(b.bytes)) {
      const off = Number(p - b._ptr), out = new Int32Array(count);
      if (b._mem) out.set(new Int32Array(b._mem.slice(off, off + 4 * count).buffer));
      return out;
    }
  }
  throw new Error(`fake addon: no live buffer holds ${count} ints at 0x${p.toString(16)}`);
}
/** The tables a decode or append launch reads, decoded from its parameter block. */
function snapshot(kernel, params) {
  const dv = new DataView(params.buffer, params.byteOffset, params.byteLength);
  if (kernel.startsWith('flexattn_decode_') && !kernel.startsWith('flexattn_decode_combine')) {
    const pt = dv.getBigUint64(56, true), sl = dv.getBigUint64(64, true), qs = dv.getBigUint64(72, true);
    if (!pt || !sl) return; // contiguous KV: no tables
    const n = dv.getInt32(232, true), stride = dv.getInt32(256, true), P = 2 ** dv.getInt32(260, true);
    const lens = Array.from(readI32(sl, n)), starts = Array.from(readI32(qs, n + 1));
    const rows = lens.map((len, s) => Array.from(readI32(pt + BigInt(4 * s * stride), Math.ceil(len / P))));
    tableLog.push({ kernel: 'decode', lens, starts, rows });
  } else if (kernel === 'flexattn_paged_append') {
    const cu = dv.getBigUint64(32, true), sl = dv.getBigUint64(40, true), pt = dv.getBigUint64(48, true);
    const n = dv.getInt32(96, true), W = dv.getInt32(100, true), P = dv.getInt32(104, true);
    const cuTokens = readI32(cu, n + 1), start = readI32(sl, n);
    // Where each sequence's new tokens go: [page, slot] per token.
    const places = [];
    for (let s = 0; s < n; s++) {
      const row = readI32(pt + BigInt(4 * s * W), W), at = [];
      for (let t = 0; t < cuTokens[s + 1] - cuTokens[s]; t++) { const pos = start[s] + t; at.push([row[Math.floor(pos / P)], pos % P]); }
      places.push(at);
    }
    tableLog.push({ kernel: 'append', places });
  }
}

const SM90 = { 64: [64, 128, 2], 128: [64, 64, 2] };
const SM80 = { 32: [128, 64, 3], 64: [128, 128, 2], 96: [128, 64, 2], 128: [128, 64, 2], 256: [64, 64, 2] };
// Decode kernels (native/kernels/decode.cuh): 16-row tiles, 128 threads, DecodeParams' mod at byte 656.
const DECODE = { 64: [16, 64, 4], 128: [16, 64, 3] };
function cfgFor(kernel) {
  if (kernel.startsWith('flexattn_decode')) {
    const D = Number(/_d(\d+)_/.exec(kernel)?.[1] ?? 128);
    const [bm, bn, st] = DECODE[D] ?? [16, 64, 3];
    return Int32Array.from([128, 48 * 1024, bm, bn, D, st, 656 + 1024, 656]);
  }
  const D = Number(/_d(\d+)_/.exec(kernel)?.[1] ?? 64);
  const sm90 = kernel.includes('sm90_');
  let [bm, bn, st] = (sm90 ? SM90 : SM80)[D] ?? [128, 64, 2];
  const shp = /_(\d+)x(\d+)w(\d+)s(\d+)$/.exec(kernel);
  let threads = sm90 ? 384 : 128;
  if (shp) { bm = +shp[1]; bn = +shp[2]; threads = 32 * +shp[3]; st = +shp[4]; }
  if (kernel.includes('_seg')) { bm = 64; bn = 64; }
  return Int32Array.from([threads, 100000, bm, bn, D, st, 248 + 1024, 248]);
}
function handle(kernel, origin) {
  return { origin, config: cfgFor(kernel), compileMs: 0,
    launch(grid, block, smem, params) {
      cross('kernel.launch');
      launches++;
      if (MEMORY) {
        snapshot(kernel, params);
        if (capturing) capturing.recorded.push({ kernel, params: Uint8Array.from(params) });
      }
      if (launchLog.length < 64) launchLog.push({ kernel, grid: [...grid], params: Uint8Array.from(params) });
    } };
}

const addon = {
  abiVersion: Number(process.env.FAKE_ABI ?? 1),
  setErrorClasses(c) {},
  cudaStatus() {
    return { driverLoaded: true, driverPath: '/fake/libcuda.so.1', driverError: '', driverVersion: 12040, deviceCount: 1,
      nvrtcLoaded: true, nvrtcPath: '/fake/libnvrtc.so', nvrtcError: '', nvrtcVersion: '12.4', fatbinBytes: 1 << 20,
      fatbinArchs: ['sm_80', 'sm_90a'] };
  },
  deviceProps(i) {
    return { index: i, name: 'NVIDIA H100 80GB HBM3 (fake)', major: 9, minor: 0, totalMemory: 85e9,
      multiprocessors: 132, sharedMemoryPerBlockOptin: 232448 };
  },
  alloc(device, bytes) { return new DeviceBuffer(device, bytes); },
  copyHtoD(dst, off, src) {
    counters.copyHtoD++; counters.copyHtoDBytes += src.byteLength;
    write(dst, off, src, 0, src.byteLength);
  },
  copyDtoH(src, off, bytes) { return Promise.resolve(new ArrayBuffer(bytes)); },
  copyDtoD(dst, dstOff, src, srcOff, bytes) {
    counters.copyDtoD++;
    if (MEMORY && src._mem && dst.mem()) dst._mem.set(src._mem.subarray(srcOff, srcOff + bytes), dstOff);
  },
  memset() {},
  randn() {},
  castStrided() {},
  synchronize(device) { return Promise.resolve(); },
  memoryStats(device) { return { ...stats }; },
  emptyCache() {},
  beginCapture(device) {
    if (capturing) throw new Error('fake addon: a capture is already in progress');
    capturing = { device, id: (capturing?.id ?? 0) + 1, nodes: launches, recorded: [] };
    return capturing.id;
  },
  endCapture(device) {
    const c = capturing; capturing = null;
    const numNodes = launches - (c?.nodes ?? launches);
    const recorded = c?.recorded ?? [];
    let disposed = false;
    return { get numNodes() { return numNodes; }, get disposed() { return disposed; },
      // A replay reads the captured launches' tables as they are now.
      launch() { counters.graphLaunches++; if (MEMORY) for (const r of recorded) snapshot(r.kernel, r.params); },
      dispose() { disposed = true; } };
  },
  abortCapture(device) { capturing = null; },
  captureStatus(device) { return { capturing: !!capturing, id: capturing?.id ?? 0, streamCapturing: !!capturing, graphsSupported: true }; },
  graphPin(buffer) { counters.graphPins++; },
  copyHtoDSpans(dst, src, spans) {
    counters.copyHtoDSpans++;
    lastSpans = Array.from(spans);
    for (let i = 0; i < spans.length; i += 2) { counters.spanBytes += spans[i + 1]; write(dst, spans[i], src, spans[i], spans[i + 1]); }
  },
  jitCacheDir() { return '/tmp/fake-flexattn-cache'; },
  jitCached() { return true; },
  jitCompileForTest() { return { cacheHit: 'memory', ms: 0, key: 'k', path: '', target: 'sm_90a' }; },
  jitLaunch() { launches++; },
  jitClearMemoryCache() {},
  jitCacheConfig() { return { dir: '/tmp/fake-flexattn-cache', maxBytes: 1 << 30, enabled: true }; },
  jitCacheWarning() { return null; },
  kernelOrigin() { return 'fatbin'; },
  loadKernel(device, spec) {
    loads.push({ kernel: spec.kernel, source: spec.source });
    return Promise.resolve(handle(spec.kernel, spec.module ? 'fatbin' : 'memory'));
  },
  cpuAttention() { return Promise.reject(new Error('fake addon: no cpuAttention')); },
  cpuRaggedAttention() { return Promise.reject(new Error('fake addon: no cpuRaggedAttention')); },
  hardwareConcurrency() { return 2; },
  __launches() { return launches; },
  __loads() { return loads; },
  __launchLog() { return launchLog; },
  /** Empties the launch log (it keeps the first 64 launches after each clear). */
  __clearLaunchLog() { launchLog.length = 0; tableLog.length = 0; },
  /** With FAKE_MEMORY=1: the tables each decode / append launch read (see snapshot()), oldest first. */
  __tableLog() { return tableLog; },
  __counters() { return { ...counters }; },
  __lastSpans() { return lastSpans; },
};
// Count every addon function call (the test hooks, named __*, are not part of the addon).
for (const [name, fn] of Object.entries(addon)) {
  if (typeof fn !== 'function' || name.startsWith('__')) continue;
  addon[name] = function (a, b, c, d, e, f, g) { cross(name); return fn.call(this, a, b, c, d, e, f, g); };
}
addon.__crossings = () => ({ ...crossings });
module.exports = addon;
