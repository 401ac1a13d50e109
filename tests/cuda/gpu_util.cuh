// Helpers of the CUDA tests: GPU detection (cases skip without one), device buffers, random problems in
// SPEC's canonical [T, B, width] order, layout conversion, tolerances and comparisons.
#pragma once

#include "cpu_side.hpp"
#include "has_gpu.hpp"
#include "reference.hpp"

#include <talkconv/cuda/talkconv.cuh>

#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <utility>
#include <sstream>
#include <string>
#include <vector>

namespace tcu = talkconv::cuda;
using talkconv::acc_t;
using talkconv::index_t;


#define CUDA_OK(expr) REQUIRE_EQ(cudaSuccess, (expr))

// Owning device buffer of n elements.
template <class X>
struct dbuf {
  X* p = nullptr;
  size_t n = 0;
  dbuf() = default;
  explicit dbuf(size_t count) : n(count) {
    if (n) CUDA_OK(cudaMalloc(&p, n * sizeof(X)));
  }
  explicit dbuf(const std::vector<X>& h) : dbuf(h.size()) { upload(h); }
  dbuf(const dbuf&) = delete;
  dbuf& operator=(const dbuf&) = delete;
  ~dbuf() {
    if (p) cudaFree(p);
  }
  void upload(const std::vector<X>& h) {
    if (n) CUDA_OK(cudaMemcpy(p, h.data(), n * sizeof(X), cudaMemcpyHostToDevice));
  }
  std::vector<X> download() const {
    std::vector<X> h(n);
    CUDA_OK(cudaDeviceSynchronize());
    if (n) CUDA_OK(cudaMemcpy(h.data(), p, n * sizeof(X), cudaMemcpyDeviceToHost));
    return h;
  }
  void fill_bytes(int v) {
    if (n) CUDA_OK(cudaMemset(p, v, n * sizeof(X)));
  }
};

template <class X>
std::vector<X> to_type(const ref::vec& v) {
  std::vector<X> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = talkconv::from_acc<X>(static_cast<acc_t<X>>(v[i]));
  return r;
}
template <class X>
ref::vec to_double(const std::vector<X>& v) {
  ref::vec r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = static_cast<double>(talkconv::to_acc<X>(v[i]));
  return r;
}

// Canonical [T, B, W] <-> the layout under test.
template <class X>
std::vector<X> to_layout(const std::vector<X>& tbc, long T, long B, long W, talkconv::layout lay) {
  if (lay == talkconv::layout::tbc) return tbc;
  std::vector<X> r(tbc.size());
  for (long t = 0; t < T; ++t)
    for (long b = 0; b < B; ++b) std::copy_n(tbc.begin() + (t * B + b) * W, W, r.begin() + (b * T + t) * W);
  return r;
}
template <class X>
std::vector<X> from_layout(const std::vector<X>& v, long T, long B, long W, talkconv::layout lay) {
  if (lay == talkconv::layout::tbc) return v;
  std::vector<X> r(v.size());
  for (long t = 0; t < T; ++t)
    for (long b = 0; b < B; ++b) std::copy_n(v.begin() + (b * T + t) * W, W, r.begin() + (t * B + b) * W);
  return r;
}

// Relative tolerance (to the largest magnitude of the expected tensor) per storage type.
template <class X>
struct tol;
template <>
struct tol<float> {
  static constexpr double value = 2e-5;
  static constexpr const char* name = "float";
};
template <>
struct tol<double> {
  static constexpr double value = 1e-11;
  static constexpr const char* name = "double";
};
template <>
struct tol<__half> {
  static constexpr double value = 4e-3;
  static constexpr const char* name = "half";
};
template <>
struct tol<__nv_bfloat16> {
  static constexpr double value = 3e-2;
  static constexpr const char* name = "bfloat16";
};

inline double max_abs(const ref::vec& v) {
  double m = 0.0;
  for (double e : v)
    if (std::isfinite(e)) m = std::max(m, std::fabs(e));
  return m;
}

// max |got - want| <= rel * max(1, max |want|); NaN must match NaN.
inline void check_close(const ref::vec& got, const ref::vec& want, double rel, const std::string& what) {
  REQUIRE_EQ(got.size(), want.size());
  const double scale = std::max(1.0, max_abs(want));
  double worst = 0.0;
  size_t at = 0, nan_mismatch = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i]) || std::isnan(got[i])) {
      nan_mismatch += std::isnan(want[i]) != std::isnan(got[i]);
      continue;
    }
    const double e = std::fabs(got[i] - want[i]);
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  INFO(what, ": max error ", worst, " at ", at, " (got ", got.empty() ? 0.0 : got[at], ", want ",
       want.empty() ? 0.0 : want[at], "), scale ", scale, ", tolerance ", rel * scale);
  CHECK(nan_mismatch == 0);
  CHECK(worst <= rel * scale);
}

template <class X>
bool same_bits(const std::vector<X>& a, const std::vector<X>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(X)) == 0;
}

// A random problem: shapes, heads (some wider than a CUDA block: R > 64), windows, lengths.
struct test_case {
  ref::problem pb;
  talkconv::layout lay = talkconv::layout::tbc;
  std::uint64_t seed = 0;

  talkconv::seq_shape shape() const { return talkconv::seq_shape{pb.T, pb.B, pb.C, lay}; }
  talkconv::seq_shape canonical() const { return talkconv::seq_shape{pb.T, pb.B, pb.C, talkconv::layout::tbc}; }
  talkconv::window_params window() const { return talkconv::window_params{pb.H, pb.L, pb.M, pb.causal}; }
  talkconv::talk_config config() const { return talkconv::talk_config{pb.C, pb.H, pb.L, pb.M, pb.causal}; }
  std::vector<index_t> lengths() const { return std::vector<index_t>(pb.lengths.begin(), pb.lengths.end()); }
  std::string str() const {
    return pb.str() + (lay == talkconv::layout::tbc ? " tbc" : " btc") + " seed=" + std::to_string(seed);
  }
};

inline test_case random_case(std::uint64_t seed, bool causal, talkconv::layout lay, long max_T = 300) {
  std::mt19937_64 g(seed);
  auto pick = [&](long lo, long hi) { return std::uniform_int_distribution<long>(lo, hi)(g); };
  test_case c;
  c.seed = seed;
  c.lay = lay;
  const long Hs[] = {1, 2, 3, 4, 8};
  const long Rs[] = {1, 3, 8, 16, 24, 64, 80, 130};
  c.pb.H = Hs[pick(0, 4)];
  c.pb.C = c.pb.H * Rs[pick(0, 7)];
  while (c.pb.C > 600) c.pb.H = 1, c.pb.C = Rs[pick(0, 7)];
  c.pb.T = pick(1, max_T);
  c.pb.B = pick(1, 3);
  c.pb.L = pick(0, 3) == 0 ? pick(0, 2) : pick(0, 48);
  c.pb.M = causal ? 0 : (pick(0, 3) == 0 ? pick(0, 2) : pick(0, 48));
  c.pb.causal = causal;
  if (pick(0, 1))
    for (long b = 0; b < c.pb.B; ++b) c.pb.lengths.push_back(pick(0, 3) == 0 ? c.pb.T : pick(0, c.pb.T));
  return c;
}

// A case of a given shape (empty lengths: every sequence has length T).
inline test_case shaped_case(std::uint64_t seed, long T, long B, long C, long H, long L, long M, bool causal,
                             talkconv::layout lay, std::vector<long> lengths = {}) {
  test_case c;
  c.seed = seed;
  c.lay = lay;
  c.pb.T = T;
  c.pb.B = B;
  c.pb.C = C;
  c.pb.H = H;
  c.pb.L = L;
  c.pb.M = M;
  c.pb.causal = causal;
  c.pb.lengths = std::move(lengths);
  return c;
}

inline ref::vec random_vec(size_t n, std::uint64_t seed, double mean, double sd) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d(mean, sd);
  ref::vec v(n);
  for (double& e : v) e = d(g);
  return v;
}
inline ref::vec random_uniform(size_t n, std::uint64_t seed, double lo, double hi) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  ref::vec v(n);
  for (double& e : v) e = d(g);
  return v;
}

// Lengths of a case on the device (null when every length is T), and on the host for the CPU path.
struct lengths_on_device {
  std::vector<index_t> host;
  dbuf<index_t> dev;
  explicit lengths_on_device(const test_case& c) : host(c.lengths()), dev(host) {}
  const index_t* d() const { return host.empty() ? nullptr : dev.p; }
  const index_t* h() const { return host.empty() ? nullptr : host.data(); }
};

#define TALKCONV_GPU_CASE(name) TEST_CASE(name* doctest::skip(!has_gpu()))
