// The addon's JS exports about the CUDA installation: setErrorClasses (the JS
// error classes the native layer throws), cudaStatus (driver, NVRTC and the
// precompiled fatbin, for `flexattn info`) and deviceProps. They sit in the
// addon layer because they join native/cuda (the loaders) with native/jit
// (the embedded fatbin); neither of those includes the other.
#include <string>
#include <vector>

#include "addon/addon.h"
#include "addon/errors.h"
#include "cuda/cuda_api.h"
#include "jit/kernel_sources.h"

#ifndef FLEXATTN_FATBIN_ARCHS
#define FLEXATTN_FATBIN_ARCHS ""
#endif

namespace flexattn {

namespace {

std::vector<std::string> FatbinArchs() {
  std::vector<std::string> out;
  if (!kFatbin || kFatbinSize == 0) return out;
  std::string s = FLEXATTN_FATBIN_ARCHS;
  std::string cur;
  for (char c : s + ",") {
    if (c == ',' || c == ';' || c == ' ') {
      if (!cur.empty()) out.push_back("sm_" + cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

Napi::Value SetErrorClassesJs(const Napi::CallbackInfo& info) {
  if (!info[0].IsObject()) ThrowInvalidArgument("classes", "an object of error classes", DescribeValue(info[0]));
  SetErrorClasses(info.Env(), info[0].As<Napi::Object>());
  return info.Env().Undefined();
}

Napi::Value CudaStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  std::string err;
  const cu::Driver* d = cu::TryDrv(&err);
  o.Set("driverLoaded", Napi::Boolean::New(env, d != nullptr));
  o.Set("driverPath", Napi::String::New(env, cu::DriverPath()));
  o.Set("driverError", Napi::String::New(env, d ? "" : err));
  int version = 0, count = 0;
  if (d) {
    d->cuDriverGetVersion(&version);
    if (d->cuDeviceGetCount(&count) != cu::CUDA_SUCCESS) count = 0;
  }
  o.Set("driverVersion", Napi::Number::New(env, version));
  o.Set("deviceCount", Napi::Number::New(env, count));
  std::string rerr;
  const cu::Nvrtc* r = cu::TryRtc(&rerr);
  o.Set("nvrtcLoaded", Napi::Boolean::New(env, r != nullptr));
  o.Set("nvrtcPath", Napi::String::New(env, r ? cu::NvrtcPath() : ""));
  o.Set("nvrtcError", Napi::String::New(env, r ? "" : rerr));
  o.Set("nvrtcVersion", Napi::String::New(env, r ? std::to_string(r->major) + "." + std::to_string(r->minor) : ""));
  o.Set("fatbinBytes", Napi::Number::New(env, static_cast<double>(kFatbin ? kFatbinSize : 0)));
  auto archs = FatbinArchs();
  Napi::Array a = Napi::Array::New(env, archs.size());
  for (size_t i = 0; i < archs.size(); i++) a.Set(static_cast<uint32_t>(i), archs[i]);
  o.Set("fatbinArchs", a);
  return o;
}

Napi::Value DeviceProps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cu::Driver& d = cu::Drv();
  int count = 0;
  cu::Check(d.cuDeviceGetCount(&count), "cuDeviceGetCount");
  Napi::Value v = info[0];
  double idx = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!v.IsNumber() || idx < 0 || idx != static_cast<int>(idx) || idx >= count) {
    ThrowDeviceError("device", "a device index in [0, " + std::to_string(count) + ")", DescribeValue(v));
  }
  cu::CUdevice dev;
  cu::Check(d.cuDeviceGet(&dev, static_cast<int>(idx)), "cuDeviceGet");
  char name[256] = {0};
  cu::Check(d.cuDeviceGetName(name, sizeof name - 1, dev), "cuDeviceGetName");
  auto attr = [&](int a) {
    int x = 0;
    cu::Check(d.cuDeviceGetAttribute(&x, a, dev), "cuDeviceGetAttribute");
    return x;
  };
  size_t total = 0;
  cu::Check(d.cuDeviceTotalMem(&total, dev), "cuDeviceTotalMem");
  Napi::Object o = Napi::Object::New(env);
  o.Set("index", Napi::Number::New(env, idx));
  o.Set("name", Napi::String::New(env, name));
  o.Set("major", Napi::Number::New(env, attr(cu::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)));
  o.Set("minor", Napi::Number::New(env, attr(cu::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)));
  o.Set("totalMemory", Napi::Number::New(env, static_cast<double>(total)));
  o.Set("multiprocessors", Napi::Number::New(env, attr(cu::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)));
  o.Set("sharedMemoryPerBlockOptin",
        Napi::Number::New(env, attr(cu::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)));
  return o;
}

}  // namespace

void RegisterCuda(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorClasses", Napi::Function::New<Guarded<SetErrorClassesJs>>(env, "setErrorClasses"));
  exports.Set("cudaStatus", Napi::Function::New<Guarded<CudaStatus>>(env, "cudaStatus"));
  exports.Set("deviceProps", Napi::Function::New<Guarded<DeviceProps>>(env, "deviceProps"));
}

}  // namespace flexattn
