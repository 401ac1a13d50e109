// Per-tile work of the window kernels: a time tile of one sequence and `lanes` channels. Forward and
// offset gradients load the tile's x with its data-dependent halo into shared memory and prefix-sum it
// there (local sums: error independent of T); dx scatters tap weights into a tile-local buffer and
// suffix-sums it. Windows that leave the loaded halo are summed straight from global memory.
#pragma once

#include "talkconv/cuda/kernel_traits.cuh"
#include "talkconv/detail/math.hpp"

#include <cub/block/block_reduce.cuh>

#include <climits>

namespace talkconv {
namespace cuda {
namespace detail {

using talkconv::detail::window_taps;

// Everything a window kernel reads; built on the host, passed by value.
template <class T>
struct window_args {
  using A = acc_t<T>;
  const T* x = nullptr;
  const A* offsets = nullptr;                 // after dropout, layout of x with width P
  T* y = nullptr;                             // forward output
  const T* dy = nullptr;                      // backward input
  T* dx = nullptr;                            // backward output
  A* partial = nullptr;                       // offset gradients: per-split head sums [subs][T * B * P], unscaled
  const A* dz = nullptr;                      // dx: the offset path W^T dz is added when dz is not null
  const T* weight = nullptr;                  // [P, C], with dz
  const unsigned long long* reach = nullptr;  // dx: {left, right} reach of every valid window (device)
  seq_geom g;
  window_geom w;
  int tile = 0;       // tokens per tile
  index_t tiles = 0;  // tiles per sequence (grid x = B * tiles)
  int cap_rows = 0;   // prefix-sum rows the shared buffer holds
};

struct min_op {
  template <class V>
  __device__ __forceinline__ V operator()(const V& a, const V& b) const {
    return b < a ? b : a;
  }
};
struct max_op {
  template <class V>
  __device__ __forceinline__ V operator()(const V& a, const V& b) const {
    return a < b ? b : a;
  }
};

// Which tile, sequence and channels this block owns.
struct tile_ctx {
  index_t b, t0, t1, n, tv1;  // tokens [t0, t1) of sequence b (valid length n), valid ones [t0, tv1)
  index_t c0;                 // channels [c0, c0 + cn)
  int cn, sub;                // sub: which split of a head wider than a block
  index_t h_first;            // heads [h_first, h_first + nh) meet the block's channels
  int nh;
  int lane, seg;  // this thread: channel c0 + lane, row segment seg
};

template <class T>
__device__ __forceinline__ tile_ctx make_ctx(const window_args<T>& a) {
  tile_ctx c;
  const index_t blk = blockIdx.x;
  c.b = blk / a.tiles;
  c.t0 = (blk - c.b * a.tiles) * a.tile;
  c.t1 = c.t0 + a.tile < a.g.T ? c.t0 + a.tile : a.g.T;
  c.n = a.g.length(c.b);
  c.tv1 = c.t1 < c.n ? c.t1 : c.n;
  if (c.tv1 < c.t0) c.tv1 = c.t0;
  a.w.block_channels(static_cast<int>(blockIdx.y), c.c0, c.cn, c.sub);
  c.h_first = c.c0 / a.w.R;
  c.nh = static_cast<int>((c.c0 + c.cn - 1) / a.w.R - c.h_first + 1);
  c.lane = static_cast<int>(threadIdx.x) % window_traits::lanes;
  c.seg = static_cast<int>(threadIdx.x) / window_traits::lanes;
  return c;
}

// Offsets (after dropout) of token (t, b).
template <class Idx, class T>
__device__ __forceinline__ const acc_t<T>* offset_row(const window_args<T>& a, index_t t, index_t b) {
  return a.offsets + (Idx(t) * Idx(a.g.ot) + Idx(b) * Idx(a.g.ob));
}

// SPEC steps 2-3 for head h of token t (t < n): the shared math of detail/math.hpp.
template <bool Causal, class A>
__device__ __forceinline__ window_taps<A> head_taps(const A* off, index_t t, index_t h, const window_geom& w,
                                                    index_t n) {
  return talkconv::detail::make_taps<A>(t, off[h], Causal ? A(0) : off[w.H + h], w.L, w.M, n, Causal);
}

// Lowest and highest S index read by the tile's valid tokens over the block's heads (block-wide).
// Also fills `cache` (when not null) with the taps of every (token, head) pair of the tile.
template <bool Causal, class Idx, class T>
__device__ void tile_span(const window_args<T>& a, const tile_ctx& c, tap_entry<acc_t<T>>* cache, index_t& lo,
                          index_t& hi) {
  using A = acc_t<T>;
  using reduce = cub::BlockReduce<long long, window_traits::threads>;
  __shared__ typename reduce::TempStorage tmp;
  __shared__ long long res[2];
  long long mn = LLONG_MAX, mx = LLONG_MIN;
  const index_t pairs = (c.tv1 - c.t0) * c.nh;
  for (index_t i = threadIdx.x; i < pairs; i += window_traits::threads) {
    const index_t t = c.t0 + i / c.nh, h = c.h_first + i % c.nh;
    const window_taps<A> k = head_taps<Causal>(offset_row<Idx>(a, t, c.b), t, h, a.w, c.n);
    if (cache)
      cache[i] = tap_entry<A>{static_cast<int>(k.i0 - c.t0),
                              static_cast<int>(k.i1 - c.t0),
                              static_cast<int>(k.i2 - c.t0),
                              static_cast<int>(k.i3 - c.t0),
                              k.fr,
                              k.fl};
    const long long kmin = talkconv::detail::taps_min(k), kmax = talkconv::detail::taps_max(k);
    mn = kmin < mn ? kmin : mn;
    mx = kmax > mx ? kmax : mx;
  }
  const long long rmin = reduce(tmp).Reduce(mn, min_op{});
  if (threadIdx.x == 0) res[0] = rmin;
  __syncthreads();
  const long long rmax = reduce(tmp).Reduce(mx, max_op{});
  if (threadIdx.x == 0) res[1] = rmax;
  __syncthreads();
  lo = res[0];
  hi = res[1];
}

// The S rows [wlo, whi] a tile keeps in shared memory: its whole span when it fits, else the tile
// itself and as much halo as fits, the right side getting at most half (tokens reaching past the kept
// rows take the direct path: only speed depends on this choice, never the result). Host-callable for
// the planning tests.
TALKCONV_HOST_DEVICE inline void choose_rows(index_t lo, index_t hi, index_t t0, index_t t1, int cap, index_t& wlo,
                                             index_t& whi) {
  if (hi - lo + 1 <= cap) {
    wlo = lo;
    whi = hi;
    return;
  }
  const index_t spare = cap - (t1 - t0) - 1 > 0 ? cap - (t1 - t0) - 1 : 0;
  const index_t right_need = hi - (t1 - 1) > 0 ? hi - (t1 - 1) : 0;
  index_t left = spare - (right_need < spare / 2 ? right_need : spare / 2);
  wlo = t0 - 1 - left > lo ? t0 - 1 - left : lo;
  whi = wlo + cap - 1 < hi ? wlo + cap - 1 : hi;
}

// Local prefix sums of x over rows (wlo, whi] of the block's channels into sm ([rows][lanes], row 0
// zero standing for S[wlo]). `xs` points at token 0, channel c0 of the sequence. Loads are 16-byte
// vectors when the address, the row stride and the block width allow (checked here, uniform per block).
template <class Idx, class T>
__device__ void load_prefix(const T* xs, index_t xt, index_t wlo, int rows, const tile_ctx& c, acc_t<T> inv_k,
                            acc_t<T>* sm, acc_t<T>* tot) {
  using A = acc_t<T>;
  constexpr int lanes = window_traits::lanes, segs = window_traits::segs, threads = window_traits::threads;
  constexpr int vec = 16 / static_cast<int>(sizeof(T));
  for (int i = threadIdx.x; i < lanes; i += threads) sm[i] = A(0);
  const int data_rows = rows - 1;
  const T* first = xs + Idx(wlo + 1) * Idx(xt);
  const bool vectorized =
      vec > 1 && c.cn % vec == 0 && xt % vec == 0 && reinterpret_cast<std::uintptr_t>(first) % 16 == 0;
  if (vectorized) {
    const int per_row = c.cn / vec;
    const int items = data_rows * per_row;
    for (int i = threadIdx.x; i < items; i += threads) {
      const int r = i / per_row, v = i - r * per_row;
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(first + Idx(r) * Idx(xt) + v * vec));
      T e[vec];
      memcpy(e, &raw, sizeof(raw));
      A* dst = sm + (r + 1) * lanes + v * vec;
#pragma unroll
      for (int j = 0; j < vec; ++j) dst[j] = to_acc<T>(e[j]);
    }
  } else {
    const int items = data_rows * lanes;
    for (int i = threadIdx.x; i < items; i += threads) {
      const int r = i / lanes, l = i - r * lanes;
      sm[(r + 1) * lanes + l] = l < c.cn ? to_acc<T>(first[Idx(r) * Idx(xt) + l]) : A(0);
    }
  }
  __syncthreads();
  // Each segment thread scans its rows, then adds the totals of the segments above it (fixed order).
  const int per_seg = (data_rows + segs - 1) / segs;
  const int r0 = 1 + c.seg * per_seg, r1 = r0 + per_seg < rows ? r0 + per_seg : rows;
  A run = A(0);
  if (c.lane < c.cn)
    for (int r = r0; r < r1; ++r) {
      run = run + inv_k * sm[r * lanes + c.lane];
      sm[r * lanes + c.lane] = run;
    }
  tot[c.seg * lanes + c.lane] = run;
  __syncthreads();
  if (c.lane < c.cn && c.seg > 0) {
    A carry = tot[c.lane];
    for (int s = 1; s < c.seg; ++s) carry += tot[s * lanes + c.lane];
    for (int r = r0; r < r1; ++r) sm[r * lanes + c.lane] += carry;
  }
  __syncthreads();
}

// Differences of S for a window beyond the loaded rows, summed from x (one channel, `xc` at token 0):
// d_main = S[i0] - S[i2], d_right = S[i1] - S[i0], d_left = S[i3] - S[i2]. Window-sized error.
template <class Idx, class T>
__device__ void direct_diffs(const T* xc, index_t xt, const window_taps<acc_t<T>>& k, acc_t<T> inv_k, acc_t<T>& d_main,
                             acc_t<T>& d_right, acc_t<T>& d_left) {
  using A = acc_t<T>;
  A s = A(0);
  for (index_t tau = k.i2 + 1; tau <= k.i0; ++tau) s += to_acc<T>(xc[Idx(tau) * Idx(xt)]);
  d_main = inv_k * s;
  d_right = k.i1 > k.i0 ? inv_k * to_acc<T>(xc[Idx(k.i1) * Idx(xt)]) : A(0);
  d_left = k.i3 > k.i2 ? inv_k * to_acc<T>(xc[Idx(k.i3) * Idx(xt)]) : A(0);
}

template <class A>
__device__ __forceinline__ A* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char talkconv_smem[];
  return reinterpret_cast<A*>(talkconv_smem);
}

// The tap cache of a tile, or null when too many heads meet the block (or T is too long for its
// 32-bit relative indices).
template <class A>
__device__ __forceinline__ tap_entry<A>* tap_cache(A* smem_end, const tile_ctx& c, index_t T) {
  return c.nh <= tap_cache_heads && T < INT_MAX / 2 ? reinterpret_cast<tap_entry<A>*>(smem_end) : nullptr;
}

// Taps of head h of valid token t: from the cache when there is one.
template <bool Causal, class Idx, class T>
__device__ __forceinline__ window_taps<acc_t<T>> tile_taps(const window_args<T>& a, const tile_ctx& c,
                                                           const tap_entry<acc_t<T>>* cache, index_t t, index_t h) {
  if (cache) {
    const tap_entry<acc_t<T>> e = cache[(t - c.t0) * c.nh + (h - c.h_first)];
    return window_taps<acc_t<T>>{c.t0 + e.d0, c.t0 + e.d1, c.t0 + e.d2, c.t0 + e.d3, e.fr, e.fl};
  }
  return head_taps<Causal>(offset_row<Idx>(a, t, c.b), t, h, a.w, c.n);
}

// Loads and scans the tile's rows; returns [wlo, whi] through the references. Block-uniform.
template <bool Causal, class Idx, class T>
__device__ void prepare_tile(const window_args<T>& a, const tile_ctx& c, acc_t<T> inv_k, acc_t<T>* sm, acc_t<T>* tot,
                             tap_entry<acc_t<T>>* cache, index_t& wlo, index_t& whi) {
  index_t lo = 0, hi = -1;
  tile_span<Causal, Idx>(a, c, cache, lo, hi);
  choose_rows(lo, hi, c.t0, c.t1, a.cap_rows, wlo, whi);
  const T* xs = a.x + (Idx(c.b) * Idx(a.g.xb) + Idx(c.c0));
  load_prefix<Idx>(xs, a.g.xt, wlo, static_cast<int>(whi - wlo + 1), c, inv_k, sm, tot);
}

// ---- forward ----------------------------------------------------------------------------------------

template <bool Causal, class Idx, class T>
__device__ void window_forward_tile(const window_args<T>& a) {
  using A = acc_t<T>;
  constexpr int lanes = window_traits::lanes, segs = window_traits::segs;
  const tile_ctx c = make_ctx(a);
  const A inv_k = A(1) / A(a.w.L + a.w.M + 1);
  A* sm = dynamic_smem<A>();
  A* tot = sm + std::size_t(a.cap_rows) * lanes;
  tap_entry<A>* cache = tap_cache(sm + window_smem<A>::accumulators(a.cap_rows, false), c, a.g.T);
  index_t wlo = 0, whi = -1;
  if (c.tv1 > c.t0) prepare_tile<Causal, Idx>(a, c, inv_k, sm, tot, cache, wlo, whi);
  if (c.lane >= c.cn) return;
  const index_t ch = c.c0 + c.lane, h = ch / a.w.R;
  const T* xc = a.x + (Idx(c.b) * Idx(a.g.xb) + Idx(ch));
  T* yc = a.y + (Idx(c.b) * Idx(a.g.xb) + Idx(ch));
  for (index_t t = c.t0 + c.seg; t < c.t1; t += segs) {
    A v = A(0);
    if (t < c.n) {
      const window_taps<A> k = tile_taps<Causal, Idx>(a, c, cache, t, h);
      if (talkconv::detail::taps_min(k) >= wlo && talkconv::detail::taps_max(k) <= whi) {
        const A* s = sm + c.lane;
        v = talkconv::detail::window_value<A>(k, s[(k.i0 - wlo) * lanes], s[(k.i1 - wlo) * lanes],
                                              s[(k.i2 - wlo) * lanes], s[(k.i3 - wlo) * lanes]);
      } else {
        A dm, dr, dl;
        direct_diffs<Idx>(xc, a.g.xt, k, inv_k, dm, dr, dl);
        v = talkconv::detail::window_value_diff<A>(k, dm, dr, dl);
      }
    }
    yc[Idx(t) * Idx(a.g.xt)] = from_acc<T>(v);
  }
}

// ---- backward to the offsets ------------------------------------------------------------------------
// partial[sub][t, b, p] = sum over the block's channels of head h of dy * slope (before the factor L or
// M): whole heads when a head fits in a block (subs == 1), else one split, combined later in order.

template <bool Causal, class Idx, class T>
__device__ void window_offsets_grad_tile(const window_args<T>& a) {
  using A = acc_t<T>;
  constexpr int lanes = window_traits::lanes, segs = window_traits::segs, threads = window_traits::threads;
  constexpr int batch = window_traits::grad_batch, pad = window_smem<A>::pad_batch;
  const tile_ctx c = make_ctx(a);
  const A inv_k = A(1) / A(a.w.L + a.w.M + 1);
  A* sm = dynamic_smem<A>();
  A* tot = sm + std::size_t(a.cap_rows) * lanes;
  A* pbuf = tot + segs * lanes;  // [side][lane][token in batch], stride pad
  tap_entry<A>* cache = tap_cache(sm + window_smem<A>::accumulators(a.cap_rows, true), c, a.g.T);
  index_t wlo = 0, whi = -1;
  if (c.tv1 > c.t0) prepare_tile<Causal, Idx>(a, c, inv_k, sm, tot, cache, wlo, whi);
  const index_t ch = c.c0 + c.lane, h = ch / a.w.R;
  const T* xc = a.x + (Idx(c.b) * Idx(a.g.xb) + Idx(ch));
  const T* dyc = a.dy + (Idx(c.b) * Idx(a.g.xb) + Idx(ch));
  const index_t NP = a.g.T * a.g.B * a.g.P;
  A* part = a.partial + Idx(c.sub) * Idx(NP) + (Idx(c.b) * Idx(a.g.ob));
  for (index_t tb = c.t0; tb < c.t1; tb += batch) {
    for (int j = 0; j < batch / segs; ++j) {
      const int tl = c.seg + j * segs;
      const index_t t = tb + tl;
      A vl = A(0), vr = A(0);
      if (c.lane < c.cn && t < c.tv1) {
        const window_taps<A> k = tile_taps<Causal, Idx>(a, c, cache, t, h);
        const A d = to_acc<T>(dyc[Idx(t) * Idx(a.g.xt)]);
        A sl, sr;
        if (talkconv::detail::taps_min(k) >= wlo && talkconv::detail::taps_max(k) <= whi) {
          const A* s = sm + c.lane;
          sl = talkconv::detail::left_slope<A>(s[(k.i2 - wlo) * lanes], s[(k.i3 - wlo) * lanes]);
          sr = talkconv::detail::right_slope<A>(s[(k.i0 - wlo) * lanes], s[(k.i1 - wlo) * lanes]);
        } else {
          A dm;
          direct_diffs<Idx>(xc, a.g.xt, k, inv_k, dm, sr, sl);
        }
        if (k.i2 != k.i3) vl = d * sl;
        if (!Causal && k.i0 != k.i1) vr = d * sr;
      }
      pbuf[c.lane * pad + tl] = vl;
      pbuf[(lanes + c.lane) * pad + tl] = vr;
    }
    __syncthreads();
    const int sides = Causal ? 1 : 2;
    const int pairs = batch * c.nh * sides;
    for (int i = threadIdx.x; i < pairs; i += threads) {
      const int tl = i % batch, hh = (i / batch) % c.nh, side = i / (batch * c.nh);
      const index_t t = tb + tl;
      if (t >= c.t1) continue;
      const index_t hd = c.h_first + hh;
      const index_t ca = (hd * a.w.R > c.c0 ? hd * a.w.R : c.c0) - c.c0;
      const index_t cb = ((hd + 1) * a.w.R < c.c0 + c.cn ? (hd + 1) * a.w.R : c.c0 + c.cn) - c.c0;
      A s = A(0);
      if (t < c.tv1)
        for (index_t l = ca; l < cb; ++l) s += pbuf[(side * lanes + l) * pad + tl];
      part[Idx(t) * Idx(a.g.ot) + (side == 0 ? hd : a.w.H + hd)] = s;
    }
    __syncthreads();
  }
}

// ---- backward to the input --------------------------------------------------------------------------
// Thread (seg, lane) owns rows [r0, r1) of the tile for one channel: it scatters the tap weights of every
// token that can reach them (token order, as the CPU), suffix-sums them, and adds the carry of the
// segments below in time. No two threads write the same cell: no atomics, fixed order.

template <bool Causal, class Idx, class T>
__device__ void window_input_grad_tile(const window_args<T>& a) {
  using A = acc_t<T>;
  constexpr int lanes = window_traits::lanes, segs = window_traits::segs;
  const tile_ctx c = make_ctx(a);
  const A inv_k = A(1) / A(a.w.L + a.w.M + 1);
  A* grad = dynamic_smem<A>();
  A* tot = grad + std::size_t(a.tile) * lanes;
  const index_t rl = static_cast<index_t>(a.reach[0]), rr = static_cast<index_t>(a.reach[1]);
  // Taps of every token that can reach the tile, [h0, h1), cached once per (token, head) when they fit.
  const index_t h0 = c.t0 - rr > 0 ? c.t0 - rr : 0;
  index_t h1 = c.t1 + rl < c.n ? c.t1 + rl : c.n;
  h1 = h1 > h0 ? h1 : h0;
  tap_entry<A>* cache = c.nh <= tap_cache_heads && (h1 - h0) <= dx_cache_tokens<A>(a.tile) && a.g.T < INT_MAX / 2
                            ? reinterpret_cast<tap_entry<A>*>(tot + segs * lanes)
                            : nullptr;
  if (cache) {
    const index_t pairs = (h1 - h0) * c.nh;
    for (index_t i = threadIdx.x; i < pairs; i += window_traits::threads) {
      const index_t t = h0 + i / c.nh, hh = c.h_first + i % c.nh;
      const window_taps<A> k = head_taps<Causal>(offset_row<Idx>(a, t, c.b), t, hh, a.w, c.n);
      cache[i] = tap_entry<A>{static_cast<int>(k.i0 - h0),
                              static_cast<int>(k.i1 - h0),
                              static_cast<int>(k.i2 - h0),
                              static_cast<int>(k.i3 - h0),
                              k.fr,
                              k.fl};
    }
    __syncthreads();
  }
  const int rows = static_cast<int>(c.t1 - c.t0), per_seg = a.tile / segs;
  const int r0 = c.seg * per_seg, r1 = r0 + per_seg < rows ? r0 + per_seg : rows;
  const bool mine = c.lane < c.cn && r0 < r1;
  const index_t ch = c.c0 + c.lane, h = ch / a.w.R;
  const T* dyc = a.dy + (Idx(c.b) * Idx(a.g.xb) + Idx(ch));
  A run = A(0);
  if (mine) {
    for (int r = r0; r < r1; ++r) grad[r * lanes + c.lane] = A(0);
    const index_t s_lo = c.t0 + r0, s_hi = c.t0 + r1 - 1;
    const bool last = r1 == rows;
    const index_t ta = s_lo - rr > 0 ? s_lo - rr : 0;
    index_t tb = last ? c.t1 + rl : s_hi + rl + 1;
    tb = tb < c.n ? tb : c.n;
    for (index_t t = ta; t < tb; ++t) {
      window_taps<A> k;
      if (cache) {
        const tap_entry<A> e = cache[(t - h0) * c.nh + (h - c.h_first)];
        k = window_taps<A>{h0 + e.d0, h0 + e.d1, h0 + e.d2, h0 + e.d3, e.fr, e.fl};
      } else {
        k = head_taps<Causal>(offset_row<Idx>(a, t, c.b), t, h, a.w, c.n);
      }
      if (talkconv::detail::taps_max(k) < c.t0 || talkconv::detail::taps_min(k) >= c.t1 - 1) continue;
      const auto wt = talkconv::detail::make_tap_weights<A>(k);
      const index_t idx[4] = {k.i0, k.i1, k.i2, k.i3};
      const A wv[4] = {wt.w0, wt.w1, wt.w2, wt.w3};
      const A d = to_acc<T>(dyc[Idx(t) * Idx(a.g.xt)]);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (idx[j] < c.t0 || wv[j] == A(0)) continue;
        const index_t r = idx[j] < c.t1 - 1 ? idx[j] : c.t1 - 1;
        if (r < s_lo || r > s_hi) continue;
        grad[(r - c.t0) * lanes + c.lane] += wv[j] * d;
      }
    }
    for (int r = r1 - 1; r >= r0; --r) {
      run += grad[r * lanes + c.lane];
      grad[r * lanes + c.lane] = run;
    }
  }
  tot[c.seg * lanes + c.lane] = run;
  __syncthreads();
  if (!mine) return;
  A carry = A(0);
  for (int s = c.seg + 1; s < segs; ++s) carry += tot[s * lanes + c.lane];
  T* dxc = a.dx + (Idx(c.b) * Idx(a.g.xb) + Idx(ch));
  for (int r = r0; r < r1; ++r) {
    const index_t t = c.t0 + r;
    A v = (grad[r * lanes + c.lane] + carry) * inv_k;
    if (a.dz != nullptr && t < c.n) {
      const A* dz = a.dz + (Idx(t) * Idx(a.g.ot) + Idx(c.b) * Idx(a.g.ob));
      for (index_t j = 0; j < a.g.P; ++j) v += dz[j] * to_acc<T>(a.weight[Idx(j) * Idx(a.g.C) + Idx(ch)]);
    }
    dxc[Idx(t) * Idx(a.g.xt)] = from_acc<T>(v);
  }
}

// ---- the reach of every valid window ----------------------------------------------------------------
// reach[0] = max (t - lowest tap), reach[1] = max (highest tap - t): integer maxima, so the combine by
// atomicMax is exact and order-free (deterministic).

template <bool Causal, class Idx, class T>
__device__ void window_reach_rows(const window_args<T>& a, unsigned long long* reach) {
  using A = acc_t<T>;
  using reduce = cub::BlockReduce<long long, row_threads>;
  __shared__ typename reduce::TempStorage tmp;
  long long rl = 0, rr = 0;
  const index_t N = a.g.T * a.g.B;
  for (index_t r = index_t(blockIdx.x) * row_threads + threadIdx.x; r < N; r += index_t(gridDim.x) * row_threads) {
    index_t t, b;
    a.g.token_of(r, t, b);
    const index_t n = a.g.length(b);
    if (t >= n) continue;
    const A* off = a.offsets + Idx(r) * Idx(a.g.P);
    for (index_t h = 0; h < a.w.H; ++h) {
      const window_taps<A> k = head_taps<Causal>(off, t, h, a.w, n);
      const long long l = t - talkconv::detail::taps_min(k), q = talkconv::detail::taps_max(k) - t;
      rl = l > rl ? l : rl;
      rr = q > rr ? q : rr;
    }
  }
  const long long bl = reduce(tmp).Reduce(rl, max_op{});
  __syncthreads();
  const long long br = reduce(tmp).Reduce(rr, max_op{});
  if (threadIdx.x == 0) {
    atomicMax(reach, static_cast<unsigned long long>(bl));
    atomicMax(reach + 1, static_cast<unsigned long long>(br));
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
