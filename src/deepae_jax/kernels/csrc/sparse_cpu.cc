// CPU kernels for the sparse fast path (deepae_jax/cpu_kernels.py builds and registers them).
//
// XLA:CPU runs gathers and scatters over (T, h) row blocks on one thread, one element at a
// time. These XLA FFI handlers do the same work row by row, vectorised, on XLA's intra-op
// thread pool:
//
//   deepae_scatter_axpy: out (M, h) = 0; out[key[t]] += scale[t] * src[idx[t]] for every slot t
//                        with scale[t] != 0 (slots whose key or idx is out of range are skipped).
//                        The sparse first layer x @ W (key = batch row, idx = item) and every
//                        gradient of the sparse layers (key = item or batch row) are this.
//   deepae_rowdot:       out (T,) = active[t] != 0 ? h[rows[t]] . w[cols[t]] : 0, the output
//                        layer evaluated at the observed items only.
//   deepae_momentum:     trace = g + momentum * trace; p = p - lr * trace (PyTorch's SGD with
//                        momentum, optax.sgd's formula), in place on all cores: XLA:CPU runs
//                        this elementwise update on one thread, at a third of the memory
//                        bandwidth of two.
//   deepae_sparse_momentum: the same update with g given as a scatter (src, idx, key, scale)
//                        as in deepae_scatter_axpy: g is summed block by block in a
//                        cache-sized buffer and never written to memory.
//   deepae_sparse_momentum_grad: the same, and also the gradient with respect to src of
//                        sum_t scale[t] <src[idx[t]], p[key[t]]> at the old p (the output
//                        layer's input gradient), summed while the update reads p.
//
// The momentum handlers take any number of further operands and ignore them: they only make
// the in-place update wait for those arrays (see cpu_kernels.momentum's ``after``).
//
// Slots are sorted (counting sort) by output row, so that each task owns a range of output
// rows, or, for outputs of a few rows, by source row, so that each source row is read once;
// no atomics, and every sum adds its terms in a fixed order (deterministic).
#include "sparse_kernels.h"

namespace ffi = xla::ffi;

namespace {

using namespace deepae;  // NOLINT: this file's building blocks

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
    const SortedSlots by_src(ix, n_src, ix, n_src, ky, m, sc, t);
    const int32_t* order = by_src.order.data();
    const int64_t kept = by_src.size();
    const int64_t width = BlockWidth(h, std::min<int64_t>(kColumnTasks, (h + 15) / 16));
    ParallelFor(pool, (h + width - 1) / width, [&](int64_t task) {
      const int64_t c0 = task * width, w = std::min(h, c0 + width) - c0;
      for (int64_t r = 0; r < m; ++r) std::memset(o + r * h + c0, 0, sizeof(float) * w);
      for (int64_t j = 0; j < kept; ++j) {
        if (j + kSourceAhead < kept)
          PrefetchRow(s + static_cast<int64_t>(ix[order[j + kSourceAhead]]) * h + c0, w * 4);
        const int32_t i = order[j];
        const float a = sc[i];
        float* __restrict__ row = o + static_cast<int64_t>(ky[i]) * h + c0;
        const float* __restrict__ x = s + static_cast<int64_t>(ix[i]) * h + c0;
        for (int64_t c = 0; c < w; ++c) row[c] += a * x[c];
      }
    });
    return ffi::Error::Success();
  }
  const SortedSlots by_key(ky, m, ix, n_src, ky, m, sc, t);
  const int64_t n_tasks = std::min(kRowTasks, m);
  ParallelFor(pool, n_tasks, [&](int64_t task) {
    const int64_t lo = RowsBegin(task, m, n_tasks), hi = RowsBegin(task + 1, m, n_tasks);
    SumRows(by_key, lo, hi, ix, ky, sc, s, h, o + lo * h);
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
  const SortedSlots by_col(c, n, c, n, r, b, act, t);
  const int32_t* order = by_col.order.data();
  const int64_t kept = by_col.size();
  constexpr int64_t kChunk = 1024;
  ParallelFor(pool, (kept + kChunk - 1) / kChunk, [&](int64_t task) {
    const int64_t end = std::min(kept, (task + 1) * kChunk);
    for (int64_t j = task * kChunk; j < end; ++j) {
      if (j + kSourceAhead < end)
        PrefetchRow(wd + static_cast<int64_t>(c[order[j + kSourceAhead]]) * h, h * 4);
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

// The sparse momentum update of p (m, h) with g = scatter(src, idx, key, scale), in row blocks:
// each block's gradient rows are summed in a cache-sized buffer and never stored. With src_grad (R, h) it also
// writes src_grad[idx[t]] += scale[t] * p[key[t]] at the p before the update (the gradient with
// respect to src of sum_t scale[t] * <src[idx[t]], p[key[t]]>, e.g. the output layer's input
// gradient) while each old row is at hand. Each of kGradGroups tasks then owns a fixed range
// of rows and its own partial src_grad, summed in task order afterwards: deterministic.
constexpr int64_t kGradGroups = 4;

ffi::Error SparseMomentum(ffi::ThreadPool& pool, ffi::Buffer<ffi::F32>& p,
                          ffi::Buffer<ffi::F32>& trace, ffi::Buffer<ffi::F32>& src,
                          ffi::Buffer<ffi::S32>& idx, ffi::Buffer<ffi::S32>& key,
                          ffi::Buffer<ffi::F32>& scale, ffi::Buffer<ffi::F32>& lr,
                          ffi::ResultBuffer<ffi::F32>& p_out,
                          ffi::ResultBuffer<ffi::F32>& trace_out, float* src_grad,
                          float momentum) {
  auto p_dims = p.dimensions();
  auto src_dims = src.dimensions();
  if (p_dims.size() != 2 || src_dims.size() != 2 || p_dims[1] != src_dims[1] ||
      trace.element_count() != p.element_count() || lr.element_count() != 1) {
    return ffi::Error::InvalidArgument("sparse_momentum: p, trace (n, h), src (R, h) expected");
  }
  const int64_t m = p_dims[0], h = p_dims[1], t = idx.element_count(), n_src = src_dims[0];
  if (key.element_count() != t || scale.element_count() != t) {
    return ffi::Error::InvalidArgument("sparse_momentum: idx, key and scale differ in length");
  }
  if (src_grad != nullptr) std::fill(src_grad, src_grad + n_src * h, 0.0f);
  if (m == 0 || h == 0) return ffi::Error::Success();
  const int32_t* ix = idx.typed_data();
  const int32_t* ky = key.typed_data();
  const float* sc = scale.typed_data();
  const SortedSlots by_key(ky, m, ix, n_src, ky, m, sc, t);
  const float* pd = p.typed_data();
  const float* td = trace.typed_data();
  const float* sd = src.typed_data();
  float* po = p_out->typed_data();  // may alias pd / td (each element read before written)
  float* to = trace_out->typed_data();
  const float neg_lr = -lr.typed_data()[0];
  // Rows [lo, hi): their gradient rows are summed in a cache-sized buffer, then updated in one
  // streaming pass (faster than row by row, measured).
  auto update_rows = [&](int64_t lo, int64_t hi, float* __restrict__ partial) {
    thread_local std::vector<float> scratch;
    const int64_t size = (hi - lo) * h;
    if (static_cast<int64_t>(scratch.size()) < size) scratch.resize(size);
    float* __restrict__ g = scratch.data();
    SumRows(by_key, lo, hi, ix, ky, sc, sd, h, g);
    if (partial == nullptr) {
      MomentumUpdate(g, pd + lo * h, td + lo * h, po + lo * h, to + lo * h, size, momentum,
                     neg_lr);
      return;
    }
    for (int64_t r = lo; r < hi; ++r) {  // each old row once, for src_grad and the update
      const float* __restrict__ w = pd + r * h;
      for (int64_t j = by_key.start[r]; j < by_key.start[r + 1]; ++j) {
        const int32_t i = by_key.order[j];
        const float a = sc[i];
        float* __restrict__ out = partial + static_cast<int64_t>(ix[i]) * h;
        for (int64_t c = 0; c < h; ++c) out[c] += a * w[c];
      }
      MomentumUpdate(g + (r - lo) * h, w, td + r * h, po + r * h, to + r * h, h, momentum,
                     neg_lr);
    }
  };
  if (src_grad == nullptr) {
    const int64_t n_tasks = std::min(kRowTasks, m);
    ParallelFor(pool, n_tasks, [&](int64_t task) {
      update_rows(RowsBegin(task, m, n_tasks), RowsBegin(task + 1, m, n_tasks), nullptr);
    });
    return ffi::Error::Success();
  }
  const int64_t groups = std::min(kGradGroups, m), n_tasks = std::min(kRowTasks, m);
  std::vector<float> partials(groups * n_src * h, 0.0f);
  ParallelFor(pool, groups, [&](int64_t group) {
    for (int64_t task = group * n_tasks / groups; task < (group + 1) * n_tasks / groups; ++task)
      update_rows(RowsBegin(task, m, n_tasks), RowsBegin(task + 1, m, n_tasks),
                  partials.data() + group * n_src * h);
  });
  for (int64_t group = 0; group < groups; ++group) {
    const float* __restrict__ part = partials.data() + group * n_src * h;
    for (int64_t e = 0; e < n_src * h; ++e) src_grad[e] += part[e];
  }
  return ffi::Error::Success();
}

ffi::Error SparseMomentumImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> p,
                              ffi::Buffer<ffi::F32> trace, ffi::Buffer<ffi::F32> src,
                              ffi::Buffer<ffi::S32> idx, ffi::Buffer<ffi::S32> key,
                              ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> lr,
                              ffi::RemainingArgs /*after*/, ffi::ResultBuffer<ffi::F32> p_out,
                              ffi::ResultBuffer<ffi::F32> trace_out, float momentum) {
  return SparseMomentum(pool, p, trace, src, idx, key, scale, lr, p_out, trace_out, nullptr,
                        momentum);
}

ffi::Error SparseMomentumGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> p,
                                  ffi::Buffer<ffi::F32> trace, ffi::Buffer<ffi::F32> src,
                                  ffi::Buffer<ffi::S32> idx, ffi::Buffer<ffi::S32> key,
                                  ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> lr,
                                  ffi::RemainingArgs /*after*/,
                                  ffi::ResultBuffer<ffi::F32> p_out,
                                  ffi::ResultBuffer<ffi::F32> trace_out,
                                  ffi::ResultBuffer<ffi::F32> src_grad, float momentum) {
  if (src_grad->element_count() != src.element_count()) {
    return ffi::Error::InvalidArgument("sparse_momentum_grad: src_grad differs from src in size");
  }
  return SparseMomentum(pool, p, trace, src, idx, key, scale, lr, p_out, trace_out,
                        src_grad->typed_data(), momentum);
}

// The operands of both sparse momentum handlers: p, trace, src, idx, key, scale, lr, then any
// operands to wait for.
auto SparseMomentumOperands() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::S32>>()
      .Arg<ffi::Buffer<ffi::S32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .RemainingArgs();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DeepaeSparseMomentum, SparseMomentumImpl,
                              SparseMomentumOperands()
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(DeepaeSparseMomentumGrad, SparseMomentumGradImpl,
                              SparseMomentumOperands()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("momentum"));
