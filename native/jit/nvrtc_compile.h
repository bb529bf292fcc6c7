// NVRTC: compiling one source to CUBIN (or PTX), and choosing the target a
// device gets. Stateless; the caches around it are in jit.cc and disk_cache.cc.
#pragma once
#include <string>
#include <vector>

#include "cuda/cuda_api.h"
#include "runtime/device.h"

namespace flexattn::jit {

// Compiles `source` with the embedded native/kernels headers available by
// name. Returns the CUBIN (or PTX with its terminating NUL when `ptx`).
// Throws CompileError (source + log) or NvrtcUnavailableError.
std::string NvrtcCompile(const std::string& source, const std::string& programName, const std::string& arch,
                         const std::vector<std::string>& options, bool ptx);

// Target for NVRTC: the device's real arch (CUBIN) when NVRTC supports it,
// else PTX for the newest virtual arch it supports that the device can run
// (the driver JIT-compiles it). FLEXATTN_JIT_PTX=1 forces the PTX path.
std::string JitTarget(const cu::Nvrtc& r, const rt::Device& dev, bool* ptx);

}  // namespace flexattn::jit
