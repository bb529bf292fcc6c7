// Completion of asynchronous device work (copyDtoH, synchronize) without
// libuv pool threads: one waiter thread per device (and per Node environment,
// so worker_threads each get their own), started on the first wait. It waits
// on the queued events in FIFO order (all work of a device is ordered on its
// single stream), copies DtoH results out of the pinned staging block, and
// hands each completion to the JS thread through a thread-safe function that
// resolves or rejects the promise. The thread-safe function keeps the event
// loop alive only while waits are pending. Threads are stopped and joined by
// an environment cleanup hook.
#pragma once
#include <napi.h>

#include "runtime/device.h"

namespace flexattn::rt {

// Main thread only. Queues a wait for `event` (already recorded on
// dev.stream) and returns its promise.
//   block != nullptr (copyDtoH): the promise resolves with a new ArrayBuffer of
//     `bytes` bytes holding block->ptr[0, bytes); the block goes back to the
//     pool (ReleasePinned) once the copy is done.
//   block == nullptr (synchronize): resolves with undefined.
// ownEvent: the event is destroyed once waited on. A failed wait rejects with
// the typed CudaError. Takes ownership of block/event even when it throws.
Napi::Promise QueueWait(Napi::Env env, Device& dev, cu::CUevent event, bool ownEvent, PinnedBlock* block,
                        size_t bytes);

}  // namespace flexattn::rt
