// CPU kernels of torch_bp/ops/recurrent.py (LSTMFunction, GRUFunction, RNNFunction): the loop over
// the time steps of one layer and direction, forward and backward, so that no Python runs per step.
// The fused loops (namespace fused, below) run all steps in one parallel region, W_hh packed once,
// the gates computed in registers. The input projection of all steps (gi = x W_ih^T + b) and the
// tied-weight gradients (one matmul each over the stacked steps) stay in Python, shared with the
// per-sample rule.
//
// Steps: the Python rule's list of (row offset, batch size) in the order visited, as two int
// lists. Step s owns rows [off_s, off_s + bs_s) of the (N, .) row tensors and the first bs_s rows
// of the state (B, .); the other state rows are left untouched. The kernels take float32/float64
// (the Python driver computes bfloat16 layers in float32, torch_bp.ops._util.opmath).
#include "activation.h"

#include <algorithm>
#include <exception>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace torch_bp {
namespace rnn {

using at::Tensor;

struct Steps {
  std::vector<int64_t> off, bs;
};

inline Steps check_steps(at::IntArrayRef offsets, at::IntArrayRef sizes, int64_t n, int64_t b, const char* op) {
  TORCH_CHECK(offsets.size() == sizes.size(), "torch_bp::", op, ": offsets and sizes must have the same length");
  for (size_t s = 0; s < sizes.size(); ++s)
    TORCH_CHECK(sizes[s] >= 0 && sizes[s] <= b && offsets[s] >= 0 && offsets[s] + sizes[s] <= n, "torch_bp::", op,
                ": step ", s, " (offset ", offsets[s], ", size ", sizes[s], ") is outside ", n, " rows or ", b,
                " state rows");
  return {offsets.vec(), sizes.vec()};
}

inline void check_2d(const Tensor& t, int64_t rows, int64_t cols, const char* name, const char* op) {
  TORCH_CHECK(t.dim() == 2 && (rows < 0 || t.size(0) == rows) && t.size(1) == cols, "torch_bp::", op, ": ", name,
              " must have shape (", rows < 0 ? std::string("*") : std::to_string(rows), ", ", cols, "), got ",
              t.sizes());
}

inline void check_dtypes(std::initializer_list<const Tensor*> ts, const char* op) {
  const auto dt = (*ts.begin())->scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble, "torch_bp::", op, ": expects float32 or float64 (bfloat16 layers "
              "run in float32), got ", dt);
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    check_cpu(*t, op);
    TORCH_CHECK(t->scalar_type() == dt, "torch_bp::", op, ": all tensors must have dtype ", dt, ", got ",
                t->scalar_type());
  }
}

template <typename V>
inline V sigmoid(const V& x) { return act::sigmoid(x); }

// --- Fused multi-step loops (LSTM, GRU, RNN) ---
// One parallel region runs all steps of a layer and direction. The hidden units are cut into tiles
// of one vector (L units) and each thread owns a fixed range of tiles for the whole sequence:
//   forward: it packs the rows of W_hh that produce its units' gates once (per tile, for each k the
//     G gates' L weights side by side: the tile's slice of W_hh stays in that core's cache over all
//     steps, where a library matmul per step re-packs the whole matrix), computes its units' gate
//     pre-activations for every row of the step in registers (gi + h_{t-1} W_hh^T) and applies the
//     gate nonlinearities and the state update to them before they leave the registers;
//   backward: it owns the same units as columns of grad h_{t-1} = da W_hh: the gate pass of its
//     units writes da, and, after all threads have written da, the matmul of its columns needs
//     only W_hh's columns of those units (packed once) and gives the next step's gate pass exactly
//     the grad h it needs, so one barrier per step suffices in both directions.
//   An LSTM with proj_size (h = W_hr h~) needs all of h~ before any unit of h: each thread also owns
//     a range of h's columns, and a step has two barriers (forward: h~ written, then h = h~ W_hr^T on
//     the thread's columns; backward: dh + dY written, then dh~ = (dh + dY) W_hr on its units).
// NOTE: a team of OpenMP threads with a barrier per step, not a parallel region per step
// (at::parallel_for): the steps are small (tens of microseconds) and a region per step pays the
// thread wake-up each time. The region is torch's OpenMP runtime (the extension resolves the
// same libgomp.so.1), sized by at::get_num_threads(); one thread inside another parallel region.
// The results do not depend on the thread count: each value is computed by one thread in a fixed
// order (k ascending in every dot product).
namespace fused {

template <typename T>
using Vec = at::vec::Vectorized<T>;

inline int team_size(int64_t tiles) {
#ifdef _OPENMP
  if (at::in_parallel_region()) return 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tiles)));
#else
  return 1;
#endif
}

// Runs f(thread, threads, barrier) on a team of n threads.
template <typename F>
void team(int n, const F& f) {
#ifdef _OPENMP
  if (n > 1) {
    std::exception_ptr err;
#pragma omp parallel num_threads(n)
    {
      try {
        f(omp_get_thread_num(), omp_get_num_threads(), [] {
#pragma omp barrier
        });
      } catch (...) {
#pragma omp critical
        err = std::current_exception();
      }
    }
    if (err) std::rethrow_exception(err);
    return;
  }
#endif
  f(0, 1, [] {});
}

// acc[r][g] += sum_k x[r * ldx + k] * w[k * kstride + g * gstride + (0..L)], k ascending.
template <typename T, int R, int G>
inline void mm_tile(const T* __restrict x, int64_t ldx, int64_t K, const T* __restrict w, int64_t kstride,
                    int64_t gstride, Vec<T> (&acc)[R][G]) {
  for (int64_t k = 0; k < K; ++k) {
    Vec<T> wv[G];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) wv[g] = Vec<T>::loadu(w + k * kstride + g * gstride);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const Vec<T> xv(x[r * ldx + k]);
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) acc[r][g] = at::vec::fmadd(xv, wv[g], acc[r][g]);
    }
  }
}

constexpr int kRows = 6;  // rows per register block: kRows * 4 accumulators + 4 weight vectors + 1 broadcast <= 32

// Calls f(std::integral_constant<int, r>) for r = n (1 <= n <= kRows).
template <typename F>
inline void with_rows(int64_t n, const F& f) {
  switch (n) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    default: f(std::integral_constant<int, 6>{}); break;
  }
}

// f(j0, n) over [0, rows) in blocks of at most kRows rows, as even as possible: a block of one or two
// rows runs at a fraction of a full block's speed (32 rows: 5, 5, 5, 5, 6, 6, not 6 x 5 + 2).
template <typename F>
inline void for_row_blocks(int64_t rows, const F& f) {
  const int64_t blocks = (rows + kRows - 1) / kRows;
  for (int64_t b = 0, j0 = 0; b < blocks; ++b) {
    const int64_t n = (rows - j0) / (blocks - b);
    f(j0, n);
    j0 += n;
  }
}

template <typename F>
inline void with_groups(int64_t n, const F& f) {
  switch (n) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: f(std::integral_constant<int, 4>{}); break;
  }
}

// Forward packing of the tiles [u0, u1) of W units: wp[((u * K + k) * G + g) * W + l] = w[(g * H + u * W + l) * K + k]
// (0 past H). w (G*H, K) contiguous.
template <typename T>
void pack_gates(const T* w, int64_t H, int64_t K, int G, int64_t W, int64_t u0, int64_t u1, T* wp) {
  for (int64_t u = u0; u < u1; ++u) {
    T* dst = wp + u * K * G * W;
    for (int g = 0; g < G; ++g)
      for (int64_t l = 0; l < W; ++l) {
        const int64_t row = u * W + l;
        const T* src = w + (g * H + row) * K;
        if (row < H) {
          for (int64_t k = 0; k < K; ++k) dst[(k * G + g) * W + l] = src[k];
        } else {
          for (int64_t k = 0; k < K; ++k) dst[(k * G + g) * W + l] = T(0);
        }
      }
  }
}

// Backward packing of the column tiles [u0, u1): wp[(u * M + m) * L + l] = w[m * H + u * L + l] (0 past H).
// w (M, H) contiguous.
template <typename T>
void pack_columns(const T* w, int64_t M, int64_t H, int64_t u0, int64_t u1, T* wp) {
  constexpr int64_t L = Vec<T>::size();
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t n = std::min<int64_t>(L, H - u * L);
    for (int64_t m = 0; m < M; ++m) {
      T* dst = wp + (u * M + m) * L;
      std::memcpy(dst, w + m * H + u * L, n * sizeof(T));
      for (int64_t l = n; l < L; ++l) dst[l] = T(0);
    }
  }
}

// out[(j0 + r) * ldo + u * L ...] (+)= x rows [j0, j1) @ columns of the tiles [u0, u1) (packed by pack_columns).
// add: accumulate onto out, else overwrite.
template <typename T>
void mm_columns(const T* x, int64_t ldx, int64_t M, const T* wp, int64_t H, int64_t rows, int64_t u0, int64_t u1,
                T* out, int64_t ldo, bool add) {
  constexpr int64_t L = Vec<T>::size();
  for (int64_t ub = u0; ub < u1; ub += 4) {
    with_groups(std::min<int64_t>(4, u1 - ub), [&](auto gc) {
      constexpr int G = decltype(gc)::value;
      for_row_blocks(rows, [&](int64_t j0, int64_t nr) {
        with_rows(nr, [&](auto rc) {
          constexpr int R = decltype(rc)::value;
          Vec<T> acc[R][G];
          for (int r = 0; r < R; ++r)
            for (int g = 0; g < G; ++g) {
              const int64_t n = std::min<int64_t>(L, H - (ub + g) * L);
              acc[r][g] = add ? Vec<T>::loadu(out + (j0 + r) * ldo + (ub + g) * L, n) : Vec<T>(T(0));
            }
          mm_tile<T, R, G>(x + j0 * ldx, ldx, M, wp + ub * M * L, L, M * L, acc);
          for (int r = 0; r < R; ++r)
            for (int g = 0; g < G; ++g) {
              const int64_t n = std::min<int64_t>(L, H - (ub + g) * L);
              acc[r][g].store(out + (j0 + r) * ldo + (ub + g) * L, n);
            }
        });
      });
    });
  }
}

// Rows [lo, hi) of the state copied into Hprev's rows of a step, columns [c0, c1).
template <typename T>
inline void copy_rows(const T* src, T* dst, int64_t lo, int64_t hi, int64_t H, int64_t c0, int64_t c1) {
  for (int64_t j = lo; j < hi; ++j) std::memcpy(dst + j * H + c0, src + j * H + c0, (c1 - c0) * sizeof(T));
}

inline std::pair<int64_t, int64_t> my_tiles(int64_t tiles, int p, int P) {
  return {tiles * p / P, tiles * (p + 1) / P};
}

// --- The two loops every fused cell runs; a cell states only its gate math ---
// Forward: G gates per hidden unit, w_hh (G*H, K) contiguous, K the width of the state h: H, or with a
// projection w_hr (K, H) (an LSTM's proj_size; undefined: none) h_t = W_hr h~_t. hs: the state h (B, K),
// updated; y: the output rows (N, K). prev(s): step s's block of previous states (its first bs_s rows, K wide),
// the matmul's input: the loop fills it (step s's h_t for the rows active at both steps, the state as it is
// for the rows that become active at step s + 1). A tile is C vectors of units (G * C accumulators per row:
// C = 1 for the gated cells, 4 for one gate, so that each broadcast of h_{t-1} feeds 4 FMAs). Per row of a
// step and vector of units [col, col + n) of a tile:
//   init(acc, row, col, n): the row's G accumulators before the matmul (gi of the row, or b_hh);
//   cell(acc, j, row, col, n, hp): acc = init + h_{t-1} W_hh^T (hp: h_{t-1} of the row at col, without a
//     projection) -> h_t (with one: h~_t), which the loop stores into y, the state and the next step's block
//     (with a projection: after a barrier, h_t = h~_t W_hr^T on each thread's columns of h, one more barrier).
template <typename T, int G, int C, typename Prev, typename Init, typename Cell>
void forward_loop(const Tensor& w_hh, const Tensor& w_hr, int64_t H, T* hs, T* y, const Steps& st, const Prev& prev,
                  const Init& init, const Cell& cell) {
  constexpr int64_t L = Vec<T>::size(), W = C * L;
  const bool proj = w_hr.defined();
  const int64_t K = proj ? w_hr.size(0) : H, S = st.off.size();
  const int64_t tiles = (H + W - 1) / W, ktiles = proj ? (K + L - 1) / L : 0;
  const int64_t B = S ? *std::max_element(st.bs.begin(), st.bs.end()) : 0;
  Tensor wp_ = at::empty({tiles * K * G * W}, w_hh.options());
  const Tensor wr = proj ? w_hr.t().contiguous() : Tensor();  // (H, K)
  Tensor wrp_ = at::empty({proj ? ktiles * H * L : 0}, w_hh.options()), ht_ = at::empty({proj ? B * H : 0},
                                                                                          w_hh.options());
  const T* w = w_hh.const_data_ptr<T>();
  T *wp = wp_.data_ptr<T>(), *wrp = wrp_.data_ptr<T>(), *ht = ht_.data_ptr<T>();
  team(team_size(std::max(tiles, ktiles)), [&](int p, int P, const auto& barrier) {
    const auto [u0, u1] = my_tiles(tiles, p, P);
    const auto [v0, v1] = my_tiles(ktiles, p, P);
    // the thread's columns of the state: those its gate pass writes, or with a projection those of h_t it forms
    const int64_t c0 = proj ? std::min(K, v0 * L) : std::min(H, u0 * W), c1 = proj ? std::min(K, v1 * L)
                                                                                    : std::min(H, u1 * W);
    pack_gates<T>(w, H, K, G, W, u0, u1, wp);
    if (proj) pack_columns<T>(wr.const_data_ptr<T>(), H, K, v0, v1, wrp);
    if (S > 0) copy_rows<T>(hs, prev(0), 0, st.bs[0], K, c0, c1);
    barrier();
    for (int64_t s = 0; s < S; ++s) {
      const int64_t off = st.off[s], bs = st.bs[s];
      const int64_t nbs = s + 1 < S ? st.bs[s + 1] : 0;
      T* hnext = s + 1 < S ? prev(s + 1) : nullptr;
      const T* x = prev(s);
      for (int64_t u = u0; u < u1; ++u) {
        for_row_blocks(bs, [&](int64_t j0, int64_t nr) {
          with_rows(nr, [&](auto rc) {
            constexpr int R = decltype(rc)::value;
            Vec<T> acc[R][G * C];  // acc[r][g * C + c]: gate g of the tile's c-th vector of units
            for (int r = 0; r < R; ++r)
              for (int c = 0; c < C; ++c) {
                const int64_t col = u * W + c * L, n = std::max<int64_t>(0, std::min<int64_t>(L, H - col));
                Vec<T> a[G];
                init(a, off + j0 + r, col, n);
                for (int g = 0; g < G; ++g) acc[r][g * C + c] = a[g];
              }
            mm_tile<T, R, G * C>(x + j0 * K, K, K, wp + u * K * G * W, G * W, L, acc);
            for (int r = 0; r < R; ++r)
              for (int c = 0; c < C; ++c) {
                const int64_t j = j0 + r, row = off + j, col = u * W + c * L;
                if (col >= H) break;
                const int64_t n = std::min<int64_t>(L, H - col);
                Vec<T> a[G];
                for (int g = 0; g < G; ++g) a[g] = acc[r][g * C + c];
                const Vec<T> hn = cell(a, j, row, col, n, x + j * K + col);
                if (proj) {
                  hn.store(ht + j * H + col, n);
                  continue;
                }
                hn.store(y + row * H + col, n);
                hn.store(hs + j * H + col, n);
                if (j < nbs) hn.store(hnext + j * H + col, n);
              }
          });
        });
      }
      if (proj) {
        barrier();  // all of h~ of this step written
        mm_columns<T>(ht, H, H, wrp, K, bs, v0, v1, y + off * K, K, false);  // h = h~ W_hr^T
        for (int64_t j = 0; j < bs; ++j) {
          copy_rows<T>(y + off * K + j * K, hs + j * K, 0, 1, K, c0, c1);
          if (j < nbs) copy_rows<T>(y + off * K + j * K, hnext + j * K, 0, 1, K, c0, c1);
        }
      }
      // rows active at the next step but not at this one read the state as it is (not written now)
      if (nbs > bs) copy_rows<T>(hs, hnext, bs, nbs, K, c0, c1);
      barrier();
    }
  });
}

// Backward: per step, gate(j, row, col, m, d) for the rows of the step and the thread's units [col, col + m),
// d the gradient of the unit's output (h_t: dh + dY; with a projection, h~_t: (dh + dY) W_hr, the rows
// dh + dY written to dho (N, K) first, then a barrier): the cell's gate pass, writing the row's da (G*H wide:
// the gradient of h_{t-1} W_hh^T's G gates) and dh's columns as the cell needs them; then, after all of the
// step's da is written, dh (+)= da W_hh on the thread's columns of dh (B, K) (add: accumulate onto what the
// gate pass left in dh, else overwrite). w_hh (G*H, K), w_hr (K, H) or undefined, as in forward_loop.
template <typename T, int G, typename Gate>
void backward_loop(const Tensor& w_hh, const Tensor& w_hr, int64_t H, const T* dy, int64_t ldy, const T* da, T* dhs,
                   T* dho, const Steps& st, bool add, const Gate& gate) {
  using V = Vec<T>;
  constexpr int64_t L = V::size();
  const bool proj = w_hr.defined();
  const int64_t K = proj ? w_hr.size(0) : H, S = st.off.size();
  const int64_t tiles = (H + L - 1) / L, ktiles = (K + L - 1) / L;
  const int64_t B = S ? *std::max_element(st.bs.begin(), st.bs.end()) : 0;
  Tensor wp_ = at::empty({ktiles * G * H * L}, w_hh.options());
  Tensor wrp_ = at::empty({proj ? tiles * K * L : 0}, w_hh.options()), dht_ = at::empty({proj ? B * H : 0},
                                                                                         w_hh.options());
  const T* w = w_hh.const_data_ptr<T>();
  T *wp = wp_.data_ptr<T>(), *wrp = wrp_.data_ptr<T>(), *dht = dht_.data_ptr<T>();
  team(team_size(std::max(tiles, ktiles)), [&](int p, int P, const auto& barrier) {
    const auto [u0, u1] = my_tiles(tiles, p, P);   // units of the gate pass
    const auto [v0, v1] = my_tiles(ktiles, p, P);  // columns of dh
    pack_columns<T>(w, G * H, K, v0, v1, wp);
    if (proj) pack_columns<T>(w_hr.const_data_ptr<T>(), K, H, u0, u1, wrp);
    for (int64_t s = 0; s < S; ++s) {
      const int64_t off = st.off[s], bs = st.bs[s];
      if (proj) {
        for (int64_t j = 0; j < bs; ++j)
          for (int64_t col = v0 * L; col < std::min(K, v1 * L); col += L) {
            const int64_t m = std::min<int64_t>(L, K - col);
            const V d = V::loadu(dhs + j * K + col, m) + V::loadu(dy + (off + j) * ldy + col, m);
            d.store(dho + (off + j) * K + col, m);
          }
        barrier();  // all of dh + dY of this step written
        mm_columns<T>(dho + off * K, K, K, wrp, H, bs, u0, u1, dht, H, false);  // dh~ = (dh + dY) W_hr
      }
      for (int64_t j = 0; j < bs; ++j) {
        const int64_t row = off + j;
        for (int64_t col = u0 * L; col < std::min(H, u1 * L); col += L) {
          const int64_t m = std::min<int64_t>(L, H - col);
          const V d = proj ? V::loadu(dht + j * H + col, m)
                           : V::loadu(dhs + j * H + col, m) + V::loadu(dy + row * ldy + col, m);
          gate(j, row, col, m, d);
        }
      }
      barrier();  // all of da of this step written
      mm_columns<T>(da + off * G * H, G * H, G * H, wp, K, bs, v0, v1, dhs, K, add);  // grad h_{t-1}
    }
  });
}

// --- LSTM: gates (i, f, g, o), the cell state c alongside h ---
template <typename T>
void lstm_fwd(const Tensor& gi, const Tensor& w_hh, const Tensor& w_hr, Tensor& h, Tensor& c, Tensor& Y,
              Tensor& Hprev, Tensor& Cprev, Tensor& A, Tensor& C, const Steps& st) {
  using V = Vec<T>;
  const int64_t H = C.size(1), K = Y.size(1);
  const T* g_in = gi.const_data_ptr<T>();
  T *cs = c.data_ptr<T>(), *hprev = Hprev.data_ptr<T>(), *cprev = Cprev.data_ptr<T>(), *a = A.data_ptr<T>();
  T* cc = C.data_ptr<T>();
  forward_loop<T, 4, 1>(
      w_hh, w_hr, H, h.data_ptr<T>(), Y.data_ptr<T>(), st, [&](int64_t s) { return hprev + st.off[s] * K; },
      [&](V(&acc)[4], int64_t row, int64_t col, int64_t n) {
        for (int g = 0; g < 4; ++g) acc[g] = V::loadu(g_in + row * 4 * H + g * H + col, n);
      },
      [&](V(&acc)[4], int64_t j, int64_t row, int64_t col, int64_t n, const T*) {
        const V i = sigmoid(acc[0]), f = sigmoid(acc[1]), g = acc[2].tanh(), o = sigmoid(acc[3]);
        T* ar = a + row * 4 * H + col;
        i.store(ar, n);
        f.store(ar + H, n);
        g.store(ar + 2 * H, n);
        o.store(ar + 3 * H, n);
        const V cp = V::loadu(cs + j * H + col, n);
        const V cn = f * cp + i * g;
        cp.store(cprev + row * H + col, n);
        cn.store(cc + row * H + col, n);
        cn.store(cs + j * H + col, n);
        return o * cn.tanh();
      });
}

template <typename T>
void lstm_bwd(const Tensor& dy, const Tensor& w_hh, const Tensor& w_hr, const Tensor& Cprev, const Tensor& A,
              const Tensor& C, Tensor& dh, Tensor& dc, Tensor& dA, Tensor& dHo, const Steps& st) {
  using V = Vec<T>;
  const V one(T(1));
  const int64_t H = C.size(1), ldy = dy.stride(0);
  const T *dyp = dy.const_data_ptr<T>(), *cprev = Cprev.const_data_ptr<T>();
  const T *a = A.const_data_ptr<T>(), *cc = C.const_data_ptr<T>();
  T *dhs = dh.data_ptr<T>(), *dcs = dc.data_ptr<T>(), *da = dA.data_ptr<T>();
  T* dho = dHo.defined() ? dHo.data_ptr<T>() : nullptr;
  backward_loop<T, 4>(w_hh, w_hr, H, dyp, ldy, da, dhs, dho, st, false, [&](int64_t j, int64_t row, int64_t col,
                                                                          int64_t m, const V& d) {
    const T* ar = a + row * 4 * H;
    T* dar = da + row * 4 * H;
    const V i = V::loadu(ar + col, m), f = V::loadu(ar + H + col, m);
    const V g = V::loadu(ar + 2 * H + col, m), o = V::loadu(ar + 3 * H + col, m);
    const V tc = V::loadu(cc + row * H + col, m).tanh();
    const V dcn = V::loadu(dcs + j * H + col, m) + d * (o * (one - tc * tc));
    (dcn * (g * i * (one - i))).store(dar + col, m);
    (dcn * (V::loadu(cprev + row * H + col, m) * f * (one - f))).store(dar + H + col, m);
    (dcn * (i * (one - g * g))).store(dar + 2 * H + col, m);
    (d * (tc * o * (one - o))).store(dar + 3 * H + col, m);
    (dcn * f).store(dcs + j * H + col, m);
  });
}

// --- GRU: gh = h_{t-1} W_hh^T + b_hh in registers, gates (r, z, n) ---
template <typename T>
void gru_fwd(const Tensor& gi, const Tensor& w_hh, const Tensor& b_hh, Tensor& h, Tensor& Y, Tensor& Hprev, Tensor& A,
             Tensor& HN, const Steps& st) {
  using V = Vec<T>;
  const int64_t H = HN.size(1);
  const T* g_in = gi.const_data_ptr<T>();
  const T* bias = b_hh.defined() ? b_hh.const_data_ptr<T>() : nullptr;
  T *hprev = Hprev.data_ptr<T>(), *a = A.data_ptr<T>(), *hn = HN.data_ptr<T>();
  forward_loop<T, 3, 1>(
      w_hh, Tensor(), H, h.data_ptr<T>(), Y.data_ptr<T>(), st, [&](int64_t s) { return hprev + st.off[s] * H; },
      [&](V(&acc)[3], int64_t, int64_t col, int64_t n) {
        for (int g = 0; g < 3; ++g) acc[g] = bias ? V::loadu(bias + g * H + col, n) : V(T(0));
      },
      [&](V(&acc)[3], int64_t, int64_t row, int64_t col, int64_t n, const T* hp_) {
        const T* gr = g_in + row * 3 * H + col;
        const V rg = sigmoid(V::loadu(gr, n) + acc[0]);
        const V z = sigmoid(V::loadu(gr + H, n) + acc[1]);
        const V nn = (V::loadu(gr + 2 * H, n) + rg * acc[2]).tanh();
        const V hp = V::loadu(hp_, n);
        T* ar = a + row * 3 * H + col;
        rg.store(ar, n);
        z.store(ar + H, n);
        nn.store(ar + 2 * H, n);
        acc[2].store(hn + row * H + col, n);
        return nn + z * (hp - nn);
      });
}

// Backward: the gate pass writes d gi and d gh and dh <- dh z, then dh += d gh W_hh.
template <typename T>
void gru_bwd(const Tensor& dy, const Tensor& w_hh, const Tensor& Hprev, const Tensor& A, const Tensor& HN, Tensor& dh,
             Tensor& dAi, Tensor& dAh, const Steps& st) {
  using V = Vec<T>;
  const V one(T(1));
  const int64_t H = HN.size(1), ldy = dy.stride(0);
  const T *dyp = dy.const_data_ptr<T>(), *hprev = Hprev.const_data_ptr<T>();
  const T *a = A.const_data_ptr<T>(), *hn = HN.const_data_ptr<T>();
  T *dhs = dh.data_ptr<T>(), *dai = dAi.data_ptr<T>(), *dah = dAh.data_ptr<T>();
  backward_loop<T, 3>(w_hh, Tensor(), H, dyp, ldy, dah, dhs, nullptr, st, true, [&](int64_t j, int64_t row,
                                                                                    int64_t col, int64_t m,
                                                                                    const V& d) {
    const T* ar = a + row * 3 * H;
    T *dir = dai + row * 3 * H, *dhr = dah + row * 3 * H;
    const V r = V::loadu(ar + col, m), z = V::loadu(ar + H + col, m), n = V::loadu(ar + 2 * H + col, m);
    const V dan = d * ((one - z) * (one - n * n));
    const V dar = dan * (V::loadu(hn + row * H + col, m) * r * (one - r));
    const V daz = d * ((V::loadu(hprev + row * H + col, m) - n) * z * (one - z));
    dar.store(dir + col, m);
    daz.store(dir + H + col, m);
    dan.store(dir + 2 * H + col, m);
    dar.store(dhr + col, m);
    daz.store(dhr + H + col, m);
    (dan * r).store(dhr + 2 * H + col, m);
    (d * z).store(dhs + j * H + col, m);  // dh z, then + d gh W_hh
  });
}

// --- RNN (tanh, relu): h_t = act(gi + h_{t-1} W_hh^T), one gate (b_hh is in gi) ---
template <typename T>
void rnn_fwd(const Tensor& gi, const Tensor& w_hh, Tensor& h, Tensor& Y, const Steps& st, bool relu) {
  using V = Vec<T>;
  const int64_t H = Y.size(1), B = h.size(0);
  // the matmul's input of a step: two (B, H) blocks in turn (the rule saves Y only; step s reads one
  // block while it writes the other, and the barrier after each step orders the two)
  Tensor prev_ = at::empty({2 * B * H}, Y.options());
  T* prev = prev_.data_ptr<T>();
  const T* g_in = gi.const_data_ptr<T>();
  const V zero(T(0));
  forward_loop<T, 1, 4>(
      w_hh, Tensor(), H, h.data_ptr<T>(), Y.data_ptr<T>(), st, [&](int64_t s) { return prev + (s % 2) * B * H; },
      [&](V(&acc)[1], int64_t row, int64_t col, int64_t n) { acc[0] = V::loadu(g_in + row * H + col, n); },
      [&](V(&acc)[1], int64_t, int64_t, int64_t, int64_t, const T*) {
        return relu ? at::vec::clamp_min(acc[0], zero) : acc[0].tanh();  // relu: NaN stays NaN, as torch's
      });
}

// Backward: da = (dh + dY) act'(a), act'(a) from h_t: 1 - h_t^2 (tanh), [not h_t <= 0] (relu: 0 where h_t <= 0,
// a NaN passes, as the Python rule); then dh = da W_hh.
template <typename T>
void rnn_bwd(const Tensor& dy, const Tensor& w_hh, const Tensor& Y, Tensor& dh, Tensor& dA, const Steps& st,
             bool relu) {
  using V = Vec<T>;
  const V one(T(1)), zero(T(0));
  const int64_t H = Y.size(1), ldy = dy.stride(0);
  const T *dyp = dy.const_data_ptr<T>(), *yp = Y.const_data_ptr<T>();
  T *dhs = dh.data_ptr<T>(), *da = dA.data_ptr<T>();
  backward_loop<T, 1>(w_hh, Tensor(), H, dyp, ldy, da, dhs, nullptr, st, false, [&](int64_t, int64_t row,
                                                                                     int64_t col, int64_t m,
                                                                                     const V& d) {
    const V yv = V::loadu(yp + row * H + col, m);
    const V fac = relu ? V::blendv(one, zero, yv <= zero) : one - yv * yv;
    (d * fac).store(da + row * H + col, m);
  });
}

}  // namespace fused

// --- LSTM ---
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_fwd(
    const Tensor& gi_, const Tensor& w_hh, const c10::optional<Tensor>& w_hr_, const Tensor& h0, const Tensor& c0,
    at::IntArrayRef offsets, at::IntArrayRef sizes) {
  const char* op = "lstm_layer_fwd";
  const bool proj = w_hr_.has_value() && w_hr_->defined();
  const Tensor w_hr = proj ? *w_hr_ : Tensor();
  check_dtypes({&gi_, &w_hh, &w_hr, &h0, &c0}, op);
  TORCH_CHECK(gi_.dim() == 2 && gi_.size(1) % 4 == 0, "torch_bp::", op, ": gi must be (N, 4H), got ", gi_.sizes());
  const int64_t N = gi_.size(0), H = gi_.size(1) / 4, B = h0.dim() == 2 ? h0.size(0) : 0;
  const int64_t Hout = proj ? w_hr.size(0) : H;
  check_2d(w_hh, 4 * H, Hout, "w_hh", op);
  if (proj) check_2d(w_hr, Hout, H, "w_hr", op);
  check_2d(h0, B, Hout, "h0", op);
  check_2d(c0, B, H, "c0", op);
  const Steps st = check_steps(offsets, sizes, N, B, op);
  const Tensor gi = gi_.contiguous(), w = w_hh.contiguous(), wr = proj ? w_hr.contiguous() : Tensor();
  Tensor h = h0.clone(at::MemoryFormat::Contiguous), c = c0.clone(at::MemoryFormat::Contiguous);
  Tensor Y = gi.new_empty({N, Hout}), Hprev = gi.new_empty({N, Hout});
  Tensor Cprev = gi.new_empty({N, H}), A = new_output({N, 4 * H}, gi.options()), C = gi.new_empty({N, H});
  AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "torch_bp_lstm_fwd", [&] {
    fused::lstm_fwd<scalar_t>(gi, w, wr, h, c, Y, Hprev, Cprev, A, C, st);
  });
  return {Y, h, c, Hprev, Cprev, A, C};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_layer_bwd(const Tensor& dY, const Tensor& dh0, const Tensor& dc0,
                                                          const Tensor& w_hh, const c10::optional<Tensor>& w_hr_,
                                                          const Tensor& Cprev_, const Tensor& A_, const Tensor& C_,
                                                          at::IntArrayRef offsets, at::IntArrayRef sizes) {
  const char* op = "lstm_layer_bwd";
  const bool proj = w_hr_.has_value() && w_hr_->defined();
  const Tensor w_hr = proj ? *w_hr_ : Tensor();
  check_dtypes({&dY, &dh0, &dc0, &w_hh, &w_hr, &Cprev_, &A_, &C_}, op);
  TORCH_CHECK(A_.dim() == 2 && A_.size(1) % 4 == 0, "torch_bp::", op, ": A must be (N, 4H), got ", A_.sizes());
  const int64_t N = A_.size(0), H = A_.size(1) / 4, B = dh0.dim() == 2 ? dh0.size(0) : 0;
  const int64_t Hout = proj ? w_hr.size(0) : H;
  check_2d(dY, N, Hout, "dY", op);
  check_2d(w_hh, 4 * H, Hout, "w_hh", op);
  if (proj) check_2d(w_hr, Hout, H, "w_hr", op);
  check_2d(dh0, B, Hout, "dh", op);
  check_2d(dc0, B, H, "dc", op);
  check_2d(Cprev_, N, H, "Cprev", op);
  check_2d(C_, N, H, "C", op);
  const Steps st = check_steps(offsets, sizes, N, B, op);
  const Tensor Cprev = Cprev_.contiguous(), A = A_.contiguous(), C = C_.contiguous();
  const Tensor w = w_hh.contiguous(), wr = proj ? w_hr.contiguous() : Tensor();
  const Tensor dy = dY.stride(1) == 1 ? dY : dY.contiguous();  // a column block of (N, D*Hout): rows strided
  Tensor dh = dh0.clone(at::MemoryFormat::Contiguous), dc = dc0.clone(at::MemoryFormat::Contiguous);
  Tensor dA = new_output({N, 4 * H}, A.options()), dHo = proj ? A.new_empty({N, Hout}) : Tensor();
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "torch_bp_lstm_bwd", [&] {
    fused::lstm_bwd<scalar_t>(dy, w, wr, Cprev, A, C, dh, dc, dA, dHo, st);
  });
  return {dA, dh, dc, dHo};
}

// --- GRU ---
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> gru_layer_fwd(const Tensor& gi_, const Tensor& w_hh,
                                                                 const c10::optional<Tensor>& b_hh_, const Tensor& h0,
                                                                 at::IntArrayRef offsets, at::IntArrayRef sizes) {
  const char* op = "gru_layer_fwd";
  const bool has_b = b_hh_.has_value() && b_hh_->defined();
  const Tensor b_hh = has_b ? *b_hh_ : Tensor();
  check_dtypes({&gi_, &w_hh, &b_hh, &h0}, op);
  TORCH_CHECK(gi_.dim() == 2 && gi_.size(1) % 3 == 0, "torch_bp::", op, ": gi must be (N, 3H), got ", gi_.sizes());
  const int64_t N = gi_.size(0), H = gi_.size(1) / 3, B = h0.dim() == 2 ? h0.size(0) : 0;
  check_2d(w_hh, 3 * H, H, "w_hh", op);
  TORCH_CHECK(!has_b || (b_hh.dim() == 1 && b_hh.size(0) == 3 * H), "torch_bp::", op, ": b_hh must have shape (",
              3 * H, "), got ", b_hh.sizes());
  check_2d(h0, B, H, "h0", op);
  const Steps st = check_steps(offsets, sizes, N, B, op);
  const Tensor gi = gi_.contiguous();
  Tensor h = h0.clone(at::MemoryFormat::Contiguous);
  Tensor Y = gi.new_empty({N, H}), Hprev = gi.new_empty({N, H}), A = new_output({N, 3 * H}, gi.options());
  Tensor HN = gi.new_empty({N, H});
  const Tensor w = w_hh.contiguous(), b = has_b ? b_hh.contiguous() : Tensor();
  AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "torch_bp_gru_fwd", [&] {
    fused::gru_fwd<scalar_t>(gi, w, b, h, Y, Hprev, A, HN, st);
  });
  return {Y, h, Hprev, A, HN};
}

std::tuple<Tensor, Tensor, Tensor> gru_layer_bwd(const Tensor& dY, const Tensor& dh0, const Tensor& w_hh,
                                                 const Tensor& Hprev_, const Tensor& A_, const Tensor& HN_,
                                                 at::IntArrayRef offsets, at::IntArrayRef sizes) {
  const char* op = "gru_layer_bwd";
  check_dtypes({&dY, &dh0, &w_hh, &Hprev_, &A_, &HN_}, op);
  TORCH_CHECK(A_.dim() == 2 && A_.size(1) % 3 == 0, "torch_bp::", op, ": A must be (N, 3H), got ", A_.sizes());
  const int64_t N = A_.size(0), H = A_.size(1) / 3, B = dh0.dim() == 2 ? dh0.size(0) : 0;
  check_2d(dY, N, H, "dY", op);
  check_2d(dh0, B, H, "dh", op);
  check_2d(w_hh, 3 * H, H, "w_hh", op);
  check_2d(Hprev_, N, H, "Hprev", op);
  check_2d(HN_, N, H, "HN", op);
  const Steps st = check_steps(offsets, sizes, N, B, op);
  const Tensor Hprev = Hprev_.contiguous(), A = A_.contiguous(), HN = HN_.contiguous();
  const Tensor dy = dY.stride(1) == 1 ? dY : dY.contiguous();
  Tensor dh = dh0.clone(at::MemoryFormat::Contiguous);
  Tensor dAi = new_output({N, 3 * H}, A.options()), dAh = new_output({N, 3 * H}, A.options());
  const Tensor w = w_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "torch_bp_gru_bwd", [&] {
    fused::gru_bwd<scalar_t>(dy, w, Hprev, A, HN, dh, dAi, dAh, st);
  });
  return {dAi, dAh, dh};
}

// --- RNN (tanh, relu) ---
std::tuple<Tensor, Tensor> rnn_layer_fwd(const Tensor& gi_, const Tensor& w_hh, const Tensor& h0,
                                         at::IntArrayRef offsets, at::IntArrayRef sizes, bool relu) {
  const char* op = "rnn_layer_fwd";
  check_dtypes({&gi_, &w_hh, &h0}, op);
  TORCH_CHECK(gi_.dim() == 2, "torch_bp::", op, ": gi must be (N, H), got ", gi_.sizes());
  const int64_t N = gi_.size(0), H = gi_.size(1), B = h0.dim() == 2 ? h0.size(0) : 0;
  check_2d(w_hh, H, H, "w_hh", op);
  check_2d(h0, B, H, "h0", op);
  const Steps st = check_steps(offsets, sizes, N, B, op);
  const Tensor gi = gi_.contiguous(), w = w_hh.contiguous();
  Tensor h = h0.clone(at::MemoryFormat::Contiguous), Y = new_output({N, H}, gi.options());
  AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "torch_bp_rnn_fwd", [&] {
    fused::rnn_fwd<scalar_t>(gi, w, h, Y, st, relu);
  });
  return {Y, h};
}

std::tuple<Tensor, Tensor> rnn_layer_bwd(const Tensor& dY, const Tensor& dh0, const Tensor& w_hh, const Tensor& Y_,
                                         at::IntArrayRef offsets, at::IntArrayRef sizes, bool relu) {
  const char* op = "rnn_layer_bwd";
  check_dtypes({&dY, &dh0, &w_hh, &Y_}, op);
  TORCH_CHECK(Y_.dim() == 2, "torch_bp::", op, ": Y must be (N, H), got ", Y_.sizes());
  const int64_t N = Y_.size(0), H = Y_.size(1), B = dh0.dim() == 2 ? dh0.size(0) : 0;
  check_2d(dY, N, H, "dY", op);
  check_2d(dh0, B, H, "dh", op);
  check_2d(w_hh, H, H, "w_hh", op);
  const Steps st = check_steps(offsets, sizes, N, B, op);
  const Tensor Y = Y_.contiguous(), w = w_hh.contiguous();
  const Tensor dy = dY.stride(1) == 1 ? dY : dY.contiguous();  // a column block of (N, D*H): rows strided
  Tensor dh = dh0.clone(at::MemoryFormat::Contiguous), dA = new_output({N, H}, Y.options());
  AT_DISPATCH_FLOATING_TYPES(Y.scalar_type(), "torch_bp_rnn_bwd", [&] {
    fused::rnn_bwd<scalar_t>(dy, w, Y, dh, dA, st, relu);
  });
  return {dA, dh};
}

}  // namespace rnn

TORCH_LIBRARY_IMPL(torch_bp, CPU, m) {
  m.impl("lstm_layer_fwd", &rnn::lstm_layer_fwd);
  m.impl("lstm_layer_bwd", &rnn::lstm_layer_bwd);
  m.impl("gru_layer_fwd", &rnn::gru_layer_fwd);
  m.impl("gru_layer_bwd", &rnn::gru_layer_bwd);
  m.impl("rnn_layer_fwd", &rnn::rnn_layer_fwd);
  m.impl("rnn_layer_bwd", &rnn::rnn_layer_bwd);
}

}  // namespace torch_bp
