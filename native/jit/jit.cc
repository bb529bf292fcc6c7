#include "jit/jit.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <tuple>

#include "addon.h"
#include "cuda/errors.h"
#include "jit/kernel_sources.h"

namespace flexattn::jit {

namespace {

struct ModuleSpec {
  std::string source;
  std::vector<std::string> options;
};

std::recursive_mutex g_mu;
std::map<std::string, ModuleSpec>& Modules() {
  static auto* m = new std::map<std::string, ModuleSpec>{
      {"util", {"#include \"util.cuh\"\n", {"--use_fast_math"}}},
  };
  return *m;
}
// (device index, key) -> module compiled by NVRTC.
std::map<std::pair<int, uint64_t>, cu::CUmodule>& MemCache() {
  static auto* m = new std::map<std::pair<int, uint64_t>, cu::CUmodule>();
  return *m;
}
// device index -> fatbin module (nullptr when it does not load there).
std::map<int, cu::CUmodule>& FatbinModules() {
  static auto* m = new std::map<int, cu::CUmodule>();
  return *m;
}
// (device, module, kernel) -> function, with origin.
std::map<std::tuple<int, std::string, std::string>, std::pair<cu::CUfunction, std::string>>& KernelCache() {
  static auto* m = new std::map<std::tuple<int, std::string, std::string>, std::pair<cu::CUfunction, std::string>>();
  return *m;
}

uint64_t HeadersHash() {
  static uint64_t h = [] {
    uint64_t x = 0xcbf29ce484222325ull;
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

bool DisableFatbin() {
  const char* e = std::getenv("FLEXATTN_DISABLE_FATBIN");
  return e && *e && std::strcmp(e, "0") != 0;
}

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// ---- disk cache ------------------------------------------------------------
constexpr char kMagic[8] = {'F', 'X', 'C', 'U', 'B', 'I', 'N', '1'};

std::string CachePath(const std::string& arch, uint64_t key) {
  char buf[32];
  snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(key));
  return CacheDir() + "/" + arch + "-" + buf + ".cubin";
}

bool ReadCache(const std::string& path, uint64_t key, std::string* cubin) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  char magic[8];
  uint64_t k = 0, size = 0, hash = 0;
  if (!f.read(magic, 8) || std::memcmp(magic, kMagic, 8) != 0) return false;
  if (!f.read(reinterpret_cast<char*>(&k), 8) || k != key) return false;
  if (!f.read(reinterpret_cast<char*>(&size), 8) || size == 0 || size > (1ull << 31)) return false;
  if (!f.read(reinterpret_cast<char*>(&hash), 8)) return false;
  std::string data(size, '\0');
  if (!f.read(&data[0], size)) return false;
  if (Fnv1a64(data.data(), data.size()) != hash) return false;
  *cubin = std::move(data);
  return true;
}

void MkdirP(const std::string& dir) {
  std::string cur;
  std::stringstream ss(dir);
  std::string part;
  if (!dir.empty() && dir[0] == '/') cur = "/";
  while (std::getline(ss, part, '/')) {
    if (part.empty()) continue;
    cur += part + "/";
    mkdir(cur.c_str(), 0755);
  }
}

void WriteCache(const std::string& path, uint64_t key, const std::string& cubin) {
  // Best effort: a read-only or missing cache dir only costs recompiles.
  MkdirP(CacheDir());
  std::string tmp = path + ".tmp." + std::to_string(getpid()) + "." + std::to_string(rand());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return;
    uint64_t size = cubin.size(), hash = Fnv1a64(cubin.data(), cubin.size());
    f.write(kMagic, 8);
    f.write(reinterpret_cast<const char*>(&key), 8);
    f.write(reinterpret_cast<const char*>(&size), 8);
    f.write(reinterpret_cast<const char*>(&hash), 8);
    f.write(cubin.data(), cubin.size());
    f.flush();
    if (!f) {
      std::remove(tmp.c_str());
      return;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) std::remove(tmp.c_str());
}

// ---- NVRTC -----------------------------------------------------------------
std::string NvrtcCompile(const std::string& source, const std::string& programName, const std::string& arch,
                         const std::vector<std::string>& options, bool ptx) {
  const cu::Nvrtc& r = cu::Rtc();
  std::vector<const char*> hdrs, names;
  for (int i = 0; i < kNumKernelSources; i++) {
    hdrs.push_back(kKernelSources[i].text);
    names.push_back(kKernelSources[i].name);
  }
  cu::nvrtcProgram prog = nullptr;
  cu::nvrtcResult res = r.nvrtcCreateProgram(&prog, source.c_str(), programName.c_str(),
                                             static_cast<int>(hdrs.size()), hdrs.data(), names.data());
  if (res != cu::NVRTC_SUCCESS) {
    throw NativeError(ErrKind::kCompile,
                      std::string("flexattn: nvrtcCreateProgram failed: ") + r.nvrtcGetErrorString(res), source,
                      "");
  }
  std::vector<const char*> opts;
  for (const auto& o : options) opts.push_back(o.c_str());
  res = r.nvrtcCompileProgram(prog, static_cast<int>(opts.size()), opts.data());
  size_t logSize = 0;
  std::string log;
  if (r.nvrtcGetProgramLogSize(prog, &logSize) == cu::NVRTC_SUCCESS && logSize > 1) {
    log.resize(logSize);
    r.nvrtcGetProgramLog(prog, &log[0]);
    while (!log.empty() && (log.back() == '\0' || log.back() == '\n')) log.pop_back();
  }
  if (res != cu::NVRTC_SUCCESS) {
    r.nvrtcDestroyProgram(&prog);
    std::string opt;
    for (const auto& o : options) opt += " " + o;
    std::string shown = log.size() > 6000 ? log.substr(0, 6000) + "\n... (log truncated; see error.log)" : log;
    throw NativeError(ErrKind::kCompile,
                      "flexattn: NVRTC " + std::to_string(r.major) + "." + std::to_string(r.minor) +
                          " failed to compile " + programName + " for " + arch + " (" + r.nvrtcGetErrorString(res) +
                          ").\nOptions:" + opt + "\nCompiler log:\n" + shown +
                          "\nThe full source is in error.source.",
                      source, log);
  }
  size_t n = 0;
  std::string cubin;
  res = ptx ? r.nvrtcGetPTXSize(prog, &n) : r.nvrtcGetCUBINSize(prog, &n);
  if (res == cu::NVRTC_SUCCESS && n > 0) {
    cubin.resize(n);  // PTX: n includes the terminating NUL cuModuleLoadData needs
    res = ptx ? r.nvrtcGetPTX(prog, &cubin[0]) : r.nvrtcGetCUBIN(prog, &cubin[0]);
  }
  r.nvrtcDestroyProgram(&prog);
  if (res != cu::NVRTC_SUCCESS || cubin.empty()) {
    throw NativeError(ErrKind::kCompile,
                      "flexattn: NVRTC produced no CUBIN for " + arch +
                          " (is --gpu-architecture a real sm_XY target?)",
                      source, log);
  }
  return cubin;
}

// Target for NVRTC: the device's real arch (CUBIN) when NVRTC supports it,
// else PTX for the newest virtual arch it supports that the device can run
// (the driver JIT-compiles it). FLEXATTN_JIT_PTX=1 forces the PTX path.
std::string JitTarget(const cu::Nvrtc& r, const rt::Device& dev, bool* ptx) {
  std::string arch = dev.Arch();
  const char* force = std::getenv("FLEXATTN_JIT_PTX");
  *ptx = force && *force && std::strcmp(force, "0") != 0;
  int sm = dev.major * 10 + dev.minor;
  int best = 0;
  bool supported = true;
  if (r.nvrtcGetNumSupportedArchs && r.nvrtcGetSupportedArchs) {
    int count = 0;
    if (r.nvrtcGetNumSupportedArchs(&count) == cu::NVRTC_SUCCESS && count > 0) {
      std::vector<int> archs(count);
      if (r.nvrtcGetSupportedArchs(archs.data()) == cu::NVRTC_SUCCESS) {
        supported = false;
        for (int a : archs) {
          if (a == sm) supported = true;
          if (a <= sm && a > best) best = a;
        }
      }
    }
  }
  if (!supported) *ptx = true;
  if (*ptx) {
    int target = supported || best == 0 ? sm : best;
    // Arch-specific features (sm_90a) are not portable through PTX of compute_90.
    return "compute_" + std::to_string(target) + (supported && dev.major == 9 && dev.minor == 0 ? "a" : "");
  }
  return arch;
}

}  // namespace

uint64_t Fnv1a64(const void* data, size_t n, uint64_t h) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

const char* CacheHitName(CacheHit h) {
  switch (h) {
    case CacheHit::kMemory: return "memory";
    case CacheHit::kDisk: return "disk";
    default: return "none";
  }
}

std::string CacheDir() {
  const char* e = std::getenv("FLEXATTN_CACHE_DIR");
  if (e && *e) return e;
  const char* home = std::getenv("HOME");
  if (home && *home) return std::string(home) + "/.cache/flexattn";
  return "/tmp/flexattn-cache-" + std::to_string(getuid());
}

void ClearMemoryCache() {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  MemCache().clear();  // modules stay loaded: functions handed out remain valid
}

namespace {
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

bool IsCached(rt::Device& dev, const std::string& source, const std::vector<std::string>& extraOptions) {
  const CompileKey k = MakeKey(cu::Rtc(), dev, source, extraOptions);
  {
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    if (MemCache().count({dev.index, k.key})) return true;
  }
  struct stat st;
  return stat(CachePath(k.arch, k.key).c_str(), &st) == 0 && st.st_size > 0;
}

// The global lock guards the cache maps only: NVRTC compiles (hundreds of ms)
// run unlocked, so a quick first-tier compile is not queued behind a slower
// optimized one (see lib/cuda-backend.ts, tiered JIT). Two threads compiling
// the same key both finish; the later insert wins and both modules stay valid.
CompileResult Compile(rt::Device& dev, const std::string& source, const std::vector<std::string>& extraOptions,
                      const std::string& programName) {
  auto t0 = std::chrono::steady_clock::now();
  const cu::Nvrtc& r = cu::Rtc();
  const CompileKey k = MakeKey(r, dev, source, extraOptions);
  CompileResult res;
  res.key = k.key;
  res.target = k.arch;
  res.path = CachePath(k.arch, k.key);
  {
    std::lock_guard<std::recursive_mutex> lock(g_mu);
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
      std::lock_guard<std::recursive_mutex> lock(g_mu);
      MemCache()[{dev.index, k.key}] = m;
    }
    res.module = m;
    res.hit = hit;
    res.ms = MsSince(t0);
    return res;
  };
  const cu::Driver& d = cu::Drv();
  dev.MakeCurrent();
  const std::string& path = res.path;
  std::string cubin;
  if (ReadCache(path, k.key, &cubin)) {
    cu::CUmodule m = nullptr;
    if (d.cuModuleLoadData(&m, cubin.data()) == cu::CUDA_SUCCESS) return remember(m, CacheHit::kDisk);
    // Unloadable entry: fall through, recompile and overwrite it.
  }
  cubin = NvrtcCompile(source, programName, k.arch, k.options, k.ptx);
  cu::CUmodule m = nullptr;
  cu::Check(d.cuModuleLoadData(&m, cubin.data()),
            std::string("cuModuleLoadData(NVRTC ") + (k.ptx ? "PTX" : "cubin") + " for " + k.arch + ")");
  WriteCache(path, k.key, cubin);
  return remember(m, CacheHit::kNone);
}

cu::CUfunction GetFunction(cu::CUmodule module, const char* kernel) {
  cu::CUfunction f = nullptr;
  cu::Check(cu::Drv().cuModuleGetFunction(&f, module, kernel),
            std::string("cuModuleGetFunction(\"") + kernel + "\")");
  return f;
}

void RegisterModule(const std::string& name, const std::string& source, const std::vector<std::string>& options) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  Modules()[name] = ModuleSpec{source, options};
}

cu::CUfunction GetKernel(rt::Device& dev, const std::string& module, const char* kernel, std::string* origin) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  auto key = std::make_tuple(dev.index, module, std::string(kernel));
  auto it = KernelCache().find(key);
  if (it != KernelCache().end()) {
    if (origin) *origin = it->second.second;
    return it->second.first;
  }
  const cu::Driver& d = cu::Drv();
  dev.MakeCurrent();
  // 1. Precompiled fatbin.
  if (kFatbin && kFatbinSize > 0 && !DisableFatbin()) {
    auto fit = FatbinModules().find(dev.index);
    if (fit == FatbinModules().end()) {
      cu::CUmodule m = nullptr;
      if (d.cuModuleLoadData(&m, kFatbin) != cu::CUDA_SUCCESS) m = nullptr;
      fit = FatbinModules().emplace(dev.index, m).first;
    }
    if (fit->second) {
      cu::CUfunction f = nullptr;
      if (d.cuModuleGetFunction(&f, fit->second, kernel) == cu::CUDA_SUCCESS && f) {
        KernelCache()[key] = {f, "fatbin"};
        if (origin) *origin = "fatbin";
        return f;
      }
    }
  }
  // 2. NVRTC from the embedded sources.
  auto mit = Modules().find(module);
  if (mit == Modules().end()) {
    throw NativeError(ErrKind::kGeneric, "flexattn: internal error: unknown kernel module '" + module + "'");
  }
  CompileResult r = Compile(dev, mit->second.source, mit->second.options, module + ".cu");
  cu::CUfunction f = GetFunction(r.module, kernel);
  KernelCache()[key] = {f, "nvrtc"};
  if (origin) *origin = "nvrtc";
  return f;
}

cu::CUfunction GetKernel(rt::Device& dev, const std::string& module, const char* kernel) {
  return GetKernel(dev, module, kernel, nullptr);
}

// ---- JS exports ------------------------------------------------------------
namespace {

Napi::Value JitCompileForTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowInvalidArgument("source", "a string", DescribeValue(info[0]));
  if (!info[1].IsString()) ThrowInvalidArgument("kernelName", "a string", DescribeValue(info[1]));
  int device = info.Length() > 2 && !info[2].IsUndefined() ? static_cast<int>(ArgIndex(info, 2, "device")) : 0;
  std::string source = info[0].As<Napi::String>();
  std::string kernel = info[1].As<Napi::String>();
  rt::Device& dev = rt::GetDevice(device);
  CompileResult r = Compile(dev, source, {}, "test_kernel.cu");
  GetFunction(r.module, kernel.c_str());
  Napi::Object o = Napi::Object::New(env);
  o.Set("cacheHit", Napi::String::New(env, CacheHitName(r.hit)));
  o.Set("ms", Napi::Number::New(env, r.ms));
  char buf[32];
  snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(r.key));
  o.Set("key", Napi::String::New(env, buf));
  o.Set("path", Napi::String::New(env, r.path));
  o.Set("target", Napi::String::New(env, r.target));
  return o;
}

// jitCached(device, source, options?) -> boolean: would this compile be a cache hit?
Napi::Value JitCached(const Napi::CallbackInfo& info) {
  int device = static_cast<int>(ArgIndex(info, 0, "device"));
  if (!info[1].IsString()) ThrowInvalidArgument("source", "a string", DescribeValue(info[1]));
  std::vector<std::string> options = ArgStrings(info[2], "options");
  std::string source = info[1].As<Napi::String>();
  return Napi::Boolean::New(info.Env(), IsCached(rt::GetDevice(device), source, options));
}

Napi::Value JitCacheDir(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), CacheDir()); }

Napi::Value JitClearMemoryCache(const Napi::CallbackInfo& info) {
  ClearMemoryCache();
  return info.Env().Undefined();
}

Napi::Value KernelOrigin(const Napi::CallbackInfo& info) {
  int device = static_cast<int>(ArgIndex(info, 0, "device"));
  if (!info[1].IsString()) ThrowInvalidArgument("module", "a string", DescribeValue(info[1]));
  if (!info[2].IsString()) ThrowInvalidArgument("kernel", "a string", DescribeValue(info[2]));
  std::string module = info[1].As<Napi::String>(), kernel = info[2].As<Napi::String>();
  std::string origin;
  GetKernel(rt::GetDevice(device), module, kernel.c_str(), &origin);
  return Napi::String::New(info.Env(), origin);
}


// jitLaunch(device, source, kernelName, grid[3], block[3], sharedBytes, params)
// Compiles `source` through the cache and launches `kernelName` on the
// device's stream. `params` holds the kernel's parameter buffer laid out as
// the CUDA ABI expects (for one struct parameter: the struct's bytes).
Napi::Value JitLaunch(const Napi::CallbackInfo& info) {
  int device = static_cast<int>(ArgIndex(info, 0, "device"));
  if (!info[1].IsString()) ThrowInvalidArgument("source", "a string", DescribeValue(info[1]));
  if (!info[2].IsString()) ThrowInvalidArgument("kernelName", "a string", DescribeValue(info[2]));
  unsigned grid[3], block[3];
  ArgDim3(info, 3, "grid", grid);
  ArgDim3(info, 4, "block", block);
  int64_t smem = ArgIndex(info, 5, "sharedBytes");
  if (!info[6].IsTypedArray() && !info[6].IsDataView()) {
    ThrowInvalidArgument("params", "a Uint8Array holding the kernel parameter buffer", DescribeValue(info[6]));
  }
  const uint8_t* data;
  size_t n;
  if (info[6].IsTypedArray()) {
    Napi::TypedArray t = info[6].As<Napi::TypedArray>();
    data = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
    n = t.ByteLength();
  } else {
    Napi::DataView t = info[6].As<Napi::DataView>();
    data = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
    n = t.ByteLength();
  }
  if (n > 32764) ThrowInvalidArgument("params", "at most 32764 bytes of kernel parameters", std::to_string(n));
  std::string source = info[1].As<Napi::String>(), kernel = info[2].As<Napi::String>();
  rt::Device& dev = rt::GetDevice(device);
  CompileResult r = Compile(dev, source, {}, kernel + ".cu");
  cu::CUfunction f = GetFunction(r.module, kernel.c_str());
  const cu::Driver& d = cu::Drv();
  if (smem > 48 * 1024) {
    cu::Check(d.cuFuncSetAttribute(f, cu::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, static_cast<int>(smem)),
              "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES=" + std::to_string(smem) + ")");
  }
  // 8-byte aligned copy of the parameter buffer (the driver copies it at launch).
  std::vector<uint64_t> buf((n + 7) / 8 + 1, 0);
  std::memcpy(buf.data(), data, n);
  size_t size = n;
  void* extra[] = {reinterpret_cast<void*>(1), buf.data(),   // CU_LAUNCH_PARAM_BUFFER_POINTER
                   reinterpret_cast<void*>(2), &size,        // CU_LAUNCH_PARAM_BUFFER_SIZE
                   reinterpret_cast<void*>(0)};              // CU_LAUNCH_PARAM_END
  dev.MakeCurrent();
  cu::Check(d.cuLaunchKernel(f, grid[0], grid[1], grid[2], block[0], block[1], block[2], static_cast<unsigned>(smem),
                             dev.stream, nullptr, extra),
            "cuLaunchKernel(" + kernel + ")");
  return info.Env().Undefined();
}

}  // namespace

std::vector<std::string> ArgStrings(const Napi::Value& v, const std::string& name) {
  std::vector<std::string> out;
  if (v.IsUndefined()) return out;
  if (!v.IsArray()) ThrowInvalidArgument(name, "an array of strings", DescribeValue(v));
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsString()) ThrowInvalidArgument(name + "[" + std::to_string(i) + "]", "a string", DescribeValue(e));
    out.push_back(e.As<Napi::String>());
  }
  return out;
}

void ArgDim3(const Napi::CallbackInfo& info, size_t i, const char* name, unsigned out[3]) {
  Napi::Value v = info[i];
  if (!v.IsArray() || v.As<Napi::Array>().Length() != 3) {
    ThrowInvalidArgument(name, "an array of 3 positive integers", DescribeValue(v));
  }
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t k = 0; k < 3; k++) {
    Napi::Value e = a.Get(k);
    double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : 0;
    if (!e.IsNumber() || d < 1 || d > 4294967295.0 || d != static_cast<double>(static_cast<uint64_t>(d))) {
      ThrowInvalidArgument(std::string(name) + "[" + std::to_string(k) + "]", "a positive integer", DescribeValue(e));
    }
    out[k] = static_cast<unsigned>(d);
  }
}

}  // namespace flexattn::jit

namespace flexattn {
void RegisterJit(Napi::Env env, Napi::Object exports) {
  exports.Set("jitCompileForTest", Napi::Function::New<Guarded<jit::JitCompileForTest>>(env, "jitCompileForTest"));
  exports.Set("jitCacheDir", Napi::Function::New<Guarded<jit::JitCacheDir>>(env, "jitCacheDir"));
  exports.Set("jitCached", Napi::Function::New<Guarded<jit::JitCached>>(env, "jitCached"));
  exports.Set("jitClearMemoryCache",
              Napi::Function::New<Guarded<jit::JitClearMemoryCache>>(env, "jitClearMemoryCache"));
  exports.Set("jitLaunch", Napi::Function::New<Guarded<jit::JitLaunch>>(env, "jitLaunch"));
  exports.Set("kernelOrigin", Napi::Function::New<Guarded<jit::KernelOrigin>>(env, "kernelOrigin"));
}
}  // namespace flexattn
