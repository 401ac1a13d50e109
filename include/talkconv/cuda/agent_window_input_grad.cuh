// Per-tile work of the window's input gradient (dx): bucket the tile's tap events by (head, row) with a
// stable counting sort, sum each row's bucket, suffix-sum the rows. The plan and the event logic are
// detail/dx_plan.hpp (host+device, run by the CPU tests). For 16-bit x and float the layer's W^T dz is added here too
// (the fused offset path below: dx is written once); otherwise the offsets' kernels add it after.
//
// Per tile of `tile` rows x 64 channels: rounds of candidate (token, head) pairs (one per thread) queue those
// that may have an event in the tile (detail::dx_pair_queued) in a ring, in pair order; per batch of up to 256
// queued records (one per thread):
//   1. taps of the record's pair (detail::make_taps, index type Idx) -> up to 4 events (row or carry, weight);
//   2. every warp ranks the events of its 32 pairs stably (__match_any_sync, its own 16-bit counter per
//      bucket), the chunks' counts are scanned per bucket in chunk order and the buckets' sizes across
//      buckets (cub::WarpScan): where each bucket starts (when the table does not fit, one warp ranks all
//      chunks in order against one counter per bucket: the same ranks);
//   3. events placed at start + rank: a bucket lists its events in (pair / 32, tap, lane) order, fixed;
//   4. thread (row group g, vector v) sums, for each of its rows, its bucket's w * dy (16-byte dy loads
//      through L1, float accumulators); carry events are split over the row groups (index mod groups).
// Then each thread suffix-sums its rows; a raking pass over shared memory gives each row group the sum
// of the groups above it plus the carry, in a fixed order. Deterministic: no atomics on values at all.
// A block walks its detail::dx_tiles_per_block tiles from the last to the first: only the last one has
// carry events (the tokens whose taps reach past it, ~K per head); each lower tile's carry is the tile above's
// window dx at its first row, which the raking pass has just summed (the chained carry: carry gathers once
// per block instead of once per tile).
//
// Fused offset path (16-bit x and float, 16-byte vectors, P <= 32 * fused_chunks): before the store, each
// warp adds W^T dz to its rows x channels on tensor cores (TF32 m16n8k8; dz split hi + lo as in the dz
// GEMMs; W exact in TF32 for 16-bit x, split hi + lo too for float: 3xTF32), the window's dx in the lane's
// registers being the accumulators: the orders of detail/mma_layout.hpp (dxf_*) make a lane's accumulators
// exactly its own rows x channels, and lane (vector lane / 4, row group lane % 4 of its warp's) is the
// gather role for these vector widths. W^T of the block's channels is staged once per block in fragment
// order (8 KiB per chunk of 32 offsets, twice for float); dz is staged per tile in fragment order (16 KiB,
// coalesced 16-byte loads). Sums per element: the window's dx, then chunk by chunk, step by step, hi then lo
// (float: a_hi b_hi, a_hi b_lo, a_lo b_hi): fixed, and dx is rounded to T once.
#pragma once

#include "talkconv/cuda/agent_window.cuh"
#include "talkconv/cuda/async_copy.cuh"
#include "talkconv/cuda/mma_tf32.cuh"
#include "talkconv/detail/dx_plan.hpp"
#include "talkconv/detail/mma_layout.hpp"

#include <cub/warp/warp_scan.cuh>

#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace talkconv {
namespace cuda {
namespace detail {

// One event in shared memory: element offset of the token's dy row from the row of the tile's first
// candidate token (never negative: one IMAD.WIDE.U32 makes the address), and its weight.
template <class A, class Idx>
struct dx_event {
  std::make_unsigned_t<Idx> off;
  A w;
};

// Dynamic shared memory: bucketing (counters, then events) and the final scan alias each other.
template <class T, class Idx>
struct dx_smem {
  using A = acc_t<T>;
  using P = dx_policy<T>;
  // Bucket counters (bins + 1), then the staged buckets and ranks of the pairs (int4 each), then events.
  TALKCONV_HOST_DEVICE static std::size_t counters_bytes(int bins) {
    return (sizeof(int) * (std::size_t(bins) + 1) + 15) / 16 * 16;
  }
  TALKCONV_HOST_DEVICE static std::size_t events_at(int bins) {
    return counters_bytes(bins) + 2 * sizeof(int4) * std::size_t(P::threads);
  }
  static std::size_t bucketing(int bins) {
    return events_at(bins) + sizeof(dx_event<A, Idx>) * std::size_t(P::threads) * 4;
  }
  // The compaction's ring of 2 * threads records (token offset, head byte), then one count per warp: where the
  // host puts it (dx_args::queue_at): in the fused path's dz buffer when that is not the dy stage (the ring is
  // empty when the buffer is written, after a tile's batches), else after everything else.
  static constexpr std::size_t queue_bytes = ((sizeof(Idx) + 1) * 2 * std::size_t(P::threads) + sizeof(int) * P::warps + 15) / 16 * 16;
  static_assert(queue_bytes <= sizeof(float) * std::size_t(P::tile) * 32, "the ring fits the fused path's dz buffer");
  static constexpr bool queue_in_dz(bool fused) { return fused && !P::stage_dy; }
  static std::size_t scan(int groups) { return sizeof(A) * 2 * std::size_t(groups) * P::lanes; }
  // W^T staged for the fused offset path, after everything else (never aliased): `chunks` chunks of 32 offsets.
  static std::size_t weights_at(int bins, int groups) {
    const std::size_t b = bucketing(bins), s = scan(groups);
    return ((b > s ? b : s) + 15) / 16 * 16;
  }
  // The rank table, after everything else when the host adds it: one 16-bit row per warp of bins + 1 counts
  // (a chunk's events per bucket, at most 128; then its first place within the bucket, below 32 * 4 * warps).
  static std::size_t rank_table_bytes(int bins) {
    return (sizeof(unsigned short) * std::size_t(P::warps) * (std::size_t(bins) + 1) + 15) / 16 * 16;
  }
  // Fused: W^T (chunks x dxf_chunk_floats, twice when split_w), then the dz buffer (the tile's rows x 32
  // offsets). Staged dy (dx_policy::stage_dy): stage_rows rows of stage_row_bytes from stage_at (a multiple
  // of 128 at or after the dz buffer's start), aliasing the dz buffer: the stage is read in the batches, the
  // dz buffer after them.
  static std::size_t tail_at(int bins, int groups, int chunks) {
    return weights_at(bins, groups) +
           sizeof(float) * std::size_t(talkconv::detail::dxf_chunk_floats) * std::size_t(chunks) * (P::split_w ? 2 : 1);
  }
  static std::size_t stage_at(int bins, int groups, int chunks) { return (tail_at(bins, groups, chunks) + 127) / 128 * 128; }
  static std::size_t bytes(int bins, int groups, int chunks = 0, int stage_rows = 0) {
    const std::size_t dz = chunks ? tail_at(bins, groups, chunks) + sizeof(float) * std::size_t(P::tile) * 32
                                  : tail_at(bins, groups, chunks);
    const std::size_t st = stage_rows ? stage_at(bins, groups, chunks) + std::size_t(P::stage_row_bytes) * std::size_t(stage_rows) : 0;
    return dz > st ? dz : st;
  }
};

// Everything the dx kernel reads besides window_args.
struct dx_args {
  int tile = 0;      // rows per tile (dx_tile_rows)
  int nh_max = 1;    // most heads meeting a block
  index_t tiles = 0;  // tiles per sequence
  int tiles_per_block = 1;  // consecutive tiles one block walks (its setup paid once)
  index_t blocks_per_seq = 0;  // ceil(tiles / tiles_per_block): grid x = B * blocks_per_seq
  bool causal = false;
  int chunks = 0;           // fused offset path: 32-offset chunks of W^T staged (0: not fused, a.dz unused)
  std::size_t w_at = 0;     // fused: byte offset of the staged W^T in dynamic shared memory
  std::size_t rank_at = 0;  // byte offset of the rank table (dx_smem::rank_table_bytes), 0: one warp ranks
  int stage_rows = 0;       // staged dy (dx_policy::stage_dy): rows of the stage = most distinct tokens per batch
  unsigned stage_at = 0;    // byte offset of the stage in dynamic shared memory (a multiple of 128)
  std::size_t queue_at = 0;  // byte offset of the compaction's ring (dx_smem::queue_bytes; a multiple of 16)
};

template <class T, int VEC>
struct dx_vector {
  using A = acc_t<T>;
  // VEC consecutive elements at p (16-byte aligned when VEC > 1), widened. bfloat16 widens by placing
  // its bits (exact, one instruction per element).
  // Shared: p is in shared memory (the staged dy rows).
  template <bool Shared = false>
  static __device__ __forceinline__ void load(const T* __restrict__ p, A (&out)[VEC]) {
    if constexpr (VEC == 1) {
      out[0] = to_acc<T>(Shared ? *p : __ldg(p));
    } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
      static_assert(VEC == 8, "16-byte vectors");
      const uint4 raw = Shared ? *reinterpret_cast<const uint4*>(p) : __ldg(reinterpret_cast<const uint4*>(p));
      const unsigned q[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        out[2 * i] = __uint_as_float(q[i] << 16);
        out[2 * i + 1] = __uint_as_float(q[i] & 0xffff0000u);
      }
    } else {
      static_assert(VEC * sizeof(T) == 16, "16-byte vectors");
      const uint4 raw = Shared ? *reinterpret_cast<const uint4*>(p) : __ldg(reinterpret_cast<const uint4*>(p));
      T e[VEC];
      memcpy(e, &raw, sizeof(raw));
#pragma unroll
      for (int i = 0; i < VEC; ++i) out[i] = to_acc<T>(e[i]);
    }
  }
  static __device__ __forceinline__ void store(T* __restrict__ p, const A (&in)[VEC]) {
    if constexpr (VEC == 1) {
      *p = from_acc<T>(in[0]);
    } else {
      T e[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) e[i] = from_acc<T>(in[i]);
      uint4 raw;
      memcpy(&raw, e, sizeof(raw));
      *reinterpret_cast<uint4*>(p) = raw;
    }
  }
};

// W^T of the block's channels [c0, c0 + cn) at detail::dxf_a_position(CV, ...), chunk kc at kc *
// dxf_chunk_floats, zero past P and cn: as float (exact for 16-bit T), or for float split hi + lo (tf32_split),
// the lo copy chunks * dxf_chunk_floats on. Once per block; one 16-byte vector per thread and step.
template <class T, int CV>
__device__ __forceinline__ void stage_fused_weights(float* wf, const T* __restrict__ weight, index_t P, index_t C,
                                                    index_t c0, int cn, int chunks, int tid, int threads) {
  namespace td = talkconv::detail;
  static_assert(CV * sizeof(T) == 16, "16-byte vectors");
  constexpr bool split = std::is_same<T, float>::value;
  const bool vec = C % CV == 0 && reinterpret_cast<std::uintptr_t>(weight) % 16 == 0;
  for (int e = tid; e < chunks * 32 * (64 / CV); e += threads) {
    const int p = e / (64 / CV), c = (e % (64 / CV)) * CV;  // offset p, channels [c, c + CV) of the block
    const T* src = weight + (index_t(p) * C + c0 + c);
    float f[CV];
    if (vec && p < P && c + CV <= cn) {
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(src));
      T ev[CV];
      memcpy(ev, &raw, sizeof(raw));
#pragma unroll
      for (int u = 0; u < CV; ++u) f[u] = to_acc<T>(ev[u]);
    } else {
#pragma unroll
      for (int u = 0; u < CV; ++u) f[u] = p < P && c + u < cn ? to_acc<T>(src[u]) : 0.0f;
    }
    float* at = wf + (p / 32) * td::dxf_chunk_floats + td::dxf_a_position(CV, c, p % 32);
#pragma unroll
    for (int u = 0; u < CV; ++u) {
      if constexpr (split) {
        float h, l;
        tf32_split(f[u], h, l);
        at[td::dxf_a_step(u)] = h;
        at[chunks * td::dxf_chunk_floats + td::dxf_a_step(u)] = l;
      } else {
        at[td::dxf_a_step(u)] = f[u];
      }
    }
  }
}

// out (this lane's RV rows x CV channels of dx: rows RV (lane % 4) + r of its warp's row block, channels
// CV (lane / 4) + i of its warp's 8 CV) += W^T dz, for the dx kernel's gather role (warp w: row block w / wpr,
// channel part w % wpr). wf: W^T staged (stage_fused_weights); zb: the block's dz buffer (128 rows x 32
// offsets, shared memory); dzt: dz at the tile's first token (offsets' layout); rows of the tile below
// `rows` are read (in the tile, below t1 and the length), the others count as zero. Every thread of the
// block calls it (block barriers when two warps share a row block).
template <class Idx, int CV, int RV, bool SplitW>
__device__ __forceinline__ void add_fused_offset_path(float (&out)[RV][CV], const float* wf, float* zb,
                                                      const float* __restrict__ dzt, Idx ot, int rows, index_t P,
                                                      bool dz_vec, int chunks, int warp, int lane) {
  namespace td = talkconv::detail;
  constexpr int wpr = 64 / (8 * CV);  // warps per row block: 1 (16-bit), 2 (float)
  static_assert(4 * RV == 16 * wpr, "a row block is staged 16 rows per warp");
  const int rb = warp / wpr, h = warp % wpr;
  float* zr = zb + rb * td::dxf_block_b_floats(RV);  // this warp's row block
  auto sync = [] {
    if constexpr (wpr == 1)
      __syncwarp();
    else
      __syncthreads();
  };
  for (int kc = 0; kc < chunks; ++kc) {
    // 1. Rows [16 h, 16 h + 16) of the row block x the chunk's 32 offsets into the buffer, b fragment order:
    //    the lane takes offsets [pl, pl + 4) of rows r0 + 4 i (coalesced 16-byte loads, two 8-byte stores).
    sync();  // the previous chunk's (or tile's) fragments are read
    {
      const int r0 = 16 * h + lane / 8, pl = (lane % 8) * 4, pc = kc * 32, first = rb * 4 * RV + r0;
      const int nlive = rows > first ? ((rows - first + 3) / 4 < 4 ? (rows - first + 3) / 4 : 4) : 0;  // rows read
      const float* zp = dzt + (static_cast<Idx>(first) * ot + pc + pl);
      const Idx rstep = 4 * ot;
      const bool full = dz_vec && index_t(pc) + 32 <= P;  // uniform: the chunk's offsets all exist
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const bool live = i < nlive;
        const float* zi = zp + i * rstep;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (full) {
          if (live) v = __ldg(reinterpret_cast<const float4*>(zi));
        } else if (live) {
          const index_t p = index_t(pc) + pl;
          v.x = p < P ? zi[0] : 0.0f;
          v.y = p + 1 < P ? zi[1] : 0.0f;
          v.z = p + 2 < P ? zi[2] : 0.0f;
          v.w = p + 3 < P ? zi[3] : 0.0f;
        }
        float* at = zr + td::dxf_b_position(RV, r0 + 4 * i, pl);
        *reinterpret_cast<float2*>(at) = make_float2(v.x, v.y);
        *reinterpret_cast<float2*>(at + 64) = make_float2(v.z, v.w);
      }
    }
    sync();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    // 2. Four k steps, a rolled loop (unrolled, the compiler holds every step's operands at once and spills).
    //    Live: the 32 sums and one step's operands.
    const float* ap = wf + kc * td::dxf_chunk_floats + td::dxf_a_fragment(CV, h, 0, 0, lane);
    const float* bp = zr + lane * 2;
#pragma unroll 1
    for (int s = 0; s < 4; ++s, ap += 32 * 4, bp += 32 * 2) {
      if constexpr (!SplitW) {
        // W exact in TF32: per column tile one b read, split hi + lo; per channel tile one a read serving
        // every column tile, hi then lo.
        unsigned bh[RV / 2][2], bl[RV / 2][2];
#pragma unroll
        for (int nt = 0; nt < RV / 2; ++nt) {
          const float2 z = *reinterpret_cast<const float2*>(bp + nt * 4 * 32 * 2);
          const float zf[2] = {z.x, z.y};
          tf32_split_fragment(zf, bh[nt], bl[nt]);
        }
#pragma unroll
        for (int m = 0; m < CV / 2; ++m) {
          const float4 af = *reinterpret_cast<const float4*>(ap + m * 4 * 32 * 4);
          const unsigned a4[4] = {__float_as_uint(af.x), __float_as_uint(af.y), __float_as_uint(af.z), __float_as_uint(af.w)};
          float acc[RV / 2][4];
#pragma unroll
          for (int nt = 0; nt < RV / 2; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[nt][e] = out[td::dxf_d_row(nt, e)][td::dxf_d_channel(m, e)];
#pragma unroll
          for (int nt = 0; nt < RV / 2; ++nt) mma_tf32(acc[nt], a4, bh[nt]);
#pragma unroll
          for (int nt = 0; nt < RV / 2; ++nt) mma_tf32(acc[nt], a4, bl[nt]);
#pragma unroll
          for (int nt = 0; nt < RV / 2; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) out[td::dxf_d_row(nt, e)][td::dxf_d_channel(m, e)] = acc[nt][e];
        }
      } else {
        // W split too (3xTF32): per channel tile its a hi and lo, per column tile one b read split hi + lo;
        // products a_hi b_hi, a_hi b_lo, a_lo b_hi (a_lo b_lo, below 2^-20 of the product, dropped: < 2^-19 in all).
        const float* al_p = ap + chunks * td::dxf_chunk_floats;
#pragma unroll
        for (int m = 0; m < CV / 2; ++m) {
          const float4 fh = *reinterpret_cast<const float4*>(ap + m * 4 * 32 * 4);
          const float4 fl = *reinterpret_cast<const float4*>(al_p + m * 4 * 32 * 4);
          const unsigned ah[4] = {__float_as_uint(fh.x), __float_as_uint(fh.y), __float_as_uint(fh.z), __float_as_uint(fh.w)};
          const unsigned al[4] = {__float_as_uint(fl.x), __float_as_uint(fl.y), __float_as_uint(fl.z), __float_as_uint(fl.w)};
#pragma unroll
          for (int nt = 0; nt < RV / 2; ++nt) {
            const float2 z = *reinterpret_cast<const float2*>(bp + nt * 4 * 32 * 2);
            const float zf[2] = {z.x, z.y};
            unsigned bh[2], bl[2];
            tf32_split_fragment(zf, bh, bl);
            float acc[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[e] = out[td::dxf_d_row(nt, e)][td::dxf_d_channel(m, e)];
            mma_tf32x3(acc, ah, al, bh, bl);
#pragma unroll
            for (int e = 0; e < 4; ++e) out[td::dxf_d_row(nt, e)][td::dxf_d_channel(m, e)] = acc[e];
          }
        }
      }
    }
#else
    // Before sm_80: the same sums by plain multiply-adds from the staged operands.
    for (int r = 0; r < RV; ++r)
      for (int i = 0; i < CV; ++i) {
        const int rl = RV * (lane % 4) + r, c = 8 * CV * h + CV * (lane / 4) + i;
        for (int p = 0; p < 32; ++p) {
          const int at = kc * td::dxf_chunk_floats + td::dxf_a_position(CV, c, p);
          const float w = SplitW ? wf[at] + wf[at + chunks * td::dxf_chunk_floats] : wf[at];
          out[r][i] += zr[td::dxf_b_position(RV, rl, p)] * w;
        }
      }
#endif
  }
}

// The end of a dx tile, both dx kernels' (the event kernel's input_grad_tile, the sorted-events kernel's
// dx_tile_finish): the fused offset path (W^T dz from the staged W^T at d.w_at and the dz buffer after it; every
// lane: inactive ones hold zeros and multiply zero columns of W^T), then the store of the thread's rows [t0, t1) below
// d.tile; with W^T dz, rows past the length n are stored 0 whatever W holds (an Inf in W times their zero dz would be
// NaN). acc: the thread's RP rows x VEC channels (row group g, vector v), dxt: dx at (sequence b, row t0, channel c0).
template <class Idx, int VEC, bool Fused, bool SplitW, int RP, class T, class A, class D>
__device__ __forceinline__ void dx_tile_store(const window_args<T>& a, const D& d, A (&acc)[RP][VEC], bool active,
                                              int g, int v, int warp, int lane, Idx b, Idx t0, Idx t1, Idx n, Idx xt,
                                              Idx ot, T* __restrict__ dxt) {
  extern __shared__ __align__(16) unsigned char talkconv_smem[];
  if constexpr (Fused) {
    const Idx end = t1 < n ? t1 : n;  // rows past the length add nothing (their dz is 0 anyway)
    const int rows = end > t0 ? static_cast<int>(end - t0) : 0;
    float* wf = reinterpret_cast<float*>(talkconv_smem + d.w_at);
    add_fused_offset_path<Idx, VEC, RP, SplitW>(acc, wf, wf + d.chunks * talkconv::detail::dxf_chunk_floats * (SplitW ? 2 : 1),
                               a.dz + (index_t(b) * a.g.ob + index_t(t0) * a.g.ot), ot, rows, a.g.P,
                               a.g.P % 4 == 0 && reinterpret_cast<std::uintptr_t>(a.dz) % 16 == 0, d.chunks, warp, lane);
  }
  if (active) {
    T* __restrict__ dxv = dxt + v * VEC;
#pragma unroll
    for (int r = 0; r < RP; ++r) {
      const int row = g * RP + r;
      if (t0 + row >= t1 || row >= d.tile) break;
      if constexpr (Fused) {
        if (t0 + row >= n)
#pragma unroll
          for (int i = 0; i < VEC; ++i) acc[r][i] = A(0);
      }
      dx_vector<T, VEC>::store(dxv + row * xt, acc[r]);
    }
  }
}

// A flag counted over the block in thread order (whole warps, one barrier): x = the flags set in the threads
// before this one, y = the block's total. counts: one int per warp in shared memory, not read by anyone else
// between the caller's previous barrier and this call's.
template <int Warps>
__device__ __forceinline__ int2 block_flag_count(bool flag, int* counts, int warp, int lane) {
  const unsigned m = __ballot_sync(0xffffffffu, flag);
  if (lane == 0) counts[warp] = __popc(m);
  __syncthreads();
  int before = __popc(m & ((1u << lane) - 1u)), total = 0;
#pragma unroll
  for (int i = 0; i < Warps; ++i) {
    const int c = counts[i];
    before += i < warp ? c : 0;
    total += c;
  }
  return make_int2(before, total);
}

template <class Idx, int VEC, bool Fused, class T>
__device__ void input_grad_tile(const window_args<T>& a, const dx_args& d) {
  using A = acc_t<T>;
  using P = dx_policy<T>;
  constexpr talkconv::detail::dx_block_shape S = P::shape(VEC);
  constexpr int threads = S.threads, slots = S.slots, groups = S.groups, RP = S.rows;
  static_assert(groups * RP == P::tile, "row groups cover the tile");
  using event = dx_event<A, Idx>;
  using warp_scan = cub::WarpScan<int>;
  // dy rows of each batch staged in shared memory (16-bit vectors): events carry the row's key
  // (detail::dx_stage_key), the gather reads the lane's vector at dx_stage_byte(key, v).
  constexpr bool Staged = P::stage_dy && VEC == P::vec;
  static_assert(!Staged || (slots == 8 && threads % 64 == 0), "a staged row is 8 vectors; 8 rows of threads");
  __shared__ typename warp_scan::TempStorage scan_tmp;
  extern __shared__ __align__(16) unsigned char talkconv_smem[];

  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  // The block: sequence b, tiles [k0, k0 + per_block) of it, channels [c0, c0 + cn) meeting heads
  // [h_first, h_first + nh). Everything here (divisions included) is paid once per block.
  const Idx groups_per_seq = static_cast<Idx>(d.blocks_per_seq);
  const Idx b = static_cast<Idx>(blockIdx.x) / groups_per_seq;
  const Idx k0 = (static_cast<Idx>(blockIdx.x) - b * groups_per_seq) * d.tiles_per_block;
  const Idx Tn = static_cast<Idx>(a.g.T);
  const Idx n = static_cast<Idx>(a.g.length(b));
  index_t c0l;
  int cn, sub;
  a.w.block_channels(static_cast<int>(blockIdx.y), c0l, cn, sub);
  const Idx c0 = static_cast<Idx>(c0l);
  index_t h_first_l;
  int nh;
  a.w.block_heads(static_cast<int>(blockIdx.y), h_first_l, nh);
  const Idx h_first = static_cast<Idx>(h_first_l);
  const Idx xt = static_cast<Idx>(a.g.xt), ot = static_cast<Idx>(a.g.ot);
  const int rows1 = d.tile + 1;  // buckets per head: rows, then the carry
  const int bins = nh * rows1;
  const A* __restrict__ offs = a.offsets + index_t(b) * a.g.ob;
  const unsigned long long most = static_cast<unsigned long long>(Tn);
  const Idx rl = static_cast<Idx>(a.reach[0] < most ? a.reach[0] : most);
  const Idx rr = static_cast<Idx>(a.reach[1] < most ? a.reach[1] : most);
  const A inv_k = A(1) / A(a.w.L + a.w.M + 1);

  int* cnt = reinterpret_cast<int*>(talkconv_smem);  // [bins] + total
  int4* pkey = reinterpret_cast<int4*>(talkconv_smem + dx_smem<T, Idx>::counters_bytes(bins));
  int4* prank = pkey + threads;
  event* ev = reinterpret_cast<event*>(talkconv_smem + dx_smem<T, Idx>::events_at(bins));
  // The rank table [chunks][bins + 1] (16-bit), when the host found room for it: every warp ranks its own 32
  // pairs at once instead of one warp ranking them all while the others wait at the barrier.
  unsigned short* ranks = d.rank_at ? reinterpret_cast<unsigned short*>(talkconv_smem + d.rank_at) : nullptr;
  // The ring of queued records (token - u0, head - h_first) and the rounds' per-warp counts.
  constexpr unsigned qmask = 2u * threads - 1u;
  static_assert((2 * threads & (2 * threads - 1)) == 0, "the ring's size is a power of two");
  auto* qdu = reinterpret_cast<std::make_unsigned_t<Idx>*>(talkconv_smem + d.queue_at);
  auto* qph = reinterpret_cast<unsigned char*>(qdu + 2 * threads);
  int* qcount = reinterpret_cast<int*>(qph + 2 * threads);
  A* sc_tot = reinterpret_cast<A*>(talkconv_smem);  // [groups][lanes], aliases the above after the batches
  A* sc_car = sc_tot + groups * P::lanes;

  // Pair role in a round: (token ur + tid / nh, head h_first + tid % nh).
  const int per_round = talkconv::detail::dx_tokens_per_round(threads, nh);
  const int pu = tid / nh, ph = tid - pu * nh;
  // Batches of at most `cap` records (one per thread; staged: and at most d.stage_rows distinct tokens, one stage
  // row each: step 0a below).
  const int cap = threads;
  // Gather role: vector v of row group g, rows [g * RP, g * RP + RP). 16-bit vectors: lane / 4 is the vector,
  // lane % 4 the warp's row group (the fused offset path's mma orders; the same rows per warp either way).
  // The fused path's roles (lane / 4 the vector of the warp's 8, lane % 4 the row group of its 4) for the
  // vector widths it serves, fused or not: one mapping per dtype; the same rows per warp as tid / slots.
  constexpr bool mma_roles = P::fusable && VEC == P::vec;
  constexpr int wpr = mma_roles ? slots / 8 : 1;  // warps sharing a row group set
  static_assert(!Fused || (mma_roles && slots == 8 * wpr && groups == 4 * S.warps / wpr && VEC * RP == 32),
                "the fused offset path's lane roles");
  const talkconv::detail::dx_role role = talkconv::detail::dx_gather_role(warp, lane, slots, mma_roles);
  const int v = role.v, g = role.g;
  const bool active = v * VEC < cn;
  const int hv = active ? a.w.head_in_block(v * VEC) : 0;

  const unsigned lt = (1u << lane) - 1u;
  if constexpr (Fused)  // W^T in fragment order, once per block (visible after the first tile's barriers)
    stage_fused_weights<T, VEC>(reinterpret_cast<float*>(talkconv_smem + d.w_at), a.weight, a.g.P, a.g.C, c0l, cn,
                                d.chunks, tid, threads);

  // The block's tiles from the last to the first: the last tile's carry from its carry events, each lower
  // tile's from the one above it (`chain`, thread tid < cn: the window part of dx at that tile's first row).
  const Idx kend = k0 + d.tiles_per_block < static_cast<Idx>(d.tiles) ? k0 + d.tiles_per_block : static_cast<Idx>(d.tiles);
  A chain = A(0);
  for (Idx kt = kend - 1; kt >= k0; --kt) {
  const bool last = kt == kend - 1;
  // The tile: rows [t0, t1); 64-bit base pointers decided here, offsets from them are Idx.
  const Idx t0 = kt * d.tile;
  const Idx t1 = t0 + d.tile < Tn ? t0 + d.tile : Tn;
  T* __restrict__ dxt = a.dx + (index_t(b) * a.g.xb + index_t(t0) * a.g.xt + index_t(c0));
  A acc[RP][VEC];
  A car[VEC];
#pragma unroll
  for (int k = 0; k < RP; ++k)
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc[k][i] = A(0);
#pragma unroll
  for (int i = 0; i < VEC; ++i) car[i] = A(0);

  Idx u0, u1;
  talkconv::detail::dx_candidates<Idx>(t0, t1, n, rl, rr, u0, u1);
  // Not staged: this thread's vector of dy at token u0, events address dy rows from here. An opaque
  // register: keeps the compiler from folding the event offset into this 64-bit sum (one IMAD.WIDE.U32 per
  // event instead of four 64-bit instructions).
  const char* __restrict__ dyv = nullptr;
  if constexpr (!Staged) {
    dyv = reinterpret_cast<const char*>(a.dy + (index_t(b) * a.g.xb + index_t(u0) * a.g.xt + index_t(c0) + v * VEC));
    asm("" : "+l"(dyv));
  }

  // The taps of pair (token u0 + du, head h_first + hp), and its events in this tile: bucket keys (-1: none)
  // and weights.
  auto pair_taps = [&](Idx du, int hp) {
    const Idx u = u0 + du;
    const A* o = offs + u * ot;
    const Idx h = h_first + hp;
    return talkconv::detail::make_taps<A, Idx>(u, o[h], d.causal ? A(0) : o[static_cast<Idx>(a.w.H) + h],
                                               static_cast<Idx>(a.w.L), static_cast<Idx>(a.w.M), n, d.causal);
  };
  auto pair_events = [&](Idx du, int hp, int(&key)[4], A(&w)[4]) {
    talkconv::detail::dx_events<A, Idx>(pair_taps(du, hp), t0, t1, d.tile, key, w, last);
#pragma unroll
    for (int j = 0; j < 4; ++j) key[j] = key[j] >= 0 ? hp * rows1 + key[j] : -1;
  };

  // Rounds of per_round candidate tokens x nh heads (one pair per thread) queue the pairs with an event in
  // the tile, in pair order, in a ring of 2 * threads records; batches of `cap` queued records are ranked
  // and gathered. A pair without an event (a window covering the tile whole when its carry is chained, ~K
  // per head) costs one evaluation in a round, never a place in a batch.
  int fill = 0;         // queued records (block-uniform)
  unsigned qhead = 0;   // the first one's place in the ring
  for (Idx ur = u0;;) {
    if (ur < u1 && fill < cap) {
      const Idx u = ur + pu;
      bool has = false;
      if (pu < per_round && u < u1) has = talkconv::detail::dx_pair_queued<A, Idx>(pair_taps(u - u0, ph), t0, t1, last);
      const int2 cnt2 = block_flag_count<S.warps>(has, qcount, warp, lane);
      const int pos = cnt2.x, total = cnt2.y;
      if (has) {
        const unsigned at = (qhead + static_cast<unsigned>(fill + pos)) & qmask;
        qdu[at] = static_cast<std::make_unsigned_t<Idx>>(u - u0);
        qph[at] = static_cast<unsigned char>(ph);
      }
      fill += total;
      ur += per_round;
      __syncthreads();  // the records written, qcount read
      continue;
    }
    if (fill == 0) break;
    int np = fill < cap ? fill : cap;  // this batch: records [0, np) from qhead
    int srow = tid;                    // staged: the stage row of this thread's record (its token's)
    if constexpr (Staged) {
      // 0a. one stage row per distinct token (records are token-major): record t opens a row when its token
      //     differs from record t - 1's; the batch ends before the (stage_rows + 1)-th token. rowtok (aliasing
      //     prank, unused until the ranking) names each row's token.
      auto* rowtok = reinterpret_cast<std::make_unsigned_t<Idx>*>(prank);
      const bool mine = tid < np;
      const std::make_unsigned_t<Idx> du = mine ? qdu[(qhead + static_cast<unsigned>(tid)) & qmask] : 0;
      const bool opens = mine && (tid == 0 || qdu[(qhead + static_cast<unsigned>(tid) - 1u) & qmask] != du);
      const int2 cnt2 = block_flag_count<S.warps>(opens, qcount, warp, lane);
      const int before = cnt2.x, tokens = cnt2.y;
      srow = before + (opens ? 0 : -1);
      if (opens && srow < d.stage_rows) rowtok[srow] = du;
      np = __syncthreads_count(mine && srow < d.stage_rows);  // also orders rowtok before the staging reads it
      // 0b. the rows' dy into the stage, without waiting: thread (row tid / 8, vector tid % 8), then every 32nd
      //     row. The previous batch's gather ended at a barrier.
      const int nrows = tokens < d.stage_rows ? tokens : d.stage_rows;
      constexpr int rstep = threads / 8;
      const int sv = tid % 8, r0 = tid / 8;
      if (sv * VEC < cn) {
        const T* src = a.dy + (index_t(b) * a.g.xb + index_t(c0) + sv * VEC) + u0 * xt;
        unsigned char* dst = talkconv_smem + talkconv::detail::dx_stage_byte(talkconv::detail::dx_stage_key(d.stage_at, r0), sv);
        for (int r = r0; r < nrows; r += rstep, dst += rstep * P::stage_row_bytes)
          cp_async_16(dst, src + static_cast<Idx>(rowtok[r]) * xt);
      }
    }
    // 1. events of this thread's record (kept in registers), their buckets staged for the ranking.
    int key[4] = {-1, -1, -1, -1};
    A w[4];
    std::make_unsigned_t<Idx> off = 0;
    if (tid < np) {
      const unsigned at = (qhead + static_cast<unsigned>(tid)) & qmask;
      const std::make_unsigned_t<Idx> du = qdu[at];
      pair_events(static_cast<Idx>(du), qph[at], key, w);
      if constexpr (Staged)
        off = talkconv::detail::dx_stage_key(d.stage_at, srow);
      else
        off = static_cast<std::make_unsigned_t<Idx>>(du * static_cast<std::make_unsigned_t<Idx>>(xt));
      pkey[tid] = make_int4(key[0], key[1], key[2], key[3]);
    }
    qhead = (qhead + static_cast<unsigned>(np)) & qmask;
    fill -= np;
    __syncthreads();
    // 2. rank every event stably in (pair / 32, tap, lane) order and find where each bucket starts:
    //    cnt[bin] = the bucket's first event, cnt[bins] = the total. rank32 ranks the 32 pairs of chunk c
    //    against the counters ctr (per bucket: the events ranked so far), advancing them.
    auto rank32 = [&](auto* ctr, int c) {
      const int p = c * 32 + lane;
      const int4 k4 = p < np ? pkey[p] : make_int4(-1, -1, -1, -1);
      const int kj[4] = {k4.x, k4.y, k4.z, k4.w};
      int r[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const unsigned peers = __match_any_sync(0xffffffffu, kj[j]);
        const int before = kj[j] >= 0 ? static_cast<int>(ctr[kj[j]]) : 0;
        __syncwarp();
        if (kj[j] >= 0 && __ffs(peers) - 1 == lane)
          ctr[kj[j]] = static_cast<std::remove_reference_t<decltype(ctr[0])>>(before + __popc(peers));
        __syncwarp();
        r[j] = before + __popc(peers & lt);
      }
      if (p < np) prank[p] = make_int4(r[0], r[1], r[2], r[3]);
    };
    const int chunks = (np + 31) / 32;  // <= warps: one pair per thread
    if (ranks) {
      // 2a. every warp ranks its own chunk against its own row of the table (ranks within the chunk),
      // 2b. then per bucket, in chunk order: each chunk's first place in the bucket, the bucket's size.
      if (warp < chunks) {
        unsigned short* row = ranks + warp * (bins + 1);
        for (int i = lane; i <= bins; i += 32) row[i] = 0;
        __syncwarp();
        rank32(row, warp);
      }
      __syncthreads();
      for (int k = tid; k <= bins; k += threads) {
        int run = 0;
        for (int c = 0; c < chunks; ++c) {
          const int x = ranks[c * (bins + 1) + k];
          ranks[c * (bins + 1) + k] = static_cast<unsigned short>(run);
          run += x;
        }
        cnt[k] = run;
      }
      __syncthreads();
    } else if (warp == 0) {
      // One warp ranks the chunks in order against one counter per bucket.
      for (int i = lane; i <= bins; i += 32) cnt[i] = 0;
      __syncwarp();
      for (int c = 0; c < chunks; ++c) rank32(cnt, c);
    }
    // 2c. warp 0 scans the bucket sizes into starts.
    if (warp == 0) {
      const int per_lane = (bins + 1 + 31) / 32, lo = lane * per_lane;
      int sum = 0;
      for (int i = 0; i < per_lane; ++i)
        if (lo + i <= bins) sum += cnt[lo + i];
      int run;
      warp_scan(scan_tmp).ExclusiveSum(sum, run);
      for (int i = 0; i < per_lane; ++i)
        if (lo + i <= bins) {
          const int c = cnt[lo + i];
          cnt[lo + i] = run;
          run += c;
        }
    }
    __syncthreads();
    // 3. place the events: bucket-major, each bucket in ranking order (with the table: the bucket's start,
    //    then the chunk's first place in it, then the rank within the chunk; the same order).
    if (tid < np) {
      const int4 r4 = prank[tid];
      const int rk[4] = {r4.x, r4.y, r4.z, r4.w};
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (key[j] >= 0) {
          const int at = cnt[key[j]] + rk[j] + (ranks ? static_cast<int>(ranks[warp * (bins + 1) + key[j]]) : 0);
          ev[at] = event{off, w[j] * inv_k};  // 1/K folded in once
        }
    }
    if constexpr (Staged) cp_async_wait_all();  // this thread's staged rows; the barrier: everyone's
    __syncthreads();
    // 4. sum the buckets of this thread's rows, and its share of the carry.
    auto load_dy = [&](std::make_unsigned_t<Idx> off, A(&y)[VEC]) {
      if constexpr (Staged)
        dx_vector<T, VEC>::template load<true>(
            reinterpret_cast<const T*>(talkconv_smem + talkconv::detail::dx_stage_byte(static_cast<unsigned>(off), v)), y);
      else
        dx_vector<T, VEC>::load(reinterpret_cast<const T*>(dyv + std::size_t(off) * sizeof(T)), y);
    };
    if (active) {
      const int hb = hv * rows1;
#pragma unroll
      for (int r = 0; r < RP; ++r) {
        const int row = g * RP + r;
        if (row >= d.tile) break;
        const int e1 = cnt[hb + row + 1];
#pragma unroll 2
        for (int e = cnt[hb + row]; e < e1; ++e) {
          const event x = ev[e];
          A y[VEC];
          load_dy(x.off, y);
#pragma unroll
          for (int i = 0; i < VEC; ++i) acc[r][i] += x.w * y[i];
        }
      }
      const int e1 = cnt[hb + d.tile + 1];
#pragma unroll 1
      for (int e = cnt[hb + d.tile] + g; e < e1; e += groups) {
        const event x = ev[e];
        A y[VEC];
        load_dy(x.off, y);
#pragma unroll
        for (int i = 0; i < VEC; ++i) car[i] += x.w * y[i];
      }
    }
    __syncthreads();
  }

  // Suffix sums: within the thread's rows, then across row groups (raking, fixed order) with the carry.
#pragma unroll
  for (int r = RP - 2; r >= 0; --r)
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc[r][i] += acc[r + 1][i];
  if (active)
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      sc_tot[g * P::lanes + v * VEC + i] = acc[0][i];
      sc_car[g * P::lanes + v * VEC + i] = car[i];
    }
  __syncthreads();
  if (tid < cn) {
    A x = chain;  // the block's last tile: 0, then its carry events' sums (the lower tiles have none)
    if (last)
      for (int q = 0; q < groups; ++q) x += sc_car[q * P::lanes + tid];
    for (int q = groups - 1; q >= 0; --q) {
      const A t = sc_tot[q * P::lanes + tid];
      sc_tot[q * P::lanes + tid] = x;
      x += t;
    }
    chain = x;  // the carry of the tile below
  }
  __syncthreads();
  if (active) {
    A above[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) above[i] = sc_tot[g * P::lanes + v * VEC + i];
#pragma unroll
    for (int r = 0; r < RP; ++r)
#pragma unroll
      for (int i = 0; i < VEC; ++i) acc[r][i] += above[i];
  }
  dx_tile_store<Idx, VEC, Fused, P::split_w>(a, d, acc, active, g, v, warp, lane, b, t0, t1, n, xt, ot, dxt);
  __syncthreads();  // the next tile reuses the shared memory
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
