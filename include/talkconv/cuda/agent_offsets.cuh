// Arguments of the offset kernels and their per-element work: the projection's epilogue (bias, sigmoid,
// dropout), dropout of saved offsets, the offset-gradient combine and dz, and the dW / dbias combine.
// The GEMMs themselves: agent_project.cuh (z = x W^T), agent_dz_gemm.cuh (dW = dz^T x, dx += dz W).
#pragma once

#include "talkconv/cuda/smem_layout.cuh"
#include "talkconv/detail/dropout.hpp"
#include "talkconv/detail/math.hpp"

#include <cstdint>

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

// ---- groups of 4 offsets of a token: one dropout draw (detail::dropout_keep4), 16-byte accesses --------------
// Group g of row r: offsets j0 = 4 g .. j0 + n - 1 (n = min(4, P - j0)), elements i = r P + j0 ... Groups per
// row: ceil(P / 4). `vec`: P % 4 == 0 and every pointer the kernel touches 16-byte aligned, so a group is one
// 16-byte access of float (two of double).
inline __host__ __device__ index_t offset_groups(index_t P) { return (P + 3) / 4; }
inline __host__ __device__ bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

template <class A>
__device__ __forceinline__ void load_group(const A* p, A (&v)[4], int n, bool vec) {
  if (vec) {
    if constexpr (sizeof(A) == 4) {
      const float4 f = *reinterpret_cast<const float4*>(p);
      v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
    } else {
      const double2 lo = *reinterpret_cast<const double2*>(p), hi = *reinterpret_cast<const double2*>(p + 2);
      v[0] = lo.x, v[1] = lo.y, v[2] = hi.x, v[3] = hi.y;
    }
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = k < n ? p[k] : A(0);
  }
}
template <class A>
__device__ __forceinline__ void store_group(A* p, const A (&v)[4], int n, bool vec) {
  if (vec) {
    if constexpr (sizeof(A) == 4) {
      *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
      *reinterpret_cast<double2*>(p) = make_double2(v[0], v[1]);
      *reinterpret_cast<double2*>(p + 2) = make_double2(v[2], v[3]);
    }
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (k < n) p[k] = v[k];
  }
}

// finish_offset for the n offsets of group j0 / 4 of memory row `row` (z[k] for offset j0 + k): one draw.
template <class T>
__device__ __forceinline__ void finish_offsets4(const offsets_args<T>& a, index_t row, index_t t, index_t b, bool valid,
                                                index_t j0, int n, const acc_t<T> (&z)[4], bool vec,
                                                acc_t<T>* keep = nullptr) {
  using A = acc_t<T>;
  const index_t i = row * a.g.P + j0;
  A pre[4] = {A(0), A(0), A(0), A(0)}, o[4] = {A(0), A(0), A(0), A(0)};
  if (valid) {
    A m[4];
    talkconv::detail::dropout_scale4<A>(a.dropout, a.seed, t + a.t_base, b, j0 / 4, a.p, m);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const A zk = a.bias && k < n ? z[k] + to_acc<T>(a.bias[j0 + k]) : z[k];
      pre[k] = talkconv::detail::sigmoid<A>(zk);
      o[k] = pre[k] * m[k];
    }
  }
  if (a.o_pre) store_group(a.o_pre + i, pre, n, vec);
  if (a.o) store_group(a.o + i, o, n, vec);
  if (keep) {  // the fused forward's copy of the offsets the window reads (o, 0 past the length)
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (k < n) keep[k] = o[k];
  }
}

// Token of memory row r and whether it lies within its sequence's length.
__device__ __forceinline__ bool row_token(const seq_geom& g, index_t r, index_t& t, index_t& b) {
  g.token_of(r, t, b);
  return t < g.length(b);
}

// Group q = r * groups + g of the offsets: its row's token (t, b), first offset j0, element i and count n.
struct offset_group {
  index_t t, b, j0, i;
  int n;
  __device__ __forceinline__ static offset_group of(const seq_geom& g, index_t q) {
    const index_t G = offset_groups(g.P), r = q / G;
    offset_group e;
    e.j0 = 4 * (q - r * G);
    e.n = g.P - e.j0 < 4 ? static_cast<int>(g.P - e.j0) : 4;
    e.i = r * g.P + e.j0;
    g.token_of(r, e.t, e.b);
    return e;
  }
};

// o = o_pre * m / (1 - p) for group q = r * groups + g of the offsets (zero past the length): one draw.
template <class T>
__device__ void apply_dropout_group(const offsets_args<T>& a, index_t q, bool vec) {
  using A = acc_t<T>;
  const offset_group e = offset_group::of(a.g, q);
  const index_t i = e.i, j0 = e.j0, t = e.t, b = e.b;
  const int n = e.n;
  A o[4] = {A(0), A(0), A(0), A(0)};
  if (t < a.g.length(b)) {
    A pre[4], m[4];
    load_group(a.o_pre + i, pre, n, vec);
    talkconv::detail::dropout_scale4<A>(a.dropout, a.seed, t + a.t_base, b, j0 / 4, a.p, m);
#pragma unroll
    for (int k = 0; k < 4; ++k) o[k] = pre[k] * m[k];
  }
  store_group(a.o + i, o, n, vec);
}

// dL/do of element i = (L or M) * the head's partial sums in split order; then, when o_pre is given,
// dz = dL/do * m / (1 - p) * o_pre (1 - o_pre). Written to `out`; zero past the length.
// Per group q = r * groups + g of the offsets (apply_dropout_group's numbering): one draw for its 4.
template <class T>
__device__ void combine_offsets_grad_group(const offsets_args<T>& a, index_t q, acc_t<T>* out, bool vec) {
  using A = acc_t<T>;
  const offset_group e = offset_group::of(a.g, q);
  const index_t i = e.i, j0 = e.j0, t = e.t, b = e.b;
  const int n = e.n;
  A res[4] = {A(0), A(0), A(0), A(0)};
  if (t < a.g.length(b)) {
    const index_t NP = a.g.T * a.g.B * a.g.P;
    A s[4];
    load_group(a.partial + i, s, n, vec);
    for (int k = 1; k < a.subs; ++k) {
      A more[4];
      load_group(a.partial + (index_t(k) * NP + i), more, n, vec);
#pragma unroll
      for (int e = 0; e < 4; ++e) s[e] += more[e];
    }
    A m[4] = {A(1), A(1), A(1), A(1)}, pre[4];
    if (a.o_pre) {
      talkconv::detail::dropout_scale4<A>(a.dropout, a.seed, t + a.t_base, b, j0 / 4, a.p, m);
      load_group(a.o_pre + i, pre, n, vec);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const A d = talkconv::detail::offset_grad_of_sum<A>(s[k], j0 + k < a.H, a.L, a.M);
      res[k] = a.o_pre ? talkconv::detail::offset_pre_grad<A>(d, m[k], pre[k]) : d;
    }
  }
  store_group(out + i, res, n, vec);
}

// part[0] + part[stride] + ... + part[(chunks - 1) stride], added in chunk order. The loads go out 8 at a
// time before their adds (the order of the adds, hence the bits, is unchanged): one thread per output
// and a few hundred chunks made this a chain of dependent L2 round trips (0.38 issue IPC, 16 us, 2026-11-30).
template <class A>
__device__ __forceinline__ A sum_chunks(const A* __restrict__ part, index_t stride, index_t chunks) {
  constexpr int batch = 8;
  A s = A(0);
  index_t k = 0;
  for (; k + batch <= chunks; k += batch, part += batch * stride) {
    A v[batch];
#pragma unroll
    for (int j = 0; j < batch; ++j) v[j] = part[j * stride];
#pragma unroll
    for (int j = 0; j < batch; ++j) s += v[j];
  }
  for (; k < chunks; ++k, part += stride) s += *part;
  return s;
}

// Stage 2: dW[p, c] and dbias[p] = sums over the chunks in chunk order, rounded once to T.
template <class T>
__device__ void param_grads_combine_element(const offsets_args<T>& a, index_t i) {
  const index_t P = a.g.P, C = a.g.C;
  if (i < P * C) {
    a.dweight[i] = from_acc<T>(sum_chunks(a.dw_part + i, P * C, a.chunks));
  } else if (a.dbias != nullptr && i < P * C + P) {
    const index_t p = i - P * C;
    a.dbias[p] = from_acc<T>(sum_chunks(a.db_part + p, P, a.chunks));
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
