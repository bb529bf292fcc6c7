// DeviceBuffer: the JS handle of one caching-allocator block.
#pragma once
#include <napi.h>

#include "runtime/device.h"

namespace flexattn::rt {

class DeviceBuffer : public Napi::ObjectWrap<DeviceBuffer> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Creates a JS DeviceBuffer owning a new block (throws typed errors).
  static Napi::Object New(Napi::Env env, int device, size_t bytes);
  // Unwraps `v` (throws InvalidArgumentError / DisposedError naming `arg`).
  static DeviceBuffer* FromValue(const Napi::Value& v, const char* arg);
  static bool IsBuffer(const Napi::Value& v);

  explicit DeviceBuffer(const Napi::CallbackInfo& info);
  ~DeviceBuffer() override;

  int device() const { return device_; }
  Device& dev() const { return *dev_; }
  size_t bytes() const { return bytes_; }
  cu::CUdeviceptr ptr() const { return ptr_; }
  bool disposed() const { return disposed_; }
  void Release();

  // Throws InvalidArgumentError naming `arg` unless [offset, offset+n) fits.
  void CheckRange(int64_t offset, int64_t n, const char* offsetArg, const char* bytesArg) const;

 private:
  Napi::Value JsDevice(const Napi::CallbackInfo& info);
  Napi::Value JsBytes(const Napi::CallbackInfo& info);
  Napi::Value JsPtr(const Napi::CallbackInfo& info);
  Napi::Value JsDisposed(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  Device* dev_ = nullptr;
  int device_ = -1;
  size_t bytes_ = 0;
  size_t blockSize_ = 0;
  cu::CUdeviceptr ptr_ = 0;
  bool disposed_ = true;
};

}  // namespace flexattn::rt
