// SPEC Numerics bar: float32 forward max abs error <= 1e-5 * (window scale of |x|) at T = 10^6,
// x ~ N(1, 1), against the naive float64 reference at every token.
#include "util.hpp"

using namespace tt;

namespace {

// Window scale of |x|, defined here: for each token t and channel c, the mean of |x| over t's largest
// window [t - L, t + M] (clipped to the sequence); then the mean of that over all (t, c). For
// x ~ N(1, 1) it is about E|x| = 1.17.
vec local_window_scale(const ref::problem& pb, const vec& x) {
  vec s(pb.x_size());
  for (long b = 0; b < pb.B; ++b)
    for (long c = 0; c < pb.C; ++c) {
      double run = 0.0;  // sliding sum of |x| over [t - L, t + M]
      long lo = 0, hi = -1;
      for (long t = 0; t < pb.T; ++t) {
        const long want_lo = std::max(0L, t - pb.L), want_hi = std::min(pb.T - 1, t + pb.M);
        while (hi < want_hi) run += std::fabs(x[pb.xi(++hi, b, c)]);
        while (lo < want_lo) run -= std::fabs(x[pb.xi(lo++, b, c)]);
        s[pb.xi(t, b, c)] = run / static_cast<double>(hi - lo + 1);
      }
    }
  return s;
}

void long_sequence(long reach) {
  ref::problem pb;
  pb.T = 1000000, pb.B = 1, pb.C = 8, pb.H = 2, pb.L = reach, pb.M = reach;
  INFO(pb.str(), " float32, x ~ N(1, 1), offsets ~ U[0, 1]");
  std::mt19937_64 rng(9009 + static_cast<std::uint64_t>(reach));
  const vec x = round_through<float>(normal_vec(rng, pb.x_size(), 1.0, 1.0));
  const vec o = round_through<float>(uniform_vec(rng, pb.o_size(), 0.0, 1.0));
  const auto xs = to_store_vec<float>(x);  // B = 1: tbc and btc are the same memory
  const auto os = to_store_vec<float>(o);
  std::vector<float> y(xs.size(), -777.0f);
  talkconv::cpu::window_forward<float>(shape_of(pb, layout::tbc), window_of(pb), xs.data(), os.data(), y.data());
  const vec want = ref::window_forward(pb, x, o);
  const vec local = local_window_scale(pb, x);
  double max_err = 0.0, max_rel_local = 0.0, scale = 0.0;
  size_t worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::fabs(static_cast<double>(y[i]) - want[i]);
    if (!(e <= max_err)) max_err = e, worst = i;  // NaN-safe: a NaN error becomes the worst
    max_rel_local = std::max(max_rel_local, e / local[i]);
    scale += local[i];
  }
  scale /= static_cast<double>(want.size());
  const double bar = 1e-5 * scale;
  MESSAGE("T = 10^6, L = M = ", reach, ": float32 max abs error = ", max_err, " at token ",
          static_cast<long>(worst) / pb.C, " (window scale ", scale, ", bar ", bar, ", error / bar = ", max_err / bar,
          "; largest error relative to its own token's window mean |x| = ", max_rel_local, ")");
  CHECK(max_err <= bar);
}

}  // namespace

TEST_SUITE("long") {

TEST_CASE("long: float32 window_forward at T = 10^6, L = M = 16, within 1e-5 of the window scale") {
  long_sequence(16);
}

TEST_CASE("long: float32 window_forward at T = 10^6, L = M = 1, within 1e-5 of the window scale") {
  long_sequence(1);
}

}  // TEST_SUITE
