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

// One segment of a tile (float x): x rows [seg, seg + used) of the block's sequence and channels (x: its row 0,
// channel c0; used = the span's rows from seg, at most S) staged split hi + lo, a barrier, then the warp's k steps
// over its range [sp.wlo, sp.whi) within the segment, with the rows' taps from `taps` (heads x 128, the block's
// heads). EvictFirst: x read by streaming loads (ld.global.cs, evict-first in L1 and L2; plain with
// TALKCONV_CUDA_L2_HINTS=0): the fused forward's, x's last read (its first left it in L2).
template <bool EvictFirst = false>
__device__ __forceinline__ void band_forward_segment_tf32(float (&acc)[8][4], float* stage, const float* x, index_t xt,
                                                          const float2* taps, index_t seg, index_t m0,
                                                          const band_fwd_span& sp, int S, const band_block& k) {
  namespace td = talkconv::detail;
  using pol = dx_band_policy<float>;
  const int warp = k.warp, g = k.g, q = k.q;
  const index_t n = k.n;
  // x rows [seg, seg + used) and up to 7 past them (zero; even)
  const int used = static_cast<int>(sp.span_hi - seg < S ? sp.span_hi - seg : S);
  const int rows = (used + pol::pad_rows + 1) / 2 * 2;
  stage_band_rows_tf32<EvictFirst>(stage, x, xt, seg, rows, used, k);
  __syncthreads();
  if (m0 < n && sp.wlo < sp.whi) {
    const index_t klo = sp.wlo > seg ? sp.wlo : seg;
    const index_t khi = sp.whi < seg + used ? sp.whi : seg + used;
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
}

template <class Idx>
__device__ void window_forward_band_tile_tf32(const window_args<float>& a, const dx_band_args& d) {
  extern __shared__ __align__(16) unsigned char talkconv_smem[];
  __shared__ int span_rel[2];  // the block's token span relative to r0: [lo, hi]
  float* stage = reinterpret_cast<float*>(talkconv_smem);
  float2* taps = reinterpret_cast<float2*>(talkconv_smem + d.taps_at);

  const band_block k = make_band_block(a, d);
  const float* __restrict__ x = a.x + Idx(k.b) * static_cast<Idx>(a.g.xb) + Idx(k.c0);

  band_forward_walk<float, Idx>(a, d, k, taps, span_rel, [&](float(&acc)[8][4], index_t seg, index_t m0, const band_fwd_span& sp) {
    band_forward_segment_tf32(acc, stage, x, a.g.xt, taps, seg, m0, sp, d.stage_rows, k);
  });
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
