// Lazy libcuda.so.1 loading (never at addon load) and error translation. The
// JS exports built on it (cudaStatus, deviceProps) are in native/addon/cuda_js.cc.
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>

#include "cuda/cuda_api.h"
#include "cuda/dl_symbol.h"
#include "addon/errors.h"

namespace flexattn::cu {

namespace {
std::once_flag g_once;
void* g_lib = nullptr;
Driver g_drv;
bool g_ok = false;
std::string g_error;    // short description of why the driver is unusable
std::string g_details;  // what was tried
std::string g_path;

const char* kDriverHelp =
    "Possible solutions:\n"
    "  - Install the NVIDIA driver (it provides libcuda.so.1) and check that `nvidia-smi` lists your GPU\n"
    "  - In a container, run with the GPU exposed (e.g. `docker run --gpus all`, NVIDIA Container Toolkit)\n"
    "  - If libcuda.so.1 is installed in a non-standard place, add its folder to LD_LIBRARY_PATH\n"
    "  - Use the CPU backend instead: pass { backend: 'cpu' }";

template <typename T>
bool Load(T& fn, const char* name, std::string& missing) {
  return LoadSymbol(g_lib, fn, name, missing);
}

void DoLoad() {
  std::string tried;
  const char* env = std::getenv("FLEXATTN_LIBCUDA");
  std::vector<std::string> candidates;
  if (env && *env) candidates.push_back(env);
  candidates.push_back("libcuda.so.1");
  candidates.push_back("libcuda.so");
  for (const auto& c : candidates) {
    dlerror();
    g_lib = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (g_lib) {
      g_path = c;
      break;
    }
    const char* e = dlerror();
    tried += "  - " + c + ": " + (e ? e : "not found") + "\n";
  }
  if (!g_lib) {
    g_error = "the NVIDIA CUDA driver library libcuda.so.1 could not be loaded";
    g_details = "Tried:\n" + tried;
    return;
  }
  // Resolve the real path for diagnostics.
  {
    Dl_info info;
    void* sym = dlsym(g_lib, "cuInit");
    if (sym && dladdr(sym, &info) && info.dli_fname) g_path = info.dli_fname;
  }
  std::string missing;
  Load(g_drv.cuInit, "cuInit", missing);
  Load(g_drv.cuDriverGetVersion, "cuDriverGetVersion", missing);
  Load(g_drv.cuGetErrorName, "cuGetErrorName", missing);
  Load(g_drv.cuGetErrorString, "cuGetErrorString", missing);
  Load(g_drv.cuDeviceGetCount, "cuDeviceGetCount", missing);
  Load(g_drv.cuDeviceGet, "cuDeviceGet", missing);
  Load(g_drv.cuDeviceGetName, "cuDeviceGetName", missing);
  Load(g_drv.cuDeviceGetAttribute, "cuDeviceGetAttribute", missing);
  Load(g_drv.cuDeviceTotalMem, "cuDeviceTotalMem_v2", missing);
  Load(g_drv.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", missing);
  Load(g_drv.cuCtxSetCurrent, "cuCtxSetCurrent", missing);
  Load(g_drv.cuCtxGetCurrent, "cuCtxGetCurrent", missing);
  Load(g_drv.cuCtxSynchronize, "cuCtxSynchronize", missing);
  Load(g_drv.cuStreamCreate, "cuStreamCreate", missing);
  Load(g_drv.cuStreamDestroy, "cuStreamDestroy_v2", missing);
  Load(g_drv.cuStreamSynchronize, "cuStreamSynchronize", missing);
  Load(g_drv.cuStreamWaitEvent, "cuStreamWaitEvent", missing);
  Load(g_drv.cuMemAlloc, "cuMemAlloc_v2", missing);
  Load(g_drv.cuMemFree, "cuMemFree_v2", missing);
  Load(g_drv.cuMemGetInfo, "cuMemGetInfo_v2", missing);
  Load(g_drv.cuMemHostAlloc, "cuMemHostAlloc", missing);
  Load(g_drv.cuMemFreeHost, "cuMemFreeHost", missing);
  Load(g_drv.cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", missing);
  Load(g_drv.cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", missing);
  Load(g_drv.cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2", missing);
  Load(g_drv.cuMemsetD8Async, "cuMemsetD8Async", missing);
  Load(g_drv.cuEventCreate, "cuEventCreate", missing);
  Load(g_drv.cuEventRecord, "cuEventRecord", missing);
  Load(g_drv.cuEventQuery, "cuEventQuery", missing);
  Load(g_drv.cuEventSynchronize, "cuEventSynchronize", missing);
  Load(g_drv.cuEventDestroy, "cuEventDestroy_v2", missing);
  Load(g_drv.cuEventElapsedTime, "cuEventElapsedTime", missing);
  Load(g_drv.cuModuleLoadData, "cuModuleLoadData", missing);
  Load(g_drv.cuModuleGetFunction, "cuModuleGetFunction", missing);
  Load(g_drv.cuModuleUnload, "cuModuleUnload", missing);
  Load(g_drv.cuLaunchKernel, "cuLaunchKernel", missing);
  Load(g_drv.cuFuncSetAttribute, "cuFuncSetAttribute", missing);
  Load(g_drv.cuFuncGetAttribute, "cuFuncGetAttribute", missing);
  Load(g_drv.cuOccupancyMaxActiveBlocksPerMultiprocessor, "cuOccupancyMaxActiveBlocksPerMultiprocessor",
       missing);
  {
    std::string graphMissing;
    Load(g_drv.cuStreamBeginCapture, "cuStreamBeginCapture_v2", graphMissing);
    Load(g_drv.cuStreamEndCapture, "cuStreamEndCapture", graphMissing);
    Load(g_drv.cuStreamIsCapturing, "cuStreamIsCapturing", graphMissing);
    Load(g_drv.cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags", graphMissing);
    Load(g_drv.cuGraphLaunch, "cuGraphLaunch", graphMissing);
    Load(g_drv.cuGraphExecDestroy, "cuGraphExecDestroy", graphMissing);
    Load(g_drv.cuGraphDestroy, "cuGraphDestroy", graphMissing);
    Load(g_drv.cuGraphGetNodes, "cuGraphGetNodes", graphMissing);
    g_drv.hasGraphs = graphMissing.empty();  // optional: only captureGraph needs them
  }
  if (!missing.empty()) {
    g_error = "the CUDA driver at " + g_path + " is too old (missing " + missing + ")";
    g_details = "Loaded " + g_path + " but these symbols are missing: " + missing;
    return;
  }
  CUresult r = g_drv.cuInit(0);
  if (r != CUDA_SUCCESS) {
    const char* name = nullptr;
    g_drv.cuGetErrorName(r, &name);
    const char* desc = nullptr;
    g_drv.cuGetErrorString(r, &desc);
    g_error = std::string("cuInit failed with ") + (name ? name : "error " + std::to_string(r)) + " (" +
              (desc ? desc : "") + ")";
    g_details = "Loaded " + g_path + "; cuInit(0) returned " + std::to_string(r);
    return;
  }
  g_ok = true;
}
}  // namespace

const Driver* TryDrv(std::string* error) {
  std::call_once(g_once, DoLoad);
  if (g_ok) return &g_drv;
  if (error) *error = g_error + "\n" + g_details + (g_details.empty() || g_details.back() == '\n' ? "" : "\n") + kDriverHelp;
  return nullptr;
}

const Driver& Drv() {
  std::call_once(g_once, DoLoad);
  if (!g_ok) {
    throw NativeError(ErrKind::kCudaUnavailable,
                      "flexattn: CUDA is not available: " + g_error + ".\n" + g_details +
                          (g_details.empty() || g_details.back() == '\n' ? "" : "\n") + kDriverHelp,
                      g_details);
  }
  return g_drv;
}

std::string DriverPath() {
  std::call_once(g_once, DoLoad);
  return g_lib ? g_path : "";
}

void* DriverSym(const char* name) {
  std::call_once(g_once, DoLoad);
  return g_lib ? dlsym(g_lib, name) : nullptr;
}

std::string ErrorName(CUresult r) {
  const char* s = nullptr;
  if (g_ok && g_drv.cuGetErrorName(r, &s) == CUDA_SUCCESS && s) return s;
  return "CUDA_ERROR_" + std::to_string(r);
}

std::string ErrorString(CUresult r) {
  const char* s = nullptr;
  if (g_ok && g_drv.cuGetErrorString(r, &s) == CUDA_SUCCESS && s) return s;
  return "unknown CUDA error";
}

static std::string Remedy(CUresult r) {
  switch (r) {
    case CUDA_ERROR_OUT_OF_MEMORY:
      return "  - Free tensors you no longer need (dispose()) and call emptyCache()\n"
             "  - Reduce the batch size or sequence length\n"
             "  - Check other processes on the GPU with `nvidia-smi`";
    case 700:  // ILLEGAL_ADDRESS
    case 716: case 717: case 718: case 719: case 720:
      return "  - A kernel faulted; the CUDA context is now unusable: restart the process\n"
             "  - Re-run under `compute-sanitizer` to locate the faulting access\n"
             "  - Report it at the flexattn issue tracker with the shapes/dtypes used";
    case CUDA_ERROR_NO_BINARY_FOR_GPU:
    case CUDA_ERROR_INVALID_IMAGE:
      return "  - The kernel image does not match this GPU: set FLEXATTN_DISABLE_FATBIN=1 to JIT-compile with NVRTC\n"
             "  - Rebuild with FLEXATTN_ARCHS including this GPU's compute capability";
    case 222:  // UNSUPPORTED_PTX_VERSION
    case 35:   // INSUFFICIENT_DRIVER
      return "  - Update the NVIDIA driver (the kernels were built with a newer CUDA than the driver supports)";
    default:
      return "  - Check the GPU with `nvidia-smi`\n"
             "  - Re-run with CUDA_LAUNCH_BLOCKING=1 to find the failing call";
  }
}

void Check(CUresult r, const char* call) {
  if (r == CUDA_SUCCESS) return;
  std::string name = ErrorName(r);
  std::string remedy = Remedy(r);
  std::string msg = std::string("flexattn: CUDA call ") + call + " failed: " + name + " (" + ErrorString(r) +
                    ")\nPossible solutions:\n" + remedy;
  throw NativeError(r == CUDA_ERROR_OUT_OF_MEMORY ? ErrKind::kOutOfMemory : ErrKind::kCuda, msg, name, call,
                    remedy);
}

void Check(CUresult r, const std::string& call) { Check(r, call.c_str()); }

}  // namespace flexattn::cu
