// Per-tile work of the window backward to the offsets: per-head channel sums of dy * slope, fixed order.
#pragma once

#include "talkconv/cuda/agent_window_tile.cuh"

namespace talkconv {
namespace cuda {
namespace detail {

// ---- backward to the offsets, generic scalar tile ---------------------------------------------------------
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
  const index_t ch = c.c0 + c.lane, h = c.h_first + a.w.head_in_block(c.lane);
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


// ---- backward to the offsets, vector tile -----------------------------------------------------------------
// Same staging as the forward. Thread (tok, col): dy of its vector (one 16-byte load), the four S rows,
// left = sum_j dy_j (S3 - S2)_j and right = sum_j dy_j (S1 - S0)_j in channel order, times 1/K; both into
// the products buffer. After one barrier, one thread per (token, head, side) adds the head's vectors in
// column order (fixed: bitwise reproducible, no atomics) and writes partial[sub][t, b, side * H + h].

template <bool Causal, class Idx, class T>
__device__ void window_offsets_grad_vtile(const window_args<T>& a) {
  using A = acc_t<T>;
  using P = window_tile_policy<T>;
  constexpr int V = P::vec;
  const vtile v = make_vtile(a);
  const tile_ctx& c = v.c;
  A* rows = dynamic_smem<A>();
  unsigned char* bytes = reinterpret_cast<unsigned char*>(rows);
  vtap<A>* taps = reinterpret_cast<vtap<A>*>(bytes + vtile_layout<T>::taps_at(a.cap_rows));
  A* prod = reinterpret_cast<A*>(bytes + vtile_layout<T>::products_at(a.cap_rows, a.tile, a.tap_heads));  // [2][tile][cols]
  const int col = threadIdx.x % P::cols;
  const bool active = col < v.vcols;
  const index_t base = c.b * a.g.xb + c.c0 + col * V;  // 64-bit, once
  constexpr int step = P::threads / P::cols;             // tokens per pass of the block
  int tok = threadIdx.x / P::cols;
  const T* __restrict__ dyp = a.dy + (base + (c.t0 + tok) * a.g.xt);
  const Idx jump = static_cast<Idx>(step) * static_cast<Idx>(a.g.xt);
  // dy one token ahead: the first token's 16 bytes are requested before the staging (their DRAM latency
  // hides behind it), each next token's at the top of the loop, used one pass later.
  uint4 dnext = make_uint4(0u, 0u, 0u, 0u);
  if (active && tok < v.nval) dnext = load_raw16<T>(dyp);
  // The dx kernel's reach in passing (launch_window_backward zeroed it and launches no reach pass).
  if (v.nval > 0) stage_vtile<Causal, Idx>(a, v, rows, taps, const_cast<unsigned long long*>(a.reach));
  const A inv_k = A(1) / A(a.w.L + a.w.M + 1);
  if (active) {
    const int hh = vtile_head(a, c, col);
    const A* __restrict__ p = rows + col * P::scan_width;  // the column's chunk 0 (P::chunks)
    const vtap<A>* __restrict__ e_at = taps + tok * c.nh + hh;
    bool direct = false;  // some token of this thread left the kept rows: done after the loop
    for (; tok < v.nval; tok += step, dyp += jump, e_at += step * c.nh) {
      const uint4 dnow = dnext;
      if (tok + step < v.nval) dnext = load_raw16<T>(dyp + jump);
      const vtap<A> e = *e_at;
      if (e.o0 < 0) {
        direct = true;
        continue;
      }
      A d[V];
      unpack_vec<T>(dnow, d);
      A gl = A(0), gr = A(0);
      constexpr int W = 16 / sizeof(A);
#pragma unroll
      for (int q = 0; q < V / W; ++q) {
        A s0[W], s1[W], s2[W], s3[W];
        tap_rows<A>(p + q * P::cols * W, e, s0, s1, s2, s3);
#pragma unroll
        for (int j = 0; j < W; ++j) {
          gl += d[q * W + j] * talkconv::detail::left_slope<A>(s2[j], s3[j]);
          gr += d[q * W + j] * talkconv::detail::right_slope<A>(s0[j], s1[j]);
        }
      }
      const int slot = talkconv::detail::products_slot(tok, col, P::cols);
      prod[tok * P::cols + slot] = e.o2 != e.o3 ? inv_k * gl : A(0);
      prod[(a.tile + tok) * P::cols + slot] = !Causal && e.o0 != e.o1 ? inv_k * gr : A(0);
    }
    // Windows that leave the kept rows: slopes straight from global memory (rare; exact).
    if (direct) {
      const T* xc = a.x + base;
      const T* dy0 = a.dy + (base + c.t0 * a.g.xt);
      for (int k2 = threadIdx.x / P::cols; k2 < v.nval; k2 += step) {
        if (taps[k2 * c.nh + hh].o0 >= 0) continue;
        const index_t t = c.t0 + k2;
        const window_taps<A> k = head_taps<Causal>(offset_row<Idx>(a, t, c.b), t, c.h_first + hh, a.w, c.n);
        A d[V];
        load_vec<T>(dy0 + Idx(k2) * static_cast<Idx>(a.g.xt), d);
        A gl = A(0), gr = A(0);
        for (int j = 0; j < V; ++j) {
          A dm, sr, sl;
          direct_diffs<Idx>(xc + j, a.g.xt, k, inv_k, dm, sr, sl);
          gl += d[j] * sl;
          gr += d[j] * sr;
        }
        const int slot = talkconv::detail::products_slot(k2, col, P::cols);
        prod[k2 * P::cols + slot] = k.i2 != k.i3 ? gl : A(0);
        prod[(a.tile + k2) * P::cols + slot] = !Causal && k.i0 != k.i1 ? gr : A(0);
      }
    }
  }
  __syncthreads();
  const int sides = Causal ? 1 : 2;
  const index_t NP = a.g.T * a.g.B * a.g.P;
  A* __restrict__ part = a.partial + (c.sub * NP + c.b * a.g.ob + c.t0 * a.g.ot);  // 64-bit, once
  const Idx ot = static_cast<Idx>(a.g.ot);
  for (int i = threadIdx.x; i < v.ntok * c.nh * sides; i += P::threads) {
    const int tok = i % v.ntok, rest = i / v.ntok, hh = rest % c.nh, side = rest / c.nh;
    const index_t hd = c.h_first + hh;
    A sum = A(0);
    if (tok < v.nval) {
      const index_t lo = hd * a.w.R > c.c0 ? hd * a.w.R : c.c0;
      const index_t hi = (hd + 1) * a.w.R < c.c0 + c.cn ? (hd + 1) * a.w.R : c.c0 + c.cn;
      const int ca = static_cast<int>(lo - c.c0) / V, cb = static_cast<int>(hi - c.c0) / V;
      const A* q = prod + (side * a.tile + tok) * P::cols;
      for (int k = ca; k < cb; ++k) sum += q[talkconv::detail::products_slot(tok, k, P::cols)];
    }
    part[Idx(tok) * ot + static_cast<Idx>(side == 0 ? hd : a.w.H + hd)] = sum;
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
