// Sharded-layer test problems shared by the in-process test (test_shard.cpp) and the MPI test
// (tests/mpi): one whole-sequence call, the rows of a shard cut from it, and the comparisons.
#pragma once

#include <talkconv/talkconv.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace shard_case {

using talkconv::index_t;
using talkconv::layout;

struct problem {
  index_t T = 0, B = 1, C = 4, H = 1, L = 0, M = 0;
  bool causal = false;
  layout lay = layout::tbc;
  float p = 0.0f;
  bool training = false;
  bool ragged = false;
  std::uint64_t seed = 1;

  talkconv::talk_config config() const {
    talkconv::talk_config c;
    c.channels = C, c.heads = H, c.max_left = L, c.max_right = causal ? 0 : M, c.causal = causal;
    return c;
  }
  talkconv::dropout_params dropout() const { return talkconv::dropout_params{p, seed * 7919 + 13, training}; }
  std::string str() const {
    return "T=" + std::to_string(T) + " B=" + std::to_string(B) + " C=" + std::to_string(C) +
           " H=" + std::to_string(H) + " L=" + std::to_string(L) + " M=" + std::to_string(M) +
           (causal ? " causal" : " bidir") + (lay == layout::tbc ? " tbc" : " btc") + " p=" + std::to_string(p) +
           (training ? " training" : " inference") + (ragged ? " ragged" : "");
  }
};

// Offset (element) of (t, b, j) in a [rows, B, width] tensor of layout lay.
inline size_t at(layout lay, index_t rows, index_t B, index_t width, index_t t, index_t b, index_t j) {
  const talkconv::seq_strides s = talkconv::strides_of(lay, rows, B, width);
  return static_cast<size_t>(t * s.t + b * s.b + j);
}

// The whole problem's tensors and its whole-sequence results.
template <class T>
struct whole {
  using A = talkconv::acc_t<T>;
  problem pb;
  std::vector<T> x, W, bias, dy, y, dx, dW, db;
  std::vector<A> saved;
  std::vector<index_t> lengths;

  explicit whole(const problem& p) : pb(p) {
    std::mt19937_64 rng(p.seed);
    std::normal_distribution<double> nd(0.0, 1.0);
    const index_t P = p.causal ? p.H : 2 * p.H;
    auto fill = [&](std::vector<T>& v, size_t n, double mean, double sd) {
      v.resize(n);
      for (auto& e : v) e = talkconv::from_acc<T>(A(mean + sd * nd(rng)));
    };
    fill(x, static_cast<size_t>(p.T * p.B * p.C), 1.0, 1.0);
    fill(W, static_cast<size_t>(P * p.C), 0.0, 1.5 / std::sqrt(double(p.C)));
    fill(bias, static_cast<size_t>(P), 0.5, 1.0);
    fill(dy, x.size(), 0.0, 1.0);
    if (p.ragged) {
      std::uniform_int_distribution<index_t> ud(0, p.T);
      for (index_t b = 0; b < p.B; ++b) lengths.push_back(b == 0 ? p.T : ud(rng));
    }
    const talkconv::talk_conv<T> conv(p.config());
    y.resize(x.size());
    saved.resize(static_cast<size_t>(p.T * p.B * P));
    talkconv::forward_args<T> fa;
    fa.shape = talkconv::seq_shape{p.T, p.B, p.C, p.lay};
    fa.x = x.data(), fa.weight = W.data(), fa.bias = bias.data(), fa.y = y.data(), fa.saved_offsets = saved.data();
    fa.lengths = lengths.empty() ? nullptr : lengths.data(), fa.dropout = p.dropout();
    conv.forward(fa);
    dx.resize(x.size()), dW.resize(W.size()), db.resize(bias.size());
    talkconv::backward_args<T> ba;
    ba.shape = fa.shape, ba.x = x.data(), ba.weight = W.data(), ba.bias = bias.data(), ba.dy = dy.data();
    ba.saved_offsets = saved.data(), ba.dx = dx.data(), ba.dweight = dW.data(), ba.dbias = db.data();
    ba.lengths = fa.lengths, ba.dropout = fa.dropout;
    conv.backward(ba);
  }
  const index_t* lengths_ptr() const { return lengths.empty() ? nullptr : lengths.data(); }

  // Global rows [g0, g1) of a whole [T, B, width] tensor, as a [g1 - g0, B, width] tensor of the layout.
  template <class S>
  std::vector<S> rows_of(const std::vector<S>& v, index_t width, index_t g0, index_t g1) const {
    std::vector<S> out(static_cast<size_t>((g1 - g0) * pb.B * width));
    for (index_t t = g0; t < g1; ++t)
      for (index_t b = 0; b < pb.B; ++b)
        for (index_t j = 0; j < width; ++j)
          out[at(pb.lay, g1 - g0, pb.B, width, t - g0, b, j)] = v[at(pb.lay, pb.T, pb.B, width, t, b, j)];
    return out;
  }
};

// Shard boundaries: P + 1 increasing positions from 0 to T. `kind` 0: even split; 1: random cuts,
// some shards as short as one token.
inline std::vector<index_t> cuts(index_t T, int P, int kind, std::uint64_t seed) {
  std::vector<index_t> c(static_cast<size_t>(P) + 1, 0);
  c[static_cast<size_t>(P)] = T;
  if (kind == 0) {
    for (int r = 1; r < P; ++r) c[static_cast<size_t>(r)] = T * r / P;
  } else {
    std::mt19937_64 rng(seed);
    std::vector<index_t> pick;
    for (index_t t = 1; t < T; ++t) pick.push_back(t);
    std::shuffle(pick.begin(), pick.end(), rng);
    pick.resize(static_cast<size_t>(P - 1));
    std::sort(pick.begin(), pick.end());
    for (int r = 1; r < P; ++r) c[static_cast<size_t>(r)] = pick[static_cast<size_t>(r - 1)];
  }
  return c;
}

// max |a - b| over two tensors of the same size, as doubles.
template <class S>
double max_diff(const std::vector<S>& a, const std::vector<S>& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double(talkconv::to_acc<S>(a[i])) - double(talkconv::to_acc<S>(b[i])));
    if (!(d <= m)) m = d;  // NaN propagates as the worst
  }
  return m;
}
template <class S>
double max_abs(const std::vector<S>& a) {
  double m = 0.0;
  for (const S& v : a) m = std::max(m, std::fabs(double(talkconv::to_acc<S>(v))));
  return m;
}

// Per-element bars of the sharded results against the whole call, relative to the tensor's scale:
// tiles are cut at the shard ends (the prefix sums restart there) and dx's shard-edge rows are
// summed from two to several partial rows, each rounded in T (the whole call rounds once); dW
// and dbias are sums of per-shard partials. 64 ulps of the storage type times the scale covers each.
template <class T>
double bar() {
  if constexpr (std::is_same<T, double>::value)
    return 1e-12;
  else if constexpr (std::is_same<T, float>::value)
    return 1e-5;
  else
    return 3e-2;  // half / bfloat16: partial rows are rounded to 8 (11) bits before they are added
}

}  // namespace shard_case
