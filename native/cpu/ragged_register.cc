// JS binding of the ragged (paged / varlen) CPU reference:
//   cpuRaggedAttention(args) -> Promise<{ out, lse? }>
// args (lib/native.ts NativeCpuRaggedArgs): q (host view [T, Hq, D]); k, v
// (typed arrays holding the pools from element 0: Uint16Array bits for
// bf16/f16, Float32Array for f32) with kvDtype; pageSize, pageStride,
// tokenStride, headStride, numKvHeads; pageTable (Int32Array [numSeqs,
// maxPagesPerSeq]), seqLens, queryStart (Int32Array); scale, causal,
// scoreMod/maskMod programs, returnLse, outDtype, out, lse, cancel,
// numThreads. Shapes are checked synchronously; the tables (O(numSeqs x
// pages)) and the math run on a Napi::AsyncWorker, so the event loop never
// blocks; the typed arrays are read in place, kept alive by references.
#include <napi.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "addon/errors.h"
#include "cpu/attention_internal.h"
#include "cpu/js_args.h"
#include "cpu/mod_vm.h"
#include "cpu/ragged_attention.h"

namespace flexattn {
namespace {

using cpujs::GetBool;
using cpujs::GetInt;
using cpujs::ParseI32;
using cpujs::ParseView;
using cpujs::Present;

std::string S(int64_t v) { return std::to_string(v); }

constexpr int64_t kMaxI32 = 0x7fffffff;

class RaggedWorker : public Napi::AsyncWorker {
 public:
  RaggedWorker(Napi::Env env, cpu::CpuRaggedArgs args, std::vector<Napi::ObjectReference> refs, Napi::Value out,
               Napi::Value lse)
      : Napi::AsyncWorker(env, "flexattn.cpuRaggedAttention"),
        deferred_(Napi::Promise::Deferred::New(env)),
        args_(std::move(args)),
        refs_(std::move(refs)),
        out_(Napi::Persistent(out.As<Napi::Object>())) {
    if (lse.IsTypedArray()) lse_ = Napi::Persistent(lse.As<Napi::Object>());
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      cpu::RaggedAttention(args_);
      return;
    } catch (const cpu::Cancelled& e) {
      cancelled_ = true;
      err_ = NativeError(ErrKind::kGeneric, std::string("cpuRaggedAttention: ") + e.what());
    } catch (const cpu::ArgError& e) {
      err_ = NativeError(ErrKind::kInvalidArgument, e.what(), e.argument, e.expected, e.received);
    } catch (const std::exception& e) {
      err_ = NativeError(ErrKind::kGeneric, std::string("cpuRaggedAttention: ") + e.what());
    } catch (...) {
      err_ = NativeError(ErrKind::kGeneric, "cpuRaggedAttention: unknown native error");
    }
    SetError(err_.message);
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Object r = Napi::Object::New(env);
    r.Set("out", out_.Value());
    if (!lse_.IsEmpty()) r.Set("lse", lse_.Value());
    deferred_.Resolve(r);
  }

  void OnError(const Napi::Error&) override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Error e = ToJsError(env, err_);
    if (cancelled_) e.Value().Set("cancelled", Napi::Boolean::New(env, true));
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  cpu::CpuRaggedArgs args_;
  std::vector<Napi::ObjectReference> refs_;
  Napi::ObjectReference out_, lse_;
  NativeError err_;
  bool cancelled_ = false;
};

// A pool array of kvDtype: its data and element count; kept alive through refs.
const void* PoolArray(const Napi::Object& o, const char* key, cpu::DType dt, int64_t* elems,
                      std::vector<Napi::ObjectReference>& refs) {
  Napi::Value v = o.Get(key);
  const napi_typedarray_type want = dt == cpu::kF32 ? napi_float32_array : napi_uint16_array;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != want) {
    ThrowInvalidArgument(key, dt == cpu::kF32 ? "a Float32Array (kvDtype f32)" : "a Uint16Array of raw bits (kvDtype bf16/f16)",
                         DescribeValue(v));
  }
  cpujs::Bytes b = cpujs::ViewBytes(v, key);
  *elems = static_cast<int64_t>(b.byteLength / size_t(cpu::DTypeSize(dt)));
  refs.push_back(Napi::Persistent(v.As<Napi::Object>()));
  return b.data;
}

// A caller-provided output array of `need` elements (Float32Array, or Uint16Array bits), or a new one.
Napi::TypedArray Output(Napi::Env env, const Napi::Object& o, const char* key, bool f32, int64_t need, void** data) {
  Napi::Value v = o.Get(key);
  const napi_typedarray_type type = f32 ? napi_float32_array : napi_uint16_array;
  Napi::TypedArray a;
  if (Present(v)) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type ||
        static_cast<int64_t>(v.As<Napi::TypedArray>().ElementLength()) != need) {
      ThrowInvalidArgument(key, std::string(f32 ? "a Float32Array" : "a Uint16Array") + " of " + S(need) + " elements",
                           DescribeValue(v));
    }
    a = v.As<Napi::TypedArray>();
  } else if (f32) {
    a = Napi::Float32Array::New(env, size_t(need));
  } else {
    a = Napi::Uint16Array::New(env, size_t(need));
  }
  Napi::ArrayBuffer ab = a.ArrayBuffer();
  *data = need && ab.Data() ? static_cast<uint8_t*>(ab.Data()) + a.ByteOffset() : nullptr;
  return a;
}

Napi::Value CpuRaggedAttention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) ThrowInvalidArgument("args", "an object of cpuRaggedAttention arguments", DescribeValue(info[0]));
  Napi::Object o = info[0].As<Napi::Object>();
  std::vector<Napi::ObjectReference> refs;
  cpu::CpuRaggedArgs a;
  a.q = ParseView(o.Get("q"), "q", refs);
  a.kvDtype = static_cast<cpu::DType>(GetInt(o.Get("kvDtype"), "kvDtype", 0, 2, "a float dtype code (0 bf16, 1 f16, 2 f32)"));
  a.k = PoolArray(o, "k", a.kvDtype, &a.kElems, refs);
  a.v = PoolArray(o, "v", a.kvDtype, &a.vElems, refs);
  const int64_t big = int64_t(1) << 52;
  a.pageSize = GetInt(o.Get("pageSize"), "pageSize", 1, kMaxI32, "a positive integer");
  a.pageStride = GetInt(o.Get("pageStride"), "pageStride", 0, big, "a non-negative element stride");
  a.tokenStride = GetInt(o.Get("tokenStride"), "tokenStride", 0, big, "a non-negative element stride");
  a.headStride = GetInt(o.Get("headStride"), "headStride", 0, big, "a non-negative element stride");
  a.numKvHeads = GetInt(o.Get("numKvHeads"), "numKvHeads", 1, kMaxI32, "a positive integer");
  a.numSeqs = GetInt(o.Get("numSeqs"), "numSeqs", 0, kMaxI32, "a non-negative integer");
  a.maxPagesPerSeq = GetInt(o.Get("maxPagesPerSeq"), "maxPagesPerSeq", 0, kMaxI32, "a non-negative integer");
  a.pageTable = ParseI32(o, "pageTable", "pageTable", a.numSeqs * a.maxPagesPerSeq, refs);
  a.seqLens = ParseI32(o, "seqLens", "seqLens", a.numSeqs, refs);
  a.queryStart = ParseI32(o, "queryStart", "queryStart", a.numSeqs + 1, refs);
  Napi::Value scaleV = o.Get("scale");
  if (!scaleV.IsNumber() || !std::isfinite(scaleV.As<Napi::Number>().DoubleValue())) {
    ThrowInvalidArgument("scale", "a finite number", DescribeValue(scaleV));
  }
  a.scale = static_cast<float>(scaleV.As<Napi::Number>().DoubleValue());
  a.causal = GetBool(o, "causal", "causal");
  const bool returnLse = GetBool(o, "returnLse", "returnLse");
  Napi::Value nt = o.Get("numThreads");
  if (Present(nt)) a.numThreads = static_cast<int>(GetInt(nt, "numThreads", 0, 4096, "an integer in [0, 4096]"));
  Napi::Value odt = o.Get("outDtype");
  if (Present(odt)) a.outDtype = static_cast<cpu::DType>(GetInt(odt, "outDtype", 0, 2, "a float dtype code (0 bf16, 1 f16, 2 f32)"));
  if (Present(o.Get("cancel"))) a.cancel = ParseI32(o, "cancel", "cancel", 1, refs);

  Napi::Value smV = o.Get("scoreMod"), mmV = o.Get("maskMod");
  if (Present(smV)) {
    if (!smV.IsObject()) ThrowInvalidArgument("scoreMod", "a mod program object", DescribeValue(smV));
    std::shared_ptr<const cpu::ModVm> vm = cpu::ModVm::FromJs(smV.As<Napi::Object>());
    a.scoreMod = [vm](float s, int b, int h, int q, int kv) { return vm->Score(s, b, h, q, kv); };
  }
  if (Present(mmV)) {
    if (!mmV.IsObject()) ThrowInvalidArgument("maskMod", "a mod program object", DescribeValue(mmV));
    std::shared_ptr<const cpu::ModVm> vm = cpu::ModVm::FromJs(mmV.As<Napi::Object>());
    a.maskMod = [vm](int b, int h, int q, int kv) { return vm->Mask(b, h, q, kv); };
  }

  const int64_t T = a.q.rank == 3 ? a.q.shape[0] : 0, Hq = a.q.rank == 3 ? a.q.shape[1] : 0;
  const int64_t D = a.q.rank == 3 ? a.q.shape[2] : 0;
  const int64_t numel = T * Hq * D;
  if (numel > (int64_t(1) << 32)) ThrowInvalidArgument("q", "an output of at most 2^32 elements", S(numel));
  Napi::TypedArray out = Output(env, o, "out", a.outDtype == cpu::kF32, numel, &a.out);
  Napi::Value lse = env.Undefined();
  if (returnLse) {
    void* l = nullptr;
    lse = Output(env, o, "lse", true, T * Hq, &l);
    a.lse = static_cast<float*>(l);
  } else if (Present(o.Get("lse"))) {
    ThrowInvalidArgument("lse", "no lse array unless returnLse is true", "an lse array");
  }
  try {
    cpu::ValidateRaggedShapes(a);
  } catch (const cpu::ArgError& e) {
    ThrowInvalidArgument(e.argument, e.expected, e.received);
  }
  auto* worker = new RaggedWorker(env, std::move(a), std::move(refs), out, lse);
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

}  // namespace

void RegisterCpuRagged(Napi::Env env, Napi::Object exports) {
  exports.Set("cpuRaggedAttention", Napi::Function::New(env, Guarded<&CpuRaggedAttention>, "cpuRaggedAttention"));
}

}  // namespace flexattn
