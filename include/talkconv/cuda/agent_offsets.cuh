// Per-row work of the offset kernels: projection + sigmoid + dropout (one warp per token, cub::WarpReduce),
// offset-gradient combine and dz, the offset path of dx, and the two-stage deterministic dW / dbias.
#pragma once

#include "talkconv/cuda/kernel_traits.cuh"
#include "talkconv/detail/dropout.hpp"
#include "talkconv/detail/math.hpp"

#include <cub/warp/warp_reduce.cuh>

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
  index_t t_base = 0;  // token index of row t = 0 (incremental decoding), for the dropout counter
  bool dropout = false;
  float p = 0.0f;
  std::uint64_t seed = 0;
};

constexpr int proj_warps = row_threads / 32;
constexpr int param_threads = 128;

constexpr int proj_rows = 4;  // consecutive rows per warp: each weight load serves all of them
static_assert(proj_rows * proj_chunk <= 32, "a warp finishes a pass's proj_rows x PC offsets, one per lane");

// SPEC step 1 for memory rows [r0, r0 + proj_rows) (those < N): z = W x + bias by one warp (lanes stride
// the channels; each lane's weights are loaded once for all rows; WarpReduce per offset, fixed order,
// so a row's z does not depend on its neighbours), then o_pre = sigmoid(z), o = o_pre * m / (1 - p).
// Offsets are done PC at a time: zbuf holds this warp's proj_rows * PC sums of the current pass (shared
// memory independent of P), and lane k * PC + i finishes offset p0 + i of row r0 + k.
template <int PC, class Idx, class T>
__device__ void project_rows(const offsets_args<T>& a, index_t r0, acc_t<T>* zbuf,
                             typename cub::WarpReduce<acc_t<T>>::TempStorage& tmp) {
  using A = acc_t<T>;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const index_t P = a.g.P, C = a.g.C, N = a.g.T * a.g.B;
  const int rows = static_cast<int>(N - r0 < proj_rows ? N - r0 : proj_rows);
  const T* x0 = a.x + Idx(r0) * Idx(C);
  for (index_t p0 = 0; p0 < P; p0 += PC) {
    A acc[proj_rows][PC];
#pragma unroll
    for (int k = 0; k < proj_rows; ++k)
#pragma unroll
      for (int i = 0; i < PC; ++i) acc[k][i] = A(0);
    for (index_t c = lane; c < C; c += 32) {
      A w[PC];
#pragma unroll
      for (int i = 0; i < PC; ++i) w[i] = p0 + i < P ? to_acc<T>(a.weight[Idx(p0 + i) * Idx(C) + Idx(c)]) : A(0);
#pragma unroll
      for (int k = 0; k < proj_rows; ++k) {
        if (k >= rows) break;
        const A xv = to_acc<T>(x0[Idx(k) * Idx(C) + Idx(c)]);
#pragma unroll
        for (int i = 0; i < PC; ++i) acc[k][i] += w[i] * xv;
      }
    }
#pragma unroll
    for (int k = 0; k < proj_rows; ++k)
#pragma unroll
      for (int i = 0; i < PC; ++i) {
        const A s = cub::WarpReduce<A>(tmp).Sum(acc[k][i]);
        if (lane == 0) zbuf[k * PC + i] = s;
        __syncwarp();
      }
    const int k = lane / PC, i = lane % PC;
    const index_t j = p0 + i;
    if (k < rows && j < P) {
      const index_t r = r0 + k;
      index_t t, b;
      a.g.token_of(r, t, b);
      A* o = a.o ? a.o + Idx(r) * Idx(P) : nullptr;
      A* op = a.o_pre ? a.o_pre + Idx(r) * Idx(P) : nullptr;
      if (t < a.g.length(b)) {
        const A z = zbuf[k * PC + i] + (a.bias ? to_acc<T>(a.bias[j]) : A(0));
        const A sg = talkconv::detail::sigmoid<A>(z);
        if (op) op[j] = sg;
        if (o) o[j] = sg * talkconv::detail::dropout_scale<A>(a.dropout, a.seed, t + a.t_base, b, j, a.p);
      } else {
        if (o) o[j] = A(0);
        if (op) op[j] = A(0);
      }
    }
    __syncwarp();  // zbuf is rewritten by the next pass
  }
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
  a.o[i] = t < a.g.length(b) ? a.o_pre[i] * talkconv::detail::dropout_scale<A>(a.dropout, a.seed, t, b, j, a.p) : A(0);
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
                         d, talkconv::detail::dropout_scale<A>(a.dropout, a.seed, t, b, j, a.p), a.o_pre[i])
                   : d;
}

// dx[r, c] += sum_j dz[r, j] W[j, c] for element i = r * C + c of a valid token.
template <class Idx, class T>
__device__ void offset_path_element(const offsets_args<T>& a, index_t i) {
  using A = acc_t<T>;
  const index_t r = i / a.g.C, c = i - r * a.g.C;
  index_t t, b;
  a.g.token_of(r, t, b);
  if (t >= a.g.length(b)) return;
  A v = to_acc<T>(a.dx[Idx(i)]);
  const A* dz = a.dz + Idx(r) * Idx(a.g.P);
  for (index_t j = 0; j < a.g.P; ++j) v += dz[j] * to_acc<T>(a.weight[Idx(j) * Idx(a.g.C) + Idx(c)]);
  a.dx[Idx(i)] = from_acc<T>(v);
}

// Stage 1 of dW / dbias: block (channel block x, row chunk y, offset chunk z) sums dz^T x over its rows
// in row order. No atomics: each (chunk, p, c) has one writer.
template <class Idx, class T>
__device__ void param_grads_partial_block(const offsets_args<T>& a) {
  using A = acc_t<T>;
  const index_t c = index_t(blockIdx.x) * param_threads + threadIdx.x;
  const index_t k = blockIdx.y, p0 = index_t(blockIdx.z) * proj_chunk;
  const index_t N = a.g.T * a.g.B, P = a.g.P, C = a.g.C;
  const index_t r0 = k * a.rows_per_chunk, r1 = r0 + a.rows_per_chunk < N ? r0 + a.rows_per_chunk : N;
  const bool bias_thread = blockIdx.x == 0 && threadIdx.x < proj_chunk && p0 + threadIdx.x < P;
  A acc[proj_chunk];
#pragma unroll
  for (int i = 0; i < proj_chunk; ++i) acc[i] = A(0);
  A bacc = A(0);
  for (index_t r = r0; r < r1; ++r) {
    index_t t, b;
    a.g.token_of(r, t, b);
    if (t >= a.g.length(b)) continue;
    const A* dz = a.dz + Idx(r) * Idx(P);
    if (c < C) {
      const A xv = to_acc<T>(a.x[Idx(r) * Idx(C) + Idx(c)]);
#pragma unroll
      for (int i = 0; i < proj_chunk; ++i)
        if (p0 + i < P) acc[i] += dz[p0 + i] * xv;
    }
    if (bias_thread) bacc += dz[p0 + threadIdx.x];
  }
  if (c < C)
#pragma unroll
    for (int i = 0; i < proj_chunk; ++i)
      if (p0 + i < P) a.dw_part[(k * P + p0 + i) * C + c] = acc[i];
  if (bias_thread) a.db_part[k * P + p0 + threadIdx.x] = bacc;
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
