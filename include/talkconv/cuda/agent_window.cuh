// The reach of every window (the dx kernel's candidate tokens). Includes the forward and offset-gradient
// agents; the input gradient is agent_window_input_grad.cuh.
#pragma once

#include "talkconv/cuda/agent_window_forward.cuh"
#include "talkconv/cuda/agent_window_offsets_grad.cuh"
#include "talkconv/cuda/agent_window_tile.cuh"

#include <cub/block/block_reduce.cuh>

#include <climits>

namespace talkconv {
namespace cuda {
namespace detail {

// ---- the reach of every valid window ----------------------------------------------------------------
// reach[0] = max (t - lowest tap), reach[1] = max (highest tap - t): integer maxima, so the combine by
// atomicMax is exact and order-free (deterministic).

template <bool Causal, class Idx, class T>
__device__ void window_reach_rows(const window_args<T>& a, unsigned long long* reach) {
  using A = acc_t<T>;
  using reduce = cub::BlockReduce<long long, row_threads>;
  __shared__ typename reduce::TempStorage tmp;
  long long rl = 0, rr = 0;
  const index_t N = a.g.T * a.g.B;
  for (index_t r = index_t(blockIdx.x) * row_threads + threadIdx.x; r < N; r += index_t(gridDim.x) * row_threads) {
    index_t t, b;
    a.g.token_of(r, t, b);
    const index_t n = a.g.length(b);
    if (t >= n) continue;
    const A* off = a.offsets + Idx(r) * Idx(a.g.P);
    for (index_t h = 0; h < a.w.H; ++h) {
      const window_taps<A> k = head_taps<Causal>(off, t, h, a.w, n);
      const long long l = t - talkconv::detail::taps_min(k), q = talkconv::detail::taps_max(k) - t;
      rl = l > rl ? l : rl;
      rr = q > rr ? q : rr;
    }
  }
  const long long bl = reduce(tmp).Reduce(rl, max_op{});
  __syncthreads();
  const long long br = reduce(tmp).Reduce(rr, max_op{});
  if (threadIdx.x == 0) {
    atomicMax(reach, static_cast<unsigned long long>(bl));
    atomicMax(reach + 1, static_cast<unsigned long long>(br));
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
