// Splitting a loop over threads without fork-join barriers.
//
// at::parallel_for (OpenMP in PyTorch's Linux wheels) hands each thread a fixed share
// and ends with a barrier: when another process holds a core, the region waits for the
// descheduled thread's next time slice (milliseconds), however little work it had.
// parallel_chunks instead lets the calling thread take chunks from a shared counter;
// helper threads from PyTorch's inter-op pool (at::launch) take chunks too once they
// get to run. The caller waits only for chunks a helper has actually taken, never for a
// helper to start: on a busy machine the loop degrades to the single-threaded time
// instead of stalling. The thread count is torch.get_num_threads().
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

namespace sfm {
namespace cpu {

namespace detail {

struct ChunkQueue {
  std::atomic<int64_t> next{0};  // next chunk to take
  std::atomic<int64_t> done{0};  // chunks finished
  int64_t begin = 0, end = 0, chunk = 1, chunks = 0;
  const void* body = nullptr;                  // the caller's functor, valid while chunks remain
  void (*run)(const void*, int64_t, int64_t);  // calls it on [b, e)

  // Takes and runs chunks until none is left. A helper that starts after the last chunk
  // was taken returns without touching `body` (the caller may have returned already).
  void drain() {
    for (;;) {
      const int64_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks) return;
      const int64_t b = begin + c * chunk;
      run(body, b, std::min(end, b + chunk));
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

}  // namespace detail

// Runs f(b, e) over chunks of at most `chunk` elements covering [begin, end), on the
// calling thread and up to torch.get_num_threads() - 1 helpers. f must not throw.
template <typename F>
void parallel_chunks(int64_t begin, int64_t end, int64_t chunk, const F& f) {
  if (begin >= end) return;
  chunk = std::max<int64_t>(chunk, 1);
  const int64_t chunks = (end - begin + chunk - 1) / chunk;
  const int64_t helpers = std::min<int64_t>(at::get_num_threads(), chunks) - 1;
  if (helpers <= 0 || at::in_parallel_region()) {
    f(begin, end);
    return;
  }
  auto queue = std::make_shared<detail::ChunkQueue>();
  queue->begin = begin;
  queue->end = end;
  queue->chunk = chunk;
  queue->chunks = chunks;
  queue->body = &f;
  queue->run = [](const void* body, int64_t b, int64_t e) { (*static_cast<const F*>(body))(b, e); };
  for (int64_t i = 0; i < helpers; ++i) at::launch([queue] { queue->drain(); });
  queue->drain();
  // Every chunk is taken; wait for those still running on a helper.
  while (queue->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

}  // namespace cpu
}  // namespace sfm
