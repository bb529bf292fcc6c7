// Parsing of the CPU backend's JS arguments (host views, Int32Arrays, integers),
// shared by the cpuAttention and cpuRaggedAttention bindings.
#include "cpu/js_args.h"

#include <cmath>

#include "addon/errors.h"
#include "cpu/attention_internal.h"

namespace flexattn::cpujs {

namespace {
std::string S(int64_t v) { return std::to_string(v); }
}  // namespace

// Integer-valued finite number in [lo, hi].
int64_t GetInt(const Napi::Value& v, const std::string& name, int64_t lo, int64_t hi, const char* what) {
  if (!v.IsNumber()) ThrowInvalidArgument(name, what, DescribeValue(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= double(lo) && d <= double(hi)) || d != std::floor(d)) ThrowInvalidArgument(name, what, DescribeValue(v));
  return static_cast<int64_t>(d);
}

bool GetBool(const Napi::Object& o, const char* key, const std::string& name) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return false;
  if (!v.IsBoolean()) ThrowInvalidArgument(name, "a boolean", DescribeValue(v));
  return v.As<Napi::Boolean>().Value();
}

bool Present(const Napi::Value& v) { return !v.IsUndefined() && !v.IsNull(); }

Bytes ViewBytes(const Napi::Value& v, const std::string& name) {
  Bytes r;
  if (v.IsTypedArray()) {
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    Napi::ArrayBuffer ab = ta.ArrayBuffer();
    r.byteOffset = ta.ByteOffset();
    r.byteLength = ta.ByteLength();
    r.data = ab.Data() ? static_cast<uint8_t*>(ab.Data()) + r.byteOffset : nullptr;
  } else if (v.IsDataView()) {
    Napi::DataView dv = v.As<Napi::DataView>();
    Napi::ArrayBuffer ab = dv.ArrayBuffer();
    r.byteOffset = dv.ByteOffset();
    r.byteLength = dv.ByteLength();
    r.data = ab.Data() ? static_cast<uint8_t*>(ab.Data()) + r.byteOffset : nullptr;
  } else {
    ThrowInvalidArgument(name, "a typed array", DescribeValue(v));
  }
  return r;
}

// Parses a NativeHostView; keeps its data alive through `refs`.
cpu::HostView ParseView(const Napi::Value& val, const std::string& name, std::vector<Napi::ObjectReference>& refs) {
  if (!val.IsObject() || val.IsArray() || val.IsTypedArray()) {
    ThrowInvalidArgument(name, "a host view {data, dtype, shape, strides}", DescribeValue(val));
  }
  Napi::Object o = val.As<Napi::Object>();
  cpu::HostView hv;
  const int64_t dt = GetInt(o.Get("dtype"), name + ".dtype", 0, 4, "a dtype code (0 bf16, 1 f16, 2 f32, 3 i32, 4 bool)");
  hv.dtype = static_cast<cpu::DType>(dt);
  Napi::Value shapeV = o.Get("shape"), stridesV = o.Get("strides");
  if (!shapeV.IsArray()) ThrowInvalidArgument(name + ".shape", "an array of sizes", DescribeValue(shapeV));
  if (!stridesV.IsArray()) ThrowInvalidArgument(name + ".strides", "an array of element strides", DescribeValue(stridesV));
  Napi::Array shape = shapeV.As<Napi::Array>(), strides = stridesV.As<Napi::Array>();
  if (shape.Length() > 8) ThrowInvalidArgument(name + ".shape", "at most 8 dims", S(shape.Length()) + " dims");
  if (strides.Length() != shape.Length()) {
    ThrowInvalidArgument(name + ".strides", S(shape.Length()) + " strides (one per dim of shape)",
                         S(strides.Length()) + " strides");
  }
  hv.rank = static_cast<int>(shape.Length());
  for (int i = 0; i < hv.rank; ++i) {
    hv.shape[i] = GetInt(shape.Get(uint32_t(i)), name + ".shape[" + S(i) + "]", 0, 0x7fffffff,
                         "a size in [0, 2^31)");
    hv.strides[i] = GetInt(strides.Get(uint32_t(i)), name + ".strides[" + S(i) + "]", -(int64_t(1) << 52),
                           int64_t(1) << 52, "an integer element stride");
  }
  Napi::Value dataV = o.Get("data");
  Bytes bytes = ViewBytes(dataV, name + ".data");
  const size_t esize = static_cast<size_t>(cpu::DTypeSize(hv.dtype));
  if (bytes.byteOffset % esize != 0) {
    ThrowInvalidArgument(name + ".data", "a byte offset aligned to " + S(int64_t(esize)) + " bytes (" +
                                             cpu::DTypeName(hv.dtype) + ")",
                         "byte offset " + S(int64_t(bytes.byteOffset)));
  }
  const int64_t length = static_cast<int64_t>(bytes.byteLength / esize);
  int64_t lo = 0, hi = -1;
  cpu::OffsetRange(hv, &lo, &hi);
  if (lo < 0) {
    ThrowInvalidArgument(name + ".strides", "strides that stay inside the data (lowest element offset >= 0)",
                         "lowest offset " + S(lo));
  }
  if (hi >= length) {
    ThrowInvalidArgument(name + ".data", "at least " + S(hi + 1) + " " + cpu::DTypeName(hv.dtype) +
                                             " elements for shape " + cpu::ShapeString(hv),
                         S(length) + " elements");
  }
  hv.data = bytes.data;
  refs.push_back(Napi::Persistent(dataV.As<Napi::Object>()));
  return hv;
}

const int32_t* ParseI32(const Napi::Object& o, const char* key, const std::string& name, int64_t need,
                        std::vector<Napi::ObjectReference>& refs) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    ThrowInvalidArgument(name, "an Int32Array", DescribeValue(v));
  }
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  if (static_cast<int64_t>(a.ElementLength()) < need) {
    ThrowInvalidArgument(name, "at least " + S(need) + " elements", S(int64_t(a.ElementLength())) + " elements");
  }
  refs.push_back(Napi::Persistent(v.As<Napi::Object>()));
  return a.ElementLength() ? a.Data() : nullptr;
}

napi_typedarray_type ArrayTypeOf(cpu::DType dt) {
  return dt == cpu::kF32 ? napi_float32_array : napi_uint16_array;
}

Napi::TypedArray OutputArray(Napi::Env env, const Napi::Object& o, const char* key, napi_typedarray_type type,
                             int64_t need, void** data) {
  const char* typeName = type == napi_float32_array ? "a Float32Array" : "a Uint16Array (raw bits)";
  Napi::Value v = o.Get(key);
  Napi::TypedArray a;
  if (Present(v)) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) {
      ThrowInvalidArgument(key, typeName, DescribeValue(v));
    }
    a = v.As<Napi::TypedArray>();
    if (static_cast<int64_t>(a.ElementLength()) != need) {
      ThrowInvalidArgument(key, std::string(typeName) + " of " + S(need) + " elements",
                           S(int64_t(a.ElementLength())) + " elements");
    }
  } else if (type == napi_float32_array) {
    a = Napi::Float32Array::New(env, size_t(need));
  } else {
    a = Napi::Uint16Array::New(env, size_t(need));
  }
  Napi::ArrayBuffer ab = a.ArrayBuffer();
  *data = need && ab.Data() ? static_cast<uint8_t*>(ab.Data()) + a.ByteOffset() : nullptr;
  return a;
}

cpu::CpuBlockMask ParseBlockMask(const Napi::Value& v, std::vector<Napi::ObjectReference>& refs) {
  if (!v.IsObject()) ThrowInvalidArgument("blockMask", "a block mask object", DescribeValue(v));
  Napi::Object b = v.As<Napi::Object>();
  cpu::CpuBlockMask bm;
  const char* pos = "a positive integer";
  bm.B = int(GetInt(b.Get("B"), "blockMask.B", 1, 0x7fffffff, pos));
  bm.H = int(GetInt(b.Get("H"), "blockMask.H", 1, 0x7fffffff, pos));
  bm.numQBlocks = int(GetInt(b.Get("numQBlocks"), "blockMask.numQBlocks", 0, 0x7fffffff, "a non-negative integer"));
  bm.numKvBlocks = int(GetInt(b.Get("numKvBlocks"), "blockMask.numKvBlocks", 0, 0x7fffffff, "a non-negative integer"));
  bm.qBlock = int(GetInt(b.Get("qBlock"), "blockMask.qBlock", 1, 0x7fffffff, pos));
  bm.kvBlock = int(GetInt(b.Get("kvBlock"), "blockMask.kvBlock", 1, 0x7fffffff, pos));
  const int64_t rows = int64_t(bm.B) * bm.H * bm.numQBlocks;
  const int64_t idx = rows * bm.numKvBlocks;
  bm.kvNumBlocks = ParseI32(b, "kvNumBlocks", "blockMask.kvNumBlocks", rows, refs);
  bm.kvIndices = ParseI32(b, "kvIndices", "blockMask.kvIndices", idx, refs);
  const bool hasFullNum = Present(b.Get("fullKvNumBlocks")), hasFullIdx = Present(b.Get("fullKvIndices"));
  if (hasFullNum != hasFullIdx) {
    ThrowInvalidArgument(hasFullNum ? "blockMask.fullKvIndices" : "blockMask.fullKvNumBlocks",
                         "fullKvNumBlocks and fullKvIndices given together", "only one of them");
  }
  if (hasFullNum) {
    bm.fullKvNumBlocks = ParseI32(b, "fullKvNumBlocks", "blockMask.fullKvNumBlocks", rows, refs);
    bm.fullKvIndices = ParseI32(b, "fullKvIndices", "blockMask.fullKvIndices", idx, refs);
  }
  return bm;
}

}  // namespace flexattn::cpujs
