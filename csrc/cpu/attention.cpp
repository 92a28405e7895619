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


// --- small heads: one tile per head (L <= kBlockQ, S <= kBlockK) ---
// NOTE: with one tile per head the per-head loop above costs a handful of small matmul calls and
// views per head, and for many small heads that per-call overhead outweighs the arithmetic. Here
// groups of heads share each call: q, k, v, grad_o, o are taken as (B, X, Y) batches of heads
// (a view when their leading dims flatten, else one copy) and every matmul is one batched call
// over up to kGroup score elements (a group's (g, L, S) scores stay in cache as a tile does); there
// are at least as many groups as threads where there are as many heads.
constexpr int64_t kGroup = kBlockQ * kBlockK;

inline bool one_tile(const Tensor& q, const Tensor& k) { return q.size(-2) <= kBlockQ && k.size(-2) <= kBlockK; }

// t as (B, X, Y), B the flat index over its leading dims; a view when they flatten
inline Tensor batch3(const Tensor& t) { return t.reshape({heads(t), t.size(-2), t.size(-1)}); }

// heads per group: up to kGroup score elements, and at least as many groups as threads
inline int64_t group_heads(int64_t L, int64_t S, int64_t B) {
  const int64_t nt = std::max<int64_t>(1, at::get_num_threads());
  return std::max<int64_t>(1, std::min(kGroup / std::max<int64_t>(1, L * S), (B + nt - 1) / nt));
}

template <typename A>
void fwd_small(const Tensor& q, const Tensor& k, const Tensor& v, const bool* keep, bool causal, A scale, A ks,
               Tensor& o, A* lse) {
  using V = at::vec::Vectorized<A>;
  const Tensor q3 = batch3(q), k3 = batch3(k), v3 = batch3(v);
  Tensor o3 = o.view({heads(o), o.size(-2), o.size(-1)});  // o: fresh, contiguous
  const int64_t B = q3.size(0), L = q3.size(1), S = k3.size(1);
  const int64_t G = group_heads(L, S, B), ng = (B + G - 1) / G;
  at::parallel_for(0, ng, 1, [&](int64_t begin, int64_t end) {
    const at::AutoDispatchBelowADInplaceOrView guard;  // worker threads: plain kernels, no autograd
    Tensor sbuf = at::empty({std::min(G, B) * L * S}, q.options());
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b0 = t * G, g = std::min(G, B - b0);
      Tensor s = sbuf.narrow(0, 0, g * L * S).view({g, L, S});
      at::bmm_out(s, q3.narrow(0, b0, g), k3.narrow(0, b0, g).transpose(1, 2));
      A* sp = s.data_ptr<A>();
      for (int64_t h = 0; h < g; ++h) {
        A* sh = sp + h * L * S;
        scale_tile(sh, L, S, scale, causal, 0, 0);
        for (int64_t r = 0; r < L; ++r) {  // p = exp(s - m) (dropped: 0, kept: / (1 - p_drop)); l = rowsum
          A* x = sh + r * S;
          const A m = at::vec::reduce_all<A>([](V& a, V& c) { return at::vec::maximum(a, c); }, x, S);
          const A ms = m == -std::numeric_limits<A>::infinity() ? A(0) : m;  // every key masked: p = 0
          at::vec::map([ms](V a) { return (a - V(ms)).exp(); }, x, x, S);
          const A l = at::vec::reduce_all<A>([](V& a, V& c) { return a + c; }, x, S);
          const A inv = A(1) / (l == A(0) ? A(1) : l);
          if (keep) {
            const bool* kr = keep + ((b0 + h) * L + r) * S;
            for (int64_t c = 0; c < S; ++c) x[c] = kr[c] ? x[c] * (ks * inv) : A(0);
          } else {
            at::vec::map([inv](V a) { return a * V(inv); }, x, x, S);
          }
          lse[(b0 + h) * L + r] = ms + std::log(l);
        }
      }
      Tensor og = o3.narrow(0, b0, g);
      at::bmm_out(og, s, v3.narrow(0, b0, g));
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
    const bool* kp = keep.defined() ? keep.const_data_ptr<bool>() : nullptr;
    if (one_tile(q, k))
      fwd_small<scalar_t>(q, k, v, kp, causal, static_cast<scalar_t>(scale), static_cast<scalar_t>(keep_scale), o,
                          lse.mutable_data_ptr<scalar_t>());
    else
      fwd_kernel<scalar_t>(q, k, v, kp, causal, static_cast<scalar_t>(scale), static_cast<scalar_t>(keep_scale), o,
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


template <typename A>
void bwd_small(const Tensor& go, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const A* lse,
               const bool* keep, bool causal, A scale, A ks, Tensor& dq, Tensor& dk, Tensor& dv) {
  using V = at::vec::Vectorized<A>;
  const Tensor q3 = batch3(q), k3 = batch3(k), v3 = batch3(v), go3 = batch3(go), o3 = batch3(o);
  Tensor dq3 = batch3(dq), dk3 = batch3(dk), dv3 = batch3(dv);  // fresh, contiguous: views
  const int64_t B = q3.size(0), L = q3.size(1), S = k3.size(1), Ev = v3.size(2);
  const int64_t G = group_heads(L, S, B), ng = (B + G - 1) / G;
  const A inf = std::numeric_limits<A>::infinity();
  at::parallel_for(0, ng, 1, [&](int64_t begin, int64_t end) {
    const at::AutoDispatchBelowADInplaceOrView guard;  // worker threads: plain kernels, no autograd
    const int64_t tile = std::min(G, B) * L * S;
    Tensor pbuf = at::empty({tile}, q.options()), dbuf = at::empty({tile}, q.options());
    const A* gp = go3.const_data_ptr<A>();  // rows of unit column stride
    const A* op = o3.const_data_ptr<A>();
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b0 = t * G, g = std::min(G, B - b0);
      const Tensor qg = q3.narrow(0, b0, g), kg = k3.narrow(0, b0, g), vg = v3.narrow(0, b0, g);
      const Tensor gog = go3.narrow(0, b0, g);
      Tensor p = pbuf.narrow(0, 0, g * L * S).view({g, L, S}), ds = dbuf.narrow(0, 0, g * L * S).view({g, L, S});
      at::bmm_out(p, qg, kg.transpose(1, 2));
      at::bmm_out(ds, gog, vg.transpose(1, 2));  // dp
      A* pp = p.data_ptr<A>();
      A* dp = ds.data_ptr<A>();
      for (int64_t h = 0; h < g; ++h) {
        const int64_t b = b0 + h;
        A* ph = pp + h * L * S;
        scale_tile(ph, L, S, scale, causal, 0, 0);
        for (int64_t r = 0; r < L; ++r) {
          // D = rowsum(grad_o * o); lse = -inf (all masked): p = 0
          const A Dr = at::vec::map2_reduce_all<A>([](V a, V c) { return a * c; }, [](V a, V c) { return a + c; },
                                                   gp + b * go3.stride(0) + r * go3.stride(1),
                                                   op + b * o3.stride(0) + r * o3.stride(1), Ev);
          const A x0 = lse[b * L + r], lr = x0 == -inf ? inf : x0;
          A* x = ph + r * S;
          A* y = dp + h * L * S + r * S;
          at::vec::map([lr](V a) { return (a - V(lr)).exp(); }, x, x, S);  // p
          if (keep) {  // dp = (grad_o v^T) m / (1 - p_drop); then p -> pd (for grad_v)
            const bool* kr = keep + (b * L + r) * S;
            for (int64_t c = 0; c < S; ++c) {
              const A mk = kr[c] ? ks : A(0);
              y[c] = x[c] * (y[c] * mk - Dr);
              x[c] *= mk;
            }
          } else {
            at::vec::map2([Dr](V pv, V dpv) { return pv * (dpv - V(Dr)); }, y, x, y, S);  // ds
          }
        }
      }
      Tensor dvg = dv3.narrow(0, b0, g), dqg = dq3.narrow(0, b0, g), dkg = dk3.narrow(0, b0, g);
      at::bmm_out(dvg, p.transpose(1, 2), gog);
      at::baddbmm_out(dqg, dqg, ds, kg, 0, scale);  // beta 0: the fresh memory of dq is not read
      at::baddbmm_out(dkg, dkg, ds.transpose(1, 2), qg, 0, scale);
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
  const bool small = one_tile(q, k);  // every gradient written whole by one call: no zeros needed
  const auto alloc = [small](const Tensor& t) { return small ? at::empty(t.sizes(), t.options()) : at::zeros(t.sizes(), t.options()); };
  Tensor dq = alloc(q), dk = alloc(k), dv = alloc(v);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "attention_bwd", [&] {
    const bool* kp = keep.defined() ? keep.const_data_ptr<bool>() : nullptr;
    if (small)
      bwd_small<scalar_t>(go, q, k, v, oc, lse.const_data_ptr<scalar_t>(), kp, causal,
                          static_cast<scalar_t>(scale), static_cast<scalar_t>(keep_scale), dq, dk, dv);
    else
      bwd_kernel<scalar_t>(go, q, k, v, oc, lse.const_data_ptr<scalar_t>(), kp, causal,
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
