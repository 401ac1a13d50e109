// Building block 1 (CPU): scaled prefix sums along time, restarted per segment so error stays bounded.
#pragma once

#include "talkconv/cpu/parallel.hpp"
#include "talkconv/detail/tile_plan.hpp"
#include "talkconv/params.hpp"
#include "talkconv/traits.hpp"

#include <vector>

namespace talkconv {
namespace cpu {
namespace detail {

// The recurrence every CPU prefix sum runs: for k in [0, n), channels j in [0, cw):
//   out[k * ld_out + j] = out[(k - 1) * ld_out + j] + scale * x[k * ld_x + j],   out[-1] = 0.
template <class T, class A>
void scan_rows(const T* x, index_t ld_x, index_t n, index_t cw, A scale, A* out, index_t ld_out) {
  for (index_t k = 0; k < n; ++k) {
    const T* xr = x + k * ld_x;
    A* cur = out + k * ld_out;
    if (k == 0) {
      for (index_t j = 0; j < cw; ++j) cur[j] = scale * to_acc<T>(xr[j]);
    } else {
      const A* prev = cur - ld_out;
      for (index_t j = 0; j < cw; ++j) cur[j] = prev[j] + scale * to_acc<T>(xr[j]);
    }
  }
}

// Local prefix sums of one sequence over tokens [t_begin, t_end) and channels [c0, c0 + cw) into a
// dense buffer: row 0 is zero and stands for index t_begin - 1, row k + 1 holds the sum up to
// t_begin + k. `x` points at token 0 of the sequence. Differences of these rows equal differences of
// the global sums, and their size is set by t_end - t_begin, not by t_begin (SPEC Numerics).
template <class T, class A>
void local_prefix(const T* x, index_t stride_t, index_t t_begin, index_t t_end, index_t c0, index_t cw, A scale,
                  A* out, index_t ld) {
  for (index_t j = 0; j < cw; ++j) out[j] = A(0);
  scan_rows(x + t_begin * stride_t + c0, stride_t, t_end - t_begin, cw, scale, out + ld, ld);
}

}  // namespace detail

// S[t, b, c] = scale * sum_{tau = s(t)}^{t} x[tau, b, c], where s(t) is the start of t's segment:
// segments of `segment` tokens (0: one segment, the whole sequence, as the original algorithm).
// x and S share the layout of `shape`; S is written in full. A full-sequence sum loses precision as t
// grows (SPEC Numerics); talkconv's own aggregation never materializes it, and uses local sums instead.
// Throws talkconv::error on bad input, before touching memory.
template <class T, class A = acc_t<T>>
void prefix_sum(const seq_shape& shape, const T* x, A* S, A scale, index_t segment = 0) {
  talkconv::detail::validate_shape(shape);
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(S, "S");
  if (segment < 0) talkconv::detail::fail(status::invalid_shape, "segment", "segment = ", segment, " is negative");
  const index_t seg = segment == 0 ? shape.T : segment;
  const seq_strides st = shape.strides(shape.C);
  const index_t segs = talkconv::detail::ceil_div(shape.T, seg);
  detail::parallel_tasks(
      shape.B * segs, shape.T * shape.B * shape.C, [] { return 0; },
      [&](index_t task, int&) {
        const index_t b = task / segs, t0 = (task % segs) * seg;
        const index_t t1 = t0 + seg < shape.T ? t0 + seg : shape.T;
        detail::scan_rows(x + b * st.b + t0 * st.t, st.t, t1 - t0, shape.C, scale, S + b * st.b + t0 * st.t, st.t);
      });
}

}  // namespace cpu
}  // namespace talkconv
