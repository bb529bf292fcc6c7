// A thread that runs one owner's tasks in FIFO order, off the JS thread, and
// settles each task's promise on the JS thread. Used by the NCCL communicator
// (runtime/nccl_comm.cc): NCCL calls can block (ncclCommInitRank waits for
// every rank; a first send/recv connects to its peer), and every rank must
// issue its NCCL calls in the same order, so one communicator's calls run on
// one thread, one after another, never on the JS thread or libuv's pool.
// The thread-safe function keeps the event loop alive only while tasks are
// pending. At environment teardown queued tasks are dropped; a task still
// running (e.g. an init waiting for peers that never come) is left to finish
// on its own (the worker is shared with its thread, never freed under it).
#pragma once
#include <napi.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include "addon/errors.h"

namespace flexattn::rt {

class SerialWorker : public std::enable_shared_from_this<SerialWorker> {
 public:
  // JS thread. `name` names the thread-safe function (diagnostics).
  static std::shared_ptr<SerialWorker> Create(Napi::Env env, const char* name);
  ~SerialWorker() = default;

  // JS thread. Queues `work` (worker thread; may throw) and then `done` (JS
  // thread; its value resolves the promise). A throw from either rejects the
  // promise with the typed error. After Close() or teardown: rejects at once.
  Napi::Promise Push(Napi::Env env, std::function<void()> work, std::function<Napi::Value(Napi::Env)> done);
  // JS thread or a finalizer: queues `work` with no promise (errors are dropped).
  void PushDetached(std::function<void()> work);
  // JS thread: the thread ends after the tasks queued so far. Idempotent.
  void Close();
  bool closed() const { return closing_; }

  struct Task;

 private:
  SerialWorker() = default;
  void Run(std::shared_ptr<SerialWorker> self);
  void Enqueue(Task* t);
  static void CallJs(napi_env env, napi_value, void* context, void* data);
  static void OnFinalize(napi_env env, void* data, void* hint);
  static void OnEnvCleanup(void* arg);

  napi_env env_ = nullptr;
  napi_threadsafe_function tsfn_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task*> queue_;  // guarded by mu_
  bool stop_ = false;        // teardown: drop the queue (guarded by mu_)
  bool running_ = false;     // a task's work is in progress (guarded by mu_)
  bool exited_ = false;      // the thread has left Run (guarded by mu_)
  bool released_ = false;    // tsfn released (guarded by mu_)
  // JS thread only.
  bool closing_ = false;
  bool finalized_ = false;
  size_t pending_ = 0;
  std::shared_ptr<SerialWorker>* self_ = nullptr;  // the thread-safe function's hold on us
};

}  // namespace flexattn::rt
