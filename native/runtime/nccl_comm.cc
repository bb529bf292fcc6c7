// JS exports of the NCCL communicator (lib/parallel/communicator.ts):
// ncclStatus, ncclGetUniqueId, ncclCommCreate and the NcclComm handle
// (ringShift, allGather, destroy). One NcclComm drives this process's local
// ranks: every rank of the job (ncclCommInitAll over `devices`) or one rank of
// a job spread over processes (ncclCommInitRank with the caller's unique id).
//
// Ordering (no host wait anywhere): each local rank has its own communication
// stream. A collective records an event on the rank's compute stream (the
// device's one stream, runtime/device.h) on the JS thread, so the comm stream
// waits for the work that wrote the send buffer; the NCCL calls are issued on
// the communicator's own thread (runtime/serial_worker.h: NCCL may block, and
// calls must stay in order); then, back on the JS thread, the compute stream
// waits for an event recorded after them, before the promise resolves. Work
// enqueued after `await` is thus ordered after the transfer. The JS layer holds
// the tensors (Tensor.retain) until then, so their blocks are not reused early.
//
// NVLink SHARP (NVLS) is kept off: NCCL_NVLS_ENABLE=0 is put in the
// environment before the first ncclCommInit* unless the user set it.
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "addon/addon.h"
#include "addon/errors.h"
#include "cuda/nccl_api.h"
#include "runtime/buffer.h"
#include "runtime/device.h"
#include "runtime/serial_worker.h"

namespace flexattn::rt {

namespace {

using nccl::ncclComm_t;

std::vector<int> ArgIntArray(const Napi::Value& v, const char* name) {
  if (!v.IsArray()) ThrowInvalidArgument(name, "an array of integers", DescribeValue(v));
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int> out;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value x = a.Get(i);
    double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : -1;
    if (!x.IsNumber() || d < 0 || d != static_cast<int>(d)) {
      ThrowInvalidArgument(std::string(name) + "[" + std::to_string(i) + "]", "a non-negative integer", DescribeValue(x));
    }
    out.push_back(static_cast<int>(d));
  }
  return out;
}

// Byte offsets (below 2^53: any buffer size).
std::vector<int64_t> ArgOffsets(const Napi::Value& v, const char* name) {
  if (!v.IsArray()) ThrowInvalidArgument(name, "an array of byte offsets", DescribeValue(v));
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int64_t> out;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value x = a.Get(i);
    double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : -1;
    if (!x.IsNumber() || !(d >= 0) || d != static_cast<double>(static_cast<int64_t>(d)) || d > 9007199254740992.0) {
      ThrowInvalidArgument(std::string(name) + "[" + std::to_string(i) + "]", "a non-negative integer", DescribeValue(x));
    }
    out.push_back(static_cast<int64_t>(d));
  }
  return out;
}

// Events recorded per call; destroyed on the JS thread once the compute stream waits on them.
struct CallEvents {
  std::vector<cu::CUevent> ready, done;
  ~CallEvents() {
    const cu::Driver* d = cu::TryDrv(nullptr);
    if (!d) return;
    for (auto* v : {&ready, &done}) {
      for (cu::CUevent e : *v) {
        if (e) d->cuEventDestroy(e);
      }
    }
  }
};

// On the communicator's thread NCCL switches devices itself (cudaSetDevice), so
// Device::MakeCurrent's per-thread cache of the current context cannot be
// trusted there: set the context every time.
void SetCurrent(const Device* d) { cu::Check(cu::Drv().cuCtxSetCurrent(d->ctx), "cuCtxSetCurrent (NCCL thread)"); }

// One operand of a transfer: a device address range of a DeviceBuffer.
struct Span {
  cu::CUdeviceptr ptr = 0;
  int device = -1;
};

class NcclComm : public Napi::ObjectWrap<NcclComm> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NcclComm",
                       {
                           InstanceMethod<&NcclComm::G<&NcclComm::RingShift>>("ringShift"),
                           InstanceMethod<&NcclComm::G<&NcclComm::AllGather>>("allGather"),
                           InstanceMethod<&NcclComm::G<&NcclComm::Destroy>>("destroy"),
                       });
  }
  explicit NcclComm(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NcclComm>(info) {}
  ~NcclComm() override {
    // Never disposed: destroy the communicators on their thread (after any queued work).
    if (ready_ && !destroyed_ && worker_) {
      destroyed_ = true;
      worker_->PushDetached(DestroyWork());
    }
    if (worker_) worker_->Close();
  }

  // Sets up the handle and queues the init on its thread; resolves with `self`.
  Napi::Promise Start(Napi::Env env, Napi::Object self, std::vector<int> devices, int size, int rank,
                      const nccl::ncclUniqueId* id) {
    const nccl::Api& api = nccl::Nccl();
    devices_ = std::move(devices);
    size_ = size;
    for (int d : devices_) {
      Device& dev = GetDevice(d, "devices");
      dev.RequireNotCapturing("creating a communicator", "create it before captureGraph");
      devs_.push_back(&dev);
      cu::CUstream s = nullptr;
      cu::Check(cu::Drv().cuStreamCreate(&s, cu::CU_STREAM_NON_BLOCKING), "cuStreamCreate (NCCL stream)");
      streams_.push_back(s);
    }
    comms_.assign(devices_.size(), nullptr);
    // Read by NCCL at its first init; setenv(..., 0) keeps a value the user chose.
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    worker_ = SerialWorker::Create(env, "flexattn:nccl");
    auto ref = std::make_shared<Napi::ObjectReference>(Napi::Persistent(self));
    bool byId = id != nullptr;
    nccl::ncclUniqueId uid{};
    if (byId) uid = *id;
    return worker_->Push(
        env,
        [this, &api, byId, uid, rank] {
          if (byId) {
            SetCurrent(devs_[0]);  // ncclCommInitRank takes the current device
            nccl::Check(api.ncclCommInitRank(&comms_[0], size_, uid, rank),
                        "ncclCommInitRank(rank " + std::to_string(rank) + " of " + std::to_string(size_) + ")");
          } else {
            nccl::Check(api.ncclCommInitAll(comms_.data(), static_cast<int>(devices_.size()), devices_.data()),
                        "ncclCommInitAll(" + std::to_string(devices_.size()) + " devices)");
          }
        },
        [this, ref](Napi::Env e) -> Napi::Value {
          ready_ = true;
          Napi::Value v = ref->Value();
          ref->Reset();
          return v;
        });
  }

 private:
  // Typed errors out of the methods (a NativeError must not escape into Node-API).
  template <Napi::Value (NcclComm::*M)(const Napi::CallbackInfo&)>
  Napi::Value G(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&] { return (this->*M)(info); });
  }

  // By value: also run from the finalizer, when `this` goes away.
  std::function<void()> DestroyWork() {
    const nccl::Api* api = nccl::TryNccl(nullptr);
    std::vector<ncclComm_t> comms = comms_;
    std::vector<cu::CUstream> streams = streams_;
    std::vector<Device*> devs = devs_;
    return [api, comms, streams, devs] {
      for (size_t i = 0; i < comms.size(); i++) {
        SetCurrent(devs[i]);
        if (api && comms[i]) nccl::Check(api->ncclCommDestroy(comms[i]), "ncclCommDestroy");
        cu::Drv().cuStreamDestroy(streams[i]);
      }
    };
  }

  // On the worker thread, after every earlier task: destroys what the init made.
  void DestroyWorkNow() {
    std::function<void()> w = DestroyWork();
    comms_.assign(comms_.size(), nullptr);
    w();
  }

  void RequireReady(const char* what) const {
    if (destroyed_) throw NativeError(ErrKind::kDisposed, "", "communicator");
    if (!ready_) ThrowInvalidArgument("communicator", std::string("an initialized communicator for ") + what,
                                      "one whose creation has not finished");
  }

  // Buffers of `arg` (array of DeviceBuffer), byte offsets, on the local ranks' devices.
  std::vector<Span> Spans(const Napi::Value& bufs, const Napi::Value& offs, const char* arg, int64_t bytes) {
    if (!bufs.IsArray() || bufs.As<Napi::Array>().Length() != devices_.size()) {
      ThrowInvalidArgument(arg, "an array of " + std::to_string(devices_.size()) + " device buffers (one per local rank)",
                           DescribeValue(bufs));
    }
    std::vector<int64_t> off = ArgOffsets(offs, "byteOffsets");
    std::vector<Span> out;
    for (uint32_t i = 0; i < devices_.size(); i++) {
      std::string name = std::string(arg) + "[" + std::to_string(i) + "]";
      DeviceBuffer* b = DeviceBuffer::FromValue(bufs.As<Napi::Array>().Get(i), name.c_str());
      if (b->device() != devices_[i]) {
        ThrowDeviceError(name, "a buffer on cuda:" + std::to_string(devices_[i]) + " (local rank " + std::to_string(i) + ")",
                         "cuda:" + std::to_string(b->device()));
      }
      if (i >= off.size()) ThrowInvalidArgument("byteOffsets", "one offset per local rank", std::to_string(off.size()));
      b->CheckRange(off[i], bytes, "byteOffset", "bytes");
      out.push_back({b->ptr() + static_cast<cu::CUdeviceptr>(off[i]), b->device()});
    }
    return out;
  }

  // Records `ready` on every compute stream and makes the events of a call.
  std::shared_ptr<CallEvents> MakeEvents() {
    const cu::Driver& d = cu::Drv();
    auto ev = std::make_shared<CallEvents>();
    for (Device* dev : devs_) {
      dev->MakeCurrent();
      dev->RequireNotCapturing("an NCCL transfer", "communicate outside captureGraph");
      cu::CUevent r = nullptr, e = nullptr;
      cu::Check(d.cuEventCreate(&r, cu::CU_EVENT_DISABLE_TIMING), "cuEventCreate");
      ev->ready.push_back(r);
      cu::Check(d.cuEventCreate(&e, cu::CU_EVENT_DISABLE_TIMING), "cuEventCreate");
      ev->done.push_back(e);
      cu::Check(d.cuEventRecord(r, dev->stream), "cuEventRecord (before NCCL)");
    }
    return ev;
  }

  // Queues `issue` (the NCCL calls for local rank i, inside one group) on the thread.
  Napi::Promise Queue(Napi::Env env, Napi::Object self, std::shared_ptr<CallEvents> ev,
                      std::function<void(const nccl::Api&, size_t, ncclComm_t, cu::CUstream)> issue, std::string what) {
    const nccl::Api& api = nccl::Nccl();
    auto ref = std::make_shared<Napi::ObjectReference>(Napi::Persistent(self));
    return worker_->Push(
        env,
        [this, &api, ev, issue, what] {
          const cu::Driver& d = cu::Drv();
          for (size_t i = 0; i < comms_.size(); i++) {
            nccl::ncclResult_t async = nccl::ncclSuccess;
            nccl::Check(api.ncclCommGetAsyncError(comms_[i], &async), "ncclCommGetAsyncError", comms_[i]);
            nccl::Check(async, what + " (an earlier NCCL operation failed)", comms_[i]);
            SetCurrent(devs_[i]);
            cu::Check(d.cuStreamWaitEvent(streams_[i], ev->ready[i], 0), "cuStreamWaitEvent (NCCL stream)");
          }
          nccl::Check(api.ncclGroupStart(), "ncclGroupStart");
          try {
            for (size_t i = 0; i < comms_.size(); i++) issue(api, i, comms_[i], streams_[i]);
          } catch (...) {
            api.ncclGroupEnd();
            throw;
          }
          nccl::Check(api.ncclGroupEnd(), "ncclGroupEnd (" + what + ")", comms_.size() == 1 ? comms_[0] : nullptr);
          for (size_t i = 0; i < comms_.size(); i++) {
            SetCurrent(devs_[i]);
            cu::Check(d.cuEventRecord(ev->done[i], streams_[i]), "cuEventRecord (after NCCL)");
          }
        },
        [this, ev, ref](Napi::Env e) -> Napi::Value {
          ref->Reset();
          const cu::Driver& d = cu::Drv();
          for (size_t i = 0; i < devs_.size(); i++) {
            devs_[i]->MakeCurrent();
            cu::Check(d.cuStreamWaitEvent(devs_[i]->stream, ev->done[i], 0), "cuStreamWaitEvent (after NCCL)");
          }
          return e.Undefined();
        });
  }

  // ringShift(send[], sendOffsets[], recv[], recvOffsets[], bytes, ranks[])
  Napi::Value RingShift(const Napi::CallbackInfo& info) {
    RequireReady("ringShift");
    int64_t bytes = ArgIndex(info, 4, "bytes");
    std::vector<Span> send = Spans(info[0], info[1], "send", bytes);
    std::vector<Span> recv = Spans(info[2], info[3], "recv", bytes);
    std::vector<int> ranks = ArgIntArray(info[5], "ranks");
    if (ranks.size() != devices_.size()) ThrowInvalidArgument("ranks", "one rank per local device", std::to_string(ranks.size()));
    int size = size_;
    auto ev = MakeEvents();
    return Queue(info.Env(), info.This().As<Napi::Object>(), ev,
                 [send, recv, ranks, bytes, size](const nccl::Api& api, size_t i, ncclComm_t c, cu::CUstream s) {
                   int next = (ranks[i] + 1) % size, prev = (ranks[i] - 1 + size) % size;
                   auto n = static_cast<size_t>(bytes);
                   nccl::Check(api.ncclSend(reinterpret_cast<const void*>(send[i].ptr), n, nccl::ncclUint8, next, c, s),
                               "ncclSend(to rank " + std::to_string(next) + ")", c);
                   nccl::Check(api.ncclRecv(reinterpret_cast<void*>(recv[i].ptr), n, nccl::ncclUint8, prev, c, s),
                               "ncclRecv(from rank " + std::to_string(prev) + ")", c);
                 },
                 "ringShift");
  }

  // allGather(input[], inputOffsets[], output[], outputOffsets[], bytesPerRank)
  Napi::Value AllGather(const Napi::CallbackInfo& info) {
    RequireReady("allGather");
    int64_t bytes = ArgIndex(info, 4, "bytes");
    std::vector<Span> in = Spans(info[0], info[1], "input", bytes);
    std::vector<Span> out = Spans(info[2], info[3], "output", bytes * size_);
    auto ev = MakeEvents();
    return Queue(info.Env(), info.This().As<Napi::Object>(), ev,
                 [in, out, bytes](const nccl::Api& api, size_t i, ncclComm_t c, cu::CUstream s) {
                   nccl::Check(api.ncclAllGather(reinterpret_cast<const void*>(in[i].ptr), reinterpret_cast<void*>(out[i].ptr),
                                                 static_cast<size_t>(bytes), nccl::ncclUint8, c, s),
                               "ncclAllGather", c);
                 },
                 "allGather");
  }

  // destroy(): idempotent; resolves once the communicators are destroyed.
  Napi::Value Destroy(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (destroyed_ || !worker_ || worker_->closed()) {
      auto d = Napi::Promise::Deferred::New(env);
      d.Resolve(env.Undefined());
      return d.Promise();
    }
    destroyed_ = true;
    // Queued after the init (FIFO), so it sees the communicators even when
    // dispose() came before createCommunicator resolved; `self` stays alive until then.
    auto ref = std::make_shared<Napi::ObjectReference>(Napi::Persistent(info.This().As<Napi::Object>()));
    Napi::Promise p = worker_->Push(
        env, [this] { DestroyWorkNow(); },
        [ref](Napi::Env e) -> Napi::Value {
          ref->Reset();
          return e.Undefined();
        });
    worker_->Close();
    return p;
  }

  std::shared_ptr<SerialWorker> worker_;
  std::vector<int> devices_;
  std::vector<Device*> devs_;
  std::vector<cu::CUstream> streams_;
  std::vector<ncclComm_t> comms_;
  int size_ = 0;
  bool ready_ = false, destroyed_ = false;
};

std::mutex g_ctor_mu;  // worker_threads register concurrently
std::map<napi_env, Napi::FunctionReference>* g_ctor = new std::map<napi_env, Napi::FunctionReference>();

Napi::Value NcclStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  std::string err;
  const nccl::Api* a = nccl::TryNccl(&err);
  o.Set("loaded", Napi::Boolean::New(env, a != nullptr));
  o.Set("path", Napi::String::New(env, a ? nccl::NcclPath() : ""));
  o.Set("version", Napi::String::New(env, a ? nccl::VersionString(a->versionCode) : ""));
  o.Set("error", Napi::String::New(env, a ? "" : err));
  if (!a) {
    // The typed error, for callers that want to throw it (ncclInfo() never does).
    try {
      nccl::Nccl();
    } catch (const NativeError& e) {
      o.Set("errorObject", ToJsError(env, e).Value());
    }
  }
  return o;
}

Napi::Value GetUniqueId(const Napi::CallbackInfo& info) {
  const nccl::Api& api = nccl::Nccl();
  nccl::ncclUniqueId id{};
  // NCCL may initialize the CUDA runtime here and make a context current on
  // this (the JS) thread: put back the one Device::MakeCurrent believes is current.
  const cu::Driver* d = cu::TryDrv(nullptr);
  cu::CUcontext before = nullptr;
  if (d) d->cuCtxGetCurrent(&before);
  nccl::ncclResult_t r = api.ncclGetUniqueId(&id);
  if (d) d->cuCtxSetCurrent(before);
  nccl::Check(r, "ncclGetUniqueId");
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(info.Env(), nccl::kUniqueIdBytes);
  std::memcpy(ab.Data(), id.internal, nccl::kUniqueIdBytes);
  return ab;
}

// ncclCommCreate(devices[], size, rank, uniqueId | null) -> Promise<NcclComm>.
// Without a unique id: one process, `devices` are ranks 0..n-1 (size == n).
Napi::Value CommCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int> devices = ArgIntArray(info[0], "devices");
  int64_t size = ArgIndex(info, 1, "size");
  int64_t rank = ArgIndex(info, 2, "rank");
  if (devices.empty()) ThrowInvalidArgument("devices", "at least one device");
  nccl::ncclUniqueId id{};
  const nccl::ncclUniqueId* idp = nullptr;
  if (!info[3].IsNull() && !info[3].IsUndefined()) {
    if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().ByteLength() != nccl::kUniqueIdBytes) {
      ThrowInvalidArgument("uniqueId", "a Uint8Array of 128 bytes (from ncclUniqueId())", DescribeValue(info[3]));
    }
    Napi::TypedArray t = info[3].As<Napi::TypedArray>();
    std::memcpy(id.internal, static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset(), nccl::kUniqueIdBytes);
    idp = &id;
    if (devices.size() != 1) ThrowInvalidArgument("devices", "one device with a unique id (one rank per process)");
  } else if (static_cast<size_t>(size) != devices.size() || rank != 0) {
    ThrowInvalidArgument("size", "the number of devices without a unique id", std::to_string(size));
  }
  if (size < 1 || rank >= size) ThrowInvalidArgument("rank", "a rank in [0, size)", std::to_string(rank));
  Napi::Function ctor;
  {
    std::lock_guard<std::mutex> lock(g_ctor_mu);
    ctor = (*g_ctor)[env].Value();
  }
  Napi::Object self = ctor.New({});
  NcclComm* c = NcclComm::Unwrap(self);
  return c->Start(env, self, std::move(devices), static_cast<int>(size), static_cast<int>(rank), idp);
}

}  // namespace
}  // namespace flexattn::rt

namespace flexattn {
void RegisterNccl(Napi::Env env, Napi::Object exports) {
  using namespace rt;
  Napi::Function ctor = NcclComm::Init(env);
  {
    std::lock_guard<std::mutex> lock(g_ctor_mu);
    (*g_ctor)[env] = Napi::Persistent(ctor);
  }
  napi_env raw = env;
  env.AddCleanupHook([raw] {
    std::lock_guard<std::mutex> lock(g_ctor_mu);
    g_ctor->erase(raw);
  });
  exports.Set("NcclComm", ctor);
  exports.Set("ncclStatus", Napi::Function::New<Guarded<NcclStatus>>(env, "ncclStatus"));
  exports.Set("ncclGetUniqueId", Napi::Function::New<Guarded<GetUniqueId>>(env, "ncclGetUniqueId"));
  exports.Set("ncclCommCreate", Napi::Function::New<Guarded<CommCreate>>(env, "ncclCommCreate"));
}
}  // namespace flexattn
