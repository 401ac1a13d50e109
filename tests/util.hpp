// Test helpers: dtypes (incl. a user-defined one), layouts, random problems, comparisons.
#pragma once

#include "reference.hpp"

#include <talkconv/talkconv.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

// A user-defined storage type: a float in a struct, known to talkconv only through scalar_traits.
struct user_float {
  float v;
};
template <>
struct talkconv::scalar_traits<user_float> {
  using acc_type = float;
  static float to_acc(user_float u) { return u.v; }
  static user_float from_acc(float a) { return user_float{a}; }
};

// A second user type that asks for a double accumulator (the customization point decides it).
struct user_float_wide {
  float v;
};
template <>
struct talkconv::scalar_traits<user_float_wide> {
  using acc_type = double;
  static double to_acc(user_float_wide u) { return static_cast<double>(u.v); }
  static user_float_wide from_acc(double a) { return user_float_wide{static_cast<float>(a)}; }
};

namespace tt {

using talkconv::index_t;
using talkconv::layout;
using ref::vec;

// Sizes shrink under sanitizers (TALKCONV_TESTS_SMALL, set by CMake when TALKCONV_SANITIZE is on);
// every case still runs, only with fewer random draws.
#if defined(TALKCONV_TESTS_SMALL) && TALKCONV_TESTS_SMALL
inline constexpr bool small = true;
#else
inline constexpr bool small = false;
#endif
inline int draws(int n) { return small ? std::max(1, n / 3) : n; }

template <class T>
T to_store(double v) {
  return talkconv::from_acc<T>(static_cast<talkconv::acc_t<T>>(v));
}
template <class T>
double to_dbl(const T& v) {
  return static_cast<double>(talkconv::to_acc<T>(v));
}

// Tolerances, relative to the scale of the compared quantity (see compare()).
//   double 1e-12, float (and a float stored in a user struct) 1e-5, half and bfloat16 1e-2.
template <class T>
double tol() {
  if constexpr (std::is_same<T, double>::value) return 1e-12;
  else if constexpr (std::is_same<T, Eigen::half>::value || std::is_same<T, Eigen::bfloat16>::value) return 1e-2;
  else return 1e-5;
}
// Names come back as std::string: doctest's INFO prints a const char* as a pointer.
template <class T>
std::string dtype_name() {
  if constexpr (std::is_same<T, double>::value) return "double";
  else if constexpr (std::is_same<T, float>::value) return "float";
  else if constexpr (std::is_same<T, Eigen::half>::value) return "half";
  else if constexpr (std::is_same<T, Eigen::bfloat16>::value) return "bfloat16";
  else if constexpr (std::is_same<T, user_float>::value) return "user_float";
  else return "user_float_wide";
}

inline std::string layout_name(layout l) { return l == layout::tbc ? "tbc" : "btc"; }

// Position of element (t, b, j) of a [T, B, width] tensor in the library's layout.
inline size_t lidx(layout lay, long T, long B, long width, long t, long b, long j) {
  return static_cast<size_t>(lay == layout::tbc ? (t * B + b) * width + j : (b * T + t) * width + j);
}

// Canonical (reference, time-major) doubles -> library layout in storage type S.
template <class S>
std::vector<S> to_layout(const vec& canon, layout lay, long T, long B, long width) {
  std::vector<S> out(canon.size());
  for (long t = 0; t < T; ++t)
    for (long b = 0; b < B; ++b)
      for (long j = 0; j < width; ++j)
        out[lidx(lay, T, B, width, t, b, j)] = to_store<S>(canon[static_cast<size_t>((t * B + b) * width + j)]);
  return out;
}
// Library layout -> canonical doubles.
template <class S>
vec from_layout(const S* data, layout lay, long T, long B, long width) {
  vec out(static_cast<size_t>(T * B * width));
  for (long t = 0; t < T; ++t)
    for (long b = 0; b < B; ++b)
      for (long j = 0; j < width; ++j)
        out[static_cast<size_t>((t * B + b) * width + j)] = to_dbl<S>(data[lidx(lay, T, B, width, t, b, j)]);
  return out;
}
template <class S>
vec to_dbl_vec(const std::vector<S>& v) {
  vec out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_dbl<S>(v[i]);
  return out;
}
template <class S>
std::vector<S> to_store_vec(const vec& v) {
  std::vector<S> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_store<S>(v[i]);
  return out;
}
// Round doubles through storage type S (what the library will actually see).
template <class S>
vec round_through(const vec& v) {
  return to_dbl_vec(to_store_vec<S>(v));
}

inline vec normal_vec(std::mt19937_64& rng, size_t n, double mean = 0.0, double sd = 1.0) {
  std::normal_distribution<double> nd(mean, sd);
  vec v(n);
  for (auto& e : v) e = nd(rng);
  return v;
}
inline vec uniform_vec(std::mt19937_64& rng, size_t n, double lo, double hi) {
  std::uniform_real_distribution<double> ud(lo, hi);
  vec v(n);
  for (auto& e : v) e = ud(rng);
  return v;
}
inline long uniform_int(std::mt19937_64& rng, long lo, long hi) {
  return std::uniform_int_distribution<long>(lo, hi)(rng);
}

inline double mean_abs(const vec& v) {
  double s = 0.0;
  for (double e : v) s += std::fabs(e);
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}
inline double max_abs(const vec& v) {
  double m = 0.0;
  for (double e : v) m = std::max(m, std::fabs(e));
  return m;
}

// Result of an element-wise comparison: the worst absolute difference and where it is.
struct cmp {
  double max_err = 0.0;
  size_t worst = 0;
  double lib = 0.0, ref = 0.0;
  bool nan_mismatch = false;  // one side NaN / Inf and the other not
  size_t n = 0;
  std::string str() const {
    std::ostringstream os;
    os.precision(10);
    os << "max_err=" << max_err << " at flat index " << worst << " (lib=" << lib << ", ref=" << ref << ")"
       << (nan_mismatch ? " NON-FINITE MISMATCH" : "") << " over " << n << " values";
    return os.str();
  }
};
inline cmp compare(const vec& lib, const vec& ref) {
  cmp r;
  r.n = lib.size();
  REQUIRE(lib.size() == ref.size());
  for (size_t i = 0; i < lib.size(); ++i) {
    if (std::isfinite(lib[i]) != std::isfinite(ref[i])) {
      if (!r.nan_mismatch) r.worst = i, r.lib = lib[i], r.ref = ref[i];
      r.nan_mismatch = true;
      r.max_err = std::numeric_limits<double>::infinity();
      continue;
    }
    if (!std::isfinite(lib[i])) continue;
    const double e = std::fabs(lib[i] - ref[i]);
    if (e > r.max_err && !r.nan_mismatch) r.max_err = e, r.worst = i, r.lib = lib[i], r.ref = ref[i];
  }
  return r;
}

// CHECK that lib and ref agree within tol * scale; prints where they differ most on failure.
#define TT_CHECK_CLOSE(what, lib, ref, tolerance, scale)                                             \
  do {                                                                                               \
    const ::tt::cmp tt_c_ = ::tt::compare((lib), (ref));                                             \
    const double tt_bar_ = (tolerance) * (scale);                                                    \
    INFO(what, ": ", tt_c_.str(), "; bar = ", tt_bar_, " (tol ", (tolerance), " x scale ", (scale), ")"); \
    CHECK(tt_c_.max_err <= tt_bar_);                                                                 \
  } while (0)

template <class S>
bool bitwise_equal(const std::vector<S>& a, const std::vector<S>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(S)) == 0);
}

// Scales the gradient comparisons are relative to (the "window scale" of each quantity):
//   dx:        max(max |dx_ref|, mean |dy|)  (a window spreads dy / K over up to K tokens)
//   d_offsets: max(max |d_ref|, max(L, M) / K * R * mean |x| * mean |dy|)  (one head's typical slope sum)
//   dweight, dbias: the largest sum of |terms| (what summation error is relative to)
inline double dx_scale(const vec& dx_ref, const vec& dy) { return std::max({1e-300, max_abs(dx_ref), mean_abs(dy)}); }
inline double d_offsets_scale(const ref::problem& pb, const vec& d_ref, const vec& x, const vec& dy) {
  const double typical = static_cast<double>(std::max(pb.L, pb.M)) / static_cast<double>(pb.K()) *
                         static_cast<double>(pb.R()) * mean_abs(x) * mean_abs(dy);
  return std::max({1e-300, max_abs(d_ref), typical});
}
inline double sum_scale(const vec& mag) { return std::max(1e-300, max_abs(mag)); }

// A random problem: shapes drawn from small ranges, with the corner cases mixed in by the caller.
struct shape_opts {
  long T_max = 40, B_max = 3, C_max = 16;
  long window_max = 8;  // L, M drawn in [0, window_max]
  bool causal = false;
  long heads = 0;       // 0: random divisor of C; else fixed (C drawn as a multiple)
};
inline std::vector<long> divisors(long c) {
  std::vector<long> d;
  for (long i = 1; i <= c; ++i)
    if (c % i == 0) d.push_back(i);
  return d;
}
inline ref::problem random_problem(std::mt19937_64& rng, const shape_opts& o) {
  ref::problem pb;
  pb.T = uniform_int(rng, 1, o.T_max);
  pb.B = uniform_int(rng, 1, o.B_max);
  if (o.heads > 0) {
    pb.H = o.heads;
    pb.C = o.heads * uniform_int(rng, 1, std::max(1L, o.C_max / o.heads));
  } else {
    pb.C = uniform_int(rng, 1, o.C_max);
    const auto d = divisors(pb.C);
    pb.H = d[static_cast<size_t>(uniform_int(rng, 0, static_cast<long>(d.size()) - 1))];
  }
  pb.L = uniform_int(rng, 0, o.window_max);
  pb.causal = o.causal;
  pb.M = o.causal ? 0 : uniform_int(rng, 0, o.window_max);
  if (uniform_int(rng, 0, 2) == 0) {  // a third of the draws: ragged lengths in [0, T]
    pb.lengths.resize(static_cast<size_t>(pb.B));
    for (auto& n : pb.lengths) n = uniform_int(rng, 0, pb.T);
  }
  return pb;
}

// The corner cases every comparison runs besides the random draws (SPEC names each):
// T = 1, H = C, L = 0, M = 0, windows wider than the sequence, lengths 0 and 1 and < T.
// fixed_heads > 0 (a compile-time head count) keeps H and draws C as R * H.
inline std::vector<ref::problem> corner_problems(bool causal, long fixed_heads = 0) {
  std::vector<ref::problem> v;
  auto add = [&](long T, long B, long R, long H, long L, long M, std::vector<long> lengths) {
    ref::problem pb;
    pb.H = fixed_heads > 0 ? fixed_heads : H;
    pb.T = T, pb.B = B, pb.C = R * pb.H, pb.L = L, pb.M = causal ? 0 : M, pb.causal = causal;
    pb.lengths = std::move(lengths);
    v.push_back(pb);
  };
  add(1, 2, 2, 2, 3, 2, {});                 // T = 1
  add(1, 1, 1, 1, 0, 0, {});                 // T = 1, L = M = 0, C = H = 1
  add(17, 2, 1, 6, 3, 4, {});                // H = C
  add(13, 2, 2, 2, 0, 5, {});                // L = 0
  add(13, 2, 2, 2, 5, 0, {});                // M = 0
  add(9, 2, 4, 2, 30, 25, {});               // L, M > T
  add(20, 4, 4, 1, 6, 3, {0, 1, 7, 20});     // lengths 0, 1, < T, = T
  add(5, 3, 2, 1, 12, 12, {5, 0, 2});        // lengths and windows wider than the sequence
  return v;
}

}  // namespace tt

namespace tt {

// Every storage type the comparisons run on (a quick local build may narrow it with -DTT_DTYPES=float).
#ifndef TT_DTYPES
#define TT_DTYPES float, double, Eigen::half, Eigen::bfloat16, user_float, user_float_wide
#endif

inline talkconv::seq_shape shape_of(const ref::problem& pb, layout lay) {
  return talkconv::seq_shape{pb.T, pb.B, pb.C, lay};
}
inline talkconv::window_params window_of(const ref::problem& pb) {
  return talkconv::window_params{pb.H, pb.L, pb.M, pb.causal};
}
inline std::vector<index_t> lengths_of(const ref::problem& pb) {
  return std::vector<index_t>(pb.lengths.begin(), pb.lengths.end());
}
inline const index_t* lengths_ptr(const std::vector<index_t>& l) { return l.empty() ? nullptr : l.data(); }

inline bool is_pow2(long v) { return v > 0 && (v & (v - 1)) == 0; }

// Offsets for the window building blocks, exactly representable in A. A mix per offset: exactly 0,
// exactly 1, an integer bound k / L (or k / M) where that product is exact (power-of-two reach), the
// dropout-scaled maximum 2, and uniform values in [0, hi].
template <class A>
vec window_offsets(std::mt19937_64& rng, const ref::problem& pb, double hi = 1.0) {
  vec o(pb.o_size());
  for (long t = 0; t < pb.T; ++t)
    for (long b = 0; b < pb.B; ++b)
      for (long j = 0; j < pb.P(); ++j) {
        const long reach = j < pb.H ? pb.L : pb.M;
        const long r = uniform_int(rng, 0, 19);
        double v;
        if (r < 4) v = 0.0;
        else if (r < 7) v = 1.0;
        else if (r < 10 && is_pow2(reach)) v = static_cast<double>(uniform_int(rng, 0, reach)) / static_cast<double>(reach);
        else if (r < 11) v = hi > 1.0 ? 2.0 : 1.0;
        else v = std::uniform_real_distribution<double>(0.0, hi)(rng);
        o[pb.oi(t, b, j)] = static_cast<double>(static_cast<A>(v));
      }
  return o;
}

// Outputs of a run as raw bytes, in a fixed order: for bitwise comparisons of whole runs.
struct outputs {
  std::vector<std::vector<unsigned char>> bufs;
  std::vector<std::string> names;
  template <class S>
  void add(const char* name, const std::vector<S>& v) {
    names.emplace_back(name);
    const auto* p = reinterpret_cast<const unsigned char*>(v.data());
    bufs.emplace_back(p, p + v.size() * sizeof(S));
  }
  // The name of the first output that differs from `o`, or empty.
  std::string first_difference(const outputs& o) const {
    if (bufs.size() != o.bufs.size()) return "a different number of outputs";
    for (size_t i = 0; i < bufs.size(); ++i)
      if (bufs[i] != o.bufs[i]) return names[i];
    return {};
  }
};

}  // namespace tt
