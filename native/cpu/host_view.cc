// Host views for the CPU reference backend: dtype conversion and element access.
#include "cpu/attention_internal.h"

#include <thread>
#if defined(__linux__)
#include <sched.h>
#endif

namespace flexattn::cpu {

int DTypeSize(int dtype) {
  switch (dtype) {
    case kBF16: case kF16: return 2;
    case kF32: case kI32: return 4;
    case kBool: return 1;
  }
  return 0;
}

std::string DTypeName(int dtype) {
  switch (dtype) {
    case kBF16: return "bf16";
    case kF16: return "f16";
    case kF32: return "f32";
    case kI32: return "i32";
    case kBool: return "bool";
  }
  return "dtype code " + std::to_string(dtype);
}

std::string ShapeString(const HostView& v) {
  std::string s = "[";
  for (int i = 0; i < v.rank; ++i) {
    if (i) s += ", ";
    s += std::to_string(v.shape[i]);
  }
  return s + "]";
}

double HostView::At(const int64_t* idx) const {
  int64_t off = 0;
  for (int i = 0; i < rank; ++i) off += idx[i] * strides[i];
  if (dtype == kI32) return static_cast<double>(static_cast<const int32_t*>(data)[off]);
  return static_cast<double>(ReadFloat(data, dtype, off));
}

void LoadRow(const HostView& v, int64_t base, int64_t stride, int64_t n, float* dst) {
  switch (v.dtype) {
    case kBF16: {
      const uint16_t* p = static_cast<const uint16_t*>(v.data) + base;
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToF32(p[i * stride]);
      break;
    }
    case kF16: {
      const uint16_t* p = static_cast<const uint16_t*>(v.data) + base;
      for (int64_t i = 0; i < n; ++i) dst[i] = F16ToF32(p[i * stride]);
      break;
    }
    case kF32: {
      const float* p = static_cast<const float*>(v.data) + base;
      if (stride == 1) {
        std::memcpy(dst, p, size_t(n) * sizeof(float));
      } else {
        for (int64_t i = 0; i < n; ++i) dst[i] = p[i * stride];
      }
      break;
    }
    case kI32: {
      const int32_t* p = static_cast<const int32_t*>(v.data) + base;
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(p[i * stride]);
      break;
    }
    case kBool: {
      const uint8_t* p = static_cast<const uint8_t*>(v.data) + base;
      for (int64_t i = 0; i < n; ++i) dst[i] = p[i * stride] ? 1.0f : 0.0f;
      break;
    }
  }
}

void OffsetRange(const HostView& v, int64_t* lo, int64_t* hi) {
  int64_t a = 0, b = 0;
  for (int i = 0; i < v.rank; ++i) {
    if (v.shape[i] <= 0) { *lo = 0; *hi = -1; return; }
    int64_t span = (v.shape[i] - 1) * v.strides[i];
    if (span < 0) a += span; else b += span;
  }
  *lo = a;
  *hi = b;
}

int DefaultThreads() {
#if defined(__linux__) && defined(CPU_COUNT)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

}  // namespace flexattn::cpu
