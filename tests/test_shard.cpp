// Time shards in one process: a sequence cut into k shards, each shard's talk_conv forward / backward
// (shard_params overloads) on its rows plus halos, reassembled, equals the whole-sequence call: y,
// saved offsets, dx (halo rows added to their owners), dW and dbias (partials summed).
#include "shard_case.hpp"

#include <doctest/doctest.h>

using namespace shard_case;

namespace {

template <class T>
struct assembled {
  using A = talkconv::acc_t<T>;
  std::vector<T> y, dx, dW, db;
  std::vector<A> saved;
  double dx_partial = 0.0, param_partial = 0.0;  // largest partial (halo dx row, per-shard dW / dbias)
};

// Runs every shard of `c` on its own copy of the rows it may read; halo dx rows are added to their
// owners' rows in shard order (as the MPI layer does, in ascending source rank).
template <class T>
assembled<T> run_shards(const whole<T>& w, const std::vector<index_t>& c, bool use_saved) {
  using A = talkconv::acc_t<T>;
  const problem& pb = w.pb;
  const talkconv::talk_conv<T> conv(pb.config());
  const index_t P = conv.num_offsets();
  assembled<T> out;
  out.y.assign(w.x.size(), talkconv::from_acc<T>(A(-777)));
  out.dx.assign(w.x.size(), talkconv::from_acc<T>(A(-777)));
  out.saved.assign(w.saved.size(), A(-777));
  std::vector<A> dW(w.W.size(), A(0)), db(w.bias.size(), A(0));
  std::vector<std::vector<T>> dx_ext(c.size() - 1);
  std::vector<talkconv::shard_params> shards;
  for (size_t r = 0; r + 1 < c.size(); ++r) {
    const talkconv::shard_params s = talkconv::make_shard(conv.window(), pb.dropout(), c[r], c[r + 1], pb.T);
    shards.push_back(s);
    const std::vector<T> x_ext = w.rows_of(w.x, pb.C, s.first_row(), s.first_row() + s.rows());
    const std::vector<T> dy_own = w.rows_of(w.dy, pb.C, s.t_begin, s.t_end);
    std::vector<T> y(static_cast<size_t>(s.own() * pb.B * pb.C));
    std::vector<A> saved(static_cast<size_t>(s.own() * pb.B * P));
    talkconv::forward_args<T> fa;
    fa.shape = talkconv::seq_shape{s.own(), pb.B, pb.C, pb.lay};
    fa.x = x_ext.data(), fa.weight = w.W.data(), fa.bias = w.bias.data(), fa.y = y.data();
    fa.saved_offsets = saved.data(), fa.lengths = w.lengths_ptr(), fa.dropout = pb.dropout();
    int calls = 0;
    conv.forward(fa, s, [&] { ++calls; });
    CHECK(calls == 1);
    std::vector<T>& dx = dx_ext[r];
    dx.assign(x_ext.size(), talkconv::from_acc<T>(A(-777)));
    std::vector<T> dWs(w.W.size()), dbs(w.bias.size());
    talkconv::backward_args<T> ba;
    ba.shape = fa.shape, ba.x = x_ext.data(), ba.weight = w.W.data(), ba.bias = w.bias.data(), ba.dy = dy_own.data();
    ba.saved_offsets = use_saved ? saved.data() : nullptr, ba.dx = dx.data(), ba.dweight = dWs.data();
    ba.dbias = dbs.data(), ba.lengths = fa.lengths, ba.dropout = fa.dropout;
    conv.backward(ba, s);
    for (index_t t = s.t_begin; t < s.t_end; ++t)
      for (index_t b = 0; b < pb.B; ++b) {
        for (index_t j = 0; j < pb.C; ++j) {
          out.y[at(pb.lay, pb.T, pb.B, pb.C, t, b, j)] = y[at(pb.lay, s.own(), pb.B, pb.C, t - s.t_begin, b, j)];
          out.dx[at(pb.lay, pb.T, pb.B, pb.C, t, b, j)] = dx[at(pb.lay, s.rows(), pb.B, pb.C, t - s.first_row(), b, j)];
        }
        for (index_t j = 0; j < P; ++j)
          out.saved[at(pb.lay, pb.T, pb.B, P, t, b, j)] = saved[at(pb.lay, s.own(), pb.B, P, t - s.t_begin, b, j)];
      }
    out.dx_partial = std::max(out.dx_partial, max_abs(dx));
    out.param_partial = std::max({out.param_partial, max_abs(dWs), max_abs(dbs)});
    for (size_t i = 0; i < dW.size(); ++i) dW[i] += talkconv::to_acc<T>(dWs[i]);
    for (size_t i = 0; i < db.size(); ++i) db[i] += talkconv::to_acc<T>(dbs[i]);
  }
  // Halo rows to their owners, in shard order.
  for (size_t r = 0; r < shards.size(); ++r) {
    const talkconv::shard_params& s = shards[r];
    for (index_t g = s.first_row(); g < s.first_row() + s.rows(); ++g) {
      if (g >= s.t_begin && g < s.t_end) continue;
      for (index_t b = 0; b < pb.B; ++b)
        for (index_t j = 0; j < pb.C; ++j) {
          T& d = out.dx[at(pb.lay, pb.T, pb.B, pb.C, g, b, j)];
          d = talkconv::from_acc<T>(
              talkconv::to_acc<T>(d) +
              talkconv::to_acc<T>(dx_ext[r][at(pb.lay, s.rows(), pb.B, pb.C, g - s.first_row(), b, j)]));
        }
    }
  }
  for (size_t i = 0; i < dW.size(); ++i) out.dW.push_back(talkconv::from_acc<T>(dW[i]));
  for (size_t i = 0; i < db.size(); ++i) out.db.push_back(talkconv::from_acc<T>(db[i]));
  return out;
}

template <class T>
void check_case(const problem& pb, int P, int kind) {
  INFO(pb.str(), " shards=", P, " cuts=", std::string(kind == 0 ? "even" : "random"));
  const whole<T> w(pb);
  const auto c = cuts(pb.T, P, kind, pb.seed + 99);
  for (bool use_saved : {true, false}) {
    CAPTURE(use_saved);
    const assembled<T> a = run_shards(w, c, use_saved);
    const double bar = shard_case::bar<T>();
    CHECK(max_diff(a.y, w.y) <= bar * std::max(1.0, max_abs(w.y)));
    CHECK(max_diff(a.saved, w.saved) <= bar);
    // dx, dW, dbias add partials rounded in T: the bar scales with the largest partial.
    CHECK(max_diff(a.dx, w.dx) <= bar * std::max({1.0, max_abs(w.dx), a.dx_partial}));
    CHECK(max_diff(a.dW, w.dW) <= bar * std::max({1.0, max_abs(w.dW), a.param_partial}));
    CHECK(max_diff(a.db, w.db) <= bar * std::max({1.0, max_abs(w.db), a.param_partial}));
  }
}

template <class T>
void run_suite(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  int n = 0;
  for (bool causal : {false, true})
    for (layout lay : {layout::tbc, layout::btc})
      for (int mode = 0; mode < 3; ++mode)
        for (int kind = 0; kind < 2; ++kind) {
          problem pb;
          pb.seed = seed * 1000 + static_cast<std::uint64_t>(n++);
          pb.causal = causal, pb.lay = lay;
          pb.T = std::uniform_int_distribution<index_t>(20, 400)(rng);
          pb.B = std::uniform_int_distribution<index_t>(1, 3)(rng);
          pb.H = std::uniform_int_distribution<index_t>(1, 2)(rng);
          pb.C = pb.H * std::uniform_int_distribution<index_t>(1, 5)(rng);
          pb.L = std::uniform_int_distribution<index_t>(0, 40)(rng);
          pb.M = causal ? 0 : std::uniform_int_distribution<index_t>(0, 40)(rng);
          pb.ragged = mode != 0;
          pb.training = mode == 2, pb.p = mode == 2 ? 0.3f : 0.0f;
          const int P = std::uniform_int_distribution<int>(2, 7)(rng);
          check_case<T>(pb, P, kind);
        }
}

}  // namespace

TEST_SUITE("shard") {
  TEST_CASE_TEMPLATE("shard: k shards in one process equal the whole call (y, saved offsets, dx, dW, dbias)", T, float,
                     double, Eigen::bfloat16, Eigen::half) {
    run_suite<T>(17);
  }

  TEST_CASE("shard: one-token shards (every halo spans several shards), L = 30, dropout 0.5") {
    problem pb;
    pb.T = 37, pb.B = 2, pb.C = 6, pb.H = 3, pb.L = 30, pb.M = 11, pb.p = 0.5f, pb.training = true, pb.ragged = true;
    pb.seed = 5;
    check_case<double>(pb, 37, 0);
    check_case<float>(pb, 37, 0);
    pb.causal = true, pb.M = 0;
    check_case<float>(pb, 37, 0);
  }

  TEST_CASE("shard: a shard whose ends fall on the tile grid gives y and saved offsets bit for bit") {
    problem pb;
    pb.T = 3000, pb.B = 2, pb.C = 8, pb.H = 2, pb.L = 20, pb.M = 9, pb.seed = 3, pb.ragged = true;
    const whole<float> w(pb);
    const index_t tile = talkconv::detail::cpu_tile_length(pb.L + pb.M + 1, pb.T, pb.B);
    REQUIRE(tile < pb.T);
    const std::vector<index_t> c{0, tile, pb.T};
    const assembled<float> a = run_shards(w, c, true);
    MESSAGE("tile ", tile, ": y max diff ", max_diff(a.y, w.y), ", saved ", max_diff(a.saved, w.saved), ", dx ",
            max_diff(a.dx, w.dx));
    CHECK(max_diff(a.y, w.y) == 0.0);
    CHECK(max_diff(a.saved, w.saved) == 0.0);
  }

  TEST_CASE("shard: bad shards fail with a named error before touching memory") {
    const talkconv::talk_conv<float> conv(problem{}.config());
    talkconv::shard_params s = talkconv::make_shard(conv.window(), {}, 0, 4, 10);
    std::vector<float> x(10 * 4), y(10 * 4), W(2 * 4);
    talkconv::forward_args<float> fa;
    fa.shape = talkconv::seq_shape{4, 1, 4, layout::tbc}, fa.x = x.data(), fa.weight = W.data(), fa.y = y.data();
    CHECK_NOTHROW(conv.forward(fa, s));
    talkconv::shard_params bad = s;
    bad.halo.right = 0;
    CHECK_THROWS_WITH_AS(conv.forward(fa, bad), doctest::Contains("make_shard"), talkconv::error);
    bad = s, bad.t_end = 11;
    CHECK_THROWS_AS(conv.forward(fa, bad), talkconv::error);
    fa.shape.T = 5;
    CHECK_THROWS_WITH_AS(conv.forward(fa, s), doctest::Contains("own tokens"), talkconv::error);
  }
}

// The window blocks on shards: cpu::window_forward / window_backward with a shard_params, offsets from
// elsewhere (uniform in [0, 1 / (1 - p)]), against the whole calls.
namespace {

template <class T>
void check_window_blocks(const problem& pb, int P, int kind) {
  using A = talkconv::acc_t<T>;
  INFO(pb.str(), " shards=", P, " cuts=", std::string(kind == 0 ? "even" : "random"));
  const whole<T> w(pb);  // x, dy and lengths
  const talkconv::window_params win{pb.H, pb.L, pb.causal ? 0 : pb.M, pb.causal};
  const index_t Pw = win.num_offsets();
  const talkconv::dropout_params d = pb.dropout();
  const double hi = d.active() ? 1.0 / (1.0 - double(d.p)) : 1.0;
  std::mt19937_64 rng(pb.seed + 3);
  std::vector<A> off(static_cast<size_t>(pb.T * pb.B * Pw));
  for (A& o : off)
    o = std::min(A(std::uniform_real_distribution<double>(0.0, hi)(rng)), A(1) / (A(1) - A(d.active() ? d.p : 0.0f)));
  const talkconv::seq_shape shape{pb.T, pb.B, pb.C, pb.lay};
  std::vector<T> y(w.x.size()), dx(w.x.size());
  std::vector<A> doff(off.size());
  talkconv::cpu::window_forward(shape, win, w.x.data(), off.data(), y.data(), w.lengths_ptr());
  talkconv::cpu::window_backward(shape, win, w.x.data(), off.data(), w.dy.data(), dx.data(), doff.data(),
                                 w.lengths_ptr());
  std::vector<T> ys(y.size()), dxs(dx.size(), talkconv::from_acc<T>(A(0)));
  std::vector<A> doffs(doff.size());
  std::vector<double> dx_acc(dx.size(), 0.0);
  double partial = 0.0;
  const auto c = cuts(pb.T, P, kind, pb.seed + 99);
  for (size_t r = 0; r + 1 < c.size(); ++r) {
    const talkconv::shard_params s = talkconv::make_shard(win, d, c[r], c[r + 1], pb.T);
    const talkconv::seq_shape own{s.own(), pb.B, pb.C, pb.lay};
    const std::vector<T> x_ext = w.rows_of(w.x, pb.C, s.first_row(), s.first_row() + s.rows());
    const std::vector<T> dy_own = w.rows_of(w.dy, pb.C, s.t_begin, s.t_end);
    const std::vector<A> off_own = w.rows_of(off, Pw, s.t_begin, s.t_end);
    std::vector<T> y_own(dy_own.size()), dx_ext(x_ext.size());
    std::vector<A> doff_own(off_own.size());
    talkconv::cpu::window_forward(own, win, x_ext.data(), off_own.data(), y_own.data(), w.lengths_ptr(), s, d);
    talkconv::cpu::window_backward(own, win, x_ext.data(), off_own.data(), dy_own.data(), dx_ext.data(),
                                   doff_own.data(), w.lengths_ptr(), s, d);
    partial = std::max(partial, max_abs(dx_ext));
    for (index_t t = 0; t < s.rows(); ++t)
      for (index_t b = 0; b < pb.B; ++b) {
        const index_t g = s.first_row() + t;
        for (index_t j = 0; j < pb.C; ++j) {
          dx_acc[at(pb.lay, pb.T, pb.B, pb.C, g, b, j)] +=
              double(talkconv::to_acc<T>(dx_ext[at(pb.lay, s.rows(), pb.B, pb.C, t, b, j)]));
          if (g >= s.t_begin && g < s.t_end)
            ys[at(pb.lay, pb.T, pb.B, pb.C, g, b, j)] = y_own[at(pb.lay, s.own(), pb.B, pb.C, g - s.t_begin, b, j)];
        }
        if (g >= s.t_begin && g < s.t_end)
          for (index_t j = 0; j < Pw; ++j)
            doffs[at(pb.lay, pb.T, pb.B, Pw, g, b, j)] = doff_own[at(pb.lay, s.own(), pb.B, Pw, g - s.t_begin, b, j)];
      }
  }
  for (size_t i = 0; i < dxs.size(); ++i) dxs[i] = talkconv::from_acc<T>(A(dx_acc[i]));
  const double bar = shard_case::bar<T>();
  CHECK(max_diff(ys, y) <= bar * std::max(1.0, max_abs(y)));
  CHECK(max_diff(dxs, dx) <= bar * std::max({1.0, max_abs(dx), partial}));
  CHECK(max_diff(doffs, doff) <= bar * std::max(1.0, max_abs(doff)));
}

}  // namespace

TEST_SUITE("shard") {
  TEST_CASE_TEMPLATE("shard: cpu::window_forward / window_backward on k shards equal the whole calls", T, float,
                     double) {
    std::mt19937_64 rng(23);
    int n = 0;
    for (bool causal : {false, true})
      for (layout lay : {layout::tbc, layout::btc})
        for (int mode = 0; mode < 3; ++mode) {
          problem pb;
          pb.seed = 500 + static_cast<std::uint64_t>(n++);
          pb.causal = causal, pb.lay = lay;
          pb.T = std::uniform_int_distribution<index_t>(20, 300)(rng);
          pb.B = 2, pb.H = 2, pb.C = 6;
          pb.L = std::uniform_int_distribution<index_t>(0, 40)(rng);
          pb.M = causal ? 0 : std::uniform_int_distribution<index_t>(0, 40)(rng);
          pb.ragged = mode != 0;
          pb.training = mode == 2, pb.p = mode == 2 ? 0.4f : 0.0f;
          check_window_blocks<T>(pb, std::uniform_int_distribution<int>(2, 9)(rng), mode == 1 ? 1 : 0);
        }
  }

  TEST_CASE("shard: window blocks refuse offsets beyond the shard's halo") {
    const talkconv::window_params win{1, 4, 4, false};
    const talkconv::shard_params s = talkconv::make_shard(win, {}, 10, 20, 30);
    const talkconv::seq_shape own{s.own(), 1, 2, layout::tbc};
    std::vector<float> x(static_cast<size_t>(s.rows() * 2), 1.0f), y(20), off(20, 0.5f);
    CHECK_NOTHROW(talkconv::cpu::window_forward(own, win, x.data(), off.data(), y.data(), nullptr, s));
    off[7] = 1.5f;  // fine for p = 0.4 (up to 1 / 0.6), not for this shard made without dropout
    CHECK_THROWS_WITH_AS(talkconv::cpu::window_forward(own, win, x.data(), off.data(), y.data(), nullptr, s),
                         doctest::Contains("outside [0, 1]"), talkconv::error);
  }
}
