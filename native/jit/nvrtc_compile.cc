#include "jit/nvrtc_compile.h"

#include <cstdlib>
#include <cstring>

#include "addon/errors.h"
#include "jit/kernel_sources.h"

namespace flexattn::jit {

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

}  // namespace flexattn::jit
