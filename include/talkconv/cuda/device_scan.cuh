// Building blocks 1 and 3 on CUDA: scaled segmented prefix sums along time, and head tying sums.
#pragma once

#include "talkconv/cuda/device_window.cuh"
#include "talkconv/cuda/kernel_scan.cuh"

namespace talkconv {
namespace cuda {

// S[t, b, c] = scale * sum_{tau = s(t)}^{t} x[tau, b, c], s(t) the start of t's segment of `segment`
// tokens (0: one segment per sequence, the original algorithm's global sum). The CUDA twin of
// cpu::prefix_sum. x, S: device, layout of shape. talkconv's own window kernels never write this
// tensor (they sum per tile in shared memory); it is here as a building block and for baselines.
// Asynchronous on `stream`, no workspace.
template <class T, class A = acc_t<T>>
void prefix_sum(const seq_shape& shape, const T* x, A* S, A scale, index_t segment, cudaStream_t stream) {
  if (detail::validate_or_empty(shape, window_params{})) return;
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(S, "S");
  if (segment < 0) talkconv::detail::fail(status::invalid_shape, "segment", "segment = ", segment, " is negative");
  const index_t seg = segment == 0 ? shape.T : segment;
  const index_t segs = (shape.T + seg - 1) / seg;
  const detail::seq_geom g = detail::make_geom(shape, 1, nullptr);
  const index_t gx = shape.B * segs;
  if (gx > std::numeric_limits<std::int32_t>::max() ||
      (shape.C + detail::row_threads - 1) / detail::row_threads > 65535)
    talkconv::detail::fail(status::size_overflow, "T*B", "B * segments = ", gx, " exceeds the CUDA grid");
  const dim3 grid(static_cast<unsigned>(gx),
                  static_cast<unsigned>((shape.C + detail::row_threads - 1) / detail::row_threads));
  detail::dispatch_index(detail::fits_int32(shape, 1), [&](auto I) {
    using Idx = typename decltype(I)::type;
    detail::prefix_sum_kernel<T, A, Idx><<<grid, detail::row_threads, 0, stream>>>(g, x, S, scale, seg, segs);
    detail::check_launch("prefix_sum_kernel");
  });
}

// Head tying reduction: out[t, b, h] = sum_{c in head h} in[t, b, c]. in: width C, out: width H, same
// layout (both are row-major [T * B, width] in either layout). Deterministic. Asynchronous on `stream`.
template <class A>
void head_sum(const seq_shape& shape, const window_params& w, const A* in, A* out, cudaStream_t stream) {
  if (detail::validate_or_empty(shape, w)) return;
  talkconv::detail::require_pointer(in, "in");
  talkconv::detail::require_pointer(out, "out");
  const index_t rows = shape.T * shape.B;
  detail::dispatch_index(detail::fits_int32(shape, w.heads), [&](auto I) {
    using Idx = typename decltype(I)::type;
    detail::head_sum_kernel<A, Idx>
        <<<detail::grid_for(rows * w.heads, detail::row_threads / 32), detail::row_threads, 0, stream>>>(
            rows, shape.C, w.heads, in, out);
    detail::check_launch("head_sum_kernel");
  });
}

}  // namespace cuda
}  // namespace talkconv
