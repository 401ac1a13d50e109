// Every per-dtype, per-architecture tuning choice of the CUDA kernels in one place (CUB-style policies): block
// shapes, tiles, vector widths, resident blocks per SM, pipeline depths, the widest windows the banded kernels take,
// and the compile-time A/B switches of the profiler runs (scripts/gpu-lease.sh). The kernels (kernel_*.cuh), their
// per-block work (agent_*.cuh) and the host launchers (device_*.cuh) read these; nothing here launches or computes.
// bench/cuda/BUDGET.md says why each number is what it is (instructions and bytes per element, measured or estimated).
#pragma once

#include "talkconv/cuda/cuda_traits.hpp"
#include "talkconv/detail/dx_band.hpp"
#include "talkconv/detail/dx_plan.hpp"
#include "talkconv/detail/dx_sorted.hpp"
#include "talkconv/traits.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

// ---- A/B switches (each 1 by default; 0 takes the path before the change: the same results, for the profiler) ----
// (And one knob, in detail/dx_band.hpp because the CPU emulation plans with it too: TALKCONV_CUDA_BAND_MAX_K, the
// widest window of 16-bit x the banded kernels take, 255.)

// TALKCONV_CUDA_BAND=0 turns the banded kernels off (16-bit x then takes the vector-tile forward and the event
// dx kernel, as before 2026-12-01): an A/B switch for the benchmarks, the same sums either way.
#ifndef TALKCONV_CUDA_BAND
#define TALKCONV_CUDA_BAND 1
#endif

// TALKCONV_CUDA_PROJECT_ASYNC=0 keeps 16-bit x on the register-staged K loop for full tiles too (an A/B switch
// for the profiler: scripts/gpu-lease.sh's ncu-noband step builds with it).
#ifndef TALKCONV_CUDA_PROJECT_ASYNC
#define TALKCONV_CUDA_PROJECT_ASYNC 1
#endif

// TALKCONV_CUDA_DW_ASYNC=0 keeps dW on its register-staged path, every dtype (an A/B switch for the profiler:
// scripts/gpu-lease.sh's ncu-noband step builds with it and TALKCONV_CUDA_BAND=0).
#ifndef TALKCONV_CUDA_DW_ASYNC
#define TALKCONV_CUDA_DW_ASYNC 1
#endif

// TALKCONV_CUDA_FUSED_FORWARD=0 keeps the layer forward on its two kernels (projection, then window): an A/B switch
// for the profiler (scripts/gpu-lease.sh's ncu-noband step builds with it).
#ifndef TALKCONV_CUDA_FUSED_FORWARD
#define TALKCONV_CUDA_FUSED_FORWARD 1
#endif

// TALKCONV_CUDA_FUSED_BACKWARD=0 keeps the window backward on its two kernels (gather, then banded dx): an A/B
// switch for the profiler (scripts/gpu-lease.sh's ncu-noband step builds with it).
#ifndef TALKCONV_CUDA_FUSED_BACKWARD
#define TALKCONV_CUDA_FUSED_BACKWARD 1
#endif

// -DTALKCONV_CUDA_L2_HINTS=0 turns the L2 cache hints (async_copy.cuh) off everywhere (an A/B switch: the results
// are the same).
#ifndef TALKCONV_CUDA_L2_HINTS
#define TALKCONV_CUDA_L2_HINTS 1
#endif

// TALKCONV_CUDA_DX_SORTED=0 keeps dx on the event kernel where the banded kernels do not take it (double, float past
// K = 127, 16-bit x past TALKCONV_CUDA_BAND_MAX_K, heads of R % 16 != 0): an A/B switch for the profiler; the sorted
// path's workspace (bench/cuda/BUDGET.md, seventeenth session) is then not asked for.
#ifndef TALKCONV_CUDA_DX_SORTED
#define TALKCONV_CUDA_DX_SORTED 1
#endif

namespace talkconv {
namespace cuda {
namespace detail {

// ---- the window kernels (vector tiles: forward, offset gradients; segments; the event dx) ----
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
  // passes of per_thread tokens a thread makes over the tile: the thread's setup (head, 1/K, bases: about as many
  // instructions as one pass's products) paid once per 2 passes (sm_90 SASS, bf16: the products section 286
  // instructions for 16 elements with one pass)
  static constexpr int passes = 2;
  static constexpr int tile = per_thread * step * passes;  // 128 (16-bit), 64 (float), 32 (double)
  static constexpr int min_blocks = 4;                 // 64 registers: 6 loads of 16 bytes in flight
};

// The tile is long because every tile stages and scans its whole span: the span's rows per token,
// (tile + L + M) / tile, is the kernel's cost. A 32-token tile at L = M = 511 staged 33 rows per token
// (1.88 ms on an H200, 2026-11-30, slower than the original algorithm's global prefix tensor); 256 tokens
// stage 5. The price is 64 accumulators per thread (tile * 64 channels / 256 threads), so 2 blocks per SM
// (128 registers) instead of the vector tile's 4; double keeps 128 tokens (64 registers of accumulators).
template <class T>
struct segment_policy {
  using P = window_tile_policy<T>;
  static constexpr int tile = sizeof(acc_t<T>) > 4 ? 4 * P::unit : 8 * P::unit;  // tokens per block
  static constexpr int step = P::threads / P::cols;                             // tokens per pass of the block
  static constexpr int per_thread = tile / step;  // 8 (16-bit), 16 (float, double)
  static constexpr int min_blocks = 2;
  static_assert(tile % step == 0, "whole passes");
  static_assert(per_thread * P::vec * sizeof(acc_t<T>) <= 256, "64 accumulator registers per thread");
};

// Per-dtype policy of the dx kernel, in one place: 16-byte vectors, the block shape of dx_plan.hpp.
template <class T>
struct dx_policy {
  using A = acc_t<T>;
  static constexpr int vec = sizeof(T) >= 16 ? 1 : int(16 / sizeof(T));
  TALKCONV_HOST_DEVICE static constexpr talkconv::detail::dx_block_shape shape(int v) {
    return talkconv::detail::make_dx_block_shape(int(sizeof(A)), v);
  }
  static constexpr int threads = shape(1).threads;
  static constexpr int warps = shape(1).warps;
  static constexpr int lanes = shape(1).lanes;
  static constexpr int tile = shape(1).tile;
  static constexpr int max_bins = talkconv::detail::dx_max_bins(tile);
  // Resident blocks per SM the registers must allow: 4 (32 warps, 64 registers: half the SM's warps, for the
  // gather's dependent event -> dy loads; the spills this costs lie outside the row-gather loops: bench/cuda/
  // BUDGET.md, thirteenth session); 2 for 8-byte accumulators.
  static constexpr int min_blocks = sizeof(A) > 4 ? 2 : 4;
  // consecutive tiles per block, walked last to first: setup and divisions amortized, the carry chained
  static constexpr int tiles_per_block = talkconv::detail::dx_tiles_per_block;
  static constexpr int sorted_tiles_per_block = talkconv::detail::dx_sorted_tiles_per_block;  // the sorted-events dx's
  // The fused offset path (add_fused_offset_path): 16-bit types and float with 16-byte vectors (8 channels x
  // 4 rows, 4 x 8 per thread), W^T of at most fused_chunks chunks of 32 offsets staged (8 KiB each, twice
  // for float: W is split hi + lo, 3xTF32).
  static constexpr bool fusable = (sizeof(T) == 2 && vec == 8) || (std::is_same<T, float>::value && vec == 4);
  static constexpr bool split_w = std::is_same<T, float>::value;  // W not exact in TF32
  static constexpr int fused_chunks = 4;
  static constexpr int fused_min_blocks = 4;  // 64 registers, as unfused
  // 16-bit vectors stage each batch's dy rows in shared memory (cp.async, issued before the pair phase and
  // waited for before the gather, so the loads' latency hides behind the ranking): the gather's dependent
  // event -> dy loads are then shared-memory loads. Rows (one per distinct token of a batch): as many as keep
  // min_blocks blocks per SM, at most threads, at least min_stage_rows (detail::dx_stage_key gives the layout).
  static constexpr bool stage_dy = sizeof(T) == 2;
  static constexpr int stage_row_bytes = 128;  // the block's 64 channels
  static constexpr int min_stage_rows = 64;
  static_assert(lanes == window_traits::lanes, "dx blocks use the window kernels' channel plan");
  static_assert(threads == warps * 32, "whole warps");
  // The sorted-events kernel (agent_window_input_grad_sorted.cuh): a tile's events staged in chunks of this many
  // bytes (2048 events of 8 bytes for 16-bit x and float, 1024 of 16 for double; the raking pass aliases them).
  static constexpr int sorted_stage_bytes = 16384;
};

// ---- the banded window kernels (tensor cores: dx = W dY, y = W X) ----
// Per-dtype policy of the banded kernels: for 16-bit x on m16n8k16 (x / dy is the mma's b operand), for float on
// TF32 m16n8k8 (3xTF32: agent_window_input_grad_band_tf32.cuh, agent_window_forward_band_tf32.cuh), each up to
// its widest window (max_k: dx, fwd_max_k: forward).
template <class T>
struct dx_band_policy {
  static constexpr bool sixteen = std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value;
  static constexpr bool tf32 = std::is_same<T, float>::value;
  static constexpr bool supported = TALKCONV_CUDA_BAND != 0 && (sixteen || tf32);  // the dx kernel
  static constexpr bool forward = supported;                                    // the forward kernel
  static constexpr int threads = 256;  // 8 warps x 16 rows: detail::dx_band_plan
  // float: a staged token is 512 bytes (hi and lo of 64 channels), so a tile's span at K = 33 (a stage of
  // 176 + 8 rows, 92 KB, and W's split fragments, 16 KB at P = 32) leaves room for 2 blocks per SM; 16-bit:
  // 128 bytes, 3 blocks.
  static constexpr int min_blocks = tf32 ? 2 : 3;
  static constexpr int tiles_per_block = 4;  // the W stage and the block's setup paid once per 4 tiles
  static constexpr int fwd_tiles_per_block = 2;
  // Fused offset path: P <= 128 (steps of 8 offsets; float's W fragments, 4 KB a step, shorten its stage).
  static constexpr int max_steps = 16;
  static constexpr index_t max_k = tf32 ? talkconv::detail::dx_band_max_k_tf32 : talkconv::detail::dx_band_max_k;
  static constexpr index_t fwd_max_k = tf32 ? talkconv::detail::fwd_band_max_k_tf32 : talkconv::detail::dx_band_max_k;
  static constexpr int pad_rows = tf32 ? talkconv::detail::band_tf32_pad : 16;          // past a segment's rows
  static constexpr unsigned row_bytes = tf32 ? talkconv::detail::band_tf32_row_bytes : 128u;  // per staged token
  static constexpr unsigned w_frag_bytes = tf32 ? 16u : 8u;  // per (step, tile, lane): W hi (+ lo) of 2 offsets
};

// ---- the offset GEMMs (projection, dW, the offset path of dx) and the row kernels ----
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

// The fused layer forward (agent_forward_fused.cuh) exists for T where both of its halves run on tensor cores: the
// banded forward and the tiled projection (16-bit x on 16-bit mma; float x, both on 3xTF32).
template <class T>
constexpr bool forward_fused_types =
    dx_band_policy<T>::forward && (project_policy<T>::tensor_cores || project_policy<T>::tf32x3);

// The fused window backward (agent_backward_fused.cuh) exists for T whose banded dx runs on tensor cores: 16-bit x
// (16-bit mma) and float (3xTF32).
template <class T>
constexpr bool backward_fused_types = dx_band_policy<T>::sixteen || std::is_same<T, float>::value;

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

// Block tile: offsets [p0, p0 + PT) x channels [c0, c0 + channels); rows in steps of k_rows. Warp w
// owns channels [32 w, 32 w + 32) (four 8-column mma tiles) and every offset tile: each A fragment
// (dz hi / lo) loaded once serves the four.
template <int PT>
struct dw_tc_policy {
  static constexpr int threads = 256;
  static constexpr int warps = threads / 32;
  static constexpr int n_tiles = 4;                      // 8-channel mma tiles per warp
  static constexpr int channels = 8 * n_tiles * warps;  // 256
  static constexpr int k_rows = 32;
  static constexpr int ldx = channels + 8;  // floats: fragment reads (q * ldx + g) hit 32 distinct banks
  static constexpr int ldd = PT + 8;        // likewise (q * ldd + g)
  static constexpr int dz_cols = PT / 4;    // dz staging: one float4 of a row per thread
  static_assert(PT == 16 || PT == 32, "whole 16-offset fragments");
  static_assert(k_rows * dz_cols <= threads, "one dz float4 per thread");
};

// The offset path dx += dz W on tensor cores for 16-bit dx (agent_offset_path_tc.cuh): block shape.
template <int PT>
struct dx_tc_policy {
  static constexpr int threads = 256;
  static constexpr int warps = threads / 32;
  static constexpr int col_warps = 4;                    // warps across the channels, 32 channels each
  static constexpr int row_warps = warps / col_warps;    // 2
  static constexpr int channels = 32 * col_warps;        // 128
  static constexpr int m_tiles = 2;                      // 16-row mma tiles per warp per step
  static constexpr int rows = 16 * m_tiles * row_warps;  // 64 rows per step
  static constexpr int steps = 4;                        // row steps per block (W staged once for 256 rows)
  static constexpr int ldw = channels + 8;  // W [PT][ldw]: B reads (q * ldw + g) hit 32 distinct banks
  static constexpr int ldd = PT + 4;        // dz [rows][ldd]: A reads (g * ldd + q) hit 32 distinct banks
  static constexpr int dz_cols = PT / 4;    // dz staging: float4s per row
  static constexpr int dz_loads = rows * dz_cols / threads;
  static_assert(PT == 16 || PT == 32, "whole 8-offset k steps");
  static_assert(rows * dz_cols % threads == 0, "whole dz float4s per thread");
};

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
