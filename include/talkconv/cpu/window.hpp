// Building block 4 (CPU): normalized window aggregation with interpolated edges, forward and backward.
#pragma once

#include "talkconv/cpu/heads.hpp"
#include "talkconv/cpu/parallel.hpp"
#include "talkconv/cpu/prefix_sum.hpp"
#include "talkconv/detail/math.hpp"
#include "talkconv/detail/tile_plan.hpp"
#include "talkconv/params.hpp"
#include "talkconv/traits.hpp"

#include <algorithm>
#include <vector>

namespace talkconv {
namespace cpu {
namespace detail {

using talkconv::detail::head_map;
using talkconv::detail::window_taps;

// How far (in tokens) the windows of any valid token reach: token t's backward touches dx on
// [t - left, t + right]. Decides the halo of the backward tiles.
struct window_reach {
  index_t left = 0;
  index_t right = 0;
};

// Channels processed together: the local prefix buffer (rows x width) stays near 128 KiB of A.
inline index_t chunk_width(index_t rows, index_t C) {
  index_t w = (index_t(32768) / (rows > 0 ? rows : 1)) / 16 * 16;
  if (w < 16) w = 16;
  return w < C ? w : C;
}

inline index_t length_of(const index_t* lengths, index_t b, index_t T) { return lengths ? lengths[b] : T; }

// Taps of head h of token t (t < n) from its row of P offsets (after dropout).
template <class A, class Row>
window_taps<A> token_taps(const window_params& w, index_t n, index_t t, const Row& row, index_t h) {
  return talkconv::detail::make_taps<A>(t, A(row[h]), w.causal ? A(0) : A(row[w.heads + h]), w.max_left,
                                        w.max_right, n, w.causal);
}

// Taps of tokens [t_begin, t_end) (all < n) for every head: taps[(t - t_begin) * H + h].
// offsets_row(t) returns the P offsets (after dropout) of token t.
template <class A, class RowFn>
void make_tile_taps(const window_params& w, index_t n, index_t t_begin, index_t t_end, RowFn&& offsets_row,
                    window_taps<A>* taps) {
  for (index_t t = t_begin; t < t_end; ++t) {
    const auto row = offsets_row(t);
    for (index_t h = 0; h < w.heads; ++h) taps[(t - t_begin) * w.heads + h] = token_taps<A>(w, n, t, row, h);
  }
}

// Span [lo, hi] of S indices read by `count` tap sets.
template <class A>
void taps_span(const window_taps<A>* taps, index_t count, index_t& lo, index_t& hi) {
  for (index_t i = 0; i < count; ++i) {
    lo = std::min(lo, talkconv::detail::taps_min(taps[i]));
    hi = std::max(hi, talkconv::detail::taps_max(taps[i]));
  }
}

template <class A>
struct window_scratch {
  std::vector<A> prefix;       // local prefix sums, (hi - lo + 1) x chunk
  std::vector<A> grad;         // backward: scattered tap weights, tile x chunk
  std::vector<A> run;          // backward: running suffix sum, chunk
  std::vector<A> row;          // backward: one dx row in A, chunk
  std::vector<A> d_off;        // backward: offset gradients of the tile, tile x P
  std::vector<window_taps<A>> taps;
};

// Forward of one tile: y for tokens [t0, t1) of one sequence of valid length n, channels [0, C).
// xb / yb point at token 0 of the sequence; taps hold tokens [t0, min(t1, n)). Rows t >= n are zeroed.
template <class T, class A>
void forward_tile(const T* xb, T* yb, index_t stride_t, index_t C, const head_map& hm, A inv_k, index_t t0,
                  index_t t1, index_t n, const window_taps<A>* taps, window_scratch<A>& s) {
  const index_t tv1 = std::min(t1, n);
  if (tv1 > t0) {
    index_t lo = t0, hi = t0;
    taps_span(taps, (tv1 - t0) * hm.heads, lo, hi);
    const index_t rows = hi - lo + 1;
    const index_t cw = chunk_width(rows, C);
    s.prefix.resize(static_cast<size_t>(rows * cw));
    for (index_t c0 = 0; c0 < C; c0 += cw) {
      const index_t cn = std::min(cw, C - c0);
      local_prefix(xb, stride_t, lo + 1, hi + 1, c0, cn, inv_k, s.prefix.data(), cn);
      const index_t h_first = hm.head_of(c0), h_last = hm.head_of(c0 + cn - 1);
      for (index_t t = t0; t < tv1; ++t) {
        T* yr = yb + t * stride_t;
        for (index_t h = h_first; h <= h_last; ++h) {
          const window_taps<A>& k = taps[(t - t0) * hm.heads + h];
          const index_t ca = std::max(c0, hm.first_channel(h)), cb = std::min(c0 + cn, hm.first_channel(h + 1));
          const A* s0 = s.prefix.data() + (k.i0 - lo) * cn - c0;
          const A* s1 = s.prefix.data() + (k.i1 - lo) * cn - c0;
          const A* s2 = s.prefix.data() + (k.i2 - lo) * cn - c0;
          const A* s3 = s.prefix.data() + (k.i3 - lo) * cn - c0;
          for (index_t c = ca; c < cb; ++c)
            yr[c] = from_acc<T>(talkconv::detail::window_value<A>(k, s0[c], s1[c], s2[c], s3[c]));
        }
      }
    }
  }
  for (index_t t = std::max(t0, tv1); t < t1; ++t)
    std::fill(yb + t * stride_t, yb + t * stride_t + C, from_acc<T>(A(0)));
}

// Backward to the offsets of one tile: d_off[(t - t0) * P + j] = dL/do_j for tokens [t0, t1), zero for
// t >= n. Same local sums as the forward; the channel sum of each head runs in a fixed order.
template <class T, class A>
void offsets_grad_tile(const T* xb, const T* dyb, index_t stride_t, index_t C, const head_map& hm,
                       const window_params& w, A inv_k, index_t t0, index_t t1, index_t n,
                       const window_taps<A>* taps, A* d_off, window_scratch<A>& s) {
  const index_t P = w.num_offsets(), H = hm.heads;
  std::fill(d_off, d_off + (t1 - t0) * P, A(0));
  const index_t tv1 = std::min(t1, n);
  if (tv1 <= t0) return;
  index_t lo = t0, hi = t0;
  taps_span(taps, (tv1 - t0) * H, lo, hi);
  const index_t rows = hi - lo + 1;
  const index_t cw = chunk_width(rows, C);
  s.prefix.resize(static_cast<size_t>(rows * cw));
  for (index_t c0 = 0; c0 < C; c0 += cw) {
    const index_t cn = std::min(cw, C - c0);
    local_prefix(xb, stride_t, lo + 1, hi + 1, c0, cn, inv_k, s.prefix.data(), cn);
    const index_t h_first = hm.head_of(c0), h_last = hm.head_of(c0 + cn - 1);
    for (index_t t = t0; t < tv1; ++t) {
      const T* dyr = dyb + t * stride_t;
      A* dr = d_off + (t - t0) * P;
      for (index_t h = h_first; h <= h_last; ++h) {
        const window_taps<A>& k = taps[(t - t0) * H + h];
        const index_t ca = std::max(c0, hm.first_channel(h)), cb = std::min(c0 + cn, hm.first_channel(h + 1));
        const A* s2 = s.prefix.data() + (k.i2 - lo) * cn - c0 + ca;
        const A* s3 = s.prefix.data() + (k.i3 - lo) * cn - c0 + ca;
        if (k.i2 != k.i3)
          dr[hm.left_row(h)] += lane_dot<T, A>(dyr + ca, cb - ca, [&](index_t j) {
            return talkconv::detail::left_slope<A>(s2[j], s3[j]);
          });
        if (!w.causal && k.i0 != k.i1) {
          const A* s0 = s.prefix.data() + (k.i0 - lo) * cn - c0 + ca;
          const A* s1 = s.prefix.data() + (k.i1 - lo) * cn - c0 + ca;
          dr[hm.right_row(h)] += lane_dot<T, A>(dyr + ca, cb - ca, [&](index_t j) {
            return talkconv::detail::right_slope<A>(s0[j], s1[j]);
          });
        }
      }
    }
  }
  for (index_t t = t0; t < tv1; ++t)
    for (index_t h = 0; h < H; ++h) {
      d_off[(t - t0) * P + hm.left_row(h)] *= A(w.max_left);
      if (!w.causal) d_off[(t - t0) * P + hm.right_row(h)] *= A(w.max_right);
    }
}

// Backward to the input of one tile: dx for tokens [t0, t1) of one sequence.
//   dx[tau] = (1/K) sum_t dy[t] sum_{taps j of t with i_j >= tau} w_j  (+ extra, see below)
// Tokens [h0, h1) (all < n) are every token whose window can touch the tile; their taps are in
// `taps` from h0. Each tap is scattered into a tile-local buffer (clipped to the tile's last row,
// dropped left of it) in token order, then summed from the right: no atomics, no global sum, and
// the partial sums stay window-sized. extra(tau, c0, cn, row) may add to a row (in A) before it is
// stored: the layer adds the offset path W^T dz there, so dx is rounded once.
template <class T, class A, class Extra>
void input_grad_tile(const T* dyb, T* dxb, index_t stride_t, index_t C, const head_map& hm, A inv_k, index_t t0,
                     index_t t1, index_t h0, index_t h1, const window_taps<A>* taps, Extra&& extra,
                     window_scratch<A>& s) {
  const index_t rows = t1 - t0;
  const index_t cw = chunk_width(rows, C);
  s.grad.resize(static_cast<size_t>(rows * cw));
  s.run.resize(static_cast<size_t>(cw));
  s.row.resize(static_cast<size_t>(cw));
  for (index_t c0 = 0; c0 < C; c0 += cw) {
    const index_t cn = std::min(cw, C - c0);
    std::fill(s.grad.begin(), s.grad.begin() + rows * cn, A(0));
    const index_t h_first = hm.head_of(c0), h_last = hm.head_of(c0 + cn - 1);
    for (index_t t = h0; t < h1; ++t) {
      const T* dyr = dyb + t * stride_t;
      for (index_t h = h_first; h <= h_last; ++h) {
        const window_taps<A>& k = taps[(t - h0) * hm.heads + h];
        if (talkconv::detail::taps_max(k) < t0 || talkconv::detail::taps_min(k) >= t1 - 1) continue;
        const auto wt = talkconv::detail::make_tap_weights<A>(k);
        const index_t idx[4] = {k.i0, k.i1, k.i2, k.i3};
        const A wv[4] = {wt.w0, wt.w1, wt.w2, wt.w3};
        const index_t ca = std::max(c0, hm.first_channel(h)), cb = std::min(c0 + cn, hm.first_channel(h + 1));
        for (int j = 0; j < 4; ++j) {
          if (idx[j] < t0 || wv[j] == A(0)) continue;
          A* g = s.grad.data() + (std::min(idx[j], t1 - 1) - t0) * cn - c0;
          const A wj = wv[j];
          for (index_t c = ca; c < cb; ++c) g[c] += wj * to_acc<T>(dyr[c]);
        }
      }
    }
    std::fill(s.run.begin(), s.run.begin() + cn, A(0));
    for (index_t tau = t1 - 1; tau >= t0; --tau) {
      const A* g = s.grad.data() + (tau - t0) * cn;
      for (index_t j = 0; j < cn; ++j) {
        s.run[j] += g[j];
        s.row[j] = s.run[j] * inv_k;
      }
      extra(tau, c0, cn, s.row.data());
      T* dxr = dxb + tau * stride_t + c0;
      for (index_t j = 0; j < cn; ++j) dxr[j] = from_acc<T>(s.row[j]);
    }
  }
}

struct no_extra {
  template <class A>
  void operator()(index_t, index_t, index_t, A*) const {}
};

// The reach of all valid tokens' windows, from a function giving the taps of (b, t).
template <class A, class TapsOf>
window_reach reach_of(const seq_shape& shape, const window_params& w, const index_t* lengths, TapsOf&& taps_of) {
  std::vector<window_reach> per_b(static_cast<size_t>(shape.B));
  parallel_tasks(
      shape.B, shape.rows() * w.heads, [] { return 0; },
      [&](index_t b, int&) {
        window_reach r;
        const index_t n = length_of(lengths, b, shape.T);
        for (index_t t = 0; t < n; ++t)
          for (index_t h = 0; h < w.heads; ++h) {
            const window_taps<A> k = taps_of(b, t, h);
            r.left = std::max(r.left, t - (talkconv::detail::taps_min(k) + 1));
            r.right = std::max(r.right, talkconv::detail::taps_max(k) - t);
          }
        per_b[static_cast<size_t>(b)] = r;
      });
  window_reach r;
  for (const auto& q : per_b) r.left = std::max(r.left, q.left), r.right = std::max(r.right, q.right);
  return r;
}

}  // namespace detail

// Forward of the window aggregation (SPEC steps 2-4):
//   y[t, b, c] = I(a_r) - I(a_l - 1)   (the normalized, interpolated window sum; 0 for t >= n_b)
// x, y:    [T, B, C] or [B, T, C] per shape.lay, storage type T.
// offsets: the same layout with width P (left offsets of heads 0..H-1, then right ones when
//          bidirectional), after dropout, in acc_t<T>. Offsets are expected in [0, 1 / (1 - p)].
// lengths: B valid lengths in host memory, or null for T.
// Runs on OpenMP threads of the calling process; allocates only per-thread tile scratch.
// Throws talkconv::error on bad input, before touching memory.
template <class T>
void window_forward(const seq_shape& shape, const window_params& w, const T* x, const acc_t<T>* offsets, T* y,
                    const index_t* lengths = nullptr) {
  using A = acc_t<T>;
  talkconv::detail::validate_problem(shape, w, lengths);
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(offsets, "offsets");
  talkconv::detail::require_pointer(y, "y");
  const detail::head_map hm{w.heads, shape.C / w.heads};
  const seq_strides sx = shape.strides(shape.C), so = shape.strides(w.num_offsets());
  const index_t tile = talkconv::detail::tile_length(w.window_len());
  const index_t tiles = talkconv::detail::ceil_div(shape.T, tile);
  const A inv_k = A(1) / A(w.window_len());
  detail::parallel_tasks(
      shape.B * tiles, shape.rows() * shape.C, [] { return detail::window_scratch<A>{}; },
      [&](index_t task, detail::window_scratch<A>& s) {
        const index_t b = task / tiles, t0 = (task % tiles) * tile, t1 = std::min(t0 + tile, shape.T);
        const index_t n = detail::length_of(lengths, b, shape.T), tv1 = std::min(t1, n);
        s.taps.resize(static_cast<size_t>(tile * w.heads));
        detail::make_tile_taps<A>(w, n, t0, std::max(t0, tv1),
                                  [&](index_t t) { return offsets + t * so.t + b * so.b; }, s.taps.data());
        detail::forward_tile(x + b * sx.b, y + b * sx.b, sx.t, shape.C, hm, inv_k, t0, t1, n, s.taps.data(), s);
      });
}

// Backward of the window aggregation. Given dy (layout of x), writes
//   dx:        the window's gradient to x (overwritten, layout of x),
//   d_offsets: dL/d(offset) per head (overwritten, layout of offsets; may be null to skip).
// Zero for t >= n_b. Deterministic: no atomics, fixed summation order whatever the thread count.
template <class T>
void window_backward(const seq_shape& shape, const window_params& w, const T* x, const acc_t<T>* offsets,
                     const T* dy, T* dx, acc_t<T>* d_offsets, const index_t* lengths = nullptr) {
  using A = acc_t<T>;
  talkconv::detail::validate_problem(shape, w, lengths);
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(offsets, "offsets");
  talkconv::detail::require_pointer(dy, "dy");
  talkconv::detail::require_pointer(dx, "dx");
  const detail::head_map hm{w.heads, shape.C / w.heads};
  const index_t P = w.num_offsets();
  const seq_strides sx = shape.strides(shape.C), so = shape.strides(P);
  const index_t tile = talkconv::detail::tile_length(w.window_len());
  const index_t tiles = talkconv::detail::ceil_div(shape.T, tile);
  const A inv_k = A(1) / A(w.window_len());
  auto row_of = [&](index_t b) { return [&, b](index_t t) { return offsets + t * so.t + b * so.b; }; };
  const detail::window_reach reach = detail::reach_of<A>(shape, w, lengths, [&](index_t b, index_t t, index_t h) {
    return detail::token_taps<A>(w, detail::length_of(lengths, b, shape.T), t, row_of(b)(t), h);
  });
  detail::parallel_tasks(
      shape.B * tiles, shape.rows() * shape.C, [] { return detail::window_scratch<A>{}; },
      [&](index_t task, detail::window_scratch<A>& s) {
        const index_t b = task / tiles, t0 = (task % tiles) * tile, t1 = std::min(t0 + tile, shape.T);
        const index_t n = detail::length_of(lengths, b, shape.T);
        const index_t h0 = std::max<index_t>(0, t0 - reach.right), h1 = std::max(h0, std::min(n, t1 + reach.left));
        s.taps.resize(static_cast<size_t>((h1 - h0) * w.heads));
        detail::make_tile_taps<A>(w, n, h0, h1, row_of(b), s.taps.data());
        if (d_offsets != nullptr) {
          std::vector<A>& d = s.d_off;
          d.resize(static_cast<size_t>((t1 - t0) * P));
          const detail::window_taps<A>* own = s.taps.data() + (std::min(t0, h1) - h0) * w.heads;
          detail::offsets_grad_tile(x + b * sx.b, dy + b * sx.b, sx.t, shape.C, hm, w, inv_k, t0, t1, n, own,
                                    d.data(), s);
          for (index_t t = t0; t < t1; ++t)
            std::copy(d.begin() + (t - t0) * P, d.begin() + (t - t0 + 1) * P, d_offsets + t * so.t + b * so.b);
        }
        detail::input_grad_tile(dy + b * sx.b, dx + b * sx.b, sx.t, shape.C, hm, inv_k, t0, t1, h0, h1,
                                s.taps.data(), detail::no_extra{}, s);
      });
}

}  // namespace cpu
}  // namespace talkconv
