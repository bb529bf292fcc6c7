// JS binding of the CPU reference backend:
//   cpuAttention(args) -> Promise<{ out: Float32Array | Uint16Array, lse?: Float32Array }>
//   hardwareConcurrency() -> number
// Arguments are validated synchronously (typed InvalidArgumentError naming the
// argument) in time independent of the tensor sizes; everything proportional
// to the data (the math, reading bf16/f16/strided inputs, rounding the output
// to args.outDtype, scanning block-mask indices) runs on a Napi::AsyncWorker,
// so the event loop never blocks. The input typed arrays are kept alive by
// persistent references while the worker runs and are read in place (not
// copied); the output goes straight into args.out (or a new array) in its
// final dtype. args.cancel (an Int32Array, e.g. on a SharedArrayBuffer) set to
// nonzero stops the job at its next chunk: the promise then rejects with a
// FlexAttnError whose `cancelled` property is true.
#include <napi.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "addon/addon.h"
#include "cpu/attention.h"
#include "cpu/attention_internal.h"
#include "addon/errors.h"
#include "cpu/js_args.h"

#if __has_include("cpu/mod_vm.h")
#include "cpu/mod_vm.h"
#define FLEXATTN_HAVE_MOD_VM 1
#else
#define FLEXATTN_HAVE_MOD_VM 0
#endif

namespace flexattn {
namespace {

using cpu::CpuAttentionArgs;
using cpu::CpuBlockMask;
using cpu::HostView;
using cpujs::ArrayTypeOf;
using cpujs::GetBool;
using cpujs::GetInt;
using cpujs::OutputArray;
using cpujs::ParseI32;
using cpujs::ParseView;
using cpujs::Present;

std::string S(int64_t v) { return std::to_string(v); }

class CpuAttentionWorker : public Napi::AsyncWorker {
 public:
  CpuAttentionWorker(Napi::Env env, CpuAttentionArgs args, std::unique_ptr<CpuBlockMask> bm,
                     std::vector<Napi::ObjectReference> refs, Napi::Value out, Napi::Value lse)
      : Napi::AsyncWorker(env, "flexattn.cpuAttention"),
        deferred_(Napi::Promise::Deferred::New(env)),
        args_(std::move(args)),
        bm_(std::move(bm)),
        refs_(std::move(refs)),
        out_(Napi::Persistent(out.As<Napi::Object>())) {
    if (lse.IsTypedArray()) lse_ = Napi::Persistent(lse.As<Napi::Object>());
    args_.blockMask = bm_.get();
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      cpu::Attention(args_);
      return;
    } catch (const cpu::Cancelled& e) {
      cancelled_ = true;
      err_ = NativeError(ErrKind::kGeneric, std::string("cpuAttention: ") + e.what());
    } catch (const cpu::ArgError& e) {
      err_ = NativeError(ErrKind::kInvalidArgument, e.what(), e.argument, e.expected, e.received);
    } catch (const NativeError& e) {
      err_ = e;
    } catch (const std::invalid_argument& e) {
      err_ = NativeError(ErrKind::kInvalidArgument, e.what(), "args", e.what(), "");
    } catch (const std::exception& e) {
      err_ = NativeError(ErrKind::kGeneric, std::string("cpuAttention: ") + e.what());
    } catch (...) {
      err_ = NativeError(ErrKind::kGeneric, "cpuAttention: unknown native error");
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
  CpuAttentionArgs args_;
  std::unique_ptr<CpuBlockMask> bm_;
  std::vector<Napi::ObjectReference> refs_;
  Napi::ObjectReference out_, lse_;
  NativeError err_;
  bool cancelled_ = false;
};

Napi::Value CpuAttention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) ThrowInvalidArgument("args", "an object of cpuAttention arguments", DescribeValue(info[0]));
  Napi::Object o = info[0].As<Napi::Object>();
  std::vector<Napi::ObjectReference> refs;
  CpuAttentionArgs args;
  args.q = ParseView(o.Get("q"), "q", refs);
  args.k = ParseView(o.Get("k"), "k", refs);
  args.v = ParseView(o.Get("v"), "v", refs);

  Napi::Value scaleV = o.Get("scale");
  if (!scaleV.IsNumber() || !std::isfinite(scaleV.As<Napi::Number>().DoubleValue())) {
    ThrowInvalidArgument("scale", "a finite number", DescribeValue(scaleV));
  }
  args.scale = static_cast<float>(scaleV.As<Napi::Number>().DoubleValue());
  args.isCausal = GetBool(o, "isCausal", "isCausal");
  const bool returnLse = GetBool(o, "returnLse", "returnLse");
  Napi::Value nt = o.Get("numThreads");
  if (Present(nt)) args.numThreads = static_cast<int>(GetInt(nt, "numThreads", 0, 4096, "an integer in [0, 4096]"));
  Napi::Value odt = o.Get("outDtype");
  if (Present(odt)) {
    args.outDtype = static_cast<cpu::DType>(GetInt(odt, "outDtype", 0, 2, "a float dtype code (0 bf16, 1 f16, 2 f32)"));
  }
  Napi::Value cancelV = o.Get("cancel");
  if (Present(cancelV)) {
    args.cancel = ParseI32(o, "cancel", "cancel", 1, refs);
  }

  Napi::Value maskV = o.Get("mask");
  if (Present(maskV)) {
    args.mask = ParseView(maskV, "mask", refs);
    args.hasMask = true;
  }

  std::unique_ptr<CpuBlockMask> bm;
  Napi::Value bmV = o.Get("blockMask");
  if (Present(bmV)) {
    bm = std::make_unique<CpuBlockMask>(cpujs::ParseBlockMask(bmV, refs));
    args.blockMask = bm.get();
  }

  Napi::Value smV = o.Get("scoreMod"), mmV = o.Get("maskMod");
#if FLEXATTN_HAVE_MOD_VM
  if (Present(smV)) {
    if (!smV.IsObject()) ThrowInvalidArgument("scoreMod", "a mod program object", DescribeValue(smV));
    std::shared_ptr<const cpu::ModVm> vm = cpu::ModVm::FromJs(smV.As<Napi::Object>());
    args.scoreMod = [vm](float s, int b, int h, int q, int kv) { return vm->Score(s, b, h, q, kv); };
  }
  if (Present(mmV)) {
    if (!mmV.IsObject()) ThrowInvalidArgument("maskMod", "a mod program object", DescribeValue(mmV));
    std::shared_ptr<const cpu::ModVm> vm = cpu::ModVm::FromJs(mmV.As<Napi::Object>());
    args.maskMod = [vm](int b, int h, int q, int kv) { return vm->Mask(b, h, q, kv); };
  }
#else
  if (Present(smV) || Present(mmV)) {
    throw NativeError(ErrKind::kGeneric, std::string(Present(smV) ? "scoreMod" : "maskMod") +
                                             ": mod VM not built (native/cpu/mod_vm.h missing)");
  }
#endif

  // Shape/dtype consistency (throws ArgError naming the argument); the block
  // mask's index arrays are scanned by the worker.
  try {
    cpu::ValidateAttentionArgs(args, /*scanBlockMask=*/false);  // out is checked below once allocated
  } catch (const cpu::ArgError& e) {
    if (e.argument != "out") ThrowInvalidArgument(e.argument, e.expected, e.received);
  }

  const int64_t B = args.q.shape[0], Hq = args.q.shape[1], Sq = args.q.shape[2], Dv = args.v.shape[3];
  const int64_t outNumel = B * Hq * Sq * Dv;
  if (outNumel > (int64_t(1) << 32)) ThrowInvalidArgument("q", "an output of at most 2^32 elements", S(outNumel));
  Napi::TypedArray out = OutputArray(env, o, "out", ArrayTypeOf(args.outDtype), outNumel, &args.out);
  Napi::Value lse = env.Undefined();
  if (returnLse) {
    void* l = nullptr;
    lse = OutputArray(env, o, "lse", napi_float32_array, B * Hq * Sq, &l);
    args.lse = static_cast<float*>(l);
  } else if (Present(o.Get("lse"))) {
    ThrowInvalidArgument("lse", "no lse array unless returnLse is true", "an lse array");
  }

  auto* worker = new CpuAttentionWorker(env, std::move(args), std::move(bm), std::move(refs), out, lse);
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

Napi::Value HardwareConcurrency(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cpu::DefaultThreads());
}

}  // namespace

void RegisterCpuRagged(Napi::Env env, Napi::Object exports);    // ragged_register.cc
void RegisterCpuBackward(Napi::Env env, Napi::Object exports);  // backward_register.cc

void RegisterCpu(Napi::Env env, Napi::Object exports) {
  RegisterCpuRagged(env, exports);
  RegisterCpuBackward(env, exports);
  exports.Set("cpuAttention", Napi::Function::New(env, Guarded<&CpuAttention>, "cpuAttention"));
  exports.Set("hardwareConcurrency", Napi::Function::New(env, HardwareConcurrency, "hardwareConcurrency"));
}

}  // namespace flexattn
