// Shared tile code of the window kernels: the arguments every window kernel takes, a block's tile and
// channels, a token's taps, the direct path from global memory, and the two ways a tile keeps S in
// shared memory: the generic scalar tile (any head width, data-dependent halo) and the vector tile
// (16-byte channel vectors, halo from the plan, prefix sums by segment threads joined by a warp scan).
#pragma once

#include "talkconv/cuda/async_copy.cuh"
#include "talkconv/cuda/smem_layout.cuh"
#include "talkconv/detail/math.hpp"
#include "talkconv/detail/window_tile.hpp"

#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_scan.cuh>

#include <climits>
#include <cstdint>
#include <cstring>

namespace talkconv {
namespace cuda {
namespace detail {

using talkconv::detail::window_taps;

// The offset gradients finished inside the offset-gradient kernel when a block holds each of its heads
// whole (subs == 1): dL/do = the head sum times L or M, then, with o_pre, dz = dL/do * m / (1 - p) *
// o_pre (1 - o_pre): the combine kernel's formula (combine_offsets_grad_group), which is then not launched.
template <class A>
struct offsets_finish {
  bool on = false;            // set by launch_window_backward where it applies
  const A* o_pre = nullptr;   // layout of the offsets, or null: write dL/do
  bool dropout = false;       // the mask's draw (detail::dropout_scale4), with o_pre
  float p = 0.0f;
  std::uint64_t seed = 0;
  index_t t_base = 0;         // the dropout counter's row 0
};

// Everything a window kernel reads; built on the host, passed by value.
template <class T>
struct window_args {
  using A = acc_t<T>;
  const T* x = nullptr;
  const A* offsets = nullptr;                 // after dropout, layout of x with width P
  T* y = nullptr;                             // forward output
  const T* dy = nullptr;                      // backward input
  T* dx = nullptr;                            // backward output
  A* partial = nullptr;                       // offset gradients: per-split head sums [subs][T * B * P], unscaled
                                              // (finished in place instead when finish.on)
  const A* dz = nullptr;                      // dx: the offset path W^T dz is added when dz is not null
  const T* weight = nullptr;                  // [P, C], with dz
  const unsigned long long* reach = nullptr;  // dx: {left, right} reach of every valid window (device)
  unsigned char* sort_ws = nullptr;           // dx: the sorted-events path's workspace (plan_sorted_dx_workspace), or null
  seq_geom g;
  window_geom w;
  int tile = 0;       // tokens per tile
  index_t tiles = 0;  // tiles per sequence (grid x = B * tiles)
  int cap_rows = 0;   // prefix-sum rows the shared buffer holds
  int left = 0;       // vector tile: kept rows before the tile's first token, base row included
  int tap_heads = 1;  // vector tile: heads per token in the tap table (the plan's; a block may use fewer)
  int right = 0;      // segmented forward: rows of the span after the tile's last token
  offsets_finish<A> finish;  // offset gradients: finished in the kernel (launch_window_backward decides)
};

struct min_op {
  template <class V>
  __device__ __forceinline__ V operator()(const V& a, const V& b) const {
    return b < a ? b : a;
  }
};
struct max_op {
  template <class V>
  __device__ __forceinline__ V operator()(const V& a, const V& b) const {
    return a < b ? b : a;
  }
};

// Which tile, sequence and channels this block owns.
struct tile_ctx {
  index_t b, t0, t1, n, tv1;  // tokens [t0, t1) of sequence b (valid length n), valid ones [t0, tv1)
  index_t c0;                 // channels [c0, c0 + cn)
  int cn, sub;                // sub: which split of a head wider than a block
  index_t h_first;            // heads [h_first, h_first + nh) meet the block's channels
  int nh;
  int lane, seg;  // this thread: channel c0 + lane, row segment seg
};

// Tokens [t0, t0 + a.tile) of sequence b, channel block cb (the fused backward walks its tiles and channel blocks).
template <class T>
__device__ __forceinline__ tile_ctx make_ctx_at(const window_args<T>& a, index_t b, index_t t0, int cb) {
  tile_ctx c;
  c.b = b;
  c.t0 = t0;
  c.t1 = c.t0 + a.tile < a.g.T ? c.t0 + a.tile : a.g.T;
  c.n = a.g.length(c.b);
  c.tv1 = c.t1 < c.n ? c.t1 : c.n;
  if (c.tv1 < c.t0) c.tv1 = c.t0;
  a.w.block_channels(cb, c.c0, c.cn, c.sub);
  a.w.block_heads(cb, c.h_first, c.nh);
  c.lane = static_cast<int>(threadIdx.x) % window_traits::lanes;
  c.seg = static_cast<int>(threadIdx.x) / window_traits::lanes;
  return c;
}
// This block's: blockIdx.x = b * tiles + tile < 2^31 (a 32-bit division: tiles <= gridDim.x), channel block blockIdx.y.
template <class T>
__device__ __forceinline__ tile_ctx make_ctx(const window_args<T>& a) {
  const unsigned blk = blockIdx.x, tiles = static_cast<unsigned>(a.tiles), bq = blk / tiles;
  return make_ctx_at(a, index_t(bq), index_t(blk - bq * tiles) * a.tile, static_cast<int>(blockIdx.y));
}

// Offsets (after dropout) of token (t, b).
template <class Idx, class T>
__device__ __forceinline__ const acc_t<T>* offset_row(const window_args<T>& a, index_t t, index_t b) {
  return a.offsets + (Idx(t) * Idx(a.g.ot) + Idx(b) * Idx(a.g.ob));
}

// SPEC steps 2-3 for head h of token t (t < n): the shared math of detail/math.hpp.
template <bool Causal, class A>
__device__ __forceinline__ window_taps<A> head_taps(const A* off, index_t t, index_t h, const window_geom& w,
                                                    index_t n) {
  return talkconv::detail::make_taps<A>(t, off[h], Causal ? A(0) : off[w.H + h], w.L, w.M, n, Causal);
}

// Lowest and highest S index read by the tile's valid tokens over the block's heads (block-wide).
// Also fills `cache` (when not null) with the taps of every (token, head) pair of the tile.
template <bool Causal, class Idx, class T>
__device__ void tile_span(const window_args<T>& a, const tile_ctx& c, tap_entry<acc_t<T>>* cache, index_t& lo,
                          index_t& hi) {
  using A = acc_t<T>;
  using reduce = cub::BlockReduce<long long, window_traits::threads>;
  __shared__ typename reduce::TempStorage tmp;
  __shared__ long long res[2];
  long long mn = LLONG_MAX, mx = LLONG_MIN;
  const index_t pairs = (c.tv1 - c.t0) * c.nh;
  for (index_t i = threadIdx.x; i < pairs; i += window_traits::threads) {
    const index_t t = c.t0 + i / c.nh, h = c.h_first + i % c.nh;
    const window_taps<A> k = head_taps<Causal>(offset_row<Idx>(a, t, c.b), t, h, a.w, c.n);
    if (cache)
      cache[i] = tap_entry<A>{static_cast<int>(k.i0 - c.t0),
                              static_cast<int>(k.i1 - c.t0),
                              static_cast<int>(k.i2 - c.t0),
                              static_cast<int>(k.i3 - c.t0),
                              k.fr,
                              k.fl};
    const long long kmin = talkconv::detail::taps_min(k), kmax = talkconv::detail::taps_max(k);
    mn = kmin < mn ? kmin : mn;
    mx = kmax > mx ? kmax : mx;
  }
  const long long rmin = reduce(tmp).Reduce(mn, min_op{});
  if (threadIdx.x == 0) res[0] = rmin;
  __syncthreads();
  const long long rmax = reduce(tmp).Reduce(mx, max_op{});
  if (threadIdx.x == 0) res[1] = rmax;
  __syncthreads();
  lo = res[0];
  hi = res[1];
}

// The S rows [wlo, whi] a tile keeps in shared memory: its whole span when it fits, else the tile
// itself and as much halo as fits, the right side getting at most half (tokens reaching past the kept
// rows take the direct path: only speed depends on this choice, never the result). Host-callable for
// the planning tests.
TALKCONV_HOST_DEVICE inline void choose_rows(index_t lo, index_t hi, index_t t0, index_t t1, int cap, index_t& wlo,
                                             index_t& whi) {
  if (hi - lo + 1 <= cap) {
    wlo = lo;
    whi = hi;
    return;
  }
  const index_t spare = cap - (t1 - t0) - 1 > 0 ? cap - (t1 - t0) - 1 : 0;
  const index_t right_need = hi - (t1 - 1) > 0 ? hi - (t1 - 1) : 0;
  index_t left = spare - (right_need < spare / 2 ? right_need : spare / 2);
  wlo = t0 - 1 - left > lo ? t0 - 1 - left : lo;
  whi = wlo + cap - 1 < hi ? wlo + cap - 1 : hi;
}

// Local prefix sums of x over rows (wlo, whi] of the block's channels into sm ([rows][lanes], row 0
// zero standing for S[wlo]). `xs` points at token 0, channel c0 of the sequence. Loads are 16-byte
// vectors when the address, the row stride and the block width allow (checked here, uniform per block).
template <class Idx, class T>
__device__ void load_prefix(const T* xs, index_t xt, index_t wlo, int rows, const tile_ctx& c, acc_t<T> inv_k,
                            acc_t<T>* sm, acc_t<T>* tot) {
  using A = acc_t<T>;
  constexpr int lanes = window_traits::lanes, segs = window_traits::segs, threads = window_traits::threads;
  constexpr int vec = 16 / static_cast<int>(sizeof(T));
  for (int i = threadIdx.x; i < lanes; i += threads) sm[i] = A(0);
  const int data_rows = rows - 1;
  const T* first = xs + Idx(wlo + 1) * Idx(xt);
  const bool vectorized =
      vec > 1 && c.cn % vec == 0 && xt % vec == 0 && reinterpret_cast<std::uintptr_t>(first) % 16 == 0;
  if (vectorized) {
    const int per_row = c.cn / vec;
    const int items = data_rows * per_row;
    for (int i = threadIdx.x; i < items; i += threads) {
      const int r = i / per_row, v = i - r * per_row;
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(first + Idx(r) * Idx(xt) + v * vec));
      T e[vec];
      memcpy(e, &raw, sizeof(raw));
      A* dst = sm + (r + 1) * lanes + v * vec;
#pragma unroll
      for (int j = 0; j < vec; ++j) dst[j] = to_acc<T>(e[j]);
    }
  } else {
    const int items = data_rows * lanes;
    for (int i = threadIdx.x; i < items; i += threads) {
      const int r = i / lanes, l = i - r * lanes;
      sm[(r + 1) * lanes + l] = l < c.cn ? to_acc<T>(first[Idx(r) * Idx(xt) + l]) : A(0);
    }
  }
  __syncthreads();
  // Each segment thread scans its rows, then adds the totals of the segments above it (fixed order).
  const int per_seg = (data_rows + segs - 1) / segs;
  const int r0 = 1 + c.seg * per_seg, r1 = r0 + per_seg < rows ? r0 + per_seg : rows;
  A run = A(0);
  if (c.lane < c.cn)
    for (int r = r0; r < r1; ++r) {
      run = run + inv_k * sm[r * lanes + c.lane];
      sm[r * lanes + c.lane] = run;
    }
  tot[c.seg * lanes + c.lane] = run;
  __syncthreads();
  if (c.lane < c.cn && c.seg > 0) {
    A carry = tot[c.lane];
    for (int s = 1; s < c.seg; ++s) carry += tot[s * lanes + c.lane];
    for (int r = r0; r < r1; ++r) sm[r * lanes + c.lane] += carry;
  }
  __syncthreads();
}

// Differences of S for a window beyond the loaded rows, summed from x (one channel, `xc` at token 0):
// d_main = S[i0] - S[i2], d_right = S[i1] - S[i0], d_left = S[i3] - S[i2]. Window-sized error.
template <class Idx, class T>
__device__ void direct_diffs(const T* xc, index_t xt, const window_taps<acc_t<T>>& k, acc_t<T> inv_k, acc_t<T>& d_main,
                             acc_t<T>& d_right, acc_t<T>& d_left) {
  using A = acc_t<T>;
  A s = A(0);
  for (index_t tau = k.i2 + 1; tau <= k.i0; ++tau) s += to_acc<T>(xc[Idx(tau) * Idx(xt)]);
  d_main = inv_k * s;
  d_right = k.i1 > k.i0 ? inv_k * to_acc<T>(xc[Idx(k.i1) * Idx(xt)]) : A(0);
  d_left = k.i3 > k.i2 ? inv_k * to_acc<T>(xc[Idx(k.i3) * Idx(xt)]) : A(0);
}

template <class A>
__device__ __forceinline__ A* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char talkconv_smem[];
  return reinterpret_cast<A*>(talkconv_smem);
}

// The tap cache of a tile, or null when too many heads meet the block (or T is too long for its
// 32-bit relative indices).
template <class A>
__device__ __forceinline__ tap_entry<A>* tap_cache(A* smem_end, const tile_ctx& c, index_t T) {
  return c.nh <= tap_cache_heads && T < INT_MAX / 2 ? reinterpret_cast<tap_entry<A>*>(smem_end) : nullptr;
}

// Taps of head h of valid token t: from the cache when there is one.
template <bool Causal, class Idx, class T>
__device__ __forceinline__ window_taps<acc_t<T>> tile_taps(const window_args<T>& a, const tile_ctx& c,
                                                           const tap_entry<acc_t<T>>* cache, index_t t, index_t h) {
  if (cache) {
    const tap_entry<acc_t<T>> e = cache[(t - c.t0) * c.nh + (h - c.h_first)];
    return window_taps<acc_t<T>>{c.t0 + e.d0, c.t0 + e.d1, c.t0 + e.d2, c.t0 + e.d3, e.fr, e.fl};
  }
  return head_taps<Causal>(offset_row<Idx>(a, t, c.b), t, h, a.w, c.n);
}

// Loads and scans the tile's rows; returns [wlo, whi] through the references. Block-uniform.
template <bool Causal, class Idx, class T>
__device__ void prepare_tile(const window_args<T>& a, const tile_ctx& c, acc_t<T> inv_k, acc_t<T>* sm, acc_t<T>* tot,
                             tap_entry<acc_t<T>>* cache, index_t& wlo, index_t& whi) {
  index_t lo = 0, hi = -1;
  tile_span<Causal, Idx>(a, c, cache, lo, hi);
  choose_rows(lo, hi, c.t0, c.t1, a.cap_rows, wlo, whi);
  const T* xs = a.x + (Idx(c.b) * Idx(a.g.xb) + Idx(c.c0));
  load_prefix<Idx>(xs, a.g.xt, wlo, static_cast<int>(whi - wlo + 1), c, inv_k, sm, tot);
}


// ---- vector tiles -------------------------------------------------------------------------------------
// Used when every 16-byte vector of channels lies in one head (R % vec == 0) and x, y, dy are 16-byte
// aligned (the host decides, vector_tiles()). Everything inside a block is 32-bit: the block's base
// pointers are formed once in 64 bits, token offsets t * xt in Idx (int32 when the problem fits).

using talkconv::detail::tile_rows;
using talkconv::detail::tile_tap;

// 16 bytes of storage <-> `vec` accumulators (unpack_vec: from 16 bytes already loaded, e.g. a load issued
// ahead of its use).
template <class T>
__device__ __forceinline__ uint4 load_raw16(const T* __restrict__ p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}
// The same load under an L2 policy (l2_evict_first_policy: data this kernel reads once, so that it does not push out
// lines still to be re-read); a plain load before sm_80.
template <class T>
__device__ __forceinline__ uint4 load_raw16_hint(const T* __restrict__ p, unsigned long long policy) {
#if TALKCONV_CUDA_L2_HINTS_ON
  uint4 v;
  asm volatile("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p), "l"(policy));
  return v;
#else
  (void)policy;
  return load_raw16<T>(p);
#endif
}
template <class T>
__device__ __forceinline__ void unpack_vec(const uint4& raw, acc_t<T> (&v)[16 / sizeof(T)]) {
  constexpr int V = 16 / sizeof(T);
  T e[V];
  memcpy(e, &raw, sizeof(raw));
#pragma unroll
  for (int j = 0; j < V; ++j) v[j] = to_acc<T>(e[j]);
}
// bfloat16 is the high half of a float: one shift or one mask per channel (the generic form above
// extracts each half and then shifts it: two instructions per channel in the sm_90 SASS). Exact.
template <>
__device__ __forceinline__ void unpack_vec<__nv_bfloat16>(const uint4& raw, float (&v)[8]) {
  const unsigned q[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = __uint_as_float(q[i] << 16);
    v[2 * i + 1] = __uint_as_float(q[i] & 0xffff0000u);
  }
}
template <class T>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, acc_t<T> (&v)[16 / sizeof(T)]) {
  unpack_vec<T>(__ldg(reinterpret_cast<const uint4*>(p)), v);
}
template <class T>
__device__ __forceinline__ void store_vec(T* __restrict__ p, const acc_t<T> (&v)[16 / sizeof(T)]) {
  constexpr int V = 16 / sizeof(T);
  T e[V];
#pragma unroll
  for (int j = 0; j < V; ++j) e[j] = from_acc<T>(v[j]);
  uint4 raw;
  memcpy(&raw, e, sizeof(raw));
  __stwb(reinterpret_cast<uint4*>(p), raw);
}
// Packed conversions: one instruction per two channels, one 16-byte store.
template <class T2>
__device__ __forceinline__ unsigned word_of(T2 v) {
  unsigned u;
  memcpy(&u, &v, sizeof(u));
  return u;
}
template <>
__device__ __forceinline__ void store_vec<__nv_bfloat16>(__nv_bfloat16* __restrict__ p, const float (&v)[8]) {
  __stwb(reinterpret_cast<uint4*>(p),
         make_uint4(word_of(__floats2bfloat162_rn(v[0], v[1])), word_of(__floats2bfloat162_rn(v[2], v[3])),
                    word_of(__floats2bfloat162_rn(v[4], v[5])), word_of(__floats2bfloat162_rn(v[6], v[7]))));
}
template <>
__device__ __forceinline__ void store_vec<__half>(__half* __restrict__ p, const float (&v)[8]) {
  __stwb(reinterpret_cast<uint4*>(p),
         make_uint4(word_of(__floats2half2_rn(v[0], v[1])), word_of(__floats2half2_rn(v[2], v[3])),
                    word_of(__floats2half2_rn(v[4], v[5])), word_of(__floats2half2_rn(v[6], v[7]))));
}
template <>
__device__ __forceinline__ void store_vec<float>(float* __restrict__ p, const float (&v)[4]) {
  __stwb(reinterpret_cast<float4*>(p), make_float4(v[0], v[1], v[2], v[3]));
}
template <>
__device__ __forceinline__ void store_vec<double>(double* __restrict__ p, const double (&v)[2]) {
  __stwb(reinterpret_cast<double2*>(p), make_double2(v[0], v[1]));
}

// V accumulators <-> shared memory, in 16-byte accesses (p 16-byte aligned).
template <class A, int V>
__device__ __forceinline__ void lds_vec(const A* p, A (&v)[V]) {
  static_assert((V * sizeof(A)) % 16 == 0, "whole 16-byte words");
#pragma unroll
  for (int i = 0; i < int(V * sizeof(A) / 16); ++i) {
    const uint4 w = reinterpret_cast<const uint4*>(p)[i];
    memcpy(v + i * (16 / sizeof(A)), &w, 16);
  }
}
template <class A, int V>
__device__ __forceinline__ void sts_vec(A* p, const A (&v)[V]) {
#pragma unroll
  for (int i = 0; i < int(V * sizeof(A) / 16); ++i) {
    uint4 w;
    memcpy(&w, v + i * (16 / sizeof(A)), 16);
    reinterpret_cast<uint4*>(p)[i] = w;
  }
}

// A column's `vec` accumulators into a vector tile's shared row, chunk q (16 bytes) at p + q * cols words
// (window_tile_policy::chunks: interleaved columns, one wavefront per quarter warp).
template <class T>
__device__ __forceinline__ void sts_chunks(acc_t<T>* p, const acc_t<T> (&v)[window_tile_policy<T>::vec]) {
  using A = acc_t<T>;
  using P = window_tile_policy<T>;
  constexpr int W = P::scan_width;
  static_assert(P::chunks * W == P::vec, "a column is whole 16-byte words");
#pragma unroll
  for (int q = 0; q < P::chunks; ++q) {
    uint4 w;
    memcpy(&w, v + q * W, 16);
    reinterpret_cast<uint4*>(p + q * P::cols * W)[0] = w;
  }
}

// A token's tile taps as the table keeps them (smem_layout.cuh: vtap).
template <class T>
__device__ __forceinline__ vtap<acc_t<T>> to_vtap(const tile_tap<acc_t<T>>& e) {
  constexpr int row = window_tile_policy<T>::stride * static_cast<int>(sizeof(acc_t<T>));
  if (e.r0 < 0) return vtap<acc_t<T>>{-1, -1, -1, -1, e.fr, e.fl};
  return vtap<acc_t<T>>{e.r0 * row, e.r1 * row, e.r2 * row, e.r3 * row, e.fr, e.fl};
}

// A block's vector tile: its tokens, channels and kept rows, and this thread's column for the output pass.
struct vtile {
  tile_ctx c;
  tile_rows w;
  int ntok;   // tokens of the tile: t1 - t0
  int nval;   // valid ones: [t0, t0 + nval)
  int vcols;  // vectors of the block's channels (cn / vec)
};

template <class T>
__device__ __forceinline__ vtile make_vtile(const window_args<T>& a) {
  vtile v;
  v.c = make_ctx(a);
  v.w = talkconv::detail::window_tile_rows(v.c.t0, v.c.n, a.cap_rows, a.left);
  v.ntok = static_cast<int>(v.c.t1 - v.c.t0);
  v.nval = static_cast<int>(v.c.tv1 - v.c.t0);
  v.vcols = v.c.cn / window_tile_policy<T>::vec;
  return v;
}

// Loads x rows first + 1 .. first + data of the block's channels as accumulators into shared rows 1..data
// (row 0 zero), then turns them into local prefix sums along time from the base row `first` (unscaled:
// 1/K is applied once per output). Two barriers; the first also publishes what the block wrote before.
// Block-uniform.
template <class Idx, class T>
__device__ __forceinline__ void stage_rows(const window_args<T>& a, const tile_ctx& c, int vcols, index_t first,
                                           int data, acc_t<T>* __restrict__ rows);

// The windows' reach (window_reach_rows' definition) folded into reach[0..1] from one warp's maxima: an
// atomicMax only where the warp's value exceeds what reach already holds (read from L2), so a grid of
// tiles adds few atomics. Integer maxima: exact and order-free.
__device__ __forceinline__ void warp_reach(unsigned long long* reach, long long rl, long long rr) {
#pragma unroll
  for (int d = 16; d > 0; d /= 2) {
    const long long ol = __shfl_xor_sync(0xffffffffu, rl, d), orr = __shfl_xor_sync(0xffffffffu, rr, d);
    rl = ol > rl ? ol : rl;
    rr = orr > rr ? orr : rr;
  }
  if (threadIdx.x % 32 == 0) {
    if (static_cast<unsigned long long>(rl) > __ldcg(reach)) atomicMax(reach, static_cast<unsigned long long>(rl));
    if (static_cast<unsigned long long>(rr) > __ldcg(reach + 1)) atomicMax(reach + 1, static_cast<unsigned long long>(rr));
  }
}

// Stages a tile: the tap table (once per valid (token, head): detail/math.hpp's make_taps, as rows of the
// tile), then its rows (stage_rows: x rows first + 1 .. last, local prefix sums). Two barriers.
// Block-uniform; only for nval > 0.
template <bool Causal, class Idx, class T>
__device__ __forceinline__ void stage_vtile(const window_args<T>& a, const vtile& v, acc_t<T>* __restrict__ rows,
                                            vtap<acc_t<T>>* __restrict__ taps) {
  using A = acc_t<T>;
  using P = window_tile_policy<T>;
  const tile_ctx& c = v.c;
  // 32-bit tap arithmetic when the sequence, L and M fit (the same make_taps, instantiated on int).
  const bool narrow = a.g.T < INT_MAX / 2 && a.w.L < INT_MAX / 2 && a.w.M < INT_MAX / 2;
  const A* off0 = a.offsets + (c.b * a.g.ob + c.t0 * a.g.ot);  // 64-bit, once
  for (int i = threadIdx.x; i < v.nval * c.nh; i += P::threads) {
    const int tok = c.nh == 1 ? i : i / c.nh, hh = i - tok * c.nh;
    const A* off = off0 + Idx(tok) * static_cast<Idx>(a.g.ot);
    const index_t hd = c.h_first + hh;
    const A ol = off[hd], orr = Causal ? A(0) : off[a.w.H + hd];
    const index_t t = c.t0 + tok;
    if (narrow) {
      const auto k = talkconv::detail::make_taps<A, int>(static_cast<int>(t), ol, orr, static_cast<int>(a.w.L),
                                                         static_cast<int>(a.w.M), static_cast<int>(c.n), Causal);
      taps[i] = to_vtap<T>(talkconv::detail::make_tile_tap<A>(k, v.w));
    } else {
      const window_taps<A> k = head_taps<Causal>(off, t, hd, a.w, c.n);
      taps[i] = to_vtap<T>(talkconv::detail::make_tile_tap<A>(k, v.w));
    }
  }
  stage_rows<Idx>(a, v.c, v.vcols, v.w.first, v.w.data_rows(), rows);
}

template <class Idx, class T>
__device__ __forceinline__ void stage_rows(const window_args<T>& a, const tile_ctx& c, int vcols, index_t first,
                                           int data, acc_t<T>* __restrict__ rows) {
  using A = acc_t<T>;
  using P = window_tile_policy<T>;
  constexpr int V = P::vec;
  // Thread (row r, column col) with col fixed per thread (threads is a multiple of cols): pointers advance
  // by whole row groups, no index arithmetic per row.
  constexpr int step = P::threads / P::cols;  // rows per pass of the block
  const int lcol = threadIdx.x % P::cols;
  int r = threadIdx.x / P::cols;
  constexpr int W = P::scan_width;  // accumulators per 16-byte word
  A* __restrict__ dst = rows + (r + 1) * P::stride + lcol * W;  // chunk 0 of this column (see P::chunks)
  if (lcol < vcols) {
    const T* __restrict__ src = a.x + (c.b * a.g.xb + c.c0 + lcol * V) + (first + 1 + r) * a.g.xt;  // 64-bit, once
    const Idx jump = static_cast<Idx>(step) * static_cast<Idx>(a.g.xt);
#pragma unroll 4
    for (; r < data; r += step, src += jump, dst += step * P::stride) {
      A e[V];
      load_vec<T>(src, e);
      sts_chunks<T>(dst, e);
    }
  } else {
    A z[V];
#pragma unroll
    for (int j = 0; j < V; ++j) z[j] = A(0);
    for (; r < data; r += step, dst += step * P::stride) sts_chunks<T>(dst, z);
  }
  if (threadIdx.x < P::cols) {
    A z[V];
#pragma unroll
    for (int j = 0; j < V; ++j) z[j] = A(0);
    sts_chunks<T>(rows + threadIdx.x * W, z);
  }
  __syncthreads();
  // Segment `seg` of column `col` owns rows [r0, r1): its totals, the exclusive scan of the totals over the
  // column's segments (fixed order), then its rows rewritten as prefix sums from the tile's base row.
  using scan = cub::WarpScan<A, P::scan_segs>;
  __shared__ typename scan::TempStorage scan_tmp[P::threads / P::scan_segs];
  const int col = threadIdx.x / P::scan_segs, seg = threadIdx.x % P::scan_segs;
  const int per = talkconv::detail::scan_rows_per_segment(data, P::scan_segs);
  const int r0 = 1 + seg * per, r1 = r0 + per < data + 1 ? r0 + per : data + 1;
  A* __restrict__ p = rows + col * W;
  A run[W];
#pragma unroll
  for (int j = 0; j < W; ++j) run[j] = A(0);
#pragma unroll 4
  for (int r = r0; r < r1; ++r) {
    A e[W];
    lds_vec<A, W>(p + r * P::stride, e);
#pragma unroll
    for (int j = 0; j < W; ++j) run[j] += e[j];
  }
#pragma unroll
  for (int j = 0; j < W; ++j) scan(scan_tmp[threadIdx.x / P::scan_segs]).ExclusiveSum(run[j], run[j]);
#pragma unroll 4
  for (int r = r0; r < r1; ++r) {
    A e[W];
    lds_vec<A, W>(p + r * P::stride, e);
#pragma unroll
    for (int j = 0; j < W; ++j) run[j] += e[j];
    sts_vec<A, W>(p + r * P::stride, run);
  }
  __syncthreads();
}

// The four S rows a tap names, for 16 bytes of this thread's accumulators at `p` (chunk q of its
// vector: the column's chunk 0 + q * cols words): s0..s3 = rows at byte offsets o0..o3. Chunks keep the
// live registers at 4 x 16 bytes.
template <class A>
__device__ __forceinline__ void tap_rows(const A* __restrict__ p, const vtap<A>& e, A (&s0)[16 / sizeof(A)],
                                         A (&s1)[16 / sizeof(A)], A (&s2)[16 / sizeof(A)], A (&s3)[16 / sizeof(A)]) {
  constexpr int W = 16 / sizeof(A);
  const unsigned char* b = reinterpret_cast<const unsigned char*>(p);
  lds_vec<A, W>(reinterpret_cast<const A*>(b + e.o0), s0);
  lds_vec<A, W>(reinterpret_cast<const A*>(b + e.o1), s1);
  lds_vec<A, W>(reinterpret_cast<const A*>(b + e.o2), s2);
  lds_vec<A, W>(reinterpret_cast<const A*>(b + e.o3), s3);
}

// This thread's head among the block's (the output passes keep one column per thread).
template <class T>
__device__ __forceinline__ int vtile_head(const window_args<T>& a, const tile_ctx& c, int col) {
  (void)c;
  return a.w.head_in_block(col * window_tile_policy<T>::vec);
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
