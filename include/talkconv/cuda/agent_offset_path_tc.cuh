// The offset path of the input gradient, dx += dz W, on tensor cores for 16-bit dx (TF32 mma.sync m16n8k8, dz
// split hi + lo as for dW: agent_dz_tc.cuh). The FMA form for other types is agent_dz_gemm.cuh's.
#pragma once

#include "talkconv/cuda/agent_dz_tc.cuh"
#include "talkconv/cuda/mma_tf32.cuh"
#include "talkconv/detail/mma_layout.hpp"

#include <cstdint>

namespace talkconv {
namespace cuda {
namespace detail {

// The offset path dx += dz W on tensor cores for 16-bit dx: block (row group x, channel blocks y
// strided) keeps W [PT][128 channels] as TF32 in shared memory and walks its rows `rows` at a time. The dx
// tile never goes through shared memory: each thread loads its accumulators straight from dx (16 bytes
// per row: W's columns are stored in an order that gives each thread 8 consecutive channels of a row in
// the mma accumulator layout), adds dz (split hi + lo as for dW, hi first) times W, rounds once to T and
// writes 16 bytes per row back, for rows of valid tokens only.
// Block shape: dx_tc_policy (policy.cuh).

template <int PT>
struct dx_tc_smem {
  using pol = dx_tc_policy<PT>;
  alignas(16) float w[PT * pol::ldw];         // W in mma column order (detail::dx_tc_position), zero past P and C
  alignas(16) float hi[pol::rows * pol::ldd];  // dz as row-major A: element (r, p) at r * ldd + p
  alignas(16) float lo[pol::rows * pol::ldd];
  bool valid[2][pol::rows];  // by step parity: a step's writes never race the previous step's reads
};

// The same buffers for P > 32 in dynamic shared memory: W for `chunks` chunks of 32 offsets (staged once
// per block), dz hi / lo for one chunk at a time.
struct dx_tc_wide_layout {
  using pol = dx_tc_policy<32>;
  static constexpr std::size_t valid_bytes = 2 * pol::rows;  // a multiple of 16
  static constexpr std::size_t dz_floats = std::size_t(pol::rows) * pol::ldd;
  TALKCONV_HOST_DEVICE static constexpr std::size_t bytes(int chunks) {
    return valid_bytes + 2 * dz_floats * sizeof(float) + std::size_t(chunks) * 32 * pol::ldw * sizeof(float);
  }
};

// Shared buffers of one block of the offset path, wherever they live.
struct dx_tc_buffers {
  float* w;
  float* hi;
  float* lo;
  bool* valid;  // [2][rows]
};

// dx += dz W over `chunks` chunks of PT offsets (chunks * PT >= P): per row step the dx accumulators stay in
// registers while each chunk's dz is staged (two barriers) and multiplied.
template <class T, int PT>
__device__ __forceinline__ void offset_path_tc_block(const offsets_args<T>& a, const dx_tc_buffers& sm, int chunks) {
  using pol = dx_tc_policy<PT>;
  static_assert(sizeof(T) == 2, "16-byte rows of 8 channels");
  const int tid = static_cast<int>(threadIdx.x);
  const index_t C = a.g.C, P = a.g.P, N = a.g.T * a.g.B;
  const bool vec = C % 8 == 0 && reinterpret_cast<std::uintptr_t>(a.dx) % 16 == 0;
  const index_t g0 = index_t(blockIdx.x) * pol::rows * pol::steps;
  const index_t blocks = (C + pol::channels - 1) / pol::channels;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const int warp = tid / 32, lane = tid % 32, g = lane / 4, q = lane % 4;
  const int wc = warp % pol::col_warps, wr = warp / pol::col_warps;  // channel group, row group
  const bool dz_vec = P % 4 == 0 && reinterpret_cast<std::uintptr_t>(a.dz) % 16 == 0;
  for (index_t cb = blockIdx.y; cb < blocks; cb += gridDim.y) {
    const index_t c0 = cb * pol::channels;
    const int cw = static_cast<int>(C - c0 < pol::channels ? C - c0 : pol::channels);
    const int ct = wc * 32 + q * 8;  // this thread's 8 channels of the block, [ct, ct + 8)
    const bool full = vec && ct + 8 <= cw;
    __syncthreads();  // the previous channel block is done with sm.w
    for (int e = tid; e < chunks * PT * pol::channels; e += pol::threads) {
      const int p = e / pol::channels, c = e % pol::channels;
      const float v = p < P && c < cw ? to_acc<T>(a.weight[index_t(p) * C + c0 + c]) : 0.0f;
      sm.w[p * pol::ldw + (c / 32) * 32 + talkconv::detail::dx_tc_position(c % 32)] = v;
    }
    row_walk walk;
    if (tid < pol::rows) walk.start(a.g, g0 + tid, pol::rows);
    for (int st = 0; st < pol::steps; ++st) {
      const index_t rb = g0 + index_t(st) * pol::rows;
      if (rb >= N) break;  // uniform
      const int nb = static_cast<int>(N - rb < pol::rows ? N - rb : pol::rows);
      bool* valid = sm.valid + (st & 1) * pol::rows;
      // This thread's dx rows wr * 32 + m * 16 + g (+ 8), loaded straight into the accumulators.
      T* const dx0 = a.dx + ((rb + wr * 32 + g) * C + c0 + ct);  // row wr * 32 + g, 64-bit once per step
      float acc[pol::m_tiles][4][4];  // [m][n][d element]
#pragma unroll
      for (int m = 0; m < pol::m_tiles; ++m)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = wr * 32 + m * 16 + h * 8 + g;
          float f[8];
          const T* src = dx0 + (m * 16 + h * 8) * C;
          if (r < nb && full) {
            const uint4 raw = *reinterpret_cast<const uint4*>(src);
            T e[8];
            memcpy(e, &raw, sizeof(raw));
#pragma unroll
            for (int u = 0; u < 8; ++u) f[u] = to_acc<T>(e[u]);
          } else {
#pragma unroll
            for (int u = 0; u < 8; ++u) f[u] = r < nb && ct + u < cw ? to_acc<T>(src[u]) : 0.0f;
          }
#pragma unroll
          for (int n = 0; n < 4; ++n) {
            acc[m][n][2 * h] = f[2 * n];
            acc[m][n][2 * h + 1] = f[2 * n + 1];
          }
        }
      if (tid < pol::rows) {
        valid[tid] = tid < nb && walk.valid(a.g);
        walk.advance();
      }
      for (int kc = 0; kc < chunks; ++kc) {
        const int pc = kc * PT;  // this chunk's first offset
        // dz of the chunk (zero past nb and P), issued before the barrier.
        float4 dz4[pol::dz_loads];
#pragma unroll
        for (int i = 0; i < pol::dz_loads; ++i) {
          const int e = tid + i * pol::threads, r = e / pol::dz_cols, p = pc + (e % pol::dz_cols) * 4;
          dz4[i] = r < nb ? load_dz4(a.dz + ((rb + r) * P + p), p, P, dz_vec) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
        __syncthreads();  // the previous chunk's (or step's) A fragments are read; valid and W are set
#pragma unroll
        for (int i = 0; i < pol::dz_loads; ++i) {
          const int e = tid + i * pol::threads, r = e / pol::dz_cols, p = (e % pol::dz_cols) * 4;
          store_tf32_split(sm.hi + r * pol::ldd + p, sm.lo + r * pol::ldd + p, dz4[i]);
        }
        __syncthreads();
        // A = dz rows (hi, then lo), B = W in mma column order; k = the chunk's offsets.
        const float* hw = sm.hi + (wr * 32 + g) * pol::ldd + q;
        const float* lw = sm.lo + (wr * 32 + g) * pol::ldd + q;
        const float* ww = sm.w + (pc + q) * pol::ldw + wc * 32 + g;
#pragma unroll
        for (int k0 = 0; k0 < PT; k0 += 8) {
          unsigned b[4][2];
#pragma unroll
          for (int n = 0; n < 4; ++n) {
            b[n][0] = __float_as_uint(ww[k0 * pol::ldw + n * 8]);
            b[n][1] = __float_as_uint(ww[(k0 + 4) * pol::ldw + n * 8]);
          }
#pragma unroll
          for (int m = 0; m < pol::m_tiles; ++m) {
            const int o = m * 16 * pol::ldd + k0;
            const unsigned ah[4] = {__float_as_uint(hw[o]), __float_as_uint(hw[o + 8 * pol::ldd]),
                                    __float_as_uint(hw[o + 4]), __float_as_uint(hw[o + 8 * pol::ldd + 4])};
            const unsigned al[4] = {__float_as_uint(lw[o]), __float_as_uint(lw[o + 8 * pol::ldd]),
                                    __float_as_uint(lw[o + 4]), __float_as_uint(lw[o + 8 * pol::ldd + 4])};
#pragma unroll
            for (int n = 0; n < 4; ++n) {
              mma_tf32(acc[m][n], ah, b[n]);
              mma_tf32(acc[m][n], al, b[n]);
            }
          }
        }
      }
      // Rounded once to T; rows past nb or past their length are not written.
#pragma unroll
      for (int m = 0; m < pol::m_tiles; ++m)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = wr * 32 + m * 16 + h * 8 + g;
          if (r >= nb || !valid[r]) continue;
          T e[8];
#pragma unroll
          for (int n = 0; n < 4; ++n) {
            e[2 * n] = from_acc<T>(acc[m][n][2 * h]);
            e[2 * n + 1] = from_acc<T>(acc[m][n][2 * h + 1]);
          }
          T* dst = dx0 + (m * 16 + h * 8) * C;
          if (full) {
            uint4 raw;
            memcpy(&raw, e, sizeof(raw));
            *reinterpret_cast<uint4*>(dst) = raw;
          } else {
            for (int u = 0; u < 8 && ct + u < cw; ++u) dst[u] = e[u];
          }
        }
    }
  }
#else
  // Before sm_80: the same update by plain sums (correct, not fast).
  (void)sm;
  (void)vec;
  (void)chunks;
  for (index_t cb = blockIdx.y; cb < blocks; cb += gridDim.y) {
    const index_t c0 = cb * pol::channels;
    const int cw = static_cast<int>(C - c0 < pol::channels ? C - c0 : pol::channels);
    for (int e = tid; e < pol::rows * pol::steps * pol::channels; e += pol::threads) {
      const index_t r = g0 + e / pol::channels;
      const int c = e % pol::channels;
      index_t t, b;
      if (r >= N || c >= cw || !row_token(a.g, r, t, b)) continue;
      float v = to_acc<T>(a.dx[r * C + c0 + c]);
      for (index_t p = 0; p < P; ++p) v += a.dz[r * P + p] * to_acc<T>(a.weight[p * C + c0 + c]);
      a.dx[r * C + c0 + c] = from_acc<T>(v);
    }
  }
#endif
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
