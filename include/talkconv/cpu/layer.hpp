// The TaLK layer on the CPU: offsets and window aggregation fused per tile, forward and backward.
#pragma once

#include "talkconv/cpu/offsets.hpp"
#include "talkconv/cpu/window.hpp"
#include "talkconv/layer_args.hpp"

#include <algorithm>
#include <cmath>
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
  const double scale = d.active() ? 1.0 / (1.0 - double(d.p)) : 1.0;
  // Capped before the conversion (L / (1 - p) may exceed any index); 2^62 is beyond any sequence.
  auto reach = [scale](index_t m) { return static_cast<index_t>(std::min(std::ceil(double(m) * scale), 0x1p62)); };
  return window_reach{reach(w.max_left) + 2, w.causal ? 0 : reach(w.max_right) + 1};
}

// Forward: per (sequence, time tile), stream the tile's tokens; offsets and taps are made just in time,
// a block of tokens at a time, so the projection reads rows of x that the window pass reads next.
template <class T>
void layer_forward(const window_params& w, const forward_args<T>& a) {
  using A = acc_t<T>;
  constexpr index_t block = 64;
  const seq_shape& shape = a.shape;
  const index_t P = w.num_offsets();
  const head_map hm{w.heads, shape.C / w.heads};
  const acc_params<T> prm(a.weight, a.bias, P, shape.C);
  const seq_strides sx = shape.strides(shape.C), so = shape.strides(P);
  const index_t tile = talkconv::detail::cpu_tile_length(w.window_len(), shape.T, shape.B);
  const index_t tiles = talkconv::detail::ceil_div(shape.T, tile);
  const A inv_k = A(1) / A(w.window_len());
  const window_reach most = layer_reach(w, a.dropout);
  parallel_tasks(
      shape.B * tiles, shape.rows() * shape.C, [] { return layer_scratch<A>{}; },
      [&](index_t task, layer_scratch<A>& s) {
        const index_t b = task / tiles, t0 = (task % tiles) * tile, t1 = std::min(t0 + tile, shape.T);
        const index_t n = length_of(a.lengths, b, shape.T), tv1 = std::max(t0, std::min(t1, n));
        s.z.resize(static_cast<size_t>(tile * P));
        s.win.taps.resize(static_cast<size_t>(tile * w.heads));
        index_t ready = t0;  // tokens [t0, ready) have their offsets and taps
        auto taps_of = [&](index_t t) {
          for (; ready <= t; ready = std::min(tv1, ready + block)) {
            const index_t e = std::min(tv1, ready + block);
            A* z = s.z.data() + (ready - t0) * P;
            project_rows(a.x + b * sx.b + ready * sx.t, sx.t, e - ready, shape.C, prm, P, z, P, s.tmp);
            for (index_t u = ready; u < e; ++u) {
              A* saved = a.saved_offsets ? a.saved_offsets + u * so.t + b * so.b : nullptr;
              activate_offsets(z + (u - ready) * P, P, u, b, a.dropout, saved, z + (u - ready) * P);
            }
            make_tile_taps<A>(w, n, ready, e, [&](index_t u) { return s.z.data() + (u - t0) * P; },
                              s.win.taps.data() + (ready - t0) * w.heads);
          }
          return s.win.taps.data() + (t - t0) * w.heads;
        };
        const window_reach r{std::min(most.left, tv1), std::min(most.right, std::max<index_t>(0, n - 1 - t0))};
        forward_tile(a.x + b * sx.b, a.y + b * sx.b, sx.t, shape.C, hm, inv_k, t0, t1, n, r, taps_of, s.win);
        if (a.saved_offsets)
          for (index_t t = tv1; t < t1; ++t) {
            A* saved = a.saved_offsets + t * so.t + b * so.b;
            std::fill(saved, saved + P, A(0));
          }
      });
}

// Backward: offsets (saved or recomputed) give the taps; per tile, the offset gradients (local sums
// of x against dy), then dz, then dx = window part + W^T dz rounded once; finally dW and dbias from dz.
template <class T>
void layer_backward(const window_params& w, const backward_args<T>& a) {
  using A = acc_t<T>;
  const seq_shape& shape = a.shape;
  const index_t P = w.num_offsets();
  const head_map hm{w.heads, shape.C / w.heads};
  const seq_strides sx = shape.strides(shape.C), so = shape.strides(P);

  // What backward needs from forward: o_pre. Saved by the caller, or recomputed here (one projection).
  std::vector<A> recomputed;
  const A* o_pre = a.saved_offsets;
  if (o_pre == nullptr) {
    recomputed.resize(static_cast<size_t>(shape.rows() * P));
    dropout_params none = a.dropout;
    none.training = false;
    offsets_forward<T>(shape, w, a.x, a.weight, a.bias, none, recomputed.data(), nullptr, a.lengths);
    o_pre = recomputed.data();
  }
  const acc_params<T> prm(a.weight, nullptr, P, shape.C);
  const bool active = a.dropout.active();
  // Offsets after dropout of token (t, b): o_pre times the mask's scale, recomputed from the seed.
  struct offset_row {
    const A* pre;
    const dropout_params* d;
    bool active;
    index_t t, b;
    A operator[](index_t j) const {
      return pre[j] * talkconv::detail::dropout_scale<A>(active, d->seed, t, b, j, d->p);
    }
  };
  auto row_of = [&](index_t b, index_t t) { return offset_row{o_pre + t * so.t + b * so.b, &a.dropout, active, t, b}; };
  const window_reach reach = reach_of<A>(shape, w, a.lengths, [&](index_t b, index_t t, index_t h) {
    return token_taps<A>(w, length_of(a.lengths, b, shape.T), t, row_of(b, t), h);
  });

  const index_t tile = talkconv::detail::cpu_tile_length(w.window_len(), shape.T, shape.B);
  const index_t tiles = talkconv::detail::ceil_div(shape.T, tile);
  const A inv_k = A(1) / A(w.window_len());
  std::vector<A> dz_all(static_cast<size_t>(shape.rows() * P), A(0));
  parallel_tasks(
      shape.B * tiles, shape.rows() * shape.C, [] { return layer_scratch<A>{}; },
      [&](index_t task, layer_scratch<A>& s) {
        const index_t b = task / tiles, t0 = (task % tiles) * tile, t1 = std::min(t0 + tile, shape.T);
        const index_t n = length_of(a.lengths, b, shape.T), tv1 = std::max(t0, std::min(t1, n));
        const index_t h0 = std::max<index_t>(0, t0 - reach.right), h1 = std::max(h0, std::min(n, t1 + reach.left));
        s.win.taps.resize(static_cast<size_t>((h1 - h0) * w.heads));
        make_tile_taps<A>(w, n, h0, h1, [&](index_t t) { return row_of(b, t); }, s.win.taps.data());
        // dL/do for the tile's tokens, then dz.
        s.z.resize(static_cast<size_t>((t1 - t0) * P));
        const window_taps<A>* own = s.win.taps.data() + (std::min(t0, h1) - h0) * w.heads;
        offsets_grad_tile(a.x + b * sx.b, a.dy + b * sx.b, sx.t, shape.C, hm, w, inv_k, t0, t1, n, own, s.z.data(),
                          s.win);
        for (index_t t = t0; t < tv1; ++t)
          offsets_pre_grad(s.z.data() + (t - t0) * P, o_pre + t * so.t + b * so.b, P, t, b, a.dropout,
                           dz_all.data() + t * so.t + b * so.b);
        // dx = window part + W^T dz, one rounding.
        input_grad_tile(
            a.dy + b * sx.b, a.dx + b * sx.b, sx.t, shape.C, hm, inv_k, t0, t1, h0, h1, s.win.taps.data(),
            [&](index_t tau, index_t c0, index_t cn, A* row) {
              if (tau < tv1) add_offset_path(dz_all.data() + tau * so.t + b * so.b, P, prm.weight, shape.C, c0, cn, row);
            },
            s.win);
      });
  param_grads<T>(shape, P, a.lengths, dz_all.data(), a.x, a.dweight, a.dbias);
}

}  // namespace detail
}  // namespace cpu
}  // namespace talkconv
