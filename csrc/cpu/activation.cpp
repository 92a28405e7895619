// CPU kernels of torch_bp/ops/activation.py: relu's bit-packed mask, gelu (both modes), silu.
//
// Elementwise kernels run over the flattened, contiguous tensor in blocks (at::parallel_for),
// one vector of acc_t at a time; transcendental functions are at::vec's (Sleef, or the same
// erf polynomial torch's own GELU kernel uses).
#include "../common.h"

namespace torch_bp {
namespace act {

constexpr int64_t kGrain = 32768;

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

// --- GELU ---
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kTanhC = 0.044715;

template <typename V>
inline V gelu_value(const V& x, bool tanh_mode) {
  using A = typename V::value_type;
  if (tanh_mode) {
    const V t = (V(A(kSqrt2OverPi)) * (x + V(A(kTanhC)) * x * x * x)).tanh();
    return V(A(0.5)) * x * (V(A(1)) + t);
  }
  return x * V(A(0.5)) * (V(A(1)) + (x * V(A(kInvSqrt2))).erf());
}

template <typename V>
inline V gelu_slope(const V& x, bool tanh_mode) {
  using A = typename V::value_type;
  if (tanh_mode) {
    const V x2 = x * x;
    const V t = (V(A(kSqrt2OverPi)) * (x + V(A(kTanhC)) * x2 * x)).tanh();
    return V(A(0.5)) * (V(A(1)) + t) +
           V(A(0.5)) * x * (V(A(1)) - t * t) * V(A(kSqrt2OverPi)) * (V(A(1)) + V(A(3 * kTanhC)) * x2);
  }
  return V(A(0.5)) * (V(A(1)) + (x * V(A(kInvSqrt2))).erf()) + x * V(A(kInvSqrt2Pi)) * (V(A(-0.5)) * x * x).exp();
}

inline bool tanh_mode(c10::string_view approximate) {
  TORCH_CHECK(approximate == "none" || approximate == "tanh",
              "approximate argument must be either none or tanh, got ", approximate);
  return approximate == "tanh";
}

at::Tensor gelu_fwd(const at::Tensor& x_, c10::string_view approximate) {
  const bool th = tanh_mode(approximate);
  const at::Tensor x = x_.contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
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
  at::Tensor gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  TORCH_BP_DISPATCH(x.scalar_type(), "gelu_bwd", [&] {
    binary_grad<scalar_t>(gy, x, gx, [th](const AVec<scalar_t>& g, const AVec<scalar_t>& v) { return g * gelu_slope(v, th); });
  });
  return gx;
}

// --- SiLU ---
template <typename V>
inline V sigmoid(const V& x) {
  using A = typename V::value_type;
  return V(A(1)) / (V(A(1)) + x.neg().exp());
}

at::Tensor silu_fwd(const at::Tensor& x_) {
  const at::Tensor x = x_.contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
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
  at::Tensor gx = at::empty_like(x, at::MemoryFormat::Contiguous);
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

// --- ReLU: 1 bit per element ---
// Bit i of the mask (byte i / 8, bit i % 8) is [not y_i <= 0] for the flattened, contiguous y
// (set where y is NaN, so that grad_y passes there, as in torch's threshold_backward).
at::Tensor relu_mask(const at::Tensor& y_) {
  const at::Tensor y = y_.contiguous();
  const int64_t n = y.numel();
  at::Tensor mask = at::empty({(n + 7) / 8}, y.options().dtype(at::kByte));
  uint8_t* mp = mask.mutable_data_ptr<uint8_t>();
  TORCH_BP_DISPATCH(y.scalar_type(), "relu_mask", [&] {
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    at::parallel_for(0, (n + 7) / 8, kGrain / 8, [&](int64_t begin, int64_t end) {
      for (int64_t byte = begin; byte < end; ++byte) {
        const int64_t base = byte * 8, cnt = std::min<int64_t>(8, n - base);
        uint8_t m = 0;
        for (int64_t b = 0; b < cnt; ++b) m |= static_cast<uint8_t>(!(yp[base + b] <= scalar_t(0))) << b;
        mp[byte] = m;
      }
    });
  });
  return mask;
}

}  // namespace act

// grad_x = grad_y * bit * scale, the backward of relu (scale 1) and dropout (scale 1/(1-p)).
// Shared by both families, so it lives here with the mask's layout.
at::Tensor mask_bwd(const at::Tensor& grad_y, const at::Tensor& mask, double scale) {
  const GradIn g = grad_in(grad_y, 1);
  const int64_t n = grad_y.numel();
  TORCH_CHECK(mask.scalar_type() == at::kByte && mask.numel() == (n + 7) / 8,
              "torch_bp::mask_bwd: mask must be uint8 with ceil(numel / 8) elements");
  const at::Tensor m = mask.contiguous();
  at::Tensor gx = at::empty(grad_y.sizes(), grad_y.options());
  const uint8_t* mp = m.const_data_ptr<uint8_t>();
  const int64_t step = g.col_step;
  TORCH_BP_DISPATCH(grad_y.scalar_type(), "mask_bwd", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* gp = g.data.const_data_ptr<scalar_t>();
    scalar_t* op = gx.mutable_data_ptr<scalar_t>();
    const A s = static_cast<A>(scale);
    at::parallel_for(0, (n + 7) / 8, act::kGrain / 8, [&](int64_t begin, int64_t end) {
      for (int64_t byte = begin; byte < end; ++byte) {
        const int64_t base = byte * 8, cnt = std::min<int64_t>(8, n - base);
        const uint8_t bits = mp[byte];
        for (int64_t b = 0; b < cnt; ++b)
          op[base + b] = (bits >> b) & 1 ? static_cast<scalar_t>(static_cast<A>(gp[(base + b) * step]) * s) : scalar_t(0);
      }
    });
  });
  return gx;
}

TORCH_LIBRARY_IMPL(torch_bp, CPU, m) {
  m.impl("gelu_fwd", &act::gelu_fwd);
  m.impl("gelu_bwd", &act::gelu_bwd);
  m.impl("silu_fwd", &act::silu_fwd);
  m.impl("silu_bwd", &act::silu_bwd);
  m.impl("relu_mask", &act::relu_mask);
  m.impl("mask_bwd", &mask_bwd);
}

}  // namespace torch_bp
