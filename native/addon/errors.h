// Typed native errors. Native code throws NativeError (a plain C++ exception,
// safe on any thread); at the Node-API boundary it becomes an instance of the
// JS class registered with setErrorClasses (lib/errors.ts).
#pragma once
#include <napi.h>

#include <exception>
#include <string>

namespace flexattn {

enum class ErrKind {
  kGeneric,           // FlexAttnError(message)
  kCuda,              // CudaError(message, code, call, remedy)
  kOutOfMemory,       // OutOfMemoryError(message, code, call, remedy)
  kCudaUnavailable,   // CudaUnavailableError(message, details)
  kNvrtcUnavailable,  // NvrtcUnavailableError(message)
  kCompile,           // CompileError(message, source, log)
  kInvalidArgument,   // InvalidArgumentError(argument, expected, received)
  kDevice,            // DeviceError(argument, expected, received)
  kDisposed,          // DisposedError(argument)
  kInternal,          // InternalError(message): a bug in flexattn
  kGraphCapture,      // GraphCaptureError(message): not allowed while a CUDA graph is captured
  kNcclUnavailable,   // NcclUnavailableError(message): no usable libnccl found
  kNcclVersion,       // NcclVersionError(message, version, path): libnccl older than 2.18
  kNcclSymbol,        // NcclSymbolError(message, symbols, path): libnccl lacks a symbol
  kNccl,              // NcclError(message, call, result, detail): an NCCL call failed
};

struct NativeError : std::exception {
  ErrKind kind = ErrKind::kGeneric;
  std::string message;
  // Constructor arguments after `message` (meaning depends on kind):
  // kCuda/kOutOfMemory: a=code b=call c=remedy; kCudaUnavailable: a=details;
  // kCompile: a=source b=log; kInvalidArgument/kDevice: a=argument
  // b=expected c=received (message unused); kDisposed: a=argument;
  // kNcclVersion: a=version b=path; kNcclSymbol: a=symbols b=path;
  // kNccl: a=call b=result name c=detail.
  std::string a, b, c;
  NativeError() = default;
  NativeError(ErrKind k, std::string msg, std::string a_ = "", std::string b_ = "", std::string c_ = "")
      : kind(k), message(std::move(msg)), a(std::move(a_)), b(std::move(b_)), c(std::move(c_)) {}
  const char* what() const noexcept override { return message.c_str(); }
};

[[noreturn]] void ThrowInvalidArgument(const std::string& argument, const std::string& expected,
                                       const std::string& received = "");
[[noreturn]] void ThrowDeviceError(const std::string& argument, const std::string& expected,
                                   const std::string& received = "");

// Stores persistent references to the JS error classes (setErrorClasses).
void SetErrorClasses(Napi::Env env, Napi::Object classes);

// Builds the JS error object for e (falls back to a plain Error carrying the
// same fields when setErrorClasses was not called).
Napi::Error ToJsError(Napi::Env env, const NativeError& e);

// The NativeError for an exception that is not one: std::bad_alloc is host
// memory running out (OutOfMemoryError), anything else a bug (InternalError).
// Call inside a catch block; `where` names the native entry point.
NativeError CurrentExceptionAsNativeError(const char* where);

// Runs f() and converts every C++ exception into a typed JS exception: a
// NativeError into its class, std::exception and anything else through
// CurrentExceptionAsNativeError (an escaping std::exception would otherwise
// terminate the process). JS exceptions (Napi::Error) pass through; lib/native.ts
// types the few that are not flexattn errors.
template <typename F>
auto Guard(Napi::Env env, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const NativeError& e) {
    throw ToJsError(env, e);
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throw ToJsError(env, CurrentExceptionAsNativeError("native call"));
  }
}

// Napi callback wrapper: `Guarded<&Fn>` converts NativeError thrown by Fn.
template <Napi::Value (*Fn)(const Napi::CallbackInfo&)>
Napi::Value Guarded(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&] { return Fn(info); });
}

// Argument helpers (throw InvalidArgumentError naming `name`).
double ArgNumber(const Napi::CallbackInfo& info, size_t i, const char* name);
// Non-negative integer that fits in 2^53.
int64_t ArgIndex(const Napi::CallbackInfo& info, size_t i, const char* name);
uint64_t ArgBigUint(const Napi::CallbackInfo& info, size_t i, const char* name);
std::string DescribeValue(const Napi::Value& v);

}  // namespace flexattn
