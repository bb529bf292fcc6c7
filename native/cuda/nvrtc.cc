// Lazy NVRTC loading. Search order: $FLEXATTN_NVRTC (full path),
// libnvrtc.so.13, libnvrtc.so.12 (loader path), $CUDA_HOME/lib64,
// /usr/local/cuda/lib64, then Python wheels (nvidia/cuda_nvrtc/lib,
// nvidia/cu13/lib) under the usual site-packages folders.
#include <dlfcn.h>
#include <glob.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "cuda/cuda_api.h"
#include "cuda/dl_symbol.h"
#include "addon/errors.h"

namespace flexattn::cu {

namespace {
std::once_flag g_once;
void* g_lib = nullptr;
Nvrtc g_rtc;
bool g_ok = false;
std::string g_error;
std::string g_path;

std::vector<std::string> Glob(const std::string& pattern) {
  std::vector<std::string> out;
  glob_t g;
  if (glob(pattern.c_str(), 0, nullptr, &g) == 0) {
    // Prefer the highest version: glob sorts ascending, so walk backwards.
    for (size_t i = g.gl_pathc; i-- > 0;) out.push_back(g.gl_pathv[i]);
  }
  globfree(&g);
  return out;
}

std::string g_nomatch;  // glob patterns that matched nothing (for the error message)

std::vector<std::string> Candidates() {
  std::vector<std::string> c;
  const char* env = std::getenv("FLEXATTN_NVRTC");
  if (env && *env) c.push_back(env);
  c.push_back("libnvrtc.so.13");
  c.push_back("libnvrtc.so.12");
  auto add_dir = [&](const std::string& dir) {
    for (const auto& p : Glob(dir + "/libnvrtc.so.*[0-9]")) c.push_back(p);
    c.push_back(dir + "/libnvrtc.so");
  };
  const char* cuda_home = std::getenv("CUDA_HOME");
  if (cuda_home && *cuda_home) add_dir(std::string(cuda_home) + "/lib64");
  const char* cuda_path = std::getenv("CUDA_PATH");
  if (cuda_path && *cuda_path) add_dir(std::string(cuda_path) + "/lib64");
  add_dir("/usr/local/cuda/lib64");
  std::vector<std::string> roots = {"/usr/lib/python3*/site-packages", "/usr/lib/python3*/dist-packages",
                                    "/usr/local/lib/python3*/site-packages",
                                    "/usr/local/lib/python3*/dist-packages", "/opt/conda/lib/python3*/site-packages"};
  const char* home = std::getenv("HOME");
  if (home && *home) roots.push_back(std::string(home) + "/.local/lib/python3*/site-packages");
  const char* venv = std::getenv("VIRTUAL_ENV");
  if (venv && *venv) roots.insert(roots.begin(), std::string(venv) + "/lib/python3*/site-packages");
  const char* conda = std::getenv("CONDA_PREFIX");
  if (conda && *conda) roots.insert(roots.begin(), std::string(conda) + "/lib/python3*/site-packages");
  for (const auto& r : roots) {
    for (const char* sub : {"/nvidia/cuda_nvrtc/lib/libnvrtc.so*", "/nvidia/cu13/lib/libnvrtc.so*"}) {
      auto found = Glob(r + sub);
      if (found.empty()) g_nomatch += "  - " + r + sub + ": no match\n";
      for (const auto& p : found) {
        if (p.find("builtins") == std::string::npos && p.find("alt") == std::string::npos) c.push_back(p);
      }
    }
  }
  return c;
}

template <typename T>
bool Load(T& fn, const char* name, std::string& missing) {
  return LoadSymbol(g_lib, fn, name, missing);
}

void DoLoad() {
  std::string tried;
  for (const auto& c : Candidates()) {
    // libnvrtc dlopens libnvrtc-builtins.so.X.Y by bare soname at compile
    // time; pip wheels do not put it on the loader path, so preload the one
    // beside the candidate (an already loaded soname satisfies that dlopen).
    size_t slash = c.rfind('/');
    void* builtins = nullptr;
    if (slash != std::string::npos) {
      for (const auto& b : Glob(c.substr(0, slash) + "/libnvrtc-builtins.so.*")) {
        if (b.find(".alt.") != std::string::npos) continue;
        builtins = dlopen(b.c_str(), RTLD_NOW | RTLD_GLOBAL);
        if (builtins) break;
      }
    }
    dlerror();
    void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h && builtins) dlclose(builtins);
    if (!h) {
      const char* e = dlerror();
      tried += "  - " + c + ": " + (e ? e : "not found") + "\n";
      continue;
    }
    g_lib = h;
    g_path = c;
    std::string missing;
    Load(g_rtc.nvrtcGetErrorString, "nvrtcGetErrorString", missing);
    Load(g_rtc.nvrtcVersion, "nvrtcVersion", missing);
    Load(g_rtc.nvrtcCreateProgram, "nvrtcCreateProgram", missing);
    Load(g_rtc.nvrtcDestroyProgram, "nvrtcDestroyProgram", missing);
    Load(g_rtc.nvrtcCompileProgram, "nvrtcCompileProgram", missing);
    Load(g_rtc.nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize", missing);
    Load(g_rtc.nvrtcGetProgramLog, "nvrtcGetProgramLog", missing);
    Load(g_rtc.nvrtcGetCUBINSize, "nvrtcGetCUBINSize", missing);
    Load(g_rtc.nvrtcGetCUBIN, "nvrtcGetCUBIN", missing);
    Load(g_rtc.nvrtcGetPTXSize, "nvrtcGetPTXSize", missing);
    Load(g_rtc.nvrtcGetPTX, "nvrtcGetPTX", missing);
    if (!missing.empty()) {
      tried += "  - " + c + ": loaded but missing " + missing + " (NVRTC older than 11.1?)\n";
      dlclose(h);
      g_lib = nullptr;
      continue;
    }
    g_rtc.nvrtcGetNumSupportedArchs =
        reinterpret_cast<decltype(g_rtc.nvrtcGetNumSupportedArchs)>(dlsym(h, "nvrtcGetNumSupportedArchs"));
    g_rtc.nvrtcGetSupportedArchs =
        reinterpret_cast<decltype(g_rtc.nvrtcGetSupportedArchs)>(dlsym(h, "nvrtcGetSupportedArchs"));
    g_rtc.nvrtcVersion(&g_rtc.major, &g_rtc.minor);
    {
      Dl_info info;
      if (dladdr(reinterpret_cast<void*>(g_rtc.nvrtcVersion), &info) && info.dli_fname) g_path = info.dli_fname;
    }
    g_ok = true;
    return;
  }
  g_error = "flexattn: NVRTC (libnvrtc.so) could not be loaded; it is needed to compile kernels at run time.\n"
            "Tried:\n" + tried + g_nomatch +
            "Possible solutions:\n"
            "  - Install it with pip: `pip install nvidia-cuda-nvrtc` (CUDA 13: `pip install nvidia-cuda-nvrtc-cu13`)\n"
            "  - Install the CUDA toolkit (it ships lib64/libnvrtc.so) and set CUDA_HOME\n"
            "  - Point flexattn at it: FLEXATTN_NVRTC=/path/to/libnvrtc.so.13";
}
}  // namespace

const Nvrtc* TryRtc(std::string* error) {
  std::call_once(g_once, DoLoad);
  if (g_ok) return &g_rtc;
  if (error) *error = g_error;
  return nullptr;
}

const Nvrtc& Rtc() {
  std::call_once(g_once, DoLoad);
  if (!g_ok) throw NativeError(ErrKind::kNvrtcUnavailable, g_error);
  return g_rtc;
}

std::string NvrtcPath() {
  std::call_once(g_once, DoLoad);
  return g_ok ? g_path : "";
}

}  // namespace flexattn::cu
