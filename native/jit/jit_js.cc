// JS exports of the JIT: compile/launch test hooks, cache queries, and the
// argument helpers shared with kernel_handle.cc.
#include <cstdio>
#include <cstring>

#include "addon/addon.h"
#include "addon/errors.h"
#include "jit/disk_cache.h"
#include "jit/jit.h"

namespace flexattn::jit {

// native/jit/disk_cache_js.cc
void RegisterDiskCacheHooks(Napi::Env env, Napi::Object exports);

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

// jitCacheConfig() -> {dir, maxBytes, enabled}: the disk cache settings from
// the environment; InvalidArgumentError for a bad FLEXATTN_CACHE_MAX_MB.
Napi::Value JitCacheConfig(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  disk::Config cfg = CacheConfig();
  Napi::Object o = Napi::Object::New(env);
  o.Set("dir", Napi::String::New(env, cfg.dir));
  o.Set("maxBytes", Napi::Number::New(env, static_cast<double>(cfg.maxBytes)));
  o.Set("enabled", Napi::Boolean::New(env, cfg.enabled));
  return o;
}

// jitCacheWarning() -> string | null: the first disk-cache problem of this
// process (an entry not written, a file not readable), handed out once.
Napi::Value JitCacheWarning(const Napi::CallbackInfo& info) {
  std::string msg;
  if (!disk::TakeProblem(&msg)) return info.Env().Null();
  return Napi::String::New(info.Env(), msg);
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
  exports.Set("jitCacheConfig", Napi::Function::New<Guarded<jit::JitCacheConfig>>(env, "jitCacheConfig"));
  exports.Set("jitCacheWarning", Napi::Function::New<Guarded<jit::JitCacheWarning>>(env, "jitCacheWarning"));
  jit::RegisterDiskCacheHooks(env, exports);
}
}  // namespace flexattn