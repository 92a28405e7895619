// CPU kernels of torch_bp/ops/pooling.py: MaxPool2dFunction (the max over each window and its
// window-local argmax, uint8 up to 256 window elements, int32 beyond, and the backward scatter) and
// AvgPool2dFunction (window sums over the divisor, and their spread back over each window).
//
// Inputs are contiguous (N*C, H, W) planes; one task per block of planes. The scan order and the
// tie/NaN rule are torch's CPU kernel's (the first maximum in row-major order; a NaN wins).
#include "../common.h"

namespace torch_bp {
namespace pool {

struct Window {
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

// KH, KW: the kernel size when fixed at compile time (2 x 2: unrolled), 0 when not
// 2 x 2 windows, stride 2, no padding or dilation, float: a vector of W outputs from two input
// rows (even/odd lanes deinterleaved); the same comparisons in the same order as the scalar scan,
// so the same maxima and indices. Returns the first output column it did not do.
inline int64_t max_pool_2x2_row_vec(const float* r0, const float* r1, float* y, uint8_t* idx, int64_t wo) {
  int64_t ow = 0;
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  using V = at::vec::Vectorized<float>;
  constexpr int64_t W = V::size();
  float jbuf[W];
  for (; ow + W <= wo; ow += W) {
    const auto top = at::vec::deinterleave2(V::loadu(r0 + 2 * ow), V::loadu(r0 + 2 * ow + W));
    const auto bot = at::vec::deinterleave2(V::loadu(r1 + 2 * ow), V::loadu(r1 + 2 * ow + W));
    V best = top.first, j(0.f);
    const V cand[3] = {top.second, bot.first, bot.second};
    for (int c = 0; c < 3; ++c) {
      const V v = cand[c];
      const V take = (v > best) | v.isnan();  // (v > best || isnan(v)), as the scalar scan
      best = V::blendv(best, v, take);
      j = V::blendv(j, V(static_cast<float>(c + 1)), take);
    }
    best.store(y + ow);
    j.store(jbuf);
    for (int64_t l = 0; l < W; ++l) idx[ow + l] = static_cast<uint8_t>(jbuf[l]);
  }
#endif
  return ow;
}

template <typename T, typename I, int KH = 0, int KW = 0>
void max_pool2d_fwd_kernel(const T* x, T* y, I* idx, int64_t planes, int64_t h, int64_t w, int64_t ho, int64_t wo,
                           Window k) {
  using A = acc_t<T>;
  if constexpr (KH > 0) k.kh = KH;
  if constexpr (KW > 0) k.kw = KW;
  at::parallel_for(0, planes, std::max<int64_t>(1, 16384 / std::max<int64_t>(h * w, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t pl = begin; pl < end; ++pl) {
      const T* xp = x + pl * h * w;
      T* yp = y + pl * ho * wo;
      I* ip = idx + pl * ho * wo;
      for (int64_t oh = 0; oh < ho; ++oh) {
        const int64_t hs = oh * k.sh - k.ph;
        const int64_t h1 = std::min(hs + (k.kh - 1) * k.dh + 1, h);
        int64_t h0 = hs;
        while (h0 < 0) h0 += k.dh;
        int64_t ow = 0;
        if constexpr (std::is_same_v<T, float> && std::is_same_v<I, uint8_t> && KH == 2 && KW == 2) {
          if (k.sh == 2 && k.sw == 2 && k.ph == 0 && k.pw == 0 && k.dh == 1 && k.dw == 1 && 2 * oh + 1 < h)
            ow = max_pool_2x2_row_vec(xp + 2 * oh * w, xp + (2 * oh + 1) * w, yp + oh * wo, ip + oh * wo,
                                      std::min(wo, w / 2));
        }
        for (; ow < wo; ++ow) {
          const int64_t ws = ow * k.sw - k.pw;
          const int64_t w1 = std::min(ws + (k.kw - 1) * k.dw + 1, w);
          int64_t w0 = ws;
          while (w0 < 0) w0 += k.dw;
          int64_t best_h = h0, best_w = w0;
          A best = -std::numeric_limits<A>::infinity();
          if (KH > 0 && KW > 0 && h0 == hs && w0 == ws && h1 == hs + (KH - 1) * k.dh + 1 &&
              w1 == ws + (KW - 1) * k.dw + 1) {  // a whole window: fixed trip counts
            int64_t bj = 0;
            for (int64_t jh = 0; jh < KH; ++jh) {
              const T* row = xp + (hs + jh * k.dh) * w + ws;
              for (int64_t jw = 0; jw < KW; ++jw) {
                const A v = static_cast<A>(row[jw * k.dw]);
                if (v > best || std::isnan(v)) {
                  best = v;
                  bj = jh * KW + jw;
                }
              }
            }
            yp[oh * wo + ow] = static_cast<T>(best);
            ip[oh * wo + ow] = static_cast<I>(bj);
            continue;
          }
          for (int64_t ih = h0; ih < h1; ih += k.dh) {
            const T* row = xp + ih * w;
            for (int64_t iw = w0; iw < w1; iw += k.dw) {
              const A v = static_cast<A>(row[iw]);
              if (v > best || std::isnan(v)) {
                best = v;
                best_h = ih;
                best_w = iw;
              }
            }
          }
          yp[oh * wo + ow] = static_cast<T>(best);
          ip[oh * wo + ow] = static_cast<I>(((best_h - hs) / k.dh) * k.kw + (best_w - ws) / k.dw);
        }
      }
    }
  });
}

// grad_x[window(o)[idx[o]]] += grad_y[o]; bf16 sums in float, rounded once per element.
template <typename T, typename I>
void max_pool2d_bwd_kernel(const T* gy, const I* idx, T* gx, int64_t planes, int64_t h, int64_t w, int64_t ho,
                           int64_t wo, const Window& k) {
  using A = acc_t<T>;
  const bool disjoint = k.sh >= (k.kh - 1) * k.dh + 1 && k.sw >= (k.kw - 1) * k.dw + 1;
  std::vector<int64_t> off(k.kh * k.kw);  // window element j -> offset from the window's corner
  for (int64_t j = 0; j < k.kh * k.kw; ++j) off[j] = (j / k.kw) * k.dh * w + (j % k.kw) * k.dw;
  at::parallel_for(0, planes, std::max<int64_t>(1, 16384 / std::max<int64_t>(h * w, 1)), [&](int64_t begin, int64_t end) {
    std::vector<A> buf(std::is_same_v<T, A> || disjoint ? 0 : h * w);
    for (int64_t pl = begin; pl < end; ++pl) {
      const T* gp = gy + pl * ho * wo;
      const I* ip = idx + pl * ho * wo;
      T* out = gx + pl * h * w;
      if (std::is_same_v<T, A> || disjoint) {  // each input element gets at most one term, or sums in A = T
        std::memset(static_cast<void*>(out), 0, sizeof(T) * h * w);
        for (int64_t oh = 0; oh < ho; ++oh) {
          const int64_t corner = (oh * k.sh - k.ph) * w - k.pw;
          for (int64_t ow = 0; ow < wo; ++ow) {
            const int64_t pos = corner + ow * k.sw + off[ip[oh * wo + ow]];
            out[pos] = static_cast<T>(static_cast<A>(out[pos]) + static_cast<A>(gp[oh * wo + ow]));
          }
        }
      } else {
        std::fill(buf.begin(), buf.end(), A(0));
        for (int64_t oh = 0; oh < ho; ++oh) {
          const int64_t corner = (oh * k.sh - k.ph) * w - k.pw;
          for (int64_t ow = 0; ow < wo; ++ow) buf[corner + ow * k.sw + off[ip[oh * wo + ow]]] += static_cast<A>(gp[oh * wo + ow]);
        }
        for (int64_t i = 0; i < h * w; ++i) out[i] = static_cast<T>(buf[i]);
      }
    }
  });
}

Window window(at::IntArrayRef k, at::IntArrayRef s, at::IntArrayRef p, at::IntArrayRef d) {
  TORCH_CHECK(k.size() == 2 && s.size() == 2 && p.size() == 2 && d.size() == 2,
              "torch_bp::max_pool2d: kernel_size, stride, padding, dilation must have 2 entries");
  TORCH_CHECK(k[0] > 0 && k[1] > 0 && s[0] > 0 && s[1] > 0 && d[0] > 0 && d[1] > 0,
              "torch_bp::max_pool2d: kernel_size, stride and dilation must be positive");
  TORCH_CHECK(p[0] >= 0 && p[1] >= 0 && p[0] <= k[0] / 2 && p[1] <= k[1] / 2,
              "torch_bp::max_pool2d: pad should be at most half of effective kernel size");
  return {k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1]};
}

// x's sizes with the last two replaced by (ho, wo): a pooling output's sizes.
inline std::vector<int64_t> pooled_size(const at::Tensor& x, int64_t ho, int64_t wo) {
  std::vector<int64_t> out(x.sizes().begin(), x.sizes().end() - 2);
  out.push_back(ho);
  out.push_back(wo);
  return out;
}

// x: (N, C, H, W) or (C, H, W), contiguous; (ho, wo) the output size (computed by the caller,
// pooling.py's _pool_out, torch's formula). Returns (y, idx), idx uint8 when kh * kw <= 256.
std::tuple<at::Tensor, at::Tensor> max_pool2d_fwd(const at::Tensor& x_, at::IntArrayRef kernel_size,
                                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                                  at::IntArrayRef dilation, int64_t ho, int64_t wo) {
  TORCH_CHECK(x_.dim() == 3 || x_.dim() == 4, "torch_bp::max_pool2d_fwd: expected a 3-d or 4-d input, got ",
              x_.dim(), "-d");
  const Window k = window(kernel_size, stride, padding, dilation);
  TORCH_CHECK(ho > 0 && wo > 0, "torch_bp::max_pool2d_fwd: output size is too small");
  const at::Tensor x = x_.contiguous();
  const int64_t h = x.size(-2), w = x.size(-1), planes = h * w > 0 ? x.numel() / (h * w) : 0;
  const std::vector<int64_t> out_size = pooled_size(x, ho, wo);
  at::Tensor y = at::empty(out_size, x.options());
  at::Tensor idx = at::empty(out_size, x.options().dtype(k.kh * k.kw <= 256 ? at::kByte : at::kInt));
  if (planes == 0) return {y, idx};
  TORCH_BP_DISPATCH(x.scalar_type(), "max_pool2d_fwd", [&] {
    if (k.kh == 2 && k.kw == 2)
      max_pool2d_fwd_kernel<scalar_t, uint8_t, 2, 2>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                                     idx.mutable_data_ptr<uint8_t>(), planes, h, w, ho, wo, k);
    else if (k.kh == 3 && k.kw == 3)
      max_pool2d_fwd_kernel<scalar_t, uint8_t, 3, 3>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                                     idx.mutable_data_ptr<uint8_t>(), planes, h, w, ho, wo, k);
    else if (idx.scalar_type() == at::kByte)
      max_pool2d_fwd_kernel<scalar_t, uint8_t>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                               idx.mutable_data_ptr<uint8_t>(), planes, h, w, ho, wo, k);
    else
      max_pool2d_fwd_kernel<scalar_t, int32_t>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                               idx.mutable_data_ptr<int32_t>(), planes, h, w, ho, wo, k);
  });
  return {y, idx};
}

at::Tensor max_pool2d_bwd(const at::Tensor& grad_y_, const at::Tensor& idx_, c10::SymIntArrayRef x_size,
                          at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation) {
  const Window k = window(kernel_size, stride, padding, dilation);
  TORCH_CHECK(grad_y_.sizes() == idx_.sizes(), "torch_bp::max_pool2d_bwd: grad_y and idx must have the same shape");
  TORCH_CHECK(idx_.scalar_type() == (k.kh * k.kw <= 256 ? at::kByte : at::kInt),
              "torch_bp::max_pool2d_bwd: idx must be uint8 (int32 for windows over 256 elements)");
  TORCH_CHECK(static_cast<int64_t>(x_size.size()) == grad_y_.dim() && grad_y_.dim() >= 3,
              "torch_bp::max_pool2d_bwd: x_size must have grad_y's number of dims");
  std::vector<int64_t> size;
  for (const auto& s : x_size) size.push_back(s.expect_int());
  const at::Tensor gy = grad_y_.contiguous(), idx = idx_.contiguous();
  const int64_t h = size[size.size() - 2], w = size.back(), ho = gy.size(-2), wo = gy.size(-1);
  const int64_t planes = ho * wo > 0 ? gy.numel() / (ho * wo) : 0;
  at::Tensor gx = at::empty(size, gy.options());
  if (planes == 0 || h * w == 0) return gx.zero_();
  TORCH_BP_DISPATCH(gy.scalar_type(), "max_pool2d_bwd", [&] {
    if (idx.scalar_type() == at::kByte)
      max_pool2d_bwd_kernel<scalar_t, uint8_t>(gy.const_data_ptr<scalar_t>(), idx.const_data_ptr<uint8_t>(),
                                               gx.mutable_data_ptr<scalar_t>(), planes, h, w, ho, wo, k);
    else
      max_pool2d_bwd_kernel<scalar_t, int32_t>(gy.const_data_ptr<scalar_t>(), idx.const_data_ptr<int32_t>(),
                                               gx.mutable_data_ptr<scalar_t>(), planes, h, w, ho, wo, k);
  });
  return gx;
}


// --- AvgPool2d ---
// The window of output o in one dim is [o s - p, o s - p + k); its elements are those inside [0, H).
// D[o] (the divisor): the window clipped to [-p, H + p) (count_include_pad) or to [0, H), the 2-d
// divisor the product of the two dims' (as _avg_divisor in pooling.py), or divisor_override.
struct AvgWindow {
  int64_t kh, kw, sh, sw, ph, pw;
  bool count_include_pad;
  c10::optional<int64_t> divisor_override;
};

inline int64_t avg_count(int64_t start, int64_t k, int64_t size, int64_t p, bool include_pad) {
  const int64_t end = std::min(start + k, size + p);
  return include_pad ? end - start : std::min(end, size) - std::max<int64_t>(start, 0);
}

// D per output position (Ho * Wo), in the accumulation type
template <typename A>
std::vector<A> avg_divisors(int64_t h, int64_t w, int64_t ho, int64_t wo, const AvgWindow& k) {
  std::vector<A> div(ho * wo);
  for (int64_t oh = 0; oh < ho; ++oh)
    for (int64_t ow = 0; ow < wo; ++ow)
      div[oh * wo + ow] = k.divisor_override.has_value()
                              ? static_cast<A>(*k.divisor_override)
                              : static_cast<A>(avg_count(oh * k.sh - k.ph, k.kh, h, k.ph, k.count_include_pad) *
                                               avg_count(ow * k.sw - k.pw, k.kw, w, k.pw, k.count_include_pad));
  return div;
}

inline bool is_2x2_s2(const AvgWindow& k) {
  return k.kh == 2 && k.kw == 2 && k.sh == 2 && k.sw == 2 && k.ph == 0 && k.pw == 0;
}

// y[o] = (sum of the window's elements, row-major) / D[o]
template <typename T>
void avg_pool2d_fwd_kernel(const T* x, T* y, int64_t planes, int64_t h, int64_t w, int64_t ho, int64_t wo,
                           const AvgWindow& k) {
  using A = acc_t<T>;
  const std::vector<A> div = avg_divisors<A>(h, w, ho, wo, k);
  at::parallel_for(0, planes, std::max<int64_t>(1, 16384 / std::max<int64_t>(h * w, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t pl = begin; pl < end; ++pl) {
      const T* xp = x + pl * h * w;
      T* yp = y + pl * ho * wo;
      for (int64_t oh = 0; oh < ho; ++oh) {
        const int64_t hs = oh * k.sh - k.ph, h0 = std::max<int64_t>(hs, 0), h1 = std::min(hs + k.kh, h);
        const A* dp = div.data() + oh * wo;
        int64_t ow = 0;
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
        if constexpr (std::is_same_v<T, float>) {
          // 2 x 2, stride 2: a vector of outputs from two deinterleaved rows, summed in the scalar order
          if (is_2x2_s2(k) && 2 * oh + 1 < h) {
            using V = at::vec::Vectorized<float>;
            constexpr int64_t W = V::size();
            const float* r0 = xp + 2 * oh * w;
            const float* r1 = r0 + w;
            for (; ow + W <= std::min(wo, w / 2); ow += W) {
              const auto top = at::vec::deinterleave2(V::loadu(r0 + 2 * ow), V::loadu(r0 + 2 * ow + W));
              const auto bot = at::vec::deinterleave2(V::loadu(r1 + 2 * ow), V::loadu(r1 + 2 * ow + W));
              (((top.first + top.second) + bot.first + bot.second) / V::loadu(dp + ow)).store(yp + oh * wo + ow);
            }
          }
        }
#endif
        for (; ow < wo; ++ow) {
          const int64_t ws = ow * k.sw - k.pw, w0 = std::max<int64_t>(ws, 0), w1 = std::min(ws + k.kw, w);
          A sum = 0;
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw) sum += static_cast<A>(xp[ih * w + iw]);
          yp[oh * wo + ow] = static_cast<T>(sum / dp[ow]);
        }
      }
    }
  });
}

// grad_x[i] = sum over the windows o containing i of grad_y[o] / D[o]. Disjoint windows (stride >= kernel):
// each element gets at most one term, written directly; overlapping ones sum in the accumulation type.
template <typename T>
void avg_pool2d_bwd_kernel(const T* gy, T* gx, int64_t planes, int64_t h, int64_t w, int64_t ho, int64_t wo,
                           const AvgWindow& k) {
  using A = acc_t<T>;
  const std::vector<A> div = avg_divisors<A>(h, w, ho, wo, k);
  const bool disjoint = k.sh >= k.kh && k.sw >= k.kw;
  // every element in exactly one window: no zero fill needed
  const bool covers = k.sh == k.kh && k.sw == k.kw && k.ph == 0 && k.pw == 0 && ho * k.sh == h && wo * k.sw == w;
  at::parallel_for(0, planes, std::max<int64_t>(1, 16384 / std::max<int64_t>(h * w, 1)), [&](int64_t begin, int64_t end) {
    std::vector<A> buf(disjoint ? 0 : h * w);
    for (int64_t pl = begin; pl < end; ++pl) {
      const T* gp = gy + pl * ho * wo;
      T* out = gx + pl * h * w;
      if (disjoint) {
        if (!covers) std::memset(static_cast<void*>(out), 0, sizeof(T) * h * w);
        for (int64_t oh = 0; oh < ho; ++oh) {
          const int64_t hs = oh * k.sh - k.ph, h0 = std::max<int64_t>(hs, 0), h1 = std::min(hs + k.kh, h);
          const A* dp = div.data() + oh * wo;
          int64_t ow = 0;
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
          if constexpr (std::is_same_v<T, float>) {
            if (is_2x2_s2(k) && 2 * oh + 1 < h) {  // each value to two adjacent columns of two rows
              using V = at::vec::Vectorized<float>;
              constexpr int64_t W = V::size();
              float* r0 = out + 2 * oh * w;
              for (; ow + W <= std::min(wo, w / 2); ow += W) {
                const V v = V::loadu(gp + oh * wo + ow) / V::loadu(dp + ow);
                const auto both = at::vec::interleave2(v, v);
                both.first.store(r0 + 2 * ow);
                both.second.store(r0 + 2 * ow + W);
                both.first.store(r0 + w + 2 * ow);
                both.second.store(r0 + w + 2 * ow + W);
              }
            }
          }
#endif
          for (; ow < wo; ++ow) {
            const int64_t ws = ow * k.sw - k.pw, w0 = std::max<int64_t>(ws, 0), w1 = std::min(ws + k.kw, w);
            const T v = static_cast<T>(static_cast<A>(gp[oh * wo + ow]) / dp[ow]);
            for (int64_t ih = h0; ih < h1; ++ih)
              for (int64_t iw = w0; iw < w1; ++iw) out[ih * w + iw] = v;
          }
        }
      } else {
        std::fill(buf.begin(), buf.end(), A(0));
        for (int64_t oh = 0; oh < ho; ++oh) {
          const int64_t hs = oh * k.sh - k.ph, h0 = std::max<int64_t>(hs, 0), h1 = std::min(hs + k.kh, h);
          for (int64_t ow = 0; ow < wo; ++ow) {
            const int64_t ws = ow * k.sw - k.pw, w0 = std::max<int64_t>(ws, 0), w1 = std::min(ws + k.kw, w);
            const A v = static_cast<A>(gp[oh * wo + ow]) / div[oh * wo + ow];
            for (int64_t ih = h0; ih < h1; ++ih)
              for (int64_t iw = w0; iw < w1; ++iw) buf[ih * w + iw] += v;
          }
        }
        for (int64_t i = 0; i < h * w; ++i) out[i] = static_cast<T>(buf[i]);
      }
    }
  });
}

AvgWindow avg_window(at::IntArrayRef k, at::IntArrayRef s, at::IntArrayRef p, bool count_include_pad,
                     c10::optional<int64_t> divisor_override) {
  TORCH_CHECK(k.size() == 2 && s.size() == 2 && p.size() == 2,
              "torch_bp::avg_pool2d: kernel_size, stride, padding must have 2 entries");
  TORCH_CHECK(k[0] > 0 && k[1] > 0 && s[0] > 0 && s[1] > 0, "torch_bp::avg_pool2d: kernel_size and stride must be positive");
  TORCH_CHECK(p[0] >= 0 && p[1] >= 0 && p[0] <= k[0] / 2 && p[1] <= k[1] / 2,
              "torch_bp::avg_pool2d: pad should be at most half of effective kernel size");
  TORCH_CHECK(!divisor_override.has_value() || *divisor_override != 0, "torch_bp::avg_pool2d: divisor must be not zero");
  return {k[0], k[1], s[0], s[1], p[0], p[1], count_include_pad, divisor_override};
}

// x: (N, C, H, W) or (C, H, W); (ho, wo): the output size (pool_out_size in pooling.py, torch's formula)
at::Tensor avg_pool2d_fwd(const at::Tensor& x_, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                          at::IntArrayRef padding, bool count_include_pad, c10::optional<int64_t> divisor_override,
                          int64_t ho, int64_t wo) {
  TORCH_CHECK(x_.dim() == 3 || x_.dim() == 4, "torch_bp::avg_pool2d_fwd: expected a 3-d or 4-d input, got ",
              x_.dim(), "-d");
  const AvgWindow k = avg_window(kernel_size, stride, padding, count_include_pad, divisor_override);
  TORCH_CHECK(ho > 0 && wo > 0, "torch_bp::avg_pool2d_fwd: output size is too small");
  const at::Tensor x = x_.contiguous();
  const int64_t h = x.size(-2), w = x.size(-1), planes = h * w > 0 ? x.numel() / (h * w) : 0;
  const std::vector<int64_t> out_size = pooled_size(x, ho, wo);
  at::Tensor y = at::empty(out_size, x.options());
  if (planes == 0) return y;
  TORCH_BP_DISPATCH(x.scalar_type(), "avg_pool2d_fwd", [&] {
    avg_pool2d_fwd_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), planes, h, w, ho, wo, k);
  });
  return y;
}

at::Tensor avg_pool2d_bwd(const at::Tensor& grad_y_, c10::SymIntArrayRef x_size, at::IntArrayRef kernel_size,
                          at::IntArrayRef stride, at::IntArrayRef padding, bool count_include_pad,
                          c10::optional<int64_t> divisor_override) {
  const AvgWindow k = avg_window(kernel_size, stride, padding, count_include_pad, divisor_override);
  TORCH_CHECK(static_cast<int64_t>(x_size.size()) == grad_y_.dim() && grad_y_.dim() >= 3,
              "torch_bp::avg_pool2d_bwd: x_size must have grad_y's number of dims");
  std::vector<int64_t> size;
  for (const auto& s : x_size) size.push_back(s.expect_int());
  const at::Tensor gy = grad_y_.contiguous();
  const int64_t h = size[size.size() - 2], w = size.back(), ho = gy.size(-2), wo = gy.size(-1);
  const int64_t planes = ho * wo > 0 ? gy.numel() / (ho * wo) : 0;
  at::Tensor gx = new_output(size, gy.options());
  if (planes == 0 || h * w == 0) return gx.zero_();
  TORCH_BP_DISPATCH(gy.scalar_type(), "avg_pool2d_bwd", [&] {
    avg_pool2d_bwd_kernel<scalar_t>(gy.const_data_ptr<scalar_t>(), gx.mutable_data_ptr<scalar_t>(), planes, h, w, ho,
                                    wo, k);
  });
  return gx;
}

}  // namespace pool

TORCH_LIBRARY_IMPL(torch_bp, CPU, m) {
  m.impl("max_pool2d_fwd", &pool::max_pool2d_fwd);
  m.impl("max_pool2d_bwd", &pool::max_pool2d_bwd);
  m.impl("avg_pool2d_fwd", &pool::avg_pool2d_fwd);
  m.impl("avg_pool2d_bwd", &pool::avg_pool2d_bwd);
}

}  // namespace torch_bp
