// Kernel templates (native/kernels/*.cuh) embedded into the addon at build
// time, and the precompiled fatbin when nvcc was present.
#pragma once
#include <cstddef>

namespace flexattn {

struct KernelSource {
  const char* name;  // file name, e.g. "util.cuh"; usable in #include "..."
  const char* text;
};

extern const KernelSource kKernelSources[];
extern const int kNumKernelSources;

// nullptr / 0 when the addon was built without nvcc.
extern const unsigned char* const kFatbin;
extern const size_t kFatbinSize;

}  // namespace flexattn
