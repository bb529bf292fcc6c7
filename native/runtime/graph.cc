// CUDA graph capture and replay of a device's stream (the JS side is
// lib/serving/graph.ts). A capture records every launch, memset and
// device-to-device copy enqueued on the stream until it ends; nothing runs
// meanwhile. Relaxed capture mode: other threads (kernel loads on the JIT
// workers, the waiter thread finishing earlier copies) are not restricted, and
// the calls that cannot be recorded are refused before they reach the driver
// (Device::RequireNotCapturing: host copies, host waits, cache flushes), so a
// capture fails with a typed error, not a CUDA one. Blocks the capture
// allocates or frees are pinned to it (runtime/device.h) and stay pinned to
// its graph until the graph is disposed.
//
// Exports: beginCapture(device) -> id, endCapture(device) -> GraphHandle,
// abortCapture(device), captureStatus(device), graphPin(buffer),
// copyHtoDSpans(dst, src, spans); GraphHandle: launch(), dispose(), numNodes.
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "addon/addon.h"
#include "addon/errors.h"
#include "runtime/buffer.h"
#include "runtime/device.h"

namespace flexattn::rt {

namespace {

uint64_t g_nextCaptureId = 1;  // JS thread only

const cu::Driver& GraphDrv() {
  const cu::Driver& d = cu::Drv();
  if (!d.hasGraphs) {
    throw NativeError(ErrKind::kGraphCapture,
                      "flexattn: the CUDA driver at " + cu::DriverPath() +
                          " has no stream-capture / CUDA graph API (cuStreamBeginCapture_v2, "
                          "cuGraphInstantiateWithFlags: CUDA 11.4 or later); update the NVIDIA driver");
  }
  return d;
}

int DeviceArg(const Napi::CallbackInfo& info) {
  return static_cast<int>(ArgIndex(info, 0, "device"));
}

// Ends whatever capture the stream is in and drops its graph (a failed or
// abandoned capture): afterwards the stream runs work again.
void EndAndDrop(Device& dev) {
  const cu::Driver& d = cu::Drv();
  cu::CUgraph g = nullptr;
  int status = 0;
  if (d.cuStreamIsCapturing(dev.stream, &status) == cu::CUDA_SUCCESS && status != cu::CU_STREAM_CAPTURE_STATUS_NONE) {
    d.cuStreamEndCapture(dev.stream, &g);
    if (g) d.cuGraphDestroy(g);
  }
}

// The GraphHandle class of each Node environment (worker_threads each have their own).
std::mutex g_mu;
auto* g_ctors = new std::map<napi_env, Napi::FunctionReference>();  // never freed

class GraphHandle : public Napi::ObjectWrap<GraphHandle> {
 public:
  static Napi::Object New(Napi::Env env) {
    Napi::Function f;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      f = (*g_ctors)[env].Value();
    }
    return f.New({});
  }

  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "GraphHandle", {
      InstanceAccessor<&GraphHandle::NumNodes>("numNodes"),
      InstanceAccessor<&GraphHandle::Disposed>("disposed"),
      InstanceMethod<&GraphHandle::Launch>("launch"),
      InstanceMethod<&GraphHandle::Dispose>("dispose"),
    });
  }

  explicit GraphHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GraphHandle>(info) {}
  ~GraphHandle() override { Release(); }

  void Set(Device* dev, uint64_t id, cu::CUgraph graph, cu::CUgraphExec exec, size_t nodes) {
    dev_ = dev;
    id_ = id;
    graph_ = graph;
    exec_ = exec;
    nodes_ = nodes;
    live_ = true;
  }

 private:
  Napi::Value NumNodes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(nodes_));
  }
  Napi::Value Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !live_); }

  Napi::Value Launch(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      if (!live_) throw NativeError(ErrKind::kDisposed, "graph: used after dispose()", "graph");
      dev_->RequireNotCapturing("replaying a CUDA graph", "captures do not nest; replay it after captureGraph returns");
      if (!exec_) return info.Env().Undefined();  // nothing was captured
      dev_->MakeCurrent();
      cu::Check(cu::Drv().cuGraphLaunch(exec_, dev_->stream), "cuGraphLaunch");
      return info.Env().Undefined();
    });
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Release();
    return info.Env().Undefined();
  }

  // An executable graph still in flight is freed by the driver once it
  // completes; the blocks it pinned go back stream-ordered (later work that
  // reuses them runs after the replay).
  void Release() {
    if (!live_) return;
    live_ = false;
    const cu::Driver* d = cu::TryDrv(nullptr);
    if (d) {
      if (exec_) d->cuGraphExecDestroy(exec_);
      if (graph_) d->cuGraphDestroy(graph_);
    }
    exec_ = nullptr;
    graph_ = nullptr;
    try {
      dev_->Unpin(id_);
    } catch (...) {
      // Never throw from a finalizer.
    }
  }

  Device* dev_ = nullptr;
  uint64_t id_ = 0;
  cu::CUgraph graph_ = nullptr;
  cu::CUgraphExec exec_ = nullptr;
  size_t nodes_ = 0;
  bool live_ = false;
};

// beginCapture(device) -> capture id
Napi::Value BeginCapture(const Napi::CallbackInfo& info) {
  Device& dev = GetDevice(DeviceArg(info));
  const cu::Driver& d = GraphDrv();
  if (dev.Capturing()) {
    throw NativeError(ErrKind::kGraphCapture,
                      "flexattn: a CUDA graph is already being captured on device " + std::to_string(dev.index) +
                          "; captures cannot nest or overlap: await the first captureGraph(...) before starting another");
  }
  dev.MakeCurrent();
  cu::Check(d.cuStreamBeginCapture(dev.stream, cu::CU_STREAM_CAPTURE_MODE_RELAXED), "cuStreamBeginCapture");
  uint64_t id = g_nextCaptureId++;
  dev.SetCapturing(id);
  return Napi::Number::New(info.Env(), static_cast<double>(id));
}

// endCapture(device) -> GraphHandle. On failure the capture is over too: its
// pins are dropped (nothing was recorded that will ever run) and the error says why.
Napi::Value EndCapture(const Napi::CallbackInfo& info) {
  Device& dev = GetDevice(DeviceArg(info));
  const cu::Driver& d = GraphDrv();
  uint64_t id = dev.Capturing();
  if (!id) throw NativeError(ErrKind::kGraphCapture, "flexattn: endCapture: no capture is in progress on device " + std::to_string(dev.index));
  dev.MakeCurrent();
  cu::CUgraph graph = nullptr;
  cu::CUresult r = d.cuStreamEndCapture(dev.stream, &graph);
  dev.SetCapturing(0);
  auto fail = [&](const std::string& why) {
    if (graph) d.cuGraphDestroy(graph);
    EndAndDrop(dev);
    dev.Unpin(id);
    throw NativeError(ErrKind::kGraphCapture, "flexattn: the CUDA graph capture on device " + std::to_string(dev.index) +
                                                  " failed: " + why + "; nothing was recorded and the device works as before");
  };
  if (r != cu::CUDA_SUCCESS || !graph) {
    fail(cu::ErrorName(r) + " (" + cu::ErrorString(r) + ") from cuStreamEndCapture: a call during the capture " +
         "could not be recorded (work on another stream, or a synchronous CUDA call)");
  }
  size_t nodes = 0;
  r = d.cuGraphGetNodes(graph, nullptr, &nodes);
  if (r != cu::CUDA_SUCCESS) fail(cu::ErrorName(r) + " from cuGraphGetNodes");
  cu::CUgraphExec exec = nullptr;
  if (nodes > 0) {
    r = d.cuGraphInstantiateWithFlags(&exec, graph, 0);
    if (r != cu::CUDA_SUCCESS) fail(cu::ErrorName(r) + " (" + cu::ErrorString(r) + ") from cuGraphInstantiateWithFlags");
  }
  Napi::Object obj = GraphHandle::New(info.Env());
  GraphHandle::Unwrap(obj)->Set(&dev, id, graph, exec, nodes);
  return obj;
}

// abortCapture(device): ends a capture whose callback failed; its graph is dropped.
Napi::Value AbortCapture(const Napi::CallbackInfo& info) {
  Device& dev = GetDevice(DeviceArg(info));
  uint64_t id = dev.Capturing();
  if (!id) return info.Env().Undefined();
  dev.MakeCurrent();
  dev.SetCapturing(0);
  EndAndDrop(dev);
  dev.Unpin(id);
  return info.Env().Undefined();
}

// captureStatus(device) -> { capturing, id, streamCapturing } (what flexattn
// believes and what the driver says; they agree unless something is wrong).
Napi::Value CaptureStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Device& dev = GetDevice(DeviceArg(info));
  const cu::Driver& d = cu::Drv();
  int status = 0;
  if (d.hasGraphs) cu::Check(d.cuStreamIsCapturing(dev.stream, &status), "cuStreamIsCapturing");
  Napi::Object o = Napi::Object::New(env);
  o.Set("capturing", Napi::Boolean::New(env, dev.Capturing() != 0));
  o.Set("id", Napi::Number::New(env, static_cast<double>(dev.Capturing())));
  o.Set("streamCapturing", Napi::Boolean::New(env, status != cu::CU_STREAM_CAPTURE_STATUS_NONE));
  o.Set("graphsSupported", Napi::Boolean::New(env, d.hasGraphs));
  return o;
}

// graphPin(buffer): a block a captured kernel reads stays out of the free
// lists until the capture's graph is disposed, even if its tensor is disposed
// first. No-op when no capture is in progress on its device.
Napi::Value GraphPin(const Napi::CallbackInfo& info) {
  DeviceBuffer* b = DeviceBuffer::FromValue(info[0], "buffer");
  Device& dev = b->dev();
  if (dev.Capturing()) dev.Pin(dev.Capturing(), b->ptr());
  return info.Env().Undefined();
}

// copyHtoDSpans(dst, src, spans): for each pair (byteOffset, bytes) of `spans`
// (a Float64Array), copies src[byteOffset, +bytes) to dst at the same offset,
// through one pinned staging block: a replay's table updates in one call.
Napi::Value CopyHtoDSpans(const Napi::CallbackInfo& info) {
  DeviceBuffer* dst = DeviceBuffer::FromValue(info[0], "dst");
  if (!info[1].IsTypedArray()) ThrowInvalidArgument("src", "a typed array", DescribeValue(info[1]));
  Napi::TypedArray src = info[1].As<Napi::TypedArray>();
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    ThrowInvalidArgument("spans", "a Float64Array of (byteOffset, bytes) pairs", DescribeValue(info[2]));
  }
  Napi::Float64Array spans = info[2].As<Napi::Float64Array>();
  const uint8_t* data = static_cast<const uint8_t*>(src.ArrayBuffer().Data()) + src.ByteOffset();
  size_t srcBytes = src.ByteLength(), n = spans.ElementLength() / 2, total = 0;
  for (size_t i = 0; i < n; i++) {
    double off = spans[2 * i], len = spans[2 * i + 1];
    if (!(off >= 0) || !(len >= 0) || off + len > static_cast<double>(srcBytes)) {
      ThrowInvalidArgument("spans", "ranges inside src (" + std::to_string(srcBytes) + " bytes)",
                           std::to_string(off) + " + " + std::to_string(len));
    }
    dst->CheckRange(static_cast<int64_t>(off), static_cast<int64_t>(len), "spans", "spans");
    total += static_cast<size_t>(len);
  }
  if (total == 0) return info.Env().Undefined();
  Device& dev = dst->dev();
  dev.RequireNotCapturing("copying host data to the GPU", "update captured inputs before or after the capture");
  const cu::Driver& d = cu::Drv();
  PinnedBlock* b = dev.AcquirePinned(total);
  size_t at = 0;
  cu::CUresult r = cu::CUDA_SUCCESS;
  for (size_t i = 0; i < n && r == cu::CUDA_SUCCESS; i++) {
    size_t off = static_cast<size_t>(spans[2 * i]), len = static_cast<size_t>(spans[2 * i + 1]);
    if (len == 0) continue;
    std::memcpy(static_cast<uint8_t*>(b->ptr) + at, data + off, len);
    r = d.cuMemcpyHtoDAsync(dst->ptr() + off, static_cast<uint8_t*>(b->ptr) + at, len, dev.stream);
    at += len;
  }
  // Recorded even after a failed copy: the earlier ones may still read the block.
  dev.ReleasePinned(b, true);
  cu::Check(r, "cuMemcpyHtoDAsync (copyHtoDSpans)");
  return info.Env().Undefined();
}

}  // namespace
}  // namespace flexattn::rt

namespace flexattn {
void RegisterGraphs(Napi::Env env, Napi::Object exports) {
  using namespace rt;
  Napi::Function f = GraphHandle::Define(env);
  {
    std::lock_guard<std::mutex> lock(g_mu);
    (*g_ctors)[env] = Napi::Persistent(f);
  }
  napi_env raw = env;
  env.AddCleanupHook([raw] {
    std::lock_guard<std::mutex> l(g_mu);
    g_ctors->erase(raw);
  });
  exports.Set("GraphHandle", f);
  exports.Set("beginCapture", Napi::Function::New<Guarded<BeginCapture>>(env, "beginCapture"));
  exports.Set("endCapture", Napi::Function::New<Guarded<EndCapture>>(env, "endCapture"));
  exports.Set("abortCapture", Napi::Function::New<Guarded<AbortCapture>>(env, "abortCapture"));
  exports.Set("captureStatus", Napi::Function::New<Guarded<CaptureStatus>>(env, "captureStatus"));
  exports.Set("graphPin", Napi::Function::New<Guarded<GraphPin>>(env, "graphPin"));
  exports.Set("copyHtoDSpans", Napi::Function::New<Guarded<CopyHtoDSpans>>(env, "copyHtoDSpans"));
}
}  // namespace flexattn
