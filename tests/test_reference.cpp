// The reference checked against itself: closed forms, a hand example, SPEC's prefix-sum form, and its
// analytic gradients against finite differences of its own forward.
#include "util.hpp"

using namespace tt;

TEST_SUITE("reference") {

TEST_CASE("reference: zero offsets give x / K, unit offsets the clipped full window") {
  for (bool causal : {false, true}) {
    ref::problem pb;
    pb.T = 11, pb.B = 2, pb.C = 3, pb.H = 1, pb.L = 3, pb.M = causal ? 0 : 2, pb.causal = causal;
    pb.lengths = {11, 7};
    std::mt19937_64 rng(1);
    const vec x = normal_vec(rng, pb.x_size());
    const double K = static_cast<double>(pb.K());
    const vec y0 = ref::window_forward(pb, x, vec(pb.o_size(), 0.0));
    const vec y1 = ref::window_forward(pb, x, vec(pb.o_size(), 1.0));
    for (long b = 0; b < pb.B; ++b)
      for (long t = 0; t < pb.T; ++t)
        for (long c = 0; c < pb.C; ++c) {
          CAPTURE(causal); CAPTURE(b); CAPTURE(t); CAPTURE(c);
          const long n = pb.n(b);
          double full = 0.0;
          for (long tau = std::max(0L, t - pb.L); tau <= std::min(n - 1, t + pb.M); ++tau) full += x[pb.xi(tau, b, c)];
          CHECK(y0[pb.xi(t, b, c)] == doctest::Approx(t < n ? x[pb.xi(t, b, c)] / K : 0.0).epsilon(1e-15));
          CHECK(y1[pb.xi(t, b, c)] == doctest::Approx(t < n ? full / K : 0.0).epsilon(1e-14));
        }
  }
}

TEST_CASE("reference: a hand-computed window with both edges fractional") {
  // x = 1, 2, 4, 8, 16; L = M = 2 (K = 5); t = 2, o_l = 0.25 (a_l = 1.5), o_r = 0.75 (a_r = 3.5):
  // sum_{2..3} x = 12, + 0.5 x[4] = 8, + 0.5 x[1] = 1  ->  21 / 5.
  ref::problem pb;
  pb.T = 5, pb.B = 1, pb.C = 1, pb.H = 1, pb.L = 2, pb.M = 2;
  const vec x = {1, 2, 4, 8, 16};
  vec o(pb.o_size(), 0.0);
  o[pb.oi(2, 0, 0)] = 0.25;
  o[pb.oi(2, 0, 1)] = 0.75;
  const vec y = ref::window_forward(pb, x, o);
  CHECK(y[2] == doctest::Approx(21.0 / 5.0).epsilon(1e-15));
  // Gradients: d y / d o_l = L x[floor a_l] / K = 2 * 2 / 5, d y / d o_r = M x[ceil a_r] / K = 2 * 16 / 5.
  vec dy(pb.x_size(), 0.0), dx, d_o;
  dy[2] = 1.0;
  ref::window_backward(pb, x, o, dy, dx, d_o);
  CHECK(d_o[pb.oi(2, 0, 0)] == doctest::Approx(4.0 / 5.0).epsilon(1e-15));
  CHECK(d_o[pb.oi(2, 0, 1)] == doctest::Approx(32.0 / 5.0).epsilon(1e-15));
  const vec want_dx = {0, 0.5 / 5, 1.0 / 5, 1.0 / 5, 0.5 / 5};
  for (size_t i = 0; i < 5; ++i) CHECK(dx[i] == doctest::Approx(want_dx[i]).epsilon(1e-15));
}

// SPEC's second form, written here from its text: S[t] = (1/K) sum_{tau<=t} x, S[-1] = 0,
// I(a) = (1 - frac a) S[floor a] + frac a S[ceil a], y = I(a_r) - I(a_l - 1).
static vec prefix_form(const ref::problem& pb, const vec& x, const vec& o) {
  vec y(pb.x_size(), 0.0);
  const double K = static_cast<double>(pb.K());
  for (long b = 0; b < pb.B; ++b)
    for (long c = 0; c < pb.C; ++c) {
      std::vector<double> S(static_cast<size_t>(pb.T) + 1, 0.0);  // S[i + 1] holds S[i]
      for (long t = 0; t < pb.T; ++t) S[static_cast<size_t>(t) + 1] = S[static_cast<size_t>(t)] + x[pb.xi(t, b, c)] / K;
      auto Sat = [&](double i) { return S[static_cast<size_t>(static_cast<long>(i) + 1)]; };
      auto I = [&](double a) {
        const double f = a - std::floor(a);
        return (1 - f) * Sat(std::floor(a)) + f * Sat(std::ceil(a));
      };
      for (long t = 0; t < pb.n(b); ++t) {
        const ref::bounds bd = ref::window_bounds(pb, t, b, o, c / pb.R());
        y[pb.xi(t, b, c)] = I(bd.ar) - I(bd.al - 1.0);
      }
    }
  return y;
}

TEST_CASE("reference: direct form equals SPEC's prefix-sum form") {
  std::mt19937_64 rng(7);
  for (int draw = 0; draw < 50; ++draw) {
    shape_opts so;
    so.causal = draw % 2 == 1;
    const ref::problem pb = random_problem(rng, so);
    INFO(pb.str());
    const vec x = normal_vec(rng, pb.x_size());
    const vec o = uniform_vec(rng, pb.o_size(), 0.0, 2.0);
    TT_CHECK_CLOSE("y", ref::window_forward(pb, x, o), prefix_form(pb, x, o), 1e-12, 1.0 + max_abs(x));
  }
}

// Outside SPEC's contract: a negative offset can put a_l above a_r, where the direct sum is not
// defined. The README promises the prefix-sum form there (a signed window); this holds the CPU path to it.
TEST_CASE_TEMPLATE("reference: window_forward with negative offsets returns SPEC's prefix-sum form", T, double, float) {
  std::mt19937_64 rng(17);
  for (int draw = 0; draw < draws(60); ++draw) {
    shape_opts so;
    so.causal = draw % 2 == 1;
    const ref::problem pb = random_problem(rng, so);
    for (layout lay : {layout::tbc, layout::btc}) {
      INFO(pb.str(), " layout=", layout_name(lay), " dtype=", dtype_name<T>());
      const vec x = round_through<T>(normal_vec(rng, pb.x_size()));
      const vec o = round_through<T>(uniform_vec(rng, pb.o_size(), -1.5, 1.5));
      const auto xs = to_layout<T>(x, lay, pb.T, pb.B, pb.C);
      const auto os = to_layout<T>(o, lay, pb.T, pb.B, pb.P());
      std::vector<T> y(xs.size(), T(-777));
      const auto len = lengths_of(pb);
      talkconv::cpu::window_forward<T>(shape_of(pb, lay), window_of(pb), xs.data(), os.data(), y.data(),
                                       lengths_ptr(len));
      TT_CHECK_CLOSE("y", from_layout(y.data(), lay, pb.T, pb.B, pb.C), prefix_form(pb, x, o), tol<T>(),
                     1.0 + max_abs(x));
    }
  }
}

TEST_CASE("reference: analytic gradients equal finite differences of the reference forward") {
  std::mt19937_64 rng(11);
  for (int draw = 0; draw < 12; ++draw) {
    shape_opts so;
    so.T_max = 10, so.B_max = 2, so.C_max = 6, so.window_max = 4;
    so.causal = draw % 2 == 1;
    const ref::problem pb = random_problem(rng, so);
    ref::dropout d;
    d.active = draw % 3 != 0, d.p = draw % 3 == 1 ? 0.1f : 0.5f, d.seed = 99 + static_cast<unsigned>(draw);
    vec x = normal_vec(rng, pb.x_size()), W, bias = normal_vec(rng, static_cast<size_t>(pb.P()));
    vec o_pre, o;
    for (int tries = 0;; ++tries) {  // draw W until every bound is away from the kinks
      REQUIRE(tries < 100);
      W = normal_vec(rng, static_cast<size_t>(pb.P() * pb.C), 0.0, 1.0);
      ref::offsets(pb, x, W, bias, d, o_pre, o);
      if (ref::kink_distance(pb, o) > 1e-3) break;
    }
    INFO(pb.str(), " dropout=", d.active, " p=", d.p);
    const vec dy = normal_vec(rng, pb.x_size());
    vec dx, dW, db;
    ref::layer_backward(pb, x, W, bias, d, dy, dx, dW, db);
    auto loss = [&] { return ref::dot(dy, ref::layer_forward(pb, x, W, bias, d)); };
    std::vector<size_t> all_x(pb.x_size()), all_w(W.size()), all_b(bias.size());
    for (size_t i = 0; i < all_x.size(); ++i) all_x[i] = i;
    for (size_t i = 0; i < all_w.size(); ++i) all_w[i] = i;
    for (size_t i = 0; i < all_b.size(); ++i) all_b[i] = i;
    TT_CHECK_CLOSE("dx", ref::finite_diff(x, all_x, 1e-6, loss), dx, 1e-7, 1.0 + max_abs(dx));
    TT_CHECK_CLOSE("dW", ref::finite_diff(W, all_w, 1e-6, loss), dW, 1e-7, 1.0 + max_abs(dW));
    TT_CHECK_CLOSE("dbias", ref::finite_diff(bias, all_b, 1e-6, loss), db, 1e-7, 1.0 + max_abs(db));
  }
}

}  // TEST_SUITE
