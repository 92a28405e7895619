// CPU kernels of torch_bp/ops/conv.py. ConvFunction: the weight gradient
// of a 1d/2d convolution, grad_w[o, c, j] = sum_{n, i} grad_y[n, o, i] x[n, c, i s - p + j d],
// as an im2col + matmul over blocks of output positions that stay in cache:
//
//   for each image n and block B of output rows:  cols[(c, j), i] = x[n, c, i s - p + j d]  (0 off the edge)
//                                                 acc_g += cols_g grad_y[n, g, :, B]^T     (one matmul per group)
//
// acc_g is (C/G * taps, O/G), grad_w_g its transpose: the matmul in this orientation is the
// faster one when C * taps is small (the first layer of a CNN, C = 3).
//
// Tasks (image, block) are split over the threads, each summing into its own accumulator; the
// accumulators are added at the end. float, double and bfloat16 (cols and the sums in float,
// rounded once at the end).
//
// ConvTransposeFunction: its whole backward through torch's convolution primitive (conv_transpose_backward).
#include "../common.h"

namespace torch_bp {
namespace conv {

struct Geometry {
  int64_t c, h, w, ho, wo, kh, kw, sh, sw, ph, pw, dh, dw;
};

// cols (C*KH*KW, rows * WO) for output rows [r0, r0 + rows) of one image x (C, H, W), in A = acc_t<T>
template <typename T, typename A>
void im2col_rows(const T* x, A* cols, const Geometry& g, int64_t r0, int64_t rows) {
  const int64_t p = rows * g.wo;
  for (int64_t c = 0; c < g.c; ++c) {
    const T* xc = x + c * g.h * g.w;
    for (int64_t i = 0; i < g.kh; ++i) {
      for (int64_t j = 0; j < g.kw; ++j) {
        A* dst = cols + ((c * g.kh + i) * g.kw + j) * p;
        // the output columns [lo, hi) read inside the row: lo sw - pw + j dw >= 0, (hi-1) sw - pw + j dw < w
        const int64_t off = j * g.dw - g.pw;
        const int64_t lo = std::min(g.wo, off >= 0 ? 0 : (-off + g.sw - 1) / g.sw);
        const int64_t hi = std::max(lo, std::min(g.wo, g.w - off > 0 ? (g.w - off + g.sw - 1) / g.sw : 0));
        for (int64_t r = 0; r < rows; ++r) {
          A* d = dst + r * g.wo;
          const int64_t ih = (r0 + r) * g.sh - g.ph + i * g.dh;
          if (ih < 0 || ih >= g.h) {
            std::fill(d, d + g.wo, A(0));
            continue;
          }
          const T* src = xc + ih * g.w + off;
          std::fill(d, d + lo, A(0));
          if (std::is_same_v<T, A> && g.sw == 1) {
            std::memcpy(d + lo, src + lo, (hi - lo) * sizeof(T));
          } else {
            for (int64_t q = lo; q < hi; ++q) d[q] = static_cast<A>(src[q * g.sw]);
          }
          std::fill(d + hi, d + g.wo, A(0));
        }
      }
    }
  }
}

at::Tensor conv_weight_grad(const at::Tensor& x_in, const at::Tensor& grad_y_in, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const int64_t nd = static_cast<int64_t>(kernel_size.size());
  TORCH_CHECK(nd == 1 || nd == 2, "torch_bp::conv_weight_grad: 1d or 2d, got ", nd, " kernel dims");
  TORCH_CHECK(x_in.dim() == nd + 2 && grad_y_in.dim() == nd + 2, "torch_bp::conv_weight_grad: x and grad_y must be ",
              nd + 2, "-d (N, C, ...), got ", x_in.sizes(), " and ", grad_y_in.sizes());
  TORCH_CHECK(stride.size() == kernel_size.size() && padding.size() == kernel_size.size() &&
                  dilation.size() == kernel_size.size(),
              "torch_bp::conv_weight_grad: stride, padding and dilation need one entry per kernel dim");
  TORCH_CHECK(x_in.scalar_type() == grad_y_in.scalar_type(), "torch_bp::conv_weight_grad: x and grad_y dtypes differ");
  TORCH_CHECK(x_in.size(0) == grad_y_in.size(0), "torch_bp::conv_weight_grad: batch sizes differ");
  const at::Tensor x = x_in.contiguous(), gy = grad_y_in.contiguous();
  const int64_t n = x.size(0), o = gy.size(1), G = groups;
  const bool two = nd == 2;
  Geometry g{x.size(1), two ? x.size(2) : 1, x.size(-1), two ? gy.size(2) : 1, gy.size(-1),
             two ? kernel_size[0] : 1, kernel_size[nd - 1], two ? stride[0] : 1, stride[nd - 1],
             two ? padding[0] : 0, padding[nd - 1], two ? dilation[0] : 1, dilation[nd - 1]};
  TORCH_CHECK(G >= 1 && g.c % G == 0 && o % G == 0, "torch_bp::conv_weight_grad: groups must divide the channels");
  const int64_t cg = g.c / G, og = o / G, taps = g.kh * g.kw, ck = g.c * taps;
  std::vector<int64_t> wshape{o, cg};
  for (int64_t k : kernel_size) wshape.push_back(k);
  if (n == 0 || g.ho * g.wo == 0) return at::zeros(wshape, x.options());

  // blocks of whole output rows, of equal size, cols of at most about 256K elements (at least one row)
  const int64_t max_rows = std::max<int64_t>(1, std::min(g.ho, (int64_t{1} << 18) / std::max<int64_t>(1, ck * g.wo)));
  const int64_t blocks = (g.ho + max_rows - 1) / max_rows, rows = (g.ho + blocks - 1) / blocks, tasks = n * blocks;
  const int64_t nthreads = std::min<int64_t>(at::get_num_threads(), tasks);
  const auto acc_opts = x.options().dtype(at::toOpMathType(x.scalar_type()));
  at::Tensor acc = at::zeros({nthreads, G, cg * taps, og}, acc_opts);
  const int64_t plane = g.ho * g.wo;

  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "conv_weight_grad", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    // one task range per thread (grain: tasks / nthreads), so that each accumulator has one writer
    at::parallel_for(0, tasks, (tasks + nthreads - 1) / nthreads, [&](int64_t t0, int64_t t1) {
      const int64_t tid = at::get_thread_num();
      TORCH_INTERNAL_ASSERT(tid < nthreads);
      at::Tensor a = acc[tid];
      at::Tensor cols = at::empty({ck, rows * g.wo}, acc_opts);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t img = t / blocks, r0 = (t % blocks) * rows, nr = std::min(rows, g.ho - r0);
        at::Tensor cb = nr == rows ? cols : at::empty({ck, nr * g.wo}, acc_opts);  // the last, shorter block
        im2col_rows(xp + img * g.c * g.h * g.w, cb.data_ptr<A>(), g, r0, nr);
        at::Tensor gyb = gy[img].view({o, plane}).narrow(1, r0 * g.wo, nr * g.wo);
        if (!std::is_same_v<scalar_t, A>) gyb = gyb.to(acc_opts.dtype());
        for (int64_t k = 0; k < G; ++k) {
          at::Tensor ak = a[k];
          ak.addmm_(cb.narrow(0, k * cg * taps, cg * taps), gyb.narrow(0, k * og, og).t());
        }
      }
    });
  });
  return acc.sum(0).transpose(1, 2).contiguous().view(wshape).to(x.scalar_type());
}

// The backward of a transposed convolution y = conv_transpose(x, w, s, p, output_padding, G, d) (+ b) in one
// call of torch's convolution backward primitive: grad_x = conv(grad_y, w, s, p, d, G) cropped to x's size,
// grad_w = the conv weight gradient with grad_y as the conv's input and x as its output gradient, grad_b =
// the sum of grad_y over all but dim 1 (the sums of ConvTransposeFunction's docstring). NOTE: on CPU the
// primitive is oneDNN's deconvolution backward, whose weight gradient runs faster here than the sum
// written as im2col + torch's matmul, or split into its stride phases as stride-1 weight gradients
// (`python -m experiments.benchmarks.probes conv`). Outputs not in output_mask are undefined (None).
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef output_padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  const int64_t nd = weight.dim() - 2;
  TORCH_CHECK(nd >= 1 && nd <= 3 && x.dim() == nd + 2 && grad_y.dim() == nd + 2,
              "torch_bp::conv_transpose_backward: x, grad_y and weight must be (N, C, *spatial) with 1-3 spatial "
              "dims, got ", x.sizes(), ", ", grad_y.sizes(), " and ", weight.sizes());
  TORCH_CHECK(x.scalar_type() == grad_y.scalar_type() && x.scalar_type() == weight.scalar_type(),
              "torch_bp::conv_transpose_backward: x, grad_y and weight dtypes differ");
  const std::vector<int64_t> bias_sizes{weight.size(1) * groups};
  return at::convolution_backward(grad_y, x, weight, output_mask[2] ? c10::OptionalIntArrayRef(bias_sizes)
                                                                    : c10::OptionalIntArrayRef(),
                                  stride, padding, dilation, true, output_padding, groups, output_mask);
}

}  // namespace conv

TORCH_LIBRARY_IMPL(torch_bp, CPU, m) {
  m.impl("conv_weight_grad", &conv::conv_weight_grad);
  m.impl("conv_transpose_backward", &conv::conv_transpose_backward);
}

}  // namespace torch_bp
