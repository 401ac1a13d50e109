// The window's input gradient for float x as a banded product on TF32 tensor cores, for windows up to
// detail::dx_band_max_k_tf32: dX = W dY with W[tau][u] = w_u(tau) (detail/dx_band.hpp: the formula, the plan, the
// float coordinates; the CPU tests emulate this file lane by lane). The 16-bit kernel's plan and loops
// (agent_window_input_grad_band.cuh) on mma.sync m16n8k8 with 3xTF32 products: no sort, no atomics, two block
// barriers per segment; wider windows and double take the event kernel (agent_window_input_grad.cuh).
//
// A block owns 64 channels of one sequence and walks tiles_per_block tiles of 128 rows; warp w owns rows
// [m0, m0 + 16), m0 = r0 + 16 w, as 8 accumulator tiles of 8 channels (32 floats per lane). Per segment of the
// tile's token span [r0 - reach_right, r0 + 128 + reach_left) (one segment at the benchmark shape; the plan caps
// the stage to keep 2 blocks per SM, so wide windows take more):
//   1. stage the segment's dy rows split once into TF32 hi and lo (detail::band_tf32_stage_word: pairs of tokens,
//      a lane's b operands one 16-byte read per tile; 8-byte loads, zero past the length and the span), and each
//      (token, head)'s band_tap (8 bytes) in a table; one barrier;
//   2. each warp walks its band in k steps of 8 tokens (from an even token): per head of the block, the lane's
//      4 weights (rows g, g + 8 x tokens 2q, 2q + 1: one 16-byte table read) split hi + lo; per 8-channel tile
//      one 16-byte stage read (hi and lo of 2 tokens) and 3 mma (hi hi, hi lo, lo hi); one barrier before the next segment is staged.
// Then the accumulators are scaled by 1/K, the offset path dX += dz W is added where fused (3xTF32: dz split
// per step, W split once when staged, band_tf32_w_index), and each lane stores its 2 rows x 16 channels as 8-byte
// pairs; rows past the sequence's length are written 0. Deterministic: every sum runs in a fixed order.
// Non-finite inputs (SPEC asks only that they stay in bounds): a NaN offset gives its token no weight, as in the
// 16-bit kernel; an Inf or NaN in dy reaches the rows of the 16-row tiles whose k steps include its token, as NaN
// (its lo piece is Inf - Inf); an Inf in W is staged with lo = 0, so W^T dz carries it as Inf, as the 16-bit
// kernel's exact W does.
// Needs sm_80 or later (TF32 mma.sync): the launch checks the code it runs was built so.
#pragma once

#include "talkconv/cuda/agent_window_band.cuh"

namespace talkconv {
namespace cuda {
namespace detail {

// The block k (a block's own: make_band_block; the fused float backward's: make_band_block_at). EvictFirst: dy read
// as streaming loads (ld.global.cs) and dx stored evict-first, as the 16-bit block does in the fused backward.
template <class Idx, bool Fused, bool EvictFirst = false>
__device__ void input_grad_band_block_tf32(const window_args<float>& a, const dx_band_args& d, const band_block& k) {
  namespace td = talkconv::detail;
  using pol = dx_band_policy<float>;
  extern __shared__ __align__(16) unsigned char talkconv_smem[];
  float* stage = reinterpret_cast<float*>(talkconv_smem);
  const float4* taps2 = reinterpret_cast<const float4*>(talkconv_smem + d.taps_at);  // two tokens' (ar, al)
  float2* taps_w = reinterpret_cast<float2*>(talkconv_smem + d.taps_at);
  float* wfrag = reinterpret_cast<float*>(talkconv_smem + d.w_at);

  const int tid = k.tid, lane = k.lane, g = k.g, q = k.q, cn = k.cn, nh = k.nh;
  const index_t b = k.b, c0 = k.c0, h_first = k.h_first, n = k.n;
  const int S = d.stage_rows, PR = S + pol::pad_rows;  // PR even: a head's table rows stay 16-byte aligned
  const band_reach reach = band_reach_of(a, k.T);
  const index_t rl = reach.left, rr = reach.right;
  const Idx ot = static_cast<Idx>(a.g.ot);
  const float* __restrict__ dy = a.dy + Idx(b) * static_cast<Idx>(a.g.xb) + Idx(c0);
  const float* __restrict__ offs = a.offsets + Idx(b) * static_cast<Idx>(a.g.ob);

  if constexpr (Fused) {
    // W's b fragments split once: step s, tile n, lane l -> hi, lo of W[8 s + 2 q'][c0 + 8 n + g'] and of + 1
    const index_t P = a.g.P;
    // one lane's fragment from its two weights: hi of both, then lo (0 for an Inf hi: an Inf weight stays Inf in
    // W^T dz), once per block
    auto put = [&](int s, int nt, int l, float w0, float w1) {
      float h0, l0, h1, l1;
      tf32_split(w0, h0, l0);
      tf32_split(w1, h1, l1);
      l0 = isinf(h0) ? 0.0f : l0;
      l1 = isinf(h1) ? 0.0f : l1;
      *reinterpret_cast<float4*>(wfrag + td::band_tf32_w_index(s, nt, l)) = make_float4(h0, h1, l0, l1);
    };
    if (reinterpret_cast<std::uintptr_t>(a.weight) % 16 == 0) {
      // 16 bytes (4 channels) of two W rows per item (band_w_vec_item_of<4>: C % 8 == 0 and c0 % 8 == 0, so
      // aligned), 4 lanes' fragments
      for (int i = tid; i < d.steps * 64; i += pol::threads) {
        const td::band_w_vec_item v = td::band_w_vec_item_of<4>(i);
        const index_t kw = 8 * v.s + 2 * v.q;
        float4 r0 = make_float4(0.0f, 0.0f, 0.0f, 0.0f), r1 = r0;
        if (8 * v.n < cn) {  // cn % 8 == 0: the tile's channels all in, or all out (zero)
          const float* row = a.weight + Idx(kw) * Idx(a.g.C) + Idx(c0 + 8 * v.n + v.g0);
          if (kw < P) r0 = __ldg(reinterpret_cast<const float4*>(row));
          if (kw + 1 < P) r1 = __ldg(reinterpret_cast<const float4*>(row + Idx(a.g.C)));
        }
        const float w0[4] = {r0.x, r0.y, r0.z, r0.w}, w1[4] = {r1.x, r1.y, r1.z, r1.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) put(v.s, v.n, 4 * (v.g0 + j) + v.q, w0[j], w1[j]);
      }
    } else {
      for (int i = tid; i < d.steps * 8 * 32; i += pol::threads) {  // 4 bytes at a time
        const td::band_w_item w_it = td::band_w_item_of(i);
        const int ch = td::band_w_channel(w_it);
        const index_t kw = td::band_w_offset(w_it);
        float w0 = 0.0f, w1 = 0.0f;
        if (ch < cn) {
          if (kw < P) w0 = a.weight[Idx(kw) * Idx(a.g.C) + Idx(c0 + ch)];
          if (kw + 1 < P) w1 = a.weight[Idx(kw + 1) * Idx(a.g.C) + Idx(c0 + ch)];
        }
        put(w_it.s, w_it.n, w_it.lane, w0, w1);
      }
    }
  }
  __syncthreads();

  band_dx_walk<float, Idx, Fused, EvictFirst>(
      a, d, k,
      [&](float(&acc)[8][4], index_t seg, index_t span_hi, index_t m0) {
        // 1. the rows the warps' k steps read: the segment's part of the span and up to 7 past it (even)
        const int used = static_cast<int>(span_hi - seg < S ? span_hi - seg : S);
        const int rows = (used + pol::pad_rows + 1) / 2 * 2;
        stage_band_rows_tf32<EvictFirst>(stage, dy, a.g.xt, seg, rows, used, k);
        for (int hh = 0; hh < nh; ++hh)
          for (int j = tid; j < rows; j += pol::threads) {
            const index_t u = seg + j;
            td::band_tap<float> e = td::null_band_tap<float>();
            if (j < used)
              e = td::make_band_tap<float, Idx>(band_token_taps<Idx>(offs + Idx(u) * ot, u, h_first + hh, a.w, n, d.causal),
                                                Idx(u));
            taps_w[hh * PR + j] = make_float2(e.ar, e.al);
          }
        __syncthreads();
        // 2. this warp's band within the segment, from an even token
        if (m0 < n) {
          const index_t lo = m0 - rr > seg ? m0 - rr : seg;
          const index_t hi = m0 + 15 + rl < seg + used ? m0 + 15 + rl : seg + used;
          int j0 = int(lo - seg) & ~1;
          const int jend = int(hi - seg);
          int pr = j0 / 2 + q;  // the lane's token pair
          // the operands' word: 1024 words per k step, +-4 as the pair's XOR flips its low bit (alternating)
          const float* bp = stage + td::band_tf32_lane_word(j0, q, g);
          int adv = td::band_tf32_lane_word(j0 + 8, q, g) - td::band_tf32_lane_word(j0, q, g);
          const int adv_sum = 2048;
          float dq = float(m0 + g - seg) - float(j0 + 2 * q);
          for (; j0 < jend; j0 += 8, pr += 4, bp += adv, adv = adv_sum - adv, dq -= 8.0f) {
            unsigned ahi[4], alo[4];
#pragma unroll
            for (int p = 0; p < 4; ++p) {
              if (p == 0 || k.pair_head[p] != k.pair_head[p - 1]) {
                const float4 t = taps2[k.pair_head[p] * (PR / 2) + pr];
                float w[4];
                td::band_tf32_lane_weights<float>(td::band_tap<float>{t.x, t.y}, td::band_tap<float>{t.z, t.w}, dq, w);
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
      },
      // W^T dz: dz as the 16-bit kernel reads it (band_offset_path), W hi, lo from the staged fragments: 3xTF32.
      [&](float(&acc)[8][4], int s, const unsigned(&zhi)[4], const unsigned(&zlo)[4]) {
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)  // tiles past cn: zero W (not stored)
          mma_tf32x3(acc[nt], zhi, zlo, *reinterpret_cast<const float4*>(wfrag + td::band_tf32_w_index(s, nt, lane)));
      });
}

template <class Idx, bool Fused>
__device__ void input_grad_band_tile_tf32(const window_args<float>& a, const dx_band_args& d) {
  input_grad_band_block_tf32<Idx, Fused>(a, d, make_band_block(a, d));
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
