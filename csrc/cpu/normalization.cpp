// CPU kernels of torch_bp/ops/normalization.py (LayerNormFunction, RMSNormFunction, BatchNormFunction,
// GroupNormFunction).
//
// One task per block of rows. A row is read from memory once per direction: its statistics
// pass and its output pass run back to back, so the second read hits the cache. Only the
// per-row statistics (mean, rstd) are saved for backward, as in the Python rules.
#include "../common.h"

namespace torch_bp {
namespace norm {

// --- LayerNorm ---
template <typename T>
void layer_norm_fwd_kernel(const T* x, const T* w, const T* b, T* y, acc_t<T>* mean, acc_t<T>* rstd,
                           int64_t n, int64_t d, double eps) {
  using A = acc_t<T>;
  using V = AVec<T>;
  at::parallel_for(0, n, row_grain(d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * d;
      T* yr = y + r * d;
      // NOTE: statistics of x - x[0] (see LayerNormFunction): a constant row centres to exactly 0.
      const V vx0(static_cast<A>(xr[0]));
      V s(0);
      vec_loop<T>(d, [&](int64_t j, int64_t k) { s += V::set(V(0), vload(xr + j, k) - vx0, k); });
      const A mu = hsum(s) / static_cast<A>(d);
      const V vmu(mu);
      V q(0);
      vec_loop<T>(d, [&](int64_t j, int64_t k) {
        V c = V::set(V(0), (vload(xr + j, k) - vx0) - vmu, k);
        q = at::vec::fmadd(c, c, q);
      });
      // NOTE: a variance that overflows gives NaN (as torch), not rstd = 0 and a silent y = b.
      const A var = hsum(q) / static_cast<A>(d);
      const A rs = std::isinf(var) ? std::numeric_limits<A>::quiet_NaN() : A(1) / std::sqrt(var + static_cast<A>(eps));
      const V vrs(rs);
      vec_loop<T>(d, [&](int64_t j, int64_t k) {
        V out = ((vload(xr + j, k) - vx0) - vmu) * vrs;
        if (w) out = out * vload(w + j, k);
        if (b) out = out + vload(b + j, k);
        vstore(yr + j, out, k);
      });
      mean[r] = mu;
      rstd[r] = rs;
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_fwd(const at::Tensor& x_, const c10::optional<at::Tensor>& weight,
                                                              const c10::optional<at::Tensor>& bias, int64_t d, double eps) {
  check_same_dtype(x_, weight, "weight");
  check_same_dtype(x_, bias, "bias");
  TORCH_CHECK(d > 0 && x_.numel() % d == 0, "torch_bp::layer_norm_fwd: bad normalized size ", d);
  const at::Tensor x = x_.contiguous();
  const int64_t n = x.numel() / d;
  at::Tensor w = weight.has_value() && weight->defined() ? weight->contiguous() : at::Tensor();
  at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  at::Tensor y = new_output_like(x);
  const auto acc = at::toOpMathType(x.scalar_type());
  at::Tensor mean = at::empty({n, 1}, x.options().dtype(acc));
  at::Tensor rstd = at::empty({n, 1}, x.options().dtype(acc));
  TORCH_BP_DISPATCH(x.scalar_type(), "layer_norm_fwd", [&] {
    layer_norm_fwd_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), w.defined() ? w.const_data_ptr<scalar_t>() : nullptr,
                                    b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>(),
                                    mean.mutable_data_ptr<acc_t<scalar_t>>(), rstd.mutable_data_ptr<acc_t<scalar_t>>(),
                                    n, d, eps);
  });
  return {y, mean, rstd};
}

template <typename T>
void layer_norm_bwd_kernel(const T* gy, int64_t gy_row_stride, const T* x, const T* w, const acc_t<T>* mean,
                           const acc_t<T>* rstd, T* gx, acc_t<T>* gw, acc_t<T>* gb, int64_t n, int64_t d) {
  using A = acc_t<T>;
  using V = AVec<T>;
  const bool cols = gw || gb;
  ColumnSums<A> sums(d, 2);  // [grad_w | grad_b] per thread
  at::parallel_for(0, n, row_grain(d), [&](int64_t begin, int64_t end) {
    A* lw = cols ? sums.local() : nullptr;
    A* lb = cols ? lw + d : nullptr;
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * d;
      const T* gr = gy + r * gy_row_stride;
      const V vmu(mean[r]), vrs(rstd[r]), vx0(static_cast<A>(xr[0]));
      if (gx) {
        V sg(0), sgx(0);  // sum(g), sum(g * xh), g = grad_y * w
        vec_loop<T>(d, [&](int64_t j, int64_t k) {
          V xh = ((vload(xr + j, k) - vx0) - vmu) * vrs;
          V g = vload(gr + j, k);
          if (w) g = g * vload(w + j, k);
          sg += g;
          sgx = at::vec::fmadd(g, V::set(V(0), xh, k), sgx);
        });
        const V mg(hsum(sg) / static_cast<A>(d)), mgx(hsum(sgx) / static_cast<A>(d));
        T* gxr = gx + r * d;
        vec_loop<T>(d, [&](int64_t j, int64_t k) {
          V xh = ((vload(xr + j, k) - vx0) - vmu) * vrs;
          V gyv = vload(gr + j, k);
          V g = w ? gyv * vload(w + j, k) : gyv;
          vstore(gxr + j, vrs * (g - mg - xh * mgx), k);
          if (cols) {
            (V::loadu(lw + j, k) + gyv * xh).store(lw + j, k);
            (V::loadu(lb + j, k) + gyv).store(lb + j, k);
          }
        });
      } else if (cols) {
        vec_loop<T>(d, [&](int64_t j, int64_t k) {
          V xh = ((vload(xr + j, k) - vx0) - vmu) * vrs;
          V gyv = vload(gr + j, k);
          (V::loadu(lw + j, k) + gyv * xh).store(lw + j, k);
          (V::loadu(lb + j, k) + gyv).store(lb + j, k);
        });
      }
    }
  });
  if (cols) {
    std::vector<A> total(2 * d);
    sums.reduce(total.data());
    if (gw) std::copy(total.begin(), total.begin() + d, gw);
    if (gb) std::copy(total.begin() + d, total.end(), gb);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_bwd(const at::Tensor& grad_y_, const at::Tensor& x_,
                                                              const c10::optional<at::Tensor>& weight,
                                                              const at::Tensor& mean_, const at::Tensor& rstd_,
                                                              int64_t d, std::array<bool, 3> mask) {
  check_same_dtype(x_, weight, "weight");
  TORCH_CHECK(grad_y_.scalar_type() == x_.scalar_type() && grad_y_.sizes() == x_.sizes(),
              "torch_bp::layer_norm_bwd: grad_y must match x");
  const at::Tensor x = x_.contiguous(), mean = mean_.contiguous(), rstd = rstd_.contiguous();
  const GradIn gy = grad_in(grad_y_, d);
  const int64_t n = mean.numel();
  TORCH_CHECK(d > 0 && x.numel() == n * d, "torch_bp::layer_norm_bwd: bad normalized size ", d);
  const bool has_w = weight.has_value() && weight->defined();
  at::Tensor w = has_w ? weight->contiguous() : at::Tensor();
  const auto acc = at::toOpMathType(x.scalar_type());
  at::Tensor gx = mask[0] ? new_output_like(x) : at::Tensor();
  at::Tensor gw_acc = mask[1] && has_w ? at::empty({d}, x.options().dtype(acc)) : at::Tensor();
  at::Tensor gb_acc = mask[2] ? at::empty({d}, x.options().dtype(acc)) : at::Tensor();
  TORCH_BP_DISPATCH(x.scalar_type(), "layer_norm_bwd", [&] {
    using A = acc_t<scalar_t>;
    layer_norm_bwd_kernel<scalar_t>(gy.data.const_data_ptr<scalar_t>(), gy.broadcast ? 0 : d, x.const_data_ptr<scalar_t>(),
                                    has_w ? w.const_data_ptr<scalar_t>() : nullptr, mean.const_data_ptr<A>(),
                                    rstd.const_data_ptr<A>(), gx.defined() ? gx.mutable_data_ptr<scalar_t>() : nullptr,
                                    gw_acc.defined() ? gw_acc.mutable_data_ptr<A>() : nullptr,
                                    gb_acc.defined() ? gb_acc.mutable_data_ptr<A>() : nullptr, n, d);
  });
  at::Tensor gw = gw_acc.defined() ? gw_acc.to(x.scalar_type()).view(w.sizes()) : at::Tensor();
  at::Tensor gb = gb_acc.defined() ? gb_acc.to(x.scalar_type()) : at::Tensor();
  return {gx, gw, gb};
}

// --- RMSNorm ---
template <typename T>
void rms_norm_fwd_kernel(const T* x, const T* w, T* y, acc_t<T>* rstd, int64_t n, int64_t d, double eps) {
  using A = acc_t<T>;
  using V = AVec<T>;
  at::parallel_for(0, n, row_grain(d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * d;
      T* yr = y + r * d;
      V q(0);
      vec_loop<T>(d, [&](int64_t j, int64_t k) {
        V v = vload(xr + j, k);
        q = at::vec::fmadd(v, v, q);
      });
      const A rs = A(1) / std::sqrt(hsum(q) / static_cast<A>(d) + static_cast<A>(eps));
      const V vrs(rs);
      vec_loop<T>(d, [&](int64_t j, int64_t k) {
        V out = vload(xr + j, k) * vrs;
        if (w) out = out * vload(w + j, k);
        vstore(yr + j, out, k);
      });
      rstd[r] = rs;
    }
  });
}

std::tuple<at::Tensor, at::Tensor> rms_norm_fwd(const at::Tensor& x_, const c10::optional<at::Tensor>& weight,
                                                int64_t d, double eps) {
  check_same_dtype(x_, weight, "weight");
  TORCH_CHECK(d > 0 && x_.numel() % d == 0, "torch_bp::rms_norm_fwd: bad normalized size ", d);
  const at::Tensor x = x_.contiguous();
  const int64_t n = x.numel() / d;
  at::Tensor w = weight.has_value() && weight->defined() ? weight->contiguous() : at::Tensor();
  at::Tensor y = new_output_like(x);
  at::Tensor rstd = at::empty({n, 1}, x.options().dtype(at::toOpMathType(x.scalar_type())));
  TORCH_BP_DISPATCH(x.scalar_type(), "rms_norm_fwd", [&] {
    rms_norm_fwd_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), w.defined() ? w.const_data_ptr<scalar_t>() : nullptr,
                                  y.mutable_data_ptr<scalar_t>(), rstd.mutable_data_ptr<acc_t<scalar_t>>(), n, d, eps);
  });
  return {y, rstd};
}

template <typename T>
void rms_norm_bwd_kernel(const T* gy, int64_t gy_row_stride, const T* x, const T* w, const acc_t<T>* rstd, T* gx,
                         acc_t<T>* gw, int64_t n, int64_t d) {
  using A = acc_t<T>;
  using V = AVec<T>;
  ColumnSums<A> sums(gw ? d : 0, 1);
  at::parallel_for(0, n, row_grain(d), [&](int64_t begin, int64_t end) {
    A* lw = gw ? sums.local() : nullptr;
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * d;
      const T* gr = gy + r * gy_row_stride;
      const A rs = rstd[r];
      const V vrs(rs);
      if (gx) {
        V sgx(0);  // sum(g * x), g = grad_y * w
        vec_loop<T>(d, [&](int64_t j, int64_t k) {
          V g = vload(gr + j, k);
          if (w) g = g * vload(w + j, k);
          sgx = at::vec::fmadd(g, vload(xr + j, k), sgx);
        });
        const V c(rs * rs * hsum(sgx) / static_cast<A>(d));
        T* gxr = gx + r * d;
        vec_loop<T>(d, [&](int64_t j, int64_t k) {
          V xv = vload(xr + j, k);
          V gyv = vload(gr + j, k);
          V g = w ? gyv * vload(w + j, k) : gyv;
          vstore(gxr + j, vrs * (g - xv * c), k);
          if (lw) (V::loadu(lw + j, k) + gyv * xv * vrs).store(lw + j, k);
        });
      } else if (lw) {
        vec_loop<T>(d, [&](int64_t j, int64_t k) {
          (V::loadu(lw + j, k) + vload(gr + j, k) * vload(xr + j, k) * vrs).store(lw + j, k);
        });
      }
    }
  });
  if (gw) sums.reduce(gw);
}

std::tuple<at::Tensor, at::Tensor> rms_norm_bwd(const at::Tensor& grad_y_, const at::Tensor& x_,
                                                const c10::optional<at::Tensor>& weight, const at::Tensor& rstd_,
                                                int64_t d, std::array<bool, 2> mask) {
  check_same_dtype(x_, weight, "weight");
  TORCH_CHECK(grad_y_.scalar_type() == x_.scalar_type() && grad_y_.sizes() == x_.sizes(),
              "torch_bp::rms_norm_bwd: grad_y must match x");
  const at::Tensor x = x_.contiguous(), rstd = rstd_.contiguous();
  const int64_t n = rstd.numel();
  const bool has_w = weight.has_value() && weight->defined();
  TORCH_CHECK(d > 0 && x.numel() == n * d, "torch_bp::rms_norm_bwd: bad normalized size ", d);
  const GradIn gy = grad_in(grad_y_, d);
  at::Tensor w = has_w ? weight->contiguous() : at::Tensor();
  at::Tensor gx = mask[0] ? new_output_like(x) : at::Tensor();
  at::Tensor gw_acc = mask[1] && has_w ? at::empty({d}, x.options().dtype(at::toOpMathType(x.scalar_type())))
                                       : at::Tensor();
  TORCH_BP_DISPATCH(x.scalar_type(), "rms_norm_bwd", [&] {
    using A = acc_t<scalar_t>;
    rms_norm_bwd_kernel<scalar_t>(gy.data.const_data_ptr<scalar_t>(), gy.broadcast ? 0 : d, x.const_data_ptr<scalar_t>(),
                                  has_w ? w.const_data_ptr<scalar_t>() : nullptr, rstd.const_data_ptr<A>(),
                                  gx.defined() ? gx.mutable_data_ptr<scalar_t>() : nullptr,
                                  gw_acc.defined() ? gw_acc.mutable_data_ptr<A>() : nullptr, n, d);
  });
  at::Tensor gw = gw_acc.defined() ? gw_acc.to(x.scalar_type()).view(w.sizes()) : at::Tensor();
  return {gx, gw};
}


// --- BatchNorm: x (N, C, S) contiguous, one task per block of channels ---
// A channel is N strided runs of S contiguous elements. Statistics: two passes (sum, then the sum
// of squared deviations, both of x - x0), then y = x alpha + beta (alpha = r w, beta = b - mu alpha) in a third;
// the second and third passes over a channel of up to ~64K elements come from the cache.
template <typename T>
inline void bn_alpha_beta(acc_t<T> mean, acc_t<T> var, const T* w, const T* b, int64_t c, double eps,
                          acc_t<T>& alpha, acc_t<T>& beta) {
  using A = acc_t<T>;
  alpha = A(1) / std::sqrt(var + static_cast<A>(eps));
  if (w) alpha = alpha * static_cast<A>(w[c]);
  beta = -mean * alpha;
  if (b) beta = beta + static_cast<A>(b[c]);
}

// The normalisation of one channel, shared by the forward (after its statistics) and the forward
// with given statistics (eval mode, and the lean recompute of ops/_lean.py): bit-identical results.
// With relu (BatchNormReLUFunction, ops/fused.py): y = z where not z <= 0, else 0 (NaN passes, as
// relu_fwd), z the same fmadd.
template <typename T>
inline void bn_apply_channel(const T* x, T* y, int64_t nb, int64_t c, int64_t cs, int64_t s, acc_t<T> alpha,
                             acc_t<T> beta, bool relu = false) {
  using V = AVec<T>;
  const V va(alpha), vb(beta), zero(0);
  for (int64_t i = 0; i < nb; ++i) {
    const T* xr = x + (i * cs + c) * s;
    T* yr = y + (i * cs + c) * s;
    if (relu) {
      vec_loop<T>(s, [&](int64_t j, int64_t k) {
        const V z = at::vec::fmadd(vload(xr + j, k), va, vb);
        vstore(yr + j, V::blendv(z, zero, z <= zero), k);
      });
    } else {
      vec_loop<T>(s, [&](int64_t j, int64_t k) { vstore(yr + j, at::vec::fmadd(vload(xr + j, k), va, vb), k); });
    }
  }
}

template <typename T>
void batch_norm_fwd_kernel(const T* x, const T* w, const T* b, T* y, acc_t<T>* mean, acc_t<T>* var, bool given,
                           int64_t nb, int64_t cs, int64_t s, double eps, bool relu = false) {
  using A = acc_t<T>;
  using V = AVec<T>;
  const A n = static_cast<A>(nb * s);
  at::parallel_for(0, cs, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      if (!given) {
        // NOTE: statistics of x - x0 (x0: the channel's first element), as in layer_norm_fwd: the
        // sums stay small when |mean| >> std, so the mean keeps its precision
        const V vx0(static_cast<A>(x[c * s]));
        V acc(0);
        for (int64_t i = 0; i < nb; ++i) {
          const T* xr = x + (i * cs + c) * s;
          vec_loop<T>(s, [&](int64_t j, int64_t k) { acc += V::set(V(0), vload(xr + j, k) - vx0, k); });
        }
        const A m1 = hsum(acc) / n;
        const V vm1(m1);
        V q(0);
        for (int64_t i = 0; i < nb; ++i) {
          const T* xr = x + (i * cs + c) * s;
          vec_loop<T>(s, [&](int64_t j, int64_t k) {
            const V d = V::set(V(0), (vload(xr + j, k) - vx0) - vm1, k);
            q = at::vec::fmadd(d, d, q);
          });
        }
        mean[c] = static_cast<A>(x[c * s]) + m1;
        var[c] = hsum(q) / n;
      }
      A alpha, beta;
      bn_alpha_beta(mean[c], var[c], w, b, c, eps, alpha, beta);
      bn_apply_channel(x, y, nb, c, cs, s, alpha, beta, relu);
    }
  });
}

// mean/var given (eval statistics, or a recompute with the saved batch statistics): only the
// normalisation runs. Returns (y, mean, var) with mean/var in the accumulation dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_fwd_impl(const at::Tensor& x_,
                                                                   const c10::optional<at::Tensor>& weight,
                                                                   const c10::optional<at::Tensor>& bias,
                                                                   const c10::optional<at::Tensor>& mean_,
                                                                   const c10::optional<at::Tensor>& var_, double eps,
                                                                   bool relu) {
  check_same_dtype(x_, weight, "weight");
  check_same_dtype(x_, bias, "bias");
  TORCH_CHECK(x_.dim() >= 2, "torch_bp::batch_norm_fwd: expected an input (N, C, ...)");
  const bool given = mean_.has_value() && mean_->defined();
  TORCH_CHECK(given == (var_.has_value() && var_->defined()), "torch_bp::batch_norm_fwd: give both mean and var or neither");
  const at::Tensor x = x_.contiguous();
  const int64_t nb = x.size(0), cs = x.size(1), s = nb * cs > 0 ? x.numel() / (nb * cs) : 0;
  const auto acc = at::toOpMathType(x.scalar_type());
  at::Tensor w = weight.has_value() && weight->defined() ? weight->contiguous() : at::Tensor();
  at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  TORCH_CHECK((!w.defined() || w.numel() == cs) && (!b.defined() || b.numel() == cs),
              "torch_bp::batch_norm_fwd: weight and bias must have C elements");
  at::Tensor mean, var;
  if (given) {
    TORCH_CHECK(mean_->numel() == cs && var_->numel() == cs, "torch_bp::batch_norm_fwd: mean and var must have C elements");
    mean = mean_->to(acc).contiguous().clone();
    var = var_->to(acc).contiguous().clone();
  } else {
    TORCH_CHECK(x.numel() > 0, "torch_bp::batch_norm_fwd: batch statistics of an empty input");
    mean = at::empty({cs}, x.options().dtype(acc));
    var = at::empty({cs}, x.options().dtype(acc));
  }
  at::Tensor y = new_output_like(x);
  if (x.numel() == 0) return {y, mean, var};
  TORCH_BP_DISPATCH(x.scalar_type(), "batch_norm_fwd", [&] {
    using A = acc_t<scalar_t>;
    batch_norm_fwd_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), w.defined() ? w.const_data_ptr<scalar_t>() : nullptr,
                                    b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>(),
                                    mean.mutable_data_ptr<A>(), var.mutable_data_ptr<A>(), given, nb, cs, s, eps, relu);
  });
  return {y, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_fwd(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                                                              const c10::optional<at::Tensor>& bias,
                                                              const c10::optional<at::Tensor>& mean,
                                                              const c10::optional<at::Tensor>& var, double eps) {
  return batch_norm_fwd_impl(x, weight, bias, mean, var, eps, false);
}

// BatchNormReLUFunction (ops/fused.py): relu(batch_norm(x)) in the normalisation pass
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_relu_fwd(const at::Tensor& x,
                                                                   const c10::optional<at::Tensor>& weight,
                                                                   const c10::optional<at::Tensor>& bias,
                                                                   const c10::optional<at::Tensor>& mean,
                                                                   const c10::optional<at::Tensor>& var, double eps) {
  return batch_norm_fwd_impl(x, weight, bias, mean, var, eps, true);
}

// training: grad_x = w r (grad_y - sum(grad_y) / n - (x - mu) r^2 sum(grad_y (x - mu)) / n)
// eval:     grad_x = w r grad_y;   grad_w = r sum(grad_y (x - mu)),  grad_b = sum(grad_y)
// With relu (BatchNormReLUFunction): grad_y is first zeroed where z <= 0, z = x alpha + beta recomputed
// by the forward's own fmadd (bn_alpha_beta of the same mean, var, w, b, eps: the forward's z bit for bit;
// float32/float64 only, where the forward stores z unrounded).
template <typename T>
void batch_norm_bwd_kernel(const T* gy, const T* x, const T* w, const acc_t<T>* mean, const acc_t<T>* var, T* gx,
                           acc_t<T>* gw, acc_t<T>* gb, bool training, int64_t nb, int64_t cs, int64_t s, double eps,
                           bool relu = false, const T* b = nullptr) {
  using A = acc_t<T>;
  using V = AVec<T>;
  const A n = static_cast<A>(nb * s);
  const bool sums = gw || gb || (gx && training);
  at::parallel_for(0, cs, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const A mu = mean[c], rstd = A(1) / std::sqrt(var[c] + static_cast<A>(eps));
      const V vmu(mu);
      A alpha = 0, beta = 0;
      if (relu) bn_alpha_beta(mean[c], var[c], w, b, c, eps, alpha, beta);
      const V va(alpha), vb(beta), zero(0);
      // grad_z: grad_y, zeroed where the forward's relu was (relu only)
      auto gz = [&](const T* xp, const T* gp, int64_t k) {
        const V g = vload(gp, k);
        if (!relu) return g;
        return V::blendv(g, zero, at::vec::fmadd(vload(xp, k), va, vb) <= zero);
      };
      A sum_gy = 0, dotp = 0;
      if (sums) {
        V sg(0), sd(0);
        for (int64_t i = 0; i < nb; ++i) {
          const T* xr = x + (i * cs + c) * s;
          const T* gr = gy + (i * cs + c) * s;
          vec_loop<T>(s, [&](int64_t j, int64_t k) {
            const V g = V::set(V(0), gz(xr + j, gr + j, k), k);
            sg += g;
            sd = at::vec::fmadd(g, vload(xr + j, k) - vmu, sd);
          });
        }
        sum_gy = hsum(sg);
        dotp = hsum(sd);
      }
      if (gw) gw[c] = dotp * rstd;
      if (gb) gb[c] = sum_gy;
      if (!gx) continue;
      const A scale = w ? rstd * static_cast<A>(w[c]) : rstd;
      const V vscale(scale);
      if (training) {
        const V vk(-dotp * rstd * rstd / n), vm(sum_gy / n);
        for (int64_t i = 0; i < nb; ++i) {
          const T* xr = x + (i * cs + c) * s;
          const T* gr = gy + (i * cs + c) * s;
          T* out = gx + (i * cs + c) * s;
          vec_loop<T>(s, [&](int64_t j, int64_t k) {
            const V g = at::vec::fmadd(vload(xr + j, k) - vmu, vk, gz(xr + j, gr + j, k));
            vstore(out + j, (g - vm) * vscale, k);
          });
        }
      } else {
        for (int64_t i = 0; i < nb; ++i) {
          const T* xr = x + (i * cs + c) * s;
          const T* gr = gy + (i * cs + c) * s;
          T* out = gx + (i * cs + c) * s;
          vec_loop<T>(s, [&](int64_t j, int64_t k) { vstore(out + j, gz(xr + j, gr + j, k) * vscale, k); });
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_bwd_impl(const at::Tensor& grad_y_, const at::Tensor& x_,
                                                                   const c10::optional<at::Tensor>& weight,
                                                                   const c10::optional<at::Tensor>& bias,
                                                                   const at::Tensor& mean_, const at::Tensor& var_,
                                                                   bool training, double eps, std::array<bool, 3> mask,
                                                                   bool relu) {
  check_same_dtype(x_, weight, "weight");
  check_same_dtype(x_, bias, "bias");
  TORCH_CHECK(!relu || x_.scalar_type() == at::toOpMathType(x_.scalar_type()),
              "torch_bp::batch_norm_relu_bwd: float32/float64 only (the Python rule runs for other dtypes)");
  TORCH_CHECK(grad_y_.scalar_type() == x_.scalar_type() && grad_y_.sizes() == x_.sizes() && x_.dim() >= 2,
              "torch_bp::batch_norm_bwd: grad_y must match x (N, C, ...)");
  const at::Tensor x = x_.contiguous(), gy = grad_y_.contiguous();
  const int64_t nb = x.size(0), cs = x.size(1), s = nb * cs > 0 ? x.numel() / (nb * cs) : 0;
  const auto acc = at::toOpMathType(x.scalar_type());
  const at::Tensor mean = mean_.to(acc).contiguous(), var = var_.to(acc).contiguous();
  TORCH_CHECK(mean.numel() == cs && var.numel() == cs, "torch_bp::batch_norm_bwd: mean and var must have C elements");
  const bool has_w = weight.has_value() && weight->defined();
  at::Tensor w = has_w ? weight->contiguous() : at::Tensor();
  at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  at::Tensor gx = mask[0] ? new_output_like(x) : at::Tensor();
  at::Tensor gw_acc = mask[1] && has_w ? at::zeros({cs}, x.options().dtype(acc)) : at::Tensor();
  at::Tensor gb_acc = mask[2] ? at::zeros({cs}, x.options().dtype(acc)) : at::Tensor();
  if (x.numel() > 0) {
    TORCH_BP_DISPATCH(x.scalar_type(), "batch_norm_bwd", [&] {
      using A = acc_t<scalar_t>;
      batch_norm_bwd_kernel<scalar_t>(gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                      has_w ? w.const_data_ptr<scalar_t>() : nullptr, mean.const_data_ptr<A>(),
                                      var.const_data_ptr<A>(), gx.defined() ? gx.mutable_data_ptr<scalar_t>() : nullptr,
                                      gw_acc.defined() ? gw_acc.mutable_data_ptr<A>() : nullptr,
                                      gb_acc.defined() ? gb_acc.mutable_data_ptr<A>() : nullptr, training, nb, cs, s, eps,
                                      relu, b.defined() ? b.const_data_ptr<scalar_t>() : nullptr);
    });
  }
  at::Tensor gw = gw_acc.defined() ? gw_acc.to(x.scalar_type()).view(w.sizes()) : at::Tensor();
  at::Tensor gb = gb_acc.defined() ? gb_acc.to(x.scalar_type()) : at::Tensor();
  return {gx, gw, gb};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_bwd(const at::Tensor& grad_y, const at::Tensor& x,
                                                              const c10::optional<at::Tensor>& weight,
                                                              const at::Tensor& mean, const at::Tensor& var,
                                                              bool training, double eps, std::array<bool, 3> mask) {
  return batch_norm_bwd_impl(grad_y, x, weight, c10::nullopt, mean, var, training, eps, mask, false);
}

// BatchNormReLUFunction (ops/fused.py): batch norm's backward of grad_y masked by the forward's relu
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_relu_bwd(const at::Tensor& grad_y, const at::Tensor& x,
                                                                   const c10::optional<at::Tensor>& weight,
                                                                   const c10::optional<at::Tensor>& bias,
                                                                   const at::Tensor& mean, const at::Tensor& var,
                                                                   bool training, double eps,
                                                                   std::array<bool, 3> mask) {
  return batch_norm_bwd_impl(grad_y, x, weight, bias, mean, var, training, eps, mask, true);
}


// --- GroupNorm: x (N, C, S) contiguous, G groups of C/G channels; one task per (n, g) ---
// A group is D = C/G * S contiguous elements. Statistics as layer_norm_fwd (two passes over x - x0,
// x0 the group's first element), then y = x alpha + beta per channel (alpha = r w, beta = b - mu alpha),
// the third pass from the cache. mean/rstd: (N, G, 1) in the accumulation dtype.
template <typename T>
void group_norm_fwd_kernel(const T* x, const T* w, const T* b, T* y, acc_t<T>* mean, acc_t<T>* rstd, int64_t nb,
                           int64_t cs, int64_t s, int64_t groups, double eps) {
  using A = acc_t<T>;
  using V = AVec<T>;
  const int64_t cpg = cs / groups, d = cpg * s;
  at::parallel_for(0, nb * groups, row_grain(d), [&](int64_t begin, int64_t end) {
    for (int64_t ng = begin; ng < end; ++ng) {
      const T* xg = x + ng * d;
      T* yg = y + ng * d;
      const A x0 = static_cast<A>(xg[0]);
      const V vx0(x0);
      V acc(0);
      vec_loop<T>(d, [&](int64_t j, int64_t k) { acc += V::set(V(0), vload(xg + j, k) - vx0, k); });
      const A m1 = hsum(acc) / static_cast<A>(d);
      const V vm1(m1);
      V q(0);
      vec_loop<T>(d, [&](int64_t j, int64_t k) {
        const V c = V::set(V(0), (vload(xg + j, k) - vx0) - vm1, k);
        q = at::vec::fmadd(c, c, q);
      });
      // NOTE: var + eps in double, as torch's kernel and the Python rule (an eps below float's normal range)
      const A mu = x0 + m1, rs = static_cast<A>(1.0 / std::sqrt(static_cast<double>(hsum(q) / static_cast<A>(d)) + eps));
      mean[ng] = mu;
      rstd[ng] = rs;
      const int64_t c0 = (ng % groups) * cpg;
      for (int64_t i = 0; i < cpg; ++i) {
        A alpha = w ? rs * static_cast<A>(w[c0 + i]) : rs;
        A beta = -mu * alpha;
        if (b) beta = beta + static_cast<A>(b[c0 + i]);
        const V va(alpha), vb(beta);
        const T* xr = xg + i * s;
        T* yr = yg + i * s;
        vec_loop<T>(s, [&](int64_t j, int64_t k) { vstore(yr + j, at::vec::fmadd(vload(xr + j, k), va, vb), k); });
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_fwd(const at::Tensor& x_, const c10::optional<at::Tensor>& weight,
                                                              const c10::optional<at::Tensor>& bias, int64_t groups,
                                                              double eps) {
  check_same_dtype(x_, weight, "weight");
  check_same_dtype(x_, bias, "bias");
  TORCH_CHECK(x_.dim() >= 2, "torch_bp::group_norm_fwd: expected an input (N, C, ...)");
  const int64_t nb = x_.size(0), cs = x_.size(1);
  TORCH_CHECK(groups > 0 && cs % groups == 0, "torch_bp::group_norm_fwd: C = ", cs, " is not divisible by groups = ",
              groups);
  const at::Tensor x = x_.contiguous();
  const int64_t s = nb * cs > 0 ? x.numel() / (nb * cs) : 0;
  at::Tensor w = weight.has_value() && weight->defined() ? weight->contiguous() : at::Tensor();
  at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  TORCH_CHECK((!w.defined() || w.numel() == cs) && (!b.defined() || b.numel() == cs),
              "torch_bp::group_norm_fwd: weight and bias must have C elements");
  const auto acc = at::toOpMathType(x.scalar_type());
  at::Tensor mean = at::empty({nb, groups, 1}, x.options().dtype(acc));
  at::Tensor rstd = at::empty({nb, groups, 1}, x.options().dtype(acc));
  at::Tensor y = new_output_like(x);
  if (x.numel() == 0) {  // empty groups (S = 0): NaN statistics, as the Python rule
    mean.fill_(std::numeric_limits<double>::quiet_NaN());
    rstd.fill_(std::numeric_limits<double>::quiet_NaN());
    return {y, mean, rstd};
  }
  TORCH_BP_DISPATCH(x.scalar_type(), "group_norm_fwd", [&] {
    using A = acc_t<scalar_t>;
    group_norm_fwd_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), w.defined() ? w.const_data_ptr<scalar_t>() : nullptr,
                                    b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>(),
                                    mean.mutable_data_ptr<A>(), rstd.mutable_data_ptr<A>(), nb, cs, s, groups, eps);
  });
  return {y, mean, rstd};
}

// Per (n, c): db = sum_S grad_y, ds = sum_S grad_y (x - mu) (x - mu formed first, as batch_norm_bwd).
// With g = grad_y w:  mean_D(g) = sum_c w db / D,  mean_D(g xh) = r sum_c w ds / D, so
// grad_x = r w grad_y - r^2 mean_D(g xh) (x - mu) - r mean_D(g): one more pass, per channel.
// grad_w[c] = sum_n r ds,  grad_b[c] = sum_n db (after the parallel part, in a fixed order).
// gy_row_stride: S, or 0 for a grad_y that is one value expanded (GradIn).
template <typename T>
void group_norm_bwd_kernel(const T* gy, int64_t gy_row_stride, const T* x, const T* w, const acc_t<T>* mean,
                           const acc_t<T>* rstd, T* gx, acc_t<T>* ds, acc_t<T>* db, int64_t nb, int64_t cs, int64_t s,
                           int64_t groups) {
  using A = acc_t<T>;
  using V = AVec<T>;
  const int64_t cpg = cs / groups, d = cpg * s;
  at::parallel_for(0, nb * groups, row_grain(d), [&](int64_t begin, int64_t end) {
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t c0 = (ng % groups) * cpg, row0 = ng * cpg;  // row: (n, c) = n * C + c
      const A mu = mean[ng], rs = rstd[ng];
      const V vmu(mu);
      A sum_g = 0, sum_gx = 0;
      for (int64_t i = 0; i < cpg; ++i) {
        const T* xr = x + (row0 + i) * s;
        const T* gr = gy + (row0 + i) * gy_row_stride;
        V sg(0), sd(0);
        vec_loop<T>(s, [&](int64_t j, int64_t k) {
          const V g = V::set(V(0), vload(gr + j, k), k);
          sg += g;
          sd = at::vec::fmadd(g, vload(xr + j, k) - vmu, sd);
        });
        const A b_ = hsum(sg), s_ = hsum(sd);
        db[row0 + i] = b_;
        ds[row0 + i] = s_;
        const A wc = w ? static_cast<A>(w[c0 + i]) : A(1);
        sum_g += wc * b_;
        sum_gx += wc * s_;
      }
      if (!gx) continue;
      const A mg = sum_g / static_cast<A>(d), mgx = rs * sum_gx / static_cast<A>(d);
      const V vk(-rs * rs * mgx), vc(-rs * mg);
      for (int64_t i = 0; i < cpg; ++i) {
        const T* xr = x + (row0 + i) * s;
        const T* gr = gy + (row0 + i) * gy_row_stride;
        T* out = gx + (row0 + i) * s;
        const V va(w ? rs * static_cast<A>(w[c0 + i]) : rs);
        vec_loop<T>(s, [&](int64_t j, int64_t k) {
          vstore(out + j, at::vec::fmadd(vload(xr + j, k) - vmu, vk, at::vec::fmadd(vload(gr + j, k), va, vc)), k);
        });
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_bwd(const at::Tensor& grad_y_, const at::Tensor& x_,
                                                              const c10::optional<at::Tensor>& weight,
                                                              const at::Tensor& mean_, const at::Tensor& rstd_,
                                                              int64_t groups, std::array<bool, 3> mask) {
  check_same_dtype(x_, weight, "weight");
  TORCH_CHECK(grad_y_.scalar_type() == x_.scalar_type() && grad_y_.sizes() == x_.sizes() && x_.dim() >= 2,
              "torch_bp::group_norm_bwd: grad_y must match x (N, C, ...)");
  const int64_t nb = x_.size(0), cs = x_.size(1);
  TORCH_CHECK(groups > 0 && cs % groups == 0, "torch_bp::group_norm_bwd: C = ", cs, " is not divisible by groups = ",
              groups);
  const at::Tensor x = x_.contiguous();
  const int64_t s = nb * cs > 0 ? x.numel() / (nb * cs) : 0;
  const auto acc = at::toOpMathType(x.scalar_type());
  const at::Tensor mean = mean_.to(acc).contiguous(), rstd = rstd_.to(acc).contiguous();
  TORCH_CHECK(mean.numel() == nb * groups && rstd.numel() == nb * groups,
              "torch_bp::group_norm_bwd: mean and rstd must have N * groups elements");
  const GradIn gy = grad_in(grad_y_, s);
  const bool has_w = weight.has_value() && weight->defined();
  at::Tensor w = has_w ? weight->contiguous() : at::Tensor();
  TORCH_CHECK(!has_w || w.numel() == cs, "torch_bp::group_norm_bwd: weight must have C elements");
  at::Tensor gx = mask[0] ? new_output_like(x) : at::Tensor();
  at::Tensor gw, gb;
  if (x.numel() == 0) {
    if (mask[1] && has_w) gw = at::zeros({cs}, x.options()).view(w.sizes());
    if (mask[2]) gb = at::zeros({cs}, x.options());
    return {gx, gw, gb};
  }
  at::Tensor ds = at::empty({nb, cs}, x.options().dtype(acc)), db = at::empty({nb, cs}, x.options().dtype(acc));
  TORCH_BP_DISPATCH(x.scalar_type(), "group_norm_bwd", [&] {
    using A = acc_t<scalar_t>;
    group_norm_bwd_kernel<scalar_t>(gy.data.const_data_ptr<scalar_t>(), gy.broadcast ? 0 : s,
                                    x.const_data_ptr<scalar_t>(), has_w ? w.const_data_ptr<scalar_t>() : nullptr,
                                    mean.const_data_ptr<A>(), rstd.const_data_ptr<A>(),
                                    gx.defined() ? gx.mutable_data_ptr<scalar_t>() : nullptr, ds.mutable_data_ptr<A>(),
                                    db.mutable_data_ptr<A>(), nb, cs, s, groups);
  });
  if (mask[1] && has_w)  // sum_n r[n, g(c)] ds[n, c]
    gw = (ds.view({nb, groups, cs / groups}) * rstd.view({nb, groups, 1})).sum(0).view(w.sizes()).to(x.scalar_type());
  if (mask[2]) gb = db.sum(0).to(x.scalar_type());
  return {gx, gw, gb};
}

}  // namespace norm

TORCH_LIBRARY_IMPL(torch_bp, CPU, m) {
  m.impl("layer_norm_fwd", &norm::layer_norm_fwd);
  m.impl("layer_norm_bwd", &norm::layer_norm_bwd);
  m.impl("rms_norm_fwd", &norm::rms_norm_fwd);
  m.impl("rms_norm_bwd", &norm::rms_norm_bwd);
  m.impl("batch_norm_fwd", &norm::batch_norm_fwd);
  m.impl("batch_norm_bwd", &norm::batch_norm_bwd);
  m.impl("batch_norm_relu_fwd", &norm::batch_norm_relu_fwd);
  m.impl("batch_norm_relu_bwd", &norm::batch_norm_relu_bwd);
  m.impl("group_norm_fwd", &norm::group_norm_fwd);
  m.impl("group_norm_bwd", &norm::group_norm_bwd);
}

}  // namespace torch_bp
