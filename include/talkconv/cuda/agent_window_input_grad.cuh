// Per-tile work of the window's input gradient (dx): bucket the tile's tap events by (head, row) with a
// stable counting sort, sum each row's bucket, suffix-sum the rows. The plan and the event logic are
// detail/dx_plan.hpp (host+device, run by the CPU tests); W^T dz is not here (the offsets' kernels add it).
//
// Per tile of `tile` rows x 64 channels, per batch of (token, head) pairs (one per thread):
//   1. taps of the pair (detail::make_taps, index type Idx) -> up to 4 events (row or carry, weight);
//   2. one warp ranks all events stably, 32 pairs at a time (__match_any_sync, one counter per bucket),
//      and scans the counters (cub::WarpScan): where each bucket starts;
//   3. events placed at start + rank: a bucket lists its events in (pair / 32, tap, lane) order, fixed;
//   4. thread (row group g, vector v) sums, for each of its rows, its bucket's w * dy (16-byte dy loads
//      through L1, float accumulators); carry events are split over the row groups (index mod groups).
// Then each thread suffix-sums its rows; a raking pass over shared memory gives each row group the sum
// of the groups above it plus the carry, in a fixed order. Deterministic: no atomics on values at all.
#pragma once

#include "talkconv/cuda/agent_window.cuh"
#include "talkconv/detail/dx_plan.hpp"

#include <cub/warp/warp_scan.cuh>

#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace talkconv {
namespace cuda {
namespace detail {

// Per-dtype policy of the dx kernel, in one place: 16-byte vectors, the block shape of dx_plan.hpp.
template <class T>
struct dx_policy {
  using A = acc_t<T>;
  static constexpr int vec = sizeof(T) >= 16 ? 1 : int(16 / sizeof(T));
  TALKCONV_HOST_DEVICE static constexpr talkconv::detail::dx_block_shape shape(int v) {
    return talkconv::detail::make_dx_block_shape(int(sizeof(A)), v);
  }
  static constexpr int threads = shape(1).threads;
  static constexpr int warps = shape(1).warps;
  static constexpr int lanes = shape(1).lanes;
  static constexpr int tile = shape(1).tile;
  static constexpr int max_bins = talkconv::detail::dx_max_bins(tile);
  // Resident blocks per SM the registers must allow: 4 (32 warps, 64 registers: half the SM's warps, for the
  // gather's dependent event -> dy loads; the spills this costs, 13 reloads and 3 stores per batch of
  // pairs on sm_90, lie outside the per-event loops); 2 for 8-byte accumulators.
  static constexpr int min_blocks = sizeof(A) > 4 ? 2 : 4;
  static constexpr int tiles_per_block = 4;  // consecutive tiles per block: setup and divisions amortized
  static_assert(lanes == window_traits::lanes, "dx blocks use the window kernels' channel plan");
  static_assert(threads == warps * 32, "whole warps");
};

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
  static std::size_t scan(int groups) { return sizeof(A) * 2 * std::size_t(groups) * P::lanes; }
  static std::size_t bytes(int bins, int groups) {
    const std::size_t b = bucketing(bins), s = scan(groups);
    return b > s ? b : s;
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
};

template <class T, int VEC>
struct dx_vector {
  using A = acc_t<T>;
  // VEC consecutive elements at p (16-byte aligned when VEC > 1), widened. bfloat16 widens by placing
  // its bits (exact, one instruction per element).
  static __device__ __forceinline__ void load(const T* __restrict__ p, A (&out)[VEC]) {
    if constexpr (VEC == 1) {
      out[0] = to_acc<T>(__ldg(p));
    } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
      static_assert(VEC == 8, "16-byte vectors");
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
      const unsigned q[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        out[2 * i] = __uint_as_float(q[i] << 16);
        out[2 * i + 1] = __uint_as_float(q[i] & 0xffff0000u);
      }
    } else {
      static_assert(VEC * sizeof(T) == 16, "16-byte vectors");
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
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

template <class Idx, int VEC, class T>
__device__ void input_grad_tile(const window_args<T>& a, const dx_args& d) {
  using A = acc_t<T>;
  using P = dx_policy<T>;
  constexpr talkconv::detail::dx_block_shape S = P::shape(VEC);
  constexpr int threads = S.threads, slots = S.slots, groups = S.groups, RP = S.rows;
  static_assert(groups * RP == P::tile, "row groups cover the tile");
  using event = dx_event<A, Idx>;
  using warp_scan = cub::WarpScan<int>;
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
  A* sc_tot = reinterpret_cast<A*>(talkconv_smem);  // [groups][lanes], aliases the above after the batches
  A* sc_car = sc_tot + groups * P::lanes;

  // Pair role: (token ub + tid / nh, head h_first + tid % nh).
  const int per_batch = talkconv::detail::dx_tokens_per_batch(threads, nh);
  const int pu = tid / nh, ph = tid - pu * nh;
  // Gather role: vector v of row group g, rows [g * RP, g * RP + RP).
  const int v = tid % slots, g = tid / slots;
  const bool active = v * VEC < cn;
  const int hv = active ? a.w.head_in_block(v * VEC) : 0;

  const unsigned lt = (1u << lane) - 1u;

  for (Idx kt = k0; kt < k0 + d.tiles_per_block && kt * d.tile < Tn; ++kt) {
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
  // This thread's vector of dy at token u0: events address dy rows from here.
  const char* __restrict__ dyv =
      reinterpret_cast<const char*>(a.dy + (index_t(b) * a.g.xb + index_t(u0) * a.g.xt + index_t(c0) + v * VEC));
  // An opaque register: keeps the compiler from folding the event offset into this 64-bit sum (one
  // IMAD.WIDE.U32 per event instead of four 64-bit instructions).
  asm("" : "+l"(dyv));

  for (Idx ub = u0; ub < u1; ub += per_batch) {
    // 1. events of this thread's pair (kept in registers), their buckets staged for the ranking warp.
    const int np = static_cast<int>((u1 - ub < per_batch ? u1 - ub : per_batch) * nh);  // pairs [0, np)
    int key[4] = {-1, -1, -1, -1};
    A w[4];
    const Idx u = ub + pu;
    std::make_unsigned_t<Idx> off = 0;
    if (tid < np) {
      const A* o = offs + u * ot;
      const Idx h = h_first + ph;
      const talkconv::detail::window_taps<A, Idx> k = talkconv::detail::make_taps<A, Idx>(
          u, o[h], d.causal ? A(0) : o[static_cast<Idx>(a.w.H) + h], static_cast<Idx>(a.w.L),
          static_cast<Idx>(a.w.M), n, d.causal);
      talkconv::detail::dx_events<A, Idx>(k, t0, t1, d.tile, key, w);
#pragma unroll
      for (int j = 0; j < 4; ++j) key[j] = key[j] >= 0 ? ph * rows1 + key[j] : -1;
      off = static_cast<std::make_unsigned_t<Idx>>((u - u0) * xt);
      pkey[tid] = make_int4(key[0], key[1], key[2], key[3]);
    }
    __syncthreads();
    // 2. one warp ranks every event stably, 32 pairs at a time in (pair / 32, tap, lane) order, and
    //    scans the bucket counters: cnt[bin] = where bucket bin starts, cnt[bins] = the total.
    if (warp == 0) {
      for (int i = lane; i <= bins; i += 32) cnt[i] = 0;
      __syncwarp();
      for (int c = 0; c * 32 < np; ++c) {
        const int p = c * 32 + lane;
        const int4 k4 = p < np ? pkey[p] : make_int4(-1, -1, -1, -1);
        const int kj[4] = {k4.x, k4.y, k4.z, k4.w};
        int r[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const unsigned peers = __match_any_sync(0xffffffffu, kj[j]);
          const int before = kj[j] >= 0 ? cnt[kj[j]] : 0;
          __syncwarp();
          if (kj[j] >= 0 && __ffs(peers) - 1 == lane) cnt[kj[j]] = before + __popc(peers);
          __syncwarp();
          r[j] = before + __popc(peers & lt);
        }
        if (p < np) prank[p] = make_int4(r[0], r[1], r[2], r[3]);
      }
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
    // 3. place the events: bucket-major, each bucket in ranking order.
    if (tid < np) {
      const int4 r4 = prank[tid];
      const int rk[4] = {r4.x, r4.y, r4.z, r4.w};
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (key[j] >= 0) ev[cnt[key[j]] + rk[j]] = event{off, w[j] * inv_k};  // 1/K folded in once
    }
    __syncthreads();
    // 4. sum the buckets of this thread's rows, and its share of the carry.
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
          dx_vector<T, VEC>::load(reinterpret_cast<const T*>(dyv + std::size_t(x.off) * sizeof(T)), y);
#pragma unroll
          for (int i = 0; i < VEC; ++i) acc[r][i] += x.w * y[i];
        }
      }
      const int e1 = cnt[hb + d.tile + 1];
#pragma unroll 1
      for (int e = cnt[hb + d.tile] + g; e < e1; e += groups) {
        const event x = ev[e];
        A y[VEC];
        dx_vector<T, VEC>::load(reinterpret_cast<const T*>(dyv + std::size_t(x.off) * sizeof(T)), y);
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
    A x = A(0);
    for (int q = 0; q < groups; ++q) x += sc_car[q * P::lanes + tid];
    for (int q = groups - 1; q >= 0; --q) {
      const A t = sc_tot[q * P::lanes + tid];
      sc_tot[q * P::lanes + tid] = x;
      x += t;
    }
  }
  __syncthreads();
  if (active) {
  A above[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) above[i] = sc_tot[g * P::lanes + v * VEC + i];
  T* __restrict__ dxv = dxt + v * VEC;
#pragma unroll
  for (int r = 0; r < RP; ++r) {
    const int row = g * RP + r;
    if (t0 + row >= t1 || row >= d.tile) break;
    A out[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = acc[r][i] + above[i];
    dx_vector<T, VEC>::store(dxv + row * xt, out);
  }
  }
  __syncthreads();  // the next tile reuses the shared memory
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
