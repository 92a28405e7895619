// CPU kernels of torch_bp/ops/loss.py: CrossEntropyFunction (class indices, logits (N, C)).
//
// Forward and backward read each row of logits once from memory and never materialise the
// log-probabilities or the probabilities: per row they keep m = max x and s = log sum e^{x - m}
// (saved for backward, as in the Python rule), and p = e^{(x - m) - s} is recomputed where used.
#include "../common.h"

#include <cmath>

namespace torch_bp {
namespace loss {

enum class Reduction { None, Mean, Sum };

inline Reduction reduction_of(c10::string_view r) {
  if (r == "none") return Reduction::None;
  if (r == "mean") return Reduction::Mean;
  TORCH_CHECK(r == "sum", "torch_bp::cross_entropy: reduction must be none, mean or sum, got ", r);
  return Reduction::Sum;
}

// w_y of each row (0 where the target is ignore_index); checks that targets are classes.
template <typename A, typename T>
std::vector<A> picked_weights(const int64_t* target, const T* w, int64_t n, int64_t c, int64_t ignore_index) {
  std::vector<A> wy(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = target[i];
    if (y == ignore_index) {
      wy[i] = A(0);
      continue;
    }
    TORCH_CHECK(y >= 0 && y < c, "Target ", y, " is out of bounds.");
    wy[i] = w ? static_cast<A>(w[y]) : A(1);
  }
  return wy;
}

// sum_c w_c (C without class weights)
template <typename A, typename T>
A weight_sum(const T* w, int64_t c) {
  if (!w) return static_cast<A>(c);
  A t = A(0);
  for (int64_t j = 0; j < c; ++j) t += static_cast<A>(w[j]);
  return t;
}

template <typename T>
void ce_fwd_kernel(const T* x, const int64_t* target, const T* w, const std::vector<acc_t<T>>& wy, acc_t<T>* e,
                   acc_t<T>* m_out, acc_t<T>* s_out, int64_t n, int64_t c, int64_t ignore_index, double ls) {
  using A = acc_t<T>;
  using V = AVec<T>;
  const A wsum = weight_sum<A>(w, c);
  at::parallel_for(0, n, row_grain(c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * c;
      V vm(-std::numeric_limits<A>::infinity());
      vec_loop<T>(c, [&](int64_t j, int64_t k) {
        vm = at::vec::maximum(vm, V::set(V(-std::numeric_limits<A>::infinity()), vload(xr + j, k), k));
      });
      const A m = at::vec::vec_reduce_all([](V& a, V& b) { return at::vec::maximum(a, b); }, vm);
      const V mv(m);
      V se(0), swz(0);  // sum e^{x - m}; with smoothing, sum w_c (x_c - m)
      vec_loop<T>(c, [&](int64_t j, int64_t k) {
        const V z = vload(xr + j, k) - mv;
        se += V::set(V(0), z.exp(), k);
        if (ls > 0) swz += V::set(V(0), w ? z * vload(w + j, k) : z, k);
      });
      const A s = std::log(hsum(se));
      m_out[r] = m;
      s_out[r] = s;
      const int64_t y = target[r];
      if (y == ignore_index) {
        e[r] = A(0);
        continue;
      }
      A er = -(((static_cast<A>(xr[y]) - m) - s) * wy[r]);
      if (ls > 0) {
        const A smooth = -(hsum(swz) - s * wsum);  // -sum_c w_c z_c
        er = static_cast<A>(1 - ls) * er + static_cast<A>(ls / c) * smooth;
      }
      e[r] = er;
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_entropy_fwd(const at::Tensor& x_, const at::Tensor& target_,
                                                                 const c10::optional<at::Tensor>& weight,
                                                                 c10::string_view reduction, int64_t ignore_index,
                                                                 double label_smoothing) {
  TORCH_CHECK(x_.dim() == 2 && target_.dim() == 1 && target_.size(0) == x_.size(0) && target_.scalar_type() == at::kLong,
              "torch_bp::cross_entropy_fwd: expects logits (N, C) and int64 targets (N,)");
  check_same_dtype(x_, weight, "weight");
  const Reduction red = reduction_of(reduction);
  const at::Tensor x = x_.contiguous(), target = target_.contiguous();
  const int64_t n = x.size(0), c = x.size(1);
  const bool has_w = weight.has_value() && weight->defined();
  const at::Tensor w = has_w ? weight->contiguous() : at::Tensor();
  const auto acc = at::toOpMathType(x.scalar_type());
  at::Tensor m = at::empty({n, 1}, x.options().dtype(acc)), s = at::empty({n, 1}, x.options().dtype(acc));
  at::Tensor e = at::empty({n}, x.options().dtype(acc));
  at::Tensor out;
  TORCH_BP_DISPATCH(x.scalar_type(), "cross_entropy_fwd", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* wp = has_w ? w.const_data_ptr<scalar_t>() : nullptr;
    const auto wy = picked_weights<A>(target.const_data_ptr<int64_t>(), wp, n, c, ignore_index);
    ce_fwd_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), target.const_data_ptr<int64_t>(), wp, wy,
                            e.mutable_data_ptr<A>(), m.mutable_data_ptr<A>(), s.mutable_data_ptr<A>(), n, c,
                            ignore_index, label_smoothing);
    if (red == Reduction::None) {
      out = e.to(x.scalar_type());
    } else {
      double total = 0, wsum = 0;  // the n per-row terms, summed in double
      const A* ep = e.const_data_ptr<A>();
      for (int64_t i = 0; i < n; ++i) total += ep[i], wsum += wy[i];
      const double v = red == Reduction::Sum ? total : total / wsum;
      out = at::scalar_tensor(static_cast<A>(v), x.options().dtype(acc)).to(x.scalar_type());
    }
  });
  return {out, m, s};
}

// grad_x[n, c] = ge_n (p[n, c] q_sum_n - q[n, c]), q as in CrossEntropyFunction's docstring:
//   p * (ge q_sum)  -  ge (a / C) w_c  (smoothing)  -  ge (1 - a) w_y [c = y]
template <typename T>
void ce_bwd_kernel(const T* g, int64_t g_step, acc_t<T> g_div, const T* x, const int64_t* target, const T* w,
                   const std::vector<acc_t<T>>& wy, const acc_t<T>* m, const acc_t<T>* s, T* gx, int64_t n, int64_t c,
                   int64_t ignore_index, double ls) {
  using A = acc_t<T>;
  using V = AVec<T>;
  const A a = static_cast<A>(ls), a_c = static_cast<A>(ls / c), wsum = weight_sum<A>(w, c);
  at::parallel_for(0, n, row_grain(c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * c;
      T* out = gx + r * c;
      const int64_t y = target[r];
      const bool valid = y != ignore_index;
      const A ge = valid ? static_cast<A>(g[r * g_step]) / g_div : A(0);
      const A coef = ge * (ls > 0 ? (A(1) - a) * wy[r] + a_c * wsum : wy[r]);
      const A smooth = ge * a_c;
      const V vcoef(coef), vsmooth(smooth), mv(m[r]), sv(s[r]);
      vec_loop<T>(c, [&](int64_t j, int64_t k) {
        V o = ((vload(xr + j, k) - mv) - sv).exp() * vcoef;
        if (ls > 0) o = o - (w ? vsmooth * vload(w + j, k) : vsmooth);
        vstore(out + j, o, k);
      });
      if (valid) {  // the target's element, computed once more in full so that it is rounded once
        A o = std::exp((static_cast<A>(xr[y]) - m[r]) - s[r]) * coef;
        if (ls > 0) o -= w ? smooth * static_cast<A>(w[y]) : smooth;
        out[y] = static_cast<T>(o - ge * ((A(1) - a) * wy[r]));
      }
    }
  });
}

at::Tensor cross_entropy_bwd(const at::Tensor& grad_out, const at::Tensor& x_, const at::Tensor& target_,
                             const c10::optional<at::Tensor>& weight, const at::Tensor& m_, const at::Tensor& s_,
                             c10::string_view reduction, int64_t ignore_index, double label_smoothing) {
  TORCH_CHECK(x_.dim() == 2 && target_.dim() == 1 && target_.size(0) == x_.size(0) && target_.scalar_type() == at::kLong,
              "torch_bp::cross_entropy_bwd: expects logits (N, C) and int64 targets (N,)");
  check_same_dtype(x_, weight, "weight");
  const Reduction red = reduction_of(reduction);
  const at::Tensor x = x_.contiguous(), target = target_.contiguous(), m = m_.contiguous(), s = s_.contiguous();
  const int64_t n = x.size(0), c = x.size(1);
  TORCH_CHECK(red == Reduction::None ? grad_out.numel() == n : grad_out.numel() == 1,
              "torch_bp::cross_entropy_bwd: grad_out has the wrong size");
  const GradIn g = grad_in(grad_out, 1);
  const int64_t g_step = red == Reduction::None ? g.col_step : 0;
  const bool has_w = weight.has_value() && weight->defined();
  const at::Tensor w = has_w ? weight->contiguous() : at::Tensor();
  at::Tensor gx = new_output_like(x);
  TORCH_BP_DISPATCH(x.scalar_type(), "cross_entropy_bwd", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* wp = has_w ? w.const_data_ptr<scalar_t>() : nullptr;
    const auto wy = picked_weights<A>(target.const_data_ptr<int64_t>(), wp, n, c, ignore_index);
    A g_div = A(1);
    if (red == Reduction::Mean) {
      g_div = A(0);
      for (A v : wy) g_div += v;
    }
    ce_bwd_kernel<scalar_t>(g.data.const_data_ptr<scalar_t>(), g_step, g_div, x.const_data_ptr<scalar_t>(),
                            target.const_data_ptr<int64_t>(), wp, wy, m.const_data_ptr<A>(), s.const_data_ptr<A>(),
                            gx.mutable_data_ptr<scalar_t>(), n, c, ignore_index, label_smoothing);
  });
  return gx;
}

}  // namespace loss

TORCH_LIBRARY_IMPL(torch_bp, CPU, m) {
  m.impl("cross_entropy_fwd", &loss::cross_entropy_fwd);
  m.impl("cross_entropy_bwd", &loss::cross_entropy_bwd);
}

}  // namespace torch_bp
