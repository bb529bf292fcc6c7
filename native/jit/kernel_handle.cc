// Kernel handles for the attention ops: `loadKernel` resolves a kernel once
// (precompiled fatbin first, else NVRTC through the memory/disk cache) on a
// worker thread, so a cold compile never blocks the event loop; the handle
// then launches with a single by-value struct parameter at minimal per-call
// cost (no hashing, no lookups).
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "addon/addon.h"
#include "addon/errors.h"
#include "jit/jit.h"
#include "kernels/generated/flash_fwd_config.cuh"
#include "runtime/device.h"

namespace flexattn::jit {
namespace {

using CuModuleGetGlobal = cu::CUresult (*)(cu::CUdeviceptr*, size_t*, cu::CUmodule, const char*);
using CuFuncGetModule = cu::CUresult (*)(cu::CUmodule*, cu::CUfunction);
using CuMemcpyDtoH = cu::CUresult (*)(void*, cu::CUdeviceptr, size_t);

// Everything the worker thread resolves.
struct Loaded {
  cu::CUfunction fn = nullptr;
  std::string origin;     // "fatbin" | "nvrtc" | "memory" | "disk"
  double ms = 0;
  bool hasCfg = false;
  int cfg[kFlashFwdCfgInts] = {0};
};

// Reads `<kernel>_cfg` (int[kFlashFwdCfgInts], see native/kernels/interface/flash_fwd_params.json) when the
// module defines it.
void ReadConfig(cu::CUmodule module, const std::string& kernel, Loaded* out) {
  auto getGlobal = reinterpret_cast<CuModuleGetGlobal>(cu::DriverSym("cuModuleGetGlobal_v2"));
  auto memcpyDtoH = reinterpret_cast<CuMemcpyDtoH>(cu::DriverSym("cuMemcpyDtoH_v2"));
  if (!getGlobal || !memcpyDtoH || !module) return;
  cu::CUdeviceptr ptr = 0;
  size_t bytes = 0;
  if (getGlobal(&ptr, &bytes, module, (kernel + "_cfg").c_str()) != cu::CUDA_SUCCESS || bytes != sizeof out->cfg) return;
  cu::Check(memcpyDtoH(out->cfg, ptr, bytes), "cuMemcpyDtoH(" + kernel + "_cfg)");
  out->hasCfg = true;
}

Loaded Resolve(rt::Device& dev, const std::string& module, const std::string& source,
               const std::vector<std::string>& options, const std::string& kernel) {
  Loaded r;
  dev.MakeCurrent();
  cu::CUmodule mod = nullptr;
  if (!module.empty()) {
    // Precompiled when the fatbin has it; else the module's source via NVRTC.
    RegisterModule(module, source, options);
    r.fn = GetKernel(dev, module, kernel.c_str(), &r.origin);
    auto funcGetModule = reinterpret_cast<CuFuncGetModule>(cu::DriverSym("cuFuncGetModule"));
    if (funcGetModule) funcGetModule(&mod, r.fn);
  } else {
    CompileResult c = Compile(dev, source, options, kernel + ".cu");
    mod = c.module;
    r.fn = GetFunction(mod, kernel.c_str());
    r.origin = CacheHitName(c.hit);
    r.ms = c.ms;
  }
  ReadConfig(mod, kernel, &r);
  return r;
}

class KernelHandle : public Napi::ObjectWrap<KernelHandle> {
 public:
  static Napi::FunctionReference ctor;

  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "KernelHandle", {
      InstanceAccessor<&KernelHandle::Origin>("origin"),
      InstanceAccessor<&KernelHandle::Config>("config"),
      InstanceAccessor<&KernelHandle::Ms>("compileMs"),
      InstanceMethod<&KernelHandle::Launch>("launch"),
    });
  }

  KernelHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<KernelHandle>(info) {}

  void Set(int device, const Loaded& l) {
    device_ = device;
    loaded_ = l;
  }

 private:
  Napi::Value Origin(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), loaded_.origin); }
  Napi::Value Ms(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), loaded_.ms); }
  Napi::Value Config(const Napi::CallbackInfo& info) {
    if (!loaded_.hasCfg) return info.Env().Null();
    Napi::Int32Array a = Napi::Int32Array::New(info.Env(), 8);
    std::memcpy(a.Data(), loaded_.cfg, sizeof loaded_.cfg);
    return a;
  }

  // launch(grid[3], block[3], sharedBytes, params: Uint8Array)
  Napi::Value Launch(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      unsigned grid[3], block[3];
      ArgDim3(info, 0, "grid", grid);
      ArgDim3(info, 1, "block", block);
      int64_t smem = ArgIndex(info, 2, "sharedBytes");
      if (!info[3].IsTypedArray()) {
        ThrowInvalidArgument("params", "a Uint8Array holding the kernel parameter struct", DescribeValue(info[3]));
      }
      Napi::TypedArray t = info[3].As<Napi::TypedArray>();
      size_t n = t.ByteLength();
      if (n > 32764) ThrowInvalidArgument("params", "at most 32764 bytes", std::to_string(n));
      rt::Device& dev = rt::GetDevice(device_);
      const cu::Driver& d = cu::Drv();
      dev.MakeCurrent();
      if (smem > smemConfigured_) {
        cu::Check(d.cuFuncSetAttribute(loaded_.fn, cu::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                       static_cast<int>(smem)),
                  "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES=" + std::to_string(smem) + ")");
        smemConfigured_ = smem;
      }
      // The driver copies the parameter buffer at launch time, so the typed array's own bytes serve when
      // they are 8-byte aligned (a whole ArrayBuffer always is); else an aligned copy.
      const uint8_t* src = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
      uint64_t stackBuf[64];
      std::vector<uint64_t> heapBuf;
      void* buf = const_cast<uint8_t*>(src);
      if (reinterpret_cast<uintptr_t>(src) % 8 != 0) {
        uint64_t* copy = stackBuf;
        if (n > sizeof stackBuf) {
          heapBuf.resize((n + 7) / 8);
          copy = heapBuf.data();
        }
        std::memcpy(copy, src, n);
        buf = copy;
      }
      size_t size = n;
      void* extra[] = {reinterpret_cast<void*>(1), buf,      // CU_LAUNCH_PARAM_BUFFER_POINTER
                       reinterpret_cast<void*>(2), &size,    // CU_LAUNCH_PARAM_BUFFER_SIZE
                       reinterpret_cast<void*>(0)};          // CU_LAUNCH_PARAM_END
      cu::Check(d.cuLaunchKernel(loaded_.fn, grid[0], grid[1], grid[2], block[0], block[1], block[2],
                                 static_cast<unsigned>(smem), dev.stream, nullptr, extra),
                "cuLaunchKernel");
      return info.Env().Undefined();
    });
  }

  int device_ = 0;
  Loaded loaded_;
  int64_t smemConfigured_ = 48 * 1024;
};

Napi::FunctionReference KernelHandle::ctor;

class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, int device, std::string module, std::string source, std::vector<std::string> options,
             std::string kernel)
      : Napi::AsyncWorker(env, "flexattn:loadKernel"), deferred_(Napi::Promise::Deferred::New(env)),
        device_(device), module_(std::move(module)), source_(std::move(source)), options_(std::move(options)),
        kernel_(std::move(kernel)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      loaded_ = Resolve(rt::GetDevice(device_), module_, source_, options_, kernel_);
    } catch (...) {
      err_ = CurrentExceptionAsNativeError("loadKernel");
      failed_ = true;
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (failed_) {
      deferred_.Reject(ToJsError(env, err_).Value());
      return;
    }
    Napi::Object obj = KernelHandle::ctor.New({});
    KernelHandle::Unwrap(obj)->Set(device_, loaded_);
    deferred_.Resolve(obj);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int device_;
  std::string module_, source_;
  std::vector<std::string> options_;
  std::string kernel_;
  Loaded loaded_;
  NativeError err_;
  bool failed_ = false;
};

std::string StringField(const Napi::Object& o, const char* key, bool required) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() && !required) return "";
  if (!v.IsString()) ThrowInvalidArgument(std::string("spec.") + key, "a string", DescribeValue(v));
  return v.As<Napi::String>();
}

// loadKernel(device, {kernel, source, module?, options?}) -> Promise<KernelHandle>
// With `module`, the embedded fatbin is tried first and `source` is the NVRTC
// fallback; without it, `source` is always JIT-compiled (memory/disk cached).
Napi::Value LoadKernel(const Napi::CallbackInfo& info) {
  int device = static_cast<int>(ArgIndex(info, 0, "device"));
  rt::GetDevice(device);  // validates the index on the main thread
  if (!info[1].IsObject()) ThrowInvalidArgument("spec", "an object {kernel, source, module?, options?}", DescribeValue(info[1]));
  Napi::Object spec = info[1].As<Napi::Object>();
  std::string kernel = StringField(spec, "kernel", true);
  std::string source = StringField(spec, "source", true);
  std::string module = StringField(spec, "module", false);
  std::vector<std::string> options = ArgStrings(spec.Get("options"), "spec.options");
  auto* w = new LoadWorker(info.Env(), device, module, source, options, kernel);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace
}  // namespace flexattn::jit

namespace flexattn {
void RegisterKernels(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = jit::KernelHandle::Define(env);
  jit::KernelHandle::ctor = Napi::Persistent(cls);
  jit::KernelHandle::ctor.SuppressDestruct();
  exports.Set("loadKernel", Napi::Function::New<Guarded<jit::LoadKernel>>(env, "loadKernel"));
}
}  // namespace flexattn
