// Tiling of the vectorized CUDA window kernels (forward, offset gradients), host+device so the CPU suite
// tests the GPU's plan and per-tile arithmetic: which S rows a tile keeps, how long a tile is, which
// tokens take the direct path, and a token's taps as rows of the tile.
#pragma once

#include "talkconv/config.hpp"
#include "talkconv/detail/math.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace talkconv {
namespace detail {

// A launch's tiling: `tile` tokens per block and `rows` rows of S kept in shared memory, of which `left`
// lie before the tile's first token (the base row S[t0 - left] included). rows <= max_tile_rows, so a
// row fits the int16 of tile_tap.
struct window_tile_plan {
  int tile = 0;
  int rows = 0;
  int left = 0;
  std::size_t smem = 0;  // dynamic shared memory of a block
};

constexpr int max_tile_rows = 32767;

// What a block's shared memory holds, for the plan: `row_bytes` per kept row of S, `token_bytes` per
// token of the tile (its tap table and scratch), `fixed_bytes` once. `budget`: the most a block may take
// and still leave the policy's blocks per SM resident; `limit`: the most a block may take at all.
// per_sm > 0: the SM's shared memory, so the plan may trade blocks per SM (min_blocks, half of it, ... 1;
// each block also costing block_overhead) for longer tiles when a window's halo is long.
struct window_tile_costs {
  std::size_t row_bytes = 0, token_bytes = 0, fixed_bytes = 0, budget = 0, limit = 0;
  int unit = 32;      // tile lengths are multiples of this
  int max_tile = 512; // longest tile
  std::size_t per_sm = 0, block_overhead = 0;
  int min_blocks = 4;
};

// The relative time of a tiling (lower is faster): a block stages and scans its tile + halo rows and
// writes its tile's tokens, about 1 : 2 per row by the H200 times of 2026-11-30 (bf16 forward: 145 us with
// 160-token tiles at L = M = 16, 0.70 ms with 32-token tiles at L = M = 127, 1.5 ms at L = M = 255); fewer
// resident blocks hide less latency, about as the square root of their number by the same times.
// Fewer blocks per SM only for a cost below this fraction of the best so far (the model is coarse).
constexpr double window_tile_margin = 0.9;
inline double window_tile_cost(double tile, double halo, int blocks) {
  return (3.0 + halo / tile) / std::sqrt(double(blocks > 0 ? blocks : 1));
}

// Halo rows of a window for offsets up to max_offset: left includes the base row (the lowest tap of token t
// is floor(t - o L) - 1 >= t - ceil(L o) - 1), right reaches ceil(t + o M) <= t + ceil(M o). Saturated
// (a huge L or max_offset gives a huge count, never a wrapped one).
inline double halo_left_rows(index_t L, double max_offset) {
  return std::ceil(double(L) * max_offset) + 1.0;
}
inline double halo_right_rows(index_t M, bool causal, double max_offset) {
  return causal ? 0.0 : std::ceil(double(M) * max_offset);
}

// The tile: about 4x the halo (halo re-read <= 25%), a multiple of `unit`, shrunk until the block fits
// `budget` (occupancy). With per_sm, every occupancy from min_blocks down to 1 block per SM is tried, each
// with its longest tile, and the lowest window_tile_cost wins, fewer blocks only by a margin (a long halo: fewer blocks, longer tiles, not
// 32-token tiles re-reading a halo 8x their length). When the whole halo exceeds `limit`, the rows are
// capped (the tile shrinking until the kept halo is at least as long as the tile) and split between the
// sides in proportion (tokens reaching past them take the direct path: only speed depends on this, never
// the result). tile == 0: nothing fits (the caller reports it).
inline window_tile_plan plan_window_tile(index_t L, index_t M, bool causal, double max_offset,
                                         const window_tile_costs& k) {
  if (!(max_offset >= 0.0) || !std::isfinite(max_offset)) max_offset = 1.0;
  const double hl = halo_left_rows(L, max_offset), hr = halo_right_rows(M, causal, max_offset);
  const double halo = hl + hr;
  auto bytes = [&](double tile, double rows) {
    return rows * double(k.row_bytes) + tile * double(k.token_bytes) + double(k.fixed_bytes);
  };
  double longest = std::ceil(4.0 * halo / k.unit) * k.unit;
  if (longest < 2 * k.unit) longest = 2 * k.unit;
  if (longest > k.max_tile) longest = k.max_tile;
  // The longest tile whose whole span fits `room` (0: not even one unit).
  auto fit = [&](double room) {
    double t = longest;
    while (t > k.unit && bytes(t, t + halo) > room) t -= k.unit;
    return bytes(t, t + halo) <= room ? t : 0.0;
  };
  double tile = fit(double(k.budget));
  if (k.per_sm > 0) {
    double best = tile > 0.0 ? window_tile_cost(tile, halo, k.min_blocks) : 0.0;
    for (int b = k.min_blocks / 2; b >= 1; b /= 2) {
      const double share = double(k.per_sm / std::size_t(b)) - double(k.block_overhead);
      const double t = fit(share < double(k.limit) ? share : double(k.limit));
      if (t <= 0.0) continue;
      const double cost = window_tile_cost(t, halo, b);
      if (tile <= 0.0 || cost < window_tile_margin * best) tile = t, best = cost;
    }
  }
  if (tile <= 0.0) tile = k.unit;  // no occupancy holds the span: the capped plan below
  window_tile_plan p;
  double rows = tile + halo;
  for (;;) {
    rows = tile + halo;
    if (bytes(tile, rows) <= double(k.limit) && rows <= max_tile_rows) break;
    // Capped: as many rows as fit; shorter tiles until the kept halo is at least the tile (or one unit).
    const double room = double(k.limit) - bytes(tile, 0.0);
    rows = room > 0.0 ? std::floor(room / double(k.row_bytes)) : 0.0;
    if (rows > max_tile_rows) rows = max_tile_rows;
    if (rows >= 2.0 * tile + 1.0 || tile <= k.unit) break;
    tile -= k.unit;
  }
  if (rows < tile + 1.0) return p;  // not even the tile and its base row
  const double spare = rows - tile;  // halo rows kept, base row included
  double left = halo > 0.0 ? std::floor(spare * hl / halo) : spare;
  if (left < 1.0) left = 1.0;
  if (left > spare) left = spare;
  p.tile = static_cast<int>(tile);
  p.rows = static_cast<int>(rows);
  p.left = static_cast<int>(left);
  p.smem = static_cast<std::size_t>(bytes(tile, rows));
  return p;
}

// The S rows [first, last] tile [t0, t0 + tile) of a sequence of valid length n keeps: shared row r holds
// S[first + r] - S[first] (row 0 is zero), so x rows first + 1 .. last are loaded. first >= -1 (S[-1] = 0).
struct tile_rows {
  index_t first, last;
  TALKCONV_HOST_DEVICE int data_rows() const { return static_cast<int>(last - first); }
};
TALKCONV_HOST_DEVICE inline tile_rows window_tile_rows(index_t t0, index_t n, int rows, int left) {
  index_t first = t0 - left;
  if (first < -1) first = -1;
  index_t last = first + rows - 1;
  if (last > n - 1) last = n - 1;
  if (last < first) last = first;
  return tile_rows{first, last};
}

// A token's taps as rows of its tile (row = S index - first), or r0 = -1 when one of them lies outside
// the kept rows: that token takes the direct path (sums x from global memory, window_value_diff).
// 16 bytes for a float accumulator: one shared-memory vector load per (token, head, thread).
template <class A>
struct alignas(sizeof(A) == 4 ? 16 : 8) tile_tap {
  std::int16_t r0, r1, r2, r3;
  A fr, fl;
};

template <class A, class I>
TALKCONV_HOST_DEVICE inline tile_tap<A> make_tile_tap(const window_taps<A, I>& k, const tile_rows& w) {
  if (taps_min(k) < w.first || taps_max(k) > w.last) return tile_tap<A>{-1, -1, -1, -1, k.fr, k.fl};
  return tile_tap<A>{static_cast<std::int16_t>(k.i0 - w.first), static_cast<std::int16_t>(k.i1 - w.first),
                     static_cast<std::int16_t>(k.i2 - w.first), static_cast<std::int16_t>(k.i3 - w.first), k.fr,
                     k.fl};
}

TALKCONV_HOST_DEVICE inline int odd_up(int v) { return v | 1; }

// Windows wider than the rows a block can keep (the segmented forward): the span of S rows [first, last]
// a tile's windows read is walked in segments, each staged as local prefix sums from its base row. With
// S_s(i) = sum of x over (base_s, min(i, end_s)] for i >= base_s and 0 below, the segments' S_s add up to
// the span's S(i) - S(first) for every i in the span, and window_value_frac is linear in its four sums:
// y = sum over segments of window_value_frac(fr, fl, S_s(i0), S_s(i1), S_s(i2), S_s(i3)), each S_s read
// at the tap's row clamped into the segment (a segment wholly left or right of a window adds exactly 0).
// segment_row: a tap's row r (relative to `first`) as a row of the segment [lo, hi] (0: its base row).
TALKCONV_HOST_DEVICE inline int segment_row(int r, int lo, int hi) { return (r < lo ? lo : (r > hi ? hi : r)) - lo; }

// The CUDA offset gradients' row table (window_offsets_grad_gather): per (token t, head) and side, the
// element offset row * xt of the x row its slope reads (left_slope_row / right_slope_row), or, where the
// slope is zero (row -1), -1 - t * xt: the token's own row, complemented, so the kernel's load stays in
// bounds and unpredicated while the sign still says "zero". Row 0 codes as 0, t = 0 as -1: no overlap.
TALKCONV_HOST_DEVICE constexpr long long slope_code(long long row, long long t, long long xt) {
  return row >= 0 ? row * xt : -1 - t * xt;
}
TALKCONV_HOST_DEVICE constexpr bool slope_nonzero(long long code) { return code >= 0; }
TALKCONV_HOST_DEVICE constexpr long long slope_offset(long long code) { return code >= 0 ? code : -1 - code; }

// The offset gradient's products buffer [2][tile][cols] (one value per token and 16-byte column): column
// col of token tok at tok * cols + products_slot(tok, col, cols). The head sums read it with one thread per
// token, the 32 consecutive tokens of a warp reading the same column: at tok * cols + col those are
// 32 / cols banks apart only (8- or 16-way conflicts); XORing col with the token's bits above
// 32 / cols spreads them over 32 banks, and the writers (the cols threads of one token) still store one
// permutation of the token's consecutive words. For cols a power of two up to 32; identity otherwise.
TALKCONV_HOST_DEVICE constexpr int products_slot(int tok, int col, int cols) {
  return cols <= 32 && (cols & (cols - 1)) == 0 ? col ^ ((tok / (32 / cols)) & (cols - 1)) : col;
}

// Rows of the tile's prefix scan per segment thread: ceil(data_rows / segs), made odd so that the
// segments of one column (a logical warp) read shared rows in distinct banks (row stride 4 banks mod 32).
TALKCONV_HOST_DEVICE inline int scan_rows_per_segment(int data_rows, int segs) {
  return odd_up((data_rows + segs - 1) / segs);
}

}  // namespace detail
}  // namespace talkconv
