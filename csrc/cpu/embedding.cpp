// CPU kernels of torch_bp/ops/embedding.py: EmbeddingFunction's lookup and its backward, the
// scatter of grad_y's rows into grad_W.
//
// The backward does not zero-fill grad_W and then add rows into it (two passes over V x D
// numbers, and index_add's per-index loop). The positions are first grouped by index (a counting
// sort: V + n integers, stable, so each row sums its positions in their order); then each row
// of grad_W, in parallel, is written once: the sum of its rows of grad_y in acc_t, divided by
// the count under scale_grad_by_freq, or zero (no position, or padding_idx).
#include "../common.h"

namespace torch_bp {
namespace emb {

template <typename I>
void check_indices(const I* ip, int64_t n, int64_t v) {
  for (int64_t i = 0; i < n; ++i) TORCH_CHECK_INDEX(ip[i] >= 0 && ip[i] < v, "index out of range in self");
}

at::Tensor embedding_fwd(const at::Tensor& indices_, const at::Tensor& weight_) {
  check_cpu(indices_, "indices");
  check_cpu(weight_, "weight");
  TORCH_CHECK(indices_.scalar_type() == at::kLong || indices_.scalar_type() == at::kInt,
              "torch_bp::embedding_fwd: indices must be int64 or int32, got ", indices_.scalar_type());
  TORCH_CHECK(weight_.dim() == 2, "torch_bp::embedding_fwd: weight must be 2-D, got ", weight_.sizes());
  const at::Tensor idx = indices_.contiguous(), w = weight_.contiguous();
  const int64_t n = idx.numel(), v = w.size(0), d = w.size(1);
  std::vector<int64_t> sizes(idx.sizes().begin(), idx.sizes().end());
  sizes.push_back(d);
  at::Tensor y = new_output(sizes, w.options());
  AT_DISPATCH_INDEX_TYPES(idx.scalar_type(), "embedding_fwd", [&] {
    const index_t* ip = idx.const_data_ptr<index_t>();
    check_indices(ip, n, v);
    const int64_t row = d * w.element_size();
    const char* wp = static_cast<const char*>(w.const_data_ptr());
    char* yp = static_cast<char*>(y.mutable_data_ptr());
    if (row == 0) return;
    at::parallel_for(0, n, row_grain(d), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) std::memcpy(yp + i * row, wp + static_cast<int64_t>(ip[i]) * row, row);
    });
  });
  return y;
}

// grad_W[r] = c_r * sum of grad_y[p] over the positions p in pos[start[r] .. start[r + 1]).
template <typename T>
void scatter_rows(const T* gp, int64_t row_stride, const int64_t* start, const int64_t* pos, T* out, int64_t v,
                  int64_t d, int64_t padding_idx, bool scale) {
  using A = acc_t<T>;
  using V = AVec<T>;
  at::parallel_for(0, v, row_grain(d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t p0 = start[r], p1 = start[r + 1];
      T* o = out + r * d;
      if (p0 == p1 || r == padding_idx) {
        std::fill(o, o + d, T(0));
        continue;
      }
      const V c(scale ? A(1) / static_cast<A>(p1 - p0) : A(1));
      vec_loop<T>(d, [&](int64_t j, int64_t k) {
        V acc = vload(gp + pos[p0] * row_stride + j, k);
        for (int64_t p = p0 + 1; p < p1; ++p) acc += vload(gp + pos[p] * row_stride + j, k);
        vstore(o + j, scale ? acc * c : acc, k);
      });
    }
  });
}

at::Tensor embedding_bwd(const at::Tensor& grad_y, const at::Tensor& indices_, int64_t num_weights,
                         c10::optional<int64_t> padding_idx, bool scale_grad_by_freq) {
  check_cpu(indices_, "indices");
  check_cpu(grad_y, "grad_y");
  TORCH_CHECK(indices_.scalar_type() == at::kLong || indices_.scalar_type() == at::kInt,
              "torch_bp::embedding_bwd: indices must be int64 or int32, got ", indices_.scalar_type());
  const at::Tensor idx = indices_.contiguous();
  const int64_t n = idx.numel();
  TORCH_CHECK(grad_y.dim() == idx.dim() + 1 && grad_y.sizes().slice(0, idx.dim()) == idx.sizes(),
              "torch_bp::embedding_bwd: grad_y must have the shape of indices plus one dim, got ", grad_y.sizes(),
              " for indices of shape ", idx.sizes());
  TORCH_CHECK(num_weights >= 0, "torch_bp::embedding_bwd: num_weights must be >= 0");
  const int64_t d = grad_y.size(-1);
  at::Tensor gw = new_output({num_weights, d}, grad_y.options());
  if (num_weights == 0 || d == 0) return gw;
  const GradIn g = grad_in(grad_y, d);
  // start[r] .. start[r + 1]: the positions of index r in pos, in increasing order
  std::vector<int64_t> start(num_weights + 1, 0), pos(n);
  AT_DISPATCH_INDEX_TYPES(idx.scalar_type(), "embedding_bwd", [&] {
    const index_t* ip = idx.const_data_ptr<index_t>();
    check_indices(ip, n, num_weights);
    for (int64_t i = 0; i < n; ++i) ++start[ip[i] + 1];
    for (int64_t r = 0; r < num_weights; ++r) start[r + 1] += start[r];
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < n; ++i) pos[next[ip[i]]++] = i;
  });
  const int64_t pad = padding_idx.has_value() ? *padding_idx : -1;
  TORCH_BP_DISPATCH(grad_y.scalar_type(), "embedding_bwd", [&] {
    scatter_rows<scalar_t>(g.data.const_data_ptr<scalar_t>(), g.broadcast ? 0 : d, start.data(), pos.data(),
                           gw.mutable_data_ptr<scalar_t>(), num_weights, d, pad, scale_grad_by_freq);
  });
  return gw;
}

}  // namespace emb

TORCH_LIBRARY_IMPL(torch_bp, CPU, m) {
  m.impl("embedding_fwd", &emb::embedding_fwd);
  m.impl("embedding_bwd", &emb::embedding_bwd);
}

}  // namespace torch_bp
