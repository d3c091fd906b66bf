// Building blocks of the CPU kernels in sparse_cpu.cc: a parallel loop on XLA's thread pool,
// the counting sort of a scatter's slots, and the row sums and momentum arithmetic they share.
#ifndef DEEPAE_JAX_CSRC_SPARSE_KERNELS_H_
#define DEEPAE_JAX_CSRC_SPARSE_KERNELS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace deepae {

namespace ffi = xla::ffi;

// Runs fn(task) for every task in [0, n_tasks) on the calling thread and on XLA's pool.
// Helpers that find no task left return without touching fn; the caller returns only after
// every claimed task has finished, so fn outlives every call made on it.
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t n_tasks, F&& fn) {
  if (n_tasks <= 0) return;
  struct Counters {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto counters = std::make_shared<Counters>();
  auto work = [counters, n_tasks, &fn]() {
    for (int64_t i; (i = counters->next.fetch_add(1)) < n_tasks;) {
      fn(i);
      counters->done.fetch_add(1, std::memory_order_release);
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), n_tasks - 1);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule(decltype(work)(work));
  work();
  while (counters->done.load(std::memory_order_acquire) < n_tasks) std::this_thread::yield();
}

// The kept slots of a scatter (scale != 0, key in [0, m), idx in [0, n_src)) in a stable
// counting sort by one of the two indices, `by` in [0, n_by): the slots with by[i] == v are
// order[start[v]:start[v + 1]], in slot order (so every sum below adds its terms in slot order
// and is deterministic).
//   by key: each task owns a range of output rows (no atomics);
//   by idx: for scatters into a few output rows, such as a batch's hidden rows gathered from an
//           item table, each source row is read once per batch, in increasing address order.
struct SortedSlots {
  std::vector<int32_t> start, order;

  SortedSlots(const int32_t* by, int64_t n_by, const int32_t* idx, int64_t n_src,
              const int32_t* key, int64_t m, const float* scale, int64_t t)
      : start(n_by + 1, 0) {
    auto keep = [&](int64_t i) {
      return scale[i] != 0.0f && key[i] >= 0 && key[i] < m && idx[i] >= 0 && idx[i] < n_src;
    };
    for (int64_t i = 0; i < t; ++i)
      if (keep(i)) ++start[by[i] + 1];
    for (int64_t v = 0; v < n_by; ++v) start[v + 1] += start[v];
    order.resize(start[n_by]);
    std::vector<int32_t> fill(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < t; ++i)
      if (keep(i)) order[fill[by[i]]++] = static_cast<int32_t>(i);
  }
  int64_t size() const { return static_cast<int64_t>(order.size()); }
};

// Prefetches the first `bytes` of a row into L2 (L2 holds more misses in flight than L1: the
// gathers of random rows are latency bound).
inline void PrefetchRow(const float* row, int64_t bytes) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 1);
}

// out (hi - lo, h) = the sums scale[i] * src[idx[i]] over the slots i of output rows [lo, hi),
// the slots sorted by key, each row's in slot order.
inline void SumRows(const SortedSlots& by_key, int64_t lo, int64_t hi, const int32_t* idx,
                    const int32_t* key, const float* scale, const float* __restrict__ src,
                    int64_t h, float* __restrict__ out) {
  constexpr int64_t kAhead = 2, kLines = 8;  // the head of the src row two slots ahead
  std::memset(out, 0, sizeof(float) * (hi - lo) * h);
  const int64_t begin = by_key.start[lo], end = by_key.start[hi];
  for (int64_t j = begin; j < end; ++j) {
    if (j + kAhead < end)
      PrefetchRow(src + static_cast<int64_t>(idx[by_key.order[j + kAhead]]) * h,
                  std::min<int64_t>(h * 4, kLines * 64));
    const int32_t i = by_key.order[j];
    const float a = scale[i];
    float* __restrict__ row = out + (static_cast<int64_t>(key[i]) - lo) * h;
    const float* __restrict__ x = src + static_cast<int64_t>(idx[i]) * h;
    for (int64_t c = 0; c < h; ++c) row[c] += a * x[c];
  }
}

// Output rows [RowsBegin(task), RowsBegin(task + 1)) of m belong to task < n_tasks.
inline int64_t RowsBegin(int64_t task, int64_t m, int64_t n_tasks) { return task * m / n_tasks; }
constexpr int64_t kRowTasks = 128;

// Column blocks of a row of h floats for n_tasks tasks: whole 64-byte lines each.
inline int64_t BlockWidth(int64_t h, int64_t n_tasks) {
  return ((h + n_tasks - 1) / n_tasks + 15) / 16 * 16;
}

// trace = g + momentum * trace; p = p + (-lr) * trace over n elements: optax.sgd's arithmetic.
// p_out / trace_out may alias p / trace (each element is read before it is written).
inline void MomentumUpdate(const float* g, const float* p, const float* trace, float* p_out,
                           float* trace_out, int64_t n, float momentum, float neg_lr) {
  for (int64_t e = 0; e < n; ++e) {
    const float tr = g[e] + momentum * trace[e];
    trace_out[e] = tr;
    p_out[e] = p[e] + neg_lr * tr;
  }
}

}  // namespace deepae

#endif  // DEEPAE_JAX_CSRC_SPARSE_KERNELS_H_
