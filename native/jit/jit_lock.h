// The one lock of the JIT's maps (compile memory cache, module registry,
// kernel cache), shared by jit/compile.cc and jit/modules.cc. Recursive:
// GetKernel holds it while it calls Compile. NVRTC runs outside it.
#pragma once
#include <mutex>

namespace flexattn::jit {

inline std::recursive_mutex& JitMutex() {
  static std::recursive_mutex mu;
  return mu;
}

}  // namespace flexattn::jit
