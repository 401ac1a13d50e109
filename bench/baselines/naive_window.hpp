// Baseline (a): the naive windowed sum, O(T * window) per channel. For each token and head, the direct
// loop over the tokens of its window with SPEC's interpolated edges: the same semantics as
// talkconv::cpu::window_forward / window_backward (offsets after dropout, in [0, 1], width P, layout of x).
// Not part of the library: the yardstick talkconv's prefix-sum formulation is measured against.
#pragma once

#include "bounds.hpp"

#include <algorithm>
#include <vector>

namespace talkconv_bench {
namespace naive {

// y[t, b, c] = (sum_{ceil(a_l)}^{floor(a_r)} x + frac(a_r) x[ceil(a_r)] + (ceil(a_l) - a_l) x[floor(a_l)]) / K.
// OpenMP over (sequence, token block); channels of a head run contiguously (vectorizable adds).
template <class T>
void window_forward(const talkconv::seq_shape& s, const talkconv::window_params& w, const T* x,
                    const talkconv::acc_t<T>* off, T* y) {
  using A = talkconv::acc_t<T>;
  const index_t C = s.C, H = w.heads, R = C / H, P = w.num_offsets();
  const auto sx = s.strides(C), so = s.strides(P);
  const A inv_k = A(1) / A(w.window_len());
  constexpr index_t block = 64;
  const index_t blocks = (s.T + block - 1) / block;
  parallel_for(s.B * blocks, [&](index_t task) {
    const index_t b = task / blocks, t0 = (task % blocks) * block, t1 = std::min(t0 + block, s.T);
    std::vector<A> acc(static_cast<size_t>(R));
    const T* xb = x + b * sx.b;
    for (index_t t = t0; t < t1; ++t) {
      const A* row = off + t * so.t + b * so.b;
      T* yr = y + t * sx.t + b * sx.b;
      for (index_t h = 0; h < H; ++h) {
        const window_bounds wb = bounds_of<A>(w, s.T, t, row, h);
        const index_t c0 = h * R;
        std::fill(acc.begin(), acc.end(), A(0));
        for (index_t tau = wb.l.hi; tau <= wb.r.lo; ++tau) {
          const T* xr = xb + tau * sx.t + c0;
          for (index_t c = 0; c < R; ++c) acc[c] += talkconv::to_acc<T>(xr[c]);
        }
        if (wb.r.frac > 0.0f) {
          const T* xr = xb + wb.r.hi * sx.t + c0;
          const A f = A(wb.r.frac);
          for (index_t c = 0; c < R; ++c) acc[c] += f * talkconv::to_acc<T>(xr[c]);
        }
        if (wb.l.frac > 0.0f) {
          const T* xr = xb + wb.l.lo * sx.t + c0;
          const A f = A(1) - A(wb.l.frac);
          for (index_t c = 0; c < R; ++c) acc[c] += f * talkconv::to_acc<T>(xr[c]);
        }
        for (index_t c = 0; c < R; ++c) yr[c0 + c] = talkconv::from_acc<T>(acc[c] * inv_k);
      }
    }
  });
}

// Backward, the direct way: every token scatters dy[t] * w_t(tau) / K over its window into dx. To run in
// parallel without atomics, each task owns a block of dx rows, visits every token whose window can reach
// the block (offsets in [0, 1]: tokens [t0 - M, t1 + L)) and keeps only the writes that land in it.
//   d_off (may be null): dL/do_l = L/K sum_{c in h} dy x[floor(a_l)], dL/do_r = M/K sum dy x[ceil(a_r)]
//   (fractional, unclamped bounds only; zero otherwise, as SPEC).
template <class T>
void window_backward(const talkconv::seq_shape& s, const talkconv::window_params& w, const T* x,
                     const talkconv::acc_t<T>* off, const T* dy, T* dx, talkconv::acc_t<T>* d_off) {
  using A = talkconv::acc_t<T>;
  const index_t C = s.C, H = w.heads, R = C / H, P = w.num_offsets();
  const auto sx = s.strides(C), so = s.strides(P);
  const A inv_k = A(1) / A(w.window_len());
  constexpr index_t block = 256;
  const index_t blocks = (s.T + block - 1) / block;
  parallel_for(s.B * blocks, [&](index_t task) {
    const index_t b = task / blocks, t0 = (task % blocks) * block, t1 = std::min(t0 + block, s.T);
    std::vector<A> g(static_cast<size_t>((t1 - t0) * C), A(0));
    const T* xb = x + b * sx.b;
    const T* dyb = dy + b * sx.b;
    const index_t s0 = std::max<index_t>(0, t0 - w.max_right - 1);
    const index_t s1 = std::min(s.T, t1 + w.max_left + 1);
    for (index_t t = s0; t < s1; ++t) {
      const A* row = off + t * so.t + b * so.b;
      const T* dyr = dyb + t * sx.t;
      for (index_t h = 0; h < H; ++h) {
        const window_bounds wb = bounds_of<A>(w, s.T, t, row, h);
        const index_t c0 = h * R;
        auto add = [&](index_t tau, A wt) {
          if (tau < t0 || tau >= t1) return;
          A* gr = g.data() + (tau - t0) * C + c0;
          for (index_t c = 0; c < R; ++c) gr[c] += wt * talkconv::to_acc<T>(dyr[c0 + c]);
        };
        for (index_t tau = std::max(wb.l.hi, t0); tau <= std::min(wb.r.lo, t1 - 1); ++tau) add(tau, A(1));
        if (wb.r.frac > 0.0f) add(wb.r.hi, A(wb.r.frac));
        if (wb.l.frac > 0.0f) add(wb.l.lo, A(1) - A(wb.l.frac));
        if (d_off != nullptr && t >= t0 && t < t1) {
          A* dr = d_off + t * so.t + b * so.b;
          auto dot = [&](index_t tau) {
            const T* xr = xb + tau * sx.t + c0;
            A acc = A(0);
            for (index_t c = 0; c < R; ++c) acc += talkconv::to_acc<T>(dyr[c0 + c]) * talkconv::to_acc<T>(xr[c]);
            return acc;
          };
          dr[h] = wb.l.frac > 0.0f ? A(w.max_left) * inv_k * dot(wb.l.lo) : A(0);
          if (!w.causal) dr[H + h] = wb.r.frac > 0.0f ? A(w.max_right) * inv_k * dot(wb.r.hi) : A(0);
        }
      }
    }
    for (index_t tau = t0; tau < t1; ++tau) {
      T* dxr = dx + tau * sx.t + b * sx.b;
      const A* gr = g.data() + (tau - t0) * C;
      for (index_t c = 0; c < C; ++c) dxr[c] = talkconv::from_acc<T>(gr[c] * inv_k);
    }
  });
}

}  // namespace naive
}  // namespace talkconv_bench
