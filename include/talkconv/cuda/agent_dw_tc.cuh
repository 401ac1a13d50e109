// dW = dz^T x on tensor cores for 16-bit x (__half, __nv_bfloat16): TF32 WMMA 16x16x8 with float
// accumulators. x converts to TF32 exactly (a 16-bit significand fits TF32's 11 bits, and TF32 has
// float's exponent range, half's subnormals included). dz is float: it is split as dz = hi + lo with
// hi = tf32(dz), lo = tf32(dz - hi) (22 significant bits, float's range: no scaling, no underflow of a
// 16-bit type) and both products are summed (hi first), each exact in the float accumulator. Same
// row-chunk partials and chunk-order combine as the FMA form (agent_dz_gemm.cuh): no atomics.
#pragma once

#include "talkconv/cuda/agent_dz_gemm.cuh"
#include "talkconv/cuda/agent_project.cuh"

#include <mma.h>

#include <cstdint>

namespace talkconv {
namespace cuda {
namespace detail {

// Block tile: offsets [p0, p0 + PT) x channels [c0, c0 + channels); rows in steps of k_rows. Warp w
// owns channels [16 w, 16 w + 16) and every offset fragment (PT / 16 accumulators).
template <int PT>
struct dw_tc_policy {
  static constexpr int threads = 256;
  static constexpr int channels = 16 * (threads / 32);  // 128
  static constexpr int k_rows = 32;
  static constexpr int ldx = channels + 8;  // floats; rows 32-byte aligned, skewed
  static constexpr int ldd = PT + 8;
  static_assert(PT == 16 || PT == 32, "whole 16-offset fragments");
};

template <int PT>
struct dw_tc_smem {
  using pol = dw_tc_policy<PT>;
  // x [k_rows][ldx] as float; reused for the block's dW tile [PT][ldx] after the row loop.
  alignas(32) float x[pol::k_rows > PT ? pol::k_rows * pol::ldx : PT * pol::ldx];
  alignas(32) float hi[pol::k_rows * pol::ldd];  // dz^T as col-major A: element (p, r) at r * ldd + p
  alignas(32) float lo[pol::k_rows * pol::ldd];
  float d[pol::k_rows * PT];  // dz itself, for dbias
  bool valid[pol::k_rows];
};

// Stage 1 of dW / dbias on tensor cores. Block (channel block x, row chunk y, offset tile z).
template <class T, int PT>
__device__ __forceinline__ void param_grads_partial_tc_block(const offsets_args<T>& a, dw_tc_smem<PT>& sm) {
  using pol = dw_tc_policy<PT>;
  using stage = tile_stage<T, pol::k_rows, pol::channels, pol::threads>;
  constexpr int V = stage::V;
  const int tid = static_cast<int>(threadIdx.x);
  const index_t C = a.g.C, P = a.g.P, N = a.g.T * a.g.B;
  const index_t c0 = index_t(blockIdx.x) * pol::channels;
  const index_t k = blockIdx.y, p0 = index_t(blockIdx.z) * PT;
  const index_t r0 = k * a.rows_per_chunk, r1 = r0 + a.rows_per_chunk < N ? r0 + a.rows_per_chunk : N;
  const bool bias_thread = blockIdx.x == 0 && tid < PT && p0 + tid < P;
  const int cw = static_cast<int>(C - c0 < pol::channels ? C - c0 : pol::channels);  // channels in this block
  const bool vec = C % V == 0 && reinterpret_cast<std::uintptr_t>(a.x) % 16 == 0;
  float bacc = 0.0f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  const int warp = tid / 32;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[PT / 16];
#pragma unroll
  for (int m = 0; m < PT / 16; ++m) wmma::fill_fragment(acc[m], 0.0f);
  for (index_t rb = r0; rb < r1; rb += pol::k_rows) {
    const int nb = static_cast<int>(r1 - rb < pol::k_rows ? r1 - rb : pol::k_rows);
    __syncthreads();  // the previous step's fragments are loaded
    if (tid < pol::k_rows) {
      index_t t, b;
      sm.valid[tid] = tid < nb && row_token(a.g, rb + tid, t, b);
    }
    __syncthreads();
    // x rows (zero when past nb or past their length) -> float; the rows' dz -> hi + lo.
    stage xs;
    const int row = stage::row0(tid);
    const T* xp = a.x + (rb + row) * C + c0;
#pragma unroll
    for (int i = 0; i < stage::count; ++i) {
      const int r = row + i * stage::row_step;
      const bool ok = stage::active(tid, i) && r < nb && sm.valid[r];
      const int cc = stage::col0(tid);
      const T* q = xp + index_t(i * stage::row_step) * C + cc;
      if (ok && vec && cc + V <= cw) {
        xs.raw[i] = *reinterpret_cast<const uint4*>(q);
      } else {
        T* e = reinterpret_cast<T*>(&xs.raw[i]);
#pragma unroll
        for (int u = 0; u < V; ++u) e[u] = ok && cc + u < cw ? q[u] : zero_of<T>();
      }
    }
#pragma unroll
    for (int i = 0; i < stage::count; ++i)
      if (stage::active(tid, i)) {
        float* d = sm.x + (row + i * stage::row_step) * pol::ldx + stage::col0(tid);
#pragma unroll
        for (int u = 0; u < V; ++u) d[u] = to_acc<T>(xs.elems(i)[u]);
      }
    for (int e = tid; e < pol::k_rows * PT; e += pol::threads) {
      const int r = e / PT, p = e % PT;
      const float v = r < nb && sm.valid[r] && p0 + p < P ? a.dz[(rb + r) * P + p0 + p] : 0.0f;
      const float h = wmma::__float_to_tf32(v);
      sm.d[e] = v;
      sm.hi[r * pol::ldd + p] = h;
      sm.lo[r * pol::ldd + p] = wmma::__float_to_tf32(v - h);
    }
    __syncthreads();
    if (bias_thread)
      for (int r = 0; r < nb; ++r) bacc += sm.d[r * PT + tid];  // zero past the length
#pragma unroll
    for (int k0 = 0; k0 < pol::k_rows; k0 += 8) {
      wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
      wmma::load_matrix_sync(fb, sm.x + k0 * pol::ldx + warp * 16, pol::ldx);
#pragma unroll
      for (int m = 0; m < PT / 16; ++m) {
        wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fh, fl;
        wmma::load_matrix_sync(fh, sm.hi + k0 * pol::ldd + m * 16, pol::ldd);
        wmma::load_matrix_sync(fl, sm.lo + k0 * pol::ldd + m * 16, pol::ldd);
        wmma::mma_sync(acc[m], fh, fb, acc[m]);
        wmma::mma_sync(acc[m], fl, fb, acc[m]);
      }
    }
  }
  __syncthreads();  // the dW tile overwrites x
#pragma unroll
  for (int m = 0; m < PT / 16; ++m)
    wmma::store_matrix_sync(sm.x + m * 16 * pol::ldx + warp * 16, acc[m], pol::ldx, wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < PT * pol::channels; e += pol::threads) {
    const int p = e / pol::channels, c = e % pol::channels;
    if (p0 + p < P && c < cw) a.dw_part[(k * P + p0 + p) * C + c0 + c] = sm.x[p * pol::ldx + c];
  }
#else
  // Before sm_80: the same tile by plain sums from global memory (correct, not fast).
  (void)sm;
  (void)vec;
  for (int e = tid; e < PT * pol::channels; e += pol::threads) {
    const int p = e / pol::channels, c = e % pol::channels;
    if (p0 + p >= P || c >= cw) continue;
    float s = 0.0f;
    for (index_t r = r0; r < r1; ++r) {
      index_t t, b;
      if (row_token(a.g, r, t, b)) s += a.dz[r * P + p0 + p] * to_acc<T>(a.x[r * C + c0 + c]);
    }
    a.dw_part[(k * P + p0 + p) * C + c0 + c] = s;
  }
  if (bias_thread)
    for (index_t r = r0; r < r1; ++r) {
      index_t t, b;
      if (row_token(a.g, r, t, b)) bacc += a.dz[r * P + p0 + tid];
    }
#endif
  if (bias_thread) a.db_part[k * P + p0 + tid] = bacc;
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
