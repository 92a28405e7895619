// The activations' values and slopes on vectors of acc_t, shared by the activation kernels
// and the fused linear epilogue (csrc/cpu/linear.cpp). The formulas are those of the rules in
// torch_bp/ops/activation.py.
#pragma once

#include "../common.h"

namespace torch_bp {
namespace act {

constexpr int64_t kGrain = 32768;  // elements per task of an elementwise kernel

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

// --- SiLU ---
template <typename V>
inline V sigmoid(const V& x) {
  using A = typename V::value_type;
  return V(A(1)) / (V(A(1)) + x.neg().exp());
}

}  // namespace act
}  // namespace torch_bp
