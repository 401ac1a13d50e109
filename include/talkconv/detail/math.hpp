// SPEC's per-element math, written once for the host and the device: sigmoid, window bounds,
// interpolation taps, and what the forward and backward do with them. No Eigen, no CUDA runtime.
#pragma once

#include "talkconv/config.hpp"

#include <cmath>

namespace talkconv {
namespace detail {

// ---- scalar helpers that resolve to the right function on each side -------------------------------

template <class A>
TALKCONV_HOST_DEVICE inline A floor_(A v) {
  using std::floor;
  return floor(v);
}
template <class A>
TALKCONV_HOST_DEVICE inline A exp_(A v) {
  using std::exp;
  return exp(v);
}
#if defined(__CUDA_ARCH__)
template <>
TALKCONV_HOST_DEVICE inline float floor_<float>(float v) { return ::floorf(v); }
template <>
TALKCONV_HOST_DEVICE inline double floor_<double>(double v) { return ::floor(v); }
template <>
TALKCONV_HOST_DEVICE inline float exp_<float>(float v) { return ::expf(v); }
template <>
TALKCONV_HOST_DEVICE inline double exp_<double>(double v) { return ::exp(v); }
#endif

template <class A>
TALKCONV_HOST_DEVICE inline bool is_nan(A v) {
  return !(v == v);
}

// SPEC step 1: o = sigmoid(z). Saturates cleanly to 0 and 1; NaN stays NaN.
template <class A>
TALKCONV_HOST_DEVICE inline A sigmoid(A z) {
  return A(1) / (A(1) + exp_(-z));
}

// d sigmoid / dz expressed through its output (SPEC backward: o_pre (1 - o_pre)).
template <class A>
TALKCONV_HOST_DEVICE inline A sigmoid_grad(A o_pre) {
  return o_pre * (A(1) - o_pre);
}

// ---- SPEC steps 3-4: bounds and interpolation taps -----------------------------------------------------

// The index type I of the tap functions is never deduced from the arguments (index_t unless named, as the
// CUDA tiles do with int where every index, L and M fit: the same formula).
template <class I>
struct index_arg {
  using type = I;
};

// A real bound a = lo + frac with hi = ceil(a) (hi == lo when frac == 0).
template <class A, class I = index_t>
struct edge {
  I lo;
  I hi;
  A frac;
};

// The bound a = clamp(t + shift, 0, n - 1), split into integer and fractional parts.
//
// The shift (-o_l * L or +o_r * M) is split before it is added to t, so the fractional part keeps the
// precision of the offset even where t itself is not representable in A (t > 2^24 for float).
// A NaN shift gives frac = NaN with both indices at t: the NaN reaches this token's head through the
// interpolation weights and no memory outside the window is ever addressed.
template <class A, class I = index_t>
TALKCONV_HOST_DEVICE inline edge<A, I> make_edge(typename index_arg<I>::type t, A shift, typename index_arg<I>::type n) {
  if (is_nan(shift)) return edge<A, I>{t, t, shift};
  if (shift <= A(-t)) return edge<A, I>{0, 0, A(0)};
  if (shift >= A(n - 1 - t)) return edge<A, I>{n - 1, n - 1, A(0)};
  const A fl = floor_(shift);
  const I lo = t + static_cast<I>(fl);
  const A frac = shift - fl;
  return edge<A, I>{lo, frac > A(0) ? lo + 1 : lo, frac};
}

// Where token t reads the scaled prefix sums S (S[-1] = 0), SPEC's I(a_r) - I(a_l - 1):
//
//   y = (S[i0] - S[i2]) + fr * (S[i1] - S[i0]) - fl * (S[i3] - S[i2])
//
// with i0 = floor(a_r), i1 = ceil(a_r), i2 = floor(a_l) - 1, i3 = ceil(a_l) - 1, fr = frac(a_r),
// fl = frac(a_l). Differences of neighbouring sums come first, so rounding scales with the window,
// not with the magnitude of S. Every index lies in [-1, n - 1].
template <class A, class I = index_t>
struct window_taps {
  I i0, i1, i2, i3;
  A fr, fl;
};

// Taps of token t (t < n) from its offsets (after dropout). Causal: a_r = t, o_right is ignored.
template <class A, class I = index_t>
TALKCONV_HOST_DEVICE inline window_taps<A, I> make_taps(typename index_arg<I>::type t, A o_left, A o_right,
                                                        typename index_arg<I>::type L, typename index_arg<I>::type M,
                                                        typename index_arg<I>::type n, bool causal) {
  const edge<A, I> l = make_edge<A, I>(t, -(o_left * A(L)), n);
  const edge<A, I> r = causal ? edge<A, I>{t, t, A(0)} : make_edge<A, I>(t, o_right * A(M), n);
  return window_taps<A, I>{r.lo, r.hi, l.lo - 1, l.hi - 1, r.frac, l.frac};
}

// Lowest and highest S index a token's taps touch (i2 <= i3 <= i0 <= i1 for offsets >= 0).
template <class A, class I>
TALKCONV_HOST_DEVICE inline I taps_min(const window_taps<A, I>& k) {
  I m = k.i2 < k.i3 ? k.i2 : k.i3;
  m = m < k.i0 ? m : k.i0;
  return m < k.i1 ? m : k.i1;
}
template <class A, class I>
TALKCONV_HOST_DEVICE inline I taps_max(const window_taps<A, I>& k) {
  I m = k.i2 > k.i3 ? k.i2 : k.i3;
  m = m > k.i0 ? m : k.i0;
  return m > k.i1 ? m : k.i1;
}

// Forward, one channel, from the three differences of sums the taps name: the whole-token part
// d_main = S[i0] - S[i2], and the edge parts d_right = S[i1] - S[i0], d_left = S[i3] - S[i2]. Paths that
// sum x directly instead of reading S (the CUDA fallback for windows beyond the loaded halo) use it.
template <class A>
TALKCONV_HOST_DEVICE inline A window_value_diff(A fr, A fl, A d_main, A d_right, A d_left) {
  return d_main + fr * d_right - fl * d_left;
}
template <class A>
TALKCONV_HOST_DEVICE inline A window_value_diff(const window_taps<A>& k, A d_main, A d_right, A d_left) {
  return window_value_diff<A>(k.fr, k.fl, d_main, d_right, d_left);
}

// Forward, one channel: the normalized window sum from the four sums the taps name (fractions fr, fl).
template <class A>
TALKCONV_HOST_DEVICE inline A window_value_frac(A fr, A fl, A s0, A s1, A s2, A s3) {
  return window_value_diff<A>(fr, fl, s0 - s2, s1 - s0, s3 - s2);
}
template <class A>
TALKCONV_HOST_DEVICE inline A window_value(const window_taps<A>& k, A s0, A s1, A s2, A s3) {
  return window_value_frac<A>(k.fr, k.fl, s0, s1, s2, s3);
}

// Backward to the prefix sums: y depends on S[i_j] with these weights (they sum to zero).
// dx[tau] = sum over taps with i_j >= tau of w_j * dy: a suffix sum of the scattered weights.
template <class A>
struct tap_weights {
  A w0, w1, w2, w3;
};
template <class A, class I>
TALKCONV_HOST_DEVICE inline tap_weights<A> make_tap_weights(const window_taps<A, I>& k) {
  return tap_weights<A>{A(1) - k.fr, k.fr, k.fl - A(1), -k.fl};
}

// Backward to the offsets, one channel, before the factor L (left) or M (right) and the head sum:
//   dy/do_l = L * (S[ceil(a_l) - 1] - S[floor(a_l) - 1]),  dy/do_r = M * (S[ceil(a_r)] - S[floor(a_r)]).
// Zero where the bound is an integer or clamped, since then the two indices coincide.
template <class A>
TALKCONV_HOST_DEVICE inline A left_slope(A s2, A s3) {
  return s3 - s2;
}
template <class A>
TALKCONV_HOST_DEVICE inline A right_slope(A s0, A s1) {
  return s1 - s0;
}

// The same slopes straight from x: a fractional bound has i3 = i2 + 1 (left) or i1 = i0 + 1 (right), and
// S[i + 1] - S[i] = x[i + 1] / K; an integer or clamped bound has i3 == i2 (i1 == i0) and slope 0. So
//   dy/do_l = (L / K) x[left_slope_row],  dy/do_r = (M / K) x[right_slope_row],
// or 0 where the row is -1: two rows of x per token, whatever the window's length (every offset-gradient
// path, CPU and CUDA, reads them so; the prefix sums above give the same values up to rounding).
template <class A, class I>
TALKCONV_HOST_DEVICE inline I left_slope_row(const window_taps<A, I>& k) {
  return k.i3 != k.i2 ? k.i3 : I(-1);
}
template <class A, class I>
TALKCONV_HOST_DEVICE inline I right_slope_row(const window_taps<A, I>& k) {
  return k.i1 != k.i0 ? k.i1 : I(-1);
}

// Offsets to parameters: dz = do * (m / (1 - p)) * o_pre * (1 - o_pre), with keep_scale = m / (1 - p).
template <class A>
TALKCONV_HOST_DEVICE inline A offset_pre_grad(A d_offset, A keep_scale, A o_pre) {
  return d_offset * keep_scale * sigmoid_grad(o_pre);
}

// dL/do of a left (j < H) or right offset from its head's sum of dy * slope / K: times L or M. The CPU tile,
// the CUDA combine and the CUDA offset-gradient kernel's in-block finish all scale here (the two CUDA ones
// then give the same bits).
template <class A, class I>
TALKCONV_HOST_DEVICE inline A offset_grad_of_sum(A head_sum, bool left, I L, I M) {
  return head_sum * A(left ? L : M);
}

// ---- head tying ------------------------------------------------------------------------------------------

// Head h ties channels [h * R, (h + 1) * R). Bidirectional offsets: left of head h in row h, right in H + h.
struct head_map {
  index_t heads;     // H
  index_t head_dim;  // R = C / H

  TALKCONV_HOST_DEVICE index_t head_of(index_t c) const { return c / head_dim; }
  TALKCONV_HOST_DEVICE index_t first_channel(index_t h) const { return h * head_dim; }
  TALKCONV_HOST_DEVICE index_t left_row(index_t h) const { return h; }
  TALKCONV_HOST_DEVICE index_t right_row(index_t h) const { return heads + h; }
};

}  // namespace detail
}  // namespace talkconv
