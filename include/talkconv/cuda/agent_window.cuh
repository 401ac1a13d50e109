// Per-tile work of the window backward to the input (dx scatters tap weights into a tile-local buffer and
// suffix-sums it) and the reach of every window. Includes the forward and offset-gradient agents.
#pragma once

#include "talkconv/cuda/agent_window_forward.cuh"
#include "talkconv/cuda/agent_window_offsets_grad.cuh"
#include "talkconv/cuda/agent_window_tile.cuh"

#include <cub/block/block_reduce.cuh>

#include <climits>

namespace talkconv {
namespace cuda {
namespace detail {

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
