#include "runtime/serial_worker.h"

#include <thread>

namespace flexattn::rt {

struct SerialWorker::Task {
  std::function<void()> work;
  std::function<Napi::Value(Napi::Env)> done;  // empty for detached tasks
  napi_deferred deferred = nullptr;             // null for detached tasks
  bool failed = false;
  NativeError err;
};

std::shared_ptr<SerialWorker> SerialWorker::Create(Napi::Env env, const char* name) {
  std::shared_ptr<SerialWorker> w(new SerialWorker());
  w->env_ = env;
  w->self_ = new std::shared_ptr<SerialWorker>(w);
  napi_value jsName;
  NAPI_THROW_IF_FAILED(env, napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &jsName), nullptr);
  napi_status s = napi_create_threadsafe_function(env, nullptr, nullptr, jsName, 0, 1, w->self_, OnFinalize,
                                                  w->self_, CallJs, &w->tsfn_);
  if (s != napi_ok) {
    delete w->self_;
    NAPI_THROW_IF_FAILED(env, s, nullptr);
  }
  napi_unref_threadsafe_function(env, w->tsfn_);
  // Added after the thread-safe function's own hook, so it runs first at teardown.
  napi_add_env_cleanup_hook(env, OnEnvCleanup, w.get());
  std::thread([w] { w->Run(w); }).detach();
  return w;
}

void SerialWorker::Enqueue(Task* t) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(t);
  }
  cv_.notify_one();
}

Napi::Promise SerialWorker::Push(Napi::Env env, std::function<void()> work,
                                 std::function<Napi::Value(Napi::Env)> done) {
  napi_deferred deferred = nullptr;
  napi_value promise = nullptr;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &deferred, &promise), Napi::Promise());
  bool gone;
  {
    std::lock_guard<std::mutex> lock(mu_);
    gone = stop_ || exited_;
  }
  if (closing_ || finalized_ || gone) {
    NativeError e(ErrKind::kInternal, "flexattn: communicator work queued after its thread ended (please report it)");
    napi_reject_deferred(env, deferred, ToJsError(env, e).Value());
    return Napi::Promise(env, promise);
  }
  auto* t = new Task();
  t->work = std::move(work);
  t->done = std::move(done);
  t->deferred = deferred;
  if (pending_++ == 0) napi_ref_threadsafe_function(env, tsfn_);
  Enqueue(t);
  return Napi::Promise(env, promise);
}

void SerialWorker::PushDetached(std::function<void()> work) {
  if (closing_ || finalized_) return;
  auto* t = new Task();
  t->work = std::move(work);
  Enqueue(t);
}

void SerialWorker::Close() {
  if (closing_) return;
  closing_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(nullptr);  // end marker: the thread leaves after the tasks before it
  }
  cv_.notify_one();
}

void SerialWorker::Run(std::shared_ptr<SerialWorker> self) {
  for (;;) {
    Task* t;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) break;
      t = queue_.front();
      queue_.pop_front();
      if (!t) break;  // Close()
      running_ = true;
    }
    try {
      t->work();
    } catch (...) {
      t->err = CurrentExceptionAsNativeError("communicator thread");
      t->failed = true;
    }
    bool stopped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_ = false;
      stopped = stop_;
    }
    if (stopped || !t->deferred) {
      delete t;  // teardown (the environment's handles went with it), or nobody waits
      if (stopped) break;
      continue;
    }
    if (napi_call_threadsafe_function(tsfn_, t, napi_tsfn_nonblocking) != napi_ok) delete t;
  }
  std::lock_guard<std::mutex> lock(mu_);
  exited_ = true;
  bool release = !released_ && !stop_;
  if (release) released_ = true;
  for (Task* t : queue_) delete t;  // only after stop_: Close()'s marker ends an empty queue
  queue_.clear();
  cv_.notify_all();
  // Queued completions are still delivered; then OnFinalize drops the last JS-side hold.
  if (release) napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
}

void SerialWorker::CallJs(napi_env env, napi_value, void* context, void* data) {
  auto* t = static_cast<Task*>(data);
  if (env == nullptr) {
    delete t;
    return;
  }
  SerialWorker* w = static_cast<std::shared_ptr<SerialWorker>*>(context)->get();
  Napi::Env e(env);
  Napi::HandleScope scope(e);
  try {
    if (t->failed) {
      napi_reject_deferred(env, t->deferred, ToJsError(e, t->err).Value());
    } else {
      Napi::Value v = Guard(e, [&] { return t->done ? t->done(e) : e.Undefined(); });
      napi_resolve_deferred(env, t->deferred, v);
    }
  } catch (const Napi::Error& err) {
    napi_reject_deferred(env, t->deferred, err.Value());
  }
  delete t;
  if (--w->pending_ == 0 && !w->finalized_) napi_unref_threadsafe_function(env, w->tsfn_);
}

void SerialWorker::OnEnvCleanup(void* arg) {
  auto* w = static_cast<SerialWorker*>(arg);
  std::unique_lock<std::mutex> lock(w->mu_);
  w->stop_ = true;
  w->cv_.notify_all();
  // A task in progress may block for good (an init waiting for absent peers):
  // leave it; the thread holds its own reference and exits when it returns.
  if (!w->running_) w->cv_.wait(lock, [&] { return w->exited_; });
  bool release = !w->released_;
  w->released_ = true;
  lock.unlock();
  if (release) napi_release_threadsafe_function(w->tsfn_, napi_tsfn_abort);
}

void SerialWorker::OnFinalize(napi_env env, void* data, void*) {
  auto* self = static_cast<std::shared_ptr<SerialWorker>*>(data);
  (*self)->finalized_ = true;
  napi_remove_env_cleanup_hook(env, OnEnvCleanup, self->get());
  delete self;  // the thread and the owner may still hold theirs
}

}  // namespace flexattn::rt
