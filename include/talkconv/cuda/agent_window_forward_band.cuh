// The window forward as a banded product on 16-bit tensor cores (bfloat16 and half x), for windows up to
// detail::dx_band_max_k: y = (1/K) W X with W[u][tau] = w_u(tau), the weights of detail/dx_band.hpp read by
// rows (band_lane_weights_rows; the CPU tests emulate this file lane by lane). The transpose of the banded dx:
// the lane's rows keep their own taps, the k steps walk the tokens of their windows.
//
// A block owns 64 channels of one sequence and walks fwd_tiles_per_block tiles of 128 rows; warp w owns rows
// [m0, m0 + 16) as 8 accumulator tiles of 8 channels. Per tile:
//   1. the rows' taps per head (band_tap, each relative to its row) into a table; one barrier; each warp takes
//      the token range of its rows' windows from the table (band_row_tokens of each valid row, warp min /
//      max), the block's span is the union (shared-memory atomicMin / atomicMax on integers: order-free);
//      one barrier;
//   2. per segment of the span (one unless offsets exceed the planned max_offset): x rows staged as dx's dy
//      (cp.async, zero past the length and in the padding), one barrier; each warp walks its range in k
//      steps of 16 tokens: per head the lane's 8 weights from its 2 rows' taps, split hi + lo, per pair of
//      8-channel tiles one ldmatrix.x4.trans of X and 4 mma; one barrier.
// Then 1/K and 4-byte stores of the lane's 2 rows x 16 channels; rows past the length are written 0.
// Deterministic: fixed orders of segments, k steps, heads and pieces.
#pragma once

#include "talkconv/cuda/agent_window_band.cuh"

#include <climits>

namespace talkconv {
namespace cuda {
namespace detail {

// One segment of a tile (16-bit x): x rows [seg, seg + S) of the block's sequence and channels (x: its row 0,
// channel c0) staged, a barrier, then the warp's k steps over its range [sp.wlo, sp.whi) within the segment and the
// length, with the rows' taps from `taps` (heads x 128, the block's heads). EvictFirst: x read under the L2
// evict-first policy (the fused forward: this is x's last read, its first left it in L2).
template <class T, class Idx, bool EvictFirst = false>
__device__ __forceinline__ void band_forward_segment16(float (&acc)[8][4], unsigned char* stage, unsigned stage_base,
                                                       const T* x, index_t xt, const float2* taps, index_t seg,
                                                       index_t m0, const band_fwd_span& sp, int S, const band_block& k) {
  namespace td = talkconv::detail;
  constexpr bool Bf16 = std::is_same<T, __nv_bfloat16>::value;
  const int warp = k.warp, lane = k.lane, g = k.g, q = k.q;
  const index_t n = k.n;
  stage_band_rows<T, EvictFirst>(stage, x, xt, seg, S, k);
  cp_async_wait_all();
  __syncthreads();
  if (m0 < n && sp.wlo < sp.whi) {
    const index_t klo = sp.wlo > seg ? sp.wlo : seg;
    index_t khi = sp.whi < seg + S ? sp.whi : seg + S;
    khi = khi < n ? khi : n;
    for (int j0 = int(klo - seg); j0 < int(khi - seg); j0 += 16) {
      const float base = float(seg + j0 - m0 - g);  // the step's first token relative to row g
      unsigned ahi[4], alo[4];
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        if (p == 0 || k.pair_head[p] != k.pair_head[p - 1]) {
          const float2 t0 = taps[k.pair_head[p] * 128 + 16 * warp + g], t1 = taps[k.pair_head[p] * 128 + 16 * warp + g + 8];
          float w[4][2];
          td::band_lane_weights_rows<float>(td::band_tap<float>{t0.x, t0.y}, td::band_tap<float>{t1.x, t1.y}, base,
                                            q, w);
#pragma unroll
          for (int i = 0; i < 4; ++i)
            band_pieces<T>(td::band_reg_weight(w, i, 0), td::band_reg_weight(w, i, 1), ahi[i], alo[i]);
        }
        band_mma_pair16<Bf16>(acc, p, ahi, alo, stage_base, j0, lane);
      }
    }
  }
}

template <class T, class Idx>
__device__ void window_forward_band_tile(const window_args<T>& a, const dx_band_args& d) {
  extern __shared__ __align__(16) unsigned char talkconv_smem[];
  __shared__ int span_rel[2];  // the block's token span relative to r0: [lo, hi]
  unsigned char* stage = talkconv_smem;
  float2* taps = reinterpret_cast<float2*>(talkconv_smem + d.taps_at);
  const unsigned stage_base = static_cast<unsigned>(__cvta_generic_to_shared(stage));

  const band_block k = make_band_block(a, d);
  const T* __restrict__ x = a.x + Idx(k.b) * static_cast<Idx>(a.g.xb) + Idx(k.c0);

  band_forward_walk<T, Idx>(a, d, k, taps, span_rel, [&](float(&acc)[8][4], index_t seg, index_t m0, const band_fwd_span& sp) {
    band_forward_segment16<T, Idx>(acc, stage, stage_base, x, a.g.xt, taps, seg, m0, sp, d.stage_rows, k);
  });
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
