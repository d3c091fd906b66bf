// CPU kernels for the sparse fast path (deepae_jax/cpu_kernels.py builds and registers them).
//
// XLA:CPU runs gathers and scatters over (T, h) row blocks on one thread, one element at a
// time. These two XLA FFI handlers do the same work row by row, vectorised, on XLA's intra-op
// thread pool:
//
//   deepae_scatter_axpy: out (M, h) = 0; out[key[t]] += scale[t] * src[idx[t]] for every slot t
//                        with scale[t] != 0 (slots whose key or idx is out of range are skipped).
//                        The sparse first layer x @ W (key = batch row, idx = item) and every
//                        gradient of the sparse layers (key = item or batch row) are this.
//   deepae_rowdot:       out (T,) = active[t] != 0 ? h[rows[t]] . w[cols[t]] : 0, the output
//                        layer evaluated at the observed items only.
//   deepae_sparse_momentum: the same update with g given as a scatter (src, idx, key, scale)
//                        as in deepae_scatter_axpy: g is summed bucket by bucket in a
//                        cache-sized buffer and never written to memory.
//   deepae_momentum:     trace = g + momentum * trace; p = p - lr * trace (PyTorch's SGD with
//                        momentum, optax.sgd's formula), in place on all cores: XLA:CPU runs
//                        this elementwise update on one thread, at a third of the memory
//                        bandwidth of two.
//
// The two momentum handlers take any number of further operands and ignore them: they only
// make the in-place update wait for those arrays (see cpu_kernels.momentum's ``after``).
//
// Slots are bucketed by output row first, so that each task owns a range of output rows (no
// atomics, and the sums are deterministic: within a row, slots are added in slot order).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

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

// The slots of a scatter, bucketed by output row range (counting sort; slot order is kept
// within a bucket, so every output row adds its slots in slot order). Slots with scale 0 or an
// out-of-range key or idx are left out.
struct Buckets {
  const int32_t* idx;
  const int32_t* key;
  const float* scale;
  int64_t m, n_buckets;
  std::vector<int64_t> start;
  std::vector<int32_t> order;
  std::vector<int32_t> bucket;  // bucket of each output row

  Buckets(const int32_t* idx, const int32_t* key, const float* scale, int64_t t, int64_t n_src,
          int64_t m)
      : idx(idx), key(key), scale(scale), m(m),
        n_buckets(std::max<int64_t>(1, std::min<int64_t>(m, 128))), start(n_buckets + 1, 0),
        bucket(m) {
    for (int64_t b = 0; b < n_buckets; ++b)  // a table: no integer division per slot
      std::fill(bucket.begin() + first_row(b), bucket.begin() + first_row(b + 1),
                static_cast<int32_t>(b));
    auto keep = [&](int64_t i) {
      return scale[i] != 0.0f && key[i] >= 0 && key[i] < m && idx[i] >= 0 && idx[i] < n_src;
    };
    for (int64_t i = 0; i < t; ++i)
      if (keep(i)) ++start[bucket[key[i]] + 1];
    for (int64_t b = 0; b < n_buckets; ++b) start[b + 1] += start[b];
    order.resize(start[n_buckets]);
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < t; ++i)
      if (keep(i)) order[fill[bucket[key[i]]]++] = static_cast<int32_t>(i);
  }
  // The first output row of bucket b (b == n_buckets gives m).
  int64_t first_row(int64_t b) const { return (b * m + n_buckets - 1) / n_buckets; }

  // out[key[i] - lo] += scale[i] * src[idx[i]] for the slots i of bucket b.
  void Accumulate(int64_t b, const float* __restrict__ src, int64_t h, float* __restrict__ out,
                  int64_t lo) const {
    // Prefetch the head of the src row kAhead slots ahead (the hardware prefetcher follows
    // on within the row): the gathers of random rows are latency bound.
    constexpr int64_t kAhead = 2, kLines = 8;
    const int64_t begin = start[b], end = start[b + 1];
    const int64_t head = std::min<int64_t>(h * 4, kLines * 64);
    for (int64_t j = begin; j < end; ++j) {
      if (j + kAhead < end) {
        const char* next = reinterpret_cast<const char*>(src + idx[order[j + kAhead]] * h);
        for (int64_t off = 0; off < head; off += 64) __builtin_prefetch(next + off);
      }
      const int32_t i = order[j];
      const float a = scale[i];
      float* __restrict__ row = out + (static_cast<int64_t>(key[i]) - lo) * h;
      const float* __restrict__ x = src + static_cast<int64_t>(idx[i]) * h;
      for (int64_t c = 0; c < h; ++c) row[c] += a * x[c];
    }
  }
};

// The kept slots of a scatter sorted by source row (stable counting sort over the n_src rows),
// for scatters into a few output rows, such as a batch's hidden rows gathered from an item
// table: each source row is then read once per batch, in increasing address order (nearly a
// stream when the batch touches much of the table), instead of once per slot.
struct BySource {
  std::vector<int32_t> order;

  BySource(const int32_t* idx, const int32_t* key, const float* scale, int64_t t, int64_t n_src,
           int64_t m) {
    std::vector<int32_t> next(n_src + 1, 0);
    auto keep = [&](int64_t i) {
      return scale[i] != 0.0f && key[i] >= 0 && key[i] < m && idx[i] >= 0 && idx[i] < n_src;
    };
    for (int64_t i = 0; i < t; ++i)
      if (keep(i)) ++next[idx[i] + 1];
    for (int64_t r = 0; r < n_src; ++r) next[r + 1] += next[r];
    order.resize(next[n_src]);
    for (int64_t i = 0; i < t; ++i)
      if (keep(i)) order[next[idx[i]]++] = static_cast<int32_t>(i);
  }
};

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

constexpr int64_t kFewRows = 1 << 18;  // output elements (1 MB) that stay in cache
constexpr int64_t kColumnTasks = 2;
constexpr int64_t kSourceAhead = 32;

ffi::Error ScatterAxpyImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> src,
                           ffi::Buffer<ffi::S32> idx, ffi::Buffer<ffi::S32> key,
                           ffi::Buffer<ffi::F32> scale, ffi::ResultBuffer<ffi::F32> out) {
  auto src_dims = src.dimensions();
  auto out_dims = out->dimensions();
  if (src_dims.size() != 2 || out_dims.size() != 2 || src_dims[1] != out_dims[1]) {
    return ffi::Error::InvalidArgument("scatter_axpy: src (R, h) and out (M, h) expected");
  }
  const int64_t n_src = src_dims[0], h = src_dims[1], m = out_dims[0];
  const int64_t t = idx.element_count();
  if (key.element_count() != t || scale.element_count() != t) {
    return ffi::Error::InvalidArgument("scatter_axpy: idx, key and scale differ in length");
  }
  if (m == 0 || h == 0) return ffi::Error::Success();
  const float* __restrict__ s = src.typed_data();
  const int32_t* ix = idx.typed_data();
  const int32_t* ky = key.typed_data();
  const float* sc = scale.typed_data();
  float* __restrict__ o = out->typed_data();

  if (m * h <= kFewRows && n_src > m) {  // source-major: each task owns a column block
    const BySource sorted(ix, ky, sc, t, n_src, m);
    const int32_t* order = sorted.order.data();
    const int64_t kept = static_cast<int64_t>(sorted.order.size());
    const int64_t width = BlockWidth(h, std::min<int64_t>(kColumnTasks, (h + 15) / 16));
    ParallelFor(pool, (h + width - 1) / width, [&](int64_t task) {
      const int64_t c0 = task * width, w = std::min(h, c0 + width) - c0;
      for (int64_t r = 0; r < m; ++r) std::memset(o + r * h + c0, 0, sizeof(float) * w);
      for (int64_t j = 0; j < kept; ++j) {
        if (j + kSourceAhead < kept) {
          const char* next = reinterpret_cast<const char*>(s + ix[order[j + kSourceAhead]] * h + c0);
          for (int64_t off = 0; off < w * 4; off += 64) __builtin_prefetch(next + off);
        }
        const int32_t i = order[j];
        const float a = sc[i];
        float* __restrict__ row = o + static_cast<int64_t>(ky[i]) * h + c0;
        const float* __restrict__ x = s + static_cast<int64_t>(ix[i]) * h + c0;
        for (int64_t c = 0; c < w; ++c) row[c] += a * x[c];
      }
    });
    return ffi::Error::Success();
  }
  const Buckets buckets(ix, ky, sc, t, n_src, m);
  ParallelFor(pool, buckets.n_buckets, [&](int64_t b) {
    const int64_t lo = buckets.first_row(b), hi = buckets.first_row(b + 1);
    std::memset(o + lo * h, 0, sizeof(float) * (hi - lo) * h);
    buckets.Accumulate(b, s, h, o + lo * h, lo);
  });
  return ffi::Error::Success();
}

ffi::Error RowDotImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> hid,
                      ffi::Buffer<ffi::S32> cols, ffi::Buffer<ffi::S32> rows,
                      ffi::Buffer<ffi::F32> active, ffi::ResultBuffer<ffi::F32> out) {
  auto w_dims = w.dimensions();
  auto h_dims = hid.dimensions();
  if (w_dims.size() != 2 || h_dims.size() != 2 || w_dims[1] != h_dims[1]) {
    return ffi::Error::InvalidArgument("rowdot: w (n, h) and hidden (B, h) expected");
  }
  const int64_t n = w_dims[0], h = w_dims[1], b = h_dims[0];
  const int64_t t = cols.element_count();
  if (rows.element_count() != t || active.element_count() != t || out->element_count() != t) {
    return ffi::Error::InvalidArgument("rowdot: cols, rows, active and out differ in length");
  }
  const float* __restrict__ wd = w.typed_data();
  const float* __restrict__ hd = hid.typed_data();
  const int32_t* c = cols.typed_data();
  const int32_t* r = rows.typed_data();
  const float* act = active.typed_data();
  float* o = out->typed_data();
  // in column order: each row of w is read once per batch, in increasing address order
  std::fill(o, o + t, 0.0f);
  const BySource sorted(c, r, act, t, n, b);
  const int32_t* order = sorted.order.data();
  const int64_t kept = static_cast<int64_t>(sorted.order.size());
  constexpr int64_t kChunk = 1024;
  ParallelFor(pool, (kept + kChunk - 1) / kChunk, [&](int64_t task) {
    const int64_t end = std::min(kept, (task + 1) * kChunk);
    for (int64_t j = task * kChunk; j < end; ++j) {
      const int32_t i = order[j];
      const float* __restrict__ x = wd + static_cast<int64_t>(c[i]) * h;
      const float* __restrict__ y = hd + static_cast<int64_t>(r[i]) * h;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t k = 0; k < h; ++k) acc += x[k] * y[k];
      o[i] = acc;
    }
  });
  return ffi::Error::Success();
}

ffi::Error MomentumImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> p, ffi::Buffer<ffi::F32> trace,
                        ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> lr,
                        ffi::RemainingArgs /*after*/, ffi::ResultBuffer<ffi::F32> p_out,
                        ffi::ResultBuffer<ffi::F32> trace_out, float momentum) {
  const int64_t n = p.element_count();
  if (trace.element_count() != n || g.element_count() != n || p_out->element_count() != n ||
      trace_out->element_count() != n || lr.element_count() != 1) {
    return ffi::Error::InvalidArgument("momentum: p, trace, g differ in size or lr not a scalar");
  }
  const float* pd = p.typed_data();
  const float* td = trace.typed_data();
  const float* gd = g.typed_data();
  float* po = p_out->typed_data();  // may alias pd (elementwise: safe)
  float* to = trace_out->typed_data();
  const float neg_lr = -lr.typed_data()[0];
  constexpr int64_t kChunk = 1 << 16;
  ParallelFor(pool, (n + kChunk - 1) / kChunk, [&](int64_t task) {
    const int64_t lo = task * kChunk, size = std::min(n, lo + kChunk) - lo;
    MomentumUpdate(gd + lo, pd + lo, td + lo, po + lo, to + lo, size, momentum, neg_lr);
  });
  return ffi::Error::Success();
}

ffi::Error SparseMomentumImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> p,
                              ffi::Buffer<ffi::F32> trace, ffi::Buffer<ffi::F32> src,
                              ffi::Buffer<ffi::S32> idx, ffi::Buffer<ffi::S32> key,
                              ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> lr,
                              ffi::RemainingArgs /*after*/, ffi::ResultBuffer<ffi::F32> p_out,
                              ffi::ResultBuffer<ffi::F32> trace_out, float momentum) {
  auto p_dims = p.dimensions();
  auto src_dims = src.dimensions();
  if (p_dims.size() != 2 || src_dims.size() != 2 || p_dims[1] != src_dims[1] ||
      trace.element_count() != p.element_count() || lr.element_count() != 1) {
    return ffi::Error::InvalidArgument("sparse_momentum: p, trace (n, h), src (R, h) expected");
  }
  const int64_t m = p_dims[0], h = p_dims[1], t = idx.element_count();
  if (key.element_count() != t || scale.element_count() != t) {
    return ffi::Error::InvalidArgument("sparse_momentum: idx, key and scale differ in length");
  }
  if (m == 0 || h == 0) return ffi::Error::Success();
  const Buckets buckets(idx.typed_data(), key.typed_data(), scale.typed_data(), t, src_dims[0],
                        m);
  const float* pd = p.typed_data();
  const float* td = trace.typed_data();
  const float* sd = src.typed_data();
  float* po = p_out->typed_data();  // may alias pd / td (each element read before written)
  float* to = trace_out->typed_data();
  const float neg_lr = -lr.typed_data()[0];
  ParallelFor(pool, buckets.n_buckets, [&](int64_t b) {
    const int64_t lo = buckets.first_row(b), hi = buckets.first_row(b + 1);
    thread_local std::vector<float> scratch;  // this bucket's gradient rows (cache-sized)
    const int64_t size = (hi - lo) * h;
    if (static_cast<int64_t>(scratch.size()) < size) scratch.resize(size);
    float* __restrict__ g = scratch.data();
    std::memset(g, 0, sizeof(float) * size);
    buckets.Accumulate(b, sd, h, g, lo);
    MomentumUpdate(g, pd + lo * h, td + lo * h, po + lo * h, to + lo * h, size, momentum,
                   neg_lr);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DeepaeSparseMomentum, SparseMomentumImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("momentum"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DeepaeMomentum, MomentumImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("momentum"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DeepaeScatterAxpy, ScatterAxpyImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(DeepaeRowDot, RowDotImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
