// The offset projection z = x W^T ([N, C] x [C, P]) as a tiled GEMM with SPEC step 1 fused into its
// epilogue (bias, sigmoid, dropout, zero past the length; o and o_pre written, 4 offsets per thread: one
// dropout draw, 16-byte stores): tensor cores (ldmatrix + mma.sync m16n8k16) for 16-bit storage, 3xTF32
// mma.sync for float, register-tiled FMA otherwise; and a dot-product form for tiny row counts (decoding).
#pragma once

#include "talkconv/cuda/agent_offsets.cuh"
#include "talkconv/cuda/async_copy.cuh"
#include "talkconv/cuda/mma_tf32.cuh"
#include "talkconv/detail/mma_layout.hpp"

#include <cub/warp/warp_reduce.cuh>

#include <climits>
#include <cstdint>
#include <type_traits>

namespace talkconv {
namespace cuda {
namespace detail {

// The zero of storage type T (also for __half / __nv_bfloat16, whose int constructors may be disabled).
template <class T>
__device__ __forceinline__ T zero_of() {
  return from_acc<T>(acc_t<T>(0));
}

// Register stage of a global tile: rows [0, R) x columns [c, c + K) of a row-major matrix, 16-byte
// vectors, `Threads` threads. Thread `tid` owns column vector tid % per_row of rows tid / per_row +
// i * row_step. Elements past the matrix (rows >= rows_left, columns >= width) load as zero. `vec`:
// rows and the base are 16-byte aligned (width % V == 0), else element loads.
template <class T, int R, int K, int Threads>
struct tile_stage {
  static constexpr int V = 16 / int(sizeof(T));
  static constexpr int per_row = K / V;
  static constexpr int row_step = Threads / per_row;
  static constexpr int count = (R * per_row + Threads - 1) / Threads;
  static_assert(16 % sizeof(T) == 0 && K % V == 0 && Threads % per_row == 0, "whole vectors, whole rows per pass");
  uint4 raw[count];

  __device__ __forceinline__ static int row0(int tid) { return tid / per_row; }
  __device__ __forceinline__ static int col0(int tid) { return (tid % per_row) * V; }
  __device__ __forceinline__ static bool active(int tid, int i) {
    if constexpr ((R * per_row) % Threads == 0) return true;  // every thread has `count` vectors
    return tid + i * Threads < R * per_row;
  }

  // p: this thread's first row (column 0); step: elements between its rows (row_step * width).
  __device__ __forceinline__ void load(const T* __restrict__ p, index_t step, int rows_left, int c, int width,
                                       bool vec, int tid) {
#pragma unroll
    for (int i = 0; i < count; ++i) {
      const bool ok = active(tid, i) && i * row_step < rows_left;
      const T* q = p + i * step + c;
      if (ok && vec && c + V <= width) {
        raw[i] = *reinterpret_cast<const uint4*>(q);
      } else {
        T* e = reinterpret_cast<T*>(&raw[i]);
#pragma unroll
        for (int k = 0; k < V; ++k) e[k] = ok && c + k < width ? q[k] : zero_of<T>();
      }
    }
  }
  // Every row and column present and 16-byte aligned (the block's tile lies inside the matrix): p is this
  // thread's first vector, step the elements between its rows (an int: one IMAD.WIDE per load).
  __device__ __forceinline__ void load_full(const T* __restrict__ p, int step, int tid) {
#pragma unroll
    for (int i = 0; i < count; ++i)
      if (active(tid, i)) raw[i] = __ldg(reinterpret_cast<const uint4*>(p + i * step));
  }
  __device__ __forceinline__ const T* elems(int i) const { return reinterpret_cast<const T*>(&raw[i]); }
};

// Shared memory of one projection tile: the staged x and W tiles, reused for the block's z tile after the
// K loop, and each row's token.
template <class T, int BN, bool TensorCores = project_policy<T>::tensor_cores || project_policy<T>::tf32x3>
struct project_smem;

// Tensor cores (and 3xTF32): x [rows][K + 8] and W [BN][K + 8] in T (K + 4 for float: rows 16-byte
// aligned, skewed against bank conflicts of the fragment reads), z [rows][BN + 4] in float. 3xTF32 keeps
// W split once, as it is staged (tf32_split): a row of W is 2 (K + 4) words, each 8 k [8 kb, 8 kb + 8) in
// 16 of them in b-fragment order, hi of k and k + 4 adjacent at 16 kb + 2 (k % 4) + (k % 8) / 4, lo 8 words
// after (detail::tf32_b_pair_word): the products read a fragment's hi and lo operands with one 8-byte load each,
// straight into the mma's register pairs, instead of splitting W in every warp.
template <class T, int BN>
struct project_smem<T, BN, true> {
  using pol = project_policy<T>;
  static constexpr int ldx = pol::k_tile + (sizeof(T) == 4 ? 4 : 8);
  static constexpr int ldz = BN + 4;
  static constexpr int w_words = pol::tf32x3 ? 2 : 1;  // elements of T per staged W element
  static constexpr int stage_bytes = int(sizeof(T)) * (pol::rows + w_words * BN) * ldx;
  static constexpr int z_bytes = 4 * pol::rows * ldz;
  // 16-bit x on full tiles (project_tile::run_async): a cp.async ring of project_policy::ring_stages stages,
  // each a k tile of ring_k = 32 (64-byte rows, swizzled: detail::swizzle64_byte) of x's rows and W's; none
  // before sm_80 (no cp.async) or with TALKCONV_CUDA_PROJECT_ASYNC=0: the register-staged loop's 25 KB.
  static constexpr int async_x_bytes = pol::rows * 64, async_stage_bytes = (pol::rows + BN) * 64;
#if (!defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800) && TALKCONV_CUDA_PROJECT_ASYNC != 0
  static constexpr int async_bytes = pol::tensor_cores ? pol::ring_stages * async_stage_bytes : 0;
#else
  static constexpr int async_bytes = 0;
#endif
  static constexpr int buf_bytes = stage_bytes > z_bytes ? (stage_bytes > async_bytes ? stage_bytes : async_bytes)
                                                         : (z_bytes > async_bytes ? z_bytes : async_bytes);
  alignas(128) unsigned char buf[buf_bytes];
  index_t t[pol::rows], b[pol::rows];
  bool valid[pol::rows];
};

// FMA: x [rows][K + 1] row-major (a thread's row; odd stride: conflict-free), W [K][BN] transposed (all
// threads read the same k: broadcasts), z [rows][BN + 1], all in acc_t<T>.
template <class T, int BN>
struct project_smem<T, BN, false> {
  using A = acc_t<T>;
  using pol = project_policy<T>;
  static constexpr int ldx = pol::k_tile + 1;
  static constexpr int ldz = BN + 1;
  static constexpr int stage_bytes = int(sizeof(A)) * (pol::rows * ldx + pol::k_tile * BN);
  static constexpr int z_bytes = int(sizeof(A)) * pol::rows * ldz;
  alignas(16) unsigned char buf[stage_bytes > z_bytes ? stage_bytes : z_bytes];
  index_t t[pol::rows], b[pol::rows];
  bool valid[pol::rows];
};

// The K loop of one tile: rows [r0, r0 + rows) x offsets [n0, n0 + BN), z left in sm.buf as [rows][ldz].
template <class T, int BN>
struct project_tile {
  using A = acc_t<T>;
  using pol = project_policy<T>;
  using smem = project_smem<T, BN>;
  static constexpr int threads = pol::threads, BM = pol::rows, K = pol::k_tile;
  using x_stage = tile_stage<T, BM, K, threads>;
  using w_stage = tile_stage<T, BN, K, threads>;

  // Copies the register stages into the shared tiles.
  __device__ __forceinline__ static void store(smem& sm, const x_stage& xs, const w_stage& ws, int tid) {
    if constexpr (pol::tensor_cores || pol::tf32x3) {
      T* sx = reinterpret_cast<T*>(sm.buf);
      T* sw = sx + BM * smem::ldx;
#pragma unroll
      for (int i = 0; i < x_stage::count; ++i)
        if (x_stage::active(tid, i))
          *reinterpret_cast<uint4*>(sx + (x_stage::row0(tid) + i * x_stage::row_step) * smem::ldx + x_stage::col0(tid)) =
              xs.raw[i];
#pragma unroll
      for (int i = 0; i < w_stage::count; ++i)
        if (w_stage::active(tid, i)) {
          T* d = sw + (w_stage::row0(tid) + i * w_stage::row_step) * smem::w_words * smem::ldx;
          if constexpr (pol::tf32x3) {
            // 4 floats of a W row -> their hi and lo at tf32_b_pair_word (the split the products made per
            // fragment before: the same operands, the same bits)
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              const int at = talkconv::detail::tf32_b_pair_word(w_stage::col0(tid) + k);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
              tf32_split(ws.elems(i)[k], d[at], d[at + 8]);
#else
              d[at] = ws.elems(i)[k], d[at + 8] = 0.0f;  // the FMA fallback below reads w exactly
#endif
            }
          } else {
            *reinterpret_cast<uint4*>(d + w_stage::col0(tid)) = ws.raw[i];
          }
        }
    } else {
      A* sx = reinterpret_cast<A*>(sm.buf);
      A* sw = sx + BM * smem::ldx;
#pragma unroll
      for (int i = 0; i < x_stage::count; ++i)
        if (x_stage::active(tid, i)) {
          A* d = sx + (x_stage::row0(tid) + i * x_stage::row_step) * smem::ldx + x_stage::col0(tid);
#pragma unroll
          for (int k = 0; k < x_stage::V; ++k) d[k] = to_acc<T>(xs.elems(i)[k]);
        }
#pragma unroll
      for (int i = 0; i < w_stage::count; ++i)
        if (w_stage::active(tid, i)) {
          const int n = w_stage::row0(tid) + i * w_stage::row_step, k0 = w_stage::col0(tid);
#pragma unroll
          for (int k = 0; k < w_stage::V; ++k) sw[(k0 + k) * BN + n] = to_acc<T>(ws.elems(i)[k]);
        }
    }
  }

  // z for rows [r0, r0 + BM) of x and offsets [n0, n0 + BN): K loop with the next k tile's loads in
  // flight during this one's products; leaves z in sm.buf ([BM][ldz], float or acc_t<T>).
  __device__ __forceinline__ static void run(const offsets_args<T>& a, smem& sm, index_t r0, int n0, int tid) {
    run_rows(a, sm, a.x + r0 * a.g.C, static_cast<int>(a.g.C), a.g.T * a.g.B - r0, n0, tid);
  }
  // The same for the BM rows of x from x_tile, ldr elements apart (C for rows of the [T * B, C] matrix; the fused
  // forward's time tile of one sequence: x's time stride), rows_in of them present (rows past it read as zero).
  // Ld: int (the [T * B, C] rows: ldr is C, one register with the loop bound) or index_t.
  template <class Ld>
  __device__ __forceinline__ static void run_rows(const offsets_args<T>& a, smem& sm, const T* x_tile, Ld ldr,
                                                  index_t rows_in, int n0, int tid) {
    const int C = static_cast<int>(a.g.C), P = static_cast<int>(a.g.P);
    const bool vec = C % x_stage::V == 0 && ldr % x_stage::V == 0 &&
                     reinterpret_cast<std::uintptr_t>(a.x) % 16 == 0 &&
                     reinterpret_cast<std::uintptr_t>(a.weight) % 16 == 0;
    const index_t rows_left = rows_in - x_stage::row0(tid);
    const int x_left = static_cast<int>(rows_left < BM ? rows_left : BM);
    const int w_left = P - n0 - w_stage::row0(tid);
    const T* __restrict__ xp = x_tile + index_t(x_stage::row0(tid)) * ldr;
    const T* __restrict__ wp = a.weight + index_t(n0 + w_stage::row0(tid)) * a.g.C;
    const index_t x_step = index_t(x_stage::row_step) * ldr, w_step = index_t(w_stage::row_step) * a.g.C;
    x_stage xs;
    w_stage ws;
    // The whole tile inside x and W (every block but the last rows' and a partial offset tile), C a whole
    // number of k tiles: unpredicated 16-byte loads from per-thread pointers (uniform per block).
    const bool full = vec && rows_in >= BM && n0 + BN <= P && C % K == 0 &&
                      index_t(x_stage::row_step) * (x_stage::count - 1) * ldr <= index_t(INT_MAX);
    const int x_step_full = static_cast<int>(x_stage::row_step * ldr);  // used only when full
    const T* __restrict__ xf = xp + x_stage::col0(tid);
    const T* __restrict__ wf = wp + w_stage::col0(tid);
    // The K loop is compiled twice, for full tiles and for the others: one loop's address arithmetic never
    // runs in the other's.
    auto k_loop = [&](auto full_tile) {
      constexpr bool Full = decltype(full_tile)::value;
      auto load = [&](int c) {
        if constexpr (Full) {
          xs.load_full(xf + c, x_step_full, tid);
          ws.load_full(wf + c, w_stage::row_step * C, tid);
        } else {
          xs.load(xp, x_step, x_left, c + x_stage::col0(tid), C, vec, tid);
          ws.load(wp, w_step, w_left, c + w_stage::col0(tid), C, vec, tid);
        }
      };
      load(0);
      // K tile c0: its staged registers into the shared tiles once the previous tile's products are done,
      // then the next tile's loads, in flight during this one's products.
      auto next_tile = [&](int c0) {
        __syncthreads();
        store(sm, xs, ws, tid);
        __syncthreads();
        if (c0 + K < C) load(c0 + K);
      };
      products(sm, C, tid, next_tile);
    };
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (pol::tensor_cores && TALKCONV_CUDA_PROJECT_ASYNC != 0) {
      if (full) {
        run_async(sm, x_tile, a.weight + index_t(n0) * a.g.C, C, ldr, tid);
        return;
      }
    }
#endif
    if (full)
      k_loop(std::true_type{});
    else
      k_loop(std::false_type{});
  }

  // z of the warp's 16 rows into sm.buf as [BM][ldz] (16-bit and 3xTF32 layouts): d (g + 8 (e / 2), 2 q + e % 2)
  // of column tile j. The caller has passed a barrier after the last read of the staged tiles.
  __device__ __forceinline__ static void store_z(smem& sm, const float (&acc)[BN / 8][4], int warp, int lane) {
    const int g = lane / 4, q = lane % 4;
    float* sz = reinterpret_cast<float*>(sm.buf) + (warp * 16 + g) * smem::ldz + 2 * q;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) sz[(e / 2) * 8 * smem::ldz + j * 8 + e % 2] = acc[j][e];
  }

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  // 16-bit x, a full tile (every row and offset inside x and W, C a multiple of 64, 16-byte aligned rows): the K
  // loop as a cp.async ring (no register staging, one barrier per k tile of 32). x_blk, w_blk: the block's first
  // row of x and of W; ldr: elements between x's rows (W's are C apart). Stage s holds x rows [0, BM) then W rows
  // [0, BN), 64 bytes each at swizzle64_byte. Per k tile: wait for its copies, one barrier (every thread's copies
  // landed, every warp done with the stage the next copies overwrite), the copies of k tile kt + stages - 1, then
  // its two k steps: all six fragments loaded before the first mma. The same k steps of 16 in the same order as the register path: the same sums.
  template <class Ld>
  __device__ __forceinline__ static void run_async(smem& sm, const T* __restrict__ x_blk, const T* __restrict__ w_blk,
                                                   int C, Ld ldr, int tid) {
    namespace td = talkconv::detail;
    constexpr int KA = pol::ring_k, S = pol::ring_stages;
    static_assert(KA == 32, "64-byte rows: swizzle64_byte");
    static_assert(BN % 16 == 0 && BM == 16 * (threads / 32) && threads == 2 * BM && BN * 4 <= threads,
                  "two x chunks of one row and at most one W chunk per thread per stage");
    const int warp = tid / 32, lane = tid % 32;
    const unsigned base = static_cast<unsigned>(__cvta_generic_to_shared(sm.buf));
    // This thread's copies per stage: x row tid / 2, chunks 2 (tid % 2) and + 1 (one pointer, 16 bytes apart);
    // W row tid / 4, chunk tid % 4, for the first 4 BN threads. 8 consecutive threads fill a 128-byte line.
    const int xr = tid / 2, xc = 2 * (tid % 2), wr = tid / 4, wc = tid % 4;
    const T* __restrict__ xg = x_blk + index_t(xr) * ldr + 8 * xc;
    const T* __restrict__ wg = w_blk + index_t(wr < BN ? wr : 0) * C + 8 * wc;
    const bool w_copy = wr < BN;
    const int x_d0 = td::swizzle64_byte(xr, xc), x_d1 = td::swizzle64_byte(xr, xc + 1);
    const int w_d = smem::async_x_bytes + td::swizzle64_byte(wr, wc);
    auto issue = [&](int stage) {  // the next k tile's copies into `stage`; the pointers move on by KA
      unsigned char* st = sm.buf + stage * smem::async_stage_bytes;
      cp_async_16(st + x_d0, xg);
      cp_async_16(st + x_d1, xg + 8);
      if (w_copy) cp_async_16(st + w_d, wg);
      xg += KA;
      wg += KA;
    };
    // ldmatrix rows (detail/mma_layout.hpp): x rows of the warp's 16 at k chunk 2 ks + ldsm_a_k / 8, W rows of a
    // pair of column tiles at 2 ks + ldsm_b_k / 8 (rows 16 apart share the swizzle: 16 jp rows = 1024 bytes).
    // The second k step's chunks are the first's with bit 1 flipped (chunk 2 + h = h ^ 2 before the swizzle's
    // XOR): its addresses are the first's ^ 32 (stage bases are multiples of 64).
    const int ar = warp * 16 + td::ldsm_a_row(lane), br = td::ldsm_b_row(lane);
    const unsigned a_off = unsigned(td::swizzle64_byte(ar, td::ldsm_a_k(lane) / 8));
    const unsigned b_off = unsigned(smem::async_x_bytes + td::swizzle64_byte(br, td::ldsm_b_k(lane) / 8));
    static_assert(smem::async_stage_bytes % 64 == 0 && smem::async_x_bytes % 64 == 0, "bit 5 is the chunk's");
    float acc[BN / 8][4];
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[j][e] = 0.0f;
    constexpr bool bf16 = std::is_same<T, __nv_bfloat16>::value;
    const int nk = C / KA;
#pragma unroll
    for (int s = 0; s < S - 1; ++s) {
      if (s < nk) issue(s);
      cp_async_commit();  // (empty groups keep the count: k tile kt is group kt)
    }
    int cur = 0;  // k tile kt's stage, kt % S (the next copies go to the stage before it)
#pragma unroll 1
    for (int kt = 0; kt < nk; ++kt) {
      cp_async_wait_group<S - 2>();
      __syncthreads();
      if (kt + S - 1 < nk) issue(cur == 0 ? S - 1 : cur - 1);
      cp_async_commit();
      const unsigned st = base + unsigned(cur * smem::async_stage_bytes);
      cur = cur == S - 1 ? 0 : cur + 1;
      unsigned fa[2][4], fb[2][BN / 16][4];
#pragma unroll
      for (int ks = 0; ks < 2; ++ks) {
        ldmatrix_x4(fa[ks], st + (a_off ^ unsigned(32 * ks)));
#pragma unroll
        for (int jp = 0; jp < BN / 16; ++jp)
          ldmatrix_x4(fb[ks][jp], st + (b_off ^ unsigned(32 * ks)) + unsigned(jp * 16 * 64));
      }
#pragma unroll
      for (int ks = 0; ks < 2; ++ks)
#pragma unroll
        for (int jp = 0; jp < BN / 16; ++jp) {
          mma_16bit<bf16>(acc[2 * jp], fa[ks], fb[ks][jp][0], fb[ks][jp][1]);
          mma_16bit<bf16>(acc[2 * jp + 1], fa[ks], fb[ks][jp][2], fb[ks][jp][3]);
        }
    }
    cp_async_wait_group<0>();  // only empty groups are left
    __syncthreads();           // z overwrites the stages
    store_z(sm, acc, warp, lane);
  }
#endif

  // The products of the K loop (next_tile(c0) stages k tile c0), z left in sm.buf as [BM][ldz].
  template <class NextTile>
  __device__ __forceinline__ static void products(smem& sm, int C, int tid, NextTile&& next_tile) {
    if constexpr (pol::tensor_cores || pol::tf32x3) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
      if constexpr (pol::tensor_cores) {
        // 16-bit: warp w owns rows [16 w, 16 w + 16) and the BN / 8 column tiles; per k step of 16, one
        // ldmatrix.x4 of x (the a fragment) and one per two column tiles of W (their b fragments), then
        // mma.sync m16n8k16 per column tile. Rows are ldx = K + 8 elements (144 bytes for K = 64): the 8 row
        // addresses of a matrix fall in distinct 16-byte bank groups. Shared addresses are 32-bit (WMMA's
        // fragment loads, before 2026-11-30, went through generic 64-bit addresses: 48 LD.E per k tile
        // per thread on sm_90, against 12 LDSM).
        static_assert(BN % 16 == 0 && BM == 16 * (threads / 32) && K % 16 == 0, "whole m16n8k16 tiles, ldmatrix pairs");
        const int warp = tid / 32, lane = tid % 32;
        float acc[BN / 8][4];
#pragma unroll
        for (int j = 0; j < BN / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[j][e] = 0.0f;
        const T* sx = reinterpret_cast<const T*>(sm.buf);
        const T* sw = sx + BM * smem::ldx;
        // Row addresses of the ldmatrix loads (detail/mma_layout.hpp, CPU-tested): x rows of the warp's 16, W
        // rows of a pair of column tiles.
        namespace td = talkconv::detail;
        const unsigned a_at = static_cast<unsigned>(
            __cvta_generic_to_shared(sx + (warp * 16 + td::ldsm_a_row(lane)) * smem::ldx + td::ldsm_a_k(lane)));
        const unsigned b_at = static_cast<unsigned>(
            __cvta_generic_to_shared(sw + td::ldsm_b_row(lane) * smem::ldx + td::ldsm_b_k(lane)));
        constexpr bool bf16 = std::is_same<T, __nv_bfloat16>::value;
        for (int c0 = 0; c0 < C; c0 += K) {
          next_tile(c0);
#pragma unroll
          for (int k = 0; k < K; k += 16) {
            unsigned fa[4];
            ldmatrix_x4(fa, a_at + unsigned(k) * unsigned(sizeof(T)));
#pragma unroll
            for (int jp = 0; jp < BN / 16; ++jp) {
              unsigned fb[4];
              ldmatrix_x4(fb, b_at + unsigned(jp * 16 * smem::ldx + k) * unsigned(sizeof(T)));
              mma_16bit<bf16>(acc[2 * jp], fa, fb[0], fb[1]);
              mma_16bit<bf16>(acc[2 * jp + 1], fa, fb[2], fb[3]);
            }
          }
        }
        __syncthreads();  // z overwrites the staged tiles
        store_z(sm, acc, warp, lane);
      } else {
        // float: warp w owns rows [16 w, 16 w + 16) and the BN / 8 column tiles; per k step of 8, x and W
        // fragments read from the staged tiles (conflict-free: ldx = K + 4) and split hi + lo, then
        // a_hi b_hi + a_hi b_lo + a_lo b_hi per tile (a_lo b_lo, below 2^-20 of the product, dropped:
        // < 2^-19 in all).
        static_assert(BN % 8 == 0 && BM == 16 * (threads / 32), "whole m16n8k8 tiles");
        const int warp = tid / 32, lane = tid % 32, g = lane / 4, q = lane % 4;
        float acc[BN / 8][4];
#pragma unroll
        for (int j = 0; j < BN / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[j][e] = 0.0f;
        const float* sx = reinterpret_cast<const float*>(sm.buf) + (warp * 16 + g) * smem::ldx + q;
        // W split (store above): per n tile and k step, hi (k = q, q + 4) and lo as two 8-byte loads; a half
        // warp's 16 loads in distinct banks (rows 2 (K + 4) = 72 words apart: 8 banks)
        const float* sw = reinterpret_cast<const float*>(sm.buf) + BM * smem::ldx + g * 2 * smem::ldx + 2 * q;
        for (int c0 = 0; c0 < C; c0 += K) {
          next_tile(c0);
#pragma unroll
          for (int k = 0; k < K; k += 8) {
            // a (g + 8 (e % 2), q + 4 (e / 2)); b (q + 4 e, g): detail::mma_m16n8k8.
            const float xa[4] = {sx[k], sx[8 * smem::ldx + k], sx[k + 4], sx[8 * smem::ldx + k + 4]};
            unsigned ah[4], al[4];
            tf32_split_fragment(xa, ah, al);
#pragma unroll
            for (int j = 0; j < BN / 8; ++j) {
              const float* wj = sw + j * 16 * smem::ldx + talkconv::detail::tf32_b_pair_word(k);
              const float2 wh = *reinterpret_cast<const float2*>(wj), wl = *reinterpret_cast<const float2*>(wj + 8);
              const unsigned bh[2] = {__float_as_uint(wh.x), __float_as_uint(wh.y)};
              const unsigned bl[2] = {__float_as_uint(wl.x), __float_as_uint(wl.y)};
              mma_tf32x3(acc[j], ah, al, bh, bl);
            }
          }
        }
        __syncthreads();  // z overwrites the staged tiles
        store_z(sm, acc, warp, lane);
      }
#else
      // Before sm_80 (no bf16 or TF32 mma.sync): each warp's 16 x BN sums by FMA from the same shared tiles.
      const int warp = tid / 32, lane = tid % 32;
      constexpr int per_lane = 16 * BN / 32;
      float acc[per_lane];
#pragma unroll
      for (int e = 0; e < per_lane; ++e) acc[e] = 0.0f;
      const T* sx = reinterpret_cast<const T*>(sm.buf) + warp * 16 * smem::ldx;
      const T* sw = reinterpret_cast<const T*>(sm.buf) + BM * smem::ldx;
      for (int c0 = 0; c0 < C; c0 += K) {
        next_tile(c0);
#pragma unroll
        for (int e = 0; e < per_lane; ++e) {
          const int m = (lane + 32 * e) / BN, n = (lane + 32 * e) % BN;
          for (int k = 0; k < K; ++k) {
            const int wk = pol::tf32x3 ? talkconv::detail::tf32_b_pair_word(k) : k;
            acc[e] += to_acc<T>(sx[m * smem::ldx + k]) * to_acc<T>(sw[n * smem::w_words * smem::ldx + wk]);
          }
        }
      }
      __syncthreads();
      float* sz = reinterpret_cast<float*>(sm.buf) + warp * 16 * smem::ldz;
#pragma unroll
      for (int e = 0; e < per_lane; ++e) sz[((lane + 32 * e) / BN) * smem::ldz + (lane + 32 * e) % BN] = acc[e];
#endif
    } else {
      // One row per thread (BM == threads), its BN sums in registers; W read as broadcasts.
      static_assert(BM == threads, "one row per thread");
      A acc[BN];
#pragma unroll
      for (int n = 0; n < BN; ++n) acc[n] = A(0);
      const A* sx = reinterpret_cast<const A*>(sm.buf) + tid * smem::ldx;
      const A* sw = reinterpret_cast<const A*>(sm.buf) + BM * smem::ldx;
      for (int c0 = 0; c0 < C; c0 += K) {
        next_tile(c0);
#pragma unroll 4
        for (int k = 0; k < K; ++k) {
          const A xv = sx[k];
#pragma unroll
          for (int n = 0; n < BN; ++n) acc[n] += xv * sw[k * BN + n];
        }
      }
      __syncthreads();
      A* sz = reinterpret_cast<A*>(sm.buf) + tid * smem::ldz;
#pragma unroll
      for (int n = 0; n < BN; ++n) sz[n] = acc[n];
    }
  }
};

// One block of the tiled projection: rows [r0, r0 + BM) x offsets [n0, n0 + BN). Epilogue: consecutive
// threads take consecutive offsets of a row, so o / o_pre stores are coalesced.
template <class T, int BN>
__device__ __forceinline__ void project_tile_block(const offsets_args<T>& a, project_smem<T, BN>& sm, index_t r0, int n0) {
  using tile = project_tile<T, BN>;
  using Z = std::conditional_t<project_policy<T>::tensor_cores, float, acc_t<T>>;
  constexpr int BM = tile::BM, threads = tile::threads;
  const int tid = static_cast<int>(threadIdx.x);
  const index_t N = a.g.T * a.g.B;
  __syncthreads();  // the previous tile's epilogue is done with sm
  if (tid < BM) {
    index_t t = 0, b = 0;
    const bool in = r0 + tid < N;
    sm.valid[tid] = in && row_token(a.g, r0 + tid, t, b);
    sm.t[tid] = t;
    sm.b[tid] = b;
  }
  tile::run(a, sm, r0, n0, tid);
  __syncthreads();
  const Z* sz = reinterpret_cast<const Z*>(sm.buf);
  const int P = static_cast<int>(a.g.P);
  // Thread e: row e / (BN / 4) and a group of 4 consecutive offsets (one dropout draw, 16-byte stores);
  // consecutive threads, consecutive groups of a row.
  static_assert(BN % 4 == 0, "whole groups of 4 offsets");
  constexpr int G = BN / 4;
  const bool vec = P % 4 == 0 && aligned16(a.o) && aligned16(a.o_pre);
#pragma unroll 2
  for (int e = tid; e < BM * G; e += threads) {
    const int m = e / G, n = (e % G) * 4;
    if (r0 + m < N && n0 + n < P) {
      acc_t<T> z[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) z[k] = acc_t<T>(sz[m * project_smem<T, BN>::ldz + n + k]);
      finish_offsets4(a, r0 + m, sm.t[m], sm.b[m], sm.valid[m], n0 + n, P - (n0 + n) < 4 ? P - (n0 + n) : 4, z, vec);
    }
  }
}

// The dot-product form for tiny N: warp w of block (x, y) computes offset x * warps + w of row y over all
// of C (lanes stride 16-byte vectors), a fixed-order cub::WarpReduce, then the epilogue on lane 0.
template <class T>
__device__ void project_dot_warp(const offsets_args<T>& a, index_t row, index_t j,
                                 typename cub::WarpReduce<acc_t<T>>::TempStorage& tmp) {
  using A = acc_t<T>;
  constexpr int V = 16 / int(sizeof(T));
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int C = static_cast<int>(a.g.C);
  const T* __restrict__ xr = a.x + row * a.g.C;
  const T* __restrict__ wr = a.weight + j * a.g.C;
  const bool vec = C % V == 0 && reinterpret_cast<std::uintptr_t>(a.x) % 16 == 0 &&
                   reinterpret_cast<std::uintptr_t>(a.weight) % 16 == 0;
  A s = A(0);
  if (vec) {
    for (int c = lane * V; c < C; c += 32 * V) {
      const uint4 xv = *reinterpret_cast<const uint4*>(xr + c), wv = *reinterpret_cast<const uint4*>(wr + c);
      const T* xe = reinterpret_cast<const T*>(&xv);
      const T* we = reinterpret_cast<const T*>(&wv);
#pragma unroll
      for (int k = 0; k < V; ++k) s += to_acc<T>(xe[k]) * to_acc<T>(we[k]);
    }
  } else {
    for (int c = lane; c < C; c += 32) s += to_acc<T>(xr[c]) * to_acc<T>(wr[c]);
  }
  const A z = cub::WarpReduce<A>(tmp).Sum(s);
  if (lane == 0) {
    index_t t, b;
    const bool valid = row_token(a.g, row, t, b);
    finish_offset(a, row, t, b, valid, j, z);
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
