// The tiling and bucketing of the window's input gradient on CUDA, host+device so the CPU tests run the
// same plan and the same event logic as the kernel (agent_window_input_grad.cuh).
//
// dx[tau] = (1/K) sum_{i >= tau} dS[i], dS[i] = sum over (token u, head, tap j) with i_j(u) == i of
// w_j(u) dy[u]. A tile owns rows [t0, t1): each tap of a token is an *event* (row, weight). Taps below t0
// never reach the tile's rows; taps at or above t1 reach all of them (the tile's carry); a token whose
// taps all lie at or above t1 adds w0 + w1 + w2 + w3 = 0 to every row and is skipped (as the CPU path
// does). Events are bucketed by (head, row) with a stable counting sort, each row's bucket is summed in
// bucket order by the thread owning the row, then the rows are suffix-summed. Cost per row: the events
// that land in it (4 per token on average), whatever the window: no thread revisits a window.
#pragma once

#include "talkconv/config.hpp"
#include "talkconv/detail/math.hpp"

namespace talkconv {
namespace detail {

// Block shape of the dx kernel for a vector width `vec` (elements per 16-byte access, 1 when the
// channels cannot be read as vectors): `lanes` channels of `slots` vectors per row, `groups` row groups,
// each thread owning `rows` consecutive rows of one vector. A compile-time function of the dtype.
struct dx_block_shape {
  int threads, warps, lanes, vec, slots, groups, rows, tile;
};
TALKCONV_HOST_DEVICE constexpr dx_block_shape make_dx_block_shape(int acc_bytes, int vec) {
  // 256 threads, 64 channels (the window kernels' channel plan), 128 rows (64 for 8-byte accumulators,
  // keeping rows * vec accumulators per thread at 32 floats or 16 doubles).
  return dx_block_shape{256,
                        8,
                        64,
                        vec,
                        64 / vec,
                        256 / (64 / vec),
                        (acc_bytes > 4 ? 64 : 128) / (256 / (64 / vec)),
                        acc_bytes > 4 ? 64 : 128};
}

// Consecutive tiles one dx block walks, from the last to the first: the last tile's carry comes from its
// events (the tokens whose taps reach past it), each lower tile's from the tile above it (the suffix sum at
// that tile's first row, the chained carry): carry events are gathered once per block instead of once per tile.
constexpr int dx_tiles_per_block = 4;

// (head, row) buckets of one batch: counters per warp (for the stable rank) are bins * warps ints.
TALKCONV_HOST_DEVICE constexpr int dx_max_bins(int tile) { return 4 * (tile + 1); }

// Rows of a tile when `nh` heads meet a block: the full tile while nh * (rows + 1) buckets (the +1 is
// each head's carry) fit in dx_max_bins, else fewer (many narrow heads: slower, still exact).
TALKCONV_HOST_DEVICE inline int dx_tile_rows(int tile, int nh) {
  const int fit = dx_max_bins(tile) / (nh > 0 ? nh : 1) - 1;
  return fit < tile ? (fit < 1 ? 1 : fit) : tile;
}

// Candidate tokens per round of the dx kernel's compaction: every (token, head) pair of a round is one thread's.
TALKCONV_HOST_DEVICE inline int dx_tokens_per_round(int threads, int nh) { return threads / (nh > 0 ? nh : 1); }

// The staged dy rows of a batch (16-bit vectors: row r is the dy of the batch's r-th distinct token, the block's
// 64 channels, 8 vectors of 16 bytes): vector v of staged row r at byte r * 128 + 16 * (v ^ (r % 8)) of the stage.
// A quarter warp's eight 16-byte accesses then meet in distinct bank groups when it stages one row (8 vectors)
// and, in the gather, when its row groups read rows that differ in r % 8 >> 1. The events of a record carry
// the row's key (stage offset included, a multiple of 128): one XOR with the lane's 16 v gives its vector's byte.
TALKCONV_HOST_DEVICE constexpr unsigned dx_stage_key(unsigned stage_at, int row) {
  return stage_at + unsigned(row) * 128u + (unsigned(row & 7) << 4);
}
TALKCONV_HOST_DEVICE constexpr unsigned dx_stage_byte(unsigned key, int v) { return key ^ (unsigned(v) << 4); }
// Rows of the stage: `room` rows fit the block's shared-memory budget, a batch has at most `most` tokens;
// at least min(most, least) whatever the budget (fewer blocks per SM then, the same sums).
TALKCONV_HOST_DEVICE inline int dx_stage_rows(long long room, int most, int least) {
  const int floor_rows = most < least ? most : least;
  return room >= most ? most : (room > floor_rows ? static_cast<int>(room) : floor_rows);
}

// Tokens whose taps can land in rows [t0, t1) of a sequence of valid length n, when every token u's taps
// lie in [u - reach_left, u + reach_right]: [u0, u1).
template <class I>
TALKCONV_HOST_DEVICE inline void dx_candidates(I t0, I t1, I n, I reach_left, I reach_right, I& u0, I& u1) {
  u0 = t0 - reach_right > 0 ? t0 - reach_right : 0;
  u1 = t1 + reach_left < n ? t1 + reach_left : n;
  if (u1 < u0) u1 = u0;
}

// The gather role of thread (warp, lane): vector v of the block's `slots` and row group g. With `mma`
// (the fused offset path's widths, slots a multiple of 8), lane / 4 is the vector among its warp's 8 and
// lane % 4 the row group among its warp's 4 (the mma_sync fragment orders, detail/mma_layout.hpp);
// otherwise consecutive threads take consecutive vectors. wpr: warps sharing one set of row groups.
struct dx_role {
  int v, g;
};
TALKCONV_HOST_DEVICE inline dx_role dx_gather_role(int warp, int lane, int slots, bool mma) {
  if (mma) {
    const int wpr = slots / 8;
    return dx_role{8 * (warp % wpr) + lane / 4, 4 * (warp / wpr) + lane % 4};
  }
  const int tid = warp * 32 + lane;
  return dx_role{tid % slots, tid / slots};
}

// The events of one token's taps for rows [t0, t1), one slot per tap j: key[j] = row - t0, `tile` for the
// carry (rows at or above t1), or -1 (dropped: below t0, or a zero weight); weight w[j]. When the highest
// tap i1 = ceil(a_r) is in the carry, every carry tap is merged into slot 1 (weights summed in tap order):
// the carry is one event per token. Returns false, with every key -1, when the token misses the tile or
// only adds zero to it (all its taps at or above t1).
// with_carry = false: taps at or above t1 are dropped too (the caller has the tile's carry otherwise: the chained
// carry of a block's lower tiles, dx_tiles_per_block); returns whether any event is left.
template <class A, class I>
TALKCONV_HOST_DEVICE inline bool dx_events(const window_taps<A, I>& k, I t0, I t1, int tile, int key[4], A w[4],
                                           bool with_carry = true) {
  const bool used = !(taps_max(k) < t0 || taps_min(k) >= t1);
  const tap_weights<A> tw = make_tap_weights(k);
  const I idx[4] = {k.i0, k.i1, k.i2, k.i3};
  const A wv[4] = {tw.w0, tw.w1, tw.w2, tw.w3};
  if (!with_carry) {
    bool any = false;
    for (int j = 0; j < 4; ++j) {
      const bool live = used && idx[j] >= t0 && idx[j] < t1 && wv[j] != A(0);
      w[j] = wv[j];
      key[j] = live ? static_cast<int>(idx[j] - t0) : -1;
      any = any || live;
    }
    return any;
  }
  const bool merge = k.i1 >= t1;
  A carry = A(0);
  for (int j = 0; j < 4; ++j) {
    const bool live = used && idx[j] >= t0 && wv[j] != A(0);
    const bool past = idx[j] >= t1;
    if (merge && live && past) carry += wv[j];
    w[j] = wv[j];
    key[j] = !live || (merge && past) ? -1 : (past ? tile : static_cast<int>(idx[j] - t0));
  }
  if (merge && used && carry != A(0)) {
    key[1] = tile;
    w[1] = carry;
  }
  return used;
}

// Whether a token's taps may have an event in rows [t0, t1) (dx_events): a tap in the tile, or, with the carry, taps
// on both sides of t1. A superset of the tokens dx_events gives an event (it also drops zero weights), from
// the tap indices alone: the dx kernel's rounds queue these pairs, its batches rank their events.
template <class A, class I>
TALKCONV_HOST_DEVICE inline bool dx_pair_queued(const window_taps<A, I>& k, I t0, I t1, bool with_carry) {
  const bool in = (k.i0 >= t0 && k.i0 < t1) || (k.i1 >= t0 && k.i1 < t1) || (k.i2 >= t0 && k.i2 < t1) ||
                  (k.i3 >= t0 && k.i3 < t1);
  return in || (with_carry && taps_max(k) >= t1 && taps_min(k) < t1);
}

}  // namespace detail
}  // namespace talkconv
