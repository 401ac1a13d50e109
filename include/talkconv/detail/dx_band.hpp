// The window as a banded matrix product, host+device so the CPU tests run the kernels' plan, coordinates and
// arithmetic (agent_window_input_grad_band.cuh: dx; agent_window_forward_band.cuh: y).
//
// SPEC: y[u] = (1/K) sum_tau w_u(tau) x[tau] and dx[tau] = (1/K) sum_u w_u(tau) dy[u], w_u = 1 inside token u's
// window, the fractional weights at its edges, 0 outside. With the taps of detail/math.hpp (i0 = floor(a_r),
// i2 = floor(a_l) - 1, fractions fr, fl) it is the suffix sum of the four tap weights, which is
//
//   w_u(tau) = sat(ar - d) - sat(al - d),   d = tau - u,  ar = (i0 + 1 - u) + fr,  al = (i2 + 1 - u) + fl,
//   sat(v) = clamp(v, 0, 1), sat(NaN) = 0
//
// (tau <= i0: 1; tau = i0 + 1: fr; above: 0; minus 1 below i2 + 1, fl at i2 + 1, 0 above). ar and al are a
// token's two numbers (band_tap), relative to the token itself: |ar|, |al| <= max(L, M) + 2, so the fractions
// keep 24 - log2(max(L, M) + 2) bits (19 at L = M = 16, 16 at 254), and d is an exact small integer, so an
// integer distance saturates exactly and only the fraction is rounded. On the device a weight is two FADD.SAT
// and one FADD.
//
// The products run on 16-bit tensor cores (mma.sync m16n8k16, float accumulators): the weights in registers,
// built per lane in the a-fragment order and split in two 16-bit pieces (hi = round(w), lo = round(w - hi):
// within 2^-17 |w| for bfloat16, 2^-22 for half; the window's inner weights are exactly 1), dY or X staged in
// shared memory and read with ldmatrix.trans. dx: rows [m0, m0 + 16) meet the tokens [m0 - reach_right, m0 + 15
// + reach_left) (the windows' reach on the device: every tap of u lies in [u - reach_left, u + reach_right], and
// u's weights in [i2 + 1, i1]): ceil((15 + reach) / 16) k steps of 16 tokens, 3 at L = M = 16. y: row u reads
// the tokens [u + floor(al), u + ceil(ar) - 1], at most [u - L, u + M]. Cost per element: the weights
// (shared by a head's channels), 2 mma per 16 tokens and 8 channels: linear in the window, so the layer takes
// these paths up to dx_band_max_k and the event kernel / prefix-sum tiles past it.
#pragma once

#include "talkconv/config.hpp"
#include "talkconv/detail/math.hpp"
#include "talkconv/detail/window_tile.hpp"

#include <cmath>
#include <type_traits>

namespace talkconv {
namespace detail {

// Widest window (K = L + M + 1) the layer sends to the banded product of 16-bit x (a speed choice only: both paths
// compute the same sums). By the instruction count (bench/cuda/BUDGET.md) the banded product costs about
// 8 + 2.3 ceil((16 + K) / 16) instructions per element, the event kernel 55-60 measured at K = 33.
// -DTALKCONV_CUDA_BAND_MAX_K=N moves the crossover (an A/B knob for the device's K sweep, scripts/gpu-lease.sh's
// ksweep-wide step: 1023). Up to 2047: spans past the stage take more segments, and the fractions keep at least
// 24 - log2(2048) = 13 bits (above half's 11-bit significand; the band emulation runs with the knob at 1023 too:
// ctest talkconv.cpu.band_tiles_wide). Past 255 the stage of a tile's span, (128 + K) x 128 bytes, leaves 2 blocks
// per SM up to K ~ 700 and 1 past it (H100 / H200).
#ifndef TALKCONV_CUDA_BAND_MAX_K
#define TALKCONV_CUDA_BAND_MAX_K 255
#endif
constexpr index_t dx_band_max_k = TALKCONV_CUDA_BAND_MAX_K;
static_assert(dx_band_max_k >= 1 && dx_band_max_k <= 2047, "TALKCONV_CUDA_BAND_MAX_K: a window length up to 2047");

// Rows of a banded tile: 8 warps of 16 rows (the m16 of the mma). The fused kernels' time tile too (one tile per
// block: agent_forward_fused.cuh, agent_backward_fused.cuh).
constexpr int band_tile_rows = 128;

// The block's plan: `warps` warps of 16 rows each (tile = 16 warps rows), a stage of `stage_rows` tokens
// (a segment of the block's token span) plus 16 padding rows (zero dy, zero weights) that a warp's last
// k step may overrun. The stage holds a tile's whole span for offsets up to max_offset (1 for sigmoid
// offsets, 1 / (1 - p) after dropout); a span beyond it (larger offsets) takes more segments: the same
// sums, more passes. Host only.
struct dx_band_plan {
  int warps = 8, tile = band_tile_rows, stage_rows = 0;
  TALKCONV_HOST_DEVICE int padded_rows(int pad = 16) const { return stage_rows + pad; }  // float: band_tf32_pad
};
// max_rows (a multiple of 16; 0: none) caps the stage where shared memory is short (float's 512-byte tokens).
inline dx_band_plan make_dx_band_plan(index_t L, index_t M, bool causal, double max_offset, int max_rows = 0) {
  dx_band_plan p;
  if (!(max_offset >= 0.0) || !std::isfinite(max_offset)) max_offset = 1.0;
  // reach_left <= ceil(L o) + 1 and reach_right <= ceil(M o) (window_tile.hpp's halos), at most a band's.
  const double most = double(dx_band_max_k) + 2.0;
  double halo = halo_left_rows(L, max_offset) + halo_right_rows(M, causal, max_offset);
  if (halo > most) halo = most;
  p.stage_rows = static_cast<int>((p.tile + static_cast<index_t>(halo) + 15) / 16 * 16);
  if (max_rows > 0 && p.stage_rows > max_rows) p.stage_rows = max_rows;
  return p;
}

// One token's two numbers (the formula above), relative to the token. A NaN fraction (a NaN offset) gives the
// token no weight in dx (its dy reaches dx through the offset path, which carries the NaN: dz = do * o_pre (1 -
// o_pre) with o_pre NaN).
template <class A>
struct band_tap {
  A ar, al;
};
template <class A, class I>
TALKCONV_HOST_DEVICE inline band_tap<A> make_band_tap(const window_taps<A, I>& k, I u) {
  if (is_nan(k.fr) || is_nan(k.fl)) return band_tap<A>{A(0), A(0)};
  return band_tap<A>{A(k.i0 + 1 - u) + k.fr, A(k.i2 + 1 - u) + k.fl};
}
// The forward's row taps: a NaN offset marks the row (ar = al = NaN: no weight anywhere, sat(NaN) = 0) and the row's
// outputs in that head are NaN (SPEC: a NaN offset gives NaN in that token's head).
template <class A, class I>
TALKCONV_HOST_DEVICE inline band_tap<A> make_band_row_tap(const window_taps<A, I>& k, I u) {
  if (is_nan(k.fr) || is_nan(k.fl)) return band_tap<A>{k.fr + k.fl, k.fr + k.fl};
  return make_band_tap<A, I>(k, u);
}
template <class A>
TALKCONV_HOST_DEVICE inline bool band_row_is_nan(const band_tap<A>& e) {
  return is_nan(e.ar);
}
// A token that adds nothing (outside [0, n), or a stage's padding row).
template <class A>
TALKCONV_HOST_DEVICE inline band_tap<A> null_band_tap() {
  return band_tap<A>{A(0), A(0)};
}
// The tokens a row's nonzero weights can lie on, relative to the row: [floor(al), ceil(ar) - 1] (the weight
// needs al - 1 < d < ar); at most [-L, M] for offsets in [0, 1]. A marked (NaN) row reads none: lo > hi.
template <class A>
TALKCONV_HOST_DEVICE inline void band_row_tokens(const band_tap<A>& e, int& lo, int& hi) {
  if (is_nan(e.ar) || is_nan(e.al)) {
    lo = 1, hi = 0;
    return;
  }
  lo = static_cast<int>(floor_(e.al));
  hi = static_cast<int>(-floor_(-e.ar)) - 1;  // ceil(ar) - 1
}

// clamp(v, 0, 1) with NaN -> 0: PTX's .sat (FADD.SAT), written so the host computes the same.
template <class A>
TALKCONV_HOST_DEVICE inline A sat01(A v) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<A, float>::value) return __saturatef(v);  // folds into the FADD before it
#endif
  return v > A(0) ? (v < A(1) ? v : A(1)) : A(0);
}

// w_u(tau) with d = tau - u (a float integer): the one formula of the banded products.
template <class A>
TALKCONV_HOST_DEVICE inline A band_weight(const band_tap<A>& e, A d) {
  return sat01<A>(e.ar - d) - sat01<A>(e.al - d);
}

// The stage: token j (0 <= j < padded_rows) of the segment, channel vector v (8 channels, 16 bytes) of
// the block's 64 at byte j * 128 + 16 (v ^ (j % 8)): the 8 rows of an ldmatrix matrix (8 consecutive
// tokens, one vector) lie in 8 distinct 16-byte bank groups.
TALKCONV_HOST_DEVICE constexpr unsigned band_stage_byte(int j, int v) {
  return unsigned(j) * 128u + 16u * unsigned(v ^ (j & 7));
}

// The a fragment of the weights (mma_m16n8k16: register i of lane l holds row g + 8 (i % 2), tokens k and
// k + 1 at k = 2 q + 8 (i / 2); g = l / 4, q = l % 4): the 4 tokens a lane reads, relative to the k step's
// first token, are band_a_token(l, 0..3) = 2 q, 2 q + 1, 2 q + 8, 2 q + 9; its rows g and g + 8.
TALKCONV_HOST_DEVICE constexpr int band_a_token(int lane, int t) { return 2 * (lane % 4) + (t % 2) + 8 * (t / 2); }

// dx: the lane's 8 weights of one k step, w[t][r] = weight of token j0 + band_a_token(q, t) at row rr0 + 8 r (rows
// and tokens relative to the stage's first token), tap_at(j) giving token j's band_tap; register i of the a
// fragment holds band_reg_weight(w, i, 0) and (, 1): row g + 8 (i % 2), tokens 2q + 8 (i / 2) and + 1. The
// kernel and the CPU emulation both build their fragments through these.
template <class A, class TapAt>
TALKCONV_HOST_DEVICE inline void band_lane_weights(const TapAt& tap_at, int j0, int q, A rr0, A (&w)[4][2]) {
  for (int t = 0; t < 4; ++t) {
    const int j = j0 + band_a_token(q, t);
    const band_tap<A> e = tap_at(j);
    const A d = rr0 - A(j);
    w[t][0] = band_weight<A>(e, d);
    w[t][1] = band_weight<A>(e, d + A(8));
  }
}
template <class A>
TALKCONV_HOST_DEVICE constexpr A band_reg_weight(const A (&w)[4][2], int i, int h) {
  return w[2 * (i / 2) + h][i % 2];
}

// y: the same weights read by rows (y[u] = (1/K) sum_tau w_u(tau) x[tau]). The lane's rows g, g + 8 have the
// taps row0, row1 (each relative to its own row); the k step's tokens are base + band_a_token(q, t) with base
// relative to row g; w[t][r] as band_lane_weights', so band_reg_weight assembles the same a fragments.
template <class A>
TALKCONV_HOST_DEVICE inline void band_lane_weights_rows(const band_tap<A>& row0, const band_tap<A>& row1, A base, int q,
                                                        A (&w)[4][2]) {
  const band_tap<A> r1{row1.ar + A(8), row1.al + A(8)};  // relative to row g
  for (int t = 0; t < 4; ++t) {
    const A d = base + A(band_a_token(q, t));
    w[t][0] = band_weight<A>(row0, d);
    w[t][1] = band_weight<A>(r1, d);
  }
}

// The fused offset path (dX += dz W on TF32 m16n8k8, dz split hi + lo, 16-bit W exact in TF32): within a
// k step of 8 offsets, the fragment index k (mma_m16n8k8::a_k / b_k) stands for offset band_k_perm(k), so
// a lane's two a elements of a row (k = q, q + 4) are the adjacent offsets 2 q, 2 q + 1 and so are its two
// b elements. Both operands use the same order: the product is the same sum.
TALKCONV_HOST_DEVICE constexpr int band_k_perm(int k) { return 2 * (k % 4) + k / 4; }

// W's b fragments staged once per block: step s (8 offsets), 8-channel tile n, lane l: two floats (the
// offsets 8 s + 2 q, + 1 at channel 8 n + g) at float index band_w_index(s, n, l) (one conflict-free
// 8-byte read per fragment).
TALKCONV_HOST_DEVICE constexpr int band_w_index(int s, int n, int lane) { return ((s * 8 + n) * 32 + lane) * 2; }
// Item i of the W staging loop: step s, tile n, lane l; it writes channel band_w_channel(i) (of the block's)
// and offsets band_w_offset(i), + 1 at band_w_index(s, n, l).
struct band_w_item {
  int s, n, lane;
};
TALKCONV_HOST_DEVICE constexpr band_w_item band_w_item_of(int i) { return band_w_item{i / 256, (i / 32) % 8, i % 32}; }
TALKCONV_HOST_DEVICE constexpr int band_w_channel(const band_w_item& it) { return 8 * it.n + it.lane / 4; }
TALKCONV_HOST_DEVICE constexpr int band_w_offset(const band_w_item& it) { return 8 * it.s + 2 * (it.lane % 4); }
// The W staging by 16-byte rows (W 16-byte aligned; V = 16 / sizeof(W's type) channels: 8 for 16-bit W, 4 for
// float): item i = (step s, offset pair q, tile n, first channel g0 of the tile's 8) reads channels 8 n + g0 ..
// 8 n + g0 + V - 1 of the offsets 8 s + 2 q and 8 s + 2 q + 1 (16 bytes of each) and writes the V lanes l = 4 g + q,
// g = g0 .. g0 + V - 1, of fragment (s, n): the same floats as items (s, n, 4 g + q) of band_w_item_of, 32 * 8 / V
// per step.
struct band_w_vec_item {
  int s, q, n, g0;
};
template <int V>
TALKCONV_HOST_DEVICE constexpr band_w_vec_item band_w_vec_item_of(int i) {
  static_assert(V == 4 || V == 8, "16 bytes of 16-bit or float W");
  return band_w_vec_item{i / (32 * 8 / V), i % 4, (i / (4 * 8 / V)) % 8, V * ((i / 4) % (8 / V))};
}
// The a element e (mma_m16n8k8) of lane q's dz fragment in step s: row g + 8 (e % 2), offset band_dz_offset.
TALKCONV_HOST_DEVICE constexpr int band_dz_offset(int s, int q, int e) { return 8 * s + 2 * q + e / 2; }

// ---- float x: the banded dx on TF32 tensor cores (agent_window_input_grad_band_tf32.cuh) ----
// mma.sync m16n8k8 with TF32 operands, 3xTF32 (weights and dY split hi + lo, the products hi hi, hi lo, lo hi:
// within 2^-20 |w dy| each), k steps of 8 tokens. The fragment index k stands for token band_k_perm(k) of the
// step (as the fused offset path's offsets), so lane (g, q)'s a elements e are rows g + 8 (e % 2) at token
// band_tf32_a_token(q, e) = 2 q + e / 2 and its b elements e = 0, 1 the tokens 2 q + e at channel g of an
// 8-channel tile: two adjacent tokens each, one 16-byte table read of their taps, one 16-byte stage read (hi
// and lo) per tile. Windows up to dx_band_max_k_tf32 (the band's cost per element is about twice the 16-bit
// kernels' per token; past it the event kernel costs less).
constexpr index_t dx_band_max_k_tf32 = 127;
// Rows a stage keeps past its segment (zero): a warp's last k step reads at most 7 tokens past its band.
constexpr int band_tf32_pad = 8;
TALKCONV_HOST_DEVICE constexpr int band_tf32_a_token(int q, int e) { return 2 * q + e / 2; }

// The float stage: tokens in pairs (2 p, 2 p + 1), pair p in 256 words (64 channels x 16 bytes): channel c at
// words 4 band_tf32_slot(c, p) + 2 piece + token % 2 (piece 0: hi, 1: lo), slot = c XOR f(p % 8) with f(p) =
// 2 (p % 4) + (p / 4) % 2 < 8, so a channel stays in its 8-channel tile. A lane's b operands of a tile (tokens
// 2 q, 2 q + 1 of channel g, hi and lo) are one 16-byte read: the 8 lanes of a quarter-warp (g = 2 i, 2 i + 1 x
// 4 consecutive pairs, whose f / 2 differ) read 8 distinct 16-byte bank groups, and so do the staging's 8 lanes
// of one channel in 8 consecutive pairs (whose f differ).
TALKCONV_HOST_DEVICE constexpr int band_tf32_slot(int c, int p) { return c ^ (2 * (p % 4) + (p / 4) % 2); }
TALKCONV_HOST_DEVICE constexpr unsigned band_tf32_stage_word(int j, int c, int piece) {
  return unsigned(j / 2) * 256u + 4u * unsigned(band_tf32_slot(c, j / 2)) + 2u * unsigned(piece) + unsigned(j % 2);
}
constexpr unsigned band_tf32_row_bytes = 512;  // 64 channels x 2 pieces x 4 bytes per token
// The staging's thread mapping (agent_window_input_grad_band_tf32.cuh, 256 threads): thread t takes channels
// 4 quad .. 4 quad + 3 of token pairs pair, pair + 16, ... (pair % 8 and so each channel's slot stay): lanes
// t % 8 on 8 consecutive pairs, so a quarter-warp's 16-byte stores of one channel hit 8 distinct bank groups.
struct band_tf32_item {
  int pair, quad;
};
TALKCONV_HOST_DEVICE constexpr band_tf32_item band_tf32_stage_item(int t) {
  return band_tf32_item{t % 8 + 8 * (t / 128), (t / 8) % 16};
}
// Lane (g, q)'s operands at the k step from token j0 (even): tile n's at word band_tf32_lane_word(j0, q, g) + 32 n
// (hi of tokens 2 q, 2 q + 1, then lo). The k step 8 tokens on (pair + 4) flips the XOR's low bit: the kernel
// keeps two pointers, for even and odd steps, each 2048 words per two steps.
TALKCONV_HOST_DEVICE constexpr int band_tf32_lane_word(int j0, int q, int g) {
  return (j0 / 2 + q) * 256 + 4 * band_tf32_slot(g, j0 / 2 + q);
}

// The lane's 4 a elements of one k step: e0, e1 the taps of tokens j0 + 2 q and j0 + 2 q + 1 (j0 even, relative
// to the stage), d = rr0 - (j0 + 2 q) with rr0 the lane's first row g relative to the stage (an exact small
// integer; the kernel steps it by -8). w[e]: row rr0 + 8 (e % 2), token j0 + band_tf32_a_token(q, e).
template <class A>
TALKCONV_HOST_DEVICE inline void band_tf32_lane_weights(const band_tap<A>& e0, const band_tap<A>& e1, A d, A (&w)[4]) {
  w[0] = band_weight<A>(e0, d);
  w[1] = band_weight<A>(e0, d + A(8));
  w[2] = band_weight<A>(e1, d - A(1));
  w[3] = band_weight<A>(e1, d + A(7));
}

// The float forward (agent_window_forward_band_tf32.cuh): the same a elements read by rows. row0, row1: the taps of
// the lane's rows g and g + 8, each relative to its own row; d = the token j0 + 2 q relative to row g (an exact
// small integer; the kernel steps it by +8). w[e]: row g + 8 (e % 2), token j0 + band_tf32_a_token(q, e), each
// row's distance exact (no shifted taps).
template <class A>
TALKCONV_HOST_DEVICE inline void band_tf32_lane_weights_rows(const band_tap<A>& row0, const band_tap<A>& row1, A d,
                                                             A (&w)[4]) {
  w[0] = band_weight<A>(row0, d);
  w[1] = band_weight<A>(row1, d - A(8));
  w[2] = band_weight<A>(row0, d + A(1));
  w[3] = band_weight<A>(row1, d - A(7));
}
// Widest window the float forward takes as a banded product: its cost per element grows by ~1.9 per 8 tokens
// from ~16 (BUDGET.md), the vector-tile forward's is ~35 at any K (measured at K = 33): even near K = 63.
constexpr index_t fwd_band_max_k_tf32 = 63;

// The fused offset path's W b fragments for float W: step s, tile n, lane l at float band_tf32_w_index(s, n, l):
// hi of offsets 8 s + 2 q, + 1 (channel 8 n + g), then their lo (one 16-byte read per fragment).
TALKCONV_HOST_DEVICE constexpr int band_tf32_w_index(int s, int n, int lane) { return ((s * 8 + n) * 32 + lane) * 4; }

}  // namespace detail
}  // namespace talkconv
