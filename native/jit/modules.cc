// Named kernel modules: a kernel comes from the precompiled fatbin when it
// loads on the device and holds it, else from NVRTC compiling the module's
// registered source (jit/compile.cc); functions are cached per device.
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "addon/errors.h"
#include "jit/jit.h"
#include "jit/jit_lock.h"
#include "jit/kernel_sources.h"

namespace flexattn::jit {

namespace {

struct ModuleSpec {
  std::string source;
  std::vector<std::string> options;
};

std::map<std::string, ModuleSpec>& Modules() {
  static auto* m = new std::map<std::string, ModuleSpec>{
      {"util", {"#include \"util.cuh\"\n", {"--use_fast_math"}}},
  };
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

bool DisableFatbin() {
  const char* e = std::getenv("FLEXATTN_DISABLE_FATBIN");
  return e && *e && std::strcmp(e, "0") != 0;
}

}  // namespace

void RegisterModule(const std::string& name, const std::string& source, const std::vector<std::string>& options) {
  std::lock_guard<std::recursive_mutex> lock(JitMutex());
  Modules()[name] = ModuleSpec{source, options};
}

cu::CUfunction GetKernel(rt::Device& dev, const std::string& module, const char* kernel, std::string* origin) {
  std::lock_guard<std::recursive_mutex> lock(JitMutex());
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

}  // namespace flexattn::jit
