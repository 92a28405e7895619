// CPU kernels of torch_bp/ops/dropout.py (DropoutFunction): y = x * (m * s) in one pass, and the
// mask m kept for backward as 1 bit per element (pack_mask); the backward is mask_bwd
// (csrc/cpu/activation.cpp), shared with relu.
#include "../common.h"

namespace torch_bp {
namespace drop {

constexpr int64_t kGrain = 32768;

at::Tensor dropout_fwd(const at::Tensor& x_, const at::Tensor& mask_, const at::Tensor& scale) {
  TORCH_CHECK(mask_.scalar_type() == at::kBool && mask_.sizes() == x_.sizes(),
              "torch_bp::dropout_fwd: mask must be a bool tensor of x's shape");
  TORCH_CHECK(scale.numel() == 1 && scale.scalar_type() == x_.scalar_type(),
              "torch_bp::dropout_fwd: scale must be one value of x's dtype");
  const at::Tensor x = x_.contiguous(), mask = mask_.contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  TORCH_BP_DISPATCH(x.scalar_type(), "dropout_fwd", [&] {
    using A = acc_t<scalar_t>;
    // m * s in x's dtype first (0 or s), as the Python rule and torch's noise tensor
    const A s = static_cast<A>(scale.item<scalar_t>());
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const bool* mp = mask.const_data_ptr<bool>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) yp[i] = static_cast<scalar_t>(static_cast<A>(xp[i]) * (mp[i] ? s : A(0)));
    });
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
    for (int64_t byte = begin; byte < end; ++byte) {
      const int64_t base = byte * 8, cnt = std::min<int64_t>(8, n - base);
      uint8_t m = 0;
      for (int64_t b = 0; b < cnt; ++b) m |= static_cast<uint8_t>(mp[base + b]) << b;
      op[byte] = m;
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
