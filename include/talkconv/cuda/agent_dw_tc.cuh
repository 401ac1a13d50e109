// dW = dz^T x (16-bit x and float) and the offset path dx += dz W (16-bit x) on tensor cores: TF32
// mma.sync m16n8k8 (mma_tf32.cuh) with float accumulators; for bfloat16 x, dW runs on bfloat16
// m16n8k16 with dz in three bfloat16 pieces instead (param_grads_partial_bf16_block, below). 16-bit x converts to TF32 exactly (a 16-bit
// significand fits TF32's 11 bits, and TF32 has float's exponent range, half's subnormals included); float
// x is split hi + lo like dz (3xTF32: a_hi b_hi + a_lo b_hi + a_hi b_lo). dz is float: it is split as
// dz ~ hi + lo (tf32_split: both truncated to TF32, |dz - hi - lo| < 2^-21 |dz|, float's range: no scaling,
// no underflow of a 16-bit type) and the products are summed (hi first), each exact in the float
// accumulator. Same row-chunk partials and chunk-order combine as the FMA form (agent_dz_gemm.cuh): no
// atomics.
#pragma once

#include "talkconv/cuda/agent_dz_gemm.cuh"
#include "talkconv/cuda/agent_project.cuh"
#include "talkconv/cuda/async_copy.cuh"
#include "talkconv/cuda/mma_tf32.cuh"
#include "talkconv/detail/mma_layout.hpp"

#include <cstdint>

namespace talkconv {
namespace cuda {
namespace detail {

// dz[p .. p + 4) of one row at `q` (the element of offset p), zero at offsets >= P: one 16-byte load when
// `vec` (P % 4 == 0 and dz 16-byte aligned) and the four exist, else element loads.
__device__ __forceinline__ float4 load_dz4(const float* q, index_t p, index_t P, bool vec) {
  if (vec && p + 4 <= P) return __ldg(reinterpret_cast<const float4*>(q));
  return make_float4(p < P ? q[0] : 0.0f, p + 1 < P ? q[1] : 0.0f, p + 2 < P ? q[2] : 0.0f, p + 3 < P ? q[3] : 0.0f);
}

// dz = hi + lo (tf32_split), four values stored at hi[0..4) and lo[0..4) (16-byte aligned): the A operand
// of the dz GEMMs.
__device__ __forceinline__ void store_tf32_split(float* hi, float* lo, float4 v) {
  const float x[4] = {v.x, v.y, v.z, v.w};
  float h[4], l[4];
#pragma unroll
  for (int u = 0; u < 4; ++u) tf32_split(x[u], h[u], l[u]);
  *reinterpret_cast<float4*>(hi) = make_float4(h[0], h[1], h[2], h[3]);
  *reinterpret_cast<float4*>(lo) = make_float4(l[0], l[1], l[2], l[3]);
}

// Block tile: offsets [p0, p0 + PT) x channels [c0, c0 + channels); rows in steps of k_rows. Warp w
// owns channels [32 w, 32 w + 32) (four 8-column mma tiles) and every offset tile: each A fragment
// (dz hi / lo) loaded once serves the four.
template <int PT>
struct dw_tc_policy {
  static constexpr int threads = 256;
  static constexpr int warps = threads / 32;
  static constexpr int n_tiles = 4;                      // 8-channel mma tiles per warp
  static constexpr int channels = 8 * n_tiles * warps;  // 256
  static constexpr int k_rows = 32;
  static constexpr int ldx = channels + 8;  // floats: fragment reads (q * ldx + g) hit 32 distinct banks
  static constexpr int ldd = PT + 8;        // likewise (q * ldd + g)
  static constexpr int dz_cols = PT / 4;    // dz staging: one float4 of a row per thread
  static_assert(PT == 16 || PT == 32, "whole 16-offset fragments");
  static_assert(k_rows * dz_cols <= threads, "one dz float4 per thread");
};

template <int PT>
struct dw_tc_smem {
  using pol = dw_tc_policy<PT>;
  alignas(16) float x[pol::k_rows * pol::ldx];  // x rows as float (exact in TF32)
  alignas(16) float hi[pol::k_rows * pol::ldd];  // dz^T as A: element (p, r) at r * ldd + p
  alignas(16) float lo[pol::k_rows * pol::ldd];
  float bias[pol::warps][PT];  // channel block 0: each warp's dz column sums of the step
  bool valid[pol::k_rows];
};

// Row r's validity walked k_rows rows at a time without a division per step: (outer, inner) is r's
// position in the [outer][inner] row order (tbc: t, b; btc: b, t).
struct row_walk {
  index_t outer = 0, inner = 0, d_outer = 0, d_inner = 0, S = 1;
  __device__ __forceinline__ void start(const seq_geom& g, index_t r, int step) {
    S = g.lay == 0 ? g.B : g.T;
    outer = r / S;
    inner = r - outer * S;
    d_outer = step / S;
    d_inner = step - d_outer * S;
  }
  __device__ __forceinline__ bool valid(const seq_geom& g) const {
    if (g.lengths == nullptr) return true;
    return g.lay == 0 ? outer < g.length(inner) : inner < g.length(outer);
  }
  __device__ __forceinline__ void advance() {
    outer += d_outer;
    inner += d_inner;
    if (inner >= S) {
      inner -= S;
      ++outer;
    }
  }
};

// The block's dW tile straight from the accumulators (m16n8 d layout): offsets p0 + 16 m + g (+ 8), channels
// 8 NT warp + 8 n + 2 q (+ 1) of the block's; partial chunk k.
template <int PT, int NT, class T>
__device__ __forceinline__ void store_dw_tile(const offsets_args<T>& a, const float (&acc)[PT / 16][NT][4], index_t k,
                                              index_t p0, index_t c0, int cw, int warp, int lane) {
  const index_t C = a.g.C, P = a.g.P;
  const int g = lane / 4, q = lane % 4;
#pragma unroll
  for (int m = 0; m < PT / 16; ++m)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int p = m * 16 + g + (e >= 2 ? 8 : 0), c = warp * (NT * 8) + n * 8 + 2 * q + (e & 1);
        if (p0 + p < P && c < cw) a.dw_part[(k * P + p0 + p) * C + c0 + c] = acc[m][n][e];
      }
}

// Before sm_80: the block's tile by plain sums from global memory (correct, not fast); returns this thread's
// dbias sum (bias_block, tid < PT).
template <class T, int PT>
__device__ __forceinline__ float dw_tile_plain(const offsets_args<T>& a, index_t k, index_t p0, index_t c0, int cw,
                                               index_t r0, index_t r1, bool bias_block, int tid) {
  using pol = dw_tc_policy<PT>;
  const index_t C = a.g.C, P = a.g.P;
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
  float bacc = 0.0f;
  if (bias_block && tid < PT && p0 + tid < P)
    for (index_t r = r0; r < r1; ++r) {
      index_t t, b;
      if (row_token(a.g, r, t, b)) bacc += a.dz[r * P + p0 + tid];
    }
  return bacc;
}

// dbias of one k step, in two halves around the step's barrier. Before it (dz staging threads of a
// bias block): the warp's column sums of its rows' dz4 (offsets [dc, dc + 4)), in a fixed butterfly order,
// into bias[warp]. After it (threads tid < PT): bacc += the warps' sums in warp order.
template <int PT>
__device__ __forceinline__ void dw_bias_warp_sums(float (&bias)[dw_tc_policy<PT>::warps][PT], float4 dz4, int dc,
                                                  int warp, int lane) {
  using pol = dw_tc_policy<PT>;
  float sv[4] = {dz4.x, dz4.y, dz4.z, dz4.w};
#pragma unroll
  for (int s = pol::dz_cols; s < 32; s *= 2)
#pragma unroll
    for (int u = 0; u < 4; ++u) sv[u] += __shfl_xor_sync(0xffffffffu, sv[u], s);
  if (lane < pol::dz_cols)
#pragma unroll
    for (int u = 0; u < 4; ++u) bias[warp][dc + u] = sv[u];
}
template <int PT>
__device__ __forceinline__ void dw_bias_add(const float (&bias)[dw_tc_policy<PT>::warps][PT], int tid, float& bacc) {
  using pol = dw_tc_policy<PT>;
#pragma unroll
  for (int w = 0; w < pol::k_rows * pol::dz_cols / 32; ++w) bacc += bias[w][tid];
}

// Stage 1 of dW / dbias on tensor cores. Block (channel block x, row chunk y, offset tile z).
// Per step of k_rows rows: the loads of x and dz are issued first, then one barrier, then x rows
// (zero past nb or past their length) go to shared memory as float and dz as hi + lo, a second barrier,
// then every warp adds its PT / 16 x 4 accumulator tiles (m16n8k8, fragments read from shared memory).
// Sums run over rows in row order, hi before lo. No atomics: each partial has one writer.
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
  const bool bias_block = blockIdx.x == 0;  // uniform: this block also sums dbias
  const int cw = static_cast<int>(C - c0 < pol::channels ? C - c0 : pol::channels);  // channels in this block
  const bool vec = C % V == 0 && reinterpret_cast<std::uintptr_t>(a.x) % 16 == 0;
  constexpr bool split_x = std::is_same<T, float>::value;  // x not exact in TF32
  float bacc = 0.0f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const int warp = tid / 32, lane = tid % 32;
  // dz staging role: row dr, offsets [dc, dc + 4) of the tile (threads past k_rows * dz_cols idle).
  const int dr = tid / pol::dz_cols, dc = (tid % pol::dz_cols) * 4;
  const bool dz_thread = tid < pol::k_rows * pol::dz_cols;
  const bool dz_vec = P % 4 == 0 && reinterpret_cast<std::uintptr_t>(a.dz) % 16 == 0;
  row_walk walk;
  if (tid < pol::k_rows) walk.start(a.g, r0 + tid, pol::k_rows);
  // Accumulators: offset tile m (16 offsets) x channel tile n (8 channels) of this warp, d layout.
  constexpr int NT = pol::n_tiles;
  const int g = lane / 4, q = lane % 4;
  float acc[PT / 16][NT][4];
#pragma unroll
  for (int m = 0; m < PT / 16; ++m)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[m][n][e] = 0.0f;
  const int row = stage::row0(tid), cc = stage::col0(tid);
  const bool full_cols = vec && cw == pol::channels;
  for (index_t rb = r0; rb < r1; rb += pol::k_rows) {
    const int nb = static_cast<int>(r1 - rb < pol::k_rows ? r1 - rb : pol::k_rows);
    // Loads first (rows past nb read nothing); their latency overlaps the barrier.
    stage xs;
    const T* xp = a.x + ((rb + row) * C + c0);  // 64-bit, once per step
    if (full_cols && nb == pol::k_rows) {
#pragma unroll
      for (int i = 0; i < stage::count; ++i)
        xs.raw[i] = __ldg(reinterpret_cast<const uint4*>(xp + i * stage::row_step * C + cc));
    } else {
      xs.load(xp, index_t(stage::row_step) * C, nb - row, cc, cw, vec, tid);
    }
    float4 dz4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (dz_thread && dr < nb) dz4 = load_dz4(a.dz + ((rb + dr) * P + p0 + dc), p0 + dc, P, dz_vec);
    if (tid < pol::k_rows) {
      sm.valid[tid] = tid < nb && walk.valid(a.g);
      walk.advance();
    }
    __syncthreads();  // valid is set; the previous step's fragments are loaded
    // x -> float, zero past nb or past the length (NaN there cannot leak in).
#pragma unroll
    for (int i = 0; i < stage::count; ++i)
      if (stage::active(tid, i)) {
        const int r = row + i * stage::row_step;
        const bool ok = r < nb && sm.valid[r];
        float* d = sm.x + r * pol::ldx + cc;
        float f[V];
#pragma unroll
        for (int u = 0; u < V; ++u) f[u] = ok ? to_acc<T>(xs.elems(i)[u]) : 0.0f;
#pragma unroll
        for (int u = 0; u < V; u += 4) *reinterpret_cast<float4*>(d + u) = make_float4(f[u], f[u + 1], f[u + 2], f[u + 3]);
      }
    if (dz_thread) {
      if (!(dr < nb && sm.valid[dr])) dz4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      store_tf32_split(sm.hi + dr * pol::ldd + dc, sm.lo + dr * pol::ldd + dc, dz4);
      if (bias_block) dw_bias_warp_sums<PT>(sm.bias, dz4, dc, warp, lane);
    }
    __syncthreads();
    if (bias_block && tid < PT) dw_bias_add<PT>(sm.bias, tid, bacc);
    // A = dz^T (hi, then lo) from [row][offset], B = x from [row][channel]: rows are the k dimension.
    const float* xw = sm.x + q * pol::ldx + warp * (NT * 8) + g;
    const float* hw = sm.hi + q * pol::ldd + g;
    const float* lw = sm.lo + q * pol::ldd + g;
#pragma unroll
    for (int k0 = 0; k0 < pol::k_rows; k0 += 8) {
      // x as b: exact in TF32 for 16-bit x; float x is split hi + lo too (3xTF32: the a_lo b_lo product,
      // below 2^-20 of the product, is dropped: < 2^-19 in all).
      unsigned b[NT][2], bl[NT][2];
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const float x0 = xw[k0 * pol::ldx + n * 8], x1 = xw[(k0 + 4) * pol::ldx + n * 8];
        if constexpr (split_x) {
          float h0, l0, h1, l1;
          tf32_split(x0, h0, l0);
          tf32_split(x1, h1, l1);
          b[n][0] = __float_as_uint(h0);
          b[n][1] = __float_as_uint(h1);
          bl[n][0] = __float_as_uint(l0);
          bl[n][1] = __float_as_uint(l1);
        } else {
          b[n][0] = __float_as_uint(x0);
          b[n][1] = __float_as_uint(x1);
        }
      }
#pragma unroll
      for (int m = 0; m < PT / 16; ++m) {
        const int o = k0 * pol::ldd + m * 16;
        const unsigned ah[4] = {__float_as_uint(hw[o]), __float_as_uint(hw[o + 8]), __float_as_uint(hw[o + 4 * pol::ldd]),
                                __float_as_uint(hw[o + 4 * pol::ldd + 8])};
        const unsigned al[4] = {__float_as_uint(lw[o]), __float_as_uint(lw[o + 8]), __float_as_uint(lw[o + 4 * pol::ldd]),
                                __float_as_uint(lw[o + 4 * pol::ldd + 8])};
#pragma unroll
        for (int n = 0; n < NT; ++n) {
          mma_tf32(acc[m][n], ah, b[n]);
          mma_tf32(acc[m][n], al, b[n]);
          if constexpr (split_x) mma_tf32(acc[m][n], ah, bl[n]);
        }
      }
    }
  }
  // The block's dW tile straight from the accumulators: rows p0 + m * 16 + g (+ 8), channels 2q (+ 1).
  store_dw_tile<PT, NT>(a, acc, k, p0, c0, cw, warp, lane);
#else
  // Before sm_80: the same tile by plain sums from global memory (correct, not fast).
  (void)sm;
  (void)vec;
  (void)split_x;
  bacc = dw_tile_plain<T, PT>(a, k, p0, c0, cw, r0, r1, bias_block, tid);
#endif
  if (bias_block && tid < PT && p0 + tid < P) a.db_part[k * P + p0 + tid] = bacc;
}

// ---- dW for bfloat16 x: bfloat16 mma.sync m16n8k16, dz split in three bfloat16 pieces ------------------------
// The same block, steps, masking, dbias and output as param_grads_partial_tc_block, with x kept as bfloat16
// in shared memory (no conversion, half the bytes) and dz split once per block step into hi + mid + lo
// bfloat16 pieces (bf16_split3: within 2^-23 of dz, float's range; TF32 hi + lo: 2^-21), both operands read by
// ldmatrix.x4.trans (detail::ldsm_t_*, CPU-tested): per k step of 16 rows a warp loads each offset tile's
// three pieces (3 ldmatrix) and its channels' x (2 ldmatrix for four 8-channel tiles), and issues 3 mma per
// (offset tile, channel tile), hi then mid then lo. Products of a bfloat16 x and a bfloat16 piece are exact
// in float; sums run over rows in row order, as before.
//
// x's rows reach shared memory two ways. Aligned x with C % 8 == 0 (the usual case, Async): a two-stage cp.async
// pipeline, x[2] in shared memory: the copies of step s + 1 (zero-filled past nb and past the length) and the
// dz of step s + 1 go out before step s's products, so their latency hides behind them, and each step has
// two barriers with no x in registers (the register staging of 4 x 16 bytes per thread spilled at the
// 64-register cap, and the loads were waited for before the step's barrier; 84 us at 8.6 instructions per
// element and 6 cycles per issue waiting at barriers, H200, 2026-11-30). Otherwise: element loads through
// registers (tile_stage), one step at a time, into x[0].
template <int PT>
struct dw_bf16_smem {
  using pol = dw_tc_policy<PT>;
  static constexpr int ldx = pol::channels + 8;  // bfloat16: 528-byte rows, ldmatrix rows in distinct bank groups
  static constexpr int ldd = PT + 8;             // bfloat16: 48- or 80-byte rows, likewise
  alignas(16) __nv_bfloat16 x[2][pol::k_rows * ldx];  // x rows as staged (zero past nb or the length), 2 stages
  alignas(16) __nv_bfloat16 d[3][pol::k_rows * ldd];  // dz pieces hi, mid, lo: element (r, p) at r * ldd + p
  float bias[pol::warps][PT];
  bool valid[2][pol::k_rows];
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
// One step's dz pieces: dz4 (row dr, offsets [dc, dc + 4) of the tile; the caller zeroes it for a row that
// is not valid) split into hi, mid, lo at (dr, dc); in channel block 0 also the warp's column sums of dz
// into sm.bias[warp] (dbias).
template <int PT>
__device__ __forceinline__ void dw_bf16_stage_dz(dw_bf16_smem<PT>& sm, float4 dz4, int dr, int dc, bool bias_block,
                                                 int warp, int lane) {
  using sm_t = dw_bf16_smem<PT>;
  const float v[4] = {dz4.x, dz4.y, dz4.z, dz4.w};
  unsigned pc[3][4];
#pragma unroll
  for (int u = 0; u < 4; ++u) bf16_split3(v[u], pc[0][u], pc[1][u], pc[2][u]);
#pragma unroll
  for (int s = 0; s < 3; ++s)
    *reinterpret_cast<uint2*>(&sm.d[s][dr * sm_t::ldd + dc]) =
        make_uint2(pc[s][0] | (pc[s][1] << 16), pc[s][2] | (pc[s][3] << 16));
  if (bias_block) dw_bias_warp_sums<PT>(sm.bias, dz4, dc, warp, lane);
}

// One step's products: acc[m][n] += (dz pieces of offset tile m)^T x (x of the warp's channel tile n), over
// the step's k_rows rows in order, hi then mid then lo. a_at: the lane's ldmatrix address in the hi piece;
// b_at: in the step's x stage.
template <int PT, int NT>
__device__ __forceinline__ void dw_bf16_step_mma(float (&acc)[PT / 16][NT][4], unsigned a_at, unsigned b_at) {
  using T = __nv_bfloat16;
  using pol = dw_tc_policy<PT>;
  using sm_t = dw_bf16_smem<PT>;
  constexpr unsigned piece_bytes = unsigned(sizeof(T)) * pol::k_rows * sm_t::ldd;
#pragma unroll
  for (int k0 = 0; k0 < pol::k_rows; k0 += 16) {
    unsigned b[NT][2];
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      unsigned r4[4];
      ldmatrix_x4<true>(r4, b_at + unsigned(sizeof(T)) * unsigned(k0 * sm_t::ldx + np * 16));
      b[2 * np][0] = r4[0], b[2 * np][1] = r4[1], b[2 * np + 1][0] = r4[2], b[2 * np + 1][1] = r4[3];
    }
#pragma unroll
    for (int m = 0; m < PT / 16; ++m) {
      unsigned pa[3][4];
#pragma unroll
      for (int s = 0; s < 3; ++s)
        ldmatrix_x4<true>(pa[s], a_at + s * piece_bytes + unsigned(sizeof(T)) * unsigned(k0 * sm_t::ldd + m * 16));
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int s = 0; s < 3; ++s) mma_16bit<true>(acc[m][n], pa[s], b[n][0], b[n][1]);
    }
  }
}
#endif

// Async: the cp.async pipeline (the launch chooses it when x is 16-byte aligned and C % 8 == 0), else the
// register staging; two kernels, so that neither path's registers constrain the other's.
template <int PT, bool Async>
__device__ __forceinline__ void param_grads_partial_bf16_block(const offsets_args<__nv_bfloat16>& a, dw_bf16_smem<PT>& sm) {
  using T = __nv_bfloat16;
  using pol = dw_tc_policy<PT>;
  using sm_t = dw_bf16_smem<PT>;
  using stage = tile_stage<T, pol::k_rows, pol::channels, pol::threads>;
  const int tid = static_cast<int>(threadIdx.x);
  const index_t C = a.g.C, P = a.g.P, N = a.g.T * a.g.B;
  const index_t c0 = index_t(blockIdx.x) * pol::channels;
  const index_t k = blockIdx.y, p0 = index_t(blockIdx.z) * PT;
  const index_t r0 = k * a.rows_per_chunk, r1 = r0 + a.rows_per_chunk < N ? r0 + a.rows_per_chunk : N;
  const bool bias_block = blockIdx.x == 0;
  const int cw = static_cast<int>(C - c0 < pol::channels ? C - c0 : pol::channels);
  const bool vec = C % stage::V == 0 && reinterpret_cast<std::uintptr_t>(a.x) % 16 == 0;
  float bacc = 0.0f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  namespace td = talkconv::detail;
  const int warp = tid / 32, lane = tid % 32;
  const int dr = tid / pol::dz_cols, dc = (tid % pol::dz_cols) * 4;
  const bool dz_thread = tid < pol::k_rows * pol::dz_cols;
  const bool dz_vec = P % 4 == 0 && reinterpret_cast<std::uintptr_t>(a.dz) % 16 == 0;
  row_walk walk;
  if (tid < pol::k_rows) walk.start(a.g, r0 + tid, pol::k_rows);
  constexpr int NT = pol::n_tiles;
  float acc[PT / 16][NT][4];
#pragma unroll
  for (int m = 0; m < PT / 16; ++m)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[m][n][e] = 0.0f;
  const int row = stage::row0(tid), cc = stage::col0(tid);
  // ldmatrix row addresses (32-bit shared): dz pieces at (k row, offset column), x at (k row, channel).
  const unsigned a_at = static_cast<unsigned>(
      __cvta_generic_to_shared(&sm.d[0][td::ldsm_t_a_k(lane) * sm_t::ldd + td::ldsm_t_a_m(lane)]));
  const unsigned b_at = static_cast<unsigned>(__cvta_generic_to_shared(
      &sm.x[0][td::ldsm_t_b_k(lane) * sm_t::ldx + warp * (NT * 8) + td::ldsm_t_b_n(lane)]));
  constexpr unsigned stage_bytes = unsigned(sizeof(T)) * pol::k_rows * sm_t::ldx;
  auto rows_at = [&](index_t rb) { return static_cast<int>(r1 - rb < pol::k_rows ? r1 - rb : pol::k_rows); };
  auto dz_at = [&](index_t rb, int nb) {
    return dz_thread && dr < nb ? load_dz4(a.dz + ((rb + dr) * P + p0 + dc), p0 + dc, P, dz_vec)
                                : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  };
  // The validity of a step's rows (warp 0, walking them in order): row < nb and within its length.
  auto set_valid = [&](int buf, int nb) {
    if (tid < pol::k_rows) {
      sm.valid[buf][tid] = tid < nb && walk.valid(a.g);
      walk.advance();
    }
  };
  if constexpr (Async) {
    // The pipeline (vec holds: the launch checked it). valid[buf] of a step is set before the barrier that
    // precedes its copies. xq: this thread's first x vector of the next step to issue, one add per step.
    const index_t x_step = index_t(pol::k_rows) * C, x_rows = index_t(stage::row_step) * C;
    const T* xq = a.x + ((r0 + row) * C + c0 + cc);
    const bool col_ok = cc < cw;  // cw % 8 == 0 here: a vector is all in or all out
    auto issue = [&](int buf) {  // this thread's copies of the step's x rows (at xq), then one commit
#pragma unroll
      for (int i = 0; i < stage::count; ++i)
        if (stage::active(tid, i)) {
          const int r = row + i * stage::row_step;
          const bool ok = col_ok && sm.valid[buf][r];
          cp_async_16_or_zero(&sm.x[buf][r * sm_t::ldx + cc], ok ? xq + i * x_rows : a.x, ok);
        }
      cp_async_commit();
      xq += x_step;
    };
    const int steps = r1 > r0 ? static_cast<int>((r1 - r0 + pol::k_rows - 1) / pol::k_rows) : 0;
    float4 dz4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (steps > 0) {
      set_valid(0, rows_at(r0));
      dz4 = dz_at(r0, rows_at(r0));
      __syncthreads();
      issue(0);
    }
    for (int st = 0; st < steps; ++st) {
      const int cur = st & 1;
      const index_t rn = r0 + index_t(st + 1) * pol::k_rows;
      const bool more = st + 1 < steps;
      const int nb_next = more ? rows_at(rn) : 0;
      if (more) set_valid(cur ^ 1, nb_next);
      __syncthreads();  // valid[cur ^ 1] is set; every warp is done with step st - 1 (x[cur ^ 1], d, bias)
      if (more)
        issue(cur ^ 1);
      else
        cp_async_commit();  // an empty group: the wait below still means "step st's copies"
      if (dz_thread) {
        if (!sm.valid[cur][dr]) dz4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        dw_bf16_stage_dz<PT>(sm, dz4, dr, dc, bias_block, warp, lane);
      }
      const float4 dz_next = dz_at(rn, nb_next);  // zero past the last step (nb_next = 0)
      cp_async_wait_group<1>();  // this thread's copies of step st
      __syncthreads();           // everyone's: x[cur], the pieces and the bias sums are in place
      if (bias_block && tid < PT) dw_bias_add<PT>(sm.bias, tid, bacc);
      dw_bf16_step_mma<PT, NT>(acc, a_at, b_at + unsigned(cur) * stage_bytes);
      dz4 = dz_next;
    }
  } else {
    const bool full_cols = vec && cw == pol::channels;
    for (index_t rb = r0; rb < r1; rb += pol::k_rows) {
      const int nb = rows_at(rb);
      stage xs;
      const T* xp = a.x + ((rb + row) * C + c0);
      if (full_cols && nb == pol::k_rows) {
#pragma unroll
        for (int i = 0; i < stage::count; ++i)
          xs.raw[i] = __ldg(reinterpret_cast<const uint4*>(xp + i * stage::row_step * C + cc));
      } else {
        xs.load(xp, index_t(stage::row_step) * C, nb - row, cc, cw, vec, tid);
      }
      float4 dz4 = dz_at(rb, nb);
      set_valid(0, nb);
      __syncthreads();  // valid is set; the previous step's fragments are loaded
      // x as staged, zero past nb or past the length (NaN there cannot leak in).
#pragma unroll
      for (int i = 0; i < stage::count; ++i)
        if (stage::active(tid, i)) {
          const int r = row + i * stage::row_step;
          const bool ok = r < nb && sm.valid[0][r];
          *reinterpret_cast<uint4*>(&sm.x[0][r * sm_t::ldx + cc]) = ok ? xs.raw[i] : make_uint4(0u, 0u, 0u, 0u);
        }
      if (dz_thread) {
        if (!(dr < nb && sm.valid[0][dr])) dz4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        dw_bf16_stage_dz<PT>(sm, dz4, dr, dc, bias_block, warp, lane);
      }
      __syncthreads();
      if (bias_block && tid < PT) dw_bias_add<PT>(sm.bias, tid, bacc);
      dw_bf16_step_mma<PT, NT>(acc, a_at, b_at);
    }
  }
  store_dw_tile<PT, NT>(a, acc, k, p0, c0, cw, warp, lane);
#else
  (void)sm;
  (void)vec;
  bacc = dw_tile_plain<T, PT>(a, k, p0, c0, cw, r0, r1, bias_block, tid);
#endif
  if (bias_block && tid < PT && p0 + tid < P) a.db_part[k * P + p0 + tid] = bacc;
}

// The offset path dx += dz W on tensor cores for 16-bit dx: block (row group x, channel blocks y
// strided) keeps W [PT][128 channels] as TF32 in shared memory and walks its rows `rows` at a time. The dx
// tile never goes through shared memory: each thread loads its accumulators straight from dx (16 bytes
// per row: W's columns are stored in an order that gives each thread 8 consecutive channels of a row in
// the mma accumulator layout), adds dz (split hi + lo as for dW, hi first) times W, rounds once to T and
// writes 16 bytes per row back, for rows of valid tokens only.
template <int PT>
struct dx_tc_policy {
  static constexpr int threads = 256;
  static constexpr int warps = threads / 32;
  static constexpr int col_warps = 4;                    // warps across the channels, 32 channels each
  static constexpr int row_warps = warps / col_warps;    // 2
  static constexpr int channels = 32 * col_warps;        // 128
  static constexpr int m_tiles = 2;                      // 16-row mma tiles per warp per step
  static constexpr int rows = 16 * m_tiles * row_warps;  // 64 rows per step
  static constexpr int steps = 4;                        // row steps per block (W staged once for 256 rows)
  static constexpr int ldw = channels + 8;  // W [PT][ldw]: B reads (q * ldw + g) hit 32 distinct banks
  static constexpr int ldd = PT + 4;        // dz [rows][ldd]: A reads (g * ldd + q) hit 32 distinct banks
  static constexpr int dz_cols = PT / 4;    // dz staging: float4s per row
  static constexpr int dz_loads = rows * dz_cols / threads;
  static_assert(PT == 16 || PT == 32, "whole 8-offset k steps");
  static_assert(rows * dz_cols % threads == 0, "whole dz float4s per thread");
};

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
