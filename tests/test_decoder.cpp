// Incremental decoding: decoder::step gives row t of the full causal forward, token by token; over a
// long run its periodic re-base keeps the error window-sized.
#include "util.hpp"

using namespace tt;

namespace {

struct decode_result {
  double max_err_vs_forward = 0.0;  // |step - layer forward|
  double max_err_vs_ref = 0.0;      // |step - float64 reference|
  double scale = 0.0;               // window scale: mean |x|
};

// Decodes pb.T tokens of pb.B sequences (tbc order: token t of every sequence is contiguous, as step
// wants it) and compares each with the full causal forward of the layer and with the reference.
template <class T>
decode_result decode_and_compare(const ref::problem& pb, std::mt19937_64& rng, double x_mean) {
  REQUIRE(pb.causal);
  const vec x = round_through<T>(normal_vec(rng, pb.x_size(), x_mean, 1.0));
  const vec W = round_through<T>(normal_vec(rng, static_cast<size_t>(pb.P() * pb.C), 0.0, 1.5 / std::sqrt(double(pb.C))));
  const vec bias = round_through<T>(normal_vec(rng, static_cast<size_t>(pb.P())));
  const vec want = ref::layer_forward(pb, x, W, bias, ref::dropout{});
  const talkconv::talk_conv<T> conv(talkconv::talk_config{pb.C, pb.H, pb.L, 0, true});
  const auto xs = to_store_vec<T>(x), Ws = to_store_vec<T>(W), bs = to_store_vec<T>(bias);
  std::vector<T> y_full(xs.size());
  talkconv::forward_args<T> fa;
  fa.shape = shape_of(pb, layout::tbc), fa.x = xs.data(), fa.weight = Ws.data(), fa.bias = bs.data(), fa.y = y_full.data();
  conv.forward(fa);

  auto dec = conv.make_decoder(pb.B);
  CHECK(dec.state_bytes_per_sequence() == (pb.L + 2) * pb.C * static_cast<long>(sizeof(talkconv::acc_t<T>)));
  std::vector<T> y_t(static_cast<size_t>(pb.B * pb.C));
  const vec full = to_dbl_vec(y_full);
  vec stepped(pb.x_size());
  for (long t = 0; t < pb.T; ++t) {
    REQUIRE(dec.position() == t);
    const size_t off = static_cast<size_t>(t * pb.B * pb.C);
    dec.step(xs.data() + off, Ws.data(), bs.data(), y_t.data());
    for (size_t i = 0; i < y_t.size(); ++i) stepped[off + i] = to_dbl<T>(y_t[i]);
  }
  decode_result r;
  r.max_err_vs_forward = compare(stepped, full).max_err;
  r.max_err_vs_ref = compare(stepped, want).max_err;
  r.scale = mean_abs(x);

  // reset() starts over: the same tokens give the same bits.
  dec.reset();
  CHECK(dec.position() == 0);
  bool same = true;
  for (long t = 0; t < std::min(pb.T, pb.L + 7); ++t) {
    const size_t off = static_cast<size_t>(t * pb.B * pb.C);
    dec.step(xs.data() + off, Ws.data(), bs.data(), y_t.data());
    for (size_t i = 0; i < y_t.size(); ++i) same = same && to_dbl<T>(y_t[i]) == stepped[off + i];
  }
  CHECK(same);
  return r;
}

}  // namespace

TEST_SUITE("decoder") {

TEST_CASE_TEMPLATE("decoder: step equals the full causal forward token by token", T, float, double, Eigen::half, user_float) {
  const std::uint64_t seed = 6006;
  std::mt19937_64 rng(seed);
  std::vector<ref::problem> problems;
  for (const auto& pb : corner_problems(true))
    if (pb.lengths.empty()) problems.push_back(pb);  // a decoder has no lengths
  shape_opts so;
  so.causal = true, so.T_max = 60, so.window_max = 12;
  for (int i = 0; i < draws(12); ++i) {
    auto pb = random_problem(rng, so);
    pb.lengths.clear();
    problems.push_back(pb);
  }
  for (const auto& pb : problems) {
    INFO(pb.str(), " dtype=", dtype_name<T>(), " seed=", seed);
    const decode_result r = decode_and_compare<T>(pb, rng, 0.0);
    INFO("max |step - forward| = ", r.max_err_vs_forward, ", max |step - reference| = ", r.max_err_vs_ref);
    CHECK(r.max_err_vs_forward <= tol<T>() * r.scale);
    CHECK(r.max_err_vs_ref <= tol<T>() * r.scale);
  }
}

TEST_CASE_TEMPLATE("decoder: 5000 steps with a small window stay window-accurate (re-base)", T, float, double) {
  // L = 3: the ring of L + 2 = 5 prefix sums is re-based every 5 steps, about 1000 times. x ~ N(1, 1), so
  // sums that were never re-based would grow to ~1250 and lose ~1e-4 in float.
  std::mt19937_64 rng(7007);
  ref::problem pb;
  pb.T = 5000, pb.B = 2, pb.C = 8, pb.H = 2, pb.L = 3, pb.M = 0, pb.causal = true;
  INFO(pb.str(), " dtype=", dtype_name<T>());
  const decode_result r = decode_and_compare<T>(pb, rng, 1.0);
  MESSAGE(dtype_name<T>(), " decoder, 5000 steps, L = 3: max |step - reference| = ", r.max_err_vs_ref,
          ", max |step - layer forward| = ", r.max_err_vs_forward, " (window scale mean|x| = ", r.scale, ")");
  // The reference forms a_l = t - o_l L as one double, so its edge weights carry up to ulp(t) / 2 of
  // rounding (4.5e-13 at t = 5000): above double's 1e-12 bar at this length, so the bar against the
  // reference adds that term (SPEC's direct form, taken literally, is what loses it; the library splits
  // the shift from t). Against the library's own forward the plain bar holds.
  const double ref_own = 2.0 * std::numeric_limits<double>::epsilon() * static_cast<double>(pb.T) * 4.0 * r.scale;
  CHECK(r.max_err_vs_ref <= tol<T>() * r.scale + ref_own);
  CHECK(r.max_err_vs_forward <= tol<T>() * r.scale);
}

TEST_CASE("decoder: needs a causal layer") {
  const talkconv::talk_conv<float> conv(talkconv::talk_config{4, 2, 2, 1, false});
  try {
    (void)conv.make_decoder(1);
    FAIL("make_decoder on a bidirectional layer did not throw");
  } catch (const talkconv::error& e) {
    CHECK(e.code() == talkconv::status::invalid_window);
  }
}

}  // TEST_SUITE

TEST_SUITE("decoder") {

// Beam search: after reorder(order), sequence b continues as sequence order[b] did. A decoder that is
// reordered mid-way and then fed the permuted tokens gives, bitwise, the permuted outputs of one that
// never was.
TEST_CASE_TEMPLATE("decoder: reorder continues each sequence from the state it names", T, float, Eigen::bfloat16) {
  const long B = 4, C = 12, H = 3, L = 5, T_total = 40, t_switch = 17;
  std::mt19937_64 rng(4242);
  const vec x = normal_vec(rng, static_cast<size_t>(T_total * B * C), 1.0, 1.0);
  const vec W = normal_vec(rng, static_cast<size_t>(H * C), 0.0, 0.3);
  const vec bias = normal_vec(rng, static_cast<size_t>(H));
  const auto xs = to_store_vec<T>(x), Ws = to_store_vec<T>(W), bs = to_store_vec<T>(bias);
  const talkconv::talk_conv<T> conv(talkconv::talk_config{C, H, L, 0, true});
  auto plain = conv.make_decoder(B), beam = conv.make_decoder(B);
  const talkconv::index_t order[B] = {2, 2, 0, 3};
  std::vector<T> y_plain(static_cast<size_t>(B * C)), y_beam(y_plain.size()), x_perm(y_plain.size());
  bool same = true;
  for (long t = 0; t < T_total; ++t) {
    const T* xt = xs.data() + t * B * C;
    plain.step(xt, Ws.data(), bs.data(), y_plain.data());
    if (t == t_switch) beam.reorder(order);
    for (long b = 0; b < B; ++b)
      for (long c = 0; c < C; ++c) x_perm[static_cast<size_t>(b * C + c)] = xt[(t < t_switch ? b : order[b]) * C + c];
    beam.step(x_perm.data(), Ws.data(), bs.data(), y_beam.data());
    for (long b = 0; b < B; ++b)
      for (long c = 0; c < C; ++c) {
        const long src = t < t_switch ? b : order[b];
        same = same && to_dbl<T>(y_beam[static_cast<size_t>(b * C + c)]) == to_dbl<T>(y_plain[static_cast<size_t>(src * C + c)]);
      }
  }
  CHECK(same);

  const talkconv::index_t bad[B] = {0, 1, 4, 2};
  try {
    beam.reorder(bad);
    FAIL("reorder accepted new_order[2] = 4 with B = 4");
  } catch (const talkconv::error& e) {
    CHECK(e.code() == talkconv::status::invalid_shape);
    CHECK(e.argument() == "new_order[2]");
  }
}

}  // TEST_SUITE
