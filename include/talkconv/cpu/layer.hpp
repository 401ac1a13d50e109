// The TaLK layer on the CPU: offsets and window aggregation fused per tile, forward and backward.
#pragma once

#include "talkconv/cpu/offsets.hpp"
#include "talkconv/cpu/window.hpp"
#include "talkconv/layer_args.hpp"
#include "talkconv/shard.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace talkconv {
namespace cpu {
namespace detail {

template <class A>
struct layer_scratch {
  window_scratch<A> win;
  std::vector<A> tmp;  // widened x rows for the projection
  std::vector<A> z;    // projection, then offsets of the tile
  std::vector<A> dz;   // backward: dz of the tile
};

// The most a layer's window can reach: offsets are sigmoids (<= 1) scaled by at most 1 / (1 - p), plus
// one token for rounding; clipped to the sequence by the caller.
inline window_reach layer_reach(const window_params& w, const dropout_params& d) {
  const shard_halo h = window_halo(w, d);  // the rows of x read; the prefix sums start one row further left
  return window_reach{h.left + 1, h.right};
}

// Where a call's rows lie in the whole sequence. x (and dx) hold rows [0, rows), global rows [base,
// base + rows); the call's tokens (y, dy, offsets, saved_offsets rows) are local [own_begin, own_end);
// lengths are global. Tiles follow the whole sequence's grid (cpu_tile_length of T_global from global
// row 0), cut at the call's rows, so a shard whose ends fall on the grid adds its sums in the whole
// call's order. A shard's tiles run in two phases with `between` called in between: the forward runs
// the tiles that read no halo row first (overlapping the halo's arrival), the backward the tiles that
// write halo rows of dx (sent while the rest runs).
struct row_span {
  index_t base = 0, rows = 0, own_begin = 0, own_end = 0, T_global = 0;
  std::function<void()> between;

  static row_span whole(index_t T) { return row_span{0, T, 0, T, T, {}}; }
  static row_span of(const shard_params& s) {
    return row_span{s.first_row(), s.rows(), s.halo.left, s.halo.left + s.own(), s.T, {}};
  }
  // Not the whole sequence (a causal shard starting at 0 has no halo, but it ends before T_global).
  bool sharded() const { return !(base == 0 && own_begin == 0 && own_end == rows && rows == T_global); }
  index_t local_length(index_t n) const { return std::max<index_t>(0, std::min(n - base, rows)); }
  // Runs task(first, last) for the pieces [t0, t1) of the grid within [lo, hi) (local rows), in two
  // phases split by first_phase(t0, t1), calling `between` in between.
  template <class Task, class Pred>
  void run_pieces(index_t tile, index_t lo, index_t hi, Pred&& first_phase, Task&& task) const {
    std::vector<std::pair<index_t, index_t>> pieces[2];
    for (index_t k = (lo + base) / tile; k * tile - base < hi; ++k) {
      const index_t t0 = std::max(k * tile - base, lo), t1 = std::min((k + 1) * tile - base, hi);
      pieces[first_phase(t0, t1) ? 0 : 1].emplace_back(t0, t1);
    }
    task(pieces[0]);
    if (between) between();
    task(pieces[1]);
  }
};

// Forward: per (sequence, time tile), stream the tile's tokens; offsets and taps are made just in time,
// a block of tokens at a time, so the projection reads rows of x that the window pass reads next.
// A shard (span.sharded()): x holds span.rows rows, y and saved_offsets the own tokens only.
template <class T>
void layer_forward(const window_params& w, const forward_args<T>& a, const row_span* span_arg = nullptr) {
  using A = acc_t<T>;
  constexpr index_t block = 64;
  const seq_shape& shape = a.shape;
  const row_span span = span_arg ? *span_arg : row_span::whole(shape.T);
  const index_t P = w.num_offsets();
  const head_map hm{w.heads, shape.C / w.heads};
  const acc_params<T> prm(a.weight, a.bias, P, shape.C);
  const seq_strides sx = strides_of(shape.lay, span.rows, shape.B, shape.C), so = shape.strides(P);
  const seq_strides sy = shape.strides(shape.C);
  const index_t tile = talkconv::detail::cpu_tile_length(w.window_len(), span.T_global, shape.B);
  const A inv_k = A(1) / A(w.window_len());
  const window_reach most = layer_reach(w, a.dropout);
  // A tile reads x rows [t0 - most.left + 1, t1 - 1 + most.right]: interior when none is a halo row.
  auto interior = [&](index_t t0, index_t t1) {
    return !span.sharded() || ((span.own_begin == 0 || t0 - most.left + 1 >= span.own_begin) &&
                               (span.own_end == span.rows || t1 - 1 + most.right < span.own_end));
  };
  span.run_pieces(
      tile, span.own_begin, span.own_end, interior, [&](const std::vector<std::pair<index_t, index_t>>& pieces) {
        const index_t tiles = static_cast<index_t>(pieces.size());
        parallel_tasks(
            shape.B * tiles, shape.rows() * shape.C, [] { return layer_scratch<A>{}; },
            [&](index_t task, layer_scratch<A>& s) {
              const index_t b = task / tiles;
              const index_t t0 = pieces[static_cast<size_t>(task % tiles)].first,
                            t1 = pieces[static_cast<size_t>(task % tiles)].second;
              const index_t n = span.local_length(length_of(a.lengths, b, span.T_global)),
                            tv1 = std::max(t0, std::min(t1, n));
              s.z.resize(static_cast<size_t>(tile * P));
              s.win.taps.resize(static_cast<size_t>(tile * w.heads));
              index_t ready = t0;  // tokens [t0, ready) have their offsets and taps
              auto taps_of = [&](index_t t) {
                for (; ready <= t; ready = std::min(tv1, ready + block)) {
                  const index_t e = std::min(tv1, ready + block);
                  A* z = s.z.data() + (ready - t0) * P;
                  project_rows(a.x + b * sx.b + ready * sx.t, sx.t, e - ready, shape.C, prm, P, z, P, s.tmp);
                  for (index_t u = ready; u < e; ++u) {
                    A* saved = a.saved_offsets ? a.saved_offsets + (u - span.own_begin) * so.t + b * so.b : nullptr;
                    activate_offsets(z + (u - ready) * P, P, u + span.base, b, a.dropout, saved, z + (u - ready) * P);
                  }
                  make_tile_taps<A>(
                      w, n, ready, e, [&](index_t u) { return s.z.data() + (u - t0) * P; },
                      s.win.taps.data() + (ready - t0) * w.heads);
                }
                return s.win.taps.data() + (t - t0) * w.heads;
              };
              const window_reach r{std::min(most.left, tv1), std::min(most.right, std::max<index_t>(0, n - 1 - t0))};
              forward_tile(a.x + b * sx.b, a.y + b * sy.b, sx.t, shape.C, hm, inv_k, t0, t1, n, r, taps_of, s.win,
                           span.own_begin);
              if (a.saved_offsets)
                for (index_t t = tv1; t < t1; ++t) {
                  A* saved = a.saved_offsets + (t - span.own_begin) * so.t + b * so.b;
                  std::fill(saved, saved + P, A(0));
                }
            });
      });
}

// Backward: offsets (saved or recomputed) give the taps; per tile, the offset gradients (local sums
// of x against dy), then dz, then dx = window part + W^T dz rounded once; finally dW and dbias from dz.
// A shard (span.sharded()): x and dx hold span.rows rows, dy and saved_offsets the own tokens only. dx
// gets every row the own tokens reach, halo rows included (there: their share only, for the caller to
// return to the rows' owner); dW and dbias sum over the own tokens only.
template <class T>
void layer_backward(const window_params& w, const backward_args<T>& a, const row_span* span_arg = nullptr) {
  using A = acc_t<T>;
  const seq_shape& shape = a.shape;
  const row_span span = span_arg ? *span_arg : row_span::whole(shape.T);
  const index_t P = w.num_offsets();
  const head_map hm{w.heads, shape.C / w.heads};
  const seq_strides sx = strides_of(shape.lay, span.rows, shape.B, shape.C), so = shape.strides(P);
  const seq_strides sy = shape.strides(shape.C);
  std::vector<index_t> local_n(static_cast<size_t>(shape.B));
  for (index_t b = 0; b < shape.B; ++b)
    local_n[static_cast<size_t>(b)] = span.local_length(length_of(a.lengths, b, span.T_global));

  // What backward needs from forward: o_pre. Saved by the caller, or recomputed here (one projection).
  std::vector<A> recomputed;
  const A* o_pre = a.saved_offsets;
  seq_strides sp = so;              // o_pre's strides
  index_t p_row0 = span.own_begin;  // o_pre's row 0 as a local row
  if (o_pre == nullptr) {
    const seq_shape xs{span.rows, shape.B, shape.C, shape.lay};
    recomputed.resize(static_cast<size_t>(xs.rows() * P));
    dropout_params none = a.dropout;
    none.training = false;
    offsets_forward<T>(xs, w, a.x, a.weight, a.bias, none, recomputed.data(), nullptr,
                       span.sharded() || a.lengths ? local_n.data() : nullptr);
    o_pre = recomputed.data();
    sp = xs.strides(P);
    p_row0 = 0;
  }
  const acc_params<T> prm(a.weight, nullptr, P, shape.C);
  const bool active = a.dropout.active();
  // Offsets after dropout of token (t, b): o_pre times the mask's scale (of the global position),
  // recomputed from the seed.
  struct offset_row {
    const A* pre;
    const dropout_params* d;
    bool active;
    index_t t, b;
    A operator[](index_t j) const {
      return pre[j] * talkconv::detail::dropout_scale<A>(active, d->seed, t, b, j, d->p);
    }
  };
  auto pre_of = [&](index_t b, index_t t) { return o_pre + (t - p_row0) * sp.t + b * sp.b; };
  auto row_of = [&](index_t b, index_t t) { return offset_row{pre_of(b, t), &a.dropout, active, t + span.base, b}; };
  // The whole call measures its tokens' reach; a shard takes the bound (its neighbours' tokens are
  // not here to measure, and tokens out of reach are skipped at no cost to the sums).
  const window_reach reach = span.sharded()
                                 ? layer_reach(w, a.dropout)
                                 : reach_of<A>(shape, w, a.lengths, [&](index_t b, index_t t, index_t h) {
                                     return token_taps<A>(w, length_of(a.lengths, b, shape.T), t, row_of(b, t), h);
                                   });

  const index_t tile = talkconv::detail::cpu_tile_length(w.window_len(), span.T_global, shape.B);
  const A inv_k = A(1) / A(w.window_len());
  std::vector<A> dz_all(static_cast<size_t>(shape.rows() * P), A(0));  // own tokens, layout of the offsets
  // The tiles that write halo rows of dx run first when sharded: the caller returns those rows while
  // the others run.
  auto halo_piece = [&](index_t t0, index_t t1) { return !span.sharded() || t0 < span.own_begin || t1 > span.own_end; };
  span.run_pieces(tile, 0, span.rows, halo_piece, [&](const std::vector<std::pair<index_t, index_t>>& pieces) {
    const index_t tiles = static_cast<index_t>(pieces.size());
    parallel_tasks(
        shape.B * tiles, shape.rows() * shape.C, [] { return layer_scratch<A>{}; },
        [&](index_t task, layer_scratch<A>& s) {
          const index_t b = task / tiles;
          const index_t t0 = pieces[static_cast<size_t>(task % tiles)].first,
                        t1 = pieces[static_cast<size_t>(task % tiles)].second;
          const index_t n = local_n[static_cast<size_t>(b)];
          // The tile's own tokens [o0, o1), valid ones up to ov1; tokens [h0, h1) reach the tile's rows.
          const index_t o0 = std::max(t0, span.own_begin), o1 = std::max(o0, std::min(t1, span.own_end));
          const index_t ov1 = std::max(o0, std::min(o1, n));
          const index_t h0 = std::max(span.own_begin, t0 - reach.right);
          const index_t h1 = std::max(h0, std::min({span.own_end, n, t1 + reach.left}));
          s.win.taps.resize(static_cast<size_t>((h1 - h0) * w.heads));
          make_tile_taps<A>(
              w, n, h0, h1, [&](index_t t) { return row_of(b, t); }, s.win.taps.data());
          // dL/do for the tile's tokens, then dz.
          if (o1 > o0) {
            s.z.resize(static_cast<size_t>((o1 - o0) * P));
            const window_taps<A>* own = s.win.taps.data() + (std::min(o0, h1) - h0) * w.heads;
            offsets_grad_tile(a.x + b * sx.b, a.dy + b * sy.b, sx.t, hm, w, inv_k, o0, o1, n, own, s.z.data(),
                              span.own_begin);
            for (index_t t = o0; t < ov1; ++t)
              offsets_pre_grad(s.z.data() + (t - o0) * P, pre_of(b, t), P, t + span.base, b, a.dropout,
                               dz_all.data() + (t - span.own_begin) * so.t + b * so.b);
          }
          // dx = window part + W^T dz, one rounding.
          input_grad_tile(
              a.dy + b * sy.b, a.dx + b * sx.b, sx.t, shape.C, hm, inv_k, t0, t1, h0, h1, s.win.taps.data(),
              [&](index_t tau, index_t c0, index_t cn, A* row) {
                if (tau >= o0 && tau < ov1)
                  add_offset_path(dz_all.data() + (tau - span.own_begin) * so.t + b * so.b, P, prm.weight, shape.C, c0,
                                  cn, row);
              },
              s.win, span.own_begin);
        });
  });
  // dW, dbias over the own valid tokens.
  std::vector<index_t> own_n(static_cast<size_t>(shape.B));
  for (index_t b = 0; b < shape.B; ++b)
    own_n[static_cast<size_t>(b)] =
        std::max<index_t>(0, std::min(local_n[static_cast<size_t>(b)] - span.own_begin, shape.T));
  param_grads<T>(shape, P, own_n.data(), dz_all.data(), a.x + span.own_begin * sx.t, a.dweight, a.dbias, &sx);
}

}  // namespace detail
}  // namespace cpu
}  // namespace talkconv
