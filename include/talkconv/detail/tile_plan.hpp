// How time is cut into tiles whose prefix sums restart (SPEC Numerics), shared by every path.
#pragma once

#include "talkconv/config.hpp"

namespace talkconv {
namespace detail {

// Tile length for a largest window K on a path whose local prefix sums restart per tile (and are not
// re-based within it): they reach |S| ~ (tile + reach) / K times |x|, so the tile grows with the
// window: error stays window-sized for every T, and the halo re-read ((tile + reach) / tile) stays
// bounded. Independent of the thread count, so results are too.
TALKCONV_HOST_DEVICE inline index_t tile_length(index_t K) {
  index_t t = 8 * K;
  if (t < 32) t = 32;
  if (t > 512) t = 512;
  return t;
}

// Tile length of the CPU path for a largest window K, T tokens and B sequences. Its ring of prefix
// sums is re-based as it turns over, so the error does not depend on the tile. Long tiles make the
// halo re-read small (<= 1/8 of the tile); at least 16 tasks in all keep two or more threads busy on
// few sequences. A function of the shape only, never of the thread count: results stay bitwise equal.
TALKCONV_HOST_DEVICE inline index_t cpu_tile_length(index_t K, index_t T, index_t B) {
  index_t tile = 8 * K < 1024 ? 1024 : 8 * K;
  const index_t per_seq = B >= 16 ? 1 : (16 + B - 1) / B;  // tiles per sequence for 16 tasks
  const index_t even = (T + per_seq - 1) / per_seq;
  const index_t floor_len = 2 * K < 256 ? 256 : 2 * K;
  if (even < tile) tile = even < floor_len ? floor_len : even;
  return tile;
}

TALKCONV_HOST_DEVICE inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

}  // namespace detail
}  // namespace talkconv
