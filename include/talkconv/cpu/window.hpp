// Building block 4 (CPU): normalized window aggregation with interpolated edges, forward and backward.
#pragma once

#include "talkconv/cpu/convert.hpp"
#include "talkconv/cpu/heads.hpp"
#include "talkconv/cpu/parallel.hpp"
#include "talkconv/cpu/prefix_sum.hpp"
#include "talkconv/detail/math.hpp"
#include "talkconv/detail/tile_plan.hpp"
#include "talkconv/params.hpp"
#include "talkconv/traits.hpp"

#include <algorithm>
#include <type_traits>
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

// Channels processed together: a ring of `rows` rows of that width stays within 4 MiB. Only its two
// fronts are hot (the newest rows, and the oldest ones the windows' left edges read, which walk
// through the ring in address order), so a ring larger than L2 streams from L3 well; full rows then
// fit for windows up to K ~ 1024 at C = 512, and every row of x, y, dy, dx is one contiguous run.
template <class A>
inline index_t chunk_width(index_t rows, index_t C) {
  const index_t budget = index_t(4 * 1024 * 1024) / index_t(sizeof(A));
  index_t w = (budget / (rows > 0 ? rows : 1)) / 16 * 16;
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
  constexpr index_t ahead = 32;
  for (index_t t = t_begin; t < t_end; ++t) {
    const auto row = offsets_row(t);
    if constexpr (std::is_pointer<std::decay_t<decltype(row)>>::value) {
      // Offsets rows of one sequence are B * P apart: fetch ahead, as for x.
      if (t + ahead < t_end) prefetch_row(offsets_row(t + ahead), w.num_offsets());
    }
    for (index_t h = 0; h < w.heads; ++h) taps[(t - t_begin) * w.heads + h] = token_taps<A>(w, n, t, row, h);
  }
}

// How far the windows of tokens [t_begin, t_end) reach, from their taps: every tap of token t lies
// in [t - left, t + right].
template <class A>
window_reach tile_reach(const window_taps<A>* taps, index_t t_begin, index_t t_end, index_t H) {
  window_reach r;
  for (index_t t = t_begin; t < t_end; ++t)
    for (index_t h = 0; h < H; ++h) {
      const window_taps<A>& k = taps[(t - t_begin) * H + h];
      r.left = std::max(r.left, t - talkconv::detail::taps_min(k));
      r.right = std::max(r.right, talkconv::detail::taps_max(k) - t);
    }
  return r;
}

// `rows` rows of `width` accumulators holding a sliding range of row indices (index i in slot
// (i - first) mod rows): the tile-local prefix sums of the forward, or the scattered tap weights of
// the backward. Only a window's height of rows is ever live, so full rows of C channels fit in L2.
// The row count is a power of two, so finding a slot is a mask, not a division.
template <class A>
struct ring_rows {
  A* data;
  index_t mask, width, first;
  A* row(index_t i) const { return data + ((i - first) & mask) * width; }
};

inline index_t ring_size(index_t rows) {
  index_t r = 1;
  while (r < rows) r <<= 1;
  return r;
}

template <class A>
struct window_scratch {
  std::vector<A> ring;   // ring_rows storage
  std::vector<A> run;    // backward: running suffix sum, one chunk
  std::vector<A> row;    // backward: one dx row in A, one chunk
  std::vector<A> d_off;  // backward: offset gradients of the tile, tile x P
  std::vector<A> dy_acc; // backward: one dy row widened to A, one chunk (storage types other than A)
  std::vector<window_taps<A>> taps;
};

// Streams the tile-local prefix sums of channels [c0, c0 + cn) past tokens [t0, tv1) (all < n), whose
// taps reach `r`: visit(t, S) is called in token order, and S.row(i) - S.row(j) = scale * sum_{tau = j +
// 1}^{i} x[tau] for any two indices i, j that token t's taps name. The sums start from zero at the
// tile's first index and are re-based on the oldest live row once per ring's worth of new rows (so
// the re-base costs O(1) per row and channel), which keeps their size, and the rounding, set by the
// window and never by t or the tile (SPEC Numerics).
// x is read once per tile plus the window's halo.
template <class T, class A, class Visit>
void stream_prefix(const T* xb, index_t stride_t, index_t c0, index_t cn, A scale, index_t t0, index_t tv1,
                   index_t n, window_reach r, std::vector<A>& storage, Visit&& visit) {
  const index_t first = std::max<index_t>(-1, t0 - r.left);
  const index_t last = std::min(n - 1, tv1 - 1 + r.right);
  const index_t rows = ring_size(r.left + r.right + 1);
  storage.resize(static_cast<size_t>(rows * cn));
  const ring_rows<A> S{storage.data(), rows - 1, cn, first};
  std::fill(S.row(first), S.row(first) + cn, A(0));
  index_t next = first;  // highest index whose sum is in the ring
  index_t based = first;  // `next` when the sums were last re-based
  for (index_t t = t0; t < tv1; ++t) {
    const index_t oldest = std::max(first, t - r.left);  // lowest index still needed
    if (next - based >= rows) {
      const A* base = S.row(oldest);
      for (index_t i = oldest + 1; i <= next; ++i) {
        A* q = S.row(i);
        for (index_t j = 0; j < cn; ++j) q[j] -= base[j];
      }
      std::fill(S.row(oldest), S.row(oldest) + cn, A(0));
      based = next;
    }
    for (const index_t need = std::min(last, t + r.right); next < need; ++next) {
      const T* xr = xb + (next + 1) * stride_t + c0;
      if (next + 1 + prefetch_rows_ahead <= last) prefetch_row(xr + prefetch_rows_ahead * stride_t, cn);
      scan_step(S.row(next), xr, cn, scale, S.row(next + 1));
    }
    visit(t, S);
  }
}

// out[j] = window_value(fr, fl, s0[j], s1[j], s2[j], s3[j]) for j < n, stored as T. The rows are the ring's and
// out the caller's: declared not to overlap, so a float or double loop is vectorized without run-time overlap
// checks (f32 window forward 4-5% faster at 32 and 128 channels a head).
template <class A>
inline void window_row_acc(A* __restrict out, const A* __restrict s0, const A* __restrict s1, const A* __restrict s2,
                           const A* __restrict s3, index_t n, A fr, A fl) {
  for (index_t j = 0; j < n; ++j) out[j] = talkconv::detail::window_value_frac<A>(fr, fl, s0[j], s1[j], s2[j], s3[j]);
}
template <class T, class A>
inline void window_row(T* out, const A* s0, const A* s1, const A* s2, const A* s3, index_t n, A fr, A fl) {
  if constexpr (stored_as_acc<T>) {
    window_row_acc<A>(out, s0, s1, s2, s3, n, fr, fl);
  } else {  // values rounded a block at a time (out cannot overlap the rows: it is not of type A)
    store_acc(out, n, [&](index_t j) { return talkconv::detail::window_value_frac<A>(fr, fl, s0[j], s1[j], s2[j], s3[j]); });
  }
}

// Forward of one tile: y for tokens [t0, t1) of one sequence of valid length n, channels [0, C).
// xb / yb point at token 0 of the sequence. taps_of(t) gives the H taps of token t < n; it is called
// in token order (once per channel chunk), so a caller may make them just in time. Every tap lies
// within `r` of its token. Rows t >= n are zeroed. y row t is at yb + (t - y_row0) * stride_t (a time
// shard writes only its own rows, x also holding the halo rows before them).
template <class T, class A, class TapsOf>
void forward_tile(const T* xb, T* yb, index_t stride_t, index_t C, const head_map& hm, A inv_k, index_t t0, index_t t1,
                  index_t n, window_reach r, TapsOf&& taps_of, window_scratch<A>& s, index_t y_row0 = 0) {
  const index_t tv1 = std::min(t1, n);
  if (tv1 > t0) {
    const index_t cw = chunk_width<A>(ring_size(r.left + r.right + 1), C);
    for (index_t c0 = 0; c0 < C; c0 += cw) {
      const index_t cn = std::min(cw, C - c0);
      const index_t h_first = hm.head_of(c0), h_last = hm.head_of(c0 + cn - 1);
      stream_prefix(xb, stride_t, c0, cn, inv_k, t0, tv1, n, r, s.ring, [&](index_t t, const ring_rows<A>& S) {
        T* yr = yb + (t - y_row0) * stride_t;
        if (t + prefetch_rows_ahead < tv1) prefetch_row(yr + prefetch_rows_ahead * stride_t + c0, cn, true);
        const window_taps<A>* taps = taps_of(t);
        for (index_t h = h_first; h <= h_last; ++h) {
          const window_taps<A>& k = taps[h];
          const index_t ca = std::max(c0, hm.first_channel(h)), cb = std::min(c0 + cn, hm.first_channel(h + 1));
          const index_t o = ca - c0;
          window_row<T, A>(yr + ca, S.row(k.i0) + o, S.row(k.i1) + o, S.row(k.i2) + o, S.row(k.i3) + o, cb - ca, k.fr,
                           k.fl);
        }
      });
    }
  }
  for (index_t t = std::max(t0, tv1); t < t1; ++t)
    std::fill(yb + (t - y_row0) * stride_t, yb + (t - y_row0) * stride_t + C, from_acc<T>(A(0)));
}

// Backward to the offsets of one tile: d_off[(t - t0) * P + j] = dL/do_j for tokens [t0, t1), zero for
// t >= n. dy row t is at dyb + (t - dy_row0) * stride_t (here and in input_grad_tile: a time shard's dy
// holds its own tokens only); x row tau at xb + tau * stride_t. A slope is x at one row over K
// (detail::left_slope_row / right_slope_row, SPEC's S differences without the prefix sums: the CUDA
// kernel reads the same rows); the channel sum of each head runs in a fixed order (lane_dot).
template <class T, class A>
void offsets_grad_tile(const T* xb, const T* dyb, index_t stride_t, const head_map& hm, const window_params& w,
                       A inv_k, index_t t0, index_t t1, index_t n, const window_taps<A>* taps, A* d_off,
                       index_t dy_row0 = 0) {
  const index_t P = w.num_offsets(), H = hm.heads;
  std::fill(d_off, d_off + (t1 - t0) * P, A(0));
  const index_t tv1 = std::min(t1, n);
  for (index_t t = t0; t < tv1; ++t) {
    const T* dyr = dyb + (t - dy_row0) * stride_t;
    A* dr = d_off + (t - t0) * P;
    for (index_t h = 0; h < H; ++h) {
      const window_taps<A>& k = taps[(t - t0) * H + h];
      const index_t ca = hm.first_channel(h), cn = hm.head_dim;
      const index_t left = talkconv::detail::left_slope_row(k);
      const index_t right = w.causal ? index_t(-1) : talkconv::detail::right_slope_row(k);
      const T* xl = left >= 0 ? xb + left * stride_t + ca : nullptr;
      const T* xr = right >= 0 ? xb + right * stride_t + ca : nullptr;
      if (xl && xr) {  // both edges fractional: dy widened once for both
        lane_dot2<T, A>(
            dyr + ca, cn, [&](index_t j) { return inv_k * to_acc<T>(xl[j]); },
            [&](index_t j) { return inv_k * to_acc<T>(xr[j]); }, dr + hm.left_row(h), dr + hm.right_row(h));
      } else if (xl) {
        dr[hm.left_row(h)] = lane_dot<T, A>(dyr + ca, cn, [&](index_t j) { return inv_k * to_acc<T>(xl[j]); });
      } else if (xr) {
        dr[hm.right_row(h)] = lane_dot<T, A>(dyr + ca, cn, [&](index_t j) { return inv_k * to_acc<T>(xr[j]); });
      }
    }
  }
  for (index_t t = t0; t < tv1; ++t)
    for (index_t h = 0; h < H; ++h) {
      A* dr = d_off + (t - t0) * P;
      dr[hm.left_row(h)] = talkconv::detail::offset_grad_of_sum<A>(dr[hm.left_row(h)], true, w.max_left, w.max_right);
      if (!w.causal)
        dr[hm.right_row(h)] =
            talkconv::detail::offset_grad_of_sum<A>(dr[hm.right_row(h)], false, w.max_left, w.max_right);
    }
}

struct no_extra {
  template <class A>
  void operator()(index_t, index_t, index_t, A*) const {}
};

// g_j[c] += w_j * dy[c] for c in [ca, cb), j = 0..3, four distinct rows in one pass over dy: each element
// gets the same multiply-adds in the same order as four passes would give it.
template <class A>
inline void scatter_rows4(A* __restrict g0, A* __restrict g1, A* __restrict g2, A* __restrict g3, A w0, A w1, A w2,
                          A w3, const A* __restrict dy, index_t ca, index_t cb) {
  for (index_t c = ca; c < cb; ++c) {
    const A d = dy[c];
    g0[c] = lane_madd<A>(w0, d, g0[c]);
    g1[c] = lane_madd<A>(w1, d, g1[c]);
    g2[c] = lane_madd<A>(w2, d, g2[c]);
    g3[c] = lane_madd<A>(w3, d, g3[c]);
  }
}

// One row of the backward's suffix sum: run += g, out = run * inv_k, g = 0 (n channels).
template <class A>
inline void suffix_row_to(A* __restrict run, A* __restrict g, A inv_k, index_t n, A* __restrict out) {
  for (index_t j = 0; j < n; ++j) {
    run[j] += g[j];
    out[j] = run[j] * inv_k;
    g[j] = A(0);
  }
}

// Backward to the input of one tile: dx for tokens [t0, t1) of one sequence.
//   dx[tau] = (1/K) sum_t dy[t] sum_{taps j of t with i_j >= tau} w_j  (+ extra, see below)
// Tokens [h0, h1) (all < n) are every token whose window can touch the tile; their taps are in
// `taps` from h0. Tokens are taken from the last down: each scatters its tap weights (clipped to the
// tile's last row, dropped left of the tile) into a ring of rows, and a row is summed into the running
// suffix sum and stored as soon as no token left to do can reach it. No atomics, no global sum, and
// the partial sums stay window-sized. extra(tau, c0, cn, row) may add to a row (in A) before it is
// stored: the layer adds the offset path W^T dz there, so dx is rounded once.
template <class T, class A, class Extra>
void input_grad_tile(const T* dyb, T* dxb, index_t stride_t, index_t C, const head_map& hm, A inv_k, index_t t0,
                     index_t t1, index_t h0, index_t h1, const window_taps<A>* taps, Extra&& extra,
                     window_scratch<A>& s, index_t dy_row0 = 0) {
  const window_reach r = tile_reach(taps, h0, h1, hm.heads);
  const index_t rows = ring_size(r.left + r.right + 1);
  const index_t cw = chunk_width<A>(rows, C);
  s.run.resize(static_cast<size_t>(cw));
  s.row.resize(static_cast<size_t>(cw));
  if (!stored_as_acc<T>) s.dy_acc.resize(static_cast<size_t>(cw));
  for (index_t c0 = 0; c0 < C; c0 += cw) {
    const index_t cn = std::min(cw, C - c0);
    s.ring.assign(static_cast<size_t>(rows * cn), A(0));
    const ring_rows<A> G{s.ring.data(), rows - 1, cn, t0};  // every index used is >= t0
    std::fill(s.run.begin(), s.run.begin() + cn, A(0));
    index_t pending = t1 - 1;  // highest row not yet stored
    auto store_rows_above = [&](index_t bound) {
      for (; pending >= t0 && pending > bound; --pending) {
        A* g = G.row(pending);
        T* dxr = dxb + pending * stride_t + c0;
        if (pending - prefetch_rows_ahead >= t0) prefetch_row(dxr - prefetch_rows_ahead * stride_t, cn, true);
        if constexpr (stored_as_acc<T> && std::is_same<std::decay_t<Extra>, no_extra>::value) {
          suffix_row_to(s.run.data(), g, inv_k, cn, dxr);  // dx straight from the running sum
        } else {
          suffix_row_to(s.run.data(), g, inv_k, cn, s.row.data());
          extra(pending, c0, cn, s.row.data());
          store_acc(dxr, cn, [&](index_t j) { return s.row[static_cast<size_t>(j)]; });
        }
      }
    };
    const index_t h_first = hm.head_of(c0), h_last = hm.head_of(c0 + cn - 1);
    for (index_t t = h1 - 1; t >= h0; --t) {
      store_rows_above(t + r.right);  // no token <= t has a tap above t + right
      const T* dyr = dyb + (t - dy_row0) * stride_t;
      if (t - prefetch_rows_ahead >= h0) prefetch_row(dyr - prefetch_rows_ahead * stride_t + c0, cn);
      const A* dya;  // dy[t, c] in A at dya[c], c in [c0, c0 + cn)
      if constexpr (stored_as_acc<T>) {
        dya = dyr;
      } else {
        row_convert<T>::widen(dyr + c0, cn, s.dy_acc.data());
        dya = s.dy_acc.data() - c0;
      }
      for (index_t h = h_first; h <= h_last; ++h) {
        const window_taps<A>& k = taps[(t - h0) * hm.heads + h];
        if (talkconv::detail::taps_max(k) < t0 || talkconv::detail::taps_min(k) >= t1 - 1) continue;
        const auto wt = talkconv::detail::make_tap_weights<A>(k);
        const index_t idx[4] = {k.i0, k.i1, k.i2, k.i3};
        const A wv[4] = {wt.w0, wt.w1, wt.w2, wt.w3};
        const index_t ca = std::max(c0, hm.first_channel(h)), cb = std::min(c0 + cn, hm.first_channel(h + 1));
        A* g[4];
        A wg[4];
        int m = 0;
        for (int j = 0; j < 4; ++j) {
          if (idx[j] < t0 || wv[j] == A(0)) continue;
          g[m] = G.row(std::min(idx[j], t1 - 1)) - c0;
          wg[m++] = wv[j];
        }
        // One pass, dy read once for the four rows (each element's sums unchanged): window_bwd f32 45.5-49.2 ->
        // 42.8-45.1 ms; talk_bwd f32 C = 256 102-111 -> 86-94 ms, C = 1024 369-372 -> 321-327 ms (alternating
        // A/B, 2026-11-30; an A/B one session earlier had measured the layer slower with it, cause unknown).
        bool four = m == 4;
        for (int i = 0; i < m; ++i)
          for (int q = i + 1; q < m; ++q) four = four && g[i] != g[q];
        if (four) {
          scatter_rows4(g[0], g[1], g[2], g[3], wg[0], wg[1], wg[2], wg[3], dya, ca, cb);
        } else {
          for (int j = 0; j < m; ++j) {
            A* gj = g[j];
            const A wj = wg[j];
            for (index_t c = ca; c < cb; ++c) gj[c] = lane_madd<A>(wj, dya[c], gj[c]);
          }
        }
      }
    }
    store_rows_above(t0 - 1);
  }
}

// The reach of all valid tokens' windows, from a function giving the taps of (b, t).
template <class A, class TapsOf>
window_reach reach_of(const seq_shape& shape, const window_params& w, const index_t* lengths, TapsOf&& taps_of) {
  // Tasks of `span` tokens of one sequence (one sequence alone would leave all but one thread idle); the
  // maximum does not depend on the order the tasks finish in.
  constexpr index_t span = 4096;
  const index_t per_seq = talkconv::detail::ceil_div(shape.T, span);
  std::vector<window_reach> per_task(static_cast<size_t>(shape.B * per_seq));
  parallel_tasks(
      shape.B * per_seq, shape.rows() * w.heads, [] { return 0; },
      [&](index_t task, int&) {
        window_reach r;
        const index_t b = task / per_seq, t0 = (task % per_seq) * span;
        const index_t n = length_of(lengths, b, shape.T), t1 = std::min(n, t0 + span);
        for (index_t t = t0; t < t1; ++t)
          for (index_t h = 0; h < w.heads; ++h) {
            const window_taps<A> k = taps_of(b, t, h);
            r.left = std::max(r.left, t - (talkconv::detail::taps_min(k) + 1));
            r.right = std::max(r.right, talkconv::detail::taps_max(k) - t);
          }
        per_task[static_cast<size_t>(task)] = r;
      });
  window_reach r;
  for (const auto& q : per_task) r.left = std::max(r.left, q.left), r.right = std::max(r.right, q.right);
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
  talkconv::detail::validate_bytes(shape, w, sizeof(T), sizeof(A));
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(offsets, "offsets");
  talkconv::detail::require_pointer(y, "y");
  const detail::head_map hm{w.heads, shape.C / w.heads};
  const seq_strides sx = shape.strides(shape.C), so = shape.strides(w.num_offsets());
  const index_t tile = talkconv::detail::cpu_tile_length(w.window_len(), shape.T, shape.B);
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
        const detail::window_taps<A>* taps = s.taps.data();
        detail::forward_tile(x + b * sx.b, y + b * sx.b, sx.t, shape.C, hm, inv_k, t0, t1, n,
                             detail::tile_reach(taps, t0, std::max(t0, tv1), w.heads),
                             [&](index_t t) { return taps + (t - t0) * w.heads; }, s);
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
  talkconv::detail::validate_bytes(shape, w, sizeof(T), sizeof(A));
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(offsets, "offsets");
  talkconv::detail::require_pointer(dy, "dy");
  talkconv::detail::require_pointer(dx, "dx");
  const detail::head_map hm{w.heads, shape.C / w.heads};
  const index_t P = w.num_offsets();
  const seq_strides sx = shape.strides(shape.C), so = shape.strides(P);
  const index_t tile = talkconv::detail::cpu_tile_length(w.window_len(), shape.T, shape.B);
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
          detail::offsets_grad_tile(x + b * sx.b, dy + b * sx.b, sx.t, hm, w, inv_k, t0, t1, n, own, d.data());
          for (index_t t = t0; t < t1; ++t)
            std::copy(d.begin() + (t - t0) * P, d.begin() + (t - t0 + 1) * P, d_offsets + t * so.t + b * so.b);
        }
        detail::input_grad_tile(dy + b * sx.b, dx + b * sx.b, sx.t, shape.C, hm, inv_k, t0, t1, h0, h1,
                                s.taps.data(), detail::no_extra{}, s);
      });
}

}  // namespace cpu
}  // namespace talkconv
