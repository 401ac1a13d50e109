// Baseline (d): one decoding step of a KV-cache attention layer, the CPU yardstick of talkconv's decoder
// step. For each sequence b and head h, the query of the new token against the `context` cached keys:
//   s_j = q . k_j / sqrt(R),  p = softmax(s),  o = sum_j p_j v_j     (R = C / H channels per head)
// Plain C++ loops (written so the compiler vectorizes them) over a float cache [B, H, context, R] (keys
// and values apart), OpenMP over (b, h):
// the step reads the whole cache, so its cost grows with the context; talkconv's step does not.
// Only the attention core is counted (no Q/K/V/O projections, no append to the cache), which flatters
// attention. Not part of the library.
#pragma once

#include "bounds.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace talkconv_bench {
namespace kv_attention {

// q, out: [B, C] (token-major rows); k, v: [B, H, context, R].
inline void step(index_t B, index_t C, index_t H, index_t context, const float* q, const float* k, const float* v,
                 float* out) {
  const index_t R = C / H;
  const float scale = 1.0f / std::sqrt(static_cast<float>(R));
  parallel_for(B * H, [&](index_t bh) {
    const index_t b = bh / H, h = bh % H;
    const float* qh = q + b * C + h * R;
    const float* kh = k + bh * context * R;
    const float* vh = v + bh * context * R;
    std::vector<float> s(static_cast<size_t>(context));
    float m = -INFINITY;
    for (index_t j = 0; j < context; ++j) {
      const float* kj = kh + j * R;
      // 8 partial sums: independent chains the compiler keeps in one vector register (a single running
      // sum would serialize on the add latency and make the baseline compute-bound, not memory-bound).
      float part[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
      index_t r = 0;
      for (; r + 8 <= R; r += 8)
        for (int i = 0; i < 8; ++i) part[i] += qh[r + i] * kj[r + i];
      float d = 0.0f;
      for (; r < R; ++r) d += qh[r] * kj[r];
      for (int i = 0; i < 8; ++i) d += part[i];
      s[static_cast<size_t>(j)] = d * scale;
      m = std::max(m, d * scale);
    }
    float sum = 0.0f;
    for (index_t j = 0; j < context; ++j) sum += (s[static_cast<size_t>(j)] = std::exp(s[static_cast<size_t>(j)] - m));
    float* oh = out + b * C + h * R;
    std::fill(oh, oh + R, 0.0f);
    for (index_t j = 0; j < context; ++j) {
      const float p = s[static_cast<size_t>(j)] / sum;
      const float* vj = vh + j * R;
      for (index_t r = 0; r < R; ++r) oh[r] += p * vj[r];
    }
  });
}

}  // namespace kv_attention
}  // namespace talkconv_bench
