// CPU kernels of torch_bp/ops/activation.py: relu's bit-packed mask, gelu (both modes), silu,
// leaky_relu, elu, softplus, sigmoid, softmax and log_softmax (last dim), and tanh's backward.
//
// Elementwise kernels run over the flattened, contiguous tensor in blocks (at::parallel_for),
// one vector of acc_t at a time; transcendental functions are at::vec's (Sleef, or the same
// erf polynomial torch's own GELU kernel uses).
#include "activation.h"

namespace torch_bp {
namespace act {

template <typename T, typename F>
void unary(const at::Tensor& x, at::Tensor& y, const F& f) {
  const T* xp = x.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
    vec_loop<T>(end - begin, [&](int64_t j, int64_t k) { vstore(yp + begin + j, f(vload(xp + begin + j, k)), k); });
  });
}

// y = f(grad, b) elementwise, grad read through GradIn (a broadcast value is never materialised).
template <typename T, typename F>
void binary_grad(const GradIn& g, const at::Tensor& b, at::Tensor& y, const F& f) {
  const T* gp = g.data.const_data_ptr<T>();
  const T* bp = b.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  const int64_t step = g.col_step;
  at::parallel_for(0, b.numel(), kGrain, [&](int64_t begin, int64_t end) {
    vec_loop<T>(end - begin, [&](int64_t j, int64_t k) {
      const int64_t o = begin + j;
      vstore(yp + o, f(vload(gp + o * step, k), vload(bp + o, k)), k);
    });
  });
}

at::Tensor gelu_fwd(const at::Tensor& x_, c10::string_view approximate) {
  const bool th = tanh_mode(approximate);
  const at::Tensor x = x_.contiguous();
  at::Tensor y = new_output_like(x);
  TORCH_BP_DISPATCH(x.scalar_type(), "gelu_fwd", [&] {
    unary<scalar_t>(x, y, [th](const AVec<scalar_t>& v) { return gelu_value(v, th); });
  });
  return y;
}

at::Tensor gelu_bwd(const at::Tensor& grad_y, const at::Tensor& x_, c10::string_view approximate) {
  const bool th = tanh_mode(approximate);
  TORCH_CHECK(grad_y.sizes() == x_.sizes() && grad_y.scalar_type() == x_.scalar_type(),
              "torch_bp::gelu_bwd: grad_y must match x");
  const at::Tensor x = x_.contiguous();
  const GradIn gy = grad_in(grad_y, 64);
  at::Tensor gx = new_output_like(x);
  TORCH_BP_DISPATCH(x.scalar_type(), "gelu_bwd", [&] {
    binary_grad<scalar_t>(gy, x, gx, [th](const AVec<scalar_t>& g, const AVec<scalar_t>& v) { return g * gelu_slope(v, th); });
  });
  return gx;
}

// --- SiLU ---
at::Tensor silu_fwd(const at::Tensor& x_) {
  const at::Tensor x = x_.contiguous();
  at::Tensor y = new_output_like(x);
  TORCH_BP_DISPATCH(x.scalar_type(), "silu_fwd", [&] {
    unary<scalar_t>(x, y, [](const AVec<scalar_t>& v) { return v * sigmoid(v); });
  });
  return y;
}

at::Tensor silu_bwd(const at::Tensor& grad_y, const at::Tensor& x_) {
  TORCH_CHECK(grad_y.sizes() == x_.sizes() && grad_y.scalar_type() == x_.scalar_type(),
              "torch_bp::silu_bwd: grad_y must match x");
  const at::Tensor x = x_.contiguous();
  const GradIn gy = grad_in(grad_y, 64);
  at::Tensor gx = new_output_like(x);
  TORCH_BP_DISPATCH(x.scalar_type(), "silu_bwd", [&] {
    using V = AVec<scalar_t>;
    using A = acc_t<scalar_t>;
    binary_grad<scalar_t>(gy, x, gx, [](const V& g, const V& v) {
      const V s = sigmoid(v);
      return g * s * (V(A(1)) + v * (V(A(1)) - s));
    });
  });
  return gx;
}

// --- LeakyReLU, ELU, Softplus: y = f(x) and grad_x = grad_y f'(x), one pass each ---
// The branch is a select on [c > thr] (c = x, thr = 0; softplus: c = b x, thr = threshold), false
// for NaN, so that NaN propagates through the other branch, as in the Python rules (torch.where).
template <typename V>
inline V splat(double c) { return V(static_cast<typename V::value_type>(c)); }

template <typename V>
inline V select_above(const V& c, double thr, const V& above, const V& otherwise) {
  return V::blendv(otherwise, above, c > splat<V>(thr));
}

// y = f(x), f a generic lambda on V = AVec<T> (instantiated once per dtype).
template <typename F>
at::Tensor map_fwd(const at::Tensor& x_, const F& f) {
  const at::Tensor x = x_.contiguous();
  at::Tensor y = new_output_like(x);
  TORCH_BP_DISPATCH(x.scalar_type(), "map_fwd", [&] { unary<scalar_t>(x, y, f); });
  return y;
}

// grad_x = f(grad_y, s), s the saved x (tanh, sigmoid: the saved y).
template <typename F>
at::Tensor map_bwd(const char* name, const at::Tensor& grad_y, const at::Tensor& s_, const F& f) {
  TORCH_CHECK(grad_y.sizes() == s_.sizes() && grad_y.scalar_type() == s_.scalar_type(), "torch_bp::", name,
              ": grad_y must match the saved tensor");
  const at::Tensor s = s_.contiguous();
  const GradIn gy = grad_in(grad_y, 64);
  at::Tensor gx = new_output_like(s);
  TORCH_BP_DISPATCH(s.scalar_type(), "map_bwd", [&] { binary_grad<scalar_t>(gy, s, gx, f); });
  return gx;
}

at::Tensor leaky_relu_fwd(const at::Tensor& x, double slope) {
  return map_fwd(x, [=]<typename V>(const V& v) { return select_above(v, 0.0, v, v * splat<V>(slope)); });
}
at::Tensor leaky_relu_bwd(const at::Tensor& grad_y, const at::Tensor& x, double slope) {
  return map_bwd("leaky_relu_bwd", grad_y, x,
                 [=]<typename V>(const V& g, const V& v) { return select_above(v, 0.0, g, g * splat<V>(slope)); });
}

at::Tensor elu_fwd(const at::Tensor& x, double alpha) {
  return map_fwd(x, [=]<typename V>(const V& v) { return select_above(v, 0.0, v, splat<V>(alpha) * v.expm1()); });
}
at::Tensor elu_bwd(const at::Tensor& grad_y, const at::Tensor& x, double alpha) {
  return map_bwd("elu_bwd", grad_y, x,
                 [=]<typename V>(const V& g, const V& v) { return select_above(v, 0.0, g, g * splat<V>(alpha) * v.exp()); });
}

at::Tensor softplus_fwd(const at::Tensor& x, double beta, double threshold) {
  return map_fwd(x, [=]<typename V>(const V& v) {
    const V bx = v * splat<V>(beta);
    return select_above(bx, threshold, v, bx.exp().log1p() / splat<V>(beta));
  });
}
at::Tensor softplus_bwd(const at::Tensor& grad_y, const at::Tensor& x, double beta, double threshold) {
  return map_bwd("softplus_bwd", grad_y, x, [=]<typename V>(const V& g, const V& v) {
    const V bx = v * splat<V>(beta);
    return select_above(bx, threshold, g, g * sigmoid(bx));
  });
}

// --- Tanh, Sigmoid: forwards, and the backward rules from the saved output y ---
at::Tensor tanh_fwd(const at::Tensor& x) {
  return map_fwd(x, []<typename V>(const V& v) { return v.tanh(); });
}
at::Tensor sigmoid_fwd(const at::Tensor& x) {
  return map_fwd(x, []<typename V>(const V& v) { return sigmoid(v); });
}
at::Tensor tanh_bwd(const at::Tensor& grad_y, const at::Tensor& y) {
  return map_bwd("tanh_bwd", grad_y, y, []<typename V>(const V& g, const V& v) { return g * (splat<V>(1) - v * v); });
}
at::Tensor sigmoid_bwd(const at::Tensor& grad_y, const at::Tensor& y) {
  return map_bwd("sigmoid_bwd", grad_y, y, []<typename V>(const V& g, const V& v) { return g * v * (splat<V>(1) - v); });
}

// --- ReLU: 1 bit per element ---
// Bit i of the mask (byte i / 8, bit i % 8) is [not y_i <= 0] for the flattened, contiguous y
// (set where y is NaN, so that grad_y passes there, as in torch's threshold_backward).
template <typename T>
void relu_mask_range(const T* yp, uint8_t* mp, int64_t e, int64_t e1, int64_t n) {
#ifdef TORCH_BP_MASK_VEC
  if constexpr (std::is_same_v<acc_t<T>, float>) {
    for (; e + FVec::size() <= e1; e += FVec::size()) store_bits(mp + e / 8, bits_not_le0(vload(yp + e)));
  }
#endif
  for (; e < e1; e += 8) {
    const int64_t cnt = std::min<int64_t>(8, n - e);
    uint8_t m = 0;
    for (int64_t b = 0; b < cnt; ++b) m |= static_cast<uint8_t>(!(yp[e + b] <= T(0))) << b;
    mp[e / 8] = m;
  }
}

// The forward, into an output of ours (new_output: huge-page advice, as every other compiled
// forward; torch's relu output beside our huge-page gradient made relu's backward fault 3x
// slower here): y = x where not x <= 0 (NaN passes, as torch's relu), else 0.
at::Tensor relu_fwd(const at::Tensor& x) {
  return map_fwd(x, []<typename V>(const V& v) { return V::blendv(v, splat<V>(0), v <= splat<V>(0)); });
}

at::Tensor relu_mask(const at::Tensor& y_) {
  const at::Tensor y = y_.contiguous();
  const int64_t n = y.numel();
  at::Tensor mask = at::empty({(n + 7) / 8}, y.options().dtype(at::kByte));
  uint8_t* mp = mask.mutable_data_ptr<uint8_t>();
  TORCH_BP_DISPATCH(y.scalar_type(), "relu_mask", [&] {
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    at::parallel_for(0, (n + 7) / 8, kGrain / 8, [&](int64_t begin, int64_t end) {
      relu_mask_range(yp, mp, begin * 8, std::min(n, end * 8), n);
    });
  });
  return mask;
}

// --- Softmax / LogSoftmax over the last dim: forward and backward, one row at a time ---
// softmax:      m = max x,  s = sum(e^{x - m}),  y = e^{x - m} * (1 / s)
// log_softmax:  m = max x,  s = sum(e^{x - m}),  y = (x - m) - log s
// (the formulas of torch's vectorised kernels; e^{x - m} is recomputed in the last pass rather
// than stored, so that a bfloat16 output is rounded once). The row stays in L1 between passes.
template <typename T, bool LOG>
void softmax_fwd_kernel(const T* x, T* y, int64_t n, int64_t d) {
  using A = acc_t<T>;
  using V = AVec<T>;
  at::parallel_for(0, n, row_grain(d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * d;
      T* out = y + r * d;
      const V lowest(-std::numeric_limits<A>::infinity());
      V mx = lowest;  // at::vec::maximum propagates NaN, as torch's max
      vec_loop<T>(d, [&](int64_t j, int64_t k) {
        const V v = vload(xr + j, k);
        mx = at::vec::maximum(mx, k == V::size() ? v : V::set(lowest, v, k));
      });
      const V mv(at::vec::vec_reduce_all([](V& a, V& b) { return at::vec::maximum(a, b); }, mx));
      V acc(0);
      vec_loop<T>(d, [&](int64_t j, int64_t k) {
        const V e = (vload(xr + j, k) - mv).exp();
        acc += k == V::size() ? e : V::set(V(0), e, k);
      });
      const A s = hsum(acc);
      if constexpr (LOG) {
        const V ls(std::log(s));
        vec_loop<T>(d, [&](int64_t j, int64_t k) { vstore(out + j, (vload(xr + j, k) - mv) - ls, k); });
      } else {
        const V inv(A(1) / s);
        vec_loop<T>(d, [&](int64_t j, int64_t k) { vstore(out + j, (vload(xr + j, k) - mv).exp() * inv, k); });
      }
    }
  });
}

template <bool LOG>
at::Tensor softmax_fwd_impl(const at::Tensor& x_) {
  TORCH_CHECK(x_.dim() >= 1, "torch_bp::softmax_fwd: x must be at least 1-d");
  const at::Tensor x = x_.contiguous();
  const int64_t d = x.size(-1), n = d > 0 ? x.numel() / d : 0;
  at::Tensor y = new_output_like(x);
  if (n == 0) return y;
  TORCH_BP_DISPATCH(x.scalar_type(), "softmax_fwd", [&] {
    softmax_fwd_kernel<scalar_t, LOG>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), n, d);
  });
  return y;
}

at::Tensor softmax_fwd(const at::Tensor& x) { return softmax_fwd_impl<false>(x); }
at::Tensor log_softmax_fwd(const at::Tensor& x) { return softmax_fwd_impl<true>(x); }

// The backward rules, one pass over each row.
// softmax:      grad_x = y * (grad_y - sum(grad_y * y))
// log_softmax:  grad_x = grad_y - e^y * sum(grad_y)
template <typename T, bool LOG>
void softmax_bwd_kernel(const T* gy, int64_t gy_row_stride, const T* y, T* gx, int64_t n, int64_t d) {
  using A = acc_t<T>;
  using V = AVec<T>;
  at::parallel_for(0, n, row_grain(d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* yr = y + r * d;
      const T* gr = gy + r * gy_row_stride;
      T* out = gx + r * d;
      V acc(0);
      vec_loop<T>(d, [&](int64_t j, int64_t k) {
        if constexpr (LOG) acc += vload(gr + j, k);
        else acc = at::vec::fmadd(vload(gr + j, k), vload(yr + j, k), acc);
      });
      const V sum(hsum(acc));
      vec_loop<T>(d, [&](int64_t j, int64_t k) {
        const V yv = vload(yr + j, k), gv = vload(gr + j, k);
        if constexpr (LOG) vstore(out + j, gv - yv.exp() * sum, k);
        else vstore(out + j, yv * (gv - sum), k);
      });
    }
  });
}

template <bool LOG>
at::Tensor softmax_bwd_impl(const at::Tensor& grad_y, const at::Tensor& y_) {
  TORCH_CHECK(y_.dim() >= 1 && grad_y.sizes() == y_.sizes() && grad_y.scalar_type() == y_.scalar_type(),
              "torch_bp::softmax_bwd: grad_y must match y (at least 1-d)");
  const at::Tensor y = y_.contiguous();
  const int64_t d = y.size(-1), n = d > 0 ? y.numel() / d : 0;
  const GradIn gy = grad_in(grad_y, std::max<int64_t>(d, 1));
  at::Tensor gx = new_output_like(y);
  if (n == 0) return gx;
  TORCH_BP_DISPATCH(y.scalar_type(), "softmax_bwd", [&] {
    softmax_bwd_kernel<scalar_t, LOG>(gy.data.const_data_ptr<scalar_t>(), gy.broadcast ? 0 : d,
                                      y.const_data_ptr<scalar_t>(), gx.mutable_data_ptr<scalar_t>(), n, d);
  });
  return gx;
}

at::Tensor softmax_bwd(const at::Tensor& grad_y, const at::Tensor& y) { return softmax_bwd_impl<false>(grad_y, y); }
at::Tensor log_softmax_bwd(const at::Tensor& grad_y, const at::Tensor& y) { return softmax_bwd_impl<true>(grad_y, y); }

}  // namespace act

template <typename T>
void mask_bwd_range(const T* gp, int64_t step, const uint8_t* mp, T* op, bool has_s, acc_t<T> s, int64_t e,
                    int64_t e1, int64_t n) {
  using A = acc_t<T>;
#ifdef TORCH_BP_MASK_VEC
  if constexpr (std::is_same_v<A, float>) {
    const FVec vs(s);
    for (; e + FVec::size() <= e1; e += FVec::size()) {
      const uint32_t bits = load_bits(mp + e / 8);
      const FVec gv = vload(gp + e * step);
      vstore(op + e, has_s ? gv * keep_bits(bits, vs) : keep_bits(bits, gv));
    }
  }
#endif
  for (; e < e1; e += 8) {
    const int64_t cnt = std::min<int64_t>(8, n - e);
    const uint8_t bits = mp[e / 8];
    for (int64_t b = 0; b < cnt; ++b) {
      const T gv = gp[(e + b) * step];
      op[e + b] = has_s ? static_cast<T>(static_cast<A>(gv) * ((bits >> b) & 1 ? s : A(0))) : ((bits >> b) & 1 ? gv : T(0));
    }
  }
}

// The backward of a bit mask (see relu_mask, pack_mask), shared by relu and dropout:
//   scale None (relu):    grad_x = grad_y where the bit is set, else 0 (a select, as torch's
//                         threshold_backward: no NaN from grad_y where the bit is clear)
//   scale s (dropout):    grad_x = grad_y * (bit * s), s one value of grad_y's dtype (a product,
//                         as the Python rule and torch's mul: NaN * 0 stays NaN)
at::Tensor mask_bwd(const at::Tensor& grad_y, const at::Tensor& mask, const c10::optional<at::Tensor>& scale) {
  const int64_t n = grad_y.numel();
  TORCH_CHECK(mask.scalar_type() == at::kByte && mask.numel() == (n + 7) / 8,
              "torch_bp::mask_bwd: mask must be uint8 with ceil(numel / 8) elements");
  const bool has_s = scale.has_value() && scale->defined();
  TORCH_CHECK(!has_s || (scale->numel() == 1 && scale->scalar_type() == grad_y.scalar_type()),
              "torch_bp::mask_bwd: scale must be one value of grad_y's dtype");
  const GradIn g = grad_in(grad_y, 64);
  const at::Tensor m = mask.contiguous();
  at::Tensor gx = new_output_like(grad_y);
  const uint8_t* mp = m.const_data_ptr<uint8_t>();
  const int64_t step = g.col_step;
  TORCH_BP_DISPATCH(grad_y.scalar_type(), "mask_bwd", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* gp = g.data.const_data_ptr<scalar_t>();
    scalar_t* op = gx.mutable_data_ptr<scalar_t>();
    const A s = has_s ? static_cast<A>(scale->item<scalar_t>()) : A(1);
    at::parallel_for(0, (n + 7) / 8, act::kGrain / 8, [&](int64_t begin, int64_t end) {
      mask_bwd_range(gp, step, mp, op, has_s, s, begin * 8, std::min(n, end * 8), n);
    });
  });
  return gx;
}

TORCH_LIBRARY_IMPL(torch_bp, CPU, m) {
  m.impl("gelu_fwd", &act::gelu_fwd);
  m.impl("gelu_bwd", &act::gelu_bwd);
  m.impl("silu_fwd", &act::silu_fwd);
  m.impl("silu_bwd", &act::silu_bwd);
  m.impl("leaky_relu_fwd", &act::leaky_relu_fwd);
  m.impl("leaky_relu_bwd", &act::leaky_relu_bwd);
  m.impl("elu_fwd", &act::elu_fwd);
  m.impl("elu_bwd", &act::elu_bwd);
  m.impl("softplus_fwd", &act::softplus_fwd);
  m.impl("softplus_bwd", &act::softplus_bwd);
  m.impl("tanh_fwd", &act::tanh_fwd);
  m.impl("tanh_bwd", &act::tanh_bwd);
  m.impl("sigmoid_fwd", &act::sigmoid_fwd);
  m.impl("sigmoid_bwd", &act::sigmoid_bwd);
  m.impl("softmax_fwd", &act::softmax_fwd);
  m.impl("log_softmax_fwd", &act::log_softmax_fwd);
  m.impl("relu_fwd", &act::relu_fwd);
  m.impl("relu_mask", &act::relu_mask);
  m.impl("softmax_bwd", &act::softmax_bwd);
  m.impl("log_softmax_bwd", &act::log_softmax_bwd);
  m.impl("mask_bwd", &mask_bwd);
}

}  // namespace torch_bp
