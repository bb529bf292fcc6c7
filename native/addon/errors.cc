#include "addon/errors.h"

#include <cmath>
#include <map>
#include <mutex>

namespace flexattn {

namespace {
// Error classes registered by JS (lib/native.ts calls setErrorClasses once per
// environment). Keyed by env so worker_threads each get their own.
std::mutex g_mu;
std::map<napi_env, std::map<std::string, Napi::FunctionReference>>* g_classes =
    new std::map<napi_env, std::map<std::string, Napi::FunctionReference>>();

Napi::Function FindClass(Napi::Env env, const char* name) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_classes->find(env);
  if (it == g_classes->end()) return Napi::Function();
  auto jt = it->second.find(name);
  if (jt == it->second.end() || jt->second.IsEmpty()) return Napi::Function();
  return jt->second.Value();
}

const char* ClassName(ErrKind k) {
  switch (k) {
    case ErrKind::kCuda: return "CudaError";
    case ErrKind::kOutOfMemory: return "OutOfMemoryError";
    case ErrKind::kCudaUnavailable: return "CudaUnavailableError";
    case ErrKind::kNvrtcUnavailable: return "NvrtcUnavailableError";
    case ErrKind::kCompile: return "CompileError";
    case ErrKind::kInvalidArgument: return "InvalidArgumentError";
    case ErrKind::kDevice: return "DeviceError";
    case ErrKind::kDisposed: return "DisposedError";
    case ErrKind::kInternal: return "InternalError";
    case ErrKind::kGraphCapture: return "GraphCaptureError";
    case ErrKind::kNcclUnavailable: return "NcclUnavailableError";
    case ErrKind::kNcclVersion: return "NcclVersionError";
    case ErrKind::kNcclSymbol: return "NcclSymbolError";
    case ErrKind::kNccl: return "NcclError";
    default: return "FlexAttnError";
  }
}
// The stable codes of lib/errors.ts (ERROR_CODES), for the fallback error
// built when the JS classes are not registered.
const char* CodeOf(ErrKind k) {
  switch (k) {
    case ErrKind::kCuda: return "ERR_FLEXATTN_CUDA";
    case ErrKind::kOutOfMemory: return "ERR_FLEXATTN_OUT_OF_MEMORY";
    case ErrKind::kCudaUnavailable: return "ERR_FLEXATTN_CUDA_UNAVAILABLE";
    case ErrKind::kNvrtcUnavailable: return "ERR_FLEXATTN_NVRTC_UNAVAILABLE";
    case ErrKind::kCompile: return "ERR_FLEXATTN_COMPILE";
    case ErrKind::kInvalidArgument: return "ERR_FLEXATTN_INVALID_ARGUMENT";
    case ErrKind::kDevice: return "ERR_FLEXATTN_DEVICE";
    case ErrKind::kDisposed: return "ERR_FLEXATTN_DISPOSED";
    case ErrKind::kInternal: return "ERR_FLEXATTN_INTERNAL";
    case ErrKind::kGraphCapture: return "ERR_FLEXATTN_GRAPH_CAPTURE";
    case ErrKind::kNcclUnavailable: return "ERR_FLEXATTN_NCCL_UNAVAILABLE";
    case ErrKind::kNcclVersion: return "ERR_FLEXATTN_NCCL_VERSION";
    case ErrKind::kNcclSymbol: return "ERR_FLEXATTN_NCCL_SYMBOL";
    case ErrKind::kNccl: return "ERR_FLEXATTN_NCCL";
    default: return "ERR_FLEXATTN";
  }
}
}  // namespace

void SetErrorClasses(Napi::Env env, Napi::Object classes) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto& m = (*g_classes)[env];
  m.clear();
  Napi::Array names = classes.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); i++) {
    std::string n = names.Get(i).ToString();
    Napi::Value v = classes.Get(n);
    if (v.IsFunction()) m[n] = Napi::Persistent(v.As<Napi::Function>());
  }
  napi_env raw = env;
  env.AddCleanupHook([raw] {
    std::lock_guard<std::mutex> l(g_mu);
    g_classes->erase(raw);
  });
}

void ThrowInvalidArgument(const std::string& argument, const std::string& expected,
                          const std::string& received) {
  throw NativeError(ErrKind::kInvalidArgument,
                    argument + ": expected " + expected + (received.empty() ? "" : ", got " + received),
                    argument, expected, received);
}

void ThrowDeviceError(const std::string& argument, const std::string& expected,
                      const std::string& received) {
  throw NativeError(ErrKind::kDevice,
                    argument + ": expected " + expected + (received.empty() ? "" : ", got " + received),
                    argument, expected, received);
}

Napi::Error ToJsError(Napi::Env env, const NativeError& e) {
  Napi::HandleScope scope(env);
  auto S = [&](const std::string& s) { return Napi::String::New(env, s); };
  std::vector<napi_value> args;
  switch (e.kind) {
    case ErrKind::kCuda:
    case ErrKind::kOutOfMemory: args = {S(e.message), S(e.a), S(e.b), S(e.c)}; break;
    case ErrKind::kCudaUnavailable: args = {S(e.message), S(e.a)}; break;
    case ErrKind::kCompile: args = {S(e.message), S(e.a), S(e.b)}; break;
    case ErrKind::kInvalidArgument:
    case ErrKind::kDevice: args = {S(e.a), S(e.b), S(e.c)}; break;
    case ErrKind::kDisposed: args = {S(e.a)}; break;
    case ErrKind::kNcclVersion:
    case ErrKind::kNcclSymbol: args = {S(e.message), S(e.a), S(e.b)}; break;
    case ErrKind::kNccl: args = {S(e.message), S(e.a), S(e.b), S(e.c)}; break;
    default: args = {S(e.message)}; break;
  }
  Napi::Function ctor = FindClass(env, ClassName(e.kind));
  if (ctor.IsEmpty() && e.kind == ErrKind::kOutOfMemory) ctor = FindClass(env, "CudaError");
  if (ctor.IsEmpty() && e.kind == ErrKind::kDevice) ctor = FindClass(env, "InvalidArgumentError");
  if (!ctor.IsEmpty()) {
    try {
      Napi::Object obj = ctor.New(args);
      return Napi::Error(env, obj);
    } catch (const Napi::Error&) {
      // fall through to a plain Error
    }
  }
  Napi::Error err = Napi::Error::New(env, e.message);
  err.Set("name", S(ClassName(e.kind)));
  err.Set("code", S(CodeOf(e.kind)));
  switch (e.kind) {
    case ErrKind::kCuda:
    case ErrKind::kOutOfMemory:
      err.Set("cudaError", S(e.a)); err.Set("call", S(e.b)); err.Set("remedy", S(e.c)); break;
    case ErrKind::kCudaUnavailable: err.Set("details", S(e.a)); break;
    case ErrKind::kCompile: err.Set("source", S(e.a)); err.Set("log", S(e.b)); break;
    case ErrKind::kInvalidArgument:
    case ErrKind::kDevice:
      err.Set("argument", S(e.a)); err.Set("expected", S(e.b)); err.Set("received", S(e.c)); break;
    case ErrKind::kDisposed: err.Set("argument", S(e.a)); break;
    case ErrKind::kNcclVersion: err.Set("version", S(e.a)); err.Set("path", S(e.b)); break;
    case ErrKind::kNcclSymbol: err.Set("symbols", S(e.a)); err.Set("path", S(e.b)); break;
    case ErrKind::kNccl: err.Set("call", S(e.a)); err.Set("ncclResult", S(e.b)); err.Set("detail", S(e.c)); break;
    default: break;
  }
  return err;
}

NativeError CurrentExceptionAsNativeError(const char* where) {
  const std::string at = where ? where : "native call";
  try {
    throw;
  } catch (const NativeError& e) {
    return e;
  } catch (const std::bad_alloc&) {
    const std::string remedy =
        "  - Free tensors you no longer need (dispose()) or use smaller shapes\n"
        "  - Give the process more memory (container or ulimit limits)";
    return NativeError(ErrKind::kOutOfMemory,
                       "flexattn: host memory ran out in " + at + " (std::bad_alloc).\nPossible solutions:\n" + remedy,
                       "", at, remedy);
  } catch (const std::exception& e) {
    return NativeError(ErrKind::kInternal, "flexattn: internal error in " + at + ": " + e.what() +
                                               " (please report it with the call that caused it)");
  } catch (...) {
    return NativeError(ErrKind::kInternal, "flexattn: internal error in " + at +
                                               ": unknown native exception (please report it with the call that caused it)");
  }
}

std::string DescribeValue(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", d);
    return buf;
  }
  if (v.IsBigInt()) return "bigint";
  if (v.IsString()) return "string";
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "true" : "false";
  if (v.IsTypedArray()) return "typed array";
  if (v.IsArray()) return "array";
  if (v.IsFunction()) return "function";
  return "object";
}

double ArgNumber(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) ThrowInvalidArgument(name, "a number", DescribeValue(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) ThrowInvalidArgument(name, "a finite number", DescribeValue(v));
  return d;
}

int64_t ArgIndex(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) ThrowInvalidArgument(name, "a non-negative integer", DescribeValue(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d != std::floor(d) || d > 9007199254740992.0) {
    ThrowInvalidArgument(name, "a non-negative integer", DescribeValue(v));
  }
  return static_cast<int64_t>(d);
}

uint64_t ArgBigUint(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (v.IsBigInt()) {
    bool lossless = true;
    uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    return r;  // wraps modulo 2^64 (negative seeds are fine)
  }
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d >= 0 && d == std::floor(d) && d <= 18446744073709551615.0) return static_cast<uint64_t>(d);
  }
  ThrowInvalidArgument(name, "a bigint (or non-negative integer)", DescribeValue(v));
}

}  // namespace flexattn
