// JS exports of native/runtime: alloc, copies, memset, synchronize,
// memoryStats, emptyCache (randn and castStrided launch JIT-able kernels, so
// they live above runtime and jit: native/addon/tensor_kernels.cc). Everything enqueues on the device's
// stream and returns; waits happen on the device's waiter thread
// (runtime/waiter.h), never on libuv pool threads.
#include <cstring>

#include "addon/addon.h"
#include "addon/errors.h"
#include "runtime/buffer.h"
#include "runtime/device.h"
#include "runtime/waiter.h"

namespace flexattn::rt {

namespace {

int ArgDevice(const Napi::CallbackInfo& info, size_t i) {
  Napi::Value v = info[i];
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!v.IsNumber() || d < 0 || d != static_cast<int>(d)) {
    // Still report the valid range when the driver is there.
    int n = DeviceCount();
    ThrowDeviceError("device", "a CUDA device index in [0, " + std::to_string(n) + ")", DescribeValue(v));
  }
  return static_cast<int>(d);
}

// Host bytes of an ArrayBufferView (TypedArray, Buffer or DataView).
void ViewBytes(const Napi::Value& v, const char* arg, const uint8_t** data, size_t* n) {
  if (v.IsTypedArray()) {
    Napi::TypedArray t = v.As<Napi::TypedArray>();
    *data = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
    *n = t.ByteLength();
    return;
  }
  if (v.IsDataView()) {
    Napi::DataView t = v.As<Napi::DataView>();
    *data = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
    *n = t.ByteLength();
    return;
  }
  ThrowInvalidArgument(arg, "an ArrayBufferView (typed array, Buffer or DataView)", DescribeValue(v));
}

// ---- exports ---------------------------------------------------------------

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  int device = ArgDevice(info, 0);
  int64_t bytes = ArgIndex(info, 1, "bytes");
  return DeviceBuffer::New(info.Env(), device, static_cast<size_t>(bytes));
}

Napi::Value CopyHtoD(const Napi::CallbackInfo& info) {
  DeviceBuffer* dst = DeviceBuffer::FromValue(info[0], "dst");
  int64_t off = ArgIndex(info, 1, "byteOffset");
  const uint8_t* data = nullptr;
  size_t n = 0;
  ViewBytes(info[2], "src", &data, &n);
  dst->CheckRange(off, static_cast<int64_t>(n), "byteOffset", "src.byteLength");
  if (n == 0) return info.Env().Undefined();
  Device& dev = dst->dev();
  // A captured copy would read the staging block on every replay, long after it was reused.
  dev.RequireNotCapturing("copying host data to the GPU (Tensor.fromHost, a CPU tensor captured by a mod, a mask built on the host)",
                          "do it before captureGraph, or between replays into a captured tensor with tensor.copyFrom(...)");
  const cu::Driver& d = cu::Drv();
  PinnedBlock* b = dev.AcquirePinned(n);
  std::memcpy(b->ptr, data, n);
  cu::CUresult r = d.cuMemcpyHtoDAsync(dst->ptr() + off, b->ptr, n, dev.stream);
  dev.ReleasePinned(b, r == cu::CUDA_SUCCESS);
  cu::Check(r, "cuMemcpyHtoDAsync(" + std::to_string(n) + " bytes)");
  return info.Env().Undefined();
}

Napi::Value CopyDtoH(const Napi::CallbackInfo& info) {
  DeviceBuffer* src = DeviceBuffer::FromValue(info[0], "src");
  int64_t off = ArgIndex(info, 1, "byteOffset");
  int64_t n = ArgIndex(info, 2, "bytes");
  src->CheckRange(off, n, "byteOffset", "bytes");
  Device& dev = src->dev();
  dev.RequireNotCapturing("reading a tensor back to the host (toHost, toFloat32, toDevice('cpu'))",
                          "nothing runs while a graph is captured; read the results after await graph.replay()");
  const cu::Driver& d = cu::Drv();
  PinnedBlock* b = dev.AcquirePinned(static_cast<size_t>(n > 0 ? n : 1));
  if (n > 0) {
    cu::CUresult r = d.cuMemcpyDtoHAsync(b->ptr, src->ptr() + off, static_cast<size_t>(n), dev.stream);
    if (r != cu::CUDA_SUCCESS) {
      dev.ReleasePinned(b, false);
      cu::Check(r, "cuMemcpyDtoHAsync(" + std::to_string(n) + " bytes)");
    }
  }
  cu::CUresult r = d.cuEventRecord(b->event, dev.stream);
  if (r != cu::CUDA_SUCCESS) {
    dev.ReleasePinned(b, false);
    cu::Check(r, "cuEventRecord");
  }
  b->recorded = true;
  return QueueWait(info.Env(), dev, b->event, false, b, static_cast<size_t>(n));
}

Napi::Value CopyDtoD(const Napi::CallbackInfo& info) {
  DeviceBuffer* dst = DeviceBuffer::FromValue(info[0], "dst");
  int64_t doff = ArgIndex(info, 1, "dstByteOffset");
  DeviceBuffer* src = DeviceBuffer::FromValue(info[2], "src");
  int64_t soff = ArgIndex(info, 3, "srcByteOffset");
  int64_t n = ArgIndex(info, 4, "bytes");
  dst->CheckRange(doff, n, "dstByteOffset", "bytes");
  src->CheckRange(soff, n, "srcByteOffset", "bytes");
  if (dst->device() != src->device()) {
    ThrowDeviceError("src", "a buffer on device " + std::to_string(dst->device()) + " (same as dst)",
                     "device " + std::to_string(src->device()));
  }
  if (n == 0) return info.Env().Undefined();
  Device& dev = dst->dev();
  dev.MakeCurrent();
  cu::Check(cu::Drv().cuMemcpyDtoDAsync(dst->ptr() + doff, src->ptr() + soff, static_cast<size_t>(n), dev.stream),
            "cuMemcpyDtoDAsync(" + std::to_string(n) + " bytes)");
  return info.Env().Undefined();
}

Napi::Value Memset(const Napi::CallbackInfo& info) {
  DeviceBuffer* dst = DeviceBuffer::FromValue(info[0], "dst");
  int64_t off = ArgIndex(info, 1, "byteOffset");
  int64_t n = ArgIndex(info, 2, "bytes");
  int64_t value = ArgIndex(info, 3, "value");
  if (value > 255) ThrowInvalidArgument("value", "a byte value in [0, 255]", std::to_string(value));
  dst->CheckRange(off, n, "byteOffset", "bytes");
  if (n == 0) return info.Env().Undefined();
  Device& dev = dst->dev();
  dev.MakeCurrent();
  cu::Check(cu::Drv().cuMemsetD8Async(dst->ptr() + off, static_cast<unsigned char>(value), static_cast<size_t>(n),
                                      dev.stream),
            "cuMemsetD8Async(" + std::to_string(n) + " bytes)");
  return info.Env().Undefined();
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  int device = ArgDevice(info, 0);
  Device& dev = GetDevice(device);
  dev.RequireNotCapturing("waiting for the GPU (synchronize, await using)",
                          "nothing runs while a graph is captured; wait after await graph.replay()");
  const cu::Driver& d = cu::Drv();
  cu::CUevent ev = nullptr;
  cu::Check(d.cuEventCreate(&ev, cu::CU_EVENT_DISABLE_TIMING | cu::CU_EVENT_BLOCKING_SYNC), "cuEventCreate");
  cu::CUresult r = d.cuEventRecord(ev, dev.stream);
  if (r != cu::CUDA_SUCCESS) {
    d.cuEventDestroy(ev);
    cu::Check(r, "cuEventRecord");
  }
  return QueueWait(info.Env(), dev, ev, true, nullptr, 0);
}

Napi::Value MemoryStatsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = ArgDevice(info, 0);
  MemoryStats s = GetDevice(device).Stats();
  Napi::Object o = Napi::Object::New(env);
  auto N = [&](uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); };
  o.Set("allocatedBytes", N(s.allocatedBytes));
  o.Set("reservedBytes", N(s.reservedBytes));
  o.Set("peakAllocatedBytes", N(s.peakAllocatedBytes));
  o.Set("numAllocs", N(s.numAllocs));
  o.Set("numFrees", N(s.numFrees));
  o.Set("numCudaMallocs", N(s.numCudaMallocs));
  o.Set("numCacheHits", N(s.numCacheHits));
  o.Set("numOomRetries", N(s.numOomRetries));
  return o;
}

Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  int device = ArgDevice(info, 0);
  GetDevice(device).EmptyCache();
  return info.Env().Undefined();
}

}  // namespace
}  // namespace flexattn::rt

namespace flexattn {
void RegisterRuntime(Napi::Env env, Napi::Object exports) {
  using namespace rt;
  exports.Set("DeviceBuffer", DeviceBuffer::Init(env));
  exports.Set("alloc", Napi::Function::New<Guarded<Alloc>>(env, "alloc"));
  exports.Set("copyHtoD", Napi::Function::New<Guarded<CopyHtoD>>(env, "copyHtoD"));
  exports.Set("copyDtoH", Napi::Function::New<Guarded<CopyDtoH>>(env, "copyDtoH"));
  exports.Set("copyDtoD", Napi::Function::New<Guarded<CopyDtoD>>(env, "copyDtoD"));
  exports.Set("memset", Napi::Function::New<Guarded<Memset>>(env, "memset"));
  exports.Set("synchronize", Napi::Function::New<Guarded<Synchronize>>(env, "synchronize"));
  exports.Set("memoryStats", Napi::Function::New<Guarded<MemoryStatsJs>>(env, "memoryStats"));
  exports.Set("emptyCache", Napi::Function::New<Guarded<EmptyCache>>(env, "emptyCache"));
}
}  // namespace flexattn
