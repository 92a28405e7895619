// CPU kernels of torch_bp/ops/dropout.py (DropoutFunction): y = x * (m * s) in one pass, and the
// mask m kept for backward as 1 bit per element (pack_mask); the backward is mask_bwd
// (csrc/cpu/activation.cpp), shared with relu.
#include "../common.h"

namespace torch_bp {
namespace drop {

constexpr int64_t kGrain = 32768;

template <typename T>
void fwd_range(const T* xp, const bool* mp, T* yp, acc_t<T> s, int64_t i, int64_t end) {
  using A = acc_t<T>;
#ifdef TORCH_BP_MASK_VEC
  if constexpr (std::is_same_v<A, float>) {
    const FVec vs(s);
    for (; i + FVec::size() <= end; i += FVec::size()) vstore(yp + i, vload(xp + i) * keep_bits(bits_of_bools(mp + i), vs));
  }
#endif
  for (; i < end; ++i) yp[i] = static_cast<T>(static_cast<A>(xp[i]) * (mp[i] ? s : A(0)));
}

at::Tensor dropout_fwd(const at::Tensor& x_, const at::Tensor& mask_, const at::Tensor& scale) {
  TORCH_CHECK(mask_.scalar_type() == at::kBool && mask_.sizes() == x_.sizes(),
              "torch_bp::dropout_fwd: mask must be a bool tensor of x's shape");
  TORCH_CHECK(scale.numel() == 1 && scale.scalar_type() == x_.scalar_type(),
              "torch_bp::dropout_fwd: scale must be one value of x's dtype");
  const at::Tensor x = x_.contiguous(), mask = mask_.contiguous();
  at::Tensor y = new_output_like(x);
  TORCH_BP_DISPATCH(x.scalar_type(), "dropout_fwd", [&] {
    using A = acc_t<scalar_t>;
    // m * s in x's dtype first (0 or s), as the Python rule and torch's noise tensor
    const A s = static_cast<A>(scale.item<scalar_t>());
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const bool* mp = mask.const_data_ptr<bool>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) { fwd_range(xp, mp, yp, s, begin, end); });
  });
  return y;
}

// Bit i of the result (byte i / 8, bit i % 8) is mask[i] of the flattened, contiguous mask.
at::Tensor pack_mask(const at::Tensor& mask_) {
  TORCH_CHECK(mask_.scalar_type() == at::kBool, "torch_bp::pack_mask: mask must be bool");
  const at::Tensor mask = mask_.contiguous();
  const int64_t n = mask.numel();
  at::Tensor out = at::empty({(n + 7) / 8}, mask.options().dtype(at::kByte));
  const bool* mp = mask.const_data_ptr<bool>();
  uint8_t* op = out.mutable_data_ptr<uint8_t>();
  at::parallel_for(0, (n + 7) / 8, kGrain / 8, [&](int64_t begin, int64_t end) {
    int64_t e = begin * 8;
    const int64_t e1 = std::min(n, end * 8);
#ifdef TORCH_BP_MASK_VEC
    for (; e + FVec::size() <= e1; e += FVec::size()) store_bits(op + e / 8, bits_of_bools(mp + e));
#endif
    for (; e < e1; e += 8) {
      const int64_t cnt = std::min<int64_t>(8, n - e);
      uint8_t m = 0;
      for (int64_t b = 0; b < cnt; ++b) m |= static_cast<uint8_t>(mp[e + b]) << b;
      op[e / 8] = m;
    }
  });
  return out;
}

}  // namespace drop

TORCH_LIBRARY_IMPL(torch_bp, CPU, m) {
  m.impl("dropout_fwd", &drop::dropout_fwd);
  m.impl("pack_mask", &drop::pack_mask);
}

}  // namespace torch_bp
