// Incremental decoding kernel: one token of every sequence, against a ring of the last L + 2 prefix sums.
#pragma once

#include "talkconv/cuda/kernel_traits.cuh"
#include "talkconv/detail/math.hpp"

namespace talkconv {
namespace cuda {
namespace detail {

template <class T>
struct decoder_args {
  using A = acc_t<T>;
  const T* x = nullptr;  // [B, C]
  T* y = nullptr;        // [B, C]
  A* ring = nullptr;     // [L + 2][B][C]: S[i] lives in row i % (L + 2)
  const A* z = nullptr;  // [B, P] offsets of this token (no dropout in decoding)
  index_t B = 0, C = 0, H = 1, L = 0, t = 0;
};

// grid (ceil(C / row_threads), B). A thread owns one channel of one sequence: its ring column is never
// touched by another thread, so the re-base (every L + 2 steps, as the CPU decoder: the newest sum is
// subtracted from the whole ring, keeping sums window-sized) needs no synchronization.
template <class T>
static __global__ void __launch_bounds__(row_threads) decoder_step_kernel(decoder_args<T> a) {
  using A = acc_t<T>;
  const index_t b = blockIdx.y, c = index_t(blockIdx.x) * row_threads + threadIdx.x;
  if (c >= a.C) return;
  const index_t rows = a.L + 2, t = a.t;
  A* col = a.ring + b * a.C + c;
  const index_t row_stride = a.B * a.C;
  auto at = [&](index_t i) -> A* { return col + (i % rows) * row_stride; };
  if (t >= rows && t % rows == 0) {
    const A base = *at(t - 1);
    for (index_t r = 0; r < rows; ++r) col[r * row_stride] -= base;
  }
  const A inv_k = A(1) / A(a.L + 1);
  A cur = inv_k * to_acc<T>(a.x[b * a.C + c]);
  if (t > 0) cur += *at(t - 1);
  *at(t) = cur;
  const index_t R = a.C / a.H, h = c / R;
  const auto k = talkconv::detail::make_taps<A>(t, a.z[b * a.H + h], A(0), a.L, 0, t + 1, true);
  auto s = [&](index_t i) -> A { return i < 0 ? A(0) : *at(i); };
  a.y[b * a.C + c] = from_acc<T>(talkconv::detail::window_value<A>(k, s(k.i0), s(k.i1), s(k.i2), s(k.i3)));
}

template <class A>
struct decoder_reorder_args {
  A* ring = nullptr;               // [L + 2][B][C], rewritten
  const A* old = nullptr;          // a copy of the ring's first `rows` rows
  const index_t* order = nullptr;  // [B], device
  index_t B = 0, C = 0, rows = 0;
  A poison = A(0);  // NaN: the state of a sequence whose order entry is outside [0, B)
};

// grid (ceil(C / row_threads), B): rows [0, rows) of sequence b's ring column from the copy's column of
// sequence order[b]. One writer per cell; the order is checked here (device memory).
template <class A>
static __global__ void __launch_bounds__(row_threads) decoder_reorder_kernel(decoder_reorder_args<A> a) {
  const index_t b = blockIdx.y, c = index_t(blockIdx.x) * row_threads + threadIdx.x;
  if (c >= a.C) return;
  const index_t src = a.order[b];
  const bool ok = src >= 0 && src < a.B;
  const index_t stride = a.B * a.C;
  for (index_t r = 0; r < a.rows; ++r)
    a.ring[r * stride + b * a.C + c] = ok ? a.old[r * stride + src * a.C + c] : a.poison;
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
