// Translation unit nvcc compiles into the embedded fatbin (see CMakeLists.txt).
// Every module NVRTC can build at run time (native/jit: RegisterModule) must
// be included here with the same extern "C" kernel names, so the loader finds
// them in the fatbin first. Add attention kernels below.
#include "util.cuh"
