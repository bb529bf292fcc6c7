// Per-device runtime state: retained primary context, one non-blocking stream,
// a caching device allocator and a pinned host staging pool. All GPU work of
// a device is ordered on its single stream, so a freed block can be reused by
// the next allocation without waiting.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cuda/cuda_api.h"

namespace flexattn::rt {

struct MemoryStats {
  uint64_t allocatedBytes = 0;  // bytes in blocks handed out (rounded sizes)
  uint64_t reservedBytes = 0;   // bytes obtained from cuMemAlloc (in use + cached)
  uint64_t peakAllocatedBytes = 0;
  uint64_t numAllocs = 0;
  uint64_t numFrees = 0;
  uint64_t numCudaMallocs = 0;
  uint64_t numCacheHits = 0;
  uint64_t numOomRetries = 0;
};

// Pinned host memory used to stage copies. `event` is recorded after the last
// copy that used it; the block is reusable once the event has completed.
struct PinnedBlock {
  void* ptr = nullptr;
  size_t size = 0;
  cu::CUevent event = nullptr;
  bool recorded = false;
};

class Device {
 public:
  int index = 0;
  cu::CUdevice dev = 0;
  cu::CUcontext ctx = nullptr;
  cu::CUstream stream = nullptr;
  int major = 0, minor = 0;
  int multiprocessors = 0;

  // Makes this device's context current on the calling thread (cheap when it
  // already is).
  void MakeCurrent() const;

  // Caching allocator. Returns a device pointer to a block of at least
  // `bytes`; *blockSize receives the rounded size that Free() needs back.
  cu::CUdeviceptr Alloc(size_t bytes, size_t* blockSize);
  void Free(cu::CUdeviceptr ptr, size_t blockSize);
  void EmptyCache();
  MemoryStats Stats();

  // Pinned staging: Acquire never waits on the GPU (it allocates a new block
  // when every cached one is still in flight). Release records the event on
  // the stream after the copies that used the block were enqueued.
  PinnedBlock* AcquirePinned(size_t bytes);
  void ReleasePinned(PinnedBlock* b, bool record);

  // "sm_90a" on Hopper, "sm_XY" otherwise.
  std::string Arch() const;

  // ---- CUDA graph capture (begun and ended in runtime/graph.cc) -------------
  // While a capture is in progress the stream records instead of running, so
  // the allocator changes its rules: every block allocated or freed meanwhile
  // is pinned to the capture (a captured kernel may read it on any replay),
  // and a pinned block that is freed waits, out of the free lists, until every
  // graph pinning it is disposed. Nothing here syncs the stream while capturing
  // (no out-of-memory cache flush: it would invalidate the capture).
  // Capture id in progress on this device's stream, 0 when none (JS thread).
  uint64_t Capturing() const { return captureId_; }
  void SetCapturing(uint64_t id);
  // Pins the block at `ptr` (an allocator block) to graph/capture `id`.
  void Pin(uint64_t id, cu::CUdeviceptr ptr);
  // Drops every pin of `id`; freed blocks no graph pins any more go back to the cache.
  void Unpin(uint64_t id);
  // Throws GraphCaptureError naming `what` and `remedy` while a capture is in progress.
  void RequireNotCapturing(const char* what, const char* remedy) const;

 private:
  void PinLocked(uint64_t id, cu::CUdeviceptr ptr);
  void ReturnLocked(cu::CUdeviceptr ptr, size_t blockSize);
  uint64_t captureId_ = 0;
  std::unordered_map<cu::CUdeviceptr, int> pins_;                       // block -> graphs pinning it
  std::unordered_map<cu::CUdeviceptr, size_t> deferred_;                // freed while pinned -> block size
  std::unordered_map<uint64_t, std::unordered_set<cu::CUdeviceptr>> pinned_;  // graph -> its blocks
  std::mutex mu_;
  std::multimap<size_t, cu::CUdeviceptr> freeSmall_, freeLarge_;
  MemoryStats stats_;
  uint64_t cachedBytes_ = 0;
  std::vector<PinnedBlock*> pinnedFree_;
  size_t pinnedCachedBytes_ = 0;
  void FreeCachedLocked();
};

// Device state for `index`, created on first use (driver loaded, primary
// context retained, stream created). Throws DeviceError naming `argName` for
// an index out of range and CudaUnavailableError without a driver.
Device& GetDevice(int index, const char* argName);
inline Device& GetDevice(int index) { return GetDevice(index, "device"); }
int DeviceCount();

// Launch helper: grid/block dims, dynamic shared memory, kernel params.
void Launch(Device& d, cu::CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
            unsigned bz, unsigned smem, void** params, const char* what);

std::string FormatBytes(uint64_t bytes);

}  // namespace flexattn::rt
