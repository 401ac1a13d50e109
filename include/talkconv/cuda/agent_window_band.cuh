// What the banded window kernels share (agent_window_input_grad_band.cuh: dx = W dY; agent_window_forward_band.cuh:
// y = W^T-shaped X, the same weights read by rows): the arguments (their per-dtype policy, dx_band_policy, is in
// policy.cuh), the shared-memory layout, the stage's 16-byte copies and the split of the weights into two 16-bit
// pieces. The formula, plan and coordinates are detail/dx_band.hpp (host+device, emulated by the CPU tests).
#pragma once

#include "talkconv/cuda/agent_window_tile.cuh"
#include "talkconv/cuda/async_copy.cuh"
#include "talkconv/cuda/mma_tf32.cuh"
#include "talkconv/detail/dx_band.hpp"
#include "talkconv/detail/mma_layout.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace talkconv {
namespace cuda {
namespace detail {

// The banded kernels write the tile's 128 rows (8 warps x 16) as literals: the tile that band_tile_rows names.
static_assert(talkconv::detail::band_tile_rows == 128, "the banded kernels' tile is 128 rows (8 warps x 16)");

// The banded kernels' arguments (the forward uses stage_rows, tiles_per_block, blocks_per_seq, causal, taps_at).
struct dx_band_args {
  int stage_rows = 0;          // tokens per segment (detail::dx_band_plan), padded by dx_band_policy::pad_rows
  int tiles_per_block = 1;
  index_t blocks_per_seq = 0;  // grid x = B * blocks_per_seq
  bool causal = false;
  int steps = 0;               // fused offset path: steps of 8 offsets (0: not fused)
  unsigned taps_at = 0;        // byte offsets in dynamic shared memory: the band_tap table, the W fragments
  unsigned w_at = 0;
};

// Dynamic shared memory: the stage (padded rows x row_bytes), the tap table (heads x padded rows x 8 bytes;
// the forward's: heads x 128 rows), the fused path's W fragments (steps x 256 x w_frag_bytes).
template <class T>
struct dx_band_smem {
  using pol = dx_band_policy<T>;
  static constexpr unsigned tap_bytes = 8;  // a band_tap<float>
  static unsigned taps_at(int stage_rows) { return unsigned(stage_rows + pol::pad_rows) * pol::row_bytes; }
  static unsigned w_at(int stage_rows, int nh) {
    return (taps_at(stage_rows) + unsigned(nh) * unsigned(stage_rows + pol::pad_rows) * tap_bytes + 15u) / 16u * 16u;
  }
  static std::size_t bytes(int stage_rows, int nh, int steps) {
    return std::size_t(w_at(stage_rows, nh)) + std::size_t(steps) * 256u * pol::w_frag_bytes;
  }
  static std::size_t forward_bytes(int stage_rows, int nh) {
    return std::size_t(taps_at(stage_rows)) + std::size_t(nh) * 128u * tap_bytes;
  }
};

// Whether a banded kernel takes a problem by its shape (Forward: the forward's, else the dx's): a supported x type,
// heads of a multiple of 16 channels (pairs of 8-channel mma tiles share a head), C % 8 == 0, K <= max_k / fwd_max_k
// (past it the event / sorted-events / prefix-sum kernels cost less). Pointers play no part: the workspace queries
// decide with it (the sorted-events dx's workspace is asked for where this is false).
template <class T, bool Forward = false>
bool band_shape_applies(const window_geom& wg, const seq_shape& s, const window_params& w) {
  if constexpr (!(Forward ? dx_band_policy<T>::forward : dx_band_policy<T>::supported)) {
    (void)wg, (void)s, (void)w;
    return false;
  } else {
    return wg.R % 16 == 0 && s.C % 8 == 0 &&
           w.window_len() <= (Forward ? dx_band_policy<T>::fwd_max_k : dx_band_policy<T>::max_k);
  }
}
// ... and its tensors 16-byte aligned (the stage's vector copies). A speed choice only.
template <class T, bool Forward = false>
bool band_applies(const window_geom& wg, const seq_shape& s, const window_params& w, const void* in, const void* out) {
  auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  return band_shape_applies<T, Forward>(wg, s, w) && aligned(in) && aligned(out);
}

// What a block of either banded kernel owns and who this thread is: sequence b (valid length n), tiles
// [first_tile, first_tile + tiles_per_block) of 128 rows, channels [c0, c0 + cn) with heads [h_first, h_first
// + nh); lane (g, q) of warp `warp`. Pairs of 8-channel tiles (the launch asks R % 16 == 0): all four are
// computed (the mma stay uniform, no divergence around them); channels past cn read zero x / dy (and zero
// W), and pairs past cn use the block's last head (finite weights), so their products are 0; they are not
// stored. pair_head[p]: the head (of the block's) of channels 16 p .. 16 p + 15.
struct band_block {
  int tid, warp, lane, g, q;
  index_t b, first_tile, c0, h_first, T, n;
  int cn, nh, pairs;
  int pair_head[4];
};
// The block of sequence b from tile first_tile, channel block cb (the fused forward walks its channel blocks).
template <class T>
__device__ __forceinline__ band_block make_band_block_at(const window_args<T>& a, index_t b, index_t first_tile, int cb) {
  band_block k;
  k.tid = static_cast<int>(threadIdx.x);
  k.warp = k.tid / 32, k.lane = k.tid % 32, k.g = k.lane / 4, k.q = k.lane % 4;
  k.b = b;
  k.first_tile = first_tile;
  int sub;
  a.w.block_channels(cb, k.c0, k.cn, sub);
  a.w.block_heads(cb, k.h_first, k.nh);
  k.T = a.g.T;
  k.n = a.g.length(k.b);
  k.pairs = k.cn / 16;
#pragma unroll
  for (int p = 0; p < 4; ++p) {
    const int h = a.w.head_in_block(16 * p);
    k.pair_head[p] = h < k.nh ? h : k.nh - 1;
  }
  return k;
}
// This block's (grid: B * blocks_per_seq, channel blocks).
template <class T>
__device__ __forceinline__ band_block make_band_block(const window_args<T>& a, const dx_band_args& d) {
  const unsigned blk = blockIdx.x, bps = static_cast<unsigned>(d.blocks_per_seq), bq = blk / bps;
  return make_band_block_at(a, index_t(bq), index_t(blk - bq * bps) * d.tiles_per_block, static_cast<int>(blockIdx.y));
}

// Stage rows [seg, seg + S) of `src` (the block's sequence and first channel; row stride xt) into the
// stage at detail::band_stage_byte, zero past the length, in the 16 padding rows and past cn: thread (row
// tid / 8 + 32 i, vector tid % 8), its byte advancing by 32 rows (the swizzle repeats every 8). Asynchronous:
// cp_async_wait_all and a barrier before the stage is read.
// EvictFirst: the copies read under l2_evict_first_policy (the fused forward's re-read of x: its last read).
template <class T, bool EvictFirst = false>
__device__ __forceinline__ void stage_band_rows(unsigned char* stage, const T* src, index_t xt, index_t seg, int S,
                                                const band_block& k) {
  const int v = k.tid % 8, jmax = static_cast<int>(k.n - seg < S ? k.n - seg : S);
  const bool vec_ok = v < k.cn / 8;
  int j = k.tid / 8;
  const T* p = src + (seg + j) * xt + 8 * v;  // 64-bit steps: rows past T are formed, never read
  const index_t step = 32 * xt;
  unsigned char* dst = stage + talkconv::detail::band_stage_byte(j, v);
  const unsigned long long policy = EvictFirst ? l2_evict_first_policy() : 0ull;
  for (; j < S + 16; j += 32, p += step, dst += 32 * 128) {
    const bool valid = vec_ok && j < jmax;
    if constexpr (EvictFirst)
      cp_async_16_or_zero_hint(dst, valid ? p : src, valid, policy);
    else
      cp_async_16_or_zero(dst, valid ? p : src, valid);
  }
}

// Float's stage (both banded float kernels): rows [seg, seg + rows) of dy or x (rows even; the block's sequence and first channel, row stride xt), split
// hi + lo (detail::band_tf32_stage_word): thread t takes channels 4 cq .. 4 cq + 3 of token pairs pr + 16 i
// (detail::band_tf32_stage_item), 16 bytes of each token (zero past `valid_rows` and past cn), and writes each
// channel's 4 words (hi, lo of both tokens) with one 16-byte store, through 4 pointers (the pair's XOR permutes
// the quad's channels; pr % 8, hence the permutation, stays): a quarter-warp's stores hit 8 distinct bank groups.
// EvictFirst: streaming loads (ld.global.cs, evict-first in L1 and L2: the fused float forward's re-read of x, its last
// read; plain loads with TALKCONV_CUDA_L2_HINTS=0).
template <bool EvictFirst = false>
__device__ __forceinline__ void stage_band_rows_tf32(float* stage, const float* src, index_t xt, index_t seg, int rows,
                                                     int valid_rows, const band_block& k) {
  namespace td = talkconv::detail;
  const td::band_tf32_item item = td::band_tf32_stage_item(k.tid);
  const bool ch_ok = 4 * item.quad < k.cn;
  int j = 2 * item.pair;
  const float* p0 = src + (seg + j) * xt + 4 * item.quad;  // tokens j and j + 1; 64-bit steps: rows past T are
  const float* p1 = p0 + xt;                               // formed, never read
  const index_t step = 32 * xt;
  float* w[4];
#pragma unroll
  for (int c = 0; c < 4; ++c) w[c] = stage + td::band_tf32_stage_word(j, 4 * item.quad + c, 0);
  for (; j < rows; j += 32, p0 += step, p1 += step) {
    float4 v0 = make_float4(0.0f, 0.0f, 0.0f, 0.0f), v1 = v0;
    if constexpr (EvictFirst && TALKCONV_CUDA_L2_HINTS != 0) {  // ld.global.cs: evict-first in L1 and L2
      if (ch_ok && j < valid_rows) v0 = __ldcs(reinterpret_cast<const float4*>(p0));
      if (ch_ok && j + 1 < valid_rows) v1 = __ldcs(reinterpret_cast<const float4*>(p1));
    } else {
      if (ch_ok && j < valid_rows) v0 = __ldg(reinterpret_cast<const float4*>(p0));
      if (ch_ok && j + 1 < valid_rows) v1 = __ldg(reinterpret_cast<const float4*>(p1));
    }
    const float a[4] = {v0.x, v0.y, v0.z, v0.w}, b[4] = {v1.x, v1.y, v1.z, v1.w};
#pragma unroll
    for (int c = 0; c < 4; ++c) {  // channel 4 cq + c: hi of tokens j, j + 1, then lo
      float4 o;
      tf32_split(a[c], o.x, o.z);
      tf32_split(b[c], o.y, o.w);
      *reinterpret_cast<float4*>(w[c]) = o;
      w[c] += 4096;
    }
  }
}

// The taps of token u (u < n) for head h (of the layer's) from its offsets row `off`: Idx-wide (u < n <= T,
// and L, M < dx_band_max_k).
template <class Idx>
__device__ __forceinline__ window_taps<float, Idx> band_token_taps(const float* off, index_t u, index_t h,
                                                                   const window_geom& w, index_t n, bool causal) {
  return talkconv::detail::make_taps<float, Idx>(Idx(u), off[h], causal ? 0.0f : off[w.H + h], Idx(w.L), Idx(w.M),
                                                 Idx(n), causal);
}

// The banded dx kernels' fused offset path walk (16-bit and float): the lane's dz rows row0 = m0 + g and row0 + 8
// (rows past the length read nothing), step s's a fragment (mma_m16n8k8: rows g, g + 8 (e % 2), offsets
// band_dz_offset, i.e. band_k_perm order) split hi + lo, then product(s, zhi, zlo) (the dtype's W fragments and
// mma). Both pointers walk by 8 offsets a step; the bounds are 32-bit compares with P.
template <class Idx, class Product>
__device__ __forceinline__ void band_offset_path(const float* dz, Idx ot, index_t row0, index_t n, int q, int P, int steps,
                                                 Product&& product) {
  namespace td = talkconv::detail;
  const bool ok0 = row0 < n, ok1 = row0 + 8 < n;
  const float* z0 = dz + (ok0 ? Idx(row0) * ot : Idx(0)) + 2 * q;
  const float* z1 = dz + (ok1 ? Idx(row0 + 8) * ot : Idx(0)) + 2 * q;
  for (int s = 0; s < steps; ++s, z0 += 8, z1 += 8) {
    float v[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const bool in = td::band_dz_offset(s, q, e) < P && (e % 2 ? ok1 : ok0);
      v[e] = in ? (e % 2 ? z1 : z0)[e / 2] : 0.0f;
    }
    unsigned zhi[4], zlo[4];
    tf32_split_fragment<4>(v, zhi, zlo);
    product(s, zhi, zlo);
  }
}

// The banded forwards' tile prologue (16-bit and float): the tile's row taps per head into `taps` (heads x 128,
// each relative to its row, a NaN offset marking its row: band_tap via make_band_row_tap), one barrier; this
// warp's token range from its valid rows' windows (band_row_tokens, warp min / max) and the block's span as
// their union (shared-memory atomicMin / atomicMax on integers: order-free), one barrier. Returns the warp's
// range [wlo, whi) (empty: wlo >= whi) and the block's span [span_lo, span_hi) within [0, n). span_rel: the
// kernel's static pair, rewritten here (the caller's barrier orders it after the previous tile's reads).
struct band_fwd_span {
  index_t span_lo, span_hi, wlo, whi;
};
// The forward's row taps: heads [h_first, h_first + nh) of rows [r0, r0 + 128) (those below the length n; the
// others a null tap) into taps[hh * 128 + j], from the offsets rows at offs_r0 (row r0's) + j * ot.
template <class Idx>
__device__ __forceinline__ void band_forward_taps(float2* taps, const float* offs_r0, Idx ot, const window_geom& w,
                                                  bool causal, index_t r0, index_t n, index_t h_first, int nh, int tid) {
  namespace td = talkconv::detail;
  for (int hh = 0; hh < nh; ++hh)
    for (int j = tid; j < 128; j += dx_band_policy<float>::threads) {
      const index_t u = r0 + j;
      td::band_tap<float> e = td::null_band_tap<float>();
      if (u < n)
        e = td::make_band_row_tap<float, Idx>(band_token_taps<Idx>(offs_r0 + Idx(j) * ot, u, h_first + hh, w, n, causal),
                                              Idx(u));
      taps[hh * 128 + j] = make_float2(e.ar, e.al);
    }
}

// The warps' token ranges and the block's span from the table (rows of the block's heads at taps[hh * 128 + j]),
// after a barrier that follows the table's writes and span_rel's reset to {INT_MAX, INT_MIN}; ends at a barrier.
__device__ __forceinline__ band_fwd_span band_forward_span(const float2* taps, int* span_rel, index_t r0,
                                                           const band_block& k) {
  namespace td = talkconv::detail;
  const int warp = k.warp, lane = k.lane, nh = k.nh;
  const index_t n = k.n, m0 = r0 + 16 * warp;
  int lo = INT_MAX, hi = INT_MIN;  // this warp's token range relative to r0, inclusive
  for (int i = lane; i < 16 * nh; i += 32) {
    const int hh = i / 16, r = i % 16;
    if (m0 + r < n) {
      const float2 e = taps[hh * 128 + 16 * warp + r];
      int a, z;
      td::band_row_tokens<float>(td::band_tap<float>{e.x, e.y}, a, z);
      if (a <= z) {
        lo = min(lo, 16 * warp + r + a);
        hi = max(hi, 16 * warp + r + z);
      }
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) {
    lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, o));
    hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, o));
  }
  if (lane == 0 && lo <= hi) {
    atomicMin(&span_rel[0], lo);
    atomicMax(&span_rel[1], hi);
  }
  __syncthreads();
  band_fwd_span sp;  // tokens [r0 + lo, r0 + hi] within [0, n): the block's span
  sp.span_lo = r0 + span_rel[0] > 0 ? r0 + span_rel[0] : 0;
  sp.span_hi = r0 + index_t(span_rel[1]) + 1 < n ? r0 + index_t(span_rel[1]) + 1 : n;
  sp.wlo = r0 + lo, sp.whi = r0 + index_t(hi) + 1;
  return sp;
}

template <class Idx>
__device__ __forceinline__ band_fwd_span band_forward_prologue(float2* taps, int* span_rel, const float* offs, Idx ot,
                                                               const window_geom& w, bool causal, index_t r0,
                                                               const band_block& k) {
  if (k.tid == 0) span_rel[0] = INT_MAX, span_rel[1] = INT_MIN;
  band_forward_taps<Idx>(taps, offs + Idx(r0) * ot, ot, w, causal, r0, k.n, k.h_first, k.nh, k.tid);
  __syncthreads();
  return band_forward_span(taps, span_rel, r0, k);
}

// Two adjacent outputs of a row (channels ch, ch + 1) in T: one 4-byte store for 16-bit T, 8 bytes for float.
template <class T, bool Streaming = false>
__device__ __forceinline__ void band_store_pair(T* p, float v0, float v1) {
  if constexpr (std::is_same<T, float>::value) {
    if constexpr (Streaming)
      __stcs(reinterpret_cast<float2*>(p), make_float2(v0, v1));
    else
      *reinterpret_cast<float2*>(p) = make_float2(v0, v1);
  } else {
    T e2[2] = {from_acc<T>(v0), from_acc<T>(v1)};
    unsigned raw;
    memcpy(&raw, e2, sizeof(raw));
    if constexpr (Streaming)
      __stcs(reinterpret_cast<unsigned*>(p), raw);
    else
      *reinterpret_cast<unsigned*>(p) = raw;
  }
}

// The stores of a lane's 2 rows (row0, row0 + 8) x 16 channels of a tile (8-channel tiles of the block's `pairs`
// pairs): value(nt, hr, v0, v1) gives row row0 + 8 hr's channels 8 nt + 2 q, + 1; rows past the length n are
// written 0 (value not called), rows past T not at all. Streaming: evict-first stores (st.global.cs), kept out of
// the way of lines the block still reads from L2 (the fused forward's x).
template <class T, class Idx, bool Streaming = false, class Value>
__device__ __forceinline__ void band_store_tile(T* __restrict__ out, Idx xt, int pairs, int q, index_t row0, index_t Tn,
                                                index_t n, Value&& value) {
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    if (nt < 2 * pairs) {
      const Idx ch = Idx(8 * nt + 2 * q);
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const index_t row = row0 + 8 * hr;
        if (row < Tn) {
          float v0 = 0.0f, v1 = 0.0f;
          if (row < n) value(nt, hr, v0, v1);
          band_store_pair<T, Streaming>(out + Idx(row) * xt + ch, v0, v1);
        }
      }
    }
  }
}

// A tile's accumulators (8 tiles of 8 channels x the m16n8 fragment) cleared.
__device__ __forceinline__ void band_clear(float (&acc)[8][4]) {
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = 0.0f;
}

// One 16-bit k step of 16 tokens for the channel pair p (two 8-channel tiles): the staged operand of tokens
// [j0, j0 + 16) by ldmatrix.x4.trans at stage_base, times the a pieces hi then lo (m16n8k16).
template <bool Bf16>
__device__ __forceinline__ void band_mma_pair16(float (&acc)[8][4], int p, const unsigned (&ahi)[4],
                                                const unsigned (&alo)[4], unsigned stage_base, int j0, int lane) {
  namespace td = talkconv::detail;
  unsigned bf[4];
  ldmatrix_x4<true>(bf, stage_base + td::band_stage_byte(j0 + td::ldsm_t_b_k(lane), 2 * p + td::ldsm_t_b_n(lane) / 8));
  mma_16bit<Bf16>(acc[2 * p], ahi, bf[0], bf[1]);
  mma_16bit<Bf16>(acc[2 * p], alo, bf[0], bf[1]);
  mma_16bit<Bf16>(acc[2 * p + 1], ahi, bf[2], bf[3]);
  mma_16bit<Bf16>(acc[2 * p + 1], alo, bf[2], bf[3]);
}

// One tile of the banded forward, rows [r0, r0 + 128) of the block's sequence and channels: the accumulators
// cleared; below the length, the span from prologue() (the tile's row taps in `taps`, heads x 128, and the warps'
// ranges: band_forward_prologue or the fused forward's band_forward_span; it ends at a barrier) and its segments of
// d.stage_rows tokens (segment(acc, seg, m0, span) stages them, a barrier, and multiplies; a barrier after each);
// then 1/K (NaN for a NaN offset of the row's head) and the stores of the lane's 2 rows x 16 channels (rows past
// the length: 0; a tile past the length is all zeros); Streaming: evict-first stores of y (band_store_tile).
template <class T, class Idx, bool Streaming = false, class Prologue, class Segment>
__device__ __forceinline__ void band_forward_tile(const window_args<T>& a, const dx_band_args& d, const band_block& k,
                                                  index_t r0, const float2* taps, Prologue&& prologue,
                                                  Segment&& segment) {
  namespace td = talkconv::detail;
  const int warp = k.warp, g = k.g, q = k.q, pairs = k.pairs;
  const index_t b = k.b, c0 = k.c0, Tn = k.T, n = k.n;
  const int S = d.stage_rows;
  const float inv_k = 1.0f / float(a.w.L + a.w.M + 1);
  const Idx xt = static_cast<Idx>(a.g.xt);
  T* __restrict__ y = a.y + Idx(b) * static_cast<Idx>(a.g.xb) + Idx(c0);
  const index_t m0 = r0 + 16 * warp;
  float acc[8][4];
  band_clear(acc);

  if (r0 < n) {  // block-uniform: a tile past the length is all zeros
    // 1. the rows' taps, the warps' token ranges, the block's span
    const band_fwd_span sp = prologue();
    for (index_t seg = sp.span_lo; seg < sp.span_hi; seg += S) {
      // 2. stage rows from seg, multiply
      segment(acc, seg, m0, sp);
      __syncthreads();  // the stage is rewritten by the next segment
    }
  }

  band_store_tile<T, Idx, Streaming>(y, xt, pairs, q, m0 + g, Tn, n, [&](int nt, int hr, float& v0, float& v1) {
    // a NaN offset of this row's head: NaN (the table is intact: the next tile rewrites it after a barrier)
    const float mark = taps[k.pair_head[nt / 2] * 128 + 16 * warp + g + 8 * hr].x;
    const float s = td::is_nan(mark) ? mark : inv_k;
    v0 = acc[nt][2 * hr] * s;
    v1 = acc[nt][2 * hr + 1] * s;
  });
}

// The banded forward's walk, shared by the 16-bit and the float kernels: the block's fwd_tiles_per_block tiles of
// 128 rows, each a band_forward_tile with band_forward_prologue (the table from the offsets in global memory).
template <class T, class Idx, class Segment>
__device__ __forceinline__ void band_forward_walk(const window_args<T>& a, const dx_band_args& d, const band_block& k,
                                                  float2* taps, int* span_rel, Segment&& segment) {
  const Idx ot = static_cast<Idx>(a.g.ot);
  const float* __restrict__ offs = a.offsets + Idx(k.b) * static_cast<Idx>(a.g.ob);
  for (int it = 0; it < d.tiles_per_block; ++it) {
    const index_t r0 = (k.first_tile + it) * 128;
    if (r0 >= k.T) break;  // block-uniform
    if (it > 0) __syncthreads();  // the previous tile's span and table (its epilogue's NaN marks) are read
    band_forward_tile<T, Idx>(
        a, d, k, r0, taps, [&] { return band_forward_prologue<Idx>(taps, span_rel, offs, ot, a.w, d.causal, r0, k); },
        segment);
  }
}

// The windows' reach on the device (a.reach: every tap of token u within [u - left, u + right]), clamped to T.
struct band_reach {
  index_t left, right;
};
template <class T>
__device__ __forceinline__ band_reach band_reach_of(const window_args<T>& a, index_t Tn) {
  const unsigned long long most = static_cast<unsigned long long>(Tn);
  return band_reach{static_cast<index_t>(a.reach[0] < most ? a.reach[0] : most),
                    static_cast<index_t>(a.reach[1] < most ? a.reach[1] : most)};
}

// The banded dx's walk, shared by the 16-bit and the float kernels (after their W staging and its barrier): the
// block's tiles_per_block tiles of 128 rows; per tile the accumulators cleared, the span of tokens whose taps
// reach the tile ([r0 - right, r0 + 128 + left) within [0, n)) in segments of d.stage_rows tokens
// (segment(acc, seg, span_hi, m0) stages them and the taps, a barrier, and multiplies; a barrier after each),
// then 1/K, with Fused W^T dz (band_offset_path; w_step(acc, s, zhi, zlo) adds step s's products), and the stores
// of the lane's 2 rows x 16 channels (rows past the length: 0); Streaming: stored evict-first (band_store_pair).
template <class T, class Idx, bool Fused, bool Streaming = false, class Segment, class WStep>
__device__ __forceinline__ void band_dx_walk(const window_args<T>& a, const dx_band_args& d, const band_block& k,
                                             Segment&& segment, WStep&& w_step) {
  const int warp = k.warp, g = k.g, q = k.q, pairs = k.pairs;
  const index_t b = k.b, c0 = k.c0, Tn = k.T, n = k.n, first_tile = k.first_tile;
  const band_reach reach = band_reach_of(a, Tn);
  const float inv_k = 1.0f / float(a.w.L + a.w.M + 1);
  const Idx xt = static_cast<Idx>(a.g.xt), ot = static_cast<Idx>(a.g.ot);
  T* __restrict__ dx = a.dx + Idx(b) * static_cast<Idx>(a.g.xb) + Idx(c0);

  for (int it = 0; it < d.tiles_per_block; ++it) {
    const index_t r0 = (first_tile + it) * 128;
    if (r0 >= Tn) break;  // block-uniform
    const index_t m0 = r0 + 16 * warp;
    float acc[8][4];
    band_clear(acc);

    if (r0 < n) {  // block-uniform: a tile past the length is all zeros
      const index_t span_lo = r0 - reach.right > 0 ? r0 - reach.right : 0;
      const index_t span_hi = r0 + 128 + reach.left < n ? r0 + 128 + reach.left : n;
      for (index_t seg = span_lo; seg < span_hi; seg += d.stage_rows) {
        segment(acc, seg, span_hi, m0);
        __syncthreads();  // the stage and the table are rewritten by the next segment
      }
    }

    // Epilogue: 1/K, the offset path, the stores.
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[nt][e] *= inv_k;
    const index_t row0 = m0 + g;
    if constexpr (Fused) {
      if (m0 < n)
        band_offset_path<Idx>(a.dz + Idx(b) * static_cast<Idx>(a.g.ob), ot, row0, n, q, static_cast<int>(a.g.P), d.steps,
                              [&](int s, const unsigned(&zhi)[4], const unsigned(&zlo)[4]) { w_step(acc, s, zhi, zlo); });
    }
    band_store_tile<T, Idx, Streaming>(dx, xt, pairs, q, row0, Tn, n, [&](int nt, int hr, float& v0, float& v1) {
      v0 = acc[nt][2 * hr];
      v1 = acc[nt][2 * hr + 1];
    });
  }
}

// Two weights (tokens k, k + 1 of one row) as the hi and lo 16-bit pieces of one mma register each: hi
// rounded to nearest, lo = the exact remainder rounded to nearest (bfloat16: the hi halves widen by a shift
// and a mask, 6 instructions per register).
template <class T>
__device__ __forceinline__ void band_pieces(float w0, float w1, unsigned& hi, unsigned& lo) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(w0, w1);
    hi = *reinterpret_cast<const unsigned*>(&h);
    const __nv_bfloat162 l =
        __floats2bfloat162_rn(w0 - __uint_as_float(hi << 16), w1 - __uint_as_float(hi & 0xffff0000u));
    lo = *reinterpret_cast<const unsigned*>(&l);
  } else {
    const __half2 h = __floats2half2_rn(w0, w1);
    const __half2 l = __floats2half2_rn(w0 - __low2float(h), w1 - __high2float(h));
    hi = *reinterpret_cast<const unsigned*>(&h);
    lo = *reinterpret_cast<const unsigned*>(&l);
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
