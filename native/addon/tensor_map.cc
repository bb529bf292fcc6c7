// JS export encodeTensorMap: a TMA descriptor (CUtensorMap, 128 bytes) for the
// warp-specialised Hopper forward (native/kernels/sm90_ws_entry.cuh), encoded by
// the driver's cuTensorMapEncodeTiled (looked up by name in the loaded driver,
// like every optional entry point: a driver without it — before CUDA 12 — says
// so instead of failing to load the addon). The bytes go into the kernel's
// by-value parameter block; the descriptor holds the global address, so it is
// encoded per launch (microseconds, host only).
#include <cstdint>
#include <string>

#include "addon/addon.h"
#include "addon/errors.h"
#include "cuda/cuda_api.h"

namespace flexattn {
namespace {

// cuda.h's enum values (the addon includes no toolkit header).
constexpr int kTmaBfloat16 = 9, kTmaFloat16 = 6;      // CU_TENSOR_MAP_DATA_TYPE_*
constexpr int kTmaInterleaveNone = 0;                  // CU_TENSOR_MAP_INTERLEAVE_NONE
constexpr int kTmaSwizzle128B = 3;                     // CU_TENSOR_MAP_SWIZZLE_128B: the Sw128Tile layout
constexpr int kTmaL2Promotion128B = 2;                 // CU_TENSOR_MAP_L2_PROMOTION_L2_128B
constexpr int kTmaOobFillNone = 0;                     // out-of-bounds elements read as zero

using EncodeTiled = cu::CUresult (*)(void* map, int dtype, uint32_t rank, void* global, const uint64_t* dims,
                                     const uint64_t* strides, const uint32_t* box, const uint32_t* elemStrides,
                                     int interleave, int swizzle, int l2, int oobFill);

// encodeTensorMap(address: bigint, dtype: 0 bf16 | 1 f16, D, rows, planes, rowStrideBytes, planeStrideBytes,
//                 boxRows) -> Uint8Array(128)
// A 3-D map {D, rows, planes} of a 16-bit tensor (planes = B·H: the kernel's third coordinate), box
// {64 columns, boxRows, 1}: one 128-byte swizzled panel per TMA load. The driver checks the rest (address and
// strides multiples of 16, box <= 256).
Napi::Value EncodeTensorMap(const Napi::CallbackInfo& info) {
  const uint64_t address = ArgBigUint(info, 0, "address");
  const int64_t dtype = ArgIndex(info, 1, "dtype");
  if (dtype > 1) ThrowInvalidArgument("dtype", "0 (bf16) or 1 (f16)", std::to_string(dtype));
  const uint64_t dims[3] = {static_cast<uint64_t>(ArgIndex(info, 2, "D")), static_cast<uint64_t>(ArgIndex(info, 3, "rows")),
                            static_cast<uint64_t>(ArgIndex(info, 4, "planes"))};
  const uint64_t strides[2] = {static_cast<uint64_t>(ArgIndex(info, 5, "rowStrideBytes")),
                               static_cast<uint64_t>(ArgIndex(info, 6, "planeStrideBytes"))};
  const uint32_t box[3] = {64, static_cast<uint32_t>(ArgIndex(info, 7, "boxRows")), 1};
  const uint32_t elemStrides[3] = {1, 1, 1};
  if (address % 16 != 0 || strides[0] % 16 != 0 || strides[1] % 16 != 0) {
    ThrowInvalidArgument("address", "an address and byte strides that are multiples of 16 (TMA)",
                         std::to_string(address) + ", strides " + std::to_string(strides[0]) + "/" + std::to_string(strides[1]));
  }
  cu::Drv();  // loads the driver (throws its own error when missing)
  auto encode = reinterpret_cast<EncodeTiled>(cu::DriverSym("cuTensorMapEncodeTiled"));
  if (!encode) {
    throw NativeError(ErrKind::kCudaUnavailable,
                      "flexattn: the CUDA driver has no cuTensorMapEncodeTiled (CUDA 12+ drivers have it); "
                      "the sm90ws kernel family needs it, the other families do not", "");
  }
  Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), 128);
  alignas(128) unsigned char map[128];   // CUtensorMap is 128-byte aligned (cuda.h)
  cu::Check(encode(map, dtype == 0 ? kTmaBfloat16 : kTmaFloat16, 3, reinterpret_cast<void*>(address), dims, strides, box,
                   elemStrides, kTmaInterleaveNone, kTmaSwizzle128B, kTmaL2Promotion128B, kTmaOobFillNone),
            "cuTensorMapEncodeTiled(D=" + std::to_string(dims[0]) + ", rows=" + std::to_string(dims[1]) +
                ", planes=" + std::to_string(dims[2]) + ", box rows=" + std::to_string(box[1]) + ")");
  for (int i = 0; i < 128; ++i) out[i] = map[i];
  return out;
}

}  // namespace

void RegisterTensorMaps(Napi::Env env, Napi::Object exports) {
  exports.Set("encodeTensorMap", Napi::Function::New<Guarded<EncodeTensorMap>>(env, "encodeTensorMap"));
}

}  // namespace flexattn
