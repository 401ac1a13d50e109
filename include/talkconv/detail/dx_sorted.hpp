// The window's input gradient through sorted tap events: the plan and per-token logic of the CUDA path
// (agent_window_input_grad_sorted.cuh), host+device so the CPU tests run the same events in the same order.
//
// dx[tau] = (1/K) sum_{i >= tau} dS[i], dS[i] = sum over (token u, head h, tap j) with i_j(u) == i of
// w_j(u) dy[u] (dx_plan.hpp). Instead of each tile searching the tokens whose taps land in it (K + tile
// candidates per tile: the event kernel's K-dependent cost), every (token, head) writes its four tap events
// once, keyed by (sequence, head, row), and one stable radix sort (CUB) lists each row's events contiguously,
// in (token, tap) order. A tile then reads its rows' events, sums them per row, suffix-sums the rows; the
// carry of a block's last tile (the taps past its end) comes from the tokens straddling that end, found
// as before (~K per block of dx_sorted_tiles_per_block tiles); the lower tiles' carry is chained. Work per element:
// the events of its row (4 per token on average), whatever K; per block, the straddling tokens' carry.
#pragma once

#include "talkconv/config.hpp"
#include "talkconv/detail/math.hpp"

#include <cstdint>

namespace talkconv {
namespace detail {

// Tiles per block of the sorted-events dx (the event kernel's dx_tiles_per_block is 4): only a block's last tile
// gathers a carry (the taps of ~K tokens straddling its end; make_taps per (token, head), ~1.8 / 5.5 / 9 instructions
// per element at K = 33 / 513 / 1023 over 4 tiles), so 8 halve it; at the benchmark shape 1024 blocks, ~1.9 waves of
// an H200's 528 slots.
constexpr int dx_sorted_tiles_per_block = 8;

// An event after the sort: the token's row within its sequence (the dy row to read) and w_j / K.
template <class A, class U>
struct dx_sorted_value {
  U u;
  A w;
};

// Events per (token, head): its four taps, in tap order; dx_sorted_event_index orders them as the sort's input
// ((sequence, token, head, tap)), so the stable sort leaves each row's events in (token, tap) order.
constexpr int dx_sorted_taps = 4;
template <class I>
TALKCONV_HOST_DEVICE inline I dx_sorted_event_index(I b, I u, I h, int j, I T, I H) {
  return ((b * T + u) * H + h) * I(dx_sorted_taps) + I(j);
}

// Sort key of an event: (sequence b, head h, row i), rows of a segment consecutive. Keys below
// B * H * T; an event that adds nothing gets the sentinel (every bit of the key's width set: sorted last).
template <class K, class I>
TALKCONV_HOST_DEVICE inline K dx_sorted_key(I b, I h, I row, I T, I H) {
  return (K(b) * K(H) + K(h)) * K(T) + K(row);
}
// Bits the sort compares: the fewest whose all-ones value (the sentinel) is above every key, B * H * T - 1.
TALKCONV_HOST_DEVICE inline int dx_sorted_key_bits(std::uint64_t keys) {
  int bits = 1;
  while (bits < 64 && (std::uint64_t(1) << bits) - 1 < keys) ++bits;
  return bits;
}
TALKCONV_HOST_DEVICE inline std::uint64_t dx_sorted_sentinel(int bits) {
  return bits >= 64 ? ~std::uint64_t(0) : (std::uint64_t(1) << bits) - 1;
}

// The rows of a token's taps that carry an event: row[j] = i_j, or -1 where the tap adds nothing (S[-1], a zero
// weight); w[j] its weight. A NaN weight is kept (a NaN offset gives NaN in its head: SPEC).
template <class A, class I>
TALKCONV_HOST_DEVICE inline void dx_sorted_events(const window_taps<A, I>& k, I row[4], A w[4]) {
  const tap_weights<A> tw = make_tap_weights(k);
  const I idx[4] = {k.i0, k.i1, k.i2, k.i3};
  const A wv[4] = {tw.w0, tw.w1, tw.w2, tw.w3};
  for (int j = 0; j < 4; ++j) {
    w[j] = wv[j];
    row[j] = idx[j] >= 0 && wv[j] != A(0) ? idx[j] : I(-1);
  }
}

// The carry a token adds at row e (the first row past a block's last tile): the weights of its taps at or above e,
// summed in tap order, when its taps lie on both sides of e (a token whose taps all lie at or above e adds zero to
// every row below: skipped, as dx_events does). Returns false when it adds nothing.
template <class A, class I>
TALKCONV_HOST_DEVICE inline bool dx_sorted_carry(const window_taps<A, I>& k, I e, A& w) {
  if (!(taps_min(k) < e && taps_max(k) >= e)) return false;
  const tap_weights<A> tw = make_tap_weights(k);
  const I idx[4] = {k.i0, k.i1, k.i2, k.i3};
  const A wv[4] = {tw.w0, tw.w1, tw.w2, tw.w3};
  A c = A(0);
  for (int j = 0; j < 4; ++j)
    if (idx[j] >= e) c += wv[j];
  w = c;
  return !(c == A(0));  // NaN kept
}

}  // namespace detail
}  // namespace talkconv
