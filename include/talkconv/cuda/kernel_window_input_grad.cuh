// The window's input gradient on CUDA: the thin __global__ entry point over agent_window_input_grad.cuh
// and its launch (tile plan, vector width, index width, shared memory).
#pragma once

#include "talkconv/cuda/agent_window_input_grad.cuh"
#include "talkconv/cuda/dispatch.cuh"

namespace talkconv {
namespace cuda {
namespace detail {

// grid (B * tiles, channel blocks), dx_policy::threads threads, dynamic smem dx_smem::bytes.
template <class T, class Idx, int VEC>
static __global__ void __launch_bounds__(dx_policy<T>::threads, dx_policy<T>::min_blocks) input_grad_kernel(window_args<T> a, dx_args d) {
  input_grad_tile<Idx, VEC>(a, d);
}

// The tile plan of the dx kernel for a problem (host): rows per tile, tiles per sequence, bucket count.
struct dx_launch {
  dx_args args;
  int bins = 0;
};
template <class T>
inline dx_launch plan_input_grad(const seq_shape& s, const window_params& w) {
  using P = dx_policy<T>;
  const window_geom wg = window_geom::make(w, s.C);
  dx_launch p;
  p.args.nh_max = wg.subs > 1 ? 1 : wg.heads_per_block;
  p.args.tile = talkconv::detail::dx_tile_rows(P::tile, p.args.nh_max);
  p.args.tiles = (s.T + p.args.tile - 1) / p.args.tile;
  p.args.tiles_per_block = P::tiles_per_block;
  p.args.blocks_per_seq = (p.args.tiles + p.args.tiles_per_block - 1) / p.args.tiles_per_block;
  p.args.causal = w.causal;
  p.bins = p.args.nh_max * (p.args.tile + 1);
  return p;
}

// dx = the window part of the input gradient (overwritten). a.reach: the windows' reach on the device
// (window_reach_kernel), a.dy, a.dx, a.offsets set. Does not add W^T dz. Asynchronous on `stream`.
template <class T>
void launch_input_grad(const window_args<T>& a, const seq_shape& s, const window_params& w, cudaStream_t stream) {
  using P = dx_policy<T>;
  const dx_launch p = plan_input_grad<T>(s, w);
  const dim3 grid = window_grid(s, p.args.blocks_per_seq, a.w);
  constexpr int V = P::vec;
  const bool vectors = V > 1 && a.w.R % V == 0 && s.C % V == 0 &&
                       reinterpret_cast<std::uintptr_t>(a.dy) % 16 == 0 &&
                       reinterpret_cast<std::uintptr_t>(a.dx) % 16 == 0;
  dispatch_index(fits_int32(s, w.num_offsets()), [&](auto I) {
    using Idx = typename decltype(I)::type;
    auto run = [&](auto vec) {
      constexpr int VEC = decltype(vec)::value;
      const std::size_t smem = dx_smem<T, Idx>::bytes(p.bins, P::shape(VEC).groups);
      auto* kernel = &input_grad_kernel<T, Idx, VEC>;
      allow_smem(kernel, smem, "cudaFuncSetAttribute(input_grad_kernel)");
      kernel<<<grid, P::threads, smem, stream>>>(a, p.args);
      check_launch("input_grad_kernel");
    };
    if constexpr (V > 1) {
      if (vectors) {
        run(std::integral_constant<int, V>{});
        return;
      }
    }
    run(std::integral_constant<int, 1>{});
  });
}

// Every grid the window kernels of a call launch (forward / offset-gradient tiles, and the dx tiles as
// plan_input_grad sizes them) fits: checked by the entry points right after validation, before any
// workspace query or launch, so a refused call touches no memory.
template <class T>
void check_window_grids(const seq_shape& s, const window_params& w) {
  const window_geom wg = window_geom::make(w, s.C);
  constexpr index_t shortest = window_tile_policy<T>::unit < window_traits::fwd_tile ? window_tile_policy<T>::unit
                                                                                     : window_traits::fwd_tile;
  window_grid(s, (s.T + shortest - 1) / shortest, wg);
  window_grid(s, plan_input_grad<T>(s, w).args.blocks_per_seq, wg);
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
