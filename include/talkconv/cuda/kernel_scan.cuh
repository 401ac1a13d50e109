// Kernels of building blocks 1 and 3: segmented prefix sums along time, per-head channel sums.
#pragma once

#include "talkconv/cuda/smem_layout.cuh"

#include <cub/warp/warp_reduce.cuh>

namespace talkconv {
namespace cuda {
namespace detail {

// grid (B * segments, ceil(C / row_threads)); each thread runs one channel of one segment in order:
// the same recurrence as the CPU's scan_rows, S[k] = S[k - 1] + scale * x[k].
template <class T, class A, class Idx>
static __global__ void __launch_bounds__(row_threads)
    prefix_sum_kernel(seq_geom g, const T* x, A* S, A scale, index_t segment, index_t segments) {
  const index_t b = index_t(blockIdx.x) / segments, t0 = (index_t(blockIdx.x) - b * segments) * segment;
  const index_t c = index_t(blockIdx.y) * row_threads + threadIdx.x;
  if (c >= g.C) return;
  const index_t t1 = t0 + segment < g.T ? t0 + segment : g.T;
  const Idx base = Idx(b) * Idx(g.xb) + Idx(c);
  A run = A(0);
  for (index_t t = t0; t < t1; ++t) {
    const Idx i = base + Idx(t) * Idx(g.xt);
    run = t == t0 ? scale * to_acc<T>(x[i]) : run + scale * to_acc<T>(x[i]);
    S[i] = run;
  }
}

// One warp per (row, head): out[r, h] = sum of the head's channels, lanes striding them, then a
// cub::WarpReduce (fixed order: deterministic).
template <class A, class Idx>
static __global__ void __launch_bounds__(row_threads)
    head_sum_kernel(index_t rows, index_t C, index_t H, const A* in, A* out) {
  using warp_reduce = cub::WarpReduce<A>;
  constexpr int warps = row_threads / 32;
  __shared__ typename warp_reduce::TempStorage tmp[warps];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const index_t R = C / H;
  for (index_t i = index_t(blockIdx.x) * warps + warp; i < rows * H; i += index_t(gridDim.x) * warps) {
    const index_t r = i / H, h = i - r * H;
    const A* src = in + (Idx(r) * Idx(C) + Idx(h * R));
    A s = A(0);
    for (index_t c = lane; c < R; c += 32) s += src[c];
    s = warp_reduce(tmp[warp]).Sum(s);
    if (lane == 0) out[Idx(r) * Idx(H) + Idx(h)] = s;
    __syncwarp();
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
