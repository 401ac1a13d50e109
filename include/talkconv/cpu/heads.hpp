// Building block 3 (CPU): head tying. Channels of a head share one window; their gradients are summed.
#pragma once

#include "talkconv/cpu/convert.hpp"
#include "talkconv/cpu/parallel.hpp"
#include "talkconv/detail/math.hpp"
#include "talkconv/params.hpp"
#include "talkconv/traits.hpp"

#include <cmath>
#include <type_traits>

namespace talkconv {
namespace cpu {
namespace detail {

// c + a * b for the lanes below: one fused multiply-add where the compiler targets FMA (__FMA__), else a
// product and a sum, so the rounding is decided here, not by the compiler's contraction of each loop (which
// differed between lane_dot and lane_dot_rows at -march=native).
template <class A>
inline A lane_madd(A a, A b, A c) {
#if defined(__FMA__)
  if constexpr (std::is_same<A, float>::value || std::is_same<A, double>::value) return std::fma(a, b, c);
#endif
  return c + a * b;
}

// lane[(j) mod 8] = lane_madd(v[j], b_of(j0 + j), lane[j mod 8]) for j = 0 .. m8 - 1 (m8 a multiple of 8), in
// order: with AVX2 and FMA, one vector fused multiply-add per 8 floats (two per 8 doubles), the lanes kept in
// registers. (std::fma in a plain loop of 8 lanes is not vectorized by GCC 12: 32 scalar multiply-adds in
// the offsets' backward, window_bwd 47 -> 55-61 ms.)
template <class A, class F>
inline void lanes_madd(A* lane, const A* v, index_t j0, index_t m8, F&& b_of) {
#if TALKCONV_CPU_AVX2 && defined(__FMA__)
  if constexpr (std::is_same<A, float>::value) {
    __m256 acc = _mm256_loadu_ps(lane);
    for (index_t j = 0; j < m8; j += 8) {
      alignas(32) float bv[8];
      for (int l = 0; l < 8; ++l) bv[l] = b_of(j0 + j + l);
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(v + j), _mm256_load_ps(bv), acc);
    }
    _mm256_storeu_ps(lane, acc);
    return;
  } else if constexpr (std::is_same<A, double>::value) {
    __m256d lo = _mm256_loadu_pd(lane), hi = _mm256_loadu_pd(lane + 4);
    for (index_t j = 0; j < m8; j += 8) {
      alignas(32) double bv[8];
      for (int l = 0; l < 8; ++l) bv[l] = b_of(j0 + j + l);
      lo = _mm256_fmadd_pd(_mm256_loadu_pd(v + j), _mm256_load_pd(bv), lo);
      hi = _mm256_fmadd_pd(_mm256_loadu_pd(v + j + 4), _mm256_load_pd(bv + 4), hi);
    }
    _mm256_storeu_pd(lane, lo);
    _mm256_storeu_pd(lane + 4, hi);
    return;
  }
#endif
  for (index_t j = 0; j < m8; j += 8)
    for (int l = 0; l < 8; ++l) lane[l] = lane_madd<A>(v[j + l], b_of(j0 + j + l), lane[l]);
}

// The fixed tree that ends every lane pattern below: ((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7)).
template <class A>
inline A lane_sum(const A* l) {
  return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
}

// add(v, j0, m) over a's n values in order, as accumulators: a itself when it is stored as A, else widened
// into a block buffer convert_block values at a time (blocks are multiples of 8, so a lane pattern keeps
// its lanes and its order across blocks).
template <class TA, class Add>
inline void for_acc_blocks(const TA* a, index_t n, Add&& add) {
  if constexpr (stored_as_acc<TA>) {
    add(a, index_t(0), n);
  } else {
    acc_t<TA> buf[convert_block];
    for (index_t j0 = 0; j0 < n; j0 += convert_block) {
      const index_t m = n - j0 < convert_block ? n - j0 : convert_block;
      row_convert<TA>::widen(a + j0, m, buf);
      add(static_cast<const acc_t<TA>*>(buf), j0, m);
    }
  }
}

// sum_j a[j] * b[j] over n terms in a fixed pattern of 8 lanes: vectorizes, and the rounding depends
// only on n, never on alignment or thread count.
template <class TA, class A, class F>
inline A lane_dot(const TA* a, index_t n, F&& b_of) {
  A lane[8] = {A(0), A(0), A(0), A(0), A(0), A(0), A(0), A(0)};
  // Terms j0 + j, j < m, of values v (the stored values, widened or not): lane (j0 + j) mod 8.
  auto add = [&](const A* v, index_t j0, index_t m) {
    const index_t m8 = m / 8 * 8;
    lanes_madd<A>(lane, v, j0, m8, b_of);
    for (index_t j = m8; j < m; ++j) lane[j - m8] = lane_madd<A>(v[j], b_of(j0 + j), lane[j - m8]);
  };
  for_acc_blocks(a, n, add);
  return lane_sum(lane);
}

// Two dot products of the same a: *out1 = lane_dot(a, n, b1_of) and *out2 = lane_dot(a, n, b2_of), bit for
// bit, with a widened once per block (the offsets' backward: left and right slopes against one dy row); each
// product then reads the widened block from L1.
template <class TA, class A, class F1, class F2>
inline void lane_dot2(const TA* a, index_t n, F1&& b1_of, F2&& b2_of, A* out1, A* out2) {
  A l1[8], l2[8];
  for (int l = 0; l < 8; ++l) l1[l] = l2[l] = A(0);
  auto add = [&](const A* v, index_t j0, index_t m) {
    const index_t m8 = m / 8 * 8;
    lanes_madd<A>(l1, v, j0, m8, b1_of);
    lanes_madd<A>(l2, v, j0, m8, b2_of);
    for (index_t j = m8; j < m; ++j) {
      l1[j - m8] = lane_madd<A>(v[j], b1_of(j0 + j), l1[j - m8]);
      l2[j - m8] = lane_madd<A>(v[j], b2_of(j0 + j), l2[j - m8]);
    }
  };
  for_acc_blocks(a, n, add);
  *out1 = lane_sum(l1);
  *out2 = lane_sum(l2);
}

// out[r] = lane_dot(a + r * lda, n, b), bit for bit, for r < R: the R rows are summed together, so their
// R x 8 lanes are independent chains. lane_dot alone is one chain of dependent adds per vector of lanes and
// waits on the add's latency (bfloat16 decoder step, 32 x 1024 weights: 8 us of its 10). b: n values in A.
template <int R, class TA, class A>
inline void lane_dot_rows(const TA* a, index_t lda, index_t n, const A* b, A* out) {
  A lane[R][8];
  for (int r = 0; r < R; ++r)
    for (int l = 0; l < 8; ++l) lane[r][l] = A(0);
  // Terms j0 + j, j < m, of rows v[r] (in A), as lane_dot adds them.
  auto add = [&](const A* const* v, index_t j0, index_t m) {
    const A* bj = b + j0;
    index_t j = 0;
#if TALKCONV_CPU_AVX2 && defined(__FMA__)
    if constexpr (std::is_same<A, float>::value) {
      // Lane l of row r in element l of one 8-float register: the same fused multiply-adds, in the same order.
      __m256 acc[R];
      for (int r = 0; r < R; ++r) acc[r] = _mm256_loadu_ps(lane[r]);
      for (; j + 8 <= m; j += 8) {
        const __m256 bv = _mm256_loadu_ps(bj + j);
        for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(v[r] + j), bv, acc[r]);
      }
      for (int r = 0; r < R; ++r) _mm256_storeu_ps(lane[r], acc[r]);
    }
#endif
    for (; j + 8 <= m; j += 8)
      for (int r = 0; r < R; ++r)
        for (int l = 0; l < 8; ++l) lane[r][l] = lane_madd<A>(v[r][j + l], bj[j + l], lane[r][l]);
    for (int l = 0; j < m; ++j, ++l)
      for (int r = 0; r < R; ++r) lane[r][l] = lane_madd<A>(v[r][j], bj[j], lane[r][l]);
  };
#if TALKCONV_CPU_AVX2 && defined(__FMA__)
  if constexpr (std::is_same<TA, Eigen::bfloat16>::value && std::is_same<A, float>::value) {
    // bfloat16 widened in registers (a 16-bit shift, exact): a block buffer would cost a store and a load
    // per element, and the stores were half of the step's time.
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    index_t j = 0;
    for (; j + 8 <= n; j += 8) {
      const __m256 bv = _mm256_loadu_ps(b + j);
      for (int r = 0; r < R; ++r) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + r * lda + j));
        const __m256 w = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        acc[r] = _mm256_fmadd_ps(w, bv, acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(lane[r], acc[r]);
    for (int l = 0; j < n; ++j, ++l)
      for (int r = 0; r < R; ++r) lane[r][l] = lane_madd<A>(to_acc<TA>(a[r * lda + j]), b[j], lane[r][l]);
  } else
#endif
  if constexpr (stored_as_acc<TA>) {
    const A* v[R];
    for (int r = 0; r < R; ++r) v[r] = a + r * lda;
    add(v, 0, n);
  } else {  // widened a block at a time (blocks are multiples of 8: the same lanes, the same order)
    A buf[R][convert_block];
    const A* v[R];
    for (int r = 0; r < R; ++r) v[r] = buf[r];
    for (index_t j0 = 0; j0 < n; j0 += convert_block) {
      const index_t m = n - j0 < convert_block ? n - j0 : convert_block;
      for (int r = 0; r < R; ++r) row_convert<TA>::widen(a + r * lda + j0, m, buf[r]);
      add(v, j0, m);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = lane_sum(lane[r]);
}

}  // namespace detail

// The head map of a problem: H heads of R = C / H channels.
inline talkconv::detail::head_map make_head_map(const seq_shape& shape, const window_params& w) {
  talkconv::detail::validate_shape(shape);
  talkconv::detail::validate_window(w);
  talkconv::detail::validate_heads(shape, w);
  return talkconv::detail::head_map{w.heads, shape.C / w.heads};
}

// Per-head reduction of per-channel values: out[t, b, h] = sum_{c in head h} in[t, b, c].
// `in` has the layout of `shape` with width C, `out` the same layout with width H. Deterministic.
template <class A>
void head_sum(const seq_shape& shape, const window_params& w, const A* in, A* out) {
  const talkconv::detail::head_map hm = make_head_map(shape, w);
  talkconv::detail::validate_bytes(shape, w, sizeof(A), sizeof(A));
  talkconv::detail::require_pointer(in, "in");
  talkconv::detail::require_pointer(out, "out");
  const seq_strides si = shape.strides(shape.C), so = shape.strides(w.heads);
  detail::parallel_tasks(
      shape.B, shape.rows() * shape.C, [] { return 0; },
      [&](index_t b, int&) {
        for (index_t t = 0; t < shape.T; ++t) {
          const A* row = in + t * si.t + b * si.b;
          for (index_t h = 0; h < hm.heads; ++h)
            out[t * so.t + b * so.b + h] =
                detail::lane_dot<A, A>(row + hm.first_channel(h), hm.head_dim, [](index_t) { return A(1); });
        }
      });
}

}  // namespace cpu
}  // namespace talkconv
