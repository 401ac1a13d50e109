// The offset kernels: thin __global__ entry points (internal linkage) over agent_offsets.cuh (elementwise),
// agent_project.cuh (projection), agent_dz_gemm.cuh (dW partials, offset path of dx by FMA), agent_dw_tc.cuh and
// agent_offset_path_tc.cuh (the same on tensor cores).
#pragma once

#include "talkconv/cuda/agent_dw_tc.cuh"
#include "talkconv/cuda/agent_offset_path_tc.cuh"
#include "talkconv/cuda/agent_dz_gemm.cuh"
#include "talkconv/cuda/agent_offsets.cuh"
#include "talkconv/cuda/agent_project.cuh"

#include <type_traits>

namespace talkconv {
namespace cuda {
namespace detail {

// The tiled projection: grid (row tiles, offset tiles), both grid-strided; static shared memory
// project_smem (< 48 KiB). Offset tile BN from the head count (dispatch_heads).
template <class T, int BN>
static __global__ void __launch_bounds__(project_policy<T>::threads, project_policy<T>::min_blocks) project_tile_kernel(offsets_args<T> a) {
  __shared__ project_smem<T, BN> sm;
  constexpr int BM = project_policy<T>::rows;
  const index_t tiles_m = (a.g.T * a.g.B + BM - 1) / BM;
  const int tiles_n = static_cast<int>((a.g.P + BN - 1) / BN);
  for (index_t mt = blockIdx.x; mt < tiles_m; mt += gridDim.x)
    for (int nt = static_cast<int>(blockIdx.y); nt < tiles_n; nt += static_cast<int>(gridDim.y))
      project_tile_block<T, BN>(a, sm, mt * BM, nt * BN);
}

// The dot-product projection for tiny N: grid (ceil(P / warps), N), one warp per (row, offset).
template <class T>
static __global__ void __launch_bounds__(row_threads) project_dot_kernel(offsets_args<T> a) {
  constexpr int warps = row_threads / 32;
  __shared__ typename cub::WarpReduce<acc_t<T>>::TempStorage tmp[warps];
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const index_t j = index_t(blockIdx.x) * warps + warp;
  if (j < a.g.P) project_dot_warp(a, index_t(blockIdx.y), j, tmp[warp]);
}

// Grid-stride over the T * B * ceil(P / 4) groups of offsets (offset_groups).
template <class T>
static __global__ void __launch_bounds__(row_threads) apply_dropout_kernel(offsets_args<T> a) {
  const index_t NG = a.g.T * a.g.B * offset_groups(a.g.P);
  const bool vec = a.g.P % 4 == 0 && aligned16(a.o) && aligned16(a.o_pre);
  for (index_t q = index_t(blockIdx.x) * row_threads + threadIdx.x; q < NG; q += index_t(gridDim.x) * row_threads)
    apply_dropout_group(a, q, vec);
}

template <class T>
static __global__ void __launch_bounds__(row_threads) combine_offsets_grad_kernel(offsets_args<T> a, acc_t<T>* out) {
  const index_t NG = a.g.T * a.g.B * offset_groups(a.g.P);
  const bool vec = a.g.P % 4 == 0 && aligned16(out) && aligned16(a.partial) && aligned16(a.o_pre);
  for (index_t q = index_t(blockIdx.x) * row_threads + threadIdx.x; q < NG; q += index_t(gridDim.x) * row_threads)
    combine_offsets_grad_group(a, q, out, vec);
}

// dx += dz W over offsets [p0, p0 + PC): grid (ceil(N / dx_rows), channel blocks, grid-strided); weights in
// registers. Chunked = false: p0 is 0 (P <= PC; a run-time p0 there costs spills on sm_80).
template <class T, int PC, bool Chunked>
static __global__ void __launch_bounds__(dz_gemm_policy::threads, dz_gemm_policy::min_blocks<acc_t<T>>) offset_path_kernel(offsets_args<T> a, index_t p0) {
  __shared__ dz_smem<acc_t<T>, PC> sm;
  offset_path_block<T, PC>(a, sm, Chunked ? p0 : index_t(0));
}

// The same for P > proj_chunk.
template <class T>
static __global__ void __launch_bounds__(dz_gemm_policy::threads) offset_path_wide_kernel(offsets_args<T> a) {
  offset_path_block_wide<T>(a);
}

// dW / dbias partials: grid (ceil(C / dz_gemm_policy::channels), row chunks, ceil(P / PC)).
template <class T, int PC>
static __global__ void __launch_bounds__(dz_gemm_policy::threads, dz_gemm_policy::min_blocks<acc_t<T>>) param_grads_partial_kernel(offsets_args<T> a) {
  __shared__ dz_smem<acc_t<T>, PC> sm;
  param_grads_partial_block<T, PC>(a, sm);
}

// dW / dbias partials on tensor cores (16-bit x): grid (ceil(C / dw_tc_policy::channels), row chunks, ceil(P / PT)).
// bfloat16 x: bfloat16 mma with dz in three pieces (param_grads_partial_bf16_block); half and float: TF32.
// Residency: the benchmark shape's grid is 4 x 128 = 512 blocks. bfloat16 asks for 4 per SM (64 registers,
// about 40 spilled words per row step to L1) so 512 fit one wave of 132 x 4; with 3 (80 registers, no
// spill) the H200 ran 396 and then 116 (90 us, 2026-11-30). TF32's 2 per SM fill 2 waves to 97%.
// Async: x staged by cp.async, two steps in flight (16-byte aligned x, C a multiple of 16 bytes); for half and float
// its shared memory is dynamic (sizeof(dw_tc_async_smem<T, PT>): 79 KB for float), the launch's to allow.
template <class T, int PT, bool Async = false>
static __global__ void __launch_bounds__(dw_tc_policy<PT>::threads, std::is_same<T, __nv_bfloat16>::value ? 4 : 2)
    param_grads_partial_tc_kernel(offsets_args<T> a) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    __shared__ dw_bf16_smem<PT> sm;
    param_grads_partial_bf16_block<PT, Async>(a, sm);
  } else if constexpr (Async) {
    extern __shared__ __align__(16) unsigned char talkconv_smem[];
    param_grads_partial_tc_async_block<T, PT>(a, *reinterpret_cast<dw_tc_async_smem<T, PT>*>(talkconv_smem));
  } else {
    __shared__ dw_tc_smem<PT> sm;
    param_grads_partial_tc_block<T, PT>(a, sm);
  }
}

// dx += dz W on tensor cores (16-bit dx, P <= 32): grid (ceil(N / 256), channel blocks, grid-strided).
template <class T, int PT>
static __global__ void __launch_bounds__(dx_tc_policy<PT>::threads, 2) offset_path_tc_kernel(offsets_args<T> a) {
  __shared__ dx_tc_smem<PT> sm;
  offset_path_tc_block<T, PT>(a, dx_tc_buffers{sm.w, sm.hi, sm.lo, &sm.valid[0][0]}, 1);
}

// The same for P > 32: W of every chunk of 32 offsets in dynamic shared memory, dx_tc_wide_layout::bytes(chunks).
template <class T>
static __global__ void __launch_bounds__(dx_tc_policy<32>::threads, 2) offset_path_tc_wide_kernel(offsets_args<T> a,
                                                                                               int chunks) {
  extern __shared__ __align__(16) unsigned char talkconv_smem[];
  using L = dx_tc_wide_layout;
  bool* valid = reinterpret_cast<bool*>(talkconv_smem);
  float* hi = reinterpret_cast<float*>(talkconv_smem + L::valid_bytes);
  float* lo = hi + L::dz_floats;
  offset_path_tc_block<T, 32>(a, dx_tc_buffers{lo + L::dz_floats, hi, lo, valid}, chunks);
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
