// The CPU building blocks against the float64 reference: prefix_sum, offsets_forward/backward,
// head_sum, window_forward/backward; every dtype, both layouts, causal and bidirectional.
#include "util.hpp"

using namespace tt;
namespace cpu = talkconv::cpu;

namespace {

// Problems every block comparison runs: the corner cases plus seeded random draws.
std::vector<ref::problem> block_problems(std::mt19937_64& rng, bool causal, int n_random) {
  auto v = corner_problems(causal);
  shape_opts so;
  so.causal = causal;
  for (int i = 0; i < n_random; ++i) v.push_back(random_problem(rng, so));
  // One wide case: a local prefix buffer that splits heads across channel chunks (K = 101).
  ref::problem wide;
  wide.T = 700, wide.B = 1, wide.C = 64, wide.H = 2, wide.L = 50, wide.M = causal ? 0 : 50, wide.causal = causal;
  v.push_back(wide);
  // Several time tiles (the CPU path cuts T = 600 into 256-token tiles here), lengths ending inside
  // the second and third tile and on a boundary, a small window.
  ref::problem tiles;
  tiles.T = 600, tiles.B = 5, tiles.C = 6, tiles.H = 3, tiles.L = 3, tiles.M = causal ? 0 : 2, tiles.causal = causal;
  tiles.lengths = {600, 300, 517, 256, 0};  // 256: a length on a tile boundary
  v.push_back(tiles);
  return v;
}

std::string case_str(const ref::problem& pb, layout lay, const std::string& dtype, std::uint64_t seed) {
  return pb.str() + " layout=" + layout_name(lay) + " dtype=" + dtype + " seed=" + std::to_string(seed);
}

}  // namespace

TEST_SUITE("blocks") {

TEST_CASE_TEMPLATE("blocks: prefix_sum equals the reference (segments 0, 1, 3, T)", T, TT_DTYPES) {
  using A = talkconv::acc_t<T>;
  const std::uint64_t seed = 101;
  std::mt19937_64 rng(seed);
  for (layout lay : {layout::tbc, layout::btc})
    for (const auto& pb : block_problems(rng, false, draws(10))) {
      INFO(case_str(pb, lay, dtype_name<T>(), seed));
      const vec x = round_through<T>(normal_vec(rng, pb.x_size(), 0.5, 1.0));
      const auto xs = to_layout<T>(x, lay, pb.T, pb.B, pb.C);
      for (long seg : {0L, 1L, 3L, pb.T}) {
        CAPTURE(seg);
        std::vector<A> S(x.size(), A(-777));
        const A scale = A(1) / A(pb.K());
        cpu::prefix_sum<T>(shape_of(pb, lay), xs.data(), S.data(), scale, seg);
        const vec want = ref::prefix_sum(pb, x, static_cast<double>(scale), seg);
        TT_CHECK_CLOSE("S", from_layout(S.data(), lay, pb.T, pb.B, pb.C), want, tol<A>(), std::max(1e-6, max_abs(want)));
      }
    }
}

TEST_CASE("blocks: prefix_sum with a double accumulator for float input") {
  std::mt19937_64 rng(5);
  ref::problem pb;
  pb.T = 300, pb.B = 2, pb.C = 5;
  const vec x = round_through<float>(normal_vec(rng, pb.x_size(), 1.0, 1.0));
  const auto xs = to_layout<float>(x, layout::btc, pb.T, pb.B, pb.C);
  std::vector<double> S(x.size());
  cpu::prefix_sum<float, double>(shape_of(pb, layout::btc), xs.data(), S.data(), 0.25, 0);
  const vec want = ref::prefix_sum(pb, x, 0.25, 0);
  TT_CHECK_CLOSE("S", from_layout(S.data(), layout::btc, pb.T, pb.B, pb.C), want, 1e-12, max_abs(want));
}

TEST_CASE_TEMPLATE("blocks: head_sum equals the reference", A, float, double) {
  const std::uint64_t seed = 202;
  std::mt19937_64 rng(seed);
  for (layout lay : {layout::tbc, layout::btc})
    for (const auto& pb : block_problems(rng, false, draws(10))) {
      INFO(case_str(pb, lay, dtype_name<A>(), seed));
      const vec in = round_through<A>(normal_vec(rng, pb.x_size()));
      const auto ins = to_layout<A>(in, lay, pb.T, pb.B, pb.C);
      std::vector<A> out(static_cast<size_t>(pb.T * pb.B * pb.H), A(-777));
      cpu::head_sum<A>(shape_of(pb, lay), window_of(pb), ins.data(), out.data());
      const vec want = ref::head_sum(pb, in);
      TT_CHECK_CLOSE("head sum", from_layout(out.data(), lay, pb.T, pb.B, pb.H), want, tol<A>(),
                     std::max(1.0, static_cast<double>(pb.R())));
    }
}

TEST_CASE_TEMPLATE("blocks: offsets_forward equals the reference (inference and dropout)", T, TT_DTYPES) {
  using A = talkconv::acc_t<T>;
  const std::uint64_t seed = 303;
  std::mt19937_64 rng(seed);
  for (bool causal : {false, true})
    for (layout lay : {layout::tbc, layout::btc})
      for (const auto& pb : block_problems(rng, causal, draws(8)))
        for (float p : {0.0f, 0.1f, 0.5f})
          for (bool with_bias : {true, false}) {
            INFO(case_str(pb, lay, dtype_name<T>(), seed), " p=", p, " bias=", with_bias);
            const vec x = round_through<T>(normal_vec(rng, pb.x_size()));
            const vec W = round_through<T>(normal_vec(rng, static_cast<size_t>(pb.P() * pb.C), 0.0, 1.5 / std::sqrt(double(pb.C))));
            const vec bias = with_bias ? round_through<T>(normal_vec(rng, static_cast<size_t>(pb.P()))) : vec{};
            talkconv::dropout_params dp{p, 1234 + static_cast<std::uint64_t>(pb.T), p > 0.0f};
            ref::dropout rd{dp.active(), p, dp.seed};
            vec want_pre, want;
            ref::offsets(pb, x, W, bias, rd, want_pre, want);
            const auto xs = to_layout<T>(x, lay, pb.T, pb.B, pb.C);
            const auto Ws = to_store_vec<T>(W), bs = to_store_vec<T>(bias);
            const auto len = lengths_of(pb);
            std::vector<A> o(pb.o_size(), A(-777)), o_pre(pb.o_size(), A(-777));
            cpu::offsets_forward<T>(shape_of(pb, lay), window_of(pb), xs.data(), Ws.data(), with_bias ? bs.data() : nullptr,
                                    dp, o.data(), o_pre.data(), lengths_ptr(len));
            TT_CHECK_CLOSE("offsets", from_layout(o.data(), lay, pb.T, pb.B, pb.P()), want, tol<A>(), 1.0);
            TT_CHECK_CLOSE("offsets_pre", from_layout(o_pre.data(), lay, pb.T, pb.B, pb.P()), want_pre, tol<A>(), 1.0);
          }
}

TEST_CASE_TEMPLATE("blocks: offsets_backward equals the reference", T, TT_DTYPES) {
  using A = talkconv::acc_t<T>;
  const std::uint64_t seed = 404;
  std::mt19937_64 rng(seed);
  for (bool causal : {false, true})
    for (layout lay : {layout::tbc, layout::btc})
      for (const auto& pb : block_problems(rng, causal, draws(8)))
        for (float p : {0.0f, 0.5f}) {
          INFO(case_str(pb, lay, dtype_name<T>(), seed), " p=", p);
          const vec x = round_through<T>(normal_vec(rng, pb.x_size()));
          const vec W = round_through<T>(normal_vec(rng, static_cast<size_t>(pb.P() * pb.C)));
          vec o_pre = round_through<A>(uniform_vec(rng, pb.o_size(), 0.0, 1.0));
          const vec d_o = round_through<A>(normal_vec(rng, pb.o_size()));
          for (long b = 0; b < pb.B; ++b)  // o_pre of padded rows is 0, as offsets_forward writes it
            for (long t = pb.n(b); t < pb.T; ++t)
              for (long j = 0; j < pb.P(); ++j) o_pre[pb.oi(t, b, j)] = 0.0;
          const vec dx0 = round_through<T>(normal_vec(rng, pb.x_size()));
          talkconv::dropout_params dp{p, 77, true};
          ref::dropout rd{dp.active(), p, dp.seed};
          vec dx = dx0, dW, db, dW_mag, db_mag;
          ref::offsets_backward(pb, x, W, o_pre, d_o, rd, dx, dW, db, &dW_mag, &db_mag);
          const auto xs = to_layout<T>(x, lay, pb.T, pb.B, pb.C);
          const auto Ws = to_store_vec<T>(W);
          const auto ops = to_layout<A>(o_pre, lay, pb.T, pb.B, pb.P()), dos = to_layout<A>(d_o, lay, pb.T, pb.B, pb.P());
          auto dxs = to_layout<T>(dx0, lay, pb.T, pb.B, pb.C);
          std::vector<T> dWs(W.size(), to_store<T>(-777)), dbs(static_cast<size_t>(pb.P()), to_store<T>(-777));
          const auto len = lengths_of(pb);
          cpu::offsets_backward<T>(shape_of(pb, lay), window_of(pb), xs.data(), Ws.data(), ops.data(), dos.data(), dp,
                                   dxs.data(), dWs.data(), dbs.data(), lengths_ptr(len));
          TT_CHECK_CLOSE("dx (accumulated)", from_layout(dxs.data(), lay, pb.T, pb.B, pb.C), dx, tol<T>(), std::max(1e-6, max_abs(dx)));
          TT_CHECK_CLOSE("dweight", to_dbl_vec(dWs), dW, tol<T>(), sum_scale(dW_mag));
          TT_CHECK_CLOSE("dbias", to_dbl_vec(dbs), db, tol<T>(), sum_scale(db_mag));
          // dx may be null (skip), dbias may be null.
          std::vector<T> dW2(W.size());
          cpu::offsets_backward<T>(shape_of(pb, lay), window_of(pb), xs.data(), Ws.data(), ops.data(), dos.data(), dp,
                                   nullptr, dW2.data(), nullptr, lengths_ptr(len));
          CHECK(bitwise_equal(dW2, dWs));
        }
}

TEST_CASE_TEMPLATE("blocks: window_forward equals the reference (offsets 0, 1, integer bounds, random)", T, TT_DTYPES) {
  using A = talkconv::acc_t<T>;
  const std::uint64_t seed = 505;
  std::mt19937_64 rng(seed);
  for (bool causal : {false, true})
    for (layout lay : {layout::tbc, layout::btc})
      for (const auto& pb : block_problems(rng, causal, draws(20)))
        for (double hi : {1.0, 2.0}) {
          INFO(case_str(pb, lay, dtype_name<T>(), seed), " offsets in [0, ", hi, "]");
          const vec x = round_through<T>(normal_vec(rng, pb.x_size()));
          const vec o = window_offsets<A>(rng, pb, hi);
          const vec want = ref::window_forward(pb, x, o);
          const auto xs = to_layout<T>(x, lay, pb.T, pb.B, pb.C);
          const auto os = to_layout<A>(o, lay, pb.T, pb.B, pb.P());
          std::vector<T> y(x.size(), to_store<T>(-777));  // every element, padding included, must be written
          const auto len = lengths_of(pb);
          cpu::window_forward<T>(shape_of(pb, lay), window_of(pb), xs.data(), os.data(), y.data(), lengths_ptr(len));
          // window scale: mean |x| (what a window averages), or the largest |y| if that is larger.
          TT_CHECK_CLOSE("y", from_layout(y.data(), lay, pb.T, pb.B, pb.C), want, tol<T>(), std::max(mean_abs(x), max_abs(want)));
        }
}

TEST_CASE("blocks: window_forward with every offset exactly 0 gives x / K, exactly 1 the full window") {
  // Both cases have only integer bounds: no fractional edge may leak a neighbour in.
  for (bool causal : {false, true}) {
    ref::problem pb;
    pb.T = 37, pb.B = 2, pb.C = 6, pb.H = 3, pb.L = 4, pb.M = causal ? 0 : 3, pb.causal = causal;
    std::mt19937_64 rng(9);
    const vec x = round_through<double>(normal_vec(rng, pb.x_size()));
    for (double ov : {0.0, 1.0}) {
      CAPTURE(causal); CAPTURE(ov);
      std::vector<double> o(pb.o_size(), ov), y(pb.x_size());
      cpu::window_forward<double>(shape_of(pb, layout::tbc), window_of(pb), x.data(), o.data(), y.data());
      vec want(pb.x_size());
      for (long t = 0; t < pb.T; ++t)
        for (long b = 0; b < pb.B; ++b)
          for (long c = 0; c < pb.C; ++c) {
            double s = 0;
            const long lo = ov == 0.0 ? t : std::max(0L, t - pb.L), hi = ov == 0.0 ? t : std::min(pb.T - 1, t + pb.M);
            for (long tau = lo; tau <= hi; ++tau) s += x[pb.xi(tau, b, c)];
            want[pb.xi(t, b, c)] = s / static_cast<double>(pb.K());
          }
      TT_CHECK_CLOSE("y", vec(y.begin(), y.end()), want, 1e-14, 1.0);
    }
  }
}

TEST_CASE_TEMPLATE("blocks: window_backward equals the reference (dx and d_offsets)", T, TT_DTYPES) {
  using A = talkconv::acc_t<T>;
  const std::uint64_t seed = 606;
  std::mt19937_64 rng(seed);
  for (bool causal : {false, true})
    for (layout lay : {layout::tbc, layout::btc})
      for (const auto& pb : block_problems(rng, causal, draws(20)))
        for (double hi : {1.0, 2.0}) {
          INFO(case_str(pb, lay, dtype_name<T>(), seed), " offsets in [0, ", hi, "]");
          const vec x = round_through<T>(normal_vec(rng, pb.x_size()));
          const vec dy = round_through<T>(normal_vec(rng, pb.x_size()));
          const vec o = window_offsets<A>(rng, pb, hi);
          vec want_dx, want_do;
          ref::window_backward(pb, x, o, dy, want_dx, want_do);
          const auto xs = to_layout<T>(x, lay, pb.T, pb.B, pb.C), dys = to_layout<T>(dy, lay, pb.T, pb.B, pb.C);
          const auto os = to_layout<A>(o, lay, pb.T, pb.B, pb.P());
          std::vector<T> dx(x.size(), to_store<T>(-777));
          std::vector<A> d_o(o.size(), A(-777));
          const auto len = lengths_of(pb);
          cpu::window_backward<T>(shape_of(pb, lay), window_of(pb), xs.data(), os.data(), dys.data(), dx.data(), d_o.data(),
                                  lengths_ptr(len));
          TT_CHECK_CLOSE("dx", from_layout(dx.data(), lay, pb.T, pb.B, pb.C), want_dx, tol<T>(), dx_scale(want_dx, dy));
          TT_CHECK_CLOSE("d_offsets", from_layout(d_o.data(), lay, pb.T, pb.B, pb.P()), want_do, tol<T>(),
                         d_offsets_scale(pb, want_do, x, dy));
          // d_offsets may be null: dx alone, the same bits.
          std::vector<T> dx2(x.size(), to_store<T>(-555));
          cpu::window_backward<T>(shape_of(pb, lay), window_of(pb), xs.data(), os.data(), dys.data(), dx2.data(), nullptr,
                                  lengths_ptr(len));
          CHECK(bitwise_equal(dx2, dx));
        }
}

}  // TEST_SUITE
