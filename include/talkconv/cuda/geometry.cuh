// Flat problem descriptors every CUDA kernel takes by value (FlashAttention-style): sequence geometry
// and the host's choice of 32- or 64-bit indexing.
#pragma once

#include "talkconv/cuda/cuda_traits.hpp"
#include "talkconv/detail/math.hpp"
#include "talkconv/params.hpp"
#include "talkconv/traits.hpp"

#include <climits>
#include <cstdint>
#include <limits>

namespace talkconv {
namespace cuda {
namespace detail {

// Sequence geometry: sizes, element strides of x (width C) and of the offsets (width P), lengths.
struct seq_geom {
  index_t T = 0, B = 0, C = 0, P = 0;
  index_t xt = 0, xb = 0;            // x, y, dx, dy
  index_t ot = 0, ob = 0;            // offsets and their gradients
  const index_t* lengths = nullptr;  // device memory, B entries, or null: every length is T
  int lay = 0;                       // layout::tbc = 0, btc = 1

  // Valid length of sequence b, clamped to [0, T] (device lengths cannot be checked on the host).
  TALKCONV_HOST_DEVICE index_t length(index_t b) const {
    if (lengths == nullptr) return T;
    const index_t n = lengths[b];
    return n < 0 ? 0 : (n > T ? T : n);
  }
  // Token (t, b) of memory row r: rows of width C and of width P come in the same order.
  TALKCONV_HOST_DEVICE void token_of(index_t r, index_t& t, index_t& b) const {
    if (lay == 0) {
      t = r / B;
      b = r - t * B;
    } else {
      b = r / T;
      t = r - b * T;
    }
  }
};

inline seq_geom make_geom(const seq_shape& s, index_t P, const index_t* lengths) {
  seq_geom g;
  g.T = s.T;
  g.B = s.B;
  g.C = s.C;
  g.P = P;
  const seq_strides sx = s.strides(s.C), so = s.strides(P);
  g.xt = sx.t;
  g.xb = sx.b;
  g.ot = so.t;
  g.ob = so.b;
  g.lengths = lengths;
  g.lay = static_cast<int>(s.lay);
  return g;
}

// 32-bit indexing when every element offset of the problem fits, else 64-bit (the kernels are
// templates on the index type; the dispatcher picks one). The weight [P, C] is indexed with it too
// (projection, offset path of dx): P * C must fit as well as the activations.
inline bool fits_int32(const seq_shape& s, index_t P) {
  constexpr index_t lim = std::numeric_limits<std::int32_t>::max() / 2;
  return s.T * s.B * s.C < lim && s.T * s.B * P < lim && s.T < lim && P <= lim / s.C;
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
