// Per-tile work of the window forward: y = I(a_r) - I(a_l - 1) from S kept in shared memory.
#pragma once

#include "talkconv/cuda/agent_window_tile.cuh"

namespace talkconv {
namespace cuda {
namespace detail {

// ---- forward, generic scalar tile: any head width, any alignment --------------------------------------

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
  const index_t ch = c.c0 + c.lane, h = c.h_first + a.w.head_in_block(c.lane);
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


// ---- forward, vector tile ---------------------------------------------------------------------------------
// Token t's window straight from global memory (SPEC's sums, exact; for the rare windows that leave the
// staged rows): the vector of channels starting at xc (the column's first channel of sequence c.b), head
// c.h_first + hh.
template <bool Causal, class Idx, class T>
__device__ void direct_window_vec(const window_args<T>& a, const tile_ctx& c, const T* xc, index_t t, int hh,
                                  acc_t<T> inv_k, acc_t<T> (&out)[window_tile_policy<T>::vec]) {
  using A = acc_t<T>;
  const window_taps<A> k = head_taps<Causal>(offset_row<Idx>(a, t, c.b), t, c.h_first + hh, a.w, c.n);
  for (int j = 0; j < window_tile_policy<T>::vec; ++j) {
    A dm, dr, dl;
    direct_diffs<Idx>(xc + j, a.g.xt, k, inv_k, dm, dr, dl);
    out[j] = talkconv::detail::window_value_diff<A>(k, dm, dr, dl);
  }
}

// Thread (tok, col) for tok = threadIdx.x / cols + k * threads / cols: one tap-table read (a broadcast among
// the head's threads), four S rows of its vector, window_value per channel, 1/K, one 16-byte store.
// Inner loop per vector of `vec` channels: 1 + 4 * (vec * sizeof(A) / 16) shared loads, 6 * vec FP
// instructions, vec / 2 packs (16-bit types), one store.

template <bool Causal, class Idx, class T>
__device__ void window_forward_vtile(const window_args<T>& a) {
  using A = acc_t<T>;
  using P = window_tile_policy<T>;
  constexpr int V = P::vec;
  const vtile v = make_vtile(a);
  const tile_ctx& c = v.c;
  A* rows = dynamic_smem<A>();
  vtap<A>* taps = reinterpret_cast<vtap<A>*>(reinterpret_cast<unsigned char*>(rows) +
                                                     vtile_layout<T>::taps_at(a.cap_rows));
  if (v.nval > 0) stage_vtile<Causal, Idx>(a, v, rows, taps);
  const int col = threadIdx.x % P::cols;
  if (col >= v.vcols) return;
  const int hh = vtile_head(a, c, col);
  const A inv_k = A(1) / A(a.w.L + a.w.M + 1);
  const index_t base = c.b * a.g.xb + c.c0 + col * V;  // 64-bit, once
  constexpr int step = P::threads / P::cols;             // tokens per pass of the block
  int tok = threadIdx.x / P::cols;
  T* __restrict__ yp = a.y + (base + (c.t0 + tok) * a.g.xt);
  const Idx jump = static_cast<Idx>(step) * static_cast<Idx>(a.g.xt);
  const A* __restrict__ p = rows + col * P::scan_width;  // the column's chunk 0 (P::chunks)
  const vtap<A>* __restrict__ e_at = taps + tok * c.nh + hh;
  bool direct = false;  // some token of this thread left the kept rows: done after the loop
  for (; tok < v.nval; tok += step, yp += jump, e_at += step * c.nh) {
    const vtap<A> e = *e_at;
    if (e.o0 < 0) {
      direct = true;
      continue;
    }
    A out[V];
    constexpr int W = 16 / sizeof(A);
#pragma unroll
    for (int q = 0; q < V / W; ++q) {
      A s0[W], s1[W], s2[W], s3[W];
      tap_rows<A>(p + q * P::cols * W, e, s0, s1, s2, s3);
#pragma unroll
      for (int j = 0; j < W; ++j)
        out[q * W + j] = inv_k * talkconv::detail::window_value_frac<A>(e.fr, e.fl, s0[j], s1[j], s2[j], s3[j]);
    }
    store_vec<T>(yp, out);
  }
  // Tokens past the valid length: zeros.
  for (; tok < v.ntok; tok += step, yp += jump) {
    A out[V];
#pragma unroll
    for (int j = 0; j < V; ++j) out[j] = A(0);
    store_vec<T>(yp, out);
  }
  // Windows that leave the kept rows: SPEC's sums straight from global memory (rare; exact).
  if (direct) {
    const T* xc = a.x + base;
    T* y0 = a.y + (base + c.t0 * a.g.xt);
    for (int k2 = threadIdx.x / P::cols; k2 < v.nval; k2 += step) {
      if (taps[k2 * c.nh + hh].o0 >= 0) continue;
      A out[V];
      direct_window_vec<Causal, Idx>(a, c, xc, c.t0 + k2, hh, inv_k, out);
      store_vec<T>(y0 + Idx(k2) * static_cast<Idx>(a.g.xt), out);
    }
  }
}

// ---- forward, vector tile in segments: windows wider than the rows a block can keep ----------------------
// The host picks this when the vector-tile plan cannot keep a tile's whole span (the tile, its left halo
// with the base row, its right halo): a tile of `segment_policy::tile` tokens, its span [t0 - left,
// t1 - 1 + right] walked in segments of cap_rows rows (base row included), each staged and scanned like a
// vector tile (stage_rows), each token adding window_value_frac of its taps clamped into the segment
// (detail::segment_row; the sum over segments is the window's sum, see detail/window_tile.hpp). The span's
// x rows are read once per tile (from L2 mostly: neighbouring tiles share them), never once per token and
// channel as the direct path does. Tokens whose taps leave the span (offsets past the halo's max_offset)
// take the direct path. Thread (tok, col): tokens tok, tok + step, ... of the tile, per_thread of them.
// Its tile and block shape: segment_policy (policy.cuh).

template <bool Causal, class Idx, class T>
__device__ void window_forward_segments(const window_args<T>& a) {
  using A = acc_t<T>;
  using P = window_tile_policy<T>;
  using S = segment_policy<T>;
  constexpr int V = P::vec, W = P::scan_width, KT = S::per_thread;
  const tile_ctx c = make_ctx(a);
  const int nval = static_cast<int>(c.tv1 - c.t0), ntok = static_cast<int>(c.t1 - c.t0), vcols = c.cn / V;
  A* rows = dynamic_smem<A>();
  vtap<A>* taps = reinterpret_cast<vtap<A>*>(reinterpret_cast<unsigned char*>(rows) + vtile_layout<T>::taps_at(a.cap_rows));
  // The span: S rows [first, last] (first >= -1: S[-1] = 0), rows relative to first in int.
  index_t first = c.t0 - a.left;
  if (first < -1) first = -1;
  index_t last = c.t1 - 1 + a.right;
  if (last > c.n - 1) last = c.n - 1;
  if (last < first) last = first;
  // Taps once per valid (token, head): rows relative to first, or o0 = -1 (direct path).
  for (int i = threadIdx.x; i < nval * c.nh; i += P::threads) {
    const int tok = c.nh == 1 ? i : i / c.nh, hh = i - tok * c.nh;
    const window_taps<A> k = head_taps<Causal>(offset_row<Idx>(a, c.t0 + tok, c.b), c.t0 + tok, c.h_first + hh, a.w, c.n);
    if (talkconv::detail::taps_min(k) < first || talkconv::detail::taps_max(k) > last)
      taps[i] = vtap<A>{-1, -1, -1, -1, k.fr, k.fl};
    else
      taps[i] = vtap<A>{static_cast<int>(k.i0 - first), static_cast<int>(k.i1 - first), static_cast<int>(k.i2 - first),
                        static_cast<int>(k.i3 - first), k.fr, k.fl};
  }
  const int col = threadIdx.x % P::cols, tok0 = threadIdx.x / P::cols;
  const bool active = col < vcols;
  const int hh = active ? vtile_head(a, c, col) : 0;
  A acc[KT][V];
#pragma unroll
  for (int k = 0; k < KT; ++k)
#pragma unroll
    for (int j = 0; j < V; ++j) acc[k][j] = A(0);
  constexpr int row = P::stride * static_cast<int>(sizeof(A));  // bytes per shared row
  const A* __restrict__ p = rows + col * W;                      // the column's chunk 0 (P::chunks)
  const int data_per = a.cap_rows - 1;
  const int span = static_cast<int>(last - first);
  if (nval > 0)
    for (int lo = 0; lo < span; lo += data_per) {  // segment rows (lo, hi] of the span, base row lo
      const int hi = lo + data_per < span ? lo + data_per : span;
      if (lo > 0) __syncthreads();  // the previous segment's rows are read before they are replaced
      stage_rows<Idx>(a, c, vcols, first + lo, hi - lo, rows);
      if (!active) continue;
#pragma unroll
      for (int k = 0; k < KT; ++k) {
        const int tok = tok0 + k * S::step;
        if (tok >= nval) continue;
        const vtap<A> e = taps[tok * c.nh + hh];
        if (e.o0 < 0) continue;
        using talkconv::detail::segment_row;
        const vtap<A> r{segment_row(e.o0, lo, hi) * row, segment_row(e.o1, lo, hi) * row,
                        segment_row(e.o2, lo, hi) * row, segment_row(e.o3, lo, hi) * row, e.fr, e.fl};
#pragma unroll
        for (int q = 0; q < V / W; ++q) {
          A s0[W], s1[W], s2[W], s3[W];
          tap_rows<A>(p + q * P::cols * W, r, s0, s1, s2, s3);
#pragma unroll
          for (int j = 0; j < W; ++j)
            acc[k][q * W + j] += talkconv::detail::window_value_frac<A>(e.fr, e.fl, s0[j], s1[j], s2[j], s3[j]);
        }
      }
    }
  if (!active) return;
  const A inv_k = A(1) / A(a.w.L + a.w.M + 1);
  const index_t base = c.b * a.g.xb + c.c0 + col * V;  // 64-bit, once
#pragma unroll
  for (int k = 0; k < KT; ++k) {
    const int tok = tok0 + k * S::step;
    if (tok >= ntok) continue;
    T* yp = a.y + (base + (c.t0 + tok) * a.g.xt);
    A out[V];
    if (tok >= nval) {
#pragma unroll
      for (int j = 0; j < V; ++j) out[j] = A(0);  // past the valid length
    } else if (taps[tok * c.nh + hh].o0 >= 0) {
#pragma unroll
      for (int j = 0; j < V; ++j) out[j] = inv_k * acc[k][j];
    } else {  // the window leaves the span (rare)
      direct_window_vec<Causal, Idx>(a, c, a.x + base, c.t0 + tok, hh, inv_k, out);
    }
    store_vec<T>(yp, out);
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
