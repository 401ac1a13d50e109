// Offset dropout mask: a pure function of (seed, t, b, offset index), the same bits on host and device.
#pragma once

#include "talkconv/config.hpp"

#include <Random123/philox.h>

#include <cstdint>

namespace talkconv {
namespace detail {

// One Philox4x32-10 draw per group of 4 consecutive offsets of a token (offsets 4 g .. 4 g + 3): counter
// (t lo, t hi, b, g), key (seed lo, seed hi). Offset 4 g + k takes word k, as a 24-bit uniform u in [0, 1),
// and is kept when u >= p (probability 1 - p). A kernel that finishes 4 offsets of a token pays one draw.
TALKCONV_HOST_DEVICE inline void dropout_keep4(std::uint64_t seed, index_t t, index_t b, index_t g, float p,
                                               bool (&keep)[4]) {
  r123::Philox4x32 gen;
  const r123::Philox4x32::ctr_type ctr = {{static_cast<std::uint32_t>(t), static_cast<std::uint32_t>(static_cast<std::uint64_t>(t) >> 32),
                                           static_cast<std::uint32_t>(b), static_cast<std::uint32_t>(g)}};
  const r123::Philox4x32::key_type key = {{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)}};
  const r123::Philox4x32::ctr_type r = gen(ctr, key);
  for (int k = 0; k < 4; ++k) keep[k] = static_cast<float>(r[k] >> 8) * (1.0f / 16777216.0f) >= p;
}

// Whether offset j of token (t, b) is kept: word j % 4 of group j / 4's draw.
TALKCONV_HOST_DEVICE inline bool dropout_keep(std::uint64_t seed, index_t t, index_t b, index_t j, float p) {
  bool keep[4];
  dropout_keep4(seed, t, b, j / 4, p, keep);
  const index_t k = j % 4;  // selects, not a dynamic index (which would put keep in local memory on a GPU)
  return k == 0 ? keep[0] : k == 1 ? keep[1] : k == 2 ? keep[2] : keep[3];
}

// The multiplier m / (1 - p) applied to offset j of token (t, b); 1 when dropout is inactive.
template <class A>
TALKCONV_HOST_DEVICE inline A dropout_scale(bool active, std::uint64_t seed, index_t t, index_t b, index_t j, float p) {
  if (!active) return A(1);
  return dropout_keep(seed, t, b, j, p) ? A(1) / (A(1) - A(p)) : A(0);
}

// The multipliers of offsets 4 g .. 4 g + 3 of token (t, b), one draw.
template <class A>
TALKCONV_HOST_DEVICE inline void dropout_scale4(bool active, std::uint64_t seed, index_t t, index_t b, index_t g, float p,
                                                A (&m)[4]) {
  bool keep[4] = {true, true, true, true};
  if (active) dropout_keep4(seed, t, b, g, p, keep);
  const A kept = active ? A(1) / (A(1) - A(p)) : A(1);
  for (int k = 0; k < 4; ++k) m[k] = keep[k] ? kept : A(0);
}

}  // namespace detail
}  // namespace talkconv
