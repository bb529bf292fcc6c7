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

 private:
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
