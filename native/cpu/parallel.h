// The CPU backend's thread pool: RunParallel hands tasks out dynamically to
// background-priority worker threads (shared by attention.cc and
// ragged_attention.cc).
#pragma once
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cerrno>
#endif

namespace flexattn::cpu {

// Lowers the calling thread's scheduling priority (Linux: nice is per thread)
// to kBackgroundNice, never raising it. Best effort: a failure changes nothing.
inline constexpr int kBackgroundNice = 10;
inline void LowerThreadPriority() {
#if defined(__linux__)
  const pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  errno = 0;
  const int cur = getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
  if (errno == 0 && cur < kBackgroundNice) setpriority(PRIO_PROCESS, static_cast<id_t>(tid), kBackgroundNice);
#endif
}

// Runs fn(worker, task) for task in [0, ntasks) on up to nthreads threads.
// The first exception thrown by a task stops the others and is rethrown.
template <typename F>
void RunParallel(int nthreads, int64_t ntasks, F&& fn) {
  if (ntasks <= 0) return;
  if (nthreads < 1) nthreads = 1;
  if (nthreads > ntasks) nthreads = static_cast<int>(ntasks);
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex mu;
  auto work = [&](int worker) {
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      const int64_t t = next.fetch_add(1);
      if (t >= ntasks) return;
      try {
        fn(worker, t);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
        failed = true;
        return;
      }
    }
  };
  // Every worker is a thread of its own at background priority, so that the
  // calling thread (a libuv pool thread shared with the rest of the process)
  // keeps its priority and the JS thread wins the CPU whenever it has work.
  auto background = [&](int worker) {
    LowerThreadPriority();
    work(worker);
  };
  std::vector<std::thread> threads;
  for (int w = 0; w < nthreads; ++w) {
    try {
      threads.emplace_back(background, w);
    } catch (...) {
      break;  // could not start more threads: run with what we have
    }
  }
  if (threads.empty()) work(0);
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace flexattn::cpu
