// The window backward of 16-bit and float x in one pass over dy: the offset gradients (finished into dz) and the
// banded input gradient with W^T dz of a time tile in one block, so that dy is read from DRAM once (the two kernels
// read it twice: the gather, then the banded dx) and dz is not read back from DRAM. A block owns 128 rows
// [t0, t0 + 128) (band_tile_rows) of sequence b and every channel:
//   1. per channel block, the first first, the gather kernel's work for its tiles of offsets_grad_policy::tile tokens
//      (one of 128 for 16-bit x, two of 64 for float; window_offsets_grad_gather at make_ctx_at): the slope rows of x
//      (read evict-first: this kernel does not read them again), dy, the head sums in column order and their finish
//      (finish_offset_grad): dz of the tile's rows for every head, stored to global memory (dW reads it next);
//   2. per channel block, the last first, the banded dx kernel's work for the tile (input_grad_band_block, float:
//      input_grad_band_block_tf32, at make_band_block_at): dy of the tile's span re-read (from L2 when the first read
//      left it there; evict-first: its last read), the k steps on tensor cores, 1/K, W^T dz from the dz rows the block
//      stored in step 1 (one barrier makes them visible to the block), dx stored evict-first (not read again).
// The same sums as the gather kernel followed by the banded dx kernel (the same tiles, column orders, segments and
// k steps), deterministic, when the reach the dx steps use is theirs: the launch computes it first
// (window_reach_kernel, the same definition the gather folds in). Shared memory: the larger of the gather's table
// and products and the banded dx's stage, tap table and W fragments (the two phases alias it). Applies where both
// kernels do, the gather can finish dz (whole heads per channel block) and the grid has >= 2 tiles per SM
// (device_window.cuh: launch_backward_fused).
#pragma once

#include "talkconv/cuda/agent_window_input_grad_band.cuh"
#include "talkconv/cuda/agent_window_input_grad_band_tf32.cuh"
#include "talkconv/cuda/agent_window_offsets_grad.cuh"

namespace talkconv {
namespace cuda {
namespace detail {

// Block blockIdx.x = b * tiles + tile. g: the gather's arguments (g.tile = offsets_grad_policy::tile, g.tap_heads,
// g.finish.on, g.reach null, g.partial = dz), a: the banded dx's (a.reach complete, a.dz = dz, a.weight), d: the
// banded dx plan with tiles_per_block = 1.
template <class T, class Idx, bool Causal>
__device__ void backward_fused_tile(const window_args<T>& g, const window_args<T>& a, const dx_band_args& d,
                                    index_t tiles) {
  constexpr int GT = offsets_grad_policy<T>::tile, BM = talkconv::detail::band_tile_rows;
  static_assert(BM % GT == 0, "whole gather tiles in a time tile");
  static_assert(offsets_grad_policy<T>::threads == dx_band_policy<T>::threads, "one block shape");
  const index_t blk = blockIdx.x, b = blk / tiles, it = blk - b * tiles, t0 = it * BM;
  const index_t t_end = t0 + BM < g.g.T ? t0 + BM : g.g.T;
  const int blocks = static_cast<int>(a.w.blocks);

  // 1. dz of rows [t0, t_end): the gather kernel's blocks of this tile, channel block by channel block. No barrier
  // between the calls: a call writes its table (read by the previous call before that call's second barrier) and
  // then, after its first barrier, its products (read by the previous call's last step, done by every thread
  // before it reaches that barrier); the two regions do not overlap (offsets_grad_layout).
  for (int cb = 0; cb < blocks; ++cb)
    for (index_t s0 = t0; s0 < t_end; s0 += GT)
      window_offsets_grad_gather<Causal, Idx, true>(g, make_ctx_at(g, b, s0, cb));
  __syncthreads();  // the block's dz rows (global) visible to all its threads; the shared memory free for the stage

  // 2. dx, channel block by channel block, the last first: step 1 read the last one's dy most recently
  for (int cb = blocks - 1; cb >= 0; --cb) {
    if (cb < blocks - 1) __syncthreads();  // the previous channel block's W fragments read before they are rewritten
    if constexpr (std::is_same<T, float>::value)
      input_grad_band_block_tf32<Idx, true, true>(a, d, make_band_block_at(a, b, it, cb));
    else
      input_grad_band_block<T, Idx, true, true>(a, d, make_band_block_at(a, b, it, cb));
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
