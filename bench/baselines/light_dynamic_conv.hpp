// Baseline (c): LightConv and DynamicConv forward (Wu et al., "Pay Less Attention with Lightweight and
// Dynamic Convolutions", ICLR 2019), on the CPU. Not part of the library.
//   LightConv:   y[t, c] = sum_{k < K} softmax(w[h, :])[k] * x[t + k - pad, c],  w: [H, K] shared over time
//   DynamicConv: the same with weights predicted per token: z = W x[t] + bias ([C] -> [H * K], an Eigen
//                GEMM per token block), softmax over k per head.
// Head h ties channels [h R, (h + 1) R) (R = C / H); zero padding outside [0, T); pad = (K - 1) / 2 for an
// encoder (centered window), K - 1 for a decoder. Layout of x: [T, B, C] or [B, T, C] (shape.lay).
#pragma once

#include "bounds.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <vector>

namespace talkconv_bench {
namespace lightdyn {

// In-place softmax over n values.
template <class A>
inline void softmax(A* v, index_t n) {
  A m = v[0];
  for (index_t k = 1; k < n; ++k) m = std::max(m, v[k]);
  A sum = A(0);
  for (index_t k = 0; k < n; ++k) sum += (v[k] = std::exp(v[k] - m));
  for (index_t k = 0; k < n; ++k) v[k] /= sum;
}

// One token's output: y[c] = sum_k wn[h * K + k] x[t + k - pad, c] over channels of every head.
template <class T, class A>
inline void conv_token(const T* xb, index_t stride_t, index_t T_len, index_t t, index_t C, index_t H, index_t K,
                       index_t pad, const A* wn, A* acc, T* yr) {
  const index_t R = C / H;
  std::fill(acc, acc + C, A(0));
  const index_t k0 = std::max<index_t>(0, pad - t), k1 = std::min(K, T_len + pad - t);
  for (index_t k = k0; k < k1; ++k) {
    const T* xr = xb + (t + k - pad) * stride_t;
    for (index_t h = 0; h < H; ++h) {
      const A wk = wn[h * K + k];
      for (index_t c = h * R; c < (h + 1) * R; ++c) acc[c] += wk * talkconv::to_acc<T>(xr[c]);
    }
  }
  for (index_t c = 0; c < C; ++c) yr[c] = talkconv::from_acc<T>(acc[c]);
}

inline constexpr index_t token_block = 64;

// LightConv forward. weight: [H, K] raw (softmax applied here, once per call).
template <class T>
void lightconv_forward(const talkconv::seq_shape& s, index_t H, index_t K, index_t pad, const T* x,
                       const talkconv::acc_t<T>* weight, T* y) {
  using A = talkconv::acc_t<T>;
  std::vector<A> wn(weight, weight + H * K);
  for (index_t h = 0; h < H; ++h) softmax(wn.data() + h * K, K);
  const auto sx = s.strides(s.C);
  const index_t blocks = (s.T + token_block - 1) / token_block;
  parallel_for(s.B * blocks, [&](index_t task) {
    const index_t b = task / blocks, t0 = (task % blocks) * token_block, t1 = std::min(t0 + token_block, s.T);
    std::vector<A> acc(static_cast<size_t>(s.C));
    for (index_t t = t0; t < t1; ++t)
      conv_token(x + b * sx.b, sx.t, s.T, t, s.C, H, K, pad, wn.data(), acc.data(), y + t * sx.t + b * sx.b);
  });
}

// DynamicConv forward. proj: [H * K, C] row-major, bias: [H * K] (may be null), both in acc_t<T>.
template <class T>
void dynamicconv_forward(const talkconv::seq_shape& s, index_t H, index_t K, index_t pad, const T* x,
                         const talkconv::acc_t<T>* proj, const talkconv::acc_t<T>* bias, T* y) {
  using A = talkconv::acc_t<T>;
  using RowMat = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const index_t C = s.C, HK = H * K;
  const auto sx = s.strides(C);
  const index_t blocks = (s.T + token_block - 1) / token_block;
  const Eigen::Map<const RowMat> Wp(proj, HK, C);
  parallel_for(s.B * blocks, [&](index_t task) {
    const index_t b = task / blocks, t0 = (task % blocks) * token_block, t1 = std::min(t0 + token_block, s.T);
    const index_t rows = t1 - t0;
    RowMat xa(rows, C);  // the block's rows widened to A (a copy for float too: rows are sx.t apart)
    for (index_t r = 0; r < rows; ++r) {
      const T* xr = x + (t0 + r) * sx.t + b * sx.b;
      for (index_t c = 0; c < C; ++c) xa(r, c) = talkconv::to_acc<T>(xr[c]);
    }
    RowMat z(rows, HK);
    z.noalias() = xa * Wp.transpose();
    std::vector<A> acc(static_cast<size_t>(C));
    for (index_t r = 0; r < rows; ++r) {
      A* zr = z.data() + r * HK;
      for (index_t j = 0; j < HK; ++j) zr[j] += bias ? bias[j] : A(0);
      for (index_t h = 0; h < H; ++h) softmax(zr + h * K, K);
      conv_token(x + b * sx.b, sx.t, s.T, t0 + r, C, H, K, pad, zr, acc.data(), y + (t0 + r) * sx.t + b * sx.b);
    }
  });
}

}  // namespace lightdyn
}  // namespace talkconv_bench
