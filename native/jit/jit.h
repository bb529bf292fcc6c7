// Kernel modules: the precompiled fatbin when it loads on the device, else
// NVRTC compilation of the embedded native/kernels sources; plus a general
// "compile this source" API (in-memory + on-disk CUBIN cache) used for kernels
// generated at run time (flex attention mods). Pieces: compile.cc (cache key,
// Compile through the memory and disk caches), modules.cc (named modules,
// fatbin-or-NVRTC kernel lookup), nvrtc_compile.{h,cc} (NVRTC),
// disk_cache.{h,cc} (the on-disk format, eviction), jit_lock.h (the lock of
// their maps), jit_js.cc and disk_cache_js.cc (JS exports and test hooks),
// kernel_handle.cc (loadKernel).
#pragma once
#include <string>
#include <vector>

#include <napi.h>

#include "cuda/cuda_api.h"
#include "jit/disk_cache.h"
#include "jit/fnv1a.h"
#include "runtime/device.h"

namespace flexattn::jit {

enum class CacheHit { kNone, kMemory, kDisk };
const char* CacheHitName(CacheHit h);

struct CompileResult {
  cu::CUmodule module = nullptr;
  CacheHit hit = CacheHit::kNone;
  double ms = 0;         // wall time of this call (compile + load, or lookup)
  unsigned long long key = 0;
  std::string target;    // "sm_90a" (CUBIN) or "compute_XY" (PTX, driver-JIT)
  std::string path;      // disk cache entry
};

// Compiles `source` for `dev` (or fetches it from the memory/disk cache).
// Thread-safe and free of Node-API calls: it may run on a worker thread
// (e.g. inside a Napi::AsyncWorker) so long compiles do not block JS.
// The embedded native/kernels/*.cuh files are available to #include by name.
// Default options: -default-device -std=c++17 --gpu-architecture=<dev.Arch()>
// -DFLEXATTN_JIT=1, then `extraOptions`. Throws CompileError (source + log),
// NvrtcUnavailableError, CudaError, InvalidArgumentError (FLEXATTN_CACHE_MAX_MB).
CompileResult Compile(rt::Device& dev, const std::string& source, const std::vector<std::string>& extraOptions = {},
                      const std::string& programName = "flexattn_kernel.cu");

// Whether Compile(dev, source, extraOptions) would be served from the memory
// or disk cache (no NVRTC run). Cheap: a map lookup and a stat().
bool IsCached(rt::Device& dev, const std::string& source, const std::vector<std::string>& extraOptions);

// Looks up `kernel` in `module`; throws CudaError naming the kernel.
cu::CUfunction GetFunction(cu::CUmodule module, const char* kernel);

// Named modules: `source` is what NVRTC compiles when the fatbin lacks the
// kernel (typically `#include "util.cuh"`). The precompiled fatbin is built
// from native/kernels/precompiled.cu, which must include the same headers.
// "util" is registered by default.
void RegisterModule(const std::string& name, const std::string& source,
                    const std::vector<std::string>& options = {});

// extern "C" kernel `kernel` of module `module` on `dev`: from the embedded
// fatbin when it loads for this device and holds the kernel (unless
// FLEXATTN_DISABLE_FATBIN=1), else JIT-compiled from the module's source.
// Results are cached per device.
cu::CUfunction GetKernel(rt::Device& dev, const std::string& module, const char* kernel);
// GetKernel wrapper; returns where the function came from ("fatbin" / "nvrtc").
cu::CUfunction GetKernel(rt::Device& dev, const std::string& module, const char* kernel, std::string* origin);

// $FLEXATTN_CACHE_DIR, else ~/.cache/flexattn.
std::string CacheDir();
// The disk cache settings (directory, FLEXATTN_CACHE_MAX_MB); throws
// InvalidArgumentError naming FLEXATTN_CACHE_MAX_MB when it is not a number.
disk::Config CacheConfig();
// Forgets in-memory compiled modules (they stay loaded); for tests.
void ClearMemoryCache();

// Reads argument i as a [x, y, z] launch dimension (throws InvalidArgumentError naming `name`).
void ArgDim3(const Napi::CallbackInfo& info, size_t i, const char* name, unsigned out[3]);
// `v` as a list of strings (undefined: empty); a typed error naming `name` otherwise.
std::vector<std::string> ArgStrings(const Napi::Value& v, const std::string& name);

}  // namespace flexattn::jit
