#include "runtime/waiter.h"

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "addon/errors.h"

namespace flexattn::rt {

namespace {

// ---- D2H result prefault -----------------------------------------------------
// A fresh ArrayBuffer is calloc'ed memory (large ones are fresh mmap pages), so
// the staging -> result memcpy page-faults on every 4 KiB page (several times
// slower than a copy into mapped memory; figures in
// bench/results/kernel-notes.md). The waiter thread maps the
// pages in one batch (MADV_POPULATE_WRITE, Linux 5.14+; plus MADV_HUGEPAGE for
// big buffers, fewer and larger pages) before it waits on the event, so the
// fault cost overlaps the GPU work and the DMA. Both are hints that never
// change the (zero) contents; where unsupported, the memcpy faults as before.
constexpr size_t kPrefaultMin = 1 << 20;   // below: not worth a syscall
constexpr size_t kHugePageMin = 32 << 20;  // glibc mmaps chunks this large: never a shared heap VMA
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

void Prefault(uint8_t* p, size_t n) {
#if defined(__linux__)
  static std::atomic<bool> populateUnsupported{false};
  if (n < kPrefaultMin) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t lo = reinterpret_cast<uintptr_t>(p), hi = lo + n;
#ifdef MADV_HUGEPAGE
  if (n >= kHugePageMin) {
    const uintptr_t huge = 2u << 20;
    uintptr_t a = (lo + huge - 1) & ~(huge - 1), e = hi & ~(huge - 1);
    if (e > a) madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE);
  }
#endif
  if (populateUnsupported.load(std::memory_order_relaxed)) return;
  // Whole pages inside the buffer only.
  uintptr_t a = (lo + page - 1) & ~(page - 1), e = hi & ~(page - 1);
  if (e > a && madvise(reinterpret_cast<void*>(a), e - a, MADV_POPULATE_WRITE) != 0 && errno == EINVAL) {
    populateUnsupported.store(true, std::memory_order_relaxed);  // kernel < 5.14
  }
#else
  (void)p;
  (void)n;
#endif
}

// ---- queue items -------------------------------------------------------------

struct WaitItem {
  Device* dev = nullptr;
  cu::CUevent event = nullptr;
  bool ownEvent = false;
  PinnedBlock* block = nullptr;  // copyDtoH staging (nullptr: synchronize)
  uint8_t* dst = nullptr;        // result ArrayBuffer data
  size_t bytes = 0;
  // JS-thread only (raw handles: never touched by the waiter thread).
  napi_deferred deferred = nullptr;
  napi_ref result = nullptr;  // strong reference on the result ArrayBuffer
  // Set by the waiter thread.
  bool failed = false;
  NativeError err;
};

// Frees what an undelivered item holds without touching JS (any thread; used
// while the environment is being torn down, when its handles go away with it).
void Discard(WaitItem* it) {
  const cu::Driver* d = cu::TryDrv(nullptr);
  if (d && it->ownEvent && it->event) d->cuEventDestroy(it->event);
  // A failed block's event is in an error state: the block is not reused.
  if (it->block && !it->failed) {
    try {
      it->dev->ReleasePinned(it->block, false);
    } catch (...) {
    }
  }
  delete it;
}

// ---- per (environment, device) waiter ----------------------------------------

class Waiter {
 public:
  static Waiter* Create(napi_env env, Device* dev);
  void Push(WaitItem* it);  // JS thread

 private:
  Waiter(napi_env env, Device* dev) : env_(env), dev_(dev) {}
  void Run();
  void StopThread();  // JS thread; idempotent
  static void CallJs(napi_env env, napi_value, void* context, void* data);
  static void Complete(napi_env env, WaitItem* it);
  static void OnTsfnFinalize(napi_env env, void* data, void* hint);
  static void OnEnvCleanup(void* arg);

  napi_env env_;
  Device* dev_;
  napi_threadsafe_function tsfn_ = nullptr;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<WaitItem*> queue_;  // guarded by mu_
  bool stop_ = false;            // guarded by mu_
  // JS thread only.
  size_t pending_ = 0;  // queued, being waited on, or delivered but not yet run
  bool cleanedUp_ = false, finalized_ = false;
};

std::mutex g_mu;
// Never freed (no static destructor may run while a waiter thread is alive).
auto* g_waiters = new std::map<std::pair<napi_env, Device*>, Waiter*>();

Waiter* Waiter::Create(napi_env env, Device* dev) {
  std::unique_ptr<Waiter> w(new Waiter(env, dev));
  napi_value name;
  NAPI_THROW_IF_FAILED(env, napi_create_string_utf8(env, "flexattn:wait", NAPI_AUTO_LENGTH, &name), nullptr);
  // Unlimited queue (the waiter thread never blocks on it), one thread.
  NAPI_THROW_IF_FAILED(env,
                       napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, w.get(), OnTsfnFinalize,
                                                       w.get(), CallJs, &w->tsfn_),
                       nullptr);
  // Nothing pending yet: do not keep the event loop alive.
  napi_unref_threadsafe_function(env, w->tsfn_);
  // Registered after the thread-safe function, so at teardown this hook runs
  // before the one Node added for it (hooks run in reverse order).
  napi_status s = napi_add_env_cleanup_hook(env, OnEnvCleanup, w.get());
  if (s != napi_ok) {
    w->cleanedUp_ = true;
    napi_release_threadsafe_function(w->tsfn_, napi_tsfn_abort);
    w.release();  // freed by OnTsfnFinalize
    NAPI_THROW_IF_FAILED(env, s, nullptr);
  }
  Waiter* raw = w.release();
  raw->thread_ = std::thread([raw] { raw->Run(); });
  return raw;
}

void Waiter::Push(WaitItem* it) {
  if (pending_++ == 0) napi_ref_threadsafe_function(env_, tsfn_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(it);
  }
  cv_.notify_one();
}

void Waiter::Run() {
  for (;;) {
    WaitItem* it;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      it = queue_.front();
      queue_.pop_front();
    }
    try {
      if (it->block && it->bytes) Prefault(it->dst, it->bytes);
      it->dev->MakeCurrent();
      cu::Check(cu::Drv().cuEventSynchronize(it->event), it->block ? "cuEventSynchronize (copyDtoH)"
                                                                   : "cuEventSynchronize (synchronize)");
      if (it->block && it->bytes) std::memcpy(it->dst, it->block->ptr, it->bytes);
    } catch (...) {
      it->err = CurrentExceptionAsNativeError("device wait");
      it->failed = true;
    }
    // Fails (napi_closing) only while the environment is torn down.
    if (napi_call_threadsafe_function(tsfn_, it, napi_tsfn_nonblocking) != napi_ok) Discard(it);
  }
}

void Waiter::StopThread() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  // Waits for at most the wait in progress (bounded by the GPU work).
  if (thread_.joinable()) thread_.join();
  std::deque<WaitItem*> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(queue_);
  }
  for (WaitItem* it : left) Discard(it);
}

// JS thread: resolve/reject one completed wait. env == nullptr: the
// thread-safe function is being finalized with this item still queued.
void Waiter::CallJs(napi_env env, napi_value, void* context, void* data) {
  auto* it = static_cast<WaitItem*>(data);
  if (env == nullptr) {
    Discard(it);  // `context` may be gone: not touched
    return;
  }
  auto* w = static_cast<Waiter*>(context);
  Complete(env, it);
  if (--w->pending_ == 0 && !w->cleanedUp_) napi_unref_threadsafe_function(env, w->tsfn_);
}

void Waiter::Complete(napi_env env, WaitItem* it) {
  try {
    Napi::Env e(env);
    Napi::HandleScope scope(e);
    if (it->ownEvent) cu::Drv().cuEventDestroy(it->event);
    it->event = nullptr;
    if (it->failed) {
      // The staging block is not reused: its event is in an error state.
      it->block = nullptr;
      napi_reject_deferred(env, it->deferred, ToJsError(e, it->err).Value());
    } else if (it->block) {
      PinnedBlock* b = it->block;
      it->block = nullptr;
      it->dev->ReleasePinned(b, false);  // event already completed
      napi_value ab = nullptr;
      napi_get_reference_value(env, it->result, &ab);
      napi_resolve_deferred(env, it->deferred, ab);
    } else {
      napi_resolve_deferred(env, it->deferred, e.Undefined());
    }
  } catch (const Napi::Error& err) {
    // Settle the promise anyway (a deferred is resolved or rejected once).
    if (it->deferred) napi_reject_deferred(env, it->deferred, err.Value());
  } catch (...) {
    try {
      napi_reject_deferred(env, it->deferred, ToJsError(Napi::Env(env), CurrentExceptionAsNativeError("completing a device wait")).Value());
    } catch (...) {
      napi_value msg = nullptr, err = nullptr;
      napi_create_string_utf8(env, "flexattn: completing a device wait failed", NAPI_AUTO_LENGTH, &msg);
      napi_create_error(env, nullptr, msg, &err);
      napi_reject_deferred(env, it->deferred, err);  // lib/native.ts types it
    }
  }
  if (it->result) napi_delete_reference(env, it->result);
  delete it;
}

void Waiter::OnEnvCleanup(void* arg) {
  auto* w = static_cast<Waiter*>(arg);
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_waiters->erase({w->env_, w->dev_});
  }
  w->StopThread();
  w->cleanedUp_ = true;
  if (w->finalized_) {
    delete w;
    return;
  }
  // Abort: items still queued are not delivered to JS (CallJs gets env ==
  // nullptr and frees them); OnTsfnFinalize frees the waiter.
  napi_release_threadsafe_function(w->tsfn_, napi_tsfn_abort);
}

void Waiter::OnTsfnFinalize(napi_env, void* data, void*) {
  auto* w = static_cast<Waiter*>(data);
  w->finalized_ = true;
  // When Node finalizes the function first (teardown), the thread must stop
  // calling it before it is deleted.
  w->StopThread();
  if (w->cleanedUp_) delete w;
}

Waiter* GetWaiter(napi_env env, Device* dev) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto found = g_waiters->find({env, dev});
    if (found != g_waiters->end()) return found->second;
  }
  // Only this environment's JS thread creates its waiters: no race on the key.
  Waiter* w = Waiter::Create(env, dev);
  std::lock_guard<std::mutex> lock(g_mu);
  (*g_waiters)[{env, dev}] = w;
  return w;
}

}  // namespace

Napi::Promise QueueWait(Napi::Env env, Device& dev, cu::CUevent event, bool ownEvent, PinnedBlock* block,
                        size_t bytes) {
  auto it = std::make_unique<WaitItem>();
  it->dev = &dev;
  it->event = event;
  it->ownEvent = ownEvent;
  it->block = block;
  it->bytes = bytes;
  napi_value promise = nullptr;
  try {
    Waiter* w = GetWaiter(env, &dev);
    if (block) {
      // Created now (JS cannot see it before the promise resolves) and filled
      // on the waiter thread, so the JS thread never copies large results.
      Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, bytes);
      it->dst = static_cast<uint8_t*>(ab.Data());
      NAPI_THROW_IF_FAILED(env, napi_create_reference(env, ab, 1, &it->result), Napi::Promise());
    }
    NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &it->deferred, &promise), Napi::Promise());
    w->Push(it.get());
  } catch (...) {
    if (it->result) napi_delete_reference(env, it->result);
    it->result = nullptr;
    Discard(it.release());  // block: its recorded event is checked before reuse
    throw;
  }
  it.release();
  return Napi::Promise(env, promise);
}

}  // namespace flexattn::rt
