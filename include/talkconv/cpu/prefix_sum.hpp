// Building block 1 (CPU): scaled prefix sums along time, restarted per segment so error stays bounded.
#pragma once

#include "talkconv/cpu/convert.hpp"
#include "talkconv/cpu/parallel.hpp"
#include "talkconv/detail/tile_plan.hpp"
#include "talkconv/params.hpp"
#include "talkconv/traits.hpp"

#include <vector>

namespace talkconv {
namespace cpu {
namespace detail {

// The recurrence every CPU prefix sum runs, one row of cw channels:
//   cur[j] = prev[j] + scale * x[j]   (prev == nullptr stands for a zero row).
template <class T, class A>
inline void scan_step(const A* prev, const T* x, index_t cw, A scale, A* cur) {
  if (prev == nullptr) {
    for_each_acc(x, cw, [&](index_t j, A v) { cur[j] = scale * v; });
  } else {
    for_each_acc(x, cw, [&](index_t j, A v) { cur[j] = prev[j] + scale * v; });
  }
}

// Asks for the cache lines of a row a few steps ahead: rows of a [T, B, C] tensor are far apart, so
// hardware prefetchers do not follow them, and a load or store that misses stalls the loop.
template <class T>
inline void prefetch_row(const T* p, index_t count, bool for_write = false) {
  constexpr index_t line = 64 / sizeof(T) > 0 ? 64 / sizeof(T) : 1;
  if (for_write) {
    for (index_t j = 0; j < count; j += line) __builtin_prefetch(p + j, 1);
  } else {
    for (index_t j = 0; j < count; j += line) __builtin_prefetch(p + j, 0);
  }
}

constexpr index_t prefetch_rows_ahead = 6;

// scan_step over n rows, `ld_x` and `ld_out` elements apart: out[k] = out[k - 1] + scale * x[k].
template <class T, class A>
void scan_rows(const T* x, index_t ld_x, index_t n, index_t cw, A scale, A* out, index_t ld_out) {
  for (index_t k = 0; k < n; ++k) {
    if (k + prefetch_rows_ahead < n) prefetch_row(x + (k + prefetch_rows_ahead) * ld_x, cw);
    scan_step(k == 0 ? static_cast<const A*>(nullptr) : out + (k - 1) * ld_out, x + k * ld_x, cw, scale,
              out + k * ld_out);
  }
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
  talkconv::detail::checked_bytes(shape.T * shape.B * shape.C, sizeof(T) > sizeof(A) ? sizeof(T) : sizeof(A), "T*B*C");
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(S, "S");
  if (segment < 0) talkconv::detail::fail(status::invalid_shape, "segment", "segment = ", segment, " is negative");
  const index_t seg = segment == 0 || segment > shape.T ? shape.T : segment;  // no overflow in ceil_div below
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
