// Registration entry points of the addon's modules. Each layer exports its
// JS-facing functions onto the addon's exports object.
#pragma once
#include <napi.h>

namespace flexattn {

void RegisterCuda(Napi::Env env, Napi::Object exports);     // native/addon/cuda_js.cc: driver/NVRTC status, device info
void RegisterRuntime(Napi::Env env, Napi::Object exports);  // native/runtime: buffers, copies, allocator
void RegisterGraphs(Napi::Env env, Napi::Object exports);   // native/runtime/graph.cc: CUDA graph capture/replay
void RegisterTensorKernels(Napi::Env env, Napi::Object exports);  // native/addon: randn, castStrided (runtime + jit)
void RegisterJit(Napi::Env env, Napi::Object exports);      // native/jit: NVRTC compile + kernel cache
void RegisterKernels(Napi::Env env, Napi::Object exports);  // native/jit: kernel handles for the attention ops
void RegisterNccl(Napi::Env env, Napi::Object exports);     // native/runtime/nccl_comm.cc: NCCL communicator
void RegisterCpu(Napi::Env env, Napi::Object exports);      // native/cpu: reference attention
void RegisterTensorMaps(Napi::Env env, Napi::Object exports);  // native/addon/tensor_map.cc: TMA descriptors (sm90ws)

}  // namespace flexattn
