// Node-API module entry. Loading the addon never touches CUDA: the driver
// and NVRTC are dlopen'ed on first GPU use (native/cuda/driver.cc), NCCL on
// first communicator use (native/cuda/nccl.cc).
#include "addon/addon.h"

namespace flexattn {

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  RegisterCuda(env, exports);
  RegisterRuntime(env, exports);
  RegisterGraphs(env, exports);
  RegisterTensorKernels(env, exports);
  RegisterJit(env, exports);
  RegisterKernels(env, exports);
  RegisterNccl(env, exports);
  RegisterCpu(env, exports);
  RegisterTensorMaps(env, exports);
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  return exports;
}

}  // namespace flexattn

// NODE_API_MODULE pastes its second argument into an identifier, so it must
// be unqualified.
static Napi::Object FlexattnInit(Napi::Env env, Napi::Object exports) { return flexattn::Init(env, exports); }
NODE_API_MODULE(flexattn, FlexattnInit)
