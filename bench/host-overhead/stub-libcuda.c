// A stand-in for libcuda.so.1 with no GPU behind it, so the real addon (N-API entry points, caching
// allocator, pinned staging, ObjectWrap handles) runs its host path on any machine:
//
//   cc -O2 -shared -fPIC -o /tmp/libcuda-stub.so bench/host-overhead/stub-libcuda.c
//   FLEXATTN_LIBCUDA=/tmp/libcuda-stub.so FLEXATTN_NVRTC=/tmp/libcuda-stub.so FLEXATTN_CACHE_DIR=/tmp/flexattn-stub-cache \
//     node bench/host-overhead/serving.mjs . --native
//
// Every call succeeds and does nothing: device memory is address space only (never dereferenced),
// host memory is malloc, events are always complete, launches are dropped. It reports one sm_80 device
// (so the fatbin of a FLEXATTN_ARCHS=80 build has the kernels; mod kernels go through NVRTC once,
// cached on disk) and answers `<kernel>_cfg` with the configs bench/host-overhead/fake-addon.cjs uses.
// What it cannot show is the driver's own time (cuLaunchKernel, cuMemcpyHtoDAsync, cuEventRecord:
// a few microseconds each on a real GPU); the figures it gives are the addon's and the JS's.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

static CUdeviceptr next_ptr = 0x7f0000000000ull;
static int capturing = 0;

struct Func { char name[256]; };
struct Global { int cfg[8]; };

CUresult cuInit(unsigned f) { (void)f; return 0; }
CUresult cuDriverGetVersion(int* v) { *v = 12040; return 0; }
CUresult cuGetErrorName(CUresult r, const char** s) { (void)r; *s = "CUDA_ERROR_STUB"; return 0; }
CUresult cuGetErrorString(CUresult r, const char** s) { (void)r; *s = "stub driver error"; return 0; }
CUresult cuDeviceGetCount(int* n) { *n = 1; return 0; }
CUresult cuDeviceGet(int* d, int i) { *d = i; return 0; }
CUresult cuDeviceGetName(char* s, int n, int d) { (void)d; strncpy(s, "stub sm_80 (no GPU)", n); s[n - 1] = 0; return 0; }
CUresult cuDeviceGetAttribute(int* v, int attr, int d) {
  (void)d;
  switch (attr) {
    case 1: *v = 1024; break;          // max threads per block
    case 16: *v = 108; break;          // multiprocessors
    case 38: *v = 40 << 20; break;     // L2
    case 75: *v = 8; break;            // compute capability major
    case 76: *v = 0; break;            // minor
    case 81: *v = 167936; break;       // smem per multiprocessor
    case 97: *v = 166912; break;       // smem per block (opt-in)
    default: *v = 0;
  }
  return 0;
}
CUresult cuDeviceTotalMem_v2(size_t* b, int d) { (void)d; *b = 80ull << 30; return 0; }
CUresult cuDevicePrimaryCtxRetain(void** c, int d) { (void)d; *c = (void*)0x1; return 0; }
CUresult cuCtxSetCurrent(void* c) { (void)c; return 0; }
CUresult cuCtxGetCurrent(void** c) { *c = (void*)0x1; return 0; }
CUresult cuCtxSynchronize(void) { return 0; }
CUresult cuStreamCreate(void** s, unsigned f) { (void)f; *s = malloc(8); return 0; }
CUresult cuStreamDestroy_v2(void* s) { free(s); return 0; }
CUresult cuStreamSynchronize(void* s) { (void)s; return 0; }
CUresult cuStreamWaitEvent(void* s, void* e, unsigned f) { (void)s; (void)e; (void)f; return 0; }
CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t n) { *p = next_ptr; next_ptr += (n + 4095) & ~4095ull; return 0; }
CUresult cuMemFree_v2(CUdeviceptr p) { (void)p; return 0; }
CUresult cuMemGetInfo_v2(size_t* f, size_t* t) { *f = 70ull << 30; *t = 80ull << 30; return 0; }
CUresult cuMemHostAlloc(void** p, size_t n, unsigned f) { (void)f; *p = malloc(n); return *p ? 0 : 2; }
CUresult cuMemFreeHost(void* p) { free(p); return 0; }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void* s, size_t n, void* st) { (void)d; (void)s; (void)n; (void)st; return 0; }
CUresult cuMemcpyDtoHAsync_v2(void* d, CUdeviceptr s, size_t n, void* st) { (void)d; (void)s; (void)n; (void)st; return 0; }
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, void* st) { (void)d; (void)s; (void)n; (void)st; return 0; }
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, void* st) { (void)d; (void)v; (void)n; (void)st; return 0; }
CUresult cuEventCreate(void** e, unsigned f) { (void)f; *e = malloc(8); return 0; }
CUresult cuEventRecord(void* e, void* s) { (void)e; (void)s; return 0; }
CUresult cuEventQuery(void* e) { (void)e; return 0; }
CUresult cuEventSynchronize(void* e) { (void)e; return 0; }
CUresult cuEventDestroy_v2(void* e) { free(e); return 0; }
CUresult cuEventElapsedTime(float* ms, void* a, void* b) { (void)a; (void)b; *ms = 0; return 0; }
CUresult cuModuleLoadData(void** m, const void* img) { (void)img; *m = malloc(8); return 0; }
CUresult cuModuleGetFunction(void** f, void* m, const char* name) {
  (void)m;
  struct Func* fn = calloc(1, sizeof *fn);
  strncpy(fn->name, name, sizeof fn->name - 1);
  *f = fn;
  return 0;
}
CUresult cuModuleUnload(void* m) { (void)m; return 0; }
CUresult cuFuncGetModule(void** m, void* f) { (void)f; *m = (void*)0x2; return 0; }

// The fake addon's configs (fake-addon.cjs cfgFor): decode kernels 16-row tiles, the forward by head dim.
static int dim_of(const char* name, int dflt) {
  const char* p = strstr(name, "_d");
  while (p) {
    if (p[2] >= '0' && p[2] <= '9') return atoi(p + 2);
    p = strstr(p + 2, "_d");
  }
  return dflt;
}
CUresult cuModuleGetGlobal_v2(CUdeviceptr* ptr, size_t* bytes, void* m, const char* name) {
  (void)m;
  size_t n = strlen(name);
  if (n < 5 || strcmp(name + n - 4, "_cfg") != 0) return 500;  // CUDA_ERROR_NOT_FOUND
  struct Global* g = calloc(1, sizeof *g);
  if (strncmp(name, "flexattn_decode", 15) == 0) {
    int D = dim_of(name, 128);
    int cfg[8] = {128, 48 * 1024, 16, 64, D, D == 64 ? 4 : 3, 656 + 1024, 656};
    memcpy(g->cfg, cfg, sizeof cfg);
  } else {
    int D = dim_of(name, 64);
    int bm = 128, bn = D == 64 ? 128 : 64, st = D == 32 ? 3 : 2;
    if (D == 256) bm = 64, bn = 64;
    if (strstr(name, "_seg")) bm = 64, bn = 64;
    int cfg[8] = {128, 100000, bm, bn, D, st, 248 + 1024, 248};
    memcpy(g->cfg, cfg, sizeof cfg);
  }
  *ptr = (CUdeviceptr)(uintptr_t)g->cfg;
  *bytes = sizeof g->cfg;
  return 0;
}
// Only ReadConfig copies device to host synchronously, from the pointer cuModuleGetGlobal_v2 gave.
CUresult cuMemcpyDtoH_v2(void* d, CUdeviceptr s, size_t n) { memcpy(d, (const void*)(uintptr_t)s, n); return 0; }

CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned smem, void* st, void** params, void** extra) {
  (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)smem; (void)st; (void)params; (void)extra;
  return 0;
}
CUresult cuFuncSetAttribute(void* f, int a, int v) { (void)f; (void)a; (void)v; return 0; }
CUresult cuFuncGetAttribute(int* v, int a, void* f) { (void)f; *v = a == 0 ? 1024 : 0; return 0; }
CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int* n, void* f, int b, size_t s) { (void)f; (void)b; (void)s; *n = 1; return 0; }

CUresult cuStreamBeginCapture_v2(void* s, int mode) { (void)s; (void)mode; capturing = 1; return 0; }
CUresult cuStreamEndCapture(void* s, void** g) { (void)s; capturing = 0; *g = malloc(8); return 0; }
CUresult cuStreamIsCapturing(void* s, int* st) { (void)s; *st = capturing; return 0; }
CUresult cuGraphInstantiateWithFlags(void** e, void* g, unsigned long long f) { (void)g; (void)f; *e = malloc(8); return 0; }
CUresult cuGraphLaunch(void* e, void* s) { (void)e; (void)s; return 0; }
CUresult cuGraphExecDestroy(void* e) { free(e); return 0; }
CUresult cuGraphDestroy(void* g) { free(g); return 0; }
CUresult cuGraphGetNodes(void* g, void** nodes, size_t* n) { (void)g; (void)nodes; *n = 0; return 0; }

// NVRTC in the same library (FLEXATTN_NVRTC=<this file's .so>): every compile succeeds with a placeholder
// image (the stub driver loads anything), so kernels with generated mods load without a compiler.
typedef int nvrtcResult;
static const char kImage[] = "stub-cubin";
const char* nvrtcGetErrorString(nvrtcResult r) { (void)r; return "stub nvrtc"; }
nvrtcResult nvrtcVersion(int* major, int* minor) { *major = 12; *minor = 4; return 0; }
nvrtcResult nvrtcCreateProgram(void** p, const char* src, const char* name, int n, const char* const* h, const char* const* hn) {
  (void)src; (void)name; (void)n; (void)h; (void)hn; *p = malloc(8); return 0;
}
nvrtcResult nvrtcDestroyProgram(void** p) { free(*p); *p = 0; return 0; }
nvrtcResult nvrtcCompileProgram(void* p, int n, const char* const* o) { (void)p; (void)n; (void)o; return 0; }
nvrtcResult nvrtcGetProgramLogSize(void* p, size_t* n) { (void)p; *n = 1; return 0; }
nvrtcResult nvrtcGetProgramLog(void* p, char* s) { (void)p; s[0] = 0; return 0; }
nvrtcResult nvrtcGetCUBINSize(void* p, size_t* n) { (void)p; *n = sizeof kImage; return 0; }
nvrtcResult nvrtcGetCUBIN(void* p, char* s) { (void)p; memcpy(s, kImage, sizeof kImage); return 0; }
nvrtcResult nvrtcGetPTXSize(void* p, size_t* n) { (void)p; *n = sizeof kImage; return 0; }
nvrtcResult nvrtcGetPTX(void* p, char* s) { (void)p; memcpy(s, kImage, sizeof kImage); return 0; }
nvrtcResult nvrtcGetNumSupportedArchs(int* n) { *n = 1; return 0; }
nvrtcResult nvrtcGetSupportedArchs(int* a) { a[0] = 80; return 0; }
