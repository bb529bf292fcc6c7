// NVRTC compiles through the in-memory and on-disk caches: the cache key
// (source, options, arch, NVRTC version, embedded headers), Compile/IsCached,
// the cache settings. Named modules and kernel lookup: jit/modules.cc.
#include "jit/jit.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "addon/errors.h"
#include "jit/disk_cache.h"
#include "jit/jit_lock.h"
#include "jit/kernel_sources.h"
#include "jit/nvrtc_compile.h"

namespace flexattn::jit {

namespace {

// (device index, key) -> module compiled by NVRTC.
std::map<std::pair<int, uint64_t>, cu::CUmodule>& MemCache() {
  static auto* m = new std::map<std::pair<int, uint64_t>, cu::CUmodule>();
  return *m;
}
uint64_t HeadersHash() {
  static uint64_t h = [] {
    uint64_t x = kFnvOffset;
    for (int i = 0; i < kNumKernelSources; i++) {
      x = Fnv1a64(kKernelSources[i].name, strlen(kKernelSources[i].name), x);
      x = Fnv1a64("\0", 1, x);
      x = Fnv1a64(kKernelSources[i].text, strlen(kKernelSources[i].text), x);
      x = Fnv1a64("\0", 1, x);
    }
    return x;
  }();
  return h;
}

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Disk-cache entry name of a compile: "<arch>-<key as 16 hex digits>".
std::string EntryKey(const std::string& arch, uint64_t key) {
  char buf[32];
  snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(key));
  return arch + "-" + buf;
}

// The full option list and cache key of one compile (shared by Compile and IsCached).
struct CompileKey {
  std::vector<std::string> options;
  std::string arch;
  bool ptx = false;
  uint64_t key = 0;
};

CompileKey MakeKey(const cu::Nvrtc& r, const rt::Device& dev, const std::string& source,
                   const std::vector<std::string>& extraOptions) {
  CompileKey k;
  k.arch = JitTarget(r, dev, &k.ptx);
  k.options = {"-default-device", "-std=c++17", "--gpu-architecture=" + k.arch, "-DFLEXATTN_JIT=1"};
  k.options.insert(k.options.end(), extraOptions.begin(), extraOptions.end());
  // Key: source, options, arch, NVRTC version, embedded headers.
  uint64_t key = Fnv1a64(source.data(), source.size());
  for (const auto& o : k.options) {
    key = Fnv1a64("\x01", 1, key);
    key = Fnv1a64(o.data(), o.size(), key);
  }
  std::string ver = "nvrtc" + std::to_string(r.major) + "." + std::to_string(r.minor) + "|" + k.arch;
  key = Fnv1a64(ver.data(), ver.size(), key);
  uint64_t hh = HeadersHash();
  k.key = Fnv1a64(&hh, sizeof hh, key);
  return k;
}

}  // namespace

const char* CacheHitName(CacheHit h) {
  switch (h) {
    case CacheHit::kMemory: return "memory";
    case CacheHit::kDisk: return "disk";
    default: return "none";
  }
}

disk::Config CacheConfig() {
  disk::Config cfg;
  std::string bad;
  if (!disk::ReadConfig(&cfg, &bad)) {
    ThrowInvalidArgument("FLEXATTN_CACHE_MAX_MB",
                         "a number of megabytes (2^20 bytes) such as 1024 or 0.5, or 0 to turn the disk cache off",
                         bad);
  }
  return cfg;
}

std::string CacheDir() {
  disk::Config cfg;
  std::string ignored;
  disk::ReadConfig(&cfg, &ignored);  // the directory does not depend on the size cap
  return cfg.dir;
}

void ClearMemoryCache() {
  std::lock_guard<std::recursive_mutex> lock(JitMutex());
  MemCache().clear();  // modules stay loaded: functions handed out remain valid
}

bool IsCached(rt::Device& dev, const std::string& source, const std::vector<std::string>& extraOptions) {
  const CompileKey k = MakeKey(cu::Rtc(), dev, source, extraOptions);
  {
    std::lock_guard<std::recursive_mutex> lock(JitMutex());
    if (MemCache().count({dev.index, k.key})) return true;
  }
  const disk::Config cfg = CacheConfig();
  return cfg.enabled && disk::Probably(cfg.dir, EntryKey(k.arch, k.key));
}

// The global lock guards the cache maps only: NVRTC compiles (hundreds of ms)
// run unlocked, so a quick first-tier compile is not queued behind a slower
// optimized one (see lib/jit.ts, tiered JIT). Two threads compiling
// the same key both finish; the later insert wins and both modules stay valid.
// The disk cache never fails a compile: a write that does not happen is
// recorded (disk::TakeProblem) and the module is used from memory.
CompileResult Compile(rt::Device& dev, const std::string& source, const std::vector<std::string>& extraOptions,
                      const std::string& programName) {
  auto t0 = std::chrono::steady_clock::now();
  const cu::Nvrtc& r = cu::Rtc();
  const CompileKey k = MakeKey(r, dev, source, extraOptions);
  const disk::Config cfg = CacheConfig();
  const std::string entry = EntryKey(k.arch, k.key);
  CompileResult res;
  res.key = k.key;
  res.target = k.arch;
  res.path = disk::EntryPath(cfg.dir, entry);
  {
    std::lock_guard<std::recursive_mutex> lock(JitMutex());
    auto it = MemCache().find({dev.index, k.key});
    if (it != MemCache().end()) {
      res.module = it->second;
      res.hit = CacheHit::kMemory;
      res.ms = MsSince(t0);
      return res;
    }
  }
  auto remember = [&](cu::CUmodule m, CacheHit hit) {
    {
      std::lock_guard<std::recursive_mutex> lock(JitMutex());
      MemCache()[{dev.index, k.key}] = m;
    }
    res.module = m;
    res.hit = hit;
    res.ms = MsSince(t0);
    return res;
  };
  const cu::Driver& d = cu::Drv();
  dev.MakeCurrent();
  disk::GetResult got = disk::Load(cfg, entry);  // verified: a damaged entry is removed, never returned
  if (got.status == disk::Status::kHit) {
    cu::CUmodule m = nullptr;
    if (d.cuModuleLoadData(&m, got.payload.data()) == cu::CUDA_SUCCESS) return remember(m, CacheHit::kDisk);
    // Intact but unloadable (e.g. a driver downgrade): recompile and overwrite it.
  }
  std::string cubin = NvrtcCompile(source, programName, k.arch, k.options, k.ptx);
  cu::CUmodule m = nullptr;
  cu::Check(d.cuModuleLoadData(&m, cubin.data()),
            std::string("cuModuleLoadData(NVRTC ") + (k.ptx ? "PTX" : "cubin") + " for " + k.arch + ")");
  if (cfg.enabled) disk::Store(cfg, entry, cubin);
  return remember(m, CacheHit::kNone);
}

cu::CUfunction GetFunction(cu::CUmodule module, const char* kernel) {
  cu::CUfunction f = nullptr;
  cu::Check(cu::Drv().cuModuleGetFunction(&f, module, kernel),
            std::string("cuModuleGetFunction(\"") + kernel + "\")");
  return f;
}

}  // namespace flexattn::jit
