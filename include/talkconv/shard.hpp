// A time shard: the global tokens one call owns and the halo rows of x its windows read beyond them.
#pragma once

#include "talkconv/error.hpp"
#include "talkconv/params.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace talkconv {

// Rows beyond its own tokens that a shard's windows can read, left and right.
struct shard_halo {
  index_t left = 0;
  index_t right = 0;
};

namespace detail {

// The most tokens an offset can move a bound: ceil(m / (1 - p)) in training with dropout (inverted
// dropout scales a kept offset by 1 / (1 - p)), else m; capped before the conversion (m / (1 - p) may
// exceed any index; 2^62 is beyond any sequence).
inline index_t offset_reach(index_t m, const dropout_params& d) {
  const double scale = d.active() ? 1.0 / (1.0 - double(d.p)) : 1.0;
  return static_cast<index_t>(std::min(std::ceil(double(m) * scale), 0x1p62));
}

}  // namespace detail

// The halo of any shard of a layer with window w and dropout d, before clipping to the sequence:
//   left  = offset_reach(L) + 1   (the floor of a_l, one row of margin for the offset's rounding)
//   right = offset_reach(M) + 1   (the ceil of a_r), 0 when causal.
// With training dropout the reach is ceil(L / (1 - p)), not L. The CPU layer's tile reach is this halo
// plus the prefix sum's zero row on the left, so a shard reads exactly the rows the whole call reads.
inline shard_halo window_halo(const window_params& w, const dropout_params& d) {
  return shard_halo{detail::offset_reach(w.max_left, d) + 1, w.causal ? 0 : detail::offset_reach(w.max_right, d) + 1};
}

// One shard of sequences of global length T: it owns tokens [t_begin, t_end) and its x holds
// halo.left rows before them and halo.right rows after them (global rows [t_begin - halo.left,
// t_end + halo.right)). make_shard fills the halo; a call checks it.
struct shard_params {
  index_t t_begin = 0;
  index_t t_end = 0;
  index_t T = 0;
  shard_halo halo;

  index_t own() const { return t_end - t_begin; }                  // tokens of y, dy, offsets
  index_t rows() const { return halo.left + own() + halo.right; }  // rows of x and dx
  index_t first_row() const { return t_begin - halo.left; }        // global index of x's row 0
};

// The shard [t_begin, t_end) of length-T sequences with the halo the window needs, clipped to the
// sequence: halo.left = min(window_halo.left, t_begin), halo.right = min(window_halo.right, T - t_end).
// A halo may be longer than a neighbouring shard: it then spans several shards.
inline shard_params make_shard(const window_params& w, const dropout_params& d, index_t t_begin, index_t t_end,
                               index_t T) {
  const shard_halo h = window_halo(w, d);
  shard_params s;
  s.t_begin = t_begin;
  s.t_end = t_end;
  s.T = T;
  s.halo.left = std::min(h.left, std::max<index_t>(0, t_begin));
  s.halo.right = std::min(h.right, std::max<index_t>(0, T - t_end));
  return s;
}

// One run of rows a shard exchanges with a peer shard: local rows [row, row + rows) of its x / dx buffer.
struct shard_run {
  int peer;
  index_t row;
  index_t rows;
};

// The exchanges of shard `me` when shards [bounds[r], bounds[r + 1]) (r = 0 .. bounds.size() - 2) tile
// [0, T = bounds.back()): `halo` lists the runs of its halo rows and their owners (received in forward,
// returned in backward), `owned` the runs of its own rows that a peer's halo holds (sent in forward,
// whose dx contributions come back in backward). Both in ascending peer order; a halo longer than a
// neighbour's shard gives runs from several peers. Every shard's halo is make_shard's.
struct shard_exchange {
  std::vector<shard_run> halo, owned;
};
inline shard_exchange exchange_of(const window_params& w, const dropout_params& d, const std::vector<index_t>& bounds,
                                  int me) {
  const int n = static_cast<int>(bounds.size()) - 1;
  auto shard = [&](int r) {
    return make_shard(w, d, bounds[static_cast<size_t>(r)], bounds[static_cast<size_t>(r) + 1], bounds.back());
  };
  const shard_params m = shard(me);
  shard_exchange e;
  auto add = [](std::vector<shard_run>& v, int q, index_t g0, index_t g1, index_t first) {
    if (g1 > g0) v.push_back(shard_run{q, g0 - first, g1 - g0});
  };
  for (int q = 0; q < n; ++q) {
    if (q == me) continue;
    const shard_params o = shard(q);
    // Each shard's halo: [first_row, t_begin) and [t_end, first_row + rows).
    add(e.halo, q, std::max(m.first_row(), o.t_begin), std::min(m.t_begin, o.t_end), m.first_row());
    add(e.halo, q, std::max(m.t_end, o.t_begin), std::min(m.first_row() + m.rows(), o.t_end), m.first_row());
    add(e.owned, q, std::max(o.first_row(), m.t_begin), std::min(o.t_begin, m.t_end), m.first_row());
    add(e.owned, q, std::max(o.t_end, m.t_begin), std::min(o.first_row() + o.rows(), m.t_end), m.first_row());
  }
  return e;
}

namespace detail {

// bounds (P + 1 positions) must tile [0, T) with non-empty shards.
inline void validate_bounds(const std::vector<index_t>& bounds) {
  if (bounds.size() < 2 || bounds.front() != 0)
    fail(status::invalid_shape, "bounds", "shard bounds must start at 0 and hold at least two positions");
  for (size_t r = 0; r + 1 < bounds.size(); ++r)
    if (bounds[r + 1] <= bounds[r])
      fail(status::invalid_shape, "bounds", "shard ", r, " = [", bounds[r], ", ", bounds[r + 1], ") is empty");
}

// A shard call: shape (own tokens, B, C) against the shard, lengths (global, B entries or null) against T.
inline void validate_shard(const shard_params& s, const seq_shape& shape, const window_params& w,
                           const dropout_params& d, const index_t* lengths) {
  if (s.T <= 0) fail(status::invalid_shape, "shard.T", "shard.T = ", s.T, " must be positive");
  if (s.t_begin < 0 || s.t_begin >= s.t_end || s.t_end > s.T)
    fail(status::invalid_shape, "shard", "shard [t_begin, t_end) = [", s.t_begin, ", ", s.t_end,
         ") is not a non-empty range within [0, T = ", s.T, ")");
  if (shape.T != s.own())
    fail(status::invalid_shape, "T", "T = ", shape.T,
         " differs from the shard's own tokens t_end - t_begin = ", s.own());
  const shard_params want = make_shard(w, d, s.t_begin, s.t_end, s.T);
  if (s.halo.left != want.halo.left || s.halo.right != want.halo.right)
    fail(status::invalid_shape, "shard.halo", "shard halo (", s.halo.left, ", ", s.halo.right, ") differs from (",
         want.halo.left, ", ", want.halo.right, ") that this window and dropout need (use talkconv::make_shard)");
  const seq_shape whole{s.T, shape.B, shape.C, shape.lay};
  validate_problem(whole, w, lengths);
  validate_problem(seq_shape{s.rows(), shape.B, shape.C, shape.lay}, w, nullptr);
}

}  // namespace detail
}  // namespace talkconv
