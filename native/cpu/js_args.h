// Parsing of the CPU backend's JS arguments, shared by its bindings
// (register.cc: cpuAttention, ragged_register.cc: cpuRaggedAttention). Every
// failure throws a typed InvalidArgumentError naming the argument.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cpu/attention.h"

namespace flexattn::cpujs {

// Bytes of an ArrayBufferView (typed array or DataView).
struct Bytes {
  void* data = nullptr;
  size_t byteLength = 0;
  size_t byteOffset = 0;
};

// Integer-valued finite number in [lo, hi] (else InvalidArgumentError(name, what)).
int64_t GetInt(const Napi::Value& v, const std::string& name, int64_t lo, int64_t hi, const char* what);
// o[key] as a boolean; absent (undefined/null) = false.
bool GetBool(const Napi::Object& o, const char* key, const std::string& name);
// Neither undefined nor null.
bool Present(const Napi::Value& v);
// The bytes a typed array or DataView covers.
Bytes ViewBytes(const Napi::Value& v, const std::string& name);
// Parses a NativeHostView {data, dtype, shape, strides} whose extent lies inside
// its data; keeps the data alive through `refs`.
cpu::HostView ParseView(const Napi::Value& val, const std::string& name, std::vector<Napi::ObjectReference>& refs);
// o[key] as an Int32Array of at least `need` elements, kept alive through `refs`.
const int32_t* ParseI32(const Napi::Object& o, const char* key, const std::string& name, int64_t need,
                        std::vector<Napi::ObjectReference>& refs);

// args[key] as a caller-provided output array of `need` elements of `type`
// (napi_float32_array or napi_uint16_array for bf16/f16 bits), or a new one when
// absent; `*data` points at its first element.
Napi::TypedArray OutputArray(Napi::Env env, const Napi::Object& o, const char* key, napi_typedarray_type type,
                             int64_t need, void** data);
// The typed array kind that holds a float dtype's raw elements (f32: Float32Array, bf16/f16: Uint16Array).
napi_typedarray_type ArrayTypeOf(cpu::DType dt);
// Parses a block mask object {B, H, numQBlocks, numKvBlocks, qBlock, kvBlock,
// kvNumBlocks, kvIndices, fullKvNumBlocks?, fullKvIndices?} (lib/native.ts);
// the index arrays are kept alive through `refs` and read in place.
cpu::CpuBlockMask ParseBlockMask(const Napi::Value& v, std::vector<Napi::ObjectReference>& refs);

}  // namespace flexattn::cpujs
