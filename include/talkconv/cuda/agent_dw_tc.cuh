// dW = dz^T x (16-bit x and float) on tensor cores (the offset path dx += dz W: agent_offset_path_tc.cuh): TF32
// mma.sync m16n8k8 (mma_tf32.cuh) with float accumulators; for bfloat16 x, dW runs on bfloat16
// m16n8k16 with dz in three bfloat16 pieces instead (param_grads_partial_bf16_block, below). 16-bit x converts to TF32 exactly (a 16-bit
// significand fits TF32's 11 bits, and TF32 has float's exponent range, half's subnormals included); float
// x is split hi + lo like dz (3xTF32: a_hi b_hi + a_lo b_hi + a_hi b_lo). dz is float: it is split as
// dz ~ hi + lo (tf32_split: both truncated to TF32, |dz - hi - lo| < 2^-21 |dz|, float's range: no scaling,
// no underflow of a 16-bit type) and the products are summed (hi first), each exact in the float
// accumulator. Same row-chunk partials and chunk-order combine as the FMA form (agent_dz_gemm.cuh): no
// atomics. x reaches shared memory through registers (any alignment) or, aligned with C a multiple of 16 bytes, by
// cp.async two steps ahead (dw_async_steps, every dtype here): the same sums either way.
#pragma once

#include "talkconv/cuda/agent_dz_tc.cuh"
#include "talkconv/cuda/agent_project.cuh"
#include "talkconv/cuda/async_copy.cuh"
#include "talkconv/cuda/mma_tf32.cuh"
#include "talkconv/detail/mma_layout.hpp"

#include <cstdint>

namespace talkconv {
namespace cuda {
namespace detail {

template <int PT>
struct dw_tc_smem {
  using pol = dw_tc_policy<PT>;
  alignas(16) float x[pol::k_rows * pol::ldx];  // x rows as float (exact in TF32)
  alignas(16) float hi[pol::k_rows * pol::ldd];  // dz^T as A: element (p, r) at r * ldd + p
  alignas(16) float lo[pol::k_rows * pol::ldd];
  float bias[pol::warps][PT];  // channel block 0: each warp's dz column sums of the step
  bool valid[pol::k_rows];
};

// A dW block's place (grid: channel blocks x row chunks x offset tiles): channels [c0, c0 + cw), row chunk k = rows
// [r0, r1), offsets [p0, p0 + PT); the blocks of channel block 0 also sum dbias (bias: uniform over the block).
template <int PT>
struct dw_block {
  index_t c0, k, p0, r0, r1;
  int cw;
  bool bias;
  template <class T>
  __device__ __forceinline__ explicit dw_block(const offsets_args<T>& a) {
    using pol = dw_tc_policy<PT>;
    const index_t C = a.g.C, N = a.g.T * a.g.B;
    c0 = index_t(blockIdx.x) * pol::channels;
    k = blockIdx.y;
    p0 = index_t(blockIdx.z) * PT;
    r0 = k * a.rows_per_chunk;
    r1 = r0 + a.rows_per_chunk < N ? r0 + a.rows_per_chunk : N;
    cw = static_cast<int>(C - c0 < pol::channels ? C - c0 : pol::channels);
    bias = blockIdx.x == 0;
  }
};

// Zeroed mma accumulators: offset tile m (16 offsets) x channel tile n (8 channels), d layout.
template <int PT, int NT>
__device__ __forceinline__ void dw_zero(float (&acc)[PT / 16][NT][4]) {
#pragma unroll
  for (int m = 0; m < PT / 16; ++m)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[m][n][e] = 0.0f;
}

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

// One step's products on TF32 tensor cores: acc[m][n] += (dz^T of offset tile m, hi then lo) x (x of the warp's
// channel tile n) over the step's k_rows rows in order. xw: the lane's x at (row q, channel 8 NT warp + g) of the
// step's stage, ldx elements a row (XS = float, or 16-bit x converted exactly); hw, lw: dz's pieces at (row q,
// offset g), ldd floats a row. SplitX (float x): x split hi + lo too (3xTF32: the a_lo b_lo product, below 2^-20 of
// the product, is dropped: < 2^-19 in all); 16-bit x is exact in TF32.
template <int PT, int NT, int LDX, bool SplitX, class XS>
__device__ __forceinline__ void dw_tf32_step_mma(float (&acc)[PT / 16][NT][4], const XS* xw, const float* hw,
                                                 const float* lw) {
  using pol = dw_tc_policy<PT>;
#pragma unroll
  for (int k0 = 0; k0 < pol::k_rows; k0 += 8) {
    unsigned b[NT][2], bl[NT][2];
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      const float x0 = to_acc<XS>(xw[k0 * LDX + n * 8]), x1 = to_acc<XS>(xw[(k0 + 4) * LDX + n * 8]);
      if constexpr (SplitX) {
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
        if constexpr (SplitX) mma_tf32(acc[m][n], ah, bl[n]);
      }
    }
  }
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
  const index_t C = a.g.C, P = a.g.P;
  const dw_block<PT> blk(a);
  const index_t c0 = blk.c0, k = blk.k, p0 = blk.p0, r0 = blk.r0, r1 = blk.r1;
  const bool bias_block = blk.bias;  // uniform: this block also sums dbias
  const int cw = blk.cw;             // channels in this block
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
  dw_zero<PT, NT>(acc);
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
    dw_tf32_step_mma<PT, NT, pol::ldx, split_x>(acc, sm.x + q * pol::ldx + warp * (NT * 8) + g, sm.hi + q * pol::ldd + g,
                                                sm.lo + q * pol::ldd + g);
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
// x's rows reach shared memory two ways. Aligned x with C % 8 == 0 (the usual case, Async): the two-stage cp.async
// pipeline of dw_async_steps (below), x[2] in shared memory (the register staging of 4 x 16 bytes per thread spilled
// at the 64-register cap, and the loads were waited for before the step's barrier; 84 us at 8.6 instructions per
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

// A dW block's rows, step by step: a step's row count (k_rows, fewer at the chunk's end r1), their validity (warp 0
// walks them in order: row < nb and within its length) and this thread's dz role (row dr, offsets [dc, dc + 4) of the
// offset tile p0; threads past k_rows * dz_cols have none).
template <class T, int PT>
struct dw_rows {
  using pol = dw_tc_policy<PT>;
  int tid, dr, dc;
  bool dz_thread, dz_vec;
  index_t r1, p0;
  row_walk walk;
  __device__ __forceinline__ dw_rows(const offsets_args<T>& a, index_t r0, index_t r1_)
      : tid(static_cast<int>(threadIdx.x)), dr(tid / pol::dz_cols), dc((tid % pol::dz_cols) * 4),
        dz_thread(tid < pol::k_rows * pol::dz_cols),
        dz_vec(a.g.P % 4 == 0 && reinterpret_cast<std::uintptr_t>(a.dz) % 16 == 0), r1(r1_),
        p0(index_t(blockIdx.z) * PT) {
    if (tid < pol::k_rows) walk.start(a.g, r0 + tid, pol::k_rows);
  }
  __device__ __forceinline__ int rows_at(index_t rb) const {
    return static_cast<int>(r1 - rb < pol::k_rows ? r1 - rb : pol::k_rows);
  }
  // this thread's dz of the step at rb with nb rows (zero without a role or past nb)
  __device__ __forceinline__ float4 dz_at(const offsets_args<T>& a, index_t rb, int nb) const {
    const index_t P = a.g.P;
    return dz_thread && dr < nb ? load_dz4(a.dz + ((rb + dr) * P + p0 + dc), p0 + dc, P, dz_vec)
                                : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  // the next step's validity into valid[0 .. k_rows) (nb rows)
  __device__ __forceinline__ void set_valid(const offsets_args<T>& a, bool* valid, int nb) {
    if (tid < pol::k_rows) {
      valid[tid] = tid < nb && walk.valid(a.g);
      walk.advance();
    }
  }
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
// The row steps of a dW block whose x is staged by cp.async (16-byte aligned x, C a multiple of a 16-byte vector: the
// launch checks both), two steps in flight: sm.x[2] (Sm::ldx elements a row) and sm.valid[2] in shared memory. The
// copies of step s + 1 (zero-filled past the chunk and past the lengths) and the dz of step s + 1 go out before step
// s's products, so their latency hides behind them; each step has two barriers and no x in registers.
// stage_dz(dz4, dr, dc): the step's dz (row dr, offsets [dc, dc + 4) of the tile, zero for a row that is not valid)
// to shared memory, and in channel block 0 its warp's column sums (dbias), by the threads with a dz role;
// step(cur): the step's products on x[cur]. Between them one barrier, then dbias's warp sums are added to bacc.
template <class T, int PT, class Sm, class StageDz, class Step>
__device__ __forceinline__ void dw_async_steps(const offsets_args<T>& a, Sm& sm, const dw_block<PT>& b, float& bacc,
                                               StageDz&& stage_dz, Step&& step) {
  const index_t r0 = b.r0, r1 = b.r1, c0 = b.c0;
  const int cw = b.cw;
  const bool bias_block = b.bias;
  using pol = dw_tc_policy<PT>;
  using stage = tile_stage<T, pol::k_rows, pol::channels, pol::threads>;
  const int tid = static_cast<int>(threadIdx.x);
  const index_t C = a.g.C;
  dw_rows<T, PT> rows(a, r0, r1);
  const int row = stage::row0(tid), cc = stage::col0(tid);
  // xq: this thread's first x vector of the next step to issue, one add per step.
  const index_t x_step = index_t(pol::k_rows) * C, x_rows = index_t(stage::row_step) * C;
  const T* xq = a.x + ((r0 + row) * C + c0 + cc);
  const bool col_ok = cc < cw;  // cw % V == 0 here: a vector is all in or all out
  auto issue = [&](int buf) {  // this thread's copies of the step's x rows (at xq), then one commit
#pragma unroll
    for (int i = 0; i < stage::count; ++i)
      if (stage::active(tid, i)) {
        const int r = row + i * stage::row_step;
        const bool ok = col_ok && sm.valid[buf][r];
        cp_async_16_or_zero(&sm.x[buf][r * Sm::ldx + cc], ok ? xq + i * x_rows : a.x, ok);
      }
    cp_async_commit();
    xq += x_step;
  };
  const int steps = r1 > r0 ? static_cast<int>((r1 - r0 + pol::k_rows - 1) / pol::k_rows) : 0;
  float4 dz4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (steps > 0) {
    rows.set_valid(a, sm.valid[0], rows.rows_at(r0));
    dz4 = rows.dz_at(a, r0, rows.rows_at(r0));
    __syncthreads();
    issue(0);
  }
  for (int st = 0; st < steps; ++st) {
    const int cur = st & 1;
    const index_t rn = r0 + index_t(st + 1) * pol::k_rows;
    const bool more = st + 1 < steps;
    const int nb_next = more ? rows.rows_at(rn) : 0;
    if (more) rows.set_valid(a, sm.valid[cur ^ 1], nb_next);
    __syncthreads();  // valid[cur ^ 1] is set; every warp is done with step st - 1 (x[cur ^ 1], dz, bias)
    if (more)
      issue(cur ^ 1);
    else
      cp_async_commit();  // an empty group: the wait below still means "step st's copies"
    if (rows.dz_thread) {
      if (!sm.valid[cur][rows.dr]) dz4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      stage_dz(dz4, rows.dr, rows.dc);
    }
    const float4 dz_next = rows.dz_at(a, rn, nb_next);  // zero past the last step (nb_next = 0)
    cp_async_wait_group<1>();  // this thread's copies of step st
    __syncthreads();           // everyone's: x[cur], dz and the bias sums are in place
    if (bias_block && tid < PT) dw_bias_add<PT>(sm.bias, tid, bacc);
    step(cur);
    dz4 = dz_next;
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
  const index_t C = a.g.C, P = a.g.P;
  const dw_block<PT> blk(a);
  const index_t c0 = blk.c0, k = blk.k, p0 = blk.p0, r0 = blk.r0, r1 = blk.r1;
  const bool bias_block = blk.bias;  // uniform: this block also sums dbias
  const int cw = blk.cw;             // channels in this block
  const bool vec = C % stage::V == 0 && reinterpret_cast<std::uintptr_t>(a.x) % 16 == 0;
  float bacc = 0.0f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  namespace td = talkconv::detail;
  const int warp = tid / 32, lane = tid % 32;
  constexpr int NT = pol::n_tiles;
  float acc[PT / 16][NT][4];
  dw_zero<PT, NT>(acc);
  // ldmatrix row addresses (32-bit shared): dz pieces at (k row, offset column), x at (k row, channel).
  const unsigned a_at = static_cast<unsigned>(
      __cvta_generic_to_shared(&sm.d[0][td::ldsm_t_a_k(lane) * sm_t::ldd + td::ldsm_t_a_m(lane)]));
  const unsigned b_at = static_cast<unsigned>(__cvta_generic_to_shared(
      &sm.x[0][td::ldsm_t_b_k(lane) * sm_t::ldx + warp * (NT * 8) + td::ldsm_t_b_n(lane)]));
  constexpr unsigned stage_bytes = unsigned(sizeof(T)) * pol::k_rows * sm_t::ldx;
  if constexpr (Async) {
    dw_async_steps<T, PT>(
        a, sm, blk, bacc,
        [&](float4 z, int zr, int zc) { dw_bf16_stage_dz<PT>(sm, z, zr, zc, bias_block, warp, lane); },
        [&](int cur) { dw_bf16_step_mma<PT, NT>(acc, a_at, b_at + unsigned(cur) * stage_bytes); });
  } else {
    dw_rows<T, PT> rows(a, r0, r1);
    const int row = stage::row0(tid), cc = stage::col0(tid);
    const bool full_cols = vec && cw == pol::channels;
    for (index_t rb = r0; rb < r1; rb += pol::k_rows) {
      const int nb = rows.rows_at(rb);
      stage xs;
      const T* xp = a.x + ((rb + row) * C + c0);
      if (full_cols && nb == pol::k_rows) {
#pragma unroll
        for (int i = 0; i < stage::count; ++i)
          xs.raw[i] = __ldg(reinterpret_cast<const uint4*>(xp + i * stage::row_step * C + cc));
      } else {
        xs.load(xp, index_t(stage::row_step) * C, nb - row, cc, cw, vec, tid);
      }
      float4 dz4 = rows.dz_at(a, rb, nb);
      rows.set_valid(a, sm.valid[0], nb);
      __syncthreads();  // valid is set; the previous step's fragments are loaded
      // x as staged, zero past nb or past the length (NaN there cannot leak in).
#pragma unroll
      for (int i = 0; i < stage::count; ++i)
        if (stage::active(tid, i)) {
          const int r = row + i * stage::row_step;
          const bool ok = r < nb && sm.valid[0][r];
          *reinterpret_cast<uint4*>(&sm.x[0][r * sm_t::ldx + cc]) = ok ? xs.raw[i] : make_uint4(0u, 0u, 0u, 0u);
        }
      if (rows.dz_thread) {
        if (!(rows.dr < nb && sm.valid[0][rows.dr])) dz4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        dw_bf16_stage_dz<PT>(sm, dz4, rows.dr, rows.dc, bias_block, warp, lane);
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

// ---- dW for half and float x on TF32 tensor cores, x staged by cp.async -------------------------------------------
// param_grads_partial_tc_block's sums (the same steps, masking, dz pieces, dbias and output, hence the same bits) with
// x's rows copied to shared memory as stored (dw_async_steps: two steps in flight, no x in registers) and converted to
// TF32 (16-bit x: exactly; float: split hi + lo) as the fragments are read. The register staging waited for each
// step's loads before its barrier: 128 us for float x at the benchmark shape, 14.4 instructions per element, 2.1 TB/s
// (H200, 2026-11-30, 1127dd5). float: 79 KB of shared memory (dynamic), 2 blocks per SM; half: 45 KB.
template <class T, int PT>
struct dw_tc_async_smem {
  using pol = dw_tc_policy<PT>;
  // elements of T a row: 16-byte rows for cp.async; the fragment reads (row q, channel g) hit 32 distinct banks for
  // float (264 = 8 mod 32 words) and 16 distinct words, two lanes each, for 16-bit x
  static constexpr int ldx = pol::channels + 8;
  alignas(16) T x[2][pol::k_rows * ldx];
  alignas(16) float hi[pol::k_rows * pol::ldd];  // dz^T as A: element (p, r) at r * ldd + p
  alignas(16) float lo[pol::k_rows * pol::ldd];
  float bias[pol::warps][PT];
  bool valid[2][pol::k_rows];
};

template <class T, int PT>
__device__ __forceinline__ void param_grads_partial_tc_async_block(const offsets_args<T>& a, dw_tc_async_smem<T, PT>& sm) {
  using pol = dw_tc_policy<PT>;
  using sm_t = dw_tc_async_smem<T, PT>;
  const int tid = static_cast<int>(threadIdx.x);
  const dw_block<PT> b(a);
  float bacc = 0.0f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const int warp = tid / 32, lane = tid % 32, g = lane / 4, q = lane % 4;
  constexpr int NT = pol::n_tiles;
  float acc[PT / 16][NT][4];
  dw_zero<PT, NT>(acc);
  const int xo = q * sm_t::ldx + warp * (NT * 8) + g;
  dw_async_steps<T, PT>(
      a, sm, b, bacc,
      [&](float4 z, int zr, int zc) {
        store_tf32_split(sm.hi + zr * pol::ldd + zc, sm.lo + zr * pol::ldd + zc, z);
        if (b.bias) dw_bias_warp_sums<PT>(sm.bias, z, zc, warp, lane);
      },
      [&](int cur) {
        dw_tf32_step_mma<PT, NT, sm_t::ldx, std::is_same<T, float>::value>(acc, sm.x[cur] + xo, sm.hi + q * pol::ldd + g,
                                                                         sm.lo + q * pol::ldd + g);
      });
  store_dw_tile<PT, NT>(a, acc, b.k, b.p0, b.c0, b.cw, warp, lane);
#else
  (void)sm;
  bacc = dw_tile_plain<T, PT>(a, b.k, b.p0, b.c0, b.cw, b.r0, b.r1, b.bias, tid);
#endif
  if (b.bias && tid < PT && b.p0 + tid < a.g.P) a.db_part[b.k * a.g.P + b.p0 + tid] = bacc;
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
