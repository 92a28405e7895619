// CPU kernels of torch_bp/ops/linear.py (BiasActivationFunction): a linear layer's epilogue,
// y = act(h + b) with h = x W^T computed by the matmul, in one pass over h; its backward in one
// pass over grad_y that also sums grad_b. relu keeps its mask as 1 bit per element.
#include "activation.h"

namespace torch_bp {
namespace lin {

enum class Act { ReLU, GELU, GELUTanh, SiLU };

inline Act act_of(c10::string_view activation, c10::string_view approximate) {
  if (activation == "relu") return Act::ReLU;
  if (activation == "silu") return Act::SiLU;
  TORCH_CHECK(activation == "gelu", "torch_bp::bias_act: activation must be relu, gelu or silu, got ", activation);
  return act::tanh_mode(approximate) ? Act::GELUTanh : Act::GELU;
}

// z = h + b rounded to T (as the Python rule's h + b in T), returned in acc_t
template <typename T>
inline AVec<T> bias_add(const T* h, const T* b, int64_t k) {
  AVec<T> z = vload(h, k);
  if (!b) return z;
  z = z + vload(b, k);
  if constexpr (!std::is_same_v<T, acc_t<T>>) {
    T tmp[AVec<T>::size()];
    vstore(tmp, z, k);
    z = vload(tmp, k);
  }
  return z;
}

// f(offset, column, count) over the flattened elements [e0, e1) of rows of c elements, in
// vector-sized runs that never cross a row (so the bias is read contiguously).
template <typename T, typename F>
inline void row_runs(int64_t e0, int64_t e1, int64_t c, const F& f) {
  int64_t e = e0, col = e0 % c;
  while (e < e1) {
    const int64_t len = std::min(c - col, e1 - e);
    vec_loop<T>(len, [&](int64_t j, int64_t k) { f(e + j, col + j, k); });
    e += len;
    col = 0;
  }
}

template <typename T>
void bias_act_fwd_kernel(const T* h, const T* b, T* y, uint8_t* mask, int64_t n, int64_t c, Act a) {
  using V = AVec<T>;
  using A = acc_t<T>;
  // tasks over whole mask bytes, so that no two threads write one byte
  at::parallel_for(0, (n + 7) / 8, act::kGrain / 8, [&](int64_t byte0, int64_t byte1) {
    constexpr int64_t kBlock = 4096;  // elements; the mask of a block is packed from y in cache
    for (int64_t blk = byte0 * 8; blk < std::min(n, byte1 * 8); blk += kBlock) {
      const int64_t blk_end = std::min({n, byte1 * 8, blk + kBlock});
      row_runs<T>(blk, blk_end, c, [&](int64_t e, int64_t col, int64_t k) {
        const V z = bias_add(h + e, b ? b + col : nullptr, k);
        V out;
        switch (a) {
          case Act::ReLU: out = at::vec::clamp_min(z, V(A(0))); break;
          case Act::GELU: out = act::gelu_value(z, false); break;
          case Act::GELUTanh: out = act::gelu_value(z, true); break;
          case Act::SiLU: out = z * act::sigmoid(z); break;
        }
        vstore(y + e, out, k);
      });
      if (mask) {  // bit = [not y <= 0] (= [not z <= 0]), as relu_mask
        int64_t e = blk;
#ifdef TORCH_BP_MASK_VEC
        if constexpr (std::is_same_v<A, float>) {
          for (; e + FVec::size() <= blk_end; e += FVec::size()) store_bits(mask + e / 8, bits_not_le0(vload(y + e)));
        }
#endif
        for (int64_t byte = e / 8; byte < (blk_end + 7) / 8; ++byte) {
          const int64_t base = byte * 8, cnt = std::min<int64_t>(8, n - base);
          uint8_t m = 0;
          for (int64_t i = 0; i < cnt; ++i) m |= static_cast<uint8_t>(!(y[base + i] <= T(0))) << i;
          mask[byte] = m;
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> bias_act_fwd(const at::Tensor& h_, const c10::optional<at::Tensor>& bias,
                                                c10::string_view activation, c10::string_view approximate) {
  const Act a = act_of(activation, approximate);
  check_same_dtype(h_, bias, "bias");
  const at::Tensor h = h_.contiguous();
  const int64_t c = h.dim() ? h.size(-1) : 1, n = h.numel();
  const bool has_b = bias.has_value() && bias->defined();
  TORCH_CHECK(!has_b || bias->numel() == c, "torch_bp::bias_act_fwd: bias must have h.size(-1) elements");
  const at::Tensor b = has_b ? bias->contiguous() : at::Tensor();
  at::Tensor y = new_output_like(h);
  at::Tensor mask = at::empty({a == Act::ReLU ? (n + 7) / 8 : 0}, h.options().dtype(at::kByte));
  if (n == 0 || c == 0) return {y, mask};
  TORCH_BP_DISPATCH(h.scalar_type(), "bias_act_fwd", [&] {
    bias_act_fwd_kernel<scalar_t>(h.const_data_ptr<scalar_t>(), has_b ? b.const_data_ptr<scalar_t>() : nullptr,
                                  y.mutable_data_ptr<scalar_t>(),
                                  a == Act::ReLU ? mask.mutable_data_ptr<uint8_t>() : nullptr, n, c, a);
  });
  return {y, mask};
}

// grad_z = grad_y * act'(z) (relu: grad_y where the mask bit is set, else 0), rounded to T;
// grad_b = sum over rows of grad_z, accumulated in acc_t.
template <typename T>
void bias_act_bwd_kernel(const T* gy, int64_t g_step, const T* h, const uint8_t* mask, const T* b, T* gz,
                         acc_t<T>* gb, int64_t rows, int64_t c, Act a) {
  using V = AVec<T>;
  ColumnSums<acc_t<T>> sums(gb ? c : 0, 1);
  at::parallel_for(0, rows, row_grain(c), [&](int64_t r0, int64_t r1) {
    acc_t<T>* lb = gb ? sums.local() : nullptr;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t base = r * c;
      if (a == Act::ReLU) {
        int64_t j = 0;
#ifdef TORCH_BP_MASK_VEC
        if constexpr (std::is_same_v<acc_t<T>, float>) {
          const int64_t nbytes = (rows * c + 7) / 8;
          for (; j + FVec::size() <= c; j += FVec::size()) {
            const int64_t e = base + j;
            vstore(gz + e, keep_bits(load_bits_at(mask, nbytes, e), vload(gy + e * g_step)));
          }
        }
#endif
        for (; j < c; ++j) {
          const int64_t e = base + j;
          gz[e] = (mask[e >> 3] >> (e & 7)) & 1 ? gy[e * g_step] : T(0);
        }
      } else {
        vec_loop<T>(c, [&](int64_t j, int64_t k) {
          const int64_t e = base + j;
          const V z = bias_add(h + e, b ? b + j : nullptr, k);
          V s;
          switch (a) {
            case Act::GELU: s = act::gelu_slope(z, false); break;
            case Act::GELUTanh: s = act::gelu_slope(z, true); break;
            default: {  // SiLU
              const V sg = act::sigmoid(z);
              s = sg * (V(1) + z * (V(1) - sg));
            }
          }
          vstore(gz + e, vload(gy + e * g_step, k) * s, k);
        });
      }
      if (lb) {
        vec_loop<T>(c, [&](int64_t j, int64_t k) { (V::loadu(lb + j, k) + vload(gz + base + j, k)).store(lb + j, k); });
      }
    }
  });
  if (gb) sums.reduce(gb);
}

std::tuple<at::Tensor, at::Tensor> bias_act_bwd(const at::Tensor& grad_y, const at::Tensor& saved,
                                                const c10::optional<at::Tensor>& bias, c10::string_view activation,
                                                c10::string_view approximate, bool bias_grad) {
  const Act a = act_of(activation, approximate);
  const int64_t n = grad_y.numel(), c = grad_y.dim() ? grad_y.size(-1) : 1;
  if (a == Act::ReLU) {
    TORCH_CHECK(saved.scalar_type() == at::kByte && saved.numel() == (n + 7) / 8,
                "torch_bp::bias_act_bwd: relu expects its bit mask");
  } else {
    TORCH_CHECK(saved.sizes() == grad_y.sizes() && saved.scalar_type() == grad_y.scalar_type(),
                "torch_bp::bias_act_bwd: h must match grad_y");
  }
  check_same_dtype(grad_y, bias, "bias");
  const bool has_b = bias.has_value() && bias->defined();
  TORCH_CHECK(!bias_grad || has_b, "torch_bp::bias_act_bwd: bias_grad needs the bias");
  const at::Tensor s = saved.contiguous();
  const at::Tensor b = has_b ? bias->contiguous() : at::Tensor();
  const GradIn g = grad_in(grad_y, std::max<int64_t>(c, 64));
  at::Tensor gz = new_output_like(grad_y);
  const auto acc = at::toOpMathType(grad_y.scalar_type());
  at::Tensor gb_acc = bias_grad ? at::zeros({c}, grad_y.options().dtype(acc)) : at::Tensor();
  if (n > 0 && c > 0) {
    TORCH_BP_DISPATCH(grad_y.scalar_type(), "bias_act_bwd", [&] {
      const bool relu = a == Act::ReLU;
      bias_act_bwd_kernel<scalar_t>(g.data.const_data_ptr<scalar_t>(), g.col_step,
                                    relu ? nullptr : s.const_data_ptr<scalar_t>(),
                                    relu ? s.const_data_ptr<uint8_t>() : nullptr,
                                    has_b ? b.const_data_ptr<scalar_t>() : nullptr, gz.mutable_data_ptr<scalar_t>(),
                                    bias_grad ? gb_acc.mutable_data_ptr<acc_t<scalar_t>>() : nullptr, n / c, c, a);
    });
  }
  at::Tensor gb = bias_grad ? gb_acc.to(grad_y.scalar_type()).view(b.sizes()) : at::Tensor();
  return {gz, gb};
}

}  // namespace lin

TORCH_LIBRARY_IMPL(torch_bp, CPU, m) {
  m.impl("bias_act_fwd", &lin::bias_act_fwd);
  m.impl("bias_act_bwd", &lin::bias_act_bwd);
}

}  // namespace torch_bp
