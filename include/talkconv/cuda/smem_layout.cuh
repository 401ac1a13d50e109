// Shared-memory layouts of the window kernels (vector tiles, offset gradients, the generic tile): where each part
// lies, so that host (sizing the launch) and device (carving the buffer) agree. Their block shapes: policy.cuh.
#pragma once

#include "talkconv/cuda/cuda_traits.hpp"
#include "talkconv/cuda/geometry.cuh"
#include "talkconv/cuda/policy.cuh"
#include "talkconv/cuda/workspace.cuh"
#include "talkconv/detail/math.hpp"
#include "talkconv/detail/window_tile.hpp"
#include "talkconv/params.hpp"
#include "talkconv/traits.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <limits>

namespace talkconv {
namespace cuda {
namespace detail {

// Shared memory of a vector tile: S rows [rows][stride], then the tap table [tile][nh], then (offset
// gradients) the per-vector products [2][tile][cols]. Host and device agree through these offsets.
// A token's taps for one head as a vector tile's table keeps them: byte offsets of the four S rows from
// the tile's row 0 (detail::tile_tap's rows times the row stride, so the inner loop adds instead of
// multiplying), or o0 = -1 for the direct path; the two fractions. 32 bytes with alignment (float and double).
template <class A>
struct alignas(16) vtap {
  int o0, o1, o2, o3;
  A fr, fl;
};

template <class T>
struct vtile_layout {
  using A = acc_t<T>;
  using P = window_tile_policy<T>;
  TALKCONV_HOST_DEVICE static std::size_t row_bytes() { return sizeof(A) * P::stride; }
  TALKCONV_HOST_DEVICE static std::size_t token_bytes(int nh, bool grad) {
    return sizeof(vtap<A>) * std::size_t(nh) + (grad ? 2 * sizeof(A) * P::cols : 0);
  }
  TALKCONV_HOST_DEVICE static std::size_t taps_at(int rows) { return row_bytes() * std::size_t(rows); }
  TALKCONV_HOST_DEVICE static std::size_t products_at(int rows, int tile, int nh) {
    return taps_at(rows) + sizeof(vtap<A>) * std::size_t(tile) * std::size_t(nh);
  }
};

// The two x rows of a (token, head) as detail::slope_code keeps them: row * xt, or -1 - t * xt where the
// slope is zero (the token's own row, complemented: a load that stays in bounds).
struct grad_rows {
  long long left, right;
};
template <class T>
struct offsets_grad_layout {
  using A = acc_t<T>;
  TALKCONV_HOST_DEVICE static std::size_t products_at(int tile, int nh) {
    return sizeof(grad_rows) * std::size_t(tile) * std::size_t(nh);
  }
  TALKCONV_HOST_DEVICE static std::size_t bytes(int tile, int nh) {
    return products_at(tile, nh) + 2 * sizeof(A) * std::size_t(tile) * window_tile_policy<T>::cols;
  }
};

// A token's taps for one head, cached in shared memory by the forward and offset-gradient tiles
// (indices relative to the tile's first token): computed once per (token, head) instead of once per
// channel. Used when at most tap_cache_heads heads meet a block (R >= 16 channels per head).
template <class A>
struct tap_entry {
  int d0, d1, d2, d3;
  A fr, fl;
};
constexpr int tap_cache_heads = 4;

// Dynamic shared memory of the window kernels: prefix rows [cap_rows][lanes], segment totals
// [segs][lanes], (offset gradients) per-batch products [2][lanes][grad_batch + 1], then the tap cache.
template <class A>
struct window_smem {
  static constexpr int lanes = window_traits::lanes;
  static constexpr int pad_batch = window_traits::grad_batch + 1;  // odd stride: no bank conflicts
  static constexpr std::size_t taps_bytes = sizeof(tap_entry<A>) * window_traits::fwd_tile * tap_cache_heads;
  TALKCONV_HOST_DEVICE static std::size_t accumulators(int cap_rows, bool offsets_grad) {
    return std::size_t(cap_rows) * lanes + window_traits::segs * lanes + (offsets_grad ? 2 * lanes * pad_batch : 0);
  }
  static std::size_t forward(int cap_rows) { return sizeof(A) * accumulators(cap_rows, false) + taps_bytes; }
  static std::size_t offsets_grad(int cap_rows) { return sizeof(A) * accumulators(cap_rows, true) + taps_bytes; }
};



}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
