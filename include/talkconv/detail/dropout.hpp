// Offset dropout mask: a pure function of (seed, t, b, offset index), the same bits on host and device.
#pragma once

#include "talkconv/config.hpp"

#include <Random123/philox.h>

#include <cstdint>

namespace talkconv {
namespace detail {

// One Philox4x32-10 draw per offset: counter (t lo, t hi, b, j), key (seed lo, seed hi). Its first
// word, as a 24-bit uniform u in [0, 1), keeps the offset when u >= p (probability 1 - p).
TALKCONV_HOST_DEVICE inline bool dropout_keep(std::uint64_t seed, index_t t, index_t b, index_t j, float p) {
  r123::Philox4x32 gen;
  const r123::Philox4x32::ctr_type ctr = {{static_cast<std::uint32_t>(t), static_cast<std::uint32_t>(static_cast<std::uint64_t>(t) >> 32),
                                           static_cast<std::uint32_t>(b), static_cast<std::uint32_t>(j)}};
  const r123::Philox4x32::key_type key = {{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)}};
  const r123::Philox4x32::ctr_type r = gen(ctr, key);
  const float u = static_cast<float>(r[0] >> 8) * (1.0f / 16777216.0f);
  return u >= p;
}

// The multiplier m / (1 - p) applied to offset j of token (t, b); 1 when dropout is inactive.
template <class A>
TALKCONV_HOST_DEVICE inline A dropout_scale(bool active, std::uint64_t seed, index_t t, index_t b, index_t j, float p) {
  if (!active) return A(1);
  return dropout_keep(seed, t, b, j, p) ? A(1) / (A(1) - A(p)) : A(0);
}

}  // namespace detail
}  // namespace talkconv
