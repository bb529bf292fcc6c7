// JS binding of the CPU reference backward:
//   cpuAttentionBackward(args) -> Promise<{ dq, dk, dv, captured: TypedArray[] }>
// args (lib/native.ts NativeCpuBackwardArgs): q, k, v, out, dOut, lse (host
// views), scale, isCausal, mask (rank-4 view), scoreMod / scoreGrad / maskMod
// programs, blockMask, gradDtype, dq / dk / dv (optional output arrays),
// captured ([{ numel, dtype, out?, sites: [{ index, weight }] }]), cancel,
// numThreads. Shapes are checked synchronously (typed InvalidArgumentError
// naming the argument); the math, the dtype conversions and the block-mask
// scan run on a Napi::AsyncWorker, so the event loop never blocks. Inputs are
// read in place, kept alive by references; cancel as for cpuAttention.
#include <napi.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "addon/addon.h"
#include "addon/errors.h"
#include "cpu/attention_backward.h"
#include "cpu/attention_internal.h"
#include "cpu/js_args.h"
#include "cpu/mod_vm.h"

namespace flexattn {
namespace {

using cpujs::ArrayTypeOf;
using cpujs::GetBool;
using cpujs::GetInt;
using cpujs::OutputArray;
using cpujs::ParseI32;
using cpujs::ParseView;
using cpujs::Present;

std::string S(int64_t v) { return std::to_string(v); }

class BackwardWorker : public Napi::AsyncWorker {
 public:
  BackwardWorker(Napi::Env env, cpu::CpuBackwardArgs args, std::unique_ptr<cpu::CpuBlockMask> bm,
                 std::vector<Napi::ObjectReference> refs, std::vector<Napi::ObjectReference> outs)
      : Napi::AsyncWorker(env, "flexattn.cpuAttentionBackward"),
        deferred_(Napi::Promise::Deferred::New(env)),
        args_(std::move(args)),
        bm_(std::move(bm)),
        refs_(std::move(refs)),
        outs_(std::move(outs)) {
    args_.blockMask = bm_.get();
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      cpu::AttentionBackward(args_);
      return;
    } catch (const cpu::Cancelled& e) {
      cancelled_ = true;
      err_ = NativeError(ErrKind::kGeneric, std::string("cpuAttentionBackward: ") + e.what());
    } catch (const cpu::ArgError& e) {
      err_ = NativeError(ErrKind::kInvalidArgument, e.what(), e.argument, e.expected, e.received);
    } catch (const std::exception& e) {
      err_ = NativeError(ErrKind::kInternal, std::string("cpuAttentionBackward: ") + e.what());
    } catch (...) {
      err_ = NativeError(ErrKind::kInternal, "cpuAttentionBackward: unknown native error");
    }
    SetError(err_.message);
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Object r = Napi::Object::New(env);
    r.Set("dq", outs_[0].Value());
    r.Set("dk", outs_[1].Value());
    r.Set("dv", outs_[2].Value());
    Napi::Array cap = Napi::Array::New(env, outs_.size() - 3);
    for (size_t i = 3; i < outs_.size(); ++i) cap.Set(uint32_t(i - 3), outs_[i].Value());
    r.Set("captured", cap);
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
  cpu::CpuBackwardArgs args_;
  std::unique_ptr<cpu::CpuBlockMask> bm_;
  std::vector<Napi::ObjectReference> refs_;
  std::vector<Napi::ObjectReference> outs_;  // dq, dk, dv, captured...
  NativeError err_;
  bool cancelled_ = false;
};

// A mod program as a thread-safe score function.
cpu::ScoreModFn ScoreProgram(const Napi::Value& v, const std::string& name) {
  if (!v.IsObject()) ThrowInvalidArgument(name, "a mod program object", DescribeValue(v));
  std::shared_ptr<const cpu::ModVm> vm = cpu::ModVm::FromJs(v.As<Napi::Object>());
  if (vm->IsMask()) ThrowInvalidArgument(name, "a score program", "a mask program");
  return [vm](float s, int b, int h, int q, int kv) { return vm->Score(s, b, h, q, kv); };
}

Napi::Value CpuAttentionBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) ThrowInvalidArgument("args", "an object of cpuAttentionBackward arguments", DescribeValue(info[0]));
  Napi::Object o = info[0].As<Napi::Object>();
  std::vector<Napi::ObjectReference> refs;
  cpu::CpuBackwardArgs args;
  args.q = ParseView(o.Get("q"), "q", refs);
  args.k = ParseView(o.Get("k"), "k", refs);
  args.v = ParseView(o.Get("v"), "v", refs);
  args.out = ParseView(o.Get("out"), "out", refs);
  args.dOut = ParseView(o.Get("dOut"), "dOut", refs);
  args.lse = ParseView(o.Get("lse"), "lse", refs);
  Napi::Value scaleV = o.Get("scale");
  if (!scaleV.IsNumber() || !std::isfinite(scaleV.As<Napi::Number>().DoubleValue())) {
    ThrowInvalidArgument("scale", "a finite number", DescribeValue(scaleV));
  }
  args.scale = static_cast<float>(scaleV.As<Napi::Number>().DoubleValue());
  args.isCausal = GetBool(o, "isCausal", "isCausal");
  Napi::Value nt = o.Get("numThreads");
  if (Present(nt)) args.numThreads = static_cast<int>(GetInt(nt, "numThreads", 0, 4096, "an integer in [0, 4096]"));
  args.gradDtype = static_cast<cpu::DType>(
      GetInt(o.Get("gradDtype"), "gradDtype", 0, 2, "a float dtype code (0 bf16, 1 f16, 2 f32)"));
  if (Present(o.Get("cancel"))) args.cancel = ParseI32(o, "cancel", "cancel", 1, refs);
  Napi::Value maskV = o.Get("mask");
  if (Present(maskV)) {
    args.mask = ParseView(maskV, "mask", refs);
    args.hasMask = true;
  }
  std::unique_ptr<cpu::CpuBlockMask> bm;
  Napi::Value bmV = o.Get("blockMask");
  if (Present(bmV)) {
    bm = std::make_unique<cpu::CpuBlockMask>(cpujs::ParseBlockMask(bmV, refs));
    args.blockMask = bm.get();
  }
  if (Present(o.Get("scoreMod"))) args.scoreMod = ScoreProgram(o.Get("scoreMod"), "scoreMod");
  if (Present(o.Get("scoreGrad"))) args.scoreGrad = ScoreProgram(o.Get("scoreGrad"), "scoreGrad");
  Napi::Value mmV = o.Get("maskMod");
  if (Present(mmV)) {
    if (!mmV.IsObject()) ThrowInvalidArgument("maskMod", "a mod program object", DescribeValue(mmV));
    std::shared_ptr<const cpu::ModVm> vm = cpu::ModVm::FromJs(mmV.As<Napi::Object>());
    args.maskMod = [vm](int b, int h, int q, int kv) { return vm->Mask(b, h, q, kv); };
  }

  const int64_t B = args.q.shape[0], Hq = args.q.shape[1], Sq = args.q.shape[2], D = args.q.shape[3];
  const int64_t Hkv = args.k.shape[1], Skv = args.k.shape[2], Dv = args.v.shape[3];
  std::vector<Napi::ObjectReference> outs;
  // Captured-tensor gradients.
  Napi::Value capV = o.Get("captured");
  std::vector<Napi::TypedArray> capArrays;
  if (Present(capV)) {
    if (!capV.IsArray()) ThrowInvalidArgument("captured", "an array of captured-gradient descriptions", DescribeValue(capV));
    Napi::Array ca = capV.As<Napi::Array>();
    for (uint32_t c = 0; c < ca.Length(); ++c) {
      const std::string name = "captured[" + S(c) + "]";
      Napi::Value ev = ca.Get(c);
      if (!ev.IsObject()) ThrowInvalidArgument(name, "an object { numel, dtype, sites }", DescribeValue(ev));
      Napi::Object e = ev.As<Napi::Object>();
      cpu::CapturedGradArgs g;
      g.numel = GetInt(e.Get("numel"), name + ".numel", 0, int64_t(1) << 24, "a size in [0, 2^24]");
      g.dtype = static_cast<cpu::DType>(GetInt(e.Get("dtype"), name + ".dtype", 0, 2, "a float dtype code (0 bf16, 1 f16, 2 f32)"));
      Napi::Value sv = e.Get("sites");
      if (!sv.IsArray()) ThrowInvalidArgument(name + ".sites", "an array of { index, weight } programs", DescribeValue(sv));
      Napi::Array sa = sv.As<Napi::Array>();
      for (uint32_t s = 0; s < sa.Length(); ++s) {
        const std::string sn = name + ".sites[" + S(s) + "]";
        Napi::Value siteV = sa.Get(s);
        if (!siteV.IsObject()) ThrowInvalidArgument(sn, "an object { index, weight }", DescribeValue(siteV));
        Napi::Object so = siteV.As<Napi::Object>();
        g.sites.push_back({ScoreProgram(so.Get("index"), sn + ".index"), ScoreProgram(so.Get("weight"), sn + ".weight")});
      }
      capArrays.push_back(OutputArray(env, e, "out", ArrayTypeOf(g.dtype), g.numel, &g.out));
      args.captured.push_back(std::move(g));
    }
  }

  try {
    cpu::ValidateBackwardArgs(args, /*scanBlockMask=*/false);  // outputs are checked below once allocated
  } catch (const cpu::ArgError& e) {
    if (e.argument != "dq" && e.argument != "dk" && e.argument != "dv") ThrowInvalidArgument(e.argument, e.expected, e.received);
  }
  if (B * Hq * Sq * D > (int64_t(1) << 32) || B * Hkv * Skv * std::max(D, Dv) > (int64_t(1) << 32)) {
    ThrowInvalidArgument("q", "gradients of at most 2^32 elements", "larger ones");
  }
  const napi_typedarray_type gt = ArrayTypeOf(args.gradDtype);
  outs.push_back(Napi::Persistent(static_cast<Napi::Object>(OutputArray(env, o, "dq", gt, B * Hq * Sq * D, &args.dq))));
  outs.push_back(Napi::Persistent(static_cast<Napi::Object>(OutputArray(env, o, "dk", gt, B * Hkv * Skv * D, &args.dk))));
  outs.push_back(Napi::Persistent(static_cast<Napi::Object>(OutputArray(env, o, "dv", gt, B * Hkv * Skv * Dv, &args.dv))));
  for (auto& a : capArrays) outs.push_back(Napi::Persistent(static_cast<Napi::Object>(a)));

  auto* worker = new BackwardWorker(env, std::move(args), std::move(bm), std::move(refs), std::move(outs));
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

}  // namespace

void RegisterCpuBackward(Napi::Env env, Napi::Object exports) {
  exports.Set("cpuAttentionBackward", Napi::Function::New(env, Guarded<&CpuAttentionBackward>, "cpuAttentionBackward"));
}

}  // namespace flexattn
