// Shared helpers for the CPU kernels: vector load/store in the accumulation type, the dtype
// dispatch, and per-thread scratch for column sums (grad of weight/bias).
//
// Every kernel is templated over the storage type T (float, double, BFloat16) and computes in
// acc_t<T> = at::opmath_type<T> (float for BFloat16), rounding once when it stores, as the
// Python rules do with `opmath` (torch_bp/ops/_util.py).
#pragma once

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <cstring>
#include <mutex>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#include <type_traits>
#include <vector>

namespace torch_bp {

template <typename T>
using acc_t = at::opmath_type<T>;
template <typename T>
using AVec = at::vec::Vectorized<acc_t<T>>;

// NOTE: BFloat16 vectors are loaded as Vectorized<float> of the same lane count, so a kernel
// written against AVec<T> reads the same for every T.
template <typename T>
inline AVec<T> vload(const T* p, int64_t n = AVec<T>::size()) {
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    return AVec<T>::loadu(p, n);
  } else {
    if (n == AVec<T>::size()) {
      AVec<T> v;
      at::vec::load_to_float(p, v);
      return v;
    }
    acc_t<T> buf[AVec<T>::size()] = {};
    for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<acc_t<T>>(p[i]);
    return AVec<T>::loadu(buf);
  }
}

template <typename T>
inline void vstore(T* p, const AVec<T>& v, int64_t n = AVec<T>::size()) {
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    v.store(p, n);
  } else {
    at::vec::convert_from_float<T>(v, v).store(p, n);  // rounds to nearest even, once
  }
}

template <typename V>
inline typename V::value_type hsum(const V& v) {
  return at::vec::vec_reduce_all([](V& a, V& b) { return a + b; }, v);
}

// A contiguous output of the given sizes.
//
// NOTE (large outputs): a fresh multi-megabyte tensor from torch's CPU allocator is a fresh
// mmap (glibc serves sizes above its mmap threshold, at most 32 MiB, that way, and unmaps them
// on free), faulted in page by page as a kernel first writes it and returned to the kernel on
// free. The faults can cost more than the kernel that fills the tensor. Advising such a mapping to
// use transparent huge pages cuts the faults 512x while free huge pages are at hand, but each
// fault of a fresh huge page zeroes 2 MiB and, with THP defrag on "madvise", compacts memory
// synchronously when none is free: the same call then runs fast or several times slower
// depending on the state of the machine's memory. So outputs of 4 to 64 MiB come from a small
// cache of huge-page-advised blocks instead (OutputCache below): a block is faulted in once
// and reused, as is, for a later output of the same rounded size after the tensor that used
// it is freed. Larger outputs are left to torch's allocator, unadvised (faulting in hundreds of
// huge pages at once stalls longest, and such sizes are rare). TORCH_BP_OUTPUT_CACHE_MB (default
// 256) bounds the bytes the cache keeps while unused, 0 turns it off (fresh allocations, advised
// as above); TORCH_BP_HUGEPAGES=0 turns the advice off.
namespace detail {
constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kCacheMin = 2 * kHugePage, kCacheMax = 32 * kHugePage;

inline bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v && std::string(v) == value;
}

inline bool hugepages_enabled() {
  static const bool enabled = !env_is("TORCH_BP_HUGEPAGES", "0");
  return enabled;
}

inline void advise_hugepages(void* ptr, size_t nbytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (!hugepages_enabled()) return;
  const uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
  const uintptr_t lo = (p + kHugePage - 1) & ~(kHugePage - 1), hi = (p + nbytes) & ~(kHugePage - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)ptr, (void)nbytes;
#endif
}

// Blocks of whole huge pages, aligned to one. A block in use belongs to exactly one storage (its
// DataPtr's context); it enters the free list only from that storage's deleter, so a block on the
// free list is never reachable from a live tensor. The free list keeps at most `limit` bytes,
// dropping the least recently freed blocks first. Thread-safe (one mutex around the list);
// blocks still free at process exit are released then (OutputCacheRelease).
class OutputCache final : public c10::Allocator {
 public:
  struct Block {
    void* ptr;
    size_t size;
    OutputCache* owner;
  };

  static OutputCache& get() {
    // leaked on purpose: storages freed during static destruction still call back into it
    static OutputCache* cache = new OutputCache();
    return *cache;
  }

  bool enabled() const { return limit_ > 0; }

  c10::DataPtr allocate(size_t nbytes) override {
    const size_t size = (std::max<size_t>(nbytes, 1) + kHugePage - 1) & ~(kHugePage - 1);
    Block* b = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = free_.size(); i-- > 0;) {  // the most recently freed block of this size
        if (free_[i]->size == size) {
          b = free_[i];
          free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(i));
          cached_ -= size;
          break;
        }
      }
    }
    if (!b) {
      void* p = nullptr;
      TORCH_CHECK(posix_memalign(&p, kHugePage, size) == 0 && p, "torch_bp: out of memory allocating ", size,
                  " bytes");
      advise_hugepages(p, size);
      b = new Block{p, size, this};
    }
    return {b->ptr, b, &OutputCache::release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }

  // Free every cached block; blocks freed later are released at once.
  void close() {
    std::vector<Block*> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      drop.swap(free_);
      cached_ = 0;
    }
    for (Block* b : drop) destroy(b);
  }

 private:
  OutputCache() {
    const char* v = std::getenv("TORCH_BP_OUTPUT_CACHE_MB");
    limit_ = size_t(v ? std::max(0L, std::strtol(v, nullptr, 10)) : 256) << 20;
  }

  static void destroy(Block* b) {
    std::free(b->ptr);
    delete b;
  }

  static void release(void* ctx) {
    Block* b = static_cast<Block*>(ctx);
    OutputCache& c = *b->owner;
    std::vector<Block*> drop;
    {
      std::lock_guard<std::mutex> lock(c.mu_);
      if (c.closed_ || b->size > c.limit_) {
        drop.push_back(b);
      } else {
        while (c.cached_ + b->size > c.limit_) {  // evict the least recently freed
          drop.push_back(c.free_.front());
          c.cached_ -= c.free_.front()->size;
          c.free_.erase(c.free_.begin());
        }
        c.free_.push_back(b);
        c.cached_ += b->size;
      }
    }
    for (Block* d : drop) destroy(d);
  }

  std::mutex mu_;
  std::vector<Block*> free_;  // oldest first
  size_t cached_ = 0, limit_ = 0;
  bool closed_ = false;
};

struct OutputCacheRelease {
  ~OutputCacheRelease() { OutputCache::get().close(); }
};
inline OutputCacheRelease output_cache_release;  // one per process (inline variable)
}  // namespace detail

inline at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  const size_t nbytes = static_cast<size_t>(c10::multiply_integers(sizes)) * options.dtype().itemsize();
  if (nbytes < detail::kCacheMin || nbytes > detail::kCacheMax) return at::empty(sizes, options);
  detail::OutputCache& cache = detail::OutputCache::get();
  if (cache.enabled())
    return at::detail::empty_generic(sizes, &cache, c10::DispatchKeySet(c10::DispatchKey::CPU),
                                     options.dtype().toScalarType(), c10::nullopt);
  at::Tensor t = at::empty(sizes, options);
  detail::advise_hugepages(t.data_ptr(), t.nbytes());
  return t;
}
inline at::Tensor new_output_like(const at::Tensor& t) { return new_output(t.sizes(), t.options()); }

// Apply f(offset, count) over [0, n) in vector-sized steps; the last step may be partial.
template <typename T, typename F>
inline void vec_loop(int64_t n, const F& f) {
  constexpr int64_t W = AVec<T>::size();
  int64_t i = 0;
  for (; i + W <= n; i += W) f(i, W);
  if (i < n) f(i, n - i);
}

// Rows per task so that a task touches at least ~32K elements (parallel overhead amortised).
inline int64_t row_grain(int64_t d) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(d, 1)); }

// Per-thread accumulators for sums over rows: thread t owns row t of a (threads, k) buffer.
template <typename A>
struct ColumnSums {
  int64_t k;
  std::vector<A> buf;
  ColumnSums(int64_t k_, int64_t n_sums) : k(k_ * n_sums), buf(at::get_num_threads() * k_ * n_sums, A(0)) {}
  A* local() { return buf.data() + at::get_thread_num() * k; }
  // Sum over threads into out[0..k).
  void reduce(A* out) const {
    std::fill(out, out + k, A(0));
    const int64_t t = static_cast<int64_t>(buf.size()) / std::max<int64_t>(k, 1);
    for (int64_t i = 0; i < t; ++i)
      for (int64_t j = 0; j < k; ++j) out[j] += buf[i * k + j];
  }
};

// grad_y as autograd hands it to a backward is often one value expanded to the output's shape
// (the backward of sum() or mean()). Rather than materialising it, a kernel reads element i of
// a row at data[i * col_step] and row r at data[r * row_stride]: both steps are 0 for such a
// gradient (its data is `min_len` copies of the value, so vector loads work), else the tensor is
// made contiguous (col_step 1, row_stride = row length).
struct GradIn {
  at::Tensor data;
  int64_t col_step;
  bool broadcast;
};

inline GradIn grad_in(const at::Tensor& g, int64_t min_len) {
  bool bcast = g.numel() > 1;
  for (int64_t s : g.strides()) bcast = bcast && s == 0;
  if (bcast) return {g.as_strided({1}, {1}).expand({min_len}).contiguous(), 0, true};
  return {g.contiguous(), 1, false};
}

// --- 1-bit masks: bit i of a mask is bit i % 8 of byte i / 8 (flattened, contiguous order) ---
// With AVX2/AVX512 a vector of W floats maps to W bits (W / 8 whole bytes): compare-to-mask on
// the way in, masked moves on the way out. Elsewhere (or for double) kernels take the scalar path.
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#define TORCH_BP_MASK_VEC 1
using FVec = at::vec::Vectorized<float>;

inline uint32_t load_bits(const uint8_t* p) {
  return FVec::size() == 16 ? (uint32_t(p[0]) | uint32_t(p[1]) << 8) : uint32_t(p[0]);
}
inline void store_bits(uint8_t* p, uint32_t bits) {
  p[0] = static_cast<uint8_t>(bits);
  if (FVec::size() == 16) p[1] = static_cast<uint8_t>(bits >> 8);
}
// the W bits of elements e, e+1, ... for any e (not only multiples of 8); nbytes: the mask's size
inline uint32_t load_bits_at(const uint8_t* p, int64_t nbytes, int64_t e) {
  const int64_t byte = e / 8;
  uint32_t word = 0;
  for (int64_t i = 0; i < 4 && byte + i < nbytes; ++i) word |= uint32_t(p[byte + i]) << (8 * i);
  return (word >> (e % 8)) & ((1u << FVec::size()) - 1);
}
// bit = [not v <= 0] (true for NaN, as relu's "zero where y <= 0")
inline uint32_t bits_not_le0(const FVec& v) {
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NLE_UQ);
#else
  return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NLE_UQ)));
#endif
}
// bit = [b != 0] for W bools
inline uint32_t bits_of_bools(const bool* b) {
  const __m128i z = _mm_setzero_si128();
  if (FVec::size() == 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
    return static_cast<uint32_t>(~_mm_movemask_epi8(_mm_cmpeq_epi8(v, z))) & 0xFFFFu;
  }
  const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b));
  return static_cast<uint32_t>(~_mm_movemask_epi8(_mm_cmpeq_epi8(v, z))) & 0xFFu;
}
// lanes of v where the bit is set, 0 elsewhere
inline FVec keep_bits(uint32_t bits, const FVec& v) {
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(bits), v);
#else
  const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i on = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), lane), lane);
  return _mm256_and_ps(v, _mm256_castsi256_ps(on));
#endif
}
#endif

#define TORCH_BP_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, TYPE, NAME, __VA_ARGS__)

inline void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "torch_bp: ", name, " must be a CPU tensor, got ", t.device());
}

inline void check_same_dtype(const at::Tensor& a, const c10::optional<at::Tensor>& b, const char* name) {
  if (b.has_value() && b->defined())
    TORCH_CHECK(b->scalar_type() == a.scalar_type(), "torch_bp: ", name, " must have dtype ",
                a.scalar_type(), ", got ", b->scalar_type());
}

}  // namespace torch_bp
