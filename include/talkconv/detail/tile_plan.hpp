// How the CPU path cuts time into tiles (its unit of parallel work and of prefix-sum restarts).
#pragma once

#include "talkconv/config.hpp"

namespace talkconv {
namespace detail {

// Tile length of the CPU path for a largest window K, T tokens and B sequences. Its ring of prefix
// sums is re-based as it turns over, so the error does not depend on the tile. Long tiles make the
// halo re-read small (<= 1/8 of the tile); at least 16 tasks in all keep two or more threads busy on
// few sequences. A function of the shape only, never of the thread count: results stay bitwise equal.
// Never longer than the sequence: callers size per-tile scratch by it, and a tile of T tokens is the
// same single task as a longer one (a window of K = 2^40 on T = 12 tokens needs scratch for 12).
TALKCONV_HOST_DEVICE inline index_t cpu_tile_length(index_t K, index_t T, index_t B) {
  index_t tile = K > (index_t(1) << 40) ? K : (8 * K < 1024 ? 1024 : 8 * K);  // no overflow for huge K
  const index_t per_seq = B >= 16 ? 1 : (16 + B - 1) / B;  // tiles per sequence for 16 tasks
  const index_t even = (T + per_seq - 1) / per_seq;
  const index_t floor_len = 2 * K < 256 ? 256 : 2 * K;
  if (even < tile) tile = even < floor_len ? floor_len : even;
  return tile < T ? tile : T;
}

// ceil(a / b) for a >= 0, b > 0, without forming a + b - 1 (which overflows near the index limit).
TALKCONV_HOST_DEVICE inline index_t ceil_div(index_t a, index_t b) { return a / b + (a % b != 0 ? 1 : 0); }

}  // namespace detail
}  // namespace talkconv
