// Building block 4 (CPU) on a time shard: window_forward / window_backward of tokens [t_begin, t_end)
// of longer sequences, from x's rows plus halo (talkconv/shard.hpp), equal to the whole call's rows.
#pragma once

#include "talkconv/cpu/layer.hpp"
#include "talkconv/cpu/window.hpp"
#include "talkconv/shard.hpp"

#include <algorithm>
#include <vector>

namespace talkconv {
namespace cpu {
namespace detail {

// The reach of the own valid tokens' windows (from their offsets). The shard's halo holds the rows of
// offsets in [0, 1 / (1 - p)] (p of the dropout it was made with; 1 without); a larger or negative
// offset would clamp at the buffer's edge instead of the sequence's, so it is refused (invalid_window)
// before anything is written. NaN passes (its window stays at its token).
template <class A>
window_reach shard_window_reach(const shard_params& s, const seq_shape& shape, const window_params& w,
                                const dropout_params& d, const A* offsets, const index_t* lengths,
                                const row_span& span) {
  const seq_strides so = shape.strides(w.num_offsets());
  const A most = d.active() ? A(1) / (A(1) - A(d.p)) : A(1);  // dropout_scale of a kept offset, times o <= 1
  window_reach r;
  for (index_t b = 0; b < shape.B; ++b) {
    const index_t n = span.local_length(length_of(lengths, b, s.T));
    for (index_t t = span.own_begin; t < std::min(span.own_end, n); ++t) {
      const A* row = offsets + (t - span.own_begin) * so.t + b * so.b;
      for (index_t j = 0; j < w.num_offsets(); ++j)
        if (row[j] < A(0) || row[j] > most)
          talkconv::detail::fail(status::invalid_window, "offsets", "offset ", j, " of token ", t + span.base,
                                 " (sequence ", b, ") = ", row[j], " is outside [0, ", most,
                                 "], the offsets this shard's halo holds (make the shard with the dropout that "
                                 "scaled them)");
      for (index_t h = 0; h < w.heads; ++h) {
        const window_taps<A> k = token_taps<A>(w, n, t, row, h);
        r.left = std::max(r.left, t - (talkconv::detail::taps_min(k) + 1));
        r.right = std::max(r.right, talkconv::detail::taps_max(k) - t);
      }
    }
  }
  return r;
}

}  // namespace detail

// window_forward on a time shard s (from make_shard with the dropout that scaled the offsets):
//   shape      own tokens (shape.T = s.own())
//   x          s.rows() rows: s.halo.left before the own ones, s.halo.right after
//   offsets, y own tokens only (offsets after dropout, as for window_forward)
//   lengths    global lengths (<= s.T), host memory
// y equals the whole call's rows [t_begin, t_end) up to rounding (bitwise when the shard's ends fall on
// the whole call's tile grid). d: the dropout the shard was made with; offsets outside [0, 1 / (1 - p)]
// (1 without dropout) fail with invalid_window.
template <class T>
void window_forward(const seq_shape& shape, const window_params& w, const T* x, const acc_t<T>* offsets, T* y,
                    const index_t* lengths, const shard_params& s, const dropout_params& d = {}) {
  using A = acc_t<T>;
  talkconv::detail::validate_dropout(d);
  talkconv::detail::validate_shard(s, shape, w, d, lengths);
  talkconv::detail::validate_bytes(seq_shape{s.rows(), shape.B, shape.C, shape.lay}, w, sizeof(T), sizeof(A));
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(offsets, "offsets");
  talkconv::detail::require_pointer(y, "y");
  const detail::row_span span = detail::row_span::of(s);
  detail::shard_window_reach<A>(s, shape, w, d, offsets, lengths, span);
  const detail::head_map hm{w.heads, shape.C / w.heads};
  const seq_strides sx = strides_of(shape.lay, s.rows(), shape.B, shape.C), sy = shape.strides(shape.C),
                    so = shape.strides(w.num_offsets());
  const index_t tile = talkconv::detail::cpu_tile_length(w.window_len(), s.T, shape.B);
  const A inv_k = A(1) / A(w.window_len());
  span.run_pieces(
      tile, span.own_begin, span.own_end, [](index_t, index_t) { return true; },
      [&](const std::vector<std::pair<index_t, index_t>>& pieces) {
        const index_t tiles = static_cast<index_t>(pieces.size());
        detail::parallel_tasks(
            shape.B * tiles, shape.rows() * shape.C, [] { return detail::window_scratch<A>{}; },
            [&](index_t task, detail::window_scratch<A>& sc) {
              const index_t b = task / tiles;
              const auto& pc = pieces[static_cast<size_t>(task % tiles)];
              const index_t t0 = pc.first, t1 = pc.second;
              const index_t n = span.local_length(detail::length_of(lengths, b, s.T)),
                            tv1 = std::max(t0, std::min(t1, n));
              sc.taps.resize(static_cast<size_t>((t1 - t0) * w.heads));
              detail::make_tile_taps<A>(
                  w, n, t0, tv1, [&](index_t t) { return offsets + (t - span.own_begin) * so.t + b * so.b; },
                  sc.taps.data());
              const detail::window_taps<A>* taps = sc.taps.data();
              detail::forward_tile(
                  x + b * sx.b, y + b * sy.b, sx.t, shape.C, hm, inv_k, t0, t1, n,
                  detail::tile_reach(taps, t0, tv1, w.heads), [&](index_t t) { return taps + (t - t0) * w.heads; }, sc,
                  span.own_begin);
            });
      });
}

// window_backward on a time shard: dy and d_offsets own tokens only, dx s.rows() rows (overwritten):
// own rows get the own tokens' share, halo rows the own tokens' share of those rows (add them to the
// owners' rows). d_offsets may be null.
template <class T>
void window_backward(const seq_shape& shape, const window_params& w, const T* x, const acc_t<T>* offsets, const T* dy,
                     T* dx, acc_t<T>* d_offsets, const index_t* lengths, const shard_params& s,
                     const dropout_params& d = {}) {
  using A = acc_t<T>;
  talkconv::detail::validate_dropout(d);
  talkconv::detail::validate_shard(s, shape, w, d, lengths);
  talkconv::detail::validate_bytes(seq_shape{s.rows(), shape.B, shape.C, shape.lay}, w, sizeof(T), sizeof(A));
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(offsets, "offsets");
  talkconv::detail::require_pointer(dy, "dy");
  talkconv::detail::require_pointer(dx, "dx");
  const detail::row_span span = detail::row_span::of(s);
  const detail::window_reach reach = detail::shard_window_reach<A>(s, shape, w, d, offsets, lengths, span);
  const detail::head_map hm{w.heads, shape.C / w.heads};
  const index_t P = w.num_offsets();
  const seq_strides sx = strides_of(shape.lay, s.rows(), shape.B, shape.C), sy = shape.strides(shape.C),
                    so = shape.strides(P);
  const index_t tile = talkconv::detail::cpu_tile_length(w.window_len(), s.T, shape.B);
  const A inv_k = A(1) / A(w.window_len());
  span.run_pieces(
      tile, 0, span.rows, [](index_t, index_t) { return true; },
      [&](const std::vector<std::pair<index_t, index_t>>& pieces) {
        const index_t tiles = static_cast<index_t>(pieces.size());
        detail::parallel_tasks(
            shape.B * tiles, shape.rows() * shape.C, [] { return detail::window_scratch<A>{}; },
            [&](index_t task, detail::window_scratch<A>& sc) {
              const index_t b = task / tiles;
              const auto& pc = pieces[static_cast<size_t>(task % tiles)];
              const index_t t0 = pc.first, t1 = pc.second;
              const index_t n = span.local_length(detail::length_of(lengths, b, s.T));
              const index_t o0 = std::max(t0, span.own_begin), o1 = std::max(o0, std::min(t1, span.own_end));
              const index_t h0 = std::max(span.own_begin, t0 - reach.right);
              const index_t h1 = std::max(h0, std::min({span.own_end, n, t1 + reach.left}));
              sc.taps.resize(static_cast<size_t>((h1 - h0) * w.heads));
              detail::make_tile_taps<A>(
                  w, n, h0, h1, [&](index_t t) { return offsets + (t - span.own_begin) * so.t + b * so.b; },
                  sc.taps.data());
              if (d_offsets != nullptr && o1 > o0) {
                std::vector<A>& dd = sc.d_off;
                dd.resize(static_cast<size_t>((o1 - o0) * P));
                const detail::window_taps<A>* own = sc.taps.data() + (std::min(o0, h1) - h0) * w.heads;
                detail::offsets_grad_tile(x + b * sx.b, dy + b * sy.b, sx.t, hm, w, inv_k, o0, o1, n, own, dd.data(),
                                          span.own_begin);
                for (index_t t = o0; t < o1; ++t)
                  std::copy(dd.begin() + (t - o0) * P, dd.begin() + (t - o0 + 1) * P,
                            d_offsets + (t - span.own_begin) * so.t + b * so.b);
              }
              detail::input_grad_tile(dy + b * sy.b, dx + b * sx.b, sx.t, shape.C, hm, inv_k, t0, t1, h0, h1,
                                      sc.taps.data(), detail::no_extra{}, sc, span.own_begin);
            });
      });
}

}  // namespace cpu
}  // namespace talkconv
