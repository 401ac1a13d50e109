// Conversions between stored rows and accumulator rows, many lanes at a time, for every CPU loop.
//
// Each is bitwise equal, element by element, to scalar_traits<T>::to_acc / from_acc (for Eigen::half
// and Eigen::bfloat16: Eigen's own conversions), so a loop may use either and get the same bits:
//   bfloat16 -> float  a 16-bit shift (exact);
//   float -> bfloat16  round to nearest even on the bit pattern, NaN to a quiet NaN of the same sign
//                      (0x7FC0 / 0xFFC0), as Eigen's float_to_bfloat16_rtne: AVX2 integer ops where the
//                      compiler targets AVX2, else the same steps on integers in plain C++;
//   half <-> float     F16C (vcvtph2ps / vcvtps2ph, round to nearest even, as Eigen's scalar code rounds)
//                      where the compiler targets it and AVX2 (__F16C__, __AVX2__, e.g. -march=native),
//                      with NaN lanes made as Eigen makes them: widened with the payload as is (vcvtph2ps
//                      would quiet a signaling NaN), rounded to 0x7e00 with the sign (vcvtps2ph would
//                      keep payload bits). Elsewhere Eigen's scalar conversions.
// Other types go through their scalar_traits, element by element.
#pragma once

#include "talkconv/eigen_traits.hpp"
#include "talkconv/traits.hpp"

#include <cstdint>
#include <climits>
#include <cstring>
#include <type_traits>

#if defined(__AVX2__)
#include <immintrin.h>
#define TALKCONV_CPU_AVX2 1
#else
#define TALKCONV_CPU_AVX2 0
#endif
#if defined(__F16C__) && defined(__AVX2__)
#define TALKCONV_CPU_F16C 1
#else
#define TALKCONV_CPU_F16C 0
#endif

namespace talkconv {
namespace cpu {
namespace detail {

// Rows are converted through stack blocks of this many elements (a multiple of every vector width).
constexpr index_t convert_block = 64;
static_assert(convert_block % 8 == 0, "lane_dot keeps its 8 lanes across blocks");

// widen(in, n, out): out[j] = to_acc<T>(in[j]); narrow(in, n, out): out[j] = from_acc<T>(in[j]); j < n.
template <class T>
struct row_convert {
  using A = acc_t<T>;
  static void widen(const T* in, index_t n, A* out) {
    for (index_t j = 0; j < n; ++j) out[j] = to_acc<T>(in[j]);
  }
  static void narrow(const A* in, index_t n, T* out) {
    for (index_t j = 0; j < n; ++j) out[j] = from_acc<T>(in[j]);
  }
};

template <>
struct row_convert<Eigen::bfloat16> {
  static_assert(sizeof(Eigen::bfloat16) == 2 && sizeof(float) == 4, "bfloat16 is 16 bits, float 32");
  // n <= convert_block per call of the inner helpers; the public ones loop over blocks.
  static void widen_block(const Eigen::bfloat16* in, index_t n, float* out) {
    std::uint16_t h[convert_block];
    std::uint32_t u[convert_block];
    std::memcpy(h, in, static_cast<size_t>(n) * 2);
    for (index_t j = 0; j < n; ++j) u[j] = std::uint32_t(h[j]) << 16;
    std::memcpy(out, u, static_cast<size_t>(n) * 4);
  }
  static void narrow_block(const float* in, index_t n, Eigen::bfloat16* out) {
    std::uint32_t u[convert_block];
    std::uint16_t h[convert_block];
    std::memcpy(u, in, static_cast<size_t>(n) * 4);
    for (index_t j = 0; j < n; ++j) {
      const std::uint32_t v = u[j];
      const std::uint32_t rounded = (v + 0x7fffu + ((v >> 16) & 1u)) >> 16;
      const std::uint32_t nan = ((v >> 16) & 0x8000u) | 0x7fc0u;
      h[j] = static_cast<std::uint16_t>((v & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
    }
    std::memcpy(static_cast<void*>(out), h, static_cast<size_t>(n) * 2);  // bfloat16 is trivially copyable
  }
  static void widen(const Eigen::bfloat16* in, index_t n, float* out) {
    index_t j = 0;
#if TALKCONV_CPU_AVX2
    for (; j + 8 <= n; j += 8) {
      const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + j)));
      _mm256_storeu_ps(out + j, _mm256_castsi256_ps(_mm256_slli_epi32(u, 16)));
    }
#endif
    for (; j < n; j += convert_block)
      widen_block(in + j, n - j < convert_block ? n - j : convert_block, out + j);
  }
  static void narrow(const float* in, index_t n, Eigen::bfloat16* out) {
    index_t j = 0;
#if TALKCONV_CPU_AVX2
    // The same integer rounding as narrow_block, 8 lanes at a time, packed to 16 bits.
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff), sign = _mm256_set1_epi32(0x8000),
                  qnan = _mm256_set1_epi32(0x7fc0);
    auto round8 = [&](const float* p) {
      const __m256 v = _mm256_loadu_ps(p);
      const __m256i u = _mm256_castps_si256(v), hi = _mm256_srli_epi32(u, 16);
      const __m256i rounded =
          _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, bias), _mm256_and_si256(hi, one)), 16);
      const __m256i nan = _mm256_or_si256(_mm256_and_si256(hi, sign), qnan);
      return _mm256_blendv_epi8(rounded, nan, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    };
    for (; j + 16 <= n; j += 16) {
      const __m256i packed = _mm256_packus_epi32(round8(in + j), round8(in + j + 8));  // 128-bit lanes interleaved
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), _mm256_permute4x64_epi64(packed, 0xd8));
    }
    for (; j + 8 <= n; j += 8) {
      const __m256i r = round8(in + j);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j),
                       _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
    }
#endif
    for (; j < n; j += convert_block)
      narrow_block(in + j, n - j < convert_block ? n - j : convert_block, out + j);
  }
};

template <>
struct row_convert<Eigen::half> {
  static void widen(const Eigen::half* in, index_t n, float* out) {
    index_t j = 0;
#if TALKCONV_CPU_F16C
    const __m256i abs_mask = _mm256_set1_epi32(0x7fff), inf = _mm256_set1_epi32(0x7c00);
    for (; j + 8 <= n; j += 8) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + j));
      const __m256i u = _mm256_cvtepu16_epi32(h);
      // NaN lanes: sign, all-ones exponent, the 10 payload bits moved up, nothing set (Eigen's bits).
      const __m256i nan_bits = _mm256_or_si256(
          _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x8000)), 16),
                          _mm256_set1_epi32(0x7f800000)),
          _mm256_slli_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x3ff)), 13));
      const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
      const __m256i f = _mm256_castps_si256(_mm256_cvtph_ps(h));
      _mm256_storeu_ps(out + j, _mm256_castsi256_ps(_mm256_blendv_epi8(f, nan_bits, is_nan)));
    }
#endif
    for (; j < n; ++j) out[j] = static_cast<float>(in[j]);
  }
  static void narrow(const float* in, index_t n, Eigen::half* out) {
    index_t j = 0;
#if TALKCONV_CPU_F16C
    for (; j + 8 <= n; j += 8) {
      const __m256 v = _mm256_loadu_ps(in + j);
      __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
      const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
      if (_mm256_movemask_ps(nan) != 0) {  // NaN lanes: Eigen's 0x7e00 with the sign, whatever the payload
        const __m256i sign = _mm256_srli_epi32(_mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(INT32_MIN)), 16);
        const __m256i h32 = _mm256_blendv_epi8(_mm256_cvtepu16_epi32(h), _mm256_or_si256(sign, _mm256_set1_epi32(0x7e00)),
                                               _mm256_castps_si256(nan));
        h = _mm_packus_epi32(_mm256_castsi256_si128(h32), _mm256_extracti128_si256(h32, 1));
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), h);
    }
#endif
    for (; j < n; ++j) out[j] = Eigen::half(in[j]);
  }
};

template <class T>
constexpr bool stored_as_acc = std::is_same<T, acc_t<T>>::value;

// f(j, to_acc<T>(in[j])) for j = 0 .. n - 1 in order; values widened a block at a time.
template <class T, class F>
inline void for_each_acc(const T* in, index_t n, F&& f) {
  using A = acc_t<T>;
  if constexpr (stored_as_acc<T>) {
    for (index_t j = 0; j < n; ++j) f(j, in[j]);
  } else {
    A buf[convert_block];
    for (index_t j0 = 0; j0 < n; j0 += convert_block) {
      const index_t m = n - j0 < convert_block ? n - j0 : convert_block;
      row_convert<T>::widen(in + j0, m, buf);
      for (index_t j = 0; j < m; ++j) f(j0 + j, buf[j]);
    }
  }
}

// out[j] = from_acc<T>(value(j)) for j = 0 .. n - 1; values rounded a block at a time.
template <class T, class F>
inline void store_acc(T* out, index_t n, F&& value) {
  using A = acc_t<T>;
  if constexpr (stored_as_acc<T>) {
    for (index_t j = 0; j < n; ++j) out[j] = value(j);
  } else {
    A buf[convert_block];
    for (index_t j0 = 0; j0 < n; j0 += convert_block) {
      const index_t m = n - j0 < convert_block ? n - j0 : convert_block;
      for (index_t j = 0; j < m; ++j) buf[j] = value(j0 + j);
      row_convert<T>::narrow(buf, m, out + j0);
    }
  }
}

}  // namespace detail
}  // namespace cpu
}  // namespace talkconv
