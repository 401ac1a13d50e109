// Block shapes and shared-memory sizing of the window and row kernels.
#pragma once

#include "talkconv/cuda/cuda_traits.hpp"
#include "talkconv/cuda/geometry.cuh"
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

// Window kernels: a block owns `lanes` channels of one sequence and one time tile. `segs` threads per
// channel split the tile's rows; each runs its prefix (or suffix) sum serially, then one carry pass joins
// them. Consecutive threads own consecutive channels, so every global access is coalesced.
struct window_traits {
  static constexpr int lanes = 64;
  static constexpr int segs = 4;
  static constexpr int threads = lanes * segs;
  static constexpr int fwd_tile = 128;   // tokens per forward / offset-gradient tile
  static constexpr int grad_batch = 32;  // tokens whose per-head channel sums are reduced together
  static_assert(threads % 32 == 0, "whole warps");
  static_assert(grad_batch % segs == 0, "each segment thread owns grad_batch / segs tokens of a batch");
};

// Tuning of the vector window tiles (forward, offset gradients) per storage type, in one place (CUB-style
// policy): a block of `threads` owns `lanes` channels (the window_geom channel plan) as `cols` 16-byte
// vectors of `vec` channels. Loads and stores: consecutive threads take consecutive vectors of a row
// (coalesced 16-byte accesses). Prefix scan: a column of scan_width accumulators is owned by scan_segs
// consecutive threads (one logical warp), each scanning a run of rows, joined by a cub::WarpScan. Shared rows of S are padded by
// 16 bytes (row stride = 4 banks): the segments of a column, odd runs apart, hit distinct banks.
// Tiles are sized so `min_blocks` blocks fit an SM (256 threads x 4 = 32 warps: >= 50% occupancy on
// sm_80 and sm_90); a tile's halo rows are at most about a quarter of its tokens.
template <class T>
struct window_tile_policy {
  using A = acc_t<T>;
  static constexpr int threads = 256;
  static constexpr int lanes = window_traits::lanes;
  static constexpr int vec = 16 / static_cast<int>(sizeof(T));
  static constexpr int cols = lanes / vec;
  // The prefix scan works on 16-byte words of accumulators (4 floats or 2 doubles), whatever the storage
  // type: scan_cols columns of scan_segs segment threads each (more rows per segment for 16-bit types,
  // so the warp scan's fixed cost is spread over more rows).
  static constexpr int scan_width = 16 / static_cast<int>(sizeof(A));
  static constexpr int scan_cols = lanes / scan_width;
  static constexpr int scan_segs = threads / scan_cols;
  static constexpr int stride = lanes + 16 / static_cast<int>(sizeof(A));  // shared row stride, in A
  // A column's vec accumulators in a shared row are `chunks` 16-byte words, chunk q of column col at word
  // q * cols + col (interleaved): the 8 threads of a quarter warp (one row, 8 columns) then touch 8
  // consecutive words, one wavefront per 16-byte access. Contiguous columns put 16-bit types' chunks 32
  // bytes apart, two wavefronts each: the bank conflicts ncu counted on an H200 (2026-11-30, about 1e7
  // lost wavefronts per bf16 window launch). The scan works per word and does not see the order.
  static constexpr int chunks = vec * static_cast<int>(sizeof(A)) / 16 > 0 ? vec * static_cast<int>(sizeof(A)) / 16 : 1;
  static constexpr int min_blocks = 4;
  static constexpr int unit = 32;       // tile lengths are multiples of this
  static constexpr int max_tile = 512;  // tokens
  static_assert(vec >= 1 && lanes % vec == 0 && threads % cols == 0, "whole vectors, whole columns");
  static_assert(scan_segs >= 1 && scan_segs <= 32 && (scan_segs & (scan_segs - 1)) == 0,
                "a scan column's segments form a logical warp");
  static_assert((stride * sizeof(A)) % 16 == 0, "rows keep 16-byte alignment");
};

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

// The offset gradients (window_offsets_grad_gather): dy/do needs x at two rows per (token, head) only
// (detail::left_slope_row / right_slope_row), so a block keeps no prefix rows: a table of the rows of its
// tile's (token, head) pairs, then per (token, 16-byte column) one dy vector and two x vectors, loaded
// per_thread tokens at a time, and the products buffer [2][tile][cols] for the column-order head sums.
template <class T>
struct offsets_grad_policy {
  using P = window_tile_policy<T>;
  static constexpr int threads = P::threads;
  static constexpr int step = threads / P::cols;       // tokens per pass of the block
  static constexpr int per_thread = 2;                 // tokens whose loads a thread issues together
  static constexpr int tile = per_thread * step;       // 64 (16-bit), 32 (float), 16 (double)
  static constexpr int min_blocks = 4;                 // 64 registers: 6 loads of 16 bytes in flight
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

// Threads of the elementwise row kernels (dropout, offset-gradient combine, dW combine, scans).
constexpr int row_threads = 256;
// Offsets one block of the projection / dW / offset-path GEMMs holds at once (the widest offset tile:
// P = 2H = 32 for 16 bidirectional heads is one tile; wider P takes more tiles or the slow path).
constexpr int proj_chunk = 32;

// Tiling of the offset projection z = x W^T ([N, C] x [C, P], N = T * B rows), per storage type: a block
// owns `rows` rows and an offset tile of BN <= proj_chunk columns and walks C in `k_tile` steps (a
// 128-byte segment of each row: every x sector fetched is used whole). x is read once when P <= BN.
//   tensor_cores: 16-bit inputs, mma.sync m16n8k16 with float accumulators (products of 16-bit values
//     are exact in float), fragments by ldmatrix; 8 warps, 16 rows each. Also picks the tensor-core dW
//     (agent_dw_tc.cuh).
//   tf32x3: float, TF32 mma.sync m16n8k8 with x and W split hi + lo and three products per pair (3xTF32,
//     within 2^-19 per product); 8 warps, 16 rows each, the same staged tiles as tensor_cores. Also picks
//     the tensor-core dW with x split likewise (agent_dw_tc.cuh).
//   otherwise: CUDA-core FMA, one row per thread, its BN sums in registers, the weight tile broadcast
//     from shared memory (P FMAs per element of x, no reductions).
template <class T>
struct project_policy {
  static constexpr bool tensor_cores = false;
  static constexpr bool tf32x3 = false;
  static constexpr int threads = sizeof(acc_t<T>) > 4 ? 128 : 256;  // double: 128 rows keep the tile < 48 KiB
  static constexpr int rows = threads;
  static constexpr int k_tile = 128 / int(sizeof(T));
  static constexpr int min_blocks = sizeof(acc_t<T>) > 4 ? 1 : 2;  // float: <= 128 registers
  static constexpr int ring_k = 0, ring_stages = 0;                  // no cp.async ring (16-bit x only)
};
template <>
struct project_policy<float> {
  static constexpr bool tensor_cores = false;  // (the 16-bit tensor-core dW and offset path are not float's)
  static constexpr bool tf32x3 = true;
  static constexpr int threads = 256;
  static constexpr int rows = 128;
  static constexpr int k_tile = 32;  // 128 bytes of each row per step
  static constexpr int min_blocks = 2;
  static constexpr int ring_k = 0, ring_stages = 0;
};
template <>
struct project_policy<__half> {
  static constexpr bool tensor_cores = true;
  static constexpr bool tf32x3 = false;
  static constexpr int threads = 256;
  static constexpr int rows = 128;
  static constexpr int k_tile = 64;
  // <= 64 registers (a few words spilled outside the k loop): 32 warps per SM, and the 512 row tiles of
  // T * B = 65536 tokens in one wave of 132 x 4 (3 per SM, 80 registers, ran 396 then 116: 62 us on an
  // H200, 2026-11-30).
  static constexpr int min_blocks = 4;
  // Full tiles through a cp.async ring (project_tile::run_async): k tiles of ring_k, ring_stages of them, each
  // (rows + BN) x 64 bytes. 4 stages (43 KB a block at BN = 32) where 4 blocks fit an SM's shared memory
  // (sm_90: 228 KB); 3 on sm_80 .. sm_89 (A100's 164 KB: 4 blocks of 34 KB).
  static constexpr int ring_k = 32;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  static constexpr int ring_stages = 3;
#else
  static constexpr int ring_stages = 4;
#endif
};
template <>
struct project_policy<__nv_bfloat16> : project_policy<__half> {};

// Below this many tiles the projection is a dot product per (row, offset) instead (one warp each, spread
// over N * P / 8 blocks): the decoder's single token (N = B rows) and other tiny problems. A function of
// the shape only, so a given shape always sums in the same order.
constexpr long long project_min_tiles = 32;
// Offsets per projection tile for dispatch_heads' bound PC (16-bit: ldmatrix pairs of 8-column tiles, at least 16).
template <class T, int PC>
constexpr int project_bn() {
  return project_policy<T>::tensor_cores && PC < 16 ? 16 : PC;
}
// Whether the projection of N rows and P offsets in tiles of BN offsets takes the dot-product form.
inline bool project_dot_form(index_t N, index_t P, index_t rows, int BN) {
  return ((N + rows - 1) / rows) * ((P + BN - 1) / BN) < project_min_tiles && N <= 65535;
}

// The two GEMMs that read dz [N, P] (float or double): dW = dz^T x (row-chunk partials) and the offset
// path dx += dz W. A thread owns `pair` = 2 adjacent channels and up to proj_chunk offsets: 2 * P
// accumulators (dW) or 2 * P weights (dx) in registers; dz rows are staged `dz_rows` at a time in
// shared memory and read as broadcasts. P FMAs per element of x or dx, one 2-element load.
struct dz_gemm_policy {
  static constexpr int threads = 256;
  static constexpr int pair = 2;
  static constexpr int channels = threads * pair;  // per block
  static constexpr int dz_rows = 64;               // dz rows staged per batch
  static constexpr int dx_rows = 128;              // rows per offset-path block
  static constexpr int ahead = 8;                  // rows whose x / dx loads a thread keeps in flight
  // Resident blocks per SM asked of ptxas: 2 (<= 128 registers) for float sums; double's 2 x 32 sums or
  // weights need more (1 block: 128 would spill).
  template <class A>
  static constexpr int min_blocks = sizeof(A) > 4 ? 1 : 2;
  static constexpr int max_chunks = 128;           // dW row chunks (partials: chunks * P * C accumulators)
  static constexpr int min_rows_per_chunk = 256;
  static_assert(dz_rows % ahead == 0 && dx_rows % dz_rows == 0, "whole look-ahead groups per staged batch");
  static_assert(proj_chunk <= dz_rows && dz_rows <= threads, "the bias and validity threads exist");
};

// The window and the channel plan of the window kernels. A block's channels never straddle a head
// boundary in a way that needs a cross-block sum, except when a head is wider than a block: then the
// head is split into `subs` blocks and their partial head sums are combined in a fixed order.
struct window_geom {
  index_t H = 1, R = 1, L = 0, M = 0;
  int heads_per_block = 1;  // R <= lanes: whole heads per block
  int subs = 1;             // R > lanes: blocks per head
  int blocks = 1;           // channel blocks (grid y)

  static window_geom make(const window_params& w, index_t C) {
    window_geom g;
    g.H = w.heads;
    g.R = C / w.heads;
    g.L = w.max_left;
    g.M = w.max_right;
    constexpr index_t lanes = window_traits::lanes;
    // Counts are computed in 64 bits and saturated to INT_MAX (never truncated), so window_grid's
    // limit check sees a huge channel plan as huge. subs * H <= C cannot overflow.
    auto sat = [](index_t v) { return static_cast<int>(v < INT_MAX ? v : INT_MAX); };
    if (g.R <= lanes) {
      g.heads_per_block = static_cast<int>(lanes / g.R);
      g.subs = 1;
      g.blocks = sat((g.H + g.heads_per_block - 1) / g.heads_per_block);
    } else {
      g.heads_per_block = 1;
      const index_t subs = (g.R + lanes - 1) / lanes;
      g.subs = sat(subs);
      g.blocks = sat(g.H * subs);
    }
    return g;
  }

  // The heads [h_first, h_first + nh) that channel block k meets, without a division by R (the same
  // plan as block_channels: whole heads per block, or one head split over `subs` blocks).
  TALKCONV_HOST_DEVICE void block_heads(int k, index_t& h_first, int& nh) const {
    if (subs == 1) {
      h_first = index_t(k) * heads_per_block;
      nh = static_cast<int>(H - h_first < heads_per_block ? H - h_first : heads_per_block);
    } else {
      h_first = k / subs;
      nh = 1;
    }
  }
  // Head of channel c0 + x of block k (0 <= x < the block's channels), relative to its h_first.
  TALKCONV_HOST_DEVICE int head_in_block(int x) const { return subs == 1 ? x / static_cast<int>(R) : 0; }

  // Channels [c0, c0 + cn) of channel block k, and which split of its head it is (0 unless subs > 1).
  TALKCONV_HOST_DEVICE void block_channels(int k, index_t& c0, int& cn, int& sub) const {
    if (subs == 1) {
      const index_t width = heads_per_block * R;
      c0 = k * width;
      const index_t end = c0 + width < H * R ? c0 + width : H * R;
      cn = static_cast<int>(end - c0);
      sub = 0;
    } else {
      const index_t h = k / subs;
      sub = k - static_cast<int>(h * subs);
      c0 = h * R + index_t(sub) * window_traits::lanes;
      const index_t rest = R - index_t(sub) * window_traits::lanes;
      cn = static_cast<int>(rest < window_traits::lanes ? rest : window_traits::lanes);
    }
  }
};

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
