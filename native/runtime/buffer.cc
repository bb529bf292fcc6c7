#include "runtime/buffer.h"

#include <map>
#include <mutex>

#include "addon/errors.h"

namespace flexattn::rt {

namespace {
std::mutex g_mu;
std::map<napi_env, Napi::FunctionReference>* g_ctors = new std::map<napi_env, Napi::FunctionReference>();

struct Pending {
  Device* dev;
  int device;
  size_t bytes;
  size_t blockSize;
  cu::CUdeviceptr ptr;
};

// The block New() hands to the constructor it calls (JS thread only). A napi External per
// allocation would be one more weak handle for the GC to process; `new DeviceBuffer()` from
// JS finds none and throws.
thread_local Pending* t_pending = nullptr;

Napi::Function Ctor(Napi::Env env) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_ctors->find(env);
  if (it == g_ctors->end()) return Napi::Function();
  return it->second.Value();
}
}  // namespace

Napi::Function DeviceBuffer::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "DeviceBuffer",
                                 {
                                     InstanceAccessor<&DeviceBuffer::JsDevice>("device"),
                                     InstanceAccessor<&DeviceBuffer::JsBytes>("bytes"),
                                     InstanceAccessor<&DeviceBuffer::JsPtr>("ptr"),
                                     InstanceAccessor<&DeviceBuffer::JsDisposed>("disposed"),
                                     InstanceMethod<&DeviceBuffer::Dispose>("dispose"),
                                 });
  {
    std::lock_guard<std::mutex> lock(g_mu);
    (*g_ctors)[env] = Napi::Persistent(f);
  }
  napi_env raw = env;
  env.AddCleanupHook([raw] {
    std::lock_guard<std::mutex> l(g_mu);
    g_ctors->erase(raw);
  });
  return f;
}

DeviceBuffer::DeviceBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceBuffer>(info) {
  Pending* p = t_pending;
  t_pending = nullptr;
  if (!p) {
    throw ToJsError(info.Env(), NativeError(ErrKind::kInternal, "flexattn: DeviceBuffer cannot be constructed from JS; use alloc()"));
  }
  dev_ = p->dev;
  device_ = p->device;
  bytes_ = p->bytes;
  blockSize_ = p->blockSize;
  ptr_ = p->ptr;
  disposed_ = false;
}

DeviceBuffer::~DeviceBuffer() { Release(); }

void DeviceBuffer::Release() {
  if (disposed_) return;
  disposed_ = true;
  try {
    dev_->Free(ptr_, blockSize_);
  } catch (...) {
    // Never throw from a finalizer.
  }
  ptr_ = 0;
}

Napi::Object DeviceBuffer::New(Napi::Env env, int device, size_t bytes) {
  Device& dev = rt::GetDevice(device);
  Pending p{&dev, device, bytes, 0, 0};
  p.ptr = dev.Alloc(bytes, &p.blockSize);
  Napi::Function ctor = Ctor(env);
  try {
    t_pending = &p;
    return ctor.New({});
  } catch (...) {
    // Freed here only when no DeviceBuffer took the block (one that did frees it itself).
    bool taken = t_pending != &p;
    t_pending = nullptr;
    if (!taken) dev.Free(p.ptr, p.blockSize);
    throw;
  }
}

bool DeviceBuffer::IsBuffer(const Napi::Value& v) {
  if (!v.IsObject()) return false;
  Napi::Function ctor = Ctor(v.Env());
  return !ctor.IsEmpty() && v.As<Napi::Object>().InstanceOf(ctor);
}

DeviceBuffer* DeviceBuffer::FromValue(const Napi::Value& v, const char* arg) {
  if (!IsBuffer(v)) ThrowInvalidArgument(arg, "a device buffer (from alloc())", DescribeValue(v));
  DeviceBuffer* b = Napi::ObjectWrap<DeviceBuffer>::Unwrap(v.As<Napi::Object>());
  if (b->disposed_) throw NativeError(ErrKind::kDisposed, std::string(arg) + ": tensor was used after dispose()", arg);
  return b;
}

void DeviceBuffer::CheckRange(int64_t offset, int64_t n, const char* offsetArg, const char* bytesArg) const {
  int64_t size = static_cast<int64_t>(bytes_);
  if (offset > size) {
    ThrowInvalidArgument(offsetArg, "an offset within the buffer (<= " + std::to_string(size) + ")",
                         std::to_string(offset));
  }
  if (n > size - offset) {
    ThrowInvalidArgument(bytesArg,
                         "a range that fits in the buffer (offset " + std::to_string(offset) + " + " +
                             std::to_string(n) + " > " + std::to_string(size) + " bytes)",
                         std::to_string(n));
  }
}

Napi::Value DeviceBuffer::JsDevice(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), device_); }
Napi::Value DeviceBuffer::JsBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(bytes_));
}
Napi::Value DeviceBuffer::JsPtr(const Napi::CallbackInfo& info) {
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(ptr_));
}
Napi::Value DeviceBuffer::JsDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), disposed_);
}
Napi::Value DeviceBuffer::Dispose(const Napi::CallbackInfo& info) {
  Release();
  return info.Env().Undefined();
}

}  // namespace flexattn::rt
