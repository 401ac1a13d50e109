// The two GEMMs that read dz [N, P]: dW = dz^T x (+ dbias = column sums of dz) as deterministic row-chunk
// partials, and the offset path of the input gradient dx += dz W. One definition of each on the device.
//
// A thread owns 2 adjacent channels (one 2-element load of x or dx per row) and up to PC offsets; dz rows
// are staged dz_rows at a time in shared memory and read as broadcasts (every thread reads the same
// row). P FMAs per element of x (dW) or dx, no reductions, no atomics: every output has one writer and
// sums its rows in row order.
#pragma once

#include "talkconv/cuda/agent_offsets.cuh"

#include <cstdint>
#include <type_traits>

namespace talkconv {
namespace cuda {
namespace detail {

// Two adjacent values of T as one load / store (4 bytes for 16-bit types, 8 for float, 16 for double).
template <class T>
struct alignas(2 * sizeof(T)) pair_of {
  T v[2];
};

// Elements c, c + 1 of row p as stored (zero past `C`, or both zero when !ok); `pairs`: the row is
// 2-element aligned. Kept in storage form so a thread can hold many rows' loads in flight.
template <class T>
__device__ __forceinline__ pair_of<T> load_pair(const T* __restrict__ p, index_t c, index_t C, bool pairs, bool ok) {
  pair_of<T> q;
  if (ok && pairs && c + 1 < C) {
    q = *reinterpret_cast<const pair_of<T>*>(p + c);
  } else {
    const T z = from_acc<T>(acc_t<T>(0));
    q.v[0] = ok && c < C ? p[c] : z;
    q.v[1] = ok && c + 1 < C ? p[c + 1] : z;
  }
  return q;
}

template <class T>
__device__ __forceinline__ void store_pair(T* __restrict__ p, index_t c, index_t C, bool pairs, acc_t<T> v0,
                                           acc_t<T> v1) {
  if (pairs && c + 1 < C) {
    pair_of<T> q;
    q.v[0] = from_acc<T>(v0);
    q.v[1] = from_acc<T>(v1);
    *reinterpret_cast<pair_of<T>*>(p + c) = q;
  } else {
    if (c < C) p[c] = from_acc<T>(v0);
    if (c + 1 < C) p[c + 1] = from_acc<T>(v1);
  }
}

// Rows of x (or dx) are 2-element aligned: C even and the base aligned to a pair.
template <class T>
__device__ __forceinline__ bool pairs_aligned(const T* p, index_t C) {
  return C % 2 == 0 && reinterpret_cast<std::uintptr_t>(p) % sizeof(pair_of<T>) == 0;
}

// Shared memory of a dz GEMM block: dz rows [rb, rb + dz_rows) x offsets [p0, p0 + PC) (zero past P),
// and which of those rows are tokens within their length.
template <class A, int PC>
struct dz_smem {
  alignas(16) A dz[dz_gemm_policy::dz_rows][PC];
  bool valid[dz_gemm_policy::dz_rows];
};

// Stages dz rows [rb, rb + nb) and their validity; dz of rows past nb or past their length is zero (and
// the callers never read x or dx there: NaN past a length cannot leak in).
template <class T, int PC>
__device__ __forceinline__ void stage_dz(const offsets_args<T>& a, dz_smem<acc_t<T>, PC>& sm, index_t rb, int nb,
                                         index_t p0, int tid) {
  using A = acc_t<T>;
  constexpr int R = dz_gemm_policy::dz_rows;
  const index_t P = a.g.P;
  __syncthreads();  // the previous batch is consumed
  if (tid < R) {
    index_t t, b;
    sm.valid[tid] = tid < nb && row_token(a.g, rb + tid, t, b);
  }
  __syncthreads();
  for (int e = tid; e < R * PC; e += dz_gemm_policy::threads) {
    const int i = e / PC, p = e % PC;
    sm.dz[i][p] = sm.valid[i] && p0 + p < P ? a.dz[(rb + i) * P + p0 + p] : A(0);
  }
  __syncthreads();
}

// Stage 1 of dW / dbias. Block (channel block x, row chunk y, offset tile z): for its 2 channels per
// thread and offsets [p0, p0 + PC), sums dz^T x over the chunk's valid rows in row order into
// dw_part[y][p][c]; block x = 0 also sums dbias into db_part[y][p].
template <class T, int PC>
__device__ void param_grads_partial_block(const offsets_args<T>& a, dz_smem<acc_t<T>, PC>& sm) {
  using A = acc_t<T>;
  using pol = dz_gemm_policy;
  const int tid = static_cast<int>(threadIdx.x);
  const index_t C = a.g.C, P = a.g.P, N = a.g.T * a.g.B;
  const index_t c = index_t(blockIdx.x) * pol::channels + pol::pair * tid;
  const index_t k = blockIdx.y, p0 = index_t(blockIdx.z) * PC;
  const index_t r0 = k * a.rows_per_chunk, r1 = r0 + a.rows_per_chunk < N ? r0 + a.rows_per_chunk : N;
  const bool pairs = pairs_aligned(a.x, C);
  const bool bias_thread = blockIdx.x == 0 && tid < PC && p0 + tid < P;
  A acc[PC][2];
#pragma unroll
  for (int p = 0; p < PC; ++p) acc[p][0] = acc[p][1] = A(0);
  A bacc = A(0);
  for (index_t rb = r0; rb < r1; rb += pol::dz_rows) {
    const int nb = static_cast<int>(r1 - rb < pol::dz_rows ? r1 - rb : pol::dz_rows);
    stage_dz<T, PC>(a, sm, rb, nb, p0, tid);
    const T* __restrict__ xr = a.x + rb * C;
    // pol::ahead rows' loads in flight per thread, then their products (rows past nb or invalid: x = 0
    // and dz = 0, adding exact zeros).
    for (int i0 = 0; i0 < nb; i0 += pol::ahead, xr += pol::ahead * C) {
      pair_of<T> xv[pol::ahead];
#pragma unroll
      for (int u = 0; u < pol::ahead; ++u) xv[u] = load_pair(xr + u * C, c, C, pairs, i0 + u < nb && sm.valid[i0 + u]);
#pragma unroll
      for (int u = 0; u < pol::ahead; ++u) {
        const A x0 = to_acc<T>(xv[u].v[0]), x1 = to_acc<T>(xv[u].v[1]);
#pragma unroll
        for (int p = 0; p < PC; ++p) {
          const A d = sm.dz[i0 + u][p];
          acc[p][0] += d * x0;
          acc[p][1] += d * x1;
        }
        if (bias_thread) bacc += sm.dz[i0 + u][tid];
      }
    }
  }
#pragma unroll
  for (int p = 0; p < PC; ++p)
    if (p0 + p < P) {
      A* out = a.dw_part + (k * P + p0 + p) * C;
      if (c < C) out[c] = acc[p][0];
      if (c + 1 < C) out[c + 1] = acc[p][1];
    }
  if (bias_thread) a.db_part[k * P + p0 + tid] = bacc;
}

// dx[r, c] += sum_j dz[r, j] W[j, c] over offsets j in [p0, p0 + PC) for rows [r0, r0 + dx_rows) of valid
// tokens, in j order, one rounding to T. The thread's 2 x PC weights live in registers for all its rows.
// Grid: x = row blocks, y strides the channel blocks. P > PC takes one launch per chunk of PC offsets, in
// order: for float and double (T = A) that is the same sum, in the same order, as one pass.
template <class T, int PC>
__device__ void offset_path_block(const offsets_args<T>& a, dz_smem<acc_t<T>, PC>& sm, index_t p0) {
  using A = acc_t<T>;
  using pol = dz_gemm_policy;
  const int tid = static_cast<int>(threadIdx.x);
  const index_t C = a.g.C, P = a.g.P, N = a.g.T * a.g.B;
  const index_t r0 = index_t(blockIdx.x) * pol::dx_rows;
  const index_t r1 = r0 + pol::dx_rows < N ? r0 + pol::dx_rows : N;
  const bool pairs = pairs_aligned(a.dx, C);
  const index_t blocks = (C + pol::channels - 1) / pol::channels;
  const T* const w0 = a.weight + p0 * C;                     // row p0 of W
  const int pn = static_cast<int>(P - p0 < PC ? P - p0 : PC);  // offsets of this chunk
  for (index_t cb = blockIdx.y; cb < blocks; cb += gridDim.y) {
    const index_t c = cb * pol::channels + pol::pair * tid;
    A w[PC][2];
#pragma unroll
    for (int p = 0; p < PC; ++p) {
      const T* wr = w0 + index_t(p) * C;
      w[p][0] = p < pn && c < C ? to_acc<T>(wr[c]) : A(0);
      w[p][1] = p < pn && c + 1 < C ? to_acc<T>(wr[c + 1]) : A(0);
    }
    for (index_t rb = r0; rb < r1; rb += pol::dz_rows) {
      const int nb = static_cast<int>(r1 - rb < pol::dz_rows ? r1 - rb : pol::dz_rows);
      stage_dz<T, PC>(a, sm, rb, nb, p0, tid);
      T* __restrict__ dr = a.dx + rb * C;
      for (int i0 = 0; i0 < nb; i0 += pol::ahead, dr += pol::ahead * C) {
        pair_of<T> dv[pol::ahead];
#pragma unroll
        for (int u = 0; u < pol::ahead; ++u) dv[u] = load_pair(dr + u * C, c, C, pairs, i0 + u < nb && sm.valid[i0 + u]);
#pragma unroll
        for (int u = 0; u < pol::ahead; ++u) {
          if (!(i0 + u < nb && sm.valid[i0 + u])) continue;  // uniform over the block
          A v0 = to_acc<T>(dv[u].v[0]), v1 = to_acc<T>(dv[u].v[1]);
#pragma unroll
          for (int p = 0; p < PC; ++p) {
            const A d = sm.dz[i0 + u][p];
            v0 += d * w[p][0];
            v1 += d * w[p][1];
          }
          store_pair(dr + u * C, c, C, pairs, v0, v1);
        }
      }
    }
  }
}

// The same for P > proj_chunk (wide heads): dz and W read from global memory (L1 / L2 hits) for every
// row; correct at any P, not at the budget.
template <class T>
__device__ void offset_path_block_wide(const offsets_args<T>& a) {
  using A = acc_t<T>;
  using pol = dz_gemm_policy;
  const int tid = static_cast<int>(threadIdx.x);
  const index_t C = a.g.C, P = a.g.P, N = a.g.T * a.g.B;
  const index_t r0 = index_t(blockIdx.x) * pol::dx_rows;
  const index_t r1 = r0 + pol::dx_rows < N ? r0 + pol::dx_rows : N;
  const bool pairs = pairs_aligned(a.dx, C);
  const index_t blocks = (C + pol::channels - 1) / pol::channels;
  for (index_t cb = blockIdx.y; cb < blocks; cb += gridDim.y) {
    const index_t c = cb * pol::channels + pol::pair * tid;
    for (index_t r = r0; r < r1; ++r) {
      index_t t, b;
      if (!row_token(a.g, r, t, b)) continue;
      T* __restrict__ dr = a.dx + r * C;
      const A* __restrict__ dz = a.dz + r * P;
      const pair_of<T> dv = load_pair(dr, c, C, pairs, true);
      A v0 = to_acc<T>(dv.v[0]), v1 = to_acc<T>(dv.v[1]);
      for (index_t p = 0; p < P; ++p) {
        const T* wr = a.weight + p * C;
        const A d = dz[p];
        v0 += d * (c < C ? to_acc<T>(wr[c]) : A(0));
        v1 += d * (c + 1 < C ? to_acc<T>(wr[c + 1]) : A(0));
      }
      store_pair(dr, c, C, pairs, v0, v1);
    }
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
