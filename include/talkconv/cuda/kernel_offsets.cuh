// The offset kernels: thin __global__ entry points (internal linkage) over agent_offsets.cuh.
#pragma once

#include "talkconv/cuda/agent_offsets.cuh"

namespace talkconv {
namespace cuda {
namespace detail {

// Grid-stride over groups of proj_rows memory rows, one warp per group; dynamic smem
// proj_warps * proj_rows * PC accumulators. PC: offsets accumulated per pass, chosen from the head count.
template <class T, class Idx, int PC>
static __global__ void __launch_bounds__(row_threads) project_offsets_kernel(offsets_args<T> a) {
  using A = acc_t<T>;
  using warp_reduce = cub::WarpReduce<A>;
  __shared__ typename warp_reduce::TempStorage tmp[proj_warps];
  extern __shared__ __align__(16) unsigned char talkconv_smem[];
  const int warp = static_cast<int>(threadIdx.x) / 32;
  A* zbuf = reinterpret_cast<A*>(talkconv_smem) + warp * proj_rows * PC;
  const index_t N = a.g.T * a.g.B;
  for (index_t r = (index_t(blockIdx.x) * proj_warps + warp) * proj_rows; r < N;
       r += index_t(gridDim.x) * proj_warps * proj_rows)
    project_rows<PC, Idx>(a, r, zbuf, tmp[warp]);
}

// Grid-stride over the T * B * P offsets.
template <class T>
static __global__ void __launch_bounds__(row_threads) apply_dropout_kernel(offsets_args<T> a) {
  const index_t NP = a.g.T * a.g.B * a.g.P;
  for (index_t i = index_t(blockIdx.x) * row_threads + threadIdx.x; i < NP; i += index_t(gridDim.x) * row_threads)
    apply_dropout_element(a, i);
}

template <class T>
static __global__ void __launch_bounds__(row_threads) combine_offsets_grad_kernel(offsets_args<T> a, acc_t<T>* out) {
  const index_t NP = a.g.T * a.g.B * a.g.P;
  for (index_t i = index_t(blockIdx.x) * row_threads + threadIdx.x; i < NP; i += index_t(gridDim.x) * row_threads)
    combine_offsets_grad_element(a, i, out);
}

template <class T, class Idx>
static __global__ void __launch_bounds__(row_threads) offset_path_kernel(offsets_args<T> a) {
  const index_t NC = a.g.T * a.g.B * a.g.C;
  for (index_t i = index_t(blockIdx.x) * row_threads + threadIdx.x; i < NC; i += index_t(gridDim.x) * row_threads)
    offset_path_element<Idx>(a, i);
}

// grid (ceil(C / param_threads), chunks, ceil(P / proj_chunk)).
template <class T, class Idx>
static __global__ void __launch_bounds__(param_threads) param_grads_partial_kernel(offsets_args<T> a) {
  param_grads_partial_block<Idx>(a);
}

template <class T>
static __global__ void __launch_bounds__(row_threads) param_grads_combine_kernel(offsets_args<T> a) {
  const index_t n = a.g.P * a.g.C + a.g.P;
  for (index_t i = index_t(blockIdx.x) * row_threads + threadIdx.x; i < n; i += index_t(gridDim.x) * row_threads)
    param_grads_combine_element(a, i);
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
