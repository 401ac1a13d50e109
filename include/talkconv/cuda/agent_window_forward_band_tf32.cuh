// The window forward for float x as a banded product on TF32 tensor cores, for windows up to
// detail::fwd_band_max_k_tf32: y = (1/K) W X with W[u][tau] = w_u(tau) (detail/dx_band.hpp; the CPU tests emulate
// this file lane by lane). The 16-bit banded forward's plan and loops (agent_window_forward_band.cuh) with the
// float banded dx's stage and products (agent_window_input_grad_band_tf32.cuh): mma.sync m16n8k8, 3xTF32.
//
// A block owns 64 channels of one sequence and walks fwd_tiles_per_block tiles of 128 rows; warp w owns rows
// [m0, m0 + 16) as 8 accumulator tiles of 8 channels. Per tile:
//   1. the rows' taps per head (band_tap, each relative to its row) into a table; one barrier; each warp takes
//      the token range of its rows' windows (band_row_tokens, warp min / max), the block's span is the union
//      (shared-memory atomicMin / atomicMax on integers: order-free); one barrier;
//   2. per segment of the span (one at the benchmark shape; the plan caps the stage to keep 2 blocks per SM):
//      x rows staged split hi + lo (stage_band_rows_tf32), one barrier; each warp walks its range in k steps
//      of 8 tokens from an even token: per head the lane's 4 weights from its 2 rows' taps
//      (band_tf32_lane_weights_rows), split hi + lo; per 8-channel tile one 16-byte stage read and 3 mma (hi hi,
//      hi lo, lo hi); one barrier.
// Then 1/K (NaN in a row whose offset of this head is NaN) and 8-byte stores of the lane's 2 rows x 16 channels;
// rows past the length are written 0. Deterministic: fixed orders of segments, k steps, heads and pieces.
// Needs sm_80 or later (TF32 mma.sync): the launch checks the code it runs was built so.
#pragma once

#include "talkconv/cuda/agent_window_band.cuh"

#include <climits>

namespace talkconv {
namespace cuda {
namespace detail {

template <class Idx>
__device__ void window_forward_band_tile_tf32(const window_args<float>& a, const dx_band_args& d) {
  namespace td = talkconv::detail;
  using pol = dx_band_policy<float>;
  extern __shared__ __align__(16) unsigned char talkconv_smem[];
  __shared__ int span_rel[2];  // the block's token span relative to r0: [lo, hi]
  float* stage = reinterpret_cast<float*>(talkconv_smem);
  float2* taps = reinterpret_cast<float2*>(talkconv_smem + d.taps_at);

  const band_block k = make_band_block(a, d);
  const int warp = k.warp, g = k.g, q = k.q, pairs = k.pairs;
  const index_t b = k.b, c0 = k.c0, Tn = k.T, n = k.n, first_tile = k.first_tile;
  const int S = d.stage_rows;
  const float inv_k = 1.0f / float(a.w.L + a.w.M + 1);
  const Idx xt = static_cast<Idx>(a.g.xt), ot = static_cast<Idx>(a.g.ot);
  const float* __restrict__ x = a.x + Idx(b) * static_cast<Idx>(a.g.xb) + Idx(c0);
  float* __restrict__ y = a.y + Idx(b) * static_cast<Idx>(a.g.xb) + Idx(c0);
  const float* __restrict__ offs = a.offsets + Idx(b) * static_cast<Idx>(a.g.ob);

  for (int it = 0; it < d.tiles_per_block; ++it) {
    const index_t r0 = (first_tile + it) * 128;
    if (r0 >= Tn) break;  // block-uniform
    if (it > 0) __syncthreads();  // the previous tile's span and table (its epilogue's NaN marks) are read
    const index_t m0 = r0 + 16 * warp;
    float acc[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[nt][e] = 0.0f;

    if (r0 < n) {  // block-uniform: a tile past the length is all zeros
      // 1. the rows' taps, the warps' token ranges, the block's span
      const band_fwd_span sp = band_forward_prologue<Idx>(taps, span_rel, offs, ot, a.w, d.causal, r0, k);
      const index_t span_lo = sp.span_lo, span_hi = sp.span_hi, wlo = sp.wlo, whi = sp.whi;
      for (index_t seg = span_lo; seg < span_hi; seg += S) {
        // 2. stage x rows [seg, seg + used) and up to 7 past them (zero; even)
        const int used = static_cast<int>(span_hi - seg < S ? span_hi - seg : S);
        const int rows = (used + pol::pad_rows + 1) / 2 * 2;
        stage_band_rows_tf32(stage, x, a.g.xt, seg, rows, used, k);
        __syncthreads();
        if (m0 < n && wlo < whi) {
          const index_t klo = wlo > seg ? wlo : seg;
          const index_t khi = whi < seg + used ? whi : seg + used;
          int j0 = int(klo - seg) & ~1;
          const int jend = int(khi - seg);
          if (j0 < jend) {
            const float* bp = stage + td::band_tf32_lane_word(j0, q, g);
            int adv = td::band_tf32_lane_word(j0 + 8, q, g) - td::band_tf32_lane_word(j0, q, g);
            const int adv_sum = 2048;
            float dq = float(seg + j0 + 2 * q - m0 - g);  // the lane's first token relative to its row g
            for (; j0 < jend; j0 += 8, bp += adv, adv = adv_sum - adv, dq += 8.0f) {
              unsigned ahi[4], alo[4];
#pragma unroll
              for (int p = 0; p < 4; ++p) {
                if (p == 0 || k.pair_head[p] != k.pair_head[p - 1]) {
                  const float2 t0 = taps[k.pair_head[p] * 128 + 16 * warp + g];
                  const float2 t1 = taps[k.pair_head[p] * 128 + 16 * warp + g + 8];
                  float w[4];
                  td::band_tf32_lane_weights_rows<float>(td::band_tap<float>{t0.x, t0.y}, td::band_tap<float>{t1.x, t1.y},
                                                         dq, w);
                  tf32_split_fragment<4>(w, ahi, alo);
                }
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                  const int nt = 2 * p + h;
                  mma_tf32x3(acc[nt], ahi, alo, *reinterpret_cast<const float4*>(bp + 32 * nt));
                }
              }
            }
          }
        }
        __syncthreads();  // the stage is rewritten by the next segment
      }
    }

#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      if (nt < 2 * pairs) {
        const Idx ch = Idx(8 * nt + 2 * q);
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          const index_t row = m0 + g + 8 * hr;
          if (row < Tn) {
            const bool valid = row < n;
            // a NaN offset of this row's head: NaN (the table is intact: the next tile rewrites it after a barrier)
            const float mark = valid ? taps[k.pair_head[nt / 2] * 128 + 16 * warp + g + 8 * hr].x : 0.0f;
            const float s = td::is_nan(mark) ? mark : inv_k;
            *reinterpret_cast<float2*>(y + Idx(row) * xt + ch) =
                make_float2(valid ? acc[nt][2 * hr] * s : 0.0f, valid ? acc[nt][2 * hr + 1] * s : 0.0f);
          }
        }
      }
    }
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
