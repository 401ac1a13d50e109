// The window kernels: thin __global__ entry points (internal linkage) over agent_window.cuh.
#pragma once

#include "talkconv/cuda/agent_backward_fused.cuh"
#include "talkconv/cuda/agent_forward_fused.cuh"
#include "talkconv/cuda/agent_window.cuh"
#include "talkconv/cuda/agent_window_forward_band.cuh"
#include "talkconv/cuda/agent_window_forward_band_tf32.cuh"

namespace talkconv {
namespace cuda {
namespace detail {

// grid (B * tiles, channel blocks), window_traits::threads threads, dynamic smem window_smem::forward.
template <class T, class Idx, bool Causal>
static __global__ void __launch_bounds__(window_traits::threads) window_forward_kernel(window_args<T> a) {
  window_forward_tile<Causal, Idx>(a);
}

// Same grid; dynamic smem window_smem::offsets_grad. Writes a.partial.
template <class T, class Idx, bool Causal>
static __global__ void __launch_bounds__(window_traits::threads) window_offsets_grad_kernel(window_args<T> a) {
  window_offsets_grad_tile<Causal, Idx>(a);
}

// The banded forward (16-bit x and float, windows up to dx_band_policy::fwd_max_k): grid (B * blocks_per_seq, channel
// blocks), dx_band_policy::threads threads, dynamic smem dx_band_smem::forward_bytes.
template <class T, class Idx>
static __global__ void __launch_bounds__(dx_band_policy<T>::threads, dx_band_policy<T>::min_blocks)
    window_forward_band_kernel(window_args<T> a, dx_band_args d) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // no mma.sync on 16-bit types or TF32, no cp.async: never launched (band_kernels_built)
#else
  if constexpr (dx_band_policy<T>::forward && dx_band_policy<T>::tf32)
    window_forward_band_tile_tf32<Idx>(a, d);
  else if constexpr (dx_band_policy<T>::forward)
    window_forward_band_tile<T, Idx>(a, d);
#endif
}

// The layer forward of 16-bit or float x in one pass (projection + banded window, agent_forward_fused.cuh): grid
// B * tiles (tiles = ceil(T / 128)), dx_band_policy::threads threads, dynamic smem forward_fused_smem::bytes.
template <class T, int BN, class Idx>
static __global__ void __launch_bounds__(dx_band_policy<T>::threads, 2)
    forward_fused_kernel(offsets_args<T> oa, window_args<T> wa, dx_band_args d, index_t tiles) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // no mma.sync on 16-bit types or TF32, no cp.async: never launched (band_kernels_built)
#else
  if constexpr (forward_fused_types<T>) forward_fused_tile<T, BN, Idx>(oa, wa, d, tiles);
#endif
}

// The window backward of 16-bit and float x in one pass over dy (offset gradients finished into dz + banded dx with W^T dz,
// agent_backward_fused.cuh): grid B * tiles (tiles = ceil(T / 128)), dx_band_policy::threads threads, dynamic smem
// backward_fused_launch::smem. Two blocks per SM, not the banded dx's three: 119 registers without spills (80 with
// 152 / 196 bytes of spills at three), the dy still to be re-read (~half a tile a block) ~34 MB of L2 for 264 blocks
// on an H200 instead of ~50, and 512 tiles at the benchmark shape in 1.94 waves instead of 1.29.
template <class T, class Idx, bool Causal>
static __global__ void __launch_bounds__(dx_band_policy<T>::threads, 2)
    backward_fused_kernel(window_args<T> g, window_args<T> a, dx_band_args d, index_t tiles) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // no mma.sync on 16-bit types, no cp.async: never launched (band_kernels_built)
#else
  if constexpr (backward_fused_types<T> && dx_band_policy<T>::supported)
    backward_fused_tile<T, Idx, Causal>(g, a, d, tiles);
#endif
}

// Vector tiles (16-byte channel vectors, R % vec == 0, aligned): grid (B * tiles, channel blocks),
// window_tile_policy<T>::threads threads, dynamic smem from plan_vtile. y, or a.partial for the gradient.
template <class T, class Idx, bool Causal>
static __global__ void __launch_bounds__(window_tile_policy<T>::threads, window_tile_policy<T>::min_blocks)
    window_forward_vtile_kernel(window_args<T> a) {
  window_forward_vtile<Causal, Idx>(a);
}
// Windows wider than a block's rows (the vector-tile plan capped): tiles of segment_policy<T>::tile tokens,
// their span walked in segments of a.cap_rows rows. Same grid shape; dynamic smem from plan_segments.
template <class T, class Idx, bool Causal>
static __global__ void __launch_bounds__(window_tile_policy<T>::threads, segment_policy<T>::min_blocks)
    window_forward_segments_kernel(window_args<T> a) {
  window_forward_segments<Causal, Idx>(a);
}
// Offset gradients of vector tiles: grid (B * tiles of offsets_grad_policy<T>::tile, channel blocks),
// dynamic smem offsets_grad_layout<T>::bytes. Writes a.partial, folds the reach into a.reach.
template <class T, class Idx, bool Causal>
static __global__ void __launch_bounds__(offsets_grad_policy<T>::threads, offsets_grad_policy<T>::min_blocks)
    window_offsets_grad_gather_kernel(window_args<T> a) {
  window_offsets_grad_gather<Causal, Idx>(a);
}

// Grid-stride over tokens; reach must be zeroed first.
template <class T, class Idx, bool Causal>
static __global__ void __launch_bounds__(row_threads) window_reach_kernel(window_args<T> a, unsigned long long* reach) {
  window_reach_rows<Causal, Idx>(a, reach);
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
