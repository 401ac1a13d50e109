// Flat problem descriptors every CUDA kernel takes by value (FlashAttention-style): sequence geometry, the
// host's choice of 32- or 64-bit indexing, and the window kernels' channel plan (window_geom).
#pragma once

#include "talkconv/cuda/cuda_traits.hpp"
#include "talkconv/cuda/policy.cuh"
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

// The window and the channel plan of the window kernels. A block's channels never straddle a head
// boundary in a way that needs a cross-block sum, except when a head is wider than a block: then the
// head is split into `subs` blocks and their partial head sums are combined in a fixed order.
struct window_geom {
  index_t H = 1, R = 1, L = 0, M = 0;
  int heads_per_block = 1;  // R <= lanes: whole heads per block
  int subs = 1;             // R > lanes: blocks per head
  int blocks = 1;           // channel blocks (grid y)

  static window_geom make(const window_params& w, index_t C) {
    window_geom g;
    g.H = w.heads;
    g.R = C / w.heads;
    g.L = w.max_left;
    g.M = w.max_right;
    constexpr index_t lanes = window_traits::lanes;
    // Counts are computed in 64 bits and saturated to INT_MAX (never truncated), so window_grid's
    // limit check sees a huge channel plan as huge. subs * H <= C cannot overflow.
    auto sat = [](index_t v) { return static_cast<int>(v < INT_MAX ? v : INT_MAX); };
    if (g.R <= lanes) {
      g.heads_per_block = static_cast<int>(lanes / g.R);
      g.subs = 1;
      g.blocks = sat((g.H + g.heads_per_block - 1) / g.heads_per_block);
    } else {
      g.heads_per_block = 1;
      const index_t subs = (g.R + lanes - 1) / lanes;
      g.subs = sat(subs);
      g.blocks = sat(g.H * subs);
    }
    return g;
  }

  // The heads [h_first, h_first + nh) that channel block k meets, without a division by R (the same
  // plan as block_channels: whole heads per block, or one head split over `subs` blocks).
  TALKCONV_HOST_DEVICE void block_heads(int k, index_t& h_first, int& nh) const {
    if (subs == 1) {
      h_first = index_t(k) * heads_per_block;
      nh = static_cast<int>(H - h_first < heads_per_block ? H - h_first : heads_per_block);
    } else {
      h_first = k / subs;
      nh = 1;
    }
  }
  // Head of channel c0 + x of block k (0 <= x < the block's channels), relative to its h_first.
  TALKCONV_HOST_DEVICE int head_in_block(int x) const { return subs == 1 ? x / static_cast<int>(R) : 0; }

  // Channels [c0, c0 + cn) of channel block k, and which split of its head it is (0 unless subs > 1).
  TALKCONV_HOST_DEVICE void block_channels(int k, index_t& c0, int& cn, int& sub) const {
    if (subs == 1) {
      const index_t width = heads_per_block * R;
      c0 = k * width;
      const index_t end = c0 + width < H * R ? c0 + width : H * R;
      cn = static_cast<int>(end - c0);
      sub = 0;
    } else {
      const index_t h = k / subs;
      sub = k - static_cast<int>(h * subs);
      c0 = h * R + index_t(sub) * window_traits::lanes;
      const index_t rest = R - index_t(sub) * window_traits::lanes;
      cn = static_cast<int>(rest < window_traits::lanes ? rest : window_traits::lanes);
    }
  }
};

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
