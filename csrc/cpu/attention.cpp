// CPU kernels of torch_bp/ops/attention.py (ScaledDotProductAttentionFunction): the blocked
// forward (online softmax) and the backward that recomputes the probabilities from the saved row
// log-sum-exp, with every (query block x key block) score tile kept in cache between its matmuls
// and its elementwise passes (the Python rule streams whole (L, S) matrices through memory).
//
// Layout: q (..., L, E), k (..., S, E), v (..., S, Ev) with the same leading dims (one attention
// problem per leading index, "head"; any strides, each head is read through a strided view);
// keep: the dropout keep mask (..., L, S) (bool) or undefined, applied as keep * keep_scale;
// lse (..., L). The tiles' matmuls are at::mm_out / addmm_ (single-threaded inside a task).
// float32 / float64 only (the Python rule runs bfloat16 in float32 and other cases: a mask,
// grouped or broadcast heads).
#include "../common.h"

#include <ATen/core/LegacyTypeDispatch.h>

namespace torch_bp {
namespace attn {

using at::Tensor;

constexpr int64_t kBlockQ = 128;  // query rows per tile
constexpr int64_t kBlockK = 512;  // keys per tile (a 128 x 512 float tile: 256 KiB, fits L2)

// Head b of a (..., X, Y) tensor as a strided (X, Y) view (b: the flat index over the leading dims).
inline Tensor head(const Tensor& t, int64_t b) {
  int64_t off = t.storage_offset();
  for (int64_t d = t.dim() - 3; d >= 0; --d) {
    off += (b % t.size(d)) * t.stride(d);
    b /= t.size(d);
  }
  return t.as_strided({t.size(-2), t.size(-1)}, {t.stride(-2), t.stride(-1)}, off);
}

inline int64_t heads(const Tensor& t) {
  int64_t n = 1;
  for (int64_t d = 0; d + 2 < t.dim(); ++d) n *= t.size(d);
  return n;
}

inline void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const c10::optional<Tensor>& keep,
                         const char* op) {
  const auto dt = q.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble, "torch_bp::", op, ": expects float32 or float64, got ", dt);
  for (const Tensor* t : {&q, &k, &v}) {
    check_cpu(*t, op);
    TORCH_CHECK(t->scalar_type() == dt, "torch_bp::", op, ": q, k, v must have one dtype, got ", t->scalar_type());
    TORCH_CHECK(t->dim() >= 2 && t->dim() == q.dim() && t->sizes().slice(0, q.dim() - 2) == q.sizes().slice(0, q.dim() - 2),
                "torch_bp::", op, ": q, k, v must be (..., L, E), (..., S, E), (..., S, Ev) with the same leading "
                "dims, got ", q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  }
  TORCH_CHECK(q.size(-1) == k.size(-1) && k.size(-2) == v.size(-2), "torch_bp::", op, ": bad shapes q ", q.sizes(),
              ", k ", k.sizes(), ", v ", v.sizes());
  if (keep.has_value() && keep->defined()) {
    check_cpu(*keep, op);
    TORCH_CHECK(keep->scalar_type() == at::kBool && keep->numel() == heads(q) * q.size(-2) * k.size(-2),
                "torch_bp::", op, ": keep must be a bool (..., L, S) mask, got ", keep->scalar_type(), " ",
                keep->sizes());
  }
}

// Scores of one tile, in place: x = scale * x, keys after the query's position + -inf (causal; row r
// is query i0 + r, column c key j0 + c): added as torch adds its causal bias, so a NaN score stays NaN.
template <typename A>
inline void scale_tile(A* s, int64_t n, int64_t bk, A scale, bool causal, int64_t i0, int64_t j0) {
  using V = at::vec::Vectorized<A>;
  for (int64_t r = 0; r < n; ++r) {
    A* x = s + r * bk;
    at::vec::map([scale](V a) { return a * V(scale); }, x, x, bk);
    if (causal)
      for (int64_t c = std::max<int64_t>(0, i0 + r + 1 - j0); c < bk; ++c) x[c] += -std::numeric_limits<A>::infinity();
  }
}

// --- forward ---
template <typename A>
void fwd_kernel(const Tensor& q, const Tensor& k, const Tensor& v, const bool* keep, bool causal, A scale, A ks,
                Tensor& o, A* lse) {
  using V = at::vec::Vectorized<A>;
  const int64_t B = heads(q), L = q.size(-2), S = k.size(-2), Ev = v.size(-1);
  const int64_t nq = (L + kBlockQ - 1) / kBlockQ;
  const A ninf = -std::numeric_limits<A>::infinity();
  at::parallel_for(0, B * nq, 1, [&](int64_t begin, int64_t end) {
    const at::AutoDispatchBelowADInplaceOrView guard;  // worker threads: plain kernels, no autograd
    std::vector<A> m(kBlockQ), l(kBlockQ);
    Tensor sbuf = at::empty({kBlockQ * std::min(S, kBlockK)}, q.options());
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / nq, i0 = (t % nq) * kBlockQ, n = std::min(kBlockQ, L - i0);
      const Tensor qi = head(q, b).narrow(0, i0, n), kb = head(k, b), vb = head(v, b);
      Tensor acc = head(o, b).narrow(0, i0, n);  // o's rows: the accumulator, contiguous
      acc.zero_();
      std::fill(m.begin(), m.end(), ninf);
      std::fill(l.begin(), l.end(), A(0));
      for (int64_t j0 = 0; j0 < S; j0 += kBlockK) {
        if (causal && j0 > i0 + n - 1) break;
        const int64_t bk = std::min(kBlockK, S - j0);
        Tensor s = sbuf.narrow(0, 0, n * bk).view({n, bk});
        at::mm_out(s, qi, kb.narrow(0, j0, bk).t());
        A* sp = s.data_ptr<A>();
        scale_tile(sp, n, bk, scale, causal, i0, j0);
        A* ap = acc.data_ptr<A>();
        for (int64_t r = 0; r < n; ++r) {
          A* x = sp + r * bk;
          const A rm = at::vec::reduce_all<A>([](V& a, V& c) { return at::vec::maximum(a, c); }, x, bk);
          const A mn = (std::isnan(m[r]) || std::isnan(rm)) ? std::numeric_limits<A>::quiet_NaN() : std::max(m[r], rm);
          const A ms = mn == ninf ? A(0) : mn;  // every key so far masked: p = 0
          at::vec::map([ms](V a) { return (a - V(ms)).exp(); }, x, x, bk);
          const A corr = std::exp(m[r] - ms);
          l[r] = l[r] * corr + at::vec::reduce_all<A>([](V& a, V& c) { return a + c; }, x, bk);
          if (j0 > 0) at::vec::map([corr](V a) { return a * V(corr); }, ap + r * Ev, ap + r * Ev, Ev);
          if (keep) {
            const bool* kr = keep + (b * L + i0 + r) * S + j0;
            for (int64_t c = 0; c < bk; ++c) x[c] = kr[c] ? x[c] * ks : A(0);
          }
          m[r] = mn;
        }
        acc.addmm_(s, vb.narrow(0, j0, bk));
      }
      A* ap = acc.data_ptr<A>();
      for (int64_t r = 0; r < n; ++r) {
        const A inv = A(1) / (l[r] == A(0) ? A(1) : l[r]);
        at::vec::map([inv](V a) { return a * V(inv); }, ap + r * Ev, ap + r * Ev, Ev);
        lse[b * L + i0 + r] = (m[r] == ninf ? A(0) : m[r]) + std::log(l[r]);
      }
    }
  });
}

std::tuple<Tensor, Tensor> attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v,
                                         const c10::optional<Tensor>& keep_, bool causal, double scale,
                                         double keep_scale) {
  check_inputs(q, k, v, keep_, "attention_fwd");
  std::vector<int64_t> osize = q.sizes().vec();
  osize.back() = v.size(-1);
  Tensor o = new_output(osize, q.options());
  Tensor lse = at::empty(q.sizes().slice(0, q.dim() - 1), q.options());
  const Tensor keep = keep_.has_value() && keep_->defined() ? keep_->contiguous() : Tensor();
  TORCH_CHECK(q.size(-2) > 0 && k.size(-2) > 0 && v.size(-1) > 0 && q.size(-1) > 0,
              "torch_bp::attention_fwd: empty inputs are handled by the Python rule");
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "attention_fwd", [&] {
    fwd_kernel<scalar_t>(q, k, v, keep.defined() ? keep.const_data_ptr<bool>() : nullptr, causal,
                         static_cast<scalar_t>(scale), static_cast<scalar_t>(keep_scale), o,
                         lse.mutable_data_ptr<scalar_t>());
  });
  return {o, lse};
}

// --- backward ---
template <typename A>
void bwd_kernel(const Tensor& go, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const A* lse,
                const bool* keep, bool causal, A scale, A ks, Tensor& dq, Tensor& dk, Tensor& dv) {
  using V = at::vec::Vectorized<A>;
  const int64_t B = heads(q), L = q.size(-2), S = k.size(-2), E = q.size(-1), Ev = v.size(-1);
  const A inf = std::numeric_limits<A>::infinity();
  // one task per head: its key/value gradients accumulate over the query blocks
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    const at::AutoDispatchBelowADInplaceOrView guard;  // worker threads: plain kernels, no autograd
    const int64_t tile = kBlockQ * std::min(S, kBlockK);
    Tensor pbuf = at::empty({tile}, q.options()), dbuf = at::empty({tile}, q.options());
    std::vector<A> D(kBlockQ), lb(kBlockQ);
    for (int64_t b = begin; b < end; ++b) {
      const Tensor qb = head(q, b), kb = head(k, b), vb = head(v, b), gob = head(go, b), ob = head(o, b);
      Tensor dqb = head(dq, b), dkb = head(dk, b), dvb = head(dv, b);
      for (int64_t i0 = 0; i0 < L; i0 += kBlockQ) {
        const int64_t n = std::min(kBlockQ, L - i0);
        const Tensor qi = qb.narrow(0, i0, n), goi = gob.narrow(0, i0, n);
        Tensor dqi = dqb.narrow(0, i0, n);
        const A* gp = gob.const_data_ptr<A>();  // rows of unit column stride
        const A* op = ob.const_data_ptr<A>();
        for (int64_t r = 0; r < n; ++r) {  // D = rowsum(grad_o * o); lse = -inf (all masked): p = 0
          D[r] = at::vec::map2_reduce_all<A>([](V a, V c) { return a * c; }, [](V a, V c) { return a + c; },
                                             gp + (i0 + r) * gob.stride(0), op + (i0 + r) * ob.stride(0), Ev);
          const A x = lse[b * L + i0 + r];
          lb[r] = x == -inf ? inf : x;
        }
        for (int64_t j0 = 0; j0 < S; j0 += kBlockK) {
          if (causal && j0 > i0 + n - 1) break;
          const int64_t bk = std::min(kBlockK, S - j0);
          const Tensor kj = kb.narrow(0, j0, bk), vj = vb.narrow(0, j0, bk);
          Tensor p = pbuf.narrow(0, 0, n * bk).view({n, bk}), ds = dbuf.narrow(0, 0, n * bk).view({n, bk});
          at::mm_out(p, qi, kj.t());
          at::mm_out(ds, goi, vj.t());  // dp
          A* pp = p.data_ptr<A>();
          A* dp = ds.data_ptr<A>();
          scale_tile(pp, n, bk, scale, causal, i0, j0);
          for (int64_t r = 0; r < n; ++r) {
            A* x = pp + r * bk;
            A* y = dp + r * bk;
            const A lr = lb[r], Dr = D[r];
            at::vec::map([lr](V a) { return (a - V(lr)).exp(); }, x, x, bk);  // p
            if (keep) {  // dp = (grad_o v^T) m / (1 - p_drop); then p -> pd (for grad_v)
              const bool* kr = keep + (b * L + i0 + r) * S + j0;
              for (int64_t c = 0; c < bk; ++c) {
                const A mk = kr[c] ? ks : A(0);
                y[c] = x[c] * (y[c] * mk - Dr);
                x[c] *= mk;
              }
            } else {
              at::vec::map2([Dr](V pv, V dpv) { return pv * (dpv - V(Dr)); }, y, x, y, bk);  // ds
            }
          }
          dvb.narrow(0, j0, bk).addmm_(p.t(), goi);
          dqi.addmm_(ds, kj, 1, scale);
          dkb.narrow(0, j0, bk).addmm_(ds.t(), qi, 1, scale);
        }
      }
    }
  });
}

std::tuple<Tensor, Tensor, Tensor> attention_bwd(const Tensor& grad_o, const Tensor& q, const Tensor& k,
                                                 const Tensor& v, const Tensor& o, const Tensor& lse_,
                                                 const c10::optional<Tensor>& keep_, bool causal, double scale,
                                                 double keep_scale) {
  check_inputs(q, k, v, keep_, "attention_bwd");
  std::vector<int64_t> osize = q.sizes().vec();
  osize.back() = v.size(-1);
  TORCH_CHECK(grad_o.sizes() == at::IntArrayRef(osize) && o.sizes() == at::IntArrayRef(osize) &&
                  grad_o.scalar_type() == q.scalar_type() && o.scalar_type() == q.scalar_type(),
              "torch_bp::attention_bwd: grad_o and o must be (..., L, Ev) of q's dtype, got ", grad_o.sizes(), ", ",
              o.sizes());
  TORCH_CHECK(lse_.scalar_type() == q.scalar_type() && lse_.numel() == heads(q) * q.size(-2),
              "torch_bp::attention_bwd: lse must be (..., L), got ", lse_.sizes());
  // grad_o often arrives as a transposed view (multi-head attention's (N, L, H, D) layout): read
  // through its strides when its rows are unit-stride, as q, k, v are
  const Tensor go = grad_o.stride(-1) == 1 ? grad_o : grad_o.contiguous();
  const Tensor oc = o.stride(-1) == 1 ? o : o.contiguous(), lse = lse_.contiguous();
  const Tensor keep = keep_.has_value() && keep_->defined() ? keep_->contiguous() : Tensor();
  Tensor dq = at::zeros(q.sizes(), q.options()), dk = at::zeros(k.sizes(), k.options());
  Tensor dv = at::zeros(v.sizes(), v.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "attention_bwd", [&] {
    bwd_kernel<scalar_t>(go, q, k, v, oc, lse.const_data_ptr<scalar_t>(),
                         keep.defined() ? keep.const_data_ptr<bool>() : nullptr, causal,
                         static_cast<scalar_t>(scale), static_cast<scalar_t>(keep_scale), dq, dk, dv);
  });
  return {dq, dk, dv};
}

}  // namespace attn

TORCH_LIBRARY_IMPL(torch_bp, CPU, m) {
  m.impl("attention_fwd", &attn::attention_fwd);
  m.impl("attention_bwd", &attn::attention_bwd);
}

}  // namespace torch_bp
