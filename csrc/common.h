// Shared helpers for the CPU kernels: vector load/store in the accumulation type, the dtype
// dispatch, and per-thread scratch for column sums (grad of weight/bias).
//
// Every kernel is templated over the storage type T (float, double, BFloat16) and computes in
// acc_t<T> = at::opmath_type<T> (float for BFloat16), rounding once when it stores, as the
// Python rules do with `opmath` (torch_bp/ops/_util.py).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <cstring>
#include <type_traits>
#include <vector>

namespace torch_bp {

template <typename T>
using acc_t = at::opmath_type<T>;
template <typename T>
using AVec = at::vec::Vectorized<acc_t<T>>;

// NOTE: BFloat16 vectors are loaded as Vectorized<float> of the same lane count, so a kernel
// written against AVec<T> reads the same for every T.
template <typename T>
inline AVec<T> vload(const T* p, int64_t n = AVec<T>::size()) {
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    return AVec<T>::loadu(p, n);
  } else {
    if (n == AVec<T>::size()) {
      AVec<T> v;
      at::vec::load_to_float(p, v);
      return v;
    }
    acc_t<T> buf[AVec<T>::size()] = {};
    for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<acc_t<T>>(p[i]);
    return AVec<T>::loadu(buf);
  }
}

template <typename T>
inline void vstore(T* p, const AVec<T>& v, int64_t n = AVec<T>::size()) {
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    v.store(p, n);
  } else {
    at::vec::convert_from_float<T>(v, v).store(p, n);  // rounds to nearest even, once
  }
}

template <typename V>
inline typename V::value_type hsum(const V& v) {
  return at::vec::vec_reduce_all([](V& a, V& b) { return a + b; }, v);
}

// Apply f(offset, count) over [0, n) in vector-sized steps; the last step may be partial.
template <typename T, typename F>
inline void vec_loop(int64_t n, const F& f) {
  constexpr int64_t W = AVec<T>::size();
  int64_t i = 0;
  for (; i + W <= n; i += W) f(i, W);
  if (i < n) f(i, n - i);
}

// Rows per task so that a task touches at least ~32K elements (parallel overhead amortised).
inline int64_t row_grain(int64_t d) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(d, 1)); }

// Per-thread accumulators for sums over rows: thread t owns row t of a (threads, k) buffer.
template <typename A>
struct ColumnSums {
  int64_t k;
  std::vector<A> buf;
  ColumnSums(int64_t k_, int64_t n_sums) : k(k_ * n_sums), buf(at::get_num_threads() * k_ * n_sums, A(0)) {}
  A* local() { return buf.data() + at::get_thread_num() * k; }
  // Sum over threads into out[0..k).
  void reduce(A* out) const {
    std::fill(out, out + k, A(0));
    const int64_t t = static_cast<int64_t>(buf.size()) / std::max<int64_t>(k, 1);
    for (int64_t i = 0; i < t; ++i)
      for (int64_t j = 0; j < k; ++j) out[j] += buf[i * k + j];
  }
};

// grad_y as autograd hands it to a backward is often one value expanded to the output's shape
// (the backward of sum() or mean()). Rather than materialising it, a kernel reads element i of
// a row at data[i * col_step] and row r at data[r * row_stride]: both steps are 0 for such a
// gradient (its data is `min_len` copies of the value, so vector loads work), else the tensor is
// made contiguous (col_step 1, row_stride = row length).
struct GradIn {
  at::Tensor data;
  int64_t col_step;
  bool broadcast;
};

inline GradIn grad_in(const at::Tensor& g, int64_t min_len) {
  bool bcast = g.numel() > 1;
  for (int64_t s : g.strides()) bcast = bcast && s == 0;
  if (bcast) return {g.as_strided({1}, {1}).expand({min_len}).contiguous(), 0, true};
  return {g.contiguous(), 1, false};
}

#define TORCH_BP_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, TYPE, NAME, __VA_ARGS__)

inline void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "torch_bp: ", name, " must be a CPU tensor, got ", t.device());
}

inline void check_same_dtype(const at::Tensor& a, const c10::optional<at::Tensor>& b, const char* name) {
  if (b.has_value() && b->defined())
    TORCH_CHECK(b->scalar_type() == a.scalar_type(), "torch_bp: ", name, " must have dtype ",
                a.scalar_type(), ", got ", b->scalar_type());
}

}  // namespace torch_bp
