// How time is cut into tiles whose prefix sums restart (SPEC Numerics), shared by every path.
#pragma once

#include "talkconv/config.hpp"

namespace talkconv {
namespace detail {

// Tile length for a largest window K. A tile's local prefix sums reach |S| ~ (tile + reach) / K times
// |x|, so the tile grows with the window: error stays window-sized for every T, and the halo re-read
// ((tile + reach) / tile) stays bounded. Independent of the thread count, so results are too.
TALKCONV_HOST_DEVICE inline index_t tile_length(index_t K) {
  index_t t = 8 * K;
  if (t < 32) t = 32;
  if (t > 512) t = 512;
  return t;
}

TALKCONV_HOST_DEVICE inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

}  // namespace detail
}  // namespace talkconv
