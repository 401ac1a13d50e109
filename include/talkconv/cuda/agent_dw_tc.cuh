// dW = dz^T x and the offset path dx += dz W on tensor cores for 16-bit x (__half, __nv_bfloat16):
// TF32 WMMA 16x16x8 with float
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

// The offset path dx += dz W on tensor cores for 16-bit dx: block (row group x, channel blocks y
// strided) keeps W [PT][128 channels] as TF32 in shared memory and walks its rows 32 at a time: the dx
// tile is loaded as the accumulator, dz (split hi + lo as for dW) times W is added (hi first), and the
// tile is rounded once to T and written back for rows of valid tokens only.
template <int PT>
struct dx_tc_policy {
  static constexpr int threads = 256;
  static constexpr int channels = 128;
  static constexpr int rows = 32;        // rows per step: 2 x 8 accumulator tiles, 2 per warp
  static constexpr int steps = 8;        // row steps per block (W staged once for 256 rows)
  static constexpr int ldx = channels + 8;
  static constexpr int ldd = PT + 8;
  static_assert(PT == 16 || PT == 32, "whole 8-offset k steps");
};

template <int PT>
struct dx_tc_smem {
  using pol = dx_tc_policy<PT>;
  alignas(32) float dx[pol::rows * pol::ldx];
  alignas(32) float w[PT * pol::ldx];
  alignas(32) float hi[pol::rows * pol::ldd];  // dz as row-major A: element (r, p) at r * ldd + p
  alignas(32) float lo[pol::rows * pol::ldd];
  bool valid[pol::rows];
};

template <class T, int PT>
__device__ __forceinline__ void offset_path_tc_block(const offsets_args<T>& a, dx_tc_smem<PT>& sm) {
  using pol = dx_tc_policy<PT>;
  using x_stage = tile_stage<T, pol::rows, pol::channels, pol::threads>;
  using w_stage = tile_stage<T, PT, pol::channels, pol::threads>;
  constexpr int V = x_stage::V;
  const int tid = static_cast<int>(threadIdx.x);
  const index_t C = a.g.C, P = a.g.P, N = a.g.T * a.g.B;
  const bool vec = C % V == 0 && reinterpret_cast<std::uintptr_t>(a.dx) % 16 == 0 &&
                   reinterpret_cast<std::uintptr_t>(a.weight) % 16 == 0;
  const index_t g0 = index_t(blockIdx.x) * pol::rows * pol::steps;
  const index_t blocks = (C + pol::channels - 1) / pol::channels;
  for (index_t cb = blockIdx.y; cb < blocks; cb += gridDim.y) {
    const index_t c0 = cb * pol::channels;
    const int cw = static_cast<int>(C - c0 < pol::channels ? C - c0 : pol::channels);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    namespace wmma = nvcuda::wmma;
    const int warp = tid / 32, wm = warp / 4, wn = (warp % 4) * 2;  // row fragment, first column fragment
    __syncthreads();  // the previous channel block is done with sm.w
    {
      w_stage ws;
      const int row = w_stage::row0(tid);
      ws.load(a.weight + index_t(row) * C + c0, index_t(w_stage::row_step) * C, static_cast<int>(P) - row,
              w_stage::col0(tid), cw, vec, tid);
#pragma unroll
      for (int i = 0; i < w_stage::count; ++i)
        if (w_stage::active(tid, i)) {
          float* d = sm.w + (row + i * w_stage::row_step) * pol::ldx + w_stage::col0(tid);
#pragma unroll
          for (int u = 0; u < V; ++u) d[u] = to_acc<T>(ws.elems(i)[u]);
        }
    }
    for (int st = 0; st < pol::steps; ++st) {
      const index_t rb = g0 + index_t(st) * pol::rows;
      if (rb >= N) break;  // uniform
      const int nb = static_cast<int>(N - rb < pol::rows ? N - rb : pol::rows);
      __syncthreads();  // the previous step's tile is written out
      if (tid < pol::rows) {
        index_t t, b;
        sm.valid[tid] = tid < nb && row_token(a.g, rb + tid, t, b);
      }
      x_stage xs;
      const int row = x_stage::row0(tid);
      xs.load(a.dx + (rb + row) * C + c0, index_t(x_stage::row_step) * C, nb - row, x_stage::col0(tid), cw, vec, tid);
#pragma unroll
      for (int i = 0; i < x_stage::count; ++i)
        if (x_stage::active(tid, i)) {
          float* d = sm.dx + (row + i * x_stage::row_step) * pol::ldx + x_stage::col0(tid);
#pragma unroll
          for (int u = 0; u < V; ++u) d[u] = to_acc<T>(xs.elems(i)[u]);
        }
      for (int e = tid; e < pol::rows * PT; e += pol::threads) {
        const int r = e / PT, p = e % PT;
        const float v = r < nb && p < P ? a.dz[(rb + r) * P + p] : 0.0f;
        const float h = wmma::__float_to_tf32(v);
        sm.hi[r * pol::ldd + p] = h;
        sm.lo[r * pol::ldd + p] = wmma::__float_to_tf32(v - h);
      }
      __syncthreads();
      // This warp's two accumulator tiles (rows wm, columns wn and wn + 1), each A fragment loaded once.
      float* tile = sm.dx + wm * 16 * pol::ldx + wn * 16;
      wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[2];
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(acc[j], tile + j * 16, pol::ldx, wmma::mem_row_major);
#pragma unroll
      for (int k0 = 0; k0 < PT; k0 += 8) {
        wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fh, fl;
        wmma::load_matrix_sync(fh, sm.hi + wm * 16 * pol::ldd + k0, pol::ldd);
        wmma::load_matrix_sync(fl, sm.lo + wm * 16 * pol::ldd + k0, pol::ldd);
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
          wmma::load_matrix_sync(fb, sm.w + k0 * pol::ldx + (wn + j) * 16, pol::ldx);
          wmma::mma_sync(acc[j], fh, fb, acc[j]);
          wmma::mma_sync(acc[j], fl, fb, acc[j]);
        }
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::store_matrix_sync(tile + j * 16, acc[j], pol::ldx, wmma::mem_row_major);
      __syncthreads();
      // Rounded once to T; rows past nb or past their length are not written.
#pragma unroll
      for (int i = 0; i < x_stage::count; ++i) {
        const int r = row + i * x_stage::row_step, cc = x_stage::col0(tid);
        if (!x_stage::active(tid, i) || r >= nb || !sm.valid[r]) continue;
        const float* s = sm.dx + r * pol::ldx + cc;
        T* q = a.dx + (rb + r) * C + c0 + cc;
        if (vec && cc + V <= cw) {
          uint4 out;
          T* e = reinterpret_cast<T*>(&out);
#pragma unroll
          for (int u = 0; u < V; ++u) e[u] = from_acc<T>(s[u]);
          *reinterpret_cast<uint4*>(q) = out;
        } else {
          for (int u = 0; u < V && cc + u < cw; ++u) q[u] = from_acc<T>(s[u]);
        }
      }
    }
#else
    // Before sm_80: the same update by plain sums (correct, not fast).
    (void)sm;
    (void)vec;
    for (int e = tid; e < pol::rows * pol::steps * pol::channels; e += pol::threads) {
      const index_t r = g0 + e / pol::channels;
      const int c = e % pol::channels;
      index_t t, b;
      if (r >= N || c >= cw || !row_token(a.g, r, t, b)) continue;
      float v = to_acc<T>(a.dx[r * C + c0 + c]);
      for (index_t p = 0; p < P; ++p) v += a.dz[r * P + p] * to_acc<T>(a.weight[p * C + c0 + c]);
      a.dx[r * C + c0 + c] = from_acc<T>(v);
    }
#endif
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
