// Building block 3 (CPU): head tying. Channels of a head share one window; their gradients are summed.
#pragma once

#include "talkconv/cpu/convert.hpp"
#include "talkconv/cpu/parallel.hpp"
#include "talkconv/detail/math.hpp"
#include "talkconv/params.hpp"
#include "talkconv/traits.hpp"

namespace talkconv {
namespace cpu {
namespace detail {

// sum_j a[j] * b[j] over n terms in a fixed pattern of 8 lanes: vectorizes, and the rounding depends
// only on n, never on alignment or thread count.
template <class TA, class A, class F>
inline A lane_dot(const TA* a, index_t n, F&& b_of) {
  A lane[8] = {A(0), A(0), A(0), A(0), A(0), A(0), A(0), A(0)};
  // Terms j0 + j, j < m, of values v (the stored values, widened or not): lane (j0 + j) mod 8.
  auto add = [&](const auto* v, index_t j0, index_t m) {
    index_t j = 0;
    for (; j + 8 <= m; j += 8)
      for (int l = 0; l < 8; ++l) lane[l] += v[j + l] * b_of(j0 + j + l);
    for (int l = 0; j < m; ++j, ++l) lane[l] += v[j] * b_of(j0 + j);
  };
  if constexpr (stored_as_acc<TA>) {
    add(a, 0, n);
  } else {  // widened a block at a time (blocks are multiples of 8: the same lanes, the same order)
    acc_t<TA> buf[convert_block];
    for (index_t j0 = 0; j0 < n; j0 += convert_block) {
      const index_t m = n - j0 < convert_block ? n - j0 : convert_block;
      row_convert<TA>::widen(a + j0, m, buf);
      add(static_cast<const acc_t<TA>*>(buf), j0, m);
    }
  }
  return ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
}

}  // namespace detail

// The head map of a problem: H heads of R = C / H channels.
inline talkconv::detail::head_map make_head_map(const seq_shape& shape, const window_params& w) {
  talkconv::detail::validate_shape(shape);
  talkconv::detail::validate_window(w);
  talkconv::detail::validate_heads(shape, w);
  return talkconv::detail::head_map{w.heads, shape.C / w.heads};
}

// Per-head reduction of per-channel values: out[t, b, h] = sum_{c in head h} in[t, b, c].
// `in` has the layout of `shape` with width C, `out` the same layout with width H. Deterministic.
template <class A>
void head_sum(const seq_shape& shape, const window_params& w, const A* in, A* out) {
  const talkconv::detail::head_map hm = make_head_map(shape, w);
  talkconv::detail::validate_bytes(shape, w, sizeof(A), sizeof(A));
  talkconv::detail::require_pointer(in, "in");
  talkconv::detail::require_pointer(out, "out");
  const seq_strides si = shape.strides(shape.C), so = shape.strides(w.heads);
  detail::parallel_tasks(
      shape.B, shape.rows() * shape.C, [] { return 0; },
      [&](index_t b, int&) {
        for (index_t t = 0; t < shape.T; ++t) {
          const A* row = in + t * si.t + b * si.b;
          for (index_t h = 0; h < hm.heads; ++h)
            out[t * so.t + b * so.b + h] =
                detail::lane_dot<A, A>(row + hm.first_channel(h), hm.head_dim, [](index_t) { return A(1); });
        }
      });
}

}  // namespace cpu
}  // namespace talkconv
