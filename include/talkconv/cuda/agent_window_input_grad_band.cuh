// The window's input gradient as a banded product on 16-bit tensor cores (bfloat16 and half x), for windows up
// to detail::dx_band_max_k: dX = W dY with W[tau][u] = w_u(tau) (detail/dx_band.hpp: the formula, the plan,
// the coordinates; the CPU tests emulate this file lane by lane). No sort, no atomics, two block barriers
// per segment of tokens; wider windows take the event kernel (agent_window_input_grad.cuh).
//
// A block owns 64 channels of one sequence and walks tiles_per_block tiles of 128 rows; warp w owns rows
// [m0, m0 + 16), m0 = r0 + 16 w, as 8 accumulator tiles of 8 channels (m16n8, 32 floats per lane). Per
// segment of the tile's token span [r0 - reach_right, r0 + 128 + reach_left) (one segment unless offsets
// exceed the planned max_offset):
//   1. stage the segment's dy rows (cp.async, 16 bytes per copy, zero past the sequence and the segment)
//      at detail::band_stage_byte, and each (token, head)'s band_tap (16 bytes) in a table; one barrier;
//   2. each warp walks its band [m0 - reach_right, m0 + 15 + reach_left) in k steps of 16 tokens: per head
//      of the block, the lane's 8 weights (band_a_token: rows g, g + 8 x tokens 2q, 2q + 1, 2q + 8, 2q + 9)
//      from 4 table reads, split hi + lo in the 16-bit type; per pair of 8-channel tiles one ldmatrix.x4.trans
//      of dY and 4 mma (hi then lo, per tile); one barrier before the next segment is staged.
// Then the accumulators are scaled by 1/K, the offset path dX += dz W is added where fused (TF32 m16n8k8, dz
// split hi + lo, W staged once per block as b fragments in detail::band_k_perm order), and each lane stores
// its 2 rows x 16 channels as 4-byte pairs; rows past the sequence's length are written 0.
// Deterministic: every sum runs in a fixed order of segments, k steps, heads and pieces.
// Non-finite inputs (SPEC asks only that they stay in bounds): a NaN offset gives its token no weight, so its
// dy drops out of the window part of dx (the event kernel and the CPU carry a NaN down their running sums
// instead; in the layer, the token's NaN dz reaches its own dx row through W^T dz either way). An Inf or NaN
// in dy reaches every row of the 16-row tiles whose k steps include its token (0 x Inf = NaN in the mma, as
// in the forward: agent_window_forward_band.cuh), and an Inf inside a window comes back NaN, not Inf (the
// lo piece of an interior weight 1 is 0).
// Needs sm_80 or later (mma.sync on 16-bit types, cp.async): the launch checks the code it runs was built so.
#pragma once

#include "talkconv/cuda/agent_window_band.cuh"

namespace talkconv {
namespace cuda {
namespace detail {

// The lane's a fragments (hi, lo) of the weights of rows rr0, rr0 + 8 (relative to the segment) and the k
// step's tokens j0 + band_a_token(lane, 0..3) of one head's table.
template <class T>
__device__ __forceinline__ void band_a_fragment(const float2* __restrict__ taps, int j0, int q, float rr0,
                                                unsigned (&hi)[4], unsigned (&lo)[4]) {
  namespace td = talkconv::detail;
  float w[4][2];  // [token][row]
  td::band_lane_weights<float>(
      [taps](int j) {
        const float2 v = taps[j];
        return td::band_tap<float>{v.x, v.y};
      },
      j0, q, rr0, w);
#pragma unroll
  for (int i = 0; i < 4; ++i) band_pieces<T>(td::band_reg_weight(w, i, 0), td::band_reg_weight(w, i, 1), hi[i], lo[i]);
}

// The block k (a block's own: make_band_block; the fused backward's: make_band_block_at). EvictFirst: dy read
// under the L2 evict-first policy and dx stored evict-first (the fused backward: dy's last read, the first left it
// in L2; dx is not read again), so that L2 keeps the dy lines still to be re-read.
template <class T, class Idx, bool Fused, bool EvictFirst = false>
__device__ void input_grad_band_block(const window_args<T>& a, const dx_band_args& d, const band_block& k) {
  namespace td = talkconv::detail;
  using pol = dx_band_policy<T>;
  constexpr bool Bf16 = std::is_same<T, __nv_bfloat16>::value;
  extern __shared__ __align__(16) unsigned char talkconv_smem[];
  unsigned char* stage = talkconv_smem;
  const float2* taps = reinterpret_cast<const float2*>(talkconv_smem + d.taps_at);
  float2* taps_w = reinterpret_cast<float2*>(talkconv_smem + d.taps_at);
  float* wfrag = reinterpret_cast<float*>(talkconv_smem + d.w_at);
  const unsigned stage_base = static_cast<unsigned>(__cvta_generic_to_shared(stage));

  const int tid = k.tid, lane = k.lane, g = k.g, q = k.q, cn = k.cn, nh = k.nh;
  const index_t b = k.b, c0 = k.c0, h_first = k.h_first, n = k.n;
  const int S = d.stage_rows, PR = S + 16;
  const band_reach reach = band_reach_of(a, k.T);
  const index_t rl = reach.left, rr = reach.right;
  const Idx ot = static_cast<Idx>(a.g.ot);
  const T* __restrict__ dy = a.dy + Idx(b) * static_cast<Idx>(a.g.xb) + Idx(c0);
  const float* __restrict__ offs = a.offsets + Idx(b) * static_cast<Idx>(a.g.ob);

  if constexpr (Fused) {
    // W's b fragments: step s, tile n, lane l -> W[8 s + 2 q'][c0 + 8 n + g'], W[8 s + 2 q' + 1][...]
    const index_t P = a.g.P;
    if (reinterpret_cast<std::uintptr_t>(a.weight) % 16 == 0) {
      // 16 bytes of two W rows per item (band_w_vec_item_of: C % 8 == 0 and c0 % 8 == 0, so aligned), 8 lanes' pairs
      const int items = d.steps * 32;
      for (int i = tid; i < items; i += pol::threads) {
        const td::band_w_vec_item v = td::band_w_vec_item_of<8>(i);
        const index_t kw = 8 * v.s + 2 * v.q;
        float w0[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        float w1[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        if (8 * v.n < cn) {  // cn % 8 == 0: the tile's 8 channels all in, or all out (zero)
          const T* row = a.weight + Idx(kw) * Idx(a.g.C) + Idx(c0 + 8 * v.n);
          if (kw < P) unpack_vec<T>(load_raw16<T>(row), w0);
          if (kw + 1 < P) unpack_vec<T>(load_raw16<T>(row + Idx(a.g.C)), w1);
        }
#pragma unroll
        for (int g8 = 0; g8 < 8; ++g8)
          *reinterpret_cast<float2*>(wfrag + td::band_w_index(v.s, v.n, 4 * g8 + v.q)) = make_float2(w0[g8], w1[g8]);
      }
    } else {
      for (int i = tid; i < d.steps * 8 * 32; i += pol::threads) {  // 2 bytes at a time
        const td::band_w_item w_it = td::band_w_item_of(i);
        const int s = w_it.s, nt = w_it.n, l = w_it.lane;
        const int ch = td::band_w_channel(w_it);
        const index_t kw = td::band_w_offset(w_it);
        float w0 = 0.0f, w1 = 0.0f;
        if (ch < cn) {
          if (kw < P) w0 = to_acc<T>(a.weight[Idx(kw) * Idx(a.g.C) + Idx(c0 + ch)]);
          if (kw + 1 < P) w1 = to_acc<T>(a.weight[Idx(kw + 1) * Idx(a.g.C) + Idx(c0 + ch)]);
        }
        float* f = wfrag + td::band_w_index(s, nt, l);
        f[0] = w0;
        f[1] = w1;
      }
    }
  }
  __syncthreads();

  band_dx_walk<T, Idx, Fused, EvictFirst>(
      a, d, k,
      [&](float(&acc)[8][4], index_t seg, index_t, index_t m0) {
        // 1. stage dy rows [seg, seg + S), the taps of every (token, head)
        stage_band_rows<T, EvictFirst>(stage, dy, a.g.xt, seg, S, k);
        for (int hh = 0; hh < nh; ++hh)
          for (int j = tid; j < PR; j += pol::threads) {
            const index_t u = seg + j;
            td::band_tap<float> e = td::null_band_tap<float>();
            if (j < S && u < n)
              e = td::make_band_tap<float, Idx>(band_token_taps<Idx>(offs + Idx(u) * ot, u, h_first + hh, a.w, n, d.causal),
                                                Idx(u));
            taps_w[hh * PR + j] = make_float2(e.ar, e.al);
          }
        cp_async_wait_all();
        __syncthreads();
        // 2. this warp's band within the segment
        if (m0 < n) {
          const index_t lo = m0 - rr > seg ? m0 - rr : seg;
          // u's weights lie on rows [i2 + 1, i1] with i2 >= u - rl, i1 <= u + rr: tokens [m0 - rr, m0 + 15 + rl)
          index_t hi = m0 + 15 + rl < seg + S ? m0 + 15 + rl : seg + S;
          hi = hi < n ? hi : n;
          const float rr0 = float(m0 + g - seg);
          for (int j0 = int(lo - seg); j0 < int(hi - seg); j0 += 16) {
            unsigned ahi[4], alo[4];
#pragma unroll
            for (int p = 0; p < 4; ++p) {
              if (p == 0 || k.pair_head[p] != k.pair_head[p - 1])
                band_a_fragment<T>(taps + k.pair_head[p] * PR, j0, q, rr0, ahi, alo);
              band_mma_pair16<Bf16>(acc, p, ahi, alo, stage_base, j0, lane);
            }
          }
        }
      },
      // W^T dz: W exact in TF32 for 16-bit x, dz hi then lo (band_offset_path).
      [&](float(&acc)[8][4], int s, const unsigned(&zhi)[4], const unsigned(&zlo)[4]) {
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {  // tiles past cn: zero W (not stored)
          const float2 w = *reinterpret_cast<const float2*>(wfrag + td::band_w_index(s, nt, lane));
          const unsigned bw[2] = {__float_as_uint(w.x), __float_as_uint(w.y)};
          mma_tf32(acc[nt], zhi, bw);
          mma_tf32(acc[nt], zlo, bw);
        }
      });
}

template <class T, class Idx, bool Fused>
__device__ void input_grad_band_tile(const window_args<T>& a, const dx_band_args& d) {
  input_grad_band_block<T, Idx, Fused>(a, d, make_band_block(a, d));
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
