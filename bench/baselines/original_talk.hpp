// Baseline (b): the original TaLK algorithm (Lioutas & Guo's published CUDA implementation, on the CPU).
// Forward: one global prefix-sum tensor S = cumsum(x) / K over the whole sequence, materialized, then a
// separate gather pass y = I(a_r) - I(a_l - 1). Backward: every token scatters its four tap weights times
// dy into a full-size buffer (the original uses float atomics; here each thread owns a full buffer), the
// buffers are summed and reverse-cumsummed into dx; offset gradients read S. Not part of the library.
// Numerics are the original's: S grows with t, so the error of y grows with T (SPEC Numerics).
#pragma once

#include "bounds.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

namespace talkconv_bench {
namespace original {

// Channels one prefix-sum task scans (B * ceil(C / scan_block) tasks run in parallel).
inline constexpr index_t scan_block = 64;

// S[t, b, c] = (1/K) sum_{tau <= t} x[tau, b, c], the whole sequence at once (layout of x, type A).
template <class T, class A = talkconv::acc_t<T>>
void global_prefix(const talkconv::seq_shape& s, A scale, const T* x, A* S) {
  const auto st = s.strides(s.C);
  const index_t cb = (s.C + scan_block - 1) / scan_block;
  parallel_for(s.B * cb, [&](index_t task) {
    const index_t b = task / cb, c0 = (task % cb) * scan_block, cn = std::min(scan_block, s.C - c0);
    A run[scan_block] = {};
    for (index_t t = 0; t < s.T; ++t) {
      const T* xr = x + t * st.t + b * st.b + c0;
      A* sr = S + t * st.t + b * st.b + c0;
      for (index_t c = 0; c < cn; ++c) sr[c] = run[c] = run[c] + scale * talkconv::to_acc<T>(xr[c]);
    }
  });
}

// S at index i of sequence row pointer sb (S[-1] = 0).
template <class A>
inline const A* s_row(const A* sb, index_t stride_t, index_t i) {
  return i < 0 ? nullptr : sb + i * stride_t;
}

// Forward: S (caller's [T, B, C] buffer of A, kept for backward) then the gather pass.
template <class T>
void window_forward(const talkconv::seq_shape& s, const talkconv::window_params& w, const T* x,
                    const talkconv::acc_t<T>* off, T* y, talkconv::acc_t<T>* S) {
  using A = talkconv::acc_t<T>;
  const index_t C = s.C, H = w.heads, R = C / H, P = w.num_offsets();
  const auto sx = s.strides(C), so = s.strides(P);
  global_prefix<T>(s, A(1) / A(w.window_len()), x, S);
  parallel_for(s.B * s.T, [&](index_t task) {
    const index_t b = task / s.T, t = task % s.T;
    const A* row = off + t * so.t + b * so.b;
    const A* Sb = S + b * sx.b;
    T* yr = y + t * sx.t + b * sx.b;
    for (index_t h = 0; h < H; ++h) {
      const window_bounds wb = bounds_of<A>(w, s.T, t, row, h);
      // I(a_r) = (1 - fr) S[floor a_r] + fr S[ceil a_r];  I(a_l - 1) likewise one row lower.
      const A fr = A(wb.r.frac), fl = A(wb.l.frac);
      const A* r0 = s_row(Sb, sx.t, wb.r.lo);
      const A* r1 = s_row(Sb, sx.t, wb.r.hi);
      const A* l0 = s_row(Sb, sx.t, wb.l.lo - 1);
      const A* l1 = s_row(Sb, sx.t, wb.l.hi - 1);
      for (index_t c = h * R; c < (h + 1) * R; ++c) {
        const A ir = (A(1) - fr) * r0[c] + fr * r1[c];
        const A il = (l0 ? (A(1) - fl) * l0[c] : A(0)) + (l1 ? fl * l1[c] : A(0));
        yr[c] = talkconv::from_acc<T>(ir - il);
      }
    }
  });
}

// Workspace (elements of A) the backward needs: one full [T, B, C] scatter buffer per thread.
inline index_t backward_workspace(const talkconv::seq_shape& s, int threads) {
  return static_cast<index_t>(threads) * s.T * s.B * s.C;
}

// Backward. S from the forward; ws of backward_workspace(s, num_threads()) elements.
//   dS[i] = sum over taps (t, j) with i_j = i of w_j dy[t]   (scatter: tokens split statically by thread)
//   dx[tau] = (1/K) sum_{i >= tau} dS[i]                      (reverse cumsum, summing the thread buffers)
//   d_off: L * sum_c dy (S[ceil a_l - 1] - S[floor a_l - 1]),  M * sum_c dy (S[ceil a_r] - S[floor a_r]).
template <class T>
void window_backward(const talkconv::seq_shape& s, const talkconv::window_params& w, const T* x,
                     const talkconv::acc_t<T>* off, const T* dy, T* dx, talkconv::acc_t<T>* d_off,
                     const talkconv::acc_t<T>* S, talkconv::acc_t<T>* ws) {
  using A = talkconv::acc_t<T>;
  (void)x;
  const index_t C = s.C, H = w.heads, R = C / H, P = w.num_offsets();
  const auto sx = s.strides(C), so = s.strides(P);
  const index_t N = s.T * s.B * C;
  const A inv_k = A(1) / A(w.window_len());
  const int threads = num_threads();
  // Scatter pass.
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
  {
    const int id = thread_id();
    A* dS = ws + static_cast<index_t>(id) * N;
    std::memset(dS, 0, static_cast<size_t>(N) * sizeof(A));
    const index_t rows = s.T * s.B;
    const index_t per = (rows + threads - 1) / threads;
    const index_t r0 = std::min(rows, id * per), r1 = std::min(rows, r0 + per);
    for (index_t r = r0; r < r1; ++r) {
      const index_t b = r / s.T, t = r % s.T;
      const A* row = off + t * so.t + b * so.b;
      const T* dyr = dy + t * sx.t + b * sx.b;
      A* db = dS + b * sx.b;
      for (index_t h = 0; h < H; ++h) {
        const window_bounds wb = bounds_of<A>(w, s.T, t, row, h);
        const A fr = A(wb.r.frac), fl = A(wb.l.frac);
        const index_t idx[4] = {wb.r.lo, wb.r.hi, wb.l.lo - 1, wb.l.hi - 1};
        const A wt[4] = {A(1) - fr, fr, fl - A(1), -fl};
        for (int j = 0; j < 4; ++j) {
          if (idx[j] < 0 || wt[j] == A(0)) continue;
          A* g = db + idx[j] * sx.t;
          for (index_t c = h * R; c < (h + 1) * R; ++c) g[c] += wt[j] * talkconv::to_acc<T>(dyr[c]);
        }
        if (d_off != nullptr) {
          const A* Sb = S + b * sx.b;
          auto slope = [&](index_t i_lo, index_t i_hi) {
            if (i_lo == i_hi) return A(0);
            const A* s0 = s_row(Sb, sx.t, i_lo);
            const A* s1 = s_row(Sb, sx.t, i_hi);
            A acc = A(0);
            for (index_t c = h * R; c < (h + 1) * R; ++c)
              acc += talkconv::to_acc<T>(dyr[c]) * (s1[c] - (s0 ? s0[c] : A(0)));
            return acc;
          };
          A* dr = d_off + t * so.t + b * so.b;
          dr[h] = A(w.max_left) * slope(wb.l.lo - 1, wb.l.hi - 1);
          if (!w.causal) dr[H + h] = A(w.max_right) * slope(wb.r.lo, wb.r.hi);
        }
      }
    }
  }
  // Reverse cumsum over time of the summed thread buffers, per (sequence, channel block).
  const index_t cb = (C + scan_block - 1) / scan_block;
  parallel_for(s.B * cb, [&](index_t task) {
    const index_t b = task / cb, c0 = (task % cb) * scan_block, cn = std::min(scan_block, C - c0);
    A run[scan_block] = {};
    for (index_t t = s.T - 1; t >= 0; --t) {
      const index_t o = t * sx.t + b * sx.b + c0;
      for (int k = 0; k < threads; ++k) {
        const A* g = ws + static_cast<index_t>(k) * N + o;
        for (index_t c = 0; c < cn; ++c) run[c] += g[c];
      }
      for (index_t c = 0; c < cn; ++c) dx[o + c] = talkconv::from_acc<T>(run[c] * inv_k);
    }
  });
}

}  // namespace original
}  // namespace talkconv_bench
