// The layer forward in one pass over x: the offset projection and the banded window of a time tile in one block,
// so that x is read from DRAM once (the two-kernel forward reads it twice: the projection, then the window). 16-bit
// x (projection on 16-bit tensor cores, window on 16-bit tensor cores) and float x (both on 3xTF32). A block owns
// 128 rows [t0, t0 + 128) of sequence b and every channel:
//   1. the projection of its rows (project_tile::run_rows: the projection kernel's K loop, rows x's time stride
//      apart), its epilogue (finish_offsets4: bias, sigmoid, dropout, o_pre stored when the caller saves it) keeping
//      the offsets the window reads (o) in shared memory; one barrier;
//   2. the rows' taps of every head from them (band_forward_taps), into a table of H x 128;
//   3. per channel block of 64 channels, the last first: the warps' token ranges and the span
//      (band_forward_span), the span's segments (band_forward_segment16 / band_forward_segment_tf32: x rows staged
//      again, from L2 when the tile's own rows are still there, the k steps on tensor cores) and the stores
//      (band_forward_tile): the banded forward kernel's arithmetic.
// The same sums as the projection kernel followed by the banded forward (the same K loop and epilogue; the same
// k steps per segment), deterministic. Shared memory: the projection's tiles and the offsets tile, then (aliasing
// both once the taps table is made) the stage; the taps table (H x 128 x 8 bytes) after the larger. Applies where
// both halves do and two blocks fit an SM (device_window.cuh: launch_forward_fused).
#pragma once

#include "talkconv/cuda/agent_project.cuh"
#include "talkconv/cuda/agent_window_forward_band.cuh"
#include "talkconv/cuda/agent_window_forward_band_tf32.cuh"

#include <climits>

namespace talkconv {
namespace cuda {
namespace detail {

// Where the fused forward's parts lie in dynamic shared memory (host-testable): [0, offsets_at) the projection's
// tiles, then the offsets tile [128][P] (floats), both dead once the taps table is made, when the window's stage
// takes [0, stage_bytes); the taps table [H][128] (float2) at taps_at, after the larger of the two.
template <class T, int BN>
struct forward_fused_smem {
  static constexpr std::size_t project_bytes = sizeof(project_smem<T, BN>);
  static constexpr int rows = talkconv::detail::band_tile_rows;  // the time tile
  TALKCONV_HOST_DEVICE static constexpr std::size_t offsets_at() { return (project_bytes + 127) / 128 * 128; }
  TALKCONV_HOST_DEVICE static std::size_t stage_bytes(int stage_rows) {
    return std::size_t(stage_rows + dx_band_policy<T>::pad_rows) * dx_band_policy<T>::row_bytes;
  }
  TALKCONV_HOST_DEVICE static std::size_t taps_at(int stage_rows, index_t P) {
    const std::size_t front = offsets_at() + std::size_t(rows) * std::size_t(P) * 4u, stage = stage_bytes(stage_rows);
    return ((front > stage ? front : stage) + 127) / 128 * 128;
  }
  TALKCONV_HOST_DEVICE static std::size_t bytes(int stage_rows, index_t P, index_t H) {
    return taps_at(stage_rows, P) + std::size_t(H) * std::size_t(rows) * 8u;
  }
};

// Block blockIdx.x = b * tiles + tile. oa: the projection's arguments (o unused: the offsets stay in shared
// memory), wa: the window's (wa.offsets unused), d: the banded forward's plan (stage_rows, causal).
template <class T, int BN, class Idx>
__device__ void forward_fused_tile(const offsets_args<T>& oa, const window_args<T>& wa, const dx_band_args& d,
                                   index_t tiles) {
  using tile = project_tile<T, BN>;
  using fsm = forward_fused_smem<T, BN>;
  constexpr int BM = tile::BM, threads = tile::threads;
  static_assert(BM == talkconv::detail::band_tile_rows && threads == dx_band_policy<T>::threads,
                "a time tile of the band's rows, one block shape");
  extern __shared__ __align__(128) unsigned char talkconv_fused_smem[];
  __shared__ int span_rel[2];
  const int tid = static_cast<int>(threadIdx.x);
  const index_t blk = blockIdx.x, b = blk / tiles, it = blk - b * tiles, t0 = it * BM;
  const index_t Tn = oa.g.T, n = oa.g.length(b), P = oa.g.P;
  const index_t rows_in = Tn - t0 < BM ? Tn - t0 : BM;
  const int S = d.stage_rows;
  auto& sm = *reinterpret_cast<project_smem<T, BN>*>(talkconv_fused_smem);
  float* o_s = reinterpret_cast<float*>(talkconv_fused_smem + fsm::offsets_at());
  float2* taps = reinterpret_cast<float2*>(talkconv_fused_smem + fsm::taps_at(S, P));
  const T* x_seq = oa.x + b * oa.g.xb;  // row 0 of sequence b, channel 0

  // 1. the projection of rows [t0, t0 + rows_in), one offset tile of BN after the other (past the first, x again from
  //    L2; the projection kernel's blocks take one each: the same sums). None below the length: z stays unread.
  const bool any = t0 < n;  // block-uniform
  for (index_t n0 = 0; n0 < P; n0 += BN) {
    if (n0 > 0) __syncthreads();  // the previous offset tile's epilogue has read z
    if (any) tile::run_rows(oa, sm, x_seq + t0 * oa.g.xt, oa.g.xt, rows_in, static_cast<int>(n0), tid);
    __syncthreads();
    const float* sz = reinterpret_cast<const float*>(sm.buf);
    constexpr int G = BN / 4;
    const bool vec = P % 4 == 0 && aligned16(oa.o_pre);
    for (int e = tid; e < BM * G; e += threads) {
      const int m = e / G, jl = (e % G) * 4;
      const index_t j = n0 + jl;
      if (m < rows_in && j < P) {
        const index_t t = t0 + m;
        const index_t r = oa.g.lay == 0 ? t * oa.g.B + b : b * Tn + t;  // the row of [T * B, P]
        float z[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) z[k] = any ? sz[m * project_smem<T, BN>::ldz + jl + k] : 0.0f;
        finish_offsets4(oa, r, t, b, t < n, j, P - j < 4 ? static_cast<int>(P - j) : 4, z, vec, o_s + m * P + j);
      }
    }
  }
  __syncthreads();  // o_s written

  // 2. every head's row taps (the last read of o_s: the stage overwrites it and the projection's tiles, past a barrier)
  if (any) band_forward_taps<Idx>(taps, o_s, Idx(P), wa.w, d.causal, t0, n, 0, static_cast<int>(wa.w.H), tid);

  // 3. the window, one channel block after the other, the last first: the projection read x's channels in
  //    ascending k tiles, so the most recently read lines (likeliest still in L2) are re-read first
  unsigned char* stage = talkconv_fused_smem;
  const unsigned stage_base = static_cast<unsigned>(__cvta_generic_to_shared(stage));
  for (int cb = static_cast<int>(wa.w.blocks) - 1; cb >= 0; --cb) {
    const band_block k = make_band_block_at(wa, b, it, cb);
    const float2* tk = taps + k.h_first * BM;
    const T* __restrict__ x = wa.x + Idx(b) * static_cast<Idx>(wa.g.xb) + Idx(k.c0);
    __syncthreads();  // the table written (first pass); the previous block's span read, its stage and marks done
    if (tid == 0) span_rel[0] = INT_MAX, span_rel[1] = INT_MIN;
    __syncthreads();
    // y stored and x re-read evict-first: L2 keeps the x lines still to be re-read (the tile's channel blocks not
    // yet reached, its neighbours' rows)
    band_forward_tile<T, Idx, true>(
        wa, d, k, t0, tk, [&] { return band_forward_span(tk, span_rel, t0, k); },
        [&](float(&acc)[8][4], index_t seg, index_t m0, const band_fwd_span& sp) {
          if constexpr (dx_band_policy<T>::tf32)
            band_forward_segment_tf32<true>(acc, reinterpret_cast<float*>(stage), x, wa.g.xt, tk, seg, m0, sp, S, k);
          else
            band_forward_segment16<T, Idx, true>(acc, stage, stage_base, x, wa.g.xt, tk, seg, m0, sp, S, k);
        });
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
