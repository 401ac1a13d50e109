// Window building-block cases shared by the per-dtype CUDA test files.
#pragma once

#include "gpu_util.cuh"

namespace {

using talkconv::layout;

// Offsets whose bound t - o L (or t + o M) lies within 1e-3 of an integer are moved 2e-3 away from it.
// The slope dy/do jumps at an integer bound (SPEC: zero there, L x[floor a_l] / K just beside it), and the
// kernels form o * L in the accumulator type: in float32 a product such as 0.7925 * 1200 = 951.0000229
// (float64) rounds onto 951 exactly, so CPU and GPU rightly return 0 where the float64 reference, which
// sees a fractional bound, returns L x / K (the "halo" failure of GPU-PROFILE.md: T=3000 L=1200 seed=99,
// d_offsets[4386] got 0, want 4.79759). The gap exceeds the accumulator's rounding of o * L for the
// windows tested here (float: 6e-8 * 7200 = 4e-4); the comparison is about the kernels, not a kink's side.
template <class A>
void keep_bounds_off_integers(const ref::problem& pb, std::vector<A>& o) {
  constexpr double gap = 1e-3;
  for (long t = 0; t < pb.T; ++t)
    for (long b = 0; b < pb.B; ++b)
      for (long j = 0; j < pb.P(); ++j) {
        const double scale = static_cast<double>(j < pb.H ? pb.L : pb.M);
        A& v = o[pb.oi(t, b, j)];
        const double q = static_cast<double>(v) * scale;
        const double d = q - std::round(q);
        if (scale == 0.0 || static_cast<double>(v) == 0.0 || std::fabs(d) >= gap) continue;
        const double moved = std::round(q) + (d >= 0.0 || std::round(q) < 1.0 ? 2.0 * gap : -2.0 * gap);
        v = static_cast<A>(moved / scale);
      }
}

// offset_hi: offsets are drawn from [0, offset_hi]; hint: the max_offset the halo is sized for (tokens
// reaching further take the direct path).
template <class T>
void window_case(const test_case& c, double offset_hi, float hint = 1.0f) {
  using A = acc_t<T>;
  INFO(c.str(), " dtype=", tol<T>::name, " offsets in [0, ", offset_hi, "], halo sized for ", hint);
  const ref::problem& pb = c.pb;
  const long P = pb.P();
  const std::vector<T> x = to_type<T>(random_vec(pb.x_size(), c.seed + 1, 1.0, 1.0));
  std::vector<A> o = to_type<A>(random_uniform(pb.o_size(), c.seed + 2, 0.0, offset_hi));
  keep_bounds_off_integers(pb, o);
  const std::vector<T> dy = to_type<T>(random_vec(pb.x_size(), c.seed + 3, 0.0, 1.0));
  const ref::vec xd = to_double(x), od = to_double(o), dyd = to_double(dy);
  lengths_on_device len(c);

  // Device, in the layout under test.
  dbuf<T> d_x(to_layout(x, pb.T, pb.B, pb.C, c.lay)), d_y(pb.x_size()), d_dy(to_layout(dy, pb.T, pb.B, pb.C, c.lay)),
      d_dx(pb.x_size());
  dbuf<A> d_o(to_layout(o, pb.T, pb.B, P, c.lay)), d_do(pb.o_size());
  cudaStream_t s = nullptr;
  tcu::window_forward<T>(c.shape(), c.window(), d_x.p, d_o.p, d_y.p, len.d(), s, hint);
  std::size_t bytes = 0;
  tcu::window_backward<T>(nullptr, bytes, c.shape(), c.window(), d_x.p, d_o.p, d_dy.p, d_dx.p, d_do.p, len.d(), s,
                          hint);
  dbuf<char> ws(bytes);
  tcu::window_backward<T>(ws.p, bytes, c.shape(), c.window(), d_x.p, d_o.p, d_dy.p, d_dx.p, d_do.p, len.d(), s, hint);
  const std::vector<T> y_gpu = from_layout(d_y.download(), pb.T, pb.B, pb.C, c.lay);
  const std::vector<T> dx_gpu = from_layout(d_dx.download(), pb.T, pb.B, pb.C, c.lay);
  const std::vector<A> do_gpu = from_layout(d_do.download(), pb.T, pb.B, P, c.lay);

  // CPU path (canonical layout) and the float64 reference.
  std::vector<T> y_cpu(pb.x_size()), dx_cpu(pb.x_size());
  std::vector<A> do_cpu(pb.o_size());
  cpu_side::window_forward<T>(c.canonical(), c.window(), x.data(), o.data(), y_cpu.data(), len.h());
  cpu_side::window_backward<T>(c.canonical(), c.window(), x.data(), o.data(), dy.data(), dx_cpu.data(), do_cpu.data(),
                               len.h());
  const ref::vec y_ref = ref::window_forward(pb, xd, od);
  ref::vec dx_ref, do_ref;
  ref::window_backward(pb, xd, od, dyd, dx_ref, do_ref);

  const double rel = tol<T>::value;
  check_close(to_double(y_gpu), to_double(y_cpu), rel, "y vs CPU");
  check_close(to_double(y_gpu), y_ref, rel, "y vs reference");
  check_close(to_double(dx_gpu), to_double(dx_cpu), rel, "dx vs CPU");
  check_close(to_double(dx_gpu), dx_ref, rel, "dx vs reference");
  check_close(to_double(do_gpu), to_double(do_cpu), 4 * rel, "d_offsets vs CPU");
  check_close(to_double(do_gpu), do_ref, 4 * rel, "d_offsets vs reference");
}

// Windows longer than shared memory can hold on long ragged sequences, btc, heads wider than a block
// (R > 64: split across blocks, combined in order). Without 16-byte vectors (R = 70) most tokens take the
// direct path from global memory; with them the forward runs in segments.
// R = 70 leaves a 6-channel split (no 16-byte vectors); R = 80 and 160 split into vector-width blocks.
template <class T>
void window_long_halo_cases() {
  struct shape {
    std::uint64_t seed;
    bool causal;
    long steps, B, C, H, L, M;  // steps: T (a template parameter here)
    std::vector<long> lengths;
  };
  const shape shapes[] = {
      {99, false, 3000, 1, 70, 1, 1200, 900, {2900}},
      {98, false, 2500, 2, 160, 2, 900, 1100, {2500, 1777}},
      {97, true, 2600, 2, 160, 1, 1500, 0, {13, 2411}},
  };
  for (const shape& s : shapes) {
    test_case c = random_case(s.seed, s.causal, layout::btc, 10);
    c.pb.T = s.steps;
    c.pb.B = s.B;
    c.pb.C = s.C;
    c.pb.H = s.H;
    c.pb.L = s.L;
    c.pb.M = s.M;
    c.pb.lengths = s.lengths;
    window_case<T>(c, 1.0);
  }
  // Vector-width heads with windows no block can stage: the forward walks each tile's span in segments
  // (window_forward_segments_kernel); offsets up to 1.5 against a span sized for 1 put some windows past
  // the span (the direct path) beside the segmented ones.
  window_case<T>(shaped_case(96, 1800, 2, 128, 2, 700, 500, false, layout::tbc, {1800, 1234}), 1.5, 1.0f);
  // Narrow heads past the banded limits (R = 16: 4 heads per block; 16-bit x stages one dy row per queued
  // record): the input gradient's rounds, ring and batches, its carry chained over blocks of 4 tiles and a
  // partial last block (9 tiles), a ragged sequence.
  window_case<T>(shaped_case(95, 1100, 2, 64, 4, 200, 150, false, layout::btc, {1100, 901}), 1.0);
}

// The banded dx (16-bit x, R % 16 == 0, K <= 255): offsets past the planned max_offset (several segments per
// tile), K = 255 (the widest band), heads split over blocks (R = 80: 64 + 16 channels), several heads per block
// (R = 16, 32, 48), partial channel blocks, K = 1, causal, ragged lengths, both layouts.
template <class T>
void window_band_cases() {
  window_case<T>(shaped_case(201, 700, 1, 64, 1, 40, 30, false, layout::tbc, {650}), 4.0, 1.0f);
  window_case<T>(shaped_case(202, 700, 1, 64, 1, 40, 30, false, layout::btc, {700}), 4.0, 4.0f);
  window_case<T>(shaped_case(203, 500, 2, 96, 2, 127, 127, false, layout::btc, {500, 333}), 1.0);
  window_case<T>(shaped_case(204, 400, 2, 160, 2, 20, 0, true, layout::tbc, {400, 17}), 1.0);
  window_case<T>(shaped_case(205, 300, 3, 128, 4, 3, 5, false, layout::btc, {}), 1.0);
  window_case<T>(shaped_case(206, 260, 1, 128, 8, 0, 0, false, layout::tbc, {}), 1.0);
  window_case<T>(shaped_case(207, 333, 2, 1024, 16, 16, 16, false, layout::tbc, {333, 200}), 1.0);
  // A partial last channel block holding several heads (96 = 64 + 32 channels: 4 + 2 heads of 16, or
  // 2 + 1 of 32) and one holding a single narrow head (80 = 64 + 16, H = 5).
  window_case<T>(shaped_case(208, 300, 2, 96, 6, 9, 7, false, layout::btc, {300, 141}), 1.0);
  window_case<T>(shaped_case(209, 300, 2, 96, 3, 12, 0, true, layout::tbc, {}), 1.0);
  window_case<T>(shaped_case(210, 257, 1, 80, 5, 30, 31, false, layout::tbc, {250}), 1.0);
}

// Offsets on integer bounds (0 and 1) and one NaN offset (head 0's left offset of token (50, 1)): y agrees
// with the CPU and is NaN in that token's head only (SPEC, Numerics). H heads over C channels; 16-bit x with
// heads of 16 channels takes the banded kernels.
template <class T>
void window_nan_offset_case(std::uint64_t seed, long H, long C) {
  test_case c = random_case(seed, false, layout::tbc, 100);
  c.pb.T = 100;
  c.pb.B = 2;
  c.pb.H = H;
  c.pb.C = C;
  c.pb.L = 5;
  c.pb.M = 4;
  c.pb.lengths.clear();
  using A = acc_t<T>;
  const ref::problem& pb = c.pb;
  INFO(c.str(), " dtype=", tol<T>::name);
  std::vector<A> o = to_type<A>(random_uniform(pb.o_size(), 11, 0.0, 1.0));
  for (size_t i = 0; i < o.size(); i += 3) o[i] = (i % 2) ? A(1) : A(0);
  o[pb.oi(50, 1, 0)] = std::numeric_limits<A>::quiet_NaN();
  const std::vector<T> x = to_type<T>(random_vec(pb.x_size(), 12, 1.0, 1.0));
  dbuf<T> d_x(x), d_y(pb.x_size());
  dbuf<A> d_o(o);
  tcu::window_forward<T>(c.shape(), c.window(), d_x.p, d_o.p, d_y.p, nullptr, nullptr);
  std::vector<T> y_cpu(pb.x_size());
  cpu_side::window_forward<T>(c.canonical(), c.window(), x.data(), o.data(), y_cpu.data(), nullptr);
  const std::vector<double> y_gpu = to_double(d_y.download());
  check_close(y_gpu, to_double(y_cpu), tol<T>::value, "y vs CPU");
  const long R = C / H;  // head 0: channels [0, R)
  for (long t = 0; t < pb.T; ++t)
    for (long b = 0; b < pb.B; ++b)
      for (long ch = 0; ch < pb.C; ++ch) CHECK(std::isnan(y_gpu[pb.xi(t, b, ch)]) == (t == 50 && b == 1 && ch < R));
}

// dx by the sorted-events path (window_backward's where the banded kernels do not take the problem: its workspace
// given) and by the event kernel (the same call without that workspace: misaligned tensors take it), on one problem,
// without and with the layer's W^T dz (fused into either kernel where its vectors allow: `fused`): each against the
// CPU and the float64 reference, each bitwise the same when run twice (NaN-filled dx first, so a row left unwritten
// cannot pass).
template <class T>
void dx_paths_case(const test_case& c, double offset_hi, bool fused) {
  using A = acc_t<T>;
  namespace td = tcu::detail;
  INFO(c.str(), " dtype=", tol<T>::name, " offsets in [0, ", offset_hi, "]");
  const ref::problem& pb = c.pb;
  const talkconv::window_params w = c.window();
  REQUIRE(td::sorted_dx_applies<T>(c.shape(), w));
  const td::sorted_dx_workspace sw = td::plan_sorted_dx_workspace<T>(c.shape(), w);
  REQUIRE(sw.on);
  const long P = pb.P();
  const std::vector<T> x = to_type<T>(random_vec(pb.x_size(), c.seed + 1, 1.0, 1.0));
  std::vector<A> o = to_type<A>(random_uniform(pb.o_size(), c.seed + 2, 0.0, offset_hi));
  const std::vector<T> dy = to_type<T>(random_vec(pb.x_size(), c.seed + 3, 0.0, 1.0));
  const std::vector<T> W = to_type<T>(random_vec(size_t(P * pb.C), c.seed + 4, 0.0, 0.5));
  std::vector<A> dz = to_type<A>(random_vec(pb.o_size(), c.seed + 5, 0.0, 1.0));
  for (long b = 0; b < pb.B; ++b)  // zero past the lengths, as the layer's dz
    for (long t = pb.n(b); t < pb.T; ++t)
      for (long j = 0; j < P; ++j) dz[pb.oi(t, b, j)] = A(0);
  lengths_on_device len(c);
  dbuf<T> d_x(to_layout(x, pb.T, pb.B, pb.C, c.lay)), d_dy(to_layout(dy, pb.T, pb.B, pb.C, c.lay)), d_dx(pb.x_size()),
      d_W(W);
  dbuf<A> d_o(to_layout(o, pb.T, pb.B, P, c.lay)), d_dz(to_layout(dz, pb.T, pb.B, P, c.lay));
  dbuf<char> ws(sw.bytes);
  dbuf<unsigned long long> reach(2);
  td::window_args<T> a = td::make_window_args<T>(c.shape(), w, len.d());
  a.x = d_x.p;
  a.offsets = d_o.p;
  a.dy = d_dy.p;
  a.dx = d_dx.p;
  std::vector<T> dx_cpu(pb.x_size());
  std::vector<A> do_cpu(pb.o_size());
  cpu_side::window_backward<T>(c.canonical(), w, x.data(), o.data(), dy.data(), dx_cpu.data(), do_cpu.data(), len.h());
  ref::vec dx_ref, do_ref;
  ref::window_backward(pb, to_double(x), to_double(o), to_double(dy), dx_ref, do_ref);
  ref::vec dx_ref_dz = dx_ref, dx_cpu_dz = to_double(dx_cpu);  // + W^T dz
  for (long t = 0; t < pb.T; ++t)
    for (long b = 0; b < pb.B; ++b)
      for (long ch = 0; ch < pb.C; ++ch) {
        double s = 0;
        for (long j = 0; j < P; ++j) s += double(W[size_t(j * pb.C + ch)]) * double(dz[pb.oi(t, b, j)]);
        dx_ref_dz[pb.xi(t, b, ch)] += s;
        dx_cpu_dz[pb.xi(t, b, ch)] += s;
      }
  for (const bool with_dz : {false, true})
    for (const bool sorted : {true, false}) {
      const std::string path = std::string(sorted ? "sorted events" : "event kernel") + (with_dz ? ", W^T dz" : "");
      INFO(path);
      std::vector<T> first;
      for (int rep = 0; rep < 2; ++rep) {
        d_dx.fill_bytes(0xff);
        td::window_args<T> b = a;
        b.sort_ws = sorted ? reinterpret_cast<unsigned char*>(ws.p) : nullptr;
        if (with_dz) {
          b.dz = d_dz.p;
          b.weight = d_W.p;
        }
        const bool wtdz = td::launch_window_backward(b, c.shape(), w, 1.0, reach.p, nullptr, [](bool) {});
        CHECK(wtdz == (with_dz && fused));
        CUDA_OK(cudaDeviceSynchronize());
        const std::vector<T> got = d_dx.download();
        if (rep == 0) {
          first = got;
          const ref::vec dx_gpu = to_double(from_layout(got, pb.T, pb.B, pb.C, c.lay));
          check_close(dx_gpu, wtdz ? dx_cpu_dz : to_double(dx_cpu), tol<T>::value, "dx vs CPU");
          check_close(dx_gpu, wtdz ? dx_ref_dz : dx_ref, tol<T>::value, "dx vs reference");
        } else {
          CHECK(std::memcmp(first.data(), got.data(), got.size() * sizeof(T)) == 0);
        }
      }
    }
}

template <class T>
void window_sweep(int cases, long max_T) {
  for (int i = 0; i < cases; ++i)
    for (bool causal : {false, true})
      for (layout lay : {layout::tbc, layout::btc}) {
        const test_case c =
            random_case(1000 * std::uint64_t(i) + (causal ? 7 : 0) + (lay == layout::btc ? 3 : 0), causal, lay, max_T);
        window_case<T>(c, 1.0);
      }
}

}  // namespace
