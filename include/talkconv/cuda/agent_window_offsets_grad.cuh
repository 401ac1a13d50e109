// Per-tile work of the window backward to the offsets: per-head channel sums of dy * slope, fixed order.
#pragma once

#include "talkconv/cuda/agent_window_tile.cuh"
#include "talkconv/detail/dropout.hpp"

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
  A* pbuf = sm + std::size_t(a.cap_rows) * lanes + segs * lanes;  // [side][lane][token in batch], stride pad
  tap_entry<A>* cache = tap_cache(sm + window_smem<A>::accumulators(a.cap_rows, true), c, a.g.T);
  // The tap cache only: a slope is x at one row over K (detail::left_slope_row / right_slope_row), so the
  // tile's prefix rows are not needed here.
  if (c.tv1 > c.t0) {
    index_t lo = 0, hi = -1;
    tile_span<Causal, Idx>(a, c, cache, lo, hi);
  }
  __syncthreads();
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
        const index_t lr = talkconv::detail::left_slope_row(k), rr = talkconv::detail::right_slope_row(k);
        if (lr >= 0) vl = d * (inv_k * to_acc<T>(xc[Idx(lr) * Idx(a.g.xt)]));
        if (!Causal && rr >= 0) vr = d * (inv_k * to_acc<T>(xc[Idx(rr) * Idx(a.g.xt)]));
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


// ---- backward to the offsets, gather of the slope rows (16-byte vectors) ---------------------------------
// dy/do_l and dy/do_r read x at one row each (detail::left_slope_row / right_slope_row: S[i3] - S[i2] =
// x[i3] / K for a fractional left bound, 0 for an integer or clamped one; likewise on the right), so no
// prefix rows are staged and the cost does not grow with the window. Block: a tile of
// offsets_grad_policy::tile tokens x the block's channels.
//  1. The rows of every valid (token, head) pair into a table (make_taps once per pair), and the dx
//     kernel's reach folded in (warp_reach; launch_window_backward zeroed it and launches no reach pass).
//  2. Thread (tok, col), passes x per_thread tokens: the 16 bytes of dy and of the two x rows, a pass's loads all
//     issued before their first use; left = sum_j dy_j x_left_j and right = sum_j dy_j x_right_j in channel order,
//     times 1/K, into the products buffer (0 where the slope is, whatever dy holds: the table keeps the
//     token's own row there, complemented, so every load is in bounds and none is predicated).
//  3. After one barrier, one thread per (token, head, side) adds the head's vectors in column order
//     (fixed: bitwise reproducible, no atomics) and writes partial[sub][t, b, side * H + h], or, with
//     a.finish.on (the block holds the head whole), the finished dL/do or dz there (finish_offset_grad):
//     no combine pass.

// The finish of offset j of token (t, b) from its head sum (a.finish.on: the block held the head whole):
// combine_offsets_grad_group's formula for one offset, the same operations in the same order.
template <class T>
__device__ __forceinline__ acc_t<T> finish_offset_grad(const window_args<T>& a, index_t b, index_t t, index_t j,
                                                       acc_t<T> sum) {
  using A = acc_t<T>;
  const A d = talkconv::detail::offset_grad_of_sum<A>(sum, j < a.w.H, a.w.L, a.w.M);
  const offsets_finish<A>& f = a.finish;
  if (f.o_pre == nullptr) return d;
  const A keep = talkconv::detail::dropout_scale<A>(f.dropout, f.seed, t + f.t_base, b, j, f.p);
  return talkconv::detail::offset_pre_grad<A>(d, keep, f.o_pre[b * a.g.ob + t * a.g.ot + j]);
}

// The tile of c (a block's own: make_ctx; the fused backward's: make_ctx_at). EvictX: x's rows read under the L2
// evict-first policy (the fused backward, whose L2 should keep the dy it re-reads).
template <bool Causal, class Idx, bool EvictX = false, class T>
__device__ void window_offsets_grad_gather(const window_args<T>& a, const tile_ctx& c) {
  using A = acc_t<T>;
  using P = window_tile_policy<T>;
  using G = offsets_grad_policy<T>;
  constexpr int V = P::vec, KT = G::per_thread;
  const int nval = static_cast<int>(c.tv1 - c.t0), ntok = static_cast<int>(c.t1 - c.t0);
  unsigned char* bytes = reinterpret_cast<unsigned char*>(dynamic_smem<A>());
  grad_rows* table = reinterpret_cast<grad_rows*>(bytes);
  A* prod = reinterpret_cast<A*>(bytes + offsets_grad_layout<T>::products_at(a.tile, a.tap_heads));  // [2][tile][cols]
  // 1. The table. 32-bit tap arithmetic when the sequence, L and M fit (the same make_taps on int).
  const bool narrow = a.g.T < INT_MAX / 2 && a.w.L < INT_MAX / 2 && a.w.M < INT_MAX / 2;
  const A* off0 = a.offsets + (c.b * a.g.ob + c.t0 * a.g.ot);  // 64-bit, once
  long long rl = 0, rr = 0;                                    // reach of this thread's windows
  for (int i = threadIdx.x; i < nval * c.nh; i += G::threads) {
    const int tok = c.nh == 1 ? i : i / c.nh, hh = i - tok * c.nh;
    const A* off = off0 + Idx(tok) * static_cast<Idx>(a.g.ot);
    const index_t hd = c.h_first + hh, t = c.t0 + tok;
    long long left, right, lo, hi;
    if (narrow) {
      const auto k = talkconv::detail::make_taps<A, int>(static_cast<int>(t), off[hd], Causal ? A(0) : off[a.w.H + hd],
                                                         static_cast<int>(a.w.L), static_cast<int>(a.w.M),
                                                         static_cast<int>(c.n), Causal);
      left = talkconv::detail::left_slope_row(k);
      right = talkconv::detail::right_slope_row(k);
      lo = talkconv::detail::taps_min(k);
      hi = talkconv::detail::taps_max(k);
    } else {
      const window_taps<A> k = head_taps<Causal>(off, t, hd, a.w, c.n);
      left = talkconv::detail::left_slope_row(k);
      right = talkconv::detail::right_slope_row(k);
      lo = talkconv::detail::taps_min(k);
      hi = talkconv::detail::taps_max(k);
    }
    // A zero slope keeps the token's own row, complemented: its load stays in bounds and unconditional.
    table[i] = grad_rows{talkconv::detail::slope_code(left, t, a.g.xt),
                         talkconv::detail::slope_code(Causal ? -1 : right, t, a.g.xt)};
    if (a.reach) {
      rl = t - lo > rl ? t - lo : rl;
      rr = hi - t > rr ? hi - t : rr;
    }
  }
  if (a.reach) warp_reach(const_cast<unsigned long long*>(a.reach), rl, rr);  // block-uniform
  __syncthreads();
  // 2. Products per (token, column).
  const int col = threadIdx.x % P::cols, tok0 = threadIdx.x / P::cols;
  if (col < c.cn / V) {
    const int hh = vtile_head(a, c, col);
    const index_t base = c.b * a.g.xb + c.c0 + col * V;  // 64-bit, once
    const T* __restrict__ xb = a.x + base;
    const T* __restrict__ dyb = a.dy + (base + c.t0 * a.g.xt);
    const A inv_k = A(1) / A(a.w.L + a.w.M + 1);
    const Idx xt = static_cast<Idx>(a.g.xt);
    const unsigned long long policy = EvictX ? l2_evict_first_policy() : 0ull;
    auto load_x = [&](const T* p) { return EvictX ? load_raw16_hint<T>(p, policy) : load_raw16<T>(p); };
    // G::passes passes of KT tokens (tok0 + pass * KT * step + k * step), one at a time: a pass's loads all issued
    // before its first use, the registers of one pass's loads live at once.
#pragma unroll 1
    for (int pass = 0; pass < G::passes; ++pass) {
      const int tokp = tok0 + pass * KT * G::step;
      if (tokp >= nval) break;  // the pass's first token past the valid ones: so are the rest
      uint4 rd[KT] = {}, rx[KT] = {}, ry[KT] = {};  // dy, x at the left row, x at the right row
      unsigned nonzero = 0u;                         // bit 2k: token k's left slope, bit 2k + 1: its right one
#pragma unroll
      for (int k = 0; k < KT; ++k) {
        const int tok = tokp + k * G::step;
        if (tok < nval) {
          const grad_rows e = table[tok * c.nh + hh];
          rd[k] = load_raw16<T>(dyb + Idx(tok) * xt);
          rx[k] = load_x(xb + static_cast<Idx>(talkconv::detail::slope_offset(e.left)));
          if (!Causal) ry[k] = load_x(xb + static_cast<Idx>(talkconv::detail::slope_offset(e.right)));
          nonzero |= (talkconv::detail::slope_nonzero(e.left) ? 1u : 0u) << (2 * k);
          nonzero |= (talkconv::detail::slope_nonzero(e.right) ? 2u : 0u) << (2 * k);
        }
      }
#pragma unroll
      for (int k = 0; k < KT; ++k) {
        const int tok = tokp + k * G::step;
        if (tok >= nval) continue;
        A d[V], xl[V], xr[V];
        unpack_vec<T>(rd[k], d);
        unpack_vec<T>(rx[k], xl);
        A gl = A(0), gr = A(0);
#pragma unroll
        for (int j = 0; j < V; ++j) gl += d[j] * xl[j];
        if (!Causal) {
          unpack_vec<T>(ry[k], xr);
#pragma unroll
          for (int j = 0; j < V; ++j) gr += d[j] * xr[j];
        }
        // Exactly 0 where the slope is (whatever dy holds, NaN included).
        const int slot = talkconv::detail::products_slot(tok, col, P::cols);
        prod[tok * P::cols + slot] = (nonzero >> (2 * k)) & 1u ? inv_k * gl : A(0);
        prod[(a.tile + tok) * P::cols + slot] = (nonzero >> (2 * k)) & 2u ? inv_k * gr : A(0);
      }
    }
  }
  __syncthreads();
  // 3. Head sums in column order.
  const int sides = Causal ? 1 : 2;
  const index_t NP = a.g.T * a.g.B * a.g.P;
  A* __restrict__ part = a.partial + (c.sub * NP + c.b * a.g.ob + c.t0 * a.g.ot);  // 64-bit, once
  const Idx ot = static_cast<Idx>(a.g.ot);
  for (int i = threadIdx.x; i < ntok * c.nh * sides; i += G::threads) {
    const int tok = i % ntok, rest = i / ntok, hh = rest % c.nh, side = rest / c.nh;
    const index_t hd = c.h_first + hh;
    A sum = A(0);
    if (tok < nval) {
      const index_t lo = hd * a.w.R > c.c0 ? hd * a.w.R : c.c0;
      const index_t hi = (hd + 1) * a.w.R < c.c0 + c.cn ? (hd + 1) * a.w.R : c.c0 + c.cn;
      const int ca = static_cast<int>(lo - c.c0) / V, cb = static_cast<int>(hi - c.c0) / V;
      const A* q = prod + (side * a.tile + tok) * P::cols;
      for (int k = ca; k < cb; ++k) sum += q[talkconv::detail::products_slot(tok, k, P::cols)];
      if (a.finish.on) sum = finish_offset_grad(a, c.b, c.t0 + tok, side == 0 ? hd : a.w.H + hd, sum);
    }
    part[Idx(tok) * ot + static_cast<Idx>(side == 0 ? hd : a.w.H + hd)] = sum;
  }
}

template <bool Causal, class Idx, class T>
__device__ void window_offsets_grad_gather(const window_args<T>& a) {
  window_offsets_grad_gather<Causal, Idx>(a, make_ctx(a));
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
