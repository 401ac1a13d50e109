// Arguments of the offset kernels and their per-element work: the projection's epilogue (bias, sigmoid,
// dropout), dropout of saved offsets, the offset-gradient combine and dz, and the dW / dbias combine.
// The GEMMs themselves: agent_project.cuh (z = x W^T), agent_dz_gemm.cuh (dW = dz^T x, dx += dz W).
#pragma once

#include "talkconv/cuda/kernel_traits.cuh"
#include "talkconv/detail/dropout.hpp"
#include "talkconv/detail/math.hpp"

namespace talkconv {
namespace cuda {
namespace detail {

template <class T>
struct offsets_args {
  using A = acc_t<T>;
  const T* x = nullptr;        // width C
  const T* weight = nullptr;   // [P, C]
  const T* bias = nullptr;     // [P] or null
  A* o = nullptr;              // offsets after dropout (layout of x, width P), or null
  A* o_pre = nullptr;          // sigmoid before dropout, or null
  const A* partial = nullptr;  // combine: [subs][T * B * P] head sums
  int subs = 1;
  index_t L = 0, M = 0, H = 1;  // combine: scale of left rows (j < H) and right rows
  const A* dz = nullptr;        // offset path / parameter gradients
  T* dx = nullptr;              // offset path output (accumulated)
  A* dw_part = nullptr;         // [chunks][P][C]
  A* db_part = nullptr;         // [chunks][P]
  T* dweight = nullptr;
  T* dbias = nullptr;
  index_t rows_per_chunk = 0;
  index_t chunks = 0;
  seq_geom g;
  index_t t_base = 0;  // token index of row t = 0 (incremental decoding, time shards), for the dropout counter
  bool dropout = false;
  float p = 0.0f;
  std::uint64_t seed = 0;
};

// SPEC step 1 after the projection, for offset j of memory row `row` (token (t, b), valid: t < n_b):
// o_pre = sigmoid(z + bias), o = o_pre * m / (1 - p); both zero past the length. Either may be null.
template <class T>
__device__ __forceinline__ void finish_offset(const offsets_args<T>& a, index_t row, index_t t, index_t b, bool valid,
                                              index_t j, acc_t<T> z) {
  using A = acc_t<T>;
  const index_t i = row * a.g.P + j;
  if (valid) {
    if (a.bias) z += to_acc<T>(a.bias[j]);
    const A sg = talkconv::detail::sigmoid<A>(z);
    if (a.o_pre) a.o_pre[i] = sg;
    if (a.o) a.o[i] = sg * talkconv::detail::dropout_scale<A>(a.dropout, a.seed, t + a.t_base, b, j, a.p);
  } else {
    if (a.o) a.o[i] = A(0);
    if (a.o_pre) a.o_pre[i] = A(0);
  }
}

// Token of memory row r and whether it lies within its sequence's length.
__device__ __forceinline__ bool row_token(const seq_geom& g, index_t r, index_t& t, index_t& b) {
  g.token_of(r, t, b);
  return t < g.length(b);
}

// Element i of the offsets tensor: token (t, b) and offset j.
__device__ __forceinline__ void offset_element(const seq_geom& g, index_t i, index_t& t, index_t& b, index_t& j) {
  const index_t r = i / g.P;
  j = i - r * g.P;
  g.token_of(r, t, b);
}

// o = o_pre * m / (1 - p) for element i (zero past the length).
template <class T>
__device__ void apply_dropout_element(const offsets_args<T>& a, index_t i) {
  using A = acc_t<T>;
  index_t t, b, j;
  offset_element(a.g, i, t, b, j);
  a.o[i] = t < a.g.length(b)
               ? a.o_pre[i] * talkconv::detail::dropout_scale<A>(a.dropout, a.seed, t + a.t_base, b, j, a.p)
               : A(0);
}

// dL/do of element i = (L or M) * the head's partial sums in split order; then, when o_pre is given,
// dz = dL/do * m / (1 - p) * o_pre (1 - o_pre). Written to `out`; zero past the length.
template <class T>
__device__ void combine_offsets_grad_element(const offsets_args<T>& a, index_t i, acc_t<T>* out) {
  using A = acc_t<T>;
  index_t t, b, j;
  offset_element(a.g, i, t, b, j);
  if (t >= a.g.length(b)) {
    out[i] = A(0);
    return;
  }
  const index_t NP = a.g.T * a.g.B * a.g.P;
  A s = a.partial[i];
  for (int k = 1; k < a.subs; ++k) s += a.partial[index_t(k) * NP + i];
  const A d = s * A(j < a.H ? a.L : a.M);
  out[i] = a.o_pre ? talkconv::detail::offset_pre_grad<A>(
                         d, talkconv::detail::dropout_scale<A>(a.dropout, a.seed, t + a.t_base, b, j, a.p), a.o_pre[i])
                   : d;
}

// Stage 2: dW[p, c] and dbias[p] = sums over the chunks in chunk order, rounded once to T.
template <class T>
__device__ void param_grads_combine_element(const offsets_args<T>& a, index_t i) {
  using A = acc_t<T>;
  const index_t P = a.g.P, C = a.g.C;
  if (i < P * C) {
    A s = A(0);
    for (index_t k = 0; k < a.chunks; ++k) s += a.dw_part[k * P * C + i];
    a.dweight[i] = from_acc<T>(s);
  } else if (a.dbias != nullptr && i < P * C + P) {
    const index_t p = i - P * C;
    A s = A(0);
    for (index_t k = 0; k < a.chunks; ++k) s += a.db_part[k * P + p];
    a.dbias[p] = from_acc<T>(s);
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
