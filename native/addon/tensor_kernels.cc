// JS exports that launch the util.cuh tensor kernels: randn, castStrided.
// They need both a device buffer (native/runtime) and a kernel from the
// fatbin or NVRTC (native/jit), so they sit in the addon layer above both:
// runtime then does not include jit (jit builds on runtime's Device).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "addon/addon.h"
#include "addon/errors.h"
#include "jit/jit.h"
#include "kernels/generated/cast_params.cuh"  // the cast kernel's parameter block, shared with util.cuh
#include "runtime/buffer.h"
#include "runtime/device.h"

namespace flexattn::rt {

namespace {

int ElemSize(int dtype) {
  switch (dtype) {
    case 0: case 1: return 2;
    case 2: case 3: return 4;
    case 4: return 1;
    default: return 0;
  }
}

int ArgDtype(const Napi::CallbackInfo& info, size_t i, const char* name, bool floatOnly) {
  Napi::Value v = info[i];
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  int max = floatOnly ? 2 : 4;
  if (!v.IsNumber() || d < 0 || d > max || d != static_cast<int>(d)) {
    ThrowInvalidArgument(name,
                         floatOnly ? "a floating dtype code (bf16=0, f16=1, f32=2)"
                                   : "a dtype code (bf16=0, f16=1, f32=2, i32=3, bool=4)",
                         DescribeValue(v));
  }
  return static_cast<int>(d);
}

unsigned GridFor(Device& dev, uint64_t work, unsigned threads) {
  uint64_t blocks = (work + threads - 1) / threads;
  uint64_t cap = static_cast<uint64_t>(dev.multiprocessors > 0 ? dev.multiprocessors : 80) * 16;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks);
}

Napi::Value Randn(const Napi::CallbackInfo& info) {
  DeviceBuffer* dst = DeviceBuffer::FromValue(info[0], "dst");
  int64_t offset = ArgIndex(info, 1, "offset");
  int64_t numel = ArgIndex(info, 2, "numel");
  int dtype = ArgDtype(info, 3, "dtype", true);
  uint64_t seed = ArgBigUint(info, 4, "seed");
  uint64_t subseq = ArgBigUint(info, 5, "subsequence");
  int es = ElemSize(dtype);
  if (offset > static_cast<int64_t>(dst->bytes() / es) ||
      numel > static_cast<int64_t>(dst->bytes() / es) - offset) {
    ThrowInvalidArgument("numel",
                         "offset + numel <= " + std::to_string(dst->bytes() / es) + " elements of the buffer",
                         std::to_string(offset) + " + " + std::to_string(numel));
  }
  if (numel == 0) return info.Env().Undefined();
  Device& dev = dst->dev();
  cu::CUfunction f = jit::GetKernel(dev, "util", "flexattn_randn");
  unsigned long long ptr = dst->ptr() + static_cast<uint64_t>(offset) * es;
  long long n = numel;
  int dt = dtype;
  unsigned long long s = seed, sub = subseq;
  void* params[] = {&ptr, &n, &dt, &s, &sub};
  uint64_t groups = (static_cast<uint64_t>(numel) + 3) / 4;
  Launch(dev, f, GridFor(dev, groups, 256), 1, 1, 256, 1, 1, 0, params, "flexattn_randn");
  return info.Env().Undefined();
}

std::vector<int64_t> ArgInt64Array(const Napi::Object& o, const char* key, const char* name, bool allowNegative) {
  Napi::Value v = o.Get(key);
  if (!v.IsArray()) ThrowInvalidArgument(name, "an array of integers", DescribeValue(v));
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int64_t> out;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : 0.5;
    if (!e.IsNumber() || d != static_cast<double>(static_cast<int64_t>(d)) || (!allowNegative && d < 0) ||
        std::abs(d) > 9007199254740992.0) {
      ThrowInvalidArgument(std::string(name) + "[" + std::to_string(i) + "]",
                           allowNegative ? "an integer" : "a non-negative integer", DescribeValue(e));
    }
    out.push_back(static_cast<int64_t>(d));
  }
  return out;
}

Napi::Value CastStrided(const Napi::CallbackInfo& info) {
  if (!info[0].IsObject()) ThrowInvalidArgument("src", "a strided operand {buffer, offset, dtype, shape, strides}",
                                                DescribeValue(info[0]));
  Napi::Object so = info[0].As<Napi::Object>();
  DeviceBuffer* src = DeviceBuffer::FromValue(so.Get("buffer"), "src.buffer");
  Napi::Value offV = so.Get("offset");
  if (!offV.IsNumber() || offV.As<Napi::Number>().DoubleValue() < 0 ||
      offV.As<Napi::Number>().DoubleValue() != static_cast<int64_t>(offV.As<Napi::Number>().DoubleValue())) {
    ThrowInvalidArgument("src.offset", "a non-negative integer element offset", DescribeValue(offV));
  }
  int64_t srcOffset = static_cast<int64_t>(offV.As<Napi::Number>().DoubleValue());
  Napi::Value dtV = so.Get("dtype");
  double dtD = dtV.IsNumber() ? dtV.As<Napi::Number>().DoubleValue() : -1;
  if (!dtV.IsNumber() || dtD < 0 || dtD > 4 || dtD != static_cast<int>(dtD)) {
    ThrowInvalidArgument("src.dtype", "a dtype code (bf16=0, f16=1, f32=2, i32=3, bool=4)", DescribeValue(dtV));
  }
  int srcDtype = static_cast<int>(dtD);
  std::vector<int64_t> shape = ArgInt64Array(so, "shape", "src.shape", false);
  std::vector<int64_t> strides = ArgInt64Array(so, "strides", "src.strides", true);
  if (shape.size() > 8) ThrowInvalidArgument("src.shape", "at most 8 dimensions", std::to_string(shape.size()));
  if (strides.size() != shape.size()) {
    ThrowInvalidArgument("src.strides", "one stride per dimension (" + std::to_string(shape.size()) + ")",
                         std::to_string(strides.size()) + " strides");
  }
  DeviceBuffer* dst = DeviceBuffer::FromValue(info[1], "dst");
  int64_t dstOffset = ArgIndex(info, 2, "dstOffset");
  int dstDtype = ArgDtype(info, 3, "dstDtype", false);
  if (src->device() != dst->device()) {
    ThrowDeviceError("dst", "a buffer on device " + std::to_string(src->device()) + " (same as src)",
                     "device " + std::to_string(dst->device()));
  }
  int64_t numel = 1;
  int64_t minOff = 0, maxOff = 0;
  for (size_t i = 0; i < shape.size(); i++) {
    numel *= shape[i];
    if (shape[i] > 0) {
      if (strides[i] >= 0) maxOff += (shape[i] - 1) * strides[i];
      else minOff += (shape[i] - 1) * strides[i];
    }
  }
  if (numel == 0) return info.Env().Undefined();
  int ses = ElemSize(srcDtype), des = ElemSize(dstDtype);
  int64_t srcElems = static_cast<int64_t>(src->bytes()) / ses;
  if (srcOffset + minOff < 0 || srcOffset + maxOff >= srcElems) {
    ThrowInvalidArgument("src", "a view within its buffer (elements [0, " + std::to_string(srcElems) + "))",
                         "offset " + std::to_string(srcOffset) + " reaching elements [" +
                             std::to_string(srcOffset + minOff) + ", " + std::to_string(srcOffset + maxOff) + "]");
  }
  int64_t dstElems = static_cast<int64_t>(dst->bytes()) / des;
  if (dstOffset > dstElems || numel > dstElems - dstOffset) {
    ThrowInvalidArgument("dst", "room for " + std::to_string(numel) + " elements after dstOffset " +
                                    std::to_string(dstOffset),
                         std::to_string(dstElems) + " elements");
  }
  CastParams p{};
  p.src = src->ptr() + static_cast<uint64_t>(srcOffset) * ses;
  p.dst = dst->ptr() + static_cast<uint64_t>(dstOffset) * des;
  p.numel = numel;
  p.rank = static_cast<int>(shape.size());
  for (size_t i = 0; i < shape.size(); i++) {
    p.shape[i] = shape[i];
    p.strides[i] = strides[i];
  }
  p.srcDtype = srcDtype;
  p.dstDtype = dstDtype;
  Device& dev = dst->dev();
  cu::CUfunction f = jit::GetKernel(dev, "util", "flexattn_cast_strided");
  void* params[] = {&p};
  Launch(dev, f, GridFor(dev, static_cast<uint64_t>(numel), 256), 1, 1, 256, 1, 1, 0, params,
         "flexattn_cast_strided");
  return info.Env().Undefined();
}

}  // namespace
}  // namespace flexattn::rt

namespace flexattn {
void RegisterTensorKernels(Napi::Env env, Napi::Object exports) {
  using namespace rt;
  exports.Set("randn", Napi::Function::New<Guarded<Randn>>(env, "randn"));
  exports.Set("castStrided", Napi::Function::New<Guarded<CastStrided>>(env, "castStrided"));
}
}  // namespace flexattn
