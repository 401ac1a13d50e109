// The window's input gradient (dx) from sorted tap events (detail/dx_sorted.hpp): the per-thread and per-block work
// of the three kernels around one CUB radix sort (kernel_window_input_grad.cuh launches them):
//   1. dx_sorted_events_rows: every (token, head) writes its four tap events, key (sequence, head, row) and value
//      (token, w / K), at ((sequence, token, head), tap); an event that adds nothing gets the sentinel key;
//   2. cub::DeviceRadixSort::SortPairs (stable): each row's events contiguous, in (token, tap) order;
//   3. dx_sorted_starts_rows: the first event of every (sequence, head, row), by binary search of the sorted keys;
//   4. input_grad_sorted_tile: a block per (sequence, dx_sorted_tiles_per_block tiles, channel block) walks its tiles from
//      the last to the first:
//      a. the tile's row starts for the block's heads into shared memory, the heads' ranges concatenated;
//      b. the events in chunks of dx_policy::sorted_stage_bytes into shared memory (coalesced), then each thread
//         (row group g, vector v) sums, for each of its rows, the row's events of the chunk in sorted order:
//         w * dy (16-byte dy loads through L1, float accumulators);
//      c. the block's last tile: the carry of the tokens whose taps lie on both sides of its end, in rounds of
//         `threads` (token, head) pairs (token and w / K of pair p in shared memory), pair p summed by row group
//         p % groups (the lower tiles' carry is chained, as in the event kernel);
//      d. dx_tile_finish (the event kernel's steps): suffix sums, raking with the carry, the chain, W^T dz, the store.
// Work per element: the events of its row (4 per token on average) whatever the window; per block, the ~K
// straddling tokens of its last tile's end. Deterministic: no atomics; every sum in a fixed order.
#pragma once

#include "talkconv/cuda/agent_window_input_grad.cuh"
#include "talkconv/detail/dx_sorted.hpp"

#include <cstdint>
#include <type_traits>

namespace talkconv {
namespace cuda {
namespace detail {

// The sorted path's device arrays and the gather kernel's plan (kernel_window_input_grad.cuh: plan_sorted_dx).
template <class A, class Idx>
struct dx_sorted_args {
  using U = std::make_unsigned_t<Idx>;
  using value = talkconv::detail::dx_sorted_value<A, U>;
  const value* vals = nullptr;  // sorted events
  const U* starts = nullptr;    // [B * H * T + 1]: the first event of (sequence, head, row)
  int tile = 0;                 // rows per tile (dx_policy::tile)
  index_t tiles = 0;            // tiles per sequence
  int tiles_per_block = 1;
  index_t blocks_per_seq = 0;   // grid x = B * blocks_per_seq
  bool causal = false;
  int nh_max = 1;               // most heads meeting a block
  int cap = 0;                  // events per staged chunk
  unsigned rs_at = 0;           // shared memory: row starts [nh_max][tile + 1] (U)
  unsigned hb_at = 0;           // heads' concatenation bases [nh_max + 1], then their first sorted events [nh_max] (U)
  unsigned car_at = 0;          // the carry round's tokens [threads] (U), weights [threads] (A), heads [threads] (bytes)
  int chunks = 0;               // fused offset path: W^T chunks of 32 offsets (0: not fused)
  std::size_t w_at = 0;         // fused: staged W^T, then the dz buffer
};

// 1. Grid-stride over (sequence b, token t), t fastest (consecutive threads write consecutive events): four events per
//    head.
template <class Idx, class T>
__device__ void dx_sorted_events_rows(const window_args<T>& a, std::make_unsigned_t<Idx>* __restrict__ keys,
                                      talkconv::detail::dx_sorted_value<acc_t<T>, std::make_unsigned_t<Idx>>* __restrict__ vals,
                                      std::make_unsigned_t<Idx> sentinel, bool causal) {
  using A = acc_t<T>;
  using U = std::make_unsigned_t<Idx>;
  namespace td = talkconv::detail;
  const Idx N = static_cast<Idx>(a.g.T * a.g.B), Tn = static_cast<Idx>(a.g.T), H = static_cast<Idx>(a.w.H);
  const A inv_k = A(1) / A(a.w.L + a.w.M + 1);
  for (Idx r = static_cast<Idx>(blockIdx.x) * static_cast<Idx>(blockDim.x) + static_cast<Idx>(threadIdx.x); r < N;
       r += static_cast<Idx>(gridDim.x) * static_cast<Idx>(blockDim.x)) {
    const Idx b = r / Tn, t = r - b * Tn, n = static_cast<Idx>(a.g.length(index_t(b)));
    const A* o = a.offsets + (index_t(b) * a.g.ob + index_t(t) * a.g.ot);
    for (Idx h = 0; h < H; ++h) {
      const Idx e0 = td::dx_sorted_event_index<Idx>(b, t, h, 0, Tn, H);
      Idx row[4] = {-1, -1, -1, -1};
      A w[4] = {A(0), A(0), A(0), A(0)};
      if (t < n)
        td::dx_sorted_events<A, Idx>(
            td::make_taps<A, Idx>(t, o[h], causal ? A(0) : o[H + h], static_cast<Idx>(a.w.L), static_cast<Idx>(a.w.M), n, causal),
            row, w);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const bool live = row[j] >= 0;
        keys[e0 + j] = live ? td::dx_sorted_key<U, Idx>(b, h, row[j], Tn, H) : sentinel;
        vals[e0 + j] = td::dx_sorted_value<A, U>{live ? static_cast<U>(t) : U(0), live ? w[j] * inv_k : A(0)};
      }
    }
  }
}

// 3. Grid-stride over q = (sequence, head, row) and the end (q = B * H * T): starts[q] = the first sorted event whose
//    key is at least q (the sentinels sort after every row).
template <class U>
__device__ void dx_sorted_starts_rows(const U* __restrict__ keys, U items, U rows, U* __restrict__ starts) {
  for (U q = static_cast<U>(blockIdx.x) * static_cast<U>(blockDim.x) + static_cast<U>(threadIdx.x); q <= rows;
       q += static_cast<U>(gridDim.x) * static_cast<U>(blockDim.x)) {
    U lo = 0, hi = items;
    while (lo < hi) {
      const U mid = lo + (hi - lo) / 2;
      if (keys[mid] < q)
        lo = mid + 1;
      else
        hi = mid;
    }
    starts[q] = lo;
  }
}

// The end of a dx tile (the event kernel, input_grad_tile, writes its raking steps out inline: calling this function
// there, inlined, changes its register allocation, which then spills in its 16-bit fused gather loop, 2 local loads and
// 2 stores per 2 events, nvcc 13.0, sm_90; both share the last step, dx_tile_store, which leaves the event kernel's SASS
// as it was; the CPU emulations share one finish, tests/test_cuda_tiles.cpp): each thread's RP rows
// suffix-summed, the raking pass over row groups in a fixed order with the carry (`last`: the chain, then the row groups'
// carry sums in group order; a lower tile: the chain), the chain for the tile below (thread tid < cn: the window part
// of dx at this tile's first row), the fused offset path (W^T dz: the staged W^T at d.w_at, the dz buffer after it), the
// store of rows [t0, t1) below d.tile. sc_tot: 2 * Groups * Lanes accumulators of shared memory, free when called.
// D: the kernel's arguments, with tile (rows per tile), w_at (the staged W^T's byte offset) and chunks.
template <class Idx, int VEC, bool Fused, bool SplitW, int RP, int Groups, int Lanes, class T, class A, class D>
__device__ __forceinline__ void dx_tile_finish(const window_args<T>& a, const D& d, A (&acc)[RP][VEC], const A (&car)[VEC],
                                               A& chain, bool last, A* sc_tot, int g, int v, bool active, int cn, int tid,
                                               int warp, int lane, Idx b, Idx t0, Idx t1, Idx n, Idx xt, Idx ot,
                                               T* __restrict__ dxt) {
  extern __shared__ __align__(16) unsigned char talkconv_smem[];
  constexpr int groups = Groups;
  A* sc_car = sc_tot + groups * Lanes;
  // Suffix sums: within the thread's rows, then across row groups (raking, fixed order) with the carry.
#pragma unroll
  for (int r = RP - 2; r >= 0; --r)
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc[r][i] += acc[r + 1][i];
  if (active)
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      sc_tot[g * Lanes + v * VEC + i] = acc[0][i];
      sc_car[g * Lanes + v * VEC + i] = car[i];
    }
  __syncthreads();
  if (tid < cn) {
    A x = chain;  // the block's last tile: 0, then its carry events' sums (the lower tiles have none)
    if (last)
      for (int q = 0; q < groups; ++q) x += sc_car[q * Lanes + tid];
    for (int q = groups - 1; q >= 0; --q) {
      const A t = sc_tot[q * Lanes + tid];
      sc_tot[q * Lanes + tid] = x;
      x += t;
    }
    chain = x;  // the carry of the tile below
  }
  __syncthreads();
  if (active) {
    A above[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) above[i] = sc_tot[g * Lanes + v * VEC + i];
#pragma unroll
    for (int r = 0; r < RP; ++r)
#pragma unroll
      for (int i = 0; i < VEC; ++i) acc[r][i] += above[i];
  }
  dx_tile_store<Idx, VEC, Fused, SplitW>(a, d, acc, active, g, v, warp, lane, b, t0, t1, n, xt, ot, dxt);
}

// 4. The tiles of one block (grid: B * blocks_per_seq, channel blocks; dx_policy::threads threads).
template <class Idx, int VEC, bool Fused, class T>
__device__ void input_grad_sorted_tile(const window_args<T>& a, const dx_sorted_args<acc_t<T>, Idx>& d) {
  using A = acc_t<T>;
  using P = dx_policy<T>;
  using U = std::make_unsigned_t<Idx>;
  using value = typename dx_sorted_args<A, Idx>::value;
  namespace td = talkconv::detail;
  constexpr td::dx_block_shape S = P::shape(VEC);
  constexpr int threads = S.threads, slots = S.slots, groups = S.groups, RP = S.rows, tile = P::tile;
  static_assert(groups * RP == tile, "row groups cover the tile");
  extern __shared__ __align__(16) unsigned char talkconv_smem[];

  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  // The block: sequence b, tiles [k0, k0 + tiles_per_block), channels [c0, c0 + cn) meeting heads [h_first, h_first + nh).
  const Idx per_seq = static_cast<Idx>(d.blocks_per_seq);
  const Idx b = static_cast<Idx>(blockIdx.x) / per_seq;
  const Idx k0 = (static_cast<Idx>(blockIdx.x) - b * per_seq) * d.tiles_per_block;
  const Idx Tn = static_cast<Idx>(a.g.T), H = static_cast<Idx>(a.w.H);
  const Idx n = static_cast<Idx>(a.g.length(b));
  index_t c0l;
  int cn, sub;
  a.w.block_channels(static_cast<int>(blockIdx.y), c0l, cn, sub);
  index_t h_first_l;
  int nh;
  a.w.block_heads(static_cast<int>(blockIdx.y), h_first_l, nh);
  const Idx h_first = static_cast<Idx>(h_first_l);
  const Idx xt = static_cast<Idx>(a.g.xt), ot = static_cast<Idx>(a.g.ot);
  const A* __restrict__ offs = a.offsets + index_t(b) * a.g.ob;
  const unsigned long long most = static_cast<unsigned long long>(Tn);
  const Idx rl = static_cast<Idx>(a.reach[0] < most ? a.reach[0] : most);
  const Idx rr = static_cast<Idx>(a.reach[1] < most ? a.reach[1] : most);
  const A inv_k = A(1) / A(a.w.L + a.w.M + 1);

  value* ev = reinterpret_cast<value*>(talkconv_smem);  // a chunk of events; the raking pass aliases it
  A* sc_tot = reinterpret_cast<A*>(talkconv_smem);
  U* rs = reinterpret_cast<U*>(talkconv_smem + d.rs_at);  // [nh][tile + 1]: concatenated positions
  U* hb = reinterpret_cast<U*>(talkconv_smem + d.hb_at);  // [nh + 1] concatenation bases
  U* hlo = hb + d.nh_max + 1;                              // [nh] the heads' first sorted events in the tile
  U* cu = reinterpret_cast<U*>(talkconv_smem + d.car_at);  // the carry round: tokens, then weights
  A* cw = reinterpret_cast<A*>(cu + threads);
  unsigned char* ch = reinterpret_cast<unsigned char*>(cw + threads);  // the pairs' heads (of the block's)

  // Gather role (the event kernel's): vector v of row group g.
  constexpr bool mma_roles = P::fusable && VEC == P::vec;
  static_assert(!Fused || (mma_roles && VEC * RP == 32), "the fused offset path's lane roles");
  const td::dx_role role = td::dx_gather_role(warp, lane, slots, mma_roles);
  const int v = role.v, g = role.g;
  const bool active = v * VEC < cn;
  const int hv = active ? a.w.head_in_block(v * VEC) : 0;
  // dy of this thread's vector at token 0 of sequence b (a token's row: + u * xt).
  const T* __restrict__ dyb = a.dy + (index_t(b) * a.g.xb + c0l + v * VEC);
  if constexpr (Fused)
    stage_fused_weights<T, VEC>(reinterpret_cast<float*>(talkconv_smem + d.w_at), a.weight, a.g.P, a.g.C, c0l, cn, d.chunks,
                                tid, threads);

  const Idx kend = k0 + d.tiles_per_block < static_cast<Idx>(d.tiles) ? k0 + d.tiles_per_block : static_cast<Idx>(d.tiles);
  A chain = A(0);
  for (Idx kt = kend - 1; kt >= k0; --kt) {
    const bool last = kt == kend - 1;
    const Idx t0 = kt * tile;
    const Idx t1 = t0 + tile < Tn ? t0 + tile : Tn;
    T* __restrict__ dxt = a.dx + (index_t(b) * a.g.xb + index_t(t0) * a.g.xt + c0l);
    A acc[RP][VEC];
    A car[VEC];
#pragma unroll
    for (int k = 0; k < RP; ++k)
#pragma unroll
      for (int i = 0; i < VEC; ++i) acc[k][i] = A(0);
#pragma unroll
    for (int i = 0; i < VEC; ++i) car[i] = A(0);

    // a. The heads' ranges [starts(t0), starts(t1)), concatenated; then every row's start in the concatenation.
    if (tid < nh) {
      const U* st = d.starts + static_cast<U>(b * H + h_first + tid) * static_cast<U>(Tn);
      hlo[tid] = st[t0];
      hb[tid + 1] = st[t1] - st[t0];
    }
    __syncthreads();
    if (tid == 0) {
      U run = 0;
      hb[0] = 0;
      for (int h = 0; h < nh; ++h) {
        run += hb[h + 1];
        hb[h + 1] = run;
      }
    }
    __syncthreads();
    for (int e = tid; e < nh * (tile + 1); e += threads) {
      const int h = e / (tile + 1), r = e - h * (tile + 1);
      const Idx row = t0 + r < t1 ? t0 + r : t1;
      const U* st = d.starts + static_cast<U>(b * H + h_first + h) * static_cast<U>(Tn);
      rs[e] = hb[h] + (st[row] - hlo[h]);
    }
    __syncthreads();

    // b. The events in chunks of d.cap: staged, then each thread's rows.
    const U total = hb[nh];
    int h = 0;  // the head of this thread's staged event: its positions q only grow, within and across chunks
    for (U c_lo = 0; c_lo < total; c_lo += static_cast<U>(d.cap)) {
      const U c_hi = total - c_lo < static_cast<U>(d.cap) ? total : c_lo + static_cast<U>(d.cap);
      for (U q = c_lo + static_cast<U>(tid); q < c_hi; q += static_cast<U>(threads)) {
        while (h + 1 < nh && hb[h + 1] <= q) ++h;
        ev[q - c_lo] = d.vals[hlo[h] + (q - hb[h])];
      }
      __syncthreads();
      if (active) {
        const U* rh = rs + hv * (tile + 1);
#pragma unroll
        for (int r = 0; r < RP; ++r) {
          const int row = g * RP + r;
          const U s0 = rh[row], s1 = rh[row + 1];
          const U e0 = s0 > c_lo ? s0 : c_lo, e1 = s1 < c_hi ? s1 : c_hi;
#pragma unroll 2
          for (U e = e0; e < e1; ++e) {
            const value x = ev[e - c_lo];
            A y[VEC];
            dx_vector<T, VEC>::load(dyb + static_cast<Idx>(x.u) * xt, y);
#pragma unroll
            for (int i = 0; i < VEC; ++i) acc[r][i] += x.w * y[i];
          }
        }
      }
      __syncthreads();
    }

    // c. The carry at t1 of the block's last tile: tokens whose taps lie on both sides of t1.
    if (last && t1 < n) {
      Idx u0, u1;
      td::dx_candidates<Idx>(t1, t1, n, rl, rr, u0, u1);
      const int per_round = td::dx_tokens_per_round(threads, nh);
      const int pu = tid / nh, ph = tid - pu * nh;
      for (Idx ur = u0; ur < u1; ur += per_round) {
        const Idx u = ur + pu;
        A w = A(0);
        if (pu < per_round && u < u1) {
          const A* o = offs + u * ot;
          const Idx h = h_first + ph;
          const auto k = td::make_taps<A, Idx>(u, o[h], d.causal ? A(0) : o[H + h], static_cast<Idx>(a.w.L),
                                               static_cast<Idx>(a.w.M), n, d.causal);
          if (td::dx_sorted_carry<A, Idx>(k, t1, w))
            w *= inv_k;
          else
            w = A(0);
        }
        cu[tid] = static_cast<U>(u);
        cw[tid] = w;
        ch[tid] = static_cast<unsigned char>(ph);
        __syncthreads();
        if (active)
          for (int p = g; p < threads; p += groups) {
            const A wp = cw[p];
            if (!(wp == A(0)) && ch[p] == hv) {
              A y[VEC];
              dx_vector<T, VEC>::load(dyb + static_cast<Idx>(cu[p]) * xt, y);
#pragma unroll
              for (int i = 0; i < VEC; ++i) car[i] += wp * y[i];
            }
          }
        __syncthreads();
      }
    }

    // d. Suffix sums, raking with the carry, the chain, W^T dz, the store.
    dx_tile_finish<Idx, VEC, Fused, P::split_w, RP, groups, P::lanes>(a, d, acc, car, chain, last, sc_tot, g, v, active, cn,
                                                                       tid, warp, lane, b, t0, t1, n, xt, ot, dxt);
    __syncthreads();  // the next tile reuses the shared memory
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
