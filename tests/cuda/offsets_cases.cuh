// Offset GEMM cases shared by the per-dtype CUDA test files: the shapes the projection, dW and
// offset-path tilings treat specially (rows not a multiple of the tile, C not a multiple of the 16-byte
// vector or odd, P not a multiple of 8 / 16 or wider than one 32-offset tile, btc, ragged and zero
// lengths with NaN in x past them, the dot-product form for a handful of rows), against the CPU path.
#pragma once

#include "gpu_util.cuh"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

struct gemm_shape {
  long T, B, C, H;
  bool causal;
  talkconv::layout lay;
  std::vector<long> lengths;
  bool dropout;
};

// The projection (o_pre, o) and the backward (dx += W^T dz from a random dx0, dW, dbias) of one shape.
template <class T>
void offsets_gemm_case(const gemm_shape& s, std::uint64_t seed) {
  using A = acc_t<T>;
  test_case c;
  c.seed = seed;
  c.lay = s.lay;
  c.pb.T = s.T;
  c.pb.B = s.B;
  c.pb.C = s.C;
  c.pb.H = s.H;
  c.pb.L = 5;
  c.pb.M = s.causal ? 0 : 7;
  c.pb.causal = s.causal;
  c.pb.lengths = s.lengths;
  INFO(c.str(), " dtype=", tol<T>::name, " dropout=", s.dropout);
  const ref::problem& pb = c.pb;
  const long P = pb.P();
  ref::vec xd = random_vec(pb.x_size(), seed + 1, 0.0, 1.0);
  // NaN in x past each length: no output may see it (the projection zeroes those rows, dW skips them).
  for (long b = 0; b < pb.B; ++b)
    for (long t = pb.n(b); t < pb.T; ++t) xd[pb.xi(t, b, 0)] = std::numeric_limits<double>::quiet_NaN();
  const std::vector<T> x = to_type<T>(xd);
  const std::vector<T> W = to_type<T>(random_vec(size_t(P * pb.C), seed + 2, 0.0, 1.0 / std::sqrt(double(pb.C))));
  const std::vector<T> bias = to_type<T>(random_vec(size_t(P), seed + 3, 0.0, 0.5));
  const talkconv::dropout_params d = s.dropout ? talkconv::dropout_params{0.25f, seed * 7 + 1, true}
                                               : talkconv::dropout_params{};
  lengths_on_device len(c);
  const double acc_tol = sizeof(A) > 4 ? 1e-12 : 2e-5;  // both sides sum in A; only the order differs

  dbuf<T> d_x(to_layout(x, pb.T, pb.B, pb.C, s.lay)), d_W(W), d_b(bias);
  dbuf<A> d_o(pb.o_size()), d_pre(pb.o_size());
  tcu::offsets_forward<T>(c.shape(), c.window(), d_x.p, d_W.p, d_b.p, d, d_o.p, d_pre.p, len.d(), nullptr);
  const std::vector<A> o_gpu = from_layout(d_o.download(), pb.T, pb.B, P, s.lay);
  const std::vector<A> pre_gpu = from_layout(d_pre.download(), pb.T, pb.B, P, s.lay);
  std::vector<A> o_cpu(pb.o_size()), pre_cpu(pb.o_size());
  cpu_side::offsets_forward<T>(c.canonical(), c.window(), x.data(), W.data(), bias.data(), d, o_cpu.data(),
                               pre_cpu.data(), len.h());
  check_close(to_double(pre_gpu), to_double(pre_cpu), acc_tol, "o_pre vs CPU");
  check_close(to_double(o_gpu), to_double(o_cpu), acc_tol, "o vs CPU");
  size_t mismatched = 0;
  for (size_t i = 0; i < o_gpu.size(); ++i) mismatched += (o_gpu[i] == A(0)) != (o_cpu[i] == A(0));
  CHECK(mismatched == 0);

  const std::vector<A> pre = to_type<A>(random_uniform(pb.o_size(), seed + 4, 0.05, 0.95));
  const std::vector<A> dout = to_type<A>(random_vec(pb.o_size(), seed + 5, 0.0, 1.0));
  const std::vector<T> dx0 = to_type<T>(random_vec(pb.x_size(), seed + 6, 0.0, 1.0));
  dbuf<A> d_pre2(to_layout(pre, pb.T, pb.B, P, s.lay)), d_do(to_layout(dout, pb.T, pb.B, P, s.lay));
  dbuf<T> d_dx(to_layout(dx0, pb.T, pb.B, pb.C, s.lay)), d_dW(static_cast<size_t>(P * pb.C)),
      d_db(static_cast<size_t>(P));
  std::size_t bytes = 0;
  tcu::offsets_backward<T>(nullptr, bytes, c.shape(), c.window(), d_x.p, d_W.p, d_pre2.p, d_do.p, d, d_dx.p, d_dW.p,
                           d_db.p, len.d(), nullptr);
  dbuf<char> ws(bytes);
  tcu::offsets_backward<T>(ws.p, bytes, c.shape(), c.window(), d_x.p, d_W.p, d_pre2.p, d_do.p, d, d_dx.p, d_dW.p,
                           d_db.p, len.d(), nullptr);
  std::vector<T> dx_cpu = dx0, dW_cpu(static_cast<size_t>(P * pb.C)), db_cpu(static_cast<size_t>(P));
  cpu_side::offsets_backward<T>(c.canonical(), c.window(), x.data(), W.data(), pre.data(), dout.data(), d,
                                dx_cpu.data(), dW_cpu.data(), db_cpu.data(), len.h());
  // 16-bit results are rounded once from float sums taken in another order: one unit in the last place.
  const double out_tol = sizeof(T) >= sizeof(float) ? acc_tol : tol<T>::value;
  check_close(to_double(from_layout(d_dx.download(), pb.T, pb.B, pb.C, s.lay)), to_double(dx_cpu), out_tol,
              "dx vs CPU");
  check_close(to_double(d_dW.download()), to_double(dW_cpu), out_tol, "dW vs CPU");
  check_close(to_double(d_db.download()), to_double(db_cpu), out_tol, "dbias vs CPU");

  // dW and dbias from x one element off 16-byte alignment: the tensor-core dW stages x through registers there, and
  // by cp.async (two steps in flight) from aligned x with C a multiple of 16 bytes: the same sums in the same order,
  // so the same bits.
  if (sizeof(T) <= 4 && pb.C % long(16 / sizeof(T)) == 0) {
    std::vector<T> shifted(pb.x_size() + 1);
    const std::vector<T> x_lay = to_layout(x, pb.T, pb.B, pb.C, s.lay);
    std::copy(x_lay.begin(), x_lay.end(), shifted.begin() + 1);
    dbuf<T> d_xs(shifted), d_dx2(to_layout(dx0, pb.T, pb.B, pb.C, s.lay)), d_dW2(static_cast<size_t>(P * pb.C)),
        d_db2(static_cast<size_t>(P));
    tcu::offsets_backward<T>(ws.p, bytes, c.shape(), c.window(), d_xs.p + 1, d_W.p, d_pre2.p, d_do.p, d, d_dx2.p,
                             d_dW2.p, d_db2.p, len.d(), nullptr);
    CHECK(same_bits(d_dW2.download(), d_dW.download()));
    CHECK(same_bits(d_db2.download(), d_db.download()));
  }
}

template <class T>
void offsets_gemm_sweep() {
  using talkconv::layout;
  const gemm_shape shapes[] = {
      // Tiled projection (>= 32 tiles for every dtype), last row tile partial, P = 6 (not a multiple of 8).
      {4133, 2, 72, 3, false, layout::tbc, {4133, 1000}, true},
      // C = 84: 16-bit rows not 16-byte multiples (element loads); P = 12; a zero length; btc.
      {2100, 4, 84, 12, true, layout::btc, {2100, 0, 17, 1999}, false},
      // Odd C (no pair loads), P = 2.
      {1025, 9, 37, 1, false, layout::btc, {}, true},
      // P = 40: two offset tiles in the projection and dW, the wide offset path.
      {4100, 2, 80, 20, false, layout::tbc, {3000, 4100}, false},
      // Full tiles (what the benchmark shape runs: every row and offset inside, C % 64 == 0; 16-bit x takes the
      // cp.async ring there): 33 row tiles, the last partial. C = 64: two k tiles of 32, fewer than the ring's
      // stages; P = 32, one whole offset tile; ragged lengths and dropout.
      {2100, 2, 64, 16, false, layout::tbc, {2100, 1500}, true},
      // C = 192: six k tiles (the ring wraps, 4 stages on sm_90, 3 before); causal P = 16 (BN = 16); btc.
      {1030, 4, 192, 16, true, layout::btc, {1030, 700, 1, 1029}, false},
      // A decoder-like token batch (the dot-product form): C = 1024, P = 16.
      {1, 5, 1024, 16, true, layout::tbc, {}, false},
      // The dot-product form with odd C and ragged lengths.
      {3, 2, 45, 5, false, layout::btc, {2, 3}, true},
  };
  std::uint64_t seed = 880;
  for (const gemm_shape& s : shapes) offsets_gemm_case<T>(s, seed += 10);
}
