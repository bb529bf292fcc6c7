#include "runtime/device.h"

#include <algorithm>
#include <atomic>
#include <memory>

#include "addon/errors.h"

namespace flexattn::rt {

namespace {
constexpr size_t kSmallLimit = 1 << 20;       // <= 1 MiB: small pool
constexpr size_t kSmallRound = 512;           // small pool granularity
constexpr size_t kLargeRound = 2 << 20;       // large pool granularity (2 MiB)
constexpr size_t kPinnedMin = 64 << 10;       // smallest pinned staging block
constexpr size_t kPinnedCacheLimit = 256 << 20;  // pinned bytes kept cached

std::mutex g_devices_mu;
std::vector<std::unique_ptr<Device>>* g_devices = new std::vector<std::unique_ptr<Device>>();  // never freed

size_t RoundUp(size_t x, size_t m) { return (x + m - 1) / m * m; }

thread_local cu::CUcontext t_current = nullptr;
}  // namespace

std::string FormatBytes(uint64_t b) {
  char buf[64];
  if (b >= (1ull << 30)) snprintf(buf, sizeof buf, "%.2f GiB", b / double(1ull << 30));
  else if (b >= (1ull << 20)) snprintf(buf, sizeof buf, "%.2f MiB", b / double(1ull << 20));
  else if (b >= 1024) snprintf(buf, sizeof buf, "%.2f KiB", b / 1024.0);
  else snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(b));
  return std::string(buf) + (b >= 1024 ? " (" + std::to_string(b) + " bytes)" : "");
}

int DeviceCount() {
  const cu::Driver& d = cu::Drv();
  int n = 0;
  cu::Check(d.cuDeviceGetCount(&n), "cuDeviceGetCount");
  return n;
}

// Devices already made, for the lookup every launch and allocation does: a made device stays (never
// freed) and its index stays valid, so neither the device count nor the lock is needed again.
namespace {
constexpr int kFastDevices = 64;
std::atomic<Device*> g_made[kFastDevices];
}  // namespace

Device& GetDevice(int index, const char* argName) {
  if (index >= 0 && index < kFastDevices) {
    if (Device* made = g_made[index].load(std::memory_order_acquire)) {
      made->MakeCurrent();
      return *made;
    }
  }
  int n = DeviceCount();
  if (index < 0 || index >= n) {
    ThrowDeviceError(argName, "a CUDA device index in [0, " + std::to_string(n) + ")", std::to_string(index));
  }
  std::lock_guard<std::mutex> lock(g_devices_mu);
  if (g_devices->size() < static_cast<size_t>(n)) g_devices->resize(n);
  auto& slot = (*g_devices)[index];
  if (!slot) {
    const cu::Driver& d = cu::Drv();
    auto dev = std::make_unique<Device>();
    dev->index = index;
    cu::Check(d.cuDeviceGet(&dev->dev, index), "cuDeviceGet");
    cu::Check(d.cuDevicePrimaryCtxRetain(&dev->ctx, dev->dev), "cuDevicePrimaryCtxRetain");
    cu::Check(d.cuCtxSetCurrent(dev->ctx), "cuCtxSetCurrent");
    t_current = dev->ctx;
    cu::Check(d.cuStreamCreate(&dev->stream, cu::CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    cu::Check(d.cuDeviceGetAttribute(&dev->major, cu::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev->dev),
              "cuDeviceGetAttribute");
    cu::Check(d.cuDeviceGetAttribute(&dev->minor, cu::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev->dev),
              "cuDeviceGetAttribute");
    cu::Check(d.cuDeviceGetAttribute(&dev->multiprocessors, cu::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev->dev),
              "cuDeviceGetAttribute");
    slot = std::move(dev);
    if (index < kFastDevices) g_made[index].store(slot.get(), std::memory_order_release);
  }
  slot->MakeCurrent();
  return *slot;
}

void Device::MakeCurrent() const {
  if (t_current == ctx) return;
  cu::Check(cu::Drv().cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
  t_current = ctx;
}

std::string Device::Arch() const {
  std::string a = "sm_" + std::to_string(major) + std::to_string(minor);
  if (major == 9 && minor == 0) a += "a";
  return a;
}

// ---- caching allocator -----------------------------------------------------

cu::CUdeviceptr Device::Alloc(size_t bytes, size_t* blockSize) {
  const cu::Driver& d = cu::Drv();
  MakeCurrent();
  bool small = bytes <= kSmallLimit;
  size_t size = small ? RoundUp(std::max<size_t>(bytes, 1), kSmallRound) : RoundUp(bytes, kLargeRound);
  if (size < bytes) ThrowInvalidArgument("bytes", "a size that fits in memory", std::to_string(bytes));
  std::lock_guard<std::mutex> lock(mu_);
  auto& pool = small ? freeSmall_ : freeLarge_;
  // Best fit, but never hand out a block more than twice (small) or
  // size + 16 MiB / 1.25x (large) the rounded request.
  auto it = pool.lower_bound(size);
  size_t limit = small ? size * 2 : std::max(size + (16u << 20), size + size / 4);
  if (it != pool.end() && it->first <= limit) {
    cu::CUdeviceptr p = it->second;
    *blockSize = it->first;
    cachedBytes_ -= it->first;
    pool.erase(it);
    stats_.numCacheHits++;
    stats_.numAllocs++;
    stats_.allocatedBytes += *blockSize;
    stats_.peakAllocatedBytes = std::max(stats_.peakAllocatedBytes, stats_.allocatedBytes);
    if (captureId_) PinLocked(captureId_, p);
    return p;
  }
  cu::CUdeviceptr p = 0;
  cu::CUresult r = d.cuMemAlloc(&p, size);
  uint64_t freedCache = 0;
  // Flushing the cache syncs the stream, which a capture cannot record.
  if (r == cu::CUDA_ERROR_OUT_OF_MEMORY && !captureId_) {
    freedCache = cachedBytes_;
    stats_.numOomRetries++;
    FreeCachedLocked();
    r = d.cuMemAlloc(&p, size);
  }
  if (r == cu::CUDA_ERROR_OUT_OF_MEMORY) {
    size_t freeMem = 0, total = 0;
    d.cuMemGetInfo(&freeMem, &total);
    std::string remedy =
        "  - Free tensors you no longer need (dispose()) before allocating\n"
        "  - Reduce the batch size or sequence length\n"
        "  - Check other processes using the GPU with `nvidia-smi`";
    if (captureId_) {
      remedy = "  - Allocate what the captured step needs before captureGraph, or free cached memory with emptyCache() "
               "before it (the cache cannot be flushed while a graph is captured)\n" + remedy;
    }
    std::string how = captureId_ ? ". A CUDA graph is being captured, so the allocator did not flush its cache ("
                                 : ". The allocator freed its cache (";
    std::string msg = "flexattn: CUDA out of memory on device " + std::to_string(index) + ": tried to allocate " +
                      FormatBytes(bytes) + how + FormatBytes(captureId_ ? cachedBytes_ : freedCache) +
                      (captureId_ ? ")" : ") and retried") + "; the device has " + FormatBytes(freeMem) + " free of " + FormatBytes(total) +
                      ", flexattn holds " + FormatBytes(stats_.allocatedBytes) + " in live buffers.\n" +
                      "Possible solutions:\n" + remedy;
    throw NativeError(ErrKind::kOutOfMemory, msg, cu::ErrorName(r), "cuMemAlloc(" + std::to_string(size) + ")",
                      remedy);
  }
  cu::Check(r, "cuMemAlloc(" + std::to_string(size) + " bytes)");
  *blockSize = size;
  stats_.numCudaMallocs++;
  stats_.numAllocs++;
  stats_.reservedBytes += size;
  stats_.allocatedBytes += size;
  stats_.peakAllocatedBytes = std::max(stats_.peakAllocatedBytes, stats_.allocatedBytes);
  if (captureId_) PinLocked(captureId_, p);
  return p;
}

void Device::Free(cu::CUdeviceptr ptr, size_t blockSize) {
  // No CUDA call: the block goes back to the cache. Later work that reuses it
  // is ordered after earlier work on the same stream. A captured kernel may
  // read the block on every replay, so one freed during a capture, or pinned
  // by a live graph, waits until the graphs are disposed (Unpin).
  std::lock_guard<std::mutex> lock(mu_);
  if (captureId_) PinLocked(captureId_, ptr);
  if (!pins_.empty() && pins_.count(ptr)) {
    deferred_[ptr] = blockSize;
    return;
  }
  ReturnLocked(ptr, blockSize);
}

void Device::ReturnLocked(cu::CUdeviceptr ptr, size_t blockSize) {
  (blockSize <= kSmallLimit ? freeSmall_ : freeLarge_).emplace(blockSize, ptr);
  cachedBytes_ += blockSize;
  stats_.numFrees++;
  stats_.allocatedBytes -= blockSize;
}

void Device::SetCapturing(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  captureId_ = id;
}

void Device::Pin(uint64_t id, cu::CUdeviceptr ptr) {
  std::lock_guard<std::mutex> lock(mu_);
  PinLocked(id, ptr);
}

void Device::PinLocked(uint64_t id, cu::CUdeviceptr ptr) {
  if (pinned_[id].insert(ptr).second) pins_[ptr]++;
}

void Device::Unpin(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pinned_.find(id);
  if (it == pinned_.end()) return;
  for (cu::CUdeviceptr p : it->second) {
    auto pin = pins_.find(p);
    if (pin == pins_.end() || --pin->second > 0) continue;
    pins_.erase(pin);
    auto d = deferred_.find(p);
    if (d == deferred_.end()) continue;
    // Stream-ordered like any free: work enqueued later (a reuse) runs after the last replay.
    ReturnLocked(p, d->second);
    deferred_.erase(d);
  }
  pinned_.erase(it);
}

void Device::RequireNotCapturing(const char* what, const char* remedy) const {
  if (!captureId_) return;
  throw NativeError(ErrKind::kGraphCapture,
                    std::string("flexattn: ") + what + " is not allowed while a CUDA graph is being captured on device " +
                        std::to_string(index) + ": " + remedy);
}

void Device::FreeCachedLocked() {
  const cu::Driver& d = cu::Drv();
  MakeCurrent();
  if (freeSmall_.empty() && freeLarge_.empty()) return;
  // A cached block may still be used by work enqueued before its buffer was
  // disposed: drain the stream before handing memory back to the driver.
  d.cuStreamSynchronize(stream);
  for (auto* pool : {&freeSmall_, &freeLarge_}) {
    for (auto& kv : *pool) {
      d.cuMemFree(kv.second);
      stats_.reservedBytes -= kv.first;
    }
    pool->clear();
  }
  cachedBytes_ = 0;
}

void Device::EmptyCache() {
  RequireNotCapturing("emptyCache()", "it waits for the GPU; call it before captureGraph or after it returns");
  std::lock_guard<std::mutex> lock(mu_);
  FreeCachedLocked();
  // Also release pinned staging blocks whose copies have completed.
  const cu::Driver& d = cu::Drv();
  std::vector<PinnedBlock*> keep;
  for (PinnedBlock* b : pinnedFree_) {
    if (b->recorded && d.cuEventQuery(b->event) == cu::CUDA_ERROR_NOT_READY) {
      keep.push_back(b);
      continue;
    }
    d.cuEventDestroy(b->event);
    d.cuMemFreeHost(b->ptr);
    pinnedCachedBytes_ -= b->size;
    delete b;
  }
  pinnedFree_.swap(keep);
}

MemoryStats Device::Stats() {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

// ---- pinned staging pool ---------------------------------------------------

PinnedBlock* Device::AcquirePinned(size_t bytes) {
  const cu::Driver& d = cu::Drv();
  MakeCurrent();
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Smallest completed block that fits.
    size_t best = SIZE_MAX;
    size_t bestIdx = SIZE_MAX;
    for (size_t i = 0; i < pinnedFree_.size(); i++) {
      PinnedBlock* b = pinnedFree_[i];
      if (b->size < bytes || b->size >= best) continue;
      if (b->recorded) {
        cu::CUresult q = d.cuEventQuery(b->event);
        if (q == cu::CUDA_ERROR_NOT_READY) continue;
        if (q != cu::CUDA_SUCCESS) cu::Check(q, "cuEventQuery");
      }
      best = b->size;
      bestIdx = i;
    }
    if (bestIdx != SIZE_MAX) {
      PinnedBlock* b = pinnedFree_[bestIdx];
      pinnedFree_.erase(pinnedFree_.begin() + bestIdx);
      pinnedCachedBytes_ -= b->size;
      b->recorded = false;
      return b;
    }
  }
  // Powers of two up to 4 MiB (reuse across similar sizes), then 2 MiB
  // multiples (no 2x waste on large copies).
  size_t size = kPinnedMin;
  while (size < bytes && size < (4u << 20)) size *= 2;
  if (size < bytes) size = RoundUp(bytes, 2u << 20);
  auto b = std::make_unique<PinnedBlock>();
  b->size = size;
  cu::CUresult r = d.cuMemHostAlloc(&b->ptr, size, cu::CU_MEMHOSTALLOC_PORTABLE);
  if (r != cu::CUDA_SUCCESS) cu::Check(r, "cuMemHostAlloc(" + std::to_string(size) + " bytes, pinned staging)");
  r = d.cuEventCreate(&b->event, cu::CU_EVENT_DISABLE_TIMING | cu::CU_EVENT_BLOCKING_SYNC);
  if (r != cu::CUDA_SUCCESS) {
    d.cuMemFreeHost(b->ptr);
    cu::Check(r, "cuEventCreate");
  }
  return b.release();
}

void Device::ReleasePinned(PinnedBlock* b, bool record) {
  const cu::Driver& d = cu::Drv();
  if (record) {
    MakeCurrent();
    cu::Check(d.cuEventRecord(b->event, stream), "cuEventRecord");
    b->recorded = true;
  }
  std::lock_guard<std::mutex> lock(mu_);
  pinnedFree_.push_back(b);
  pinnedCachedBytes_ += b->size;
  // Trim: drop completed blocks (largest first) while over the cache limit.
  while (pinnedCachedBytes_ > kPinnedCacheLimit) {
    size_t victim = SIZE_MAX;
    for (size_t i = 0; i < pinnedFree_.size(); i++) {
      PinnedBlock* c = pinnedFree_[i];
      if (c->recorded && d.cuEventQuery(c->event) != cu::CUDA_SUCCESS) continue;
      if (victim == SIZE_MAX || c->size > pinnedFree_[victim]->size) victim = i;
    }
    if (victim == SIZE_MAX) break;
    PinnedBlock* c = pinnedFree_[victim];
    pinnedFree_.erase(pinnedFree_.begin() + victim);
    pinnedCachedBytes_ -= c->size;
    d.cuEventDestroy(c->event);
    d.cuMemFreeHost(c->ptr);
    delete c;
  }
}

void Launch(Device& dev, cu::CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
            unsigned bz, unsigned smem, void** params, const char* what) {
  dev.MakeCurrent();
  cu::CUresult r = cu::Drv().cuLaunchKernel(f, gx, gy, gz, bx, by, bz, smem, dev.stream, params, nullptr);
  if (r != cu::CUDA_SUCCESS) cu::Check(r, std::string("cuLaunchKernel(") + what + ")");
}

}  // namespace flexattn::rt
