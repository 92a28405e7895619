// CPU kernels of torch_bp/ops/loss.py: CrossEntropyFunction (class indices, logits (N, C)); the
// elementwise losses (MSELossFunction, L1LossFunction, HuberLossFunction, BCEWithLogitsFunction).
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
  TORCH_CHECK(r == "sum", "torch_bp: reduction must be none, mean or sum, got ", r);
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

// --- Elementwise losses: L = reduce(e), grad = ge * de, each one pass over the inputs ---
// Inputs of one shape and dtype (the Functions fall back to their Python rules for broadcast
// operands). 'sum' / 'mean' sum e in chunks of kChunk elements, each in acc_t, and the chunks in
// double in a fixed order, so the result does not depend on the number of threads.
constexpr int64_t kChunk = 32768;

// L = reduce(e(o, k)), e(o, k) the vector of the k elements at offset o (acc_t).
template <typename T, typename E>
at::Tensor reduce_elementwise(const at::Tensor& like, Reduction red, const E& e) {
  using V = AVec<T>;
  const int64_t n = like.numel();
  if (red == Reduction::None) {
    at::Tensor out = new_output_like(like);
    T* op = out.mutable_data_ptr<T>();
    at::parallel_for(0, n, kChunk, [&](int64_t b, int64_t b1) {
      vec_loop<T>(b1 - b, [&](int64_t j, int64_t k) { vstore(op + b + j, e(b + j, k), k); });
    });
    return out;
  }
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(chunks, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t b = c * kChunk;
      V acc(0);
      vec_loop<T>(std::min(kChunk, n - b), [&](int64_t j, int64_t k) { acc += V::set(V(0), e(b + j, k), k); });
      part[c] = hsum(acc);
    }
  });
  double total = 0;
  for (double v : part) total += v;
  const double v = red == Reduction::Sum ? total : total / static_cast<double>(n);  // n = 0: NaN, as torch
  return at::scalar_tensor(static_cast<acc_t<T>>(v), like.options().dtype(at::toOpMathType(like.scalar_type())))
      .to(like.scalar_type());
}

// grad = ge * de(o, k): ge is grad_out read in place ('none'; a broadcast value is not
// materialised), else its one value (/ n for 'mean').
template <typename T, typename D>
at::Tensor elementwise_grad(const char* name, const at::Tensor& grad_out, const at::Tensor& like, Reduction red,
                            const D& de) {
  using V = AVec<T>;
  using A = acc_t<T>;
  const int64_t n = like.numel();
  TORCH_CHECK(grad_out.scalar_type() == like.scalar_type() &&
                  (red == Reduction::None ? grad_out.sizes() == like.sizes() : grad_out.numel() == 1),
              "torch_bp::", name, ": grad_out must have the loss's shape and dtype");
  at::Tensor gx = new_output_like(like);
  T* op = gx.mutable_data_ptr<T>();
  if (n == 0) return gx;
  if (red == Reduction::None) {
    const GradIn g = grad_in(grad_out, 64);
    const T* gp = g.data.const_data_ptr<T>();
    const int64_t step = g.col_step;
    at::parallel_for(0, n, kChunk, [&](int64_t b, int64_t b1) {
      vec_loop<T>(b1 - b, [&](int64_t j, int64_t k) {
        const int64_t o = b + j;
        vstore(op + o, vload(gp + o * step, k) * de(o, k), k);
      });
    });
    return gx;
  }
  A ge = static_cast<A>(grad_out.reshape({}).item<T>());
  if (red == Reduction::Mean) ge = ge / static_cast<A>(n);
  const V gv(ge);
  at::parallel_for(0, n, kChunk, [&](int64_t b, int64_t b1) {
    vec_loop<T>(b1 - b, [&](int64_t j, int64_t k) { vstore(op + b + j, gv * de(b + j, k), k); });
  });
  return gx;
}

// d = x - t; l1 rounds it to T first, as its Python rule (x - t in the inputs' dtype).
template <typename T>
inline AVec<T> round_to(const AVec<T>& v) {
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    return v;
  } else {
    return std::get<0>(at::vec::convert_to_float<T>(at::vec::convert_from_float<T>(v, v)));
  }
}

enum class Pointwise { MSE, L1, Huber };

inline Pointwise pointwise_of(c10::string_view loss) {
  if (loss == "mse") return Pointwise::MSE;
  if (loss == "l1") return Pointwise::L1;
  TORCH_CHECK(loss == "huber", "torch_bp::pointwise_loss: loss must be mse, l1 or huber, got ", loss);
  return Pointwise::Huber;
}

inline void check_pair(const at::Tensor& x, const at::Tensor& t, const char* name) {
  TORCH_CHECK(x.sizes() == t.sizes() && x.scalar_type() == t.scalar_type(), "torch_bp::", name,
              ": input and target must have one shape and dtype, got ", x.sizes(), " ", x.scalar_type(), " and ",
              t.sizes(), " ", t.scalar_type());
}

// e(d):   mse d^2,   l1 |d|,   huber scale * (|d| < delta ? d^2 / 2 : delta (|d| - delta / 2))
// de(d):  mse 2 d,   l1 sign(d) (0 at 0 and NaN, as torch.sign),   huber scale * clamp(d, -delta, delta)
template <typename T>
struct PointwiseTerm {
  using V = AVec<T>;
  using A = acc_t<T>;
  const T* x;
  const T* t;
  Pointwise kind;
  A delta, scale;

  V diff(int64_t o, int64_t k) const {
    const V d = vload(x + o, k) - vload(t + o, k);
    return kind == Pointwise::L1 ? round_to<T>(d) : d;
  }
  V value(int64_t o, int64_t k) const {
    const V d = diff(o, k);
    if (kind == Pointwise::MSE) return d * d;
    const V z = d.abs();
    if (kind == Pointwise::L1) return z;
    return V::blendv(V(delta * scale) * (z - V(A(0.5) * delta)), V(A(0.5) * scale) * z * z, z < V(delta));
  }
  V slope(int64_t o, int64_t k) const {
    const V d = diff(o, k);
    if (kind == Pointwise::MSE) return V(A(2)) * d;
    if (kind == Pointwise::L1) return ((d > V(A(0))) & V(A(1))) - ((d < V(A(0))) & V(A(1)));
    const V c = V::blendv(V::blendv(d, V(delta), d > V(delta)), V(-delta), d < V(-delta));  // NaN stays NaN
    return c * V(scale);
  }
};

at::Tensor pointwise_loss_fwd(const at::Tensor& x_, const at::Tensor& t_, c10::string_view loss,
                              c10::string_view reduction, double delta, double scale) {
  check_pair(x_, t_, "pointwise_loss_fwd");
  const Pointwise kind = pointwise_of(loss);
  const Reduction red = reduction_of(reduction);
  const at::Tensor x = x_.contiguous(), t = t_.contiguous();
  at::Tensor out;
  TORCH_BP_DISPATCH(x.scalar_type(), "pointwise_loss_fwd", [&] {
    using A = acc_t<scalar_t>;
    const PointwiseTerm<scalar_t> term{x.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), kind,
                                       static_cast<A>(delta), static_cast<A>(scale)};
    out = reduce_elementwise<scalar_t>(x, red, [&](int64_t o, int64_t k) { return term.value(o, k); });
  });
  return out;
}

// dL/dd (grad_x; grad_t is its negation)
at::Tensor pointwise_loss_bwd(const at::Tensor& grad_out, const at::Tensor& x_, const at::Tensor& t_,
                              c10::string_view loss, c10::string_view reduction, double delta, double scale) {
  check_pair(x_, t_, "pointwise_loss_bwd");
  const Pointwise kind = pointwise_of(loss);
  const Reduction red = reduction_of(reduction);
  const at::Tensor x = x_.contiguous(), t = t_.contiguous();
  at::Tensor gd;
  TORCH_BP_DISPATCH(x.scalar_type(), "pointwise_loss_bwd", [&] {
    using A = acc_t<scalar_t>;
    const PointwiseTerm<scalar_t> term{x.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), kind,
                                       static_cast<A>(delta), static_cast<A>(scale)};
    gd = elementwise_grad<scalar_t>("pointwise_loss_bwd", grad_out, x, red,
                                    [&](int64_t o, int64_t k) { return term.slope(o, k); });
  });
  return gd;
}

// --- BCE with logits: weight w and pos_weight pw optional, of x's shape ---
// e = w ((1 - t) x - l logsigmoid(x)), l = (pw - 1) t + 1;  logsigmoid(x) = min(x, 0) - log1p(e^{-|x|})
// de = w ((pw t + 1 - t) s(x) - pw t)   (w (s(x) - t) without pw)
template <typename T>
struct BCETerm {
  using V = AVec<T>;
  using A = acc_t<T>;
  const T* x;
  const T* t;
  const T* w;   // nullable
  const T* pw;  // nullable

  V value(int64_t o, int64_t k) const {
    const V xv = vload(x + o, k), tv = vload(t + o, k), one(A(1));
    V ls = at::vec::minimum(xv, V(A(0))) - xv.abs().neg().exp().log1p();
    if (pw) ls = ls * ((vload(pw + o, k) - one) * tv + one);
    const V e = (one - tv) * xv - ls;
    return w ? e * vload(w + o, k) : e;
  }
  V slope(int64_t o, int64_t k) const {
    const V xv = vload(x + o, k), tv = vload(t + o, k), one(A(1));
    const V s = one / (one + xv.neg().exp());
    V d;
    if (pw) {
      const V pt = vload(pw + o, k) * tv;
      d = (pt + one - tv) * s - pt;
    } else {
      d = s - tv;
    }
    return w ? vload(w + o, k) * d : d;
  }
};

inline const at::Tensor* optional_like(const c10::optional<at::Tensor>& w, const at::Tensor& x, const char* what) {
  if (!w.has_value() || !w->defined()) return nullptr;
  TORCH_CHECK(w->sizes() == x.sizes() && w->scalar_type() == x.scalar_type(), "torch_bp::bce_with_logits: ", what,
              " must have the input's shape and dtype, got ", w->sizes(), " ", w->scalar_type());
  return &*w;
}

at::Tensor bce_with_logits_impl(const at::Tensor* grad_out, const at::Tensor& x_, const at::Tensor& t_,
                                const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& pos_weight,
                                c10::string_view reduction) {
  const char* name = grad_out ? "bce_with_logits_bwd" : "bce_with_logits_fwd";
  check_pair(x_, t_, name);
  const at::Tensor* w_ = optional_like(weight, x_, "weight");
  const at::Tensor* pw_ = optional_like(pos_weight, x_, "pos_weight");
  const Reduction red = reduction_of(reduction);
  const at::Tensor x = x_.contiguous(), t = t_.contiguous();
  const at::Tensor w = w_ ? w_->contiguous() : at::Tensor(), pw = pw_ ? pw_->contiguous() : at::Tensor();
  at::Tensor out;
  TORCH_BP_DISPATCH(x.scalar_type(), "bce_with_logits", [&] {
    const BCETerm<scalar_t> term{x.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(),
                                 w_ ? w.const_data_ptr<scalar_t>() : nullptr,
                                 pw_ ? pw.const_data_ptr<scalar_t>() : nullptr};
    if (grad_out)
      out = elementwise_grad<scalar_t>(name, *grad_out, x, red, [&](int64_t o, int64_t k) { return term.slope(o, k); });
    else
      out = reduce_elementwise<scalar_t>(x, red, [&](int64_t o, int64_t k) { return term.value(o, k); });
  });
  return out;
}

at::Tensor bce_with_logits_fwd(const at::Tensor& x, const at::Tensor& t, const c10::optional<at::Tensor>& weight,
                               const c10::optional<at::Tensor>& pos_weight, c10::string_view reduction) {
  return bce_with_logits_impl(nullptr, x, t, weight, pos_weight, reduction);
}

// grad_x (no gradient for t here: the Function computes it by its Python rule when needed)
at::Tensor bce_with_logits_bwd(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& t,
                               const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& pos_weight,
                               c10::string_view reduction) {
  return bce_with_logits_impl(&grad_out, x, t, weight, pos_weight, reduction);
}

}  // namespace loss

TORCH_LIBRARY_IMPL(torch_bp, CPU, m) {
  m.impl("cross_entropy_fwd", &loss::cross_entropy_fwd);
  m.impl("cross_entropy_bwd", &loss::cross_entropy_bwd);
  m.impl("pointwise_loss_fwd", &loss::pointwise_loss_fwd);
  m.impl("pointwise_loss_bwd", &loss::pointwise_loss_bwd);
  m.impl("bce_with_logits_fwd", &loss::bce_with_logits_fwd);
  m.impl("bce_with_logits_bwd", &loss::bce_with_logits_bwd);
}

}  // namespace torch_bp
