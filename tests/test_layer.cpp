// talk_conv<T, Heads>::forward / backward against the float64 reference: every dtype, both layouts,
// causal and bidirectional, compile-time and run-time heads, inference and training with dropout,
// with and without saved_offsets, with and without bias.
#include "util.hpp"

using namespace tt;

namespace {

struct mode {
  const char* name;
  float p;
  bool training;
};
const mode modes[] = {{"inference", 0.0f, false},
                      {"inference (p=0.5 given, training off)", 0.5f, false},
                      {"training p=0.1", 0.1f, true},
                      {"training p=0.5", 0.5f, true}};

template <class T, int Heads>
void run_layer_case(const ref::problem& pb, layout lay, const mode& md, std::mt19937_64& rng, const std::string& where) {
  using A = talkconv::acc_t<T>;
  const bool with_bias = uniform_int(rng, 0, 3) != 0;
  INFO(where, " ", pb.str(), " layout=", layout_name(lay), " dtype=", dtype_name<T>(), " heads=",
       std::string(Heads == talkconv::dynamic_heads ? "dynamic" : "static"), " mode=", std::string(md.name), " bias=", with_bias);
  talkconv::talk_config cfg;
  cfg.channels = pb.C, cfg.heads = Heads == talkconv::dynamic_heads ? pb.H : 0, cfg.max_left = pb.L,
  cfg.max_right = pb.M, cfg.causal = pb.causal;
  const talkconv::talk_conv<T, Heads> conv(cfg);
  REQUIRE(conv.heads() == pb.H);
  REQUIRE(conv.num_offsets() == pb.P());

  const vec x = round_through<T>(normal_vec(rng, pb.x_size()));
  const vec W = round_through<T>(normal_vec(rng, static_cast<size_t>(pb.P() * pb.C), 0.0, 1.5 / std::sqrt(double(pb.C))));
  const vec bias = with_bias ? round_through<T>(normal_vec(rng, static_cast<size_t>(pb.P()))) : vec{};
  const vec dy = round_through<T>(normal_vec(rng, pb.x_size()));
  const talkconv::dropout_params dp{md.p, 4242 + static_cast<std::uint64_t>(pb.T * 31 + pb.C), md.training};
  const ref::dropout rd{dp.active(), md.p, dp.seed};

  vec want_pre;
  const vec want_y = ref::layer_forward(pb, x, W, bias, rd, &want_pre);
  vec want_dx, want_dW, want_db, dW_mag, db_mag;
  ref::layer_backward(pb, x, W, bias, rd, dy, want_dx, want_dW, want_db, &dW_mag, &db_mag);

  const auto xs = to_layout<T>(x, lay, pb.T, pb.B, pb.C), dys = to_layout<T>(dy, lay, pb.T, pb.B, pb.C);
  const auto Ws = to_store_vec<T>(W), bs = to_store_vec<T>(bias);
  const auto len = lengths_of(pb);

  std::vector<T> y(x.size(), to_store<T>(-777));
  std::vector<A> saved(static_cast<size_t>(conv.saved_size(pb.T, pb.B)), A(-777));
  talkconv::forward_args<T> fa;
  fa.shape = shape_of(pb, lay), fa.x = xs.data(), fa.weight = Ws.data(), fa.bias = with_bias ? bs.data() : nullptr;
  fa.y = y.data(), fa.saved_offsets = saved.data(), fa.lengths = lengths_ptr(len), fa.dropout = dp;
  conv.forward(fa);
  TT_CHECK_CLOSE("y", from_layout(y.data(), lay, pb.T, pb.B, pb.C), want_y, tol<T>(), std::max(mean_abs(x), max_abs(want_y)));
  TT_CHECK_CLOSE("saved_offsets", from_layout(saved.data(), lay, pb.T, pb.B, pb.P()), want_pre, tol<A>(), 1.0);

  // Forward without saved_offsets: the same y, bit for bit.
  std::vector<T> y2(x.size(), to_store<T>(-555));
  fa.y = y2.data(), fa.saved_offsets = nullptr;
  conv.forward(fa);
  CHECK(bitwise_equal(y, y2));

  for (bool use_saved : {true, false})
    for (bool want_dbias : {true, false}) {
      CAPTURE(use_saved);
      CAPTURE(want_dbias);
      std::vector<T> dx(x.size(), to_store<T>(-777)), dW(W.size(), to_store<T>(-777)), db(static_cast<size_t>(pb.P()), to_store<T>(-777));
      talkconv::backward_args<T> ba;
      ba.shape = fa.shape, ba.x = xs.data(), ba.weight = Ws.data(), ba.bias = fa.bias, ba.dy = dys.data();
      ba.saved_offsets = use_saved ? saved.data() : nullptr;
      ba.dx = dx.data(), ba.dweight = dW.data(), ba.dbias = want_dbias ? db.data() : nullptr;
      ba.lengths = fa.lengths, ba.dropout = dp;
      conv.backward(ba);
      TT_CHECK_CLOSE("dx", from_layout(dx.data(), lay, pb.T, pb.B, pb.C), want_dx, tol<T>(), dx_scale(want_dx, dy));
      TT_CHECK_CLOSE("dweight", to_dbl_vec(dW), want_dW, tol<T>(), sum_scale(dW_mag));
      if (want_dbias) {
        TT_CHECK_CLOSE("dbias", to_dbl_vec(db), want_db, tol<T>(), sum_scale(db_mag));
      } else {
        bool untouched = true;  // dbias = null: nothing written there
        for (const T& v : db) untouched = untouched && to_dbl<T>(v) == to_dbl<T>(to_store<T>(-777));
        CHECK(untouched);
      }
    }
}

template <class T, int Heads>
void run_layer_suite(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const long fixed = Heads == talkconv::dynamic_heads ? 0 : Heads;
  for (bool causal : {false, true})
    for (layout lay : {layout::tbc, layout::btc})
      for (const mode& md : modes) {
        auto problems = corner_problems(causal, fixed);
        shape_opts so;
        so.causal = causal, so.heads = fixed;
        for (int i = 0; i < draws(6); ++i) problems.push_back(random_problem(rng, so));
        for (size_t i = 0; i < problems.size(); ++i)
          run_layer_case<T, Heads>(problems[i], lay, md, rng,
                                   "seed=" + std::to_string(seed) + (i < 8 ? " corner #" : " random #") + std::to_string(i));
      }
}

}  // namespace

TEST_SUITE("layer") {

TEST_CASE_TEMPLATE("layer: talk_conv<T, dynamic_heads> forward/backward equal the reference", T, TT_DTYPES) {
  run_layer_suite<T, talkconv::dynamic_heads>(1001);
}

TEST_CASE_TEMPLATE("layer: talk_conv<T, 4> forward/backward equal the reference", T, TT_DTYPES) {
  run_layer_suite<T, 4>(2002);
}

TEST_CASE("layer: larger problems (several time tiles, K = 25; C = 136)") {
  std::mt19937_64 rng(3003);
  for (bool causal : {false, true}) {
    ref::problem pb;
    pb.T = 900, pb.B = 2, pb.C = 24, pb.H = 1, pb.L = 12, pb.M = causal ? 0 : 12, pb.causal = causal;
    pb.lengths = {900, 611};
    run_layer_case<float, 1>(pb, layout::btc, modes[3], rng, "large");
    pb.H = 6;
    run_layer_case<double, talkconv::dynamic_heads>(pb, layout::tbc, modes[2], rng, "large");
    // C = 136: dweight is summed in column blocks of 64 (the last one partial), rows in chunks of 256.
    ref::problem wide;
    wide.T = 300, wide.B = 2, wide.C = 136, wide.H = 4, wide.L = 5, wide.M = causal ? 0 : 3, wide.causal = causal;
    wide.lengths = {300, 257};
    run_layer_case<float, 4>(wide, layout::tbc, modes[2], rng, "wide C");
    run_layer_case<Eigen::bfloat16, talkconv::dynamic_heads>(wide, layout::btc, modes[0], rng, "wide C");
  }
}

}  // TEST_SUITE
