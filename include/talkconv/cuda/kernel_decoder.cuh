// Incremental decoding kernels: one fused kernel per step (projection of the token onto its head's offset,
// sigmoid, taps, ring of prefix sums, y), and the two kernels of a beam-search reorder. The position t lives
// in device memory, so a step can be captured in a CUDA graph and replayed.
#pragma once

#include "talkconv/cuda/cuda_traits.hpp"
#include "talkconv/detail/math.hpp"
#include "talkconv/params.hpp"
#include "talkconv/traits.hpp"

#include <cub/block/block_reduce.cuh>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace talkconv {
namespace cuda {
namespace detail {

// N consecutive values of T as one aligned access (N * sizeof(T) = 16 bytes gives a 128-bit load/store;
// N = 1 is a plain element, of any type).
template <class T, int N>
struct alignas(N == 1 ? alignof(T) : sizeof(T) * N) decoder_pack {
  T v[N];
};

// The unsigned type of a 2-, 4-, 8- or 16-byte access (void: none).
template <std::size_t Bytes>
struct decoder_word {
  using type = void;
};
template <>
struct decoder_word<2> {
  using type = unsigned short;
};
template <>
struct decoder_word<4> {
  using type = unsigned int;
};
template <>
struct decoder_word<8> {
  using type = uint2;
};
template <>
struct decoder_word<16> {
  using type = uint4;
};

// One access of a whole pack (a struct copy may be split into element accesses; a uint4 never is).
template <class P>
__device__ __forceinline__ P decoder_load(const P* p) {
  using W = typename decoder_word<sizeof(P)>::type;
  if constexpr (std::is_void<W>::value || alignof(P) != sizeof(P)) {
    return *p;
  } else {
    const W w = *reinterpret_cast<const W*>(p);
    P r;
    memcpy(&r, &w, sizeof(P));
    return r;
  }
}
// 32-bit word k of a pack's bytes.
template <class P>
__device__ __forceinline__ unsigned decoder_word32(const P& v, int k) {
  unsigned w;
  memcpy(&w, reinterpret_cast<const char*>(&v) + 4 * k, 4);
  return w;
}
// One store of a whole pack. Built from 32-bit words and issued as one PTX vector store: a plain
// uint4 store of computed values gets split by the compiler into element stores (seen in the SASS).
// The pointer is a generic address of global memory (the state and y are device allocations).
template <class P>
__device__ __forceinline__ void decoder_store(P* p, const P& v) {
  if constexpr (sizeof(P) == 16 && alignof(P) == 16) {
    asm("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(decoder_word32(v, 0)), "r"(decoder_word32(v, 1)),
        "r"(decoder_word32(v, 2)), "r"(decoder_word32(v, 3))
        : "memory");
  } else if constexpr (sizeof(P) == 8 && alignof(P) == 8) {
    asm("st.global.v2.b32 [%0], {%1, %2};" ::"l"(p), "r"(decoder_word32(v, 0)), "r"(decoder_word32(v, 1)) : "memory");
  } else {
    *p = v;
  }
}

// Launch shape of the step kernel: grid (H, B), one block per (head, sequence).
struct decoder_traits {
  static constexpr int threads = 128;  // C = 1024 bf16: one 16-byte load of x and one of W per thread
  // Blocks per SM the step kernel is compiled for (<= 64 registers): B = 64, H = 16 is 1024 blocks, one
  // wave on 132 SMs at 8 per SM (at 72 registers, 7 per SM, a second wave of 100 blocks).
  static constexpr int min_blocks = 8;
};

template <class T>
struct decoder_args {
  using A = acc_t<T>;
  const T* x = nullptr;       // [B, C], token t of every sequence
  const T* weight = nullptr;  // [P = H, C]
  const T* bias = nullptr;    // [H] or null
  T* y = nullptr;             // [B, C]
  A* ring = nullptr;          // [L + 2][B][C]: S[i] lives in row i % (L + 2)
  index_t* position = nullptr;  // [B * H]: block (h, b) reads t from slot b * H + h and writes t + 1 there
  index_t B = 0, C = 0, H = 1, L = 0;
  index_t R = 1;                // C / H
  A inv_k = A(1);               // 1 / K = 1 / (L + 1), rounded on the host as cpu::decoder does
};

// What thread 0 of a step block derives once from (t, z) and hands to the block: the head's taps and the
// ring rows they name, as element offsets (row * B * C; -1: the zero row S[-1]).
template <class A>
struct decoder_plan {
  talkconv::detail::window_taps<A> k;
  index_t cur, prev, at2, at3;  // rows of S[t], S[t - 1], S[i2], S[i3]
  int rebase;                   // this step re-bases the ring first (t >= L + 2 and t % (L + 2) == 0)
};

// One decoding step, block (h, b): z = W[h] . x_b + bias[h] (each thread sums a fixed set of elements in a
// fixed order, then cub::BlockReduce: deterministic), o = sigmoid(z), the causal taps of token t, then for
// the R = C / H channels of head h: S[t] = S[t - 1] + x / K into the ring, y = window_value(taps, S).
// Every ring column (channel, sequence) has exactly one writer, a thread of this block, so the re-base
// every L + 2 steps (the newest sum S[t - 1] is subtracted from the whole column: sums and error stay
// window-sized) needs no synchronization. The arithmetic is cpu::decoder::step's (same detail/ functions,
// same order), except the dot product's summation order and nvcc's a * b + c contractions into FMA in
// window_value (the same in every variant: the vector and element variants give the same bits).
//
// The position: each block owns one slot of a.position (all slots hold the same t, as every block
// advances its own once per step); its thread 0 reads t and writes t + 1. No block reads another's slot,
// so one launch has no race and needs no atomics; the next launch on the stream (or the next replay of a
// graph) sees t + 1.
//
// VecDot: x and W rows as 16-byte vectors (C % (16 / sizeof(T)) == 0, both 16-byte aligned); the same
// summation order without (y is bitwise the same whatever the alignment).
// VecRow: V = 16 / sizeof(A) channels per thread in the ring (16-byte accesses) and V elements of x and y
// (R % V == 0, ring 16-byte aligned, x and y aligned to V * sizeof(T)). Both chosen on the host.
// a * b rounded on its own: an add that follows cannot be contracted with it into an FMA, whatever the
// surrounding code (float and double; other accumulators multiply as written).
template <class A>
__device__ __forceinline__ A mul_rounded(A a, A b) {
  if constexpr (std::is_same<A, float>::value)
    return __fmul_rn(a, b);
  else if constexpr (std::is_same<A, double>::value)
    return __dmul_rn(a, b);
  else
    return a * b;
}

template <class T, bool VecDot, bool VecRow>
static __global__ void __launch_bounds__(decoder_traits::threads, decoder_traits::min_blocks)
    decoder_step_kernel(decoder_args<T> a) {
  using A = acc_t<T>;
  constexpr int threads = decoder_traits::threads;
  using reduce = cub::BlockReduce<A, threads>;
  __shared__ typename reduce::TempStorage reduce_tmp;
  __shared__ decoder_plan<A> plan;

  const index_t h = blockIdx.x, b = blockIdx.y;
  index_t* slot = a.position + b * a.H + h;
  // Thread 0 alone reads and advances the block's position slot; both loads are issued before the dot
  // product, off the critical path.
  const bool lead = threadIdx.x == 0;
  const index_t t = lead ? *slot : 0;
  const A bias = lead && a.bias ? to_acc<T>(a.bias[h]) : A(0);

  // z = W[h] . x_b: thread i sums the chunks of DV elements starting at DV * i, DV * (i + threads), ...,
  // in that order, as 16-byte vectors or element by element: the same sums, so the same bits, either way.
  const T* xb = a.x + b * a.C;
  const T* wh = a.weight + h * a.C;
  constexpr int DV = 16 % sizeof(T) == 0 && sizeof(T) <= 16 ? 16 / int(sizeof(T)) : 1;
  A dot = A(0);
  if constexpr (VecDot) {
    using pack = decoder_pack<T, DV>;
    const pack* xv = reinterpret_cast<const pack*>(xb);
    const pack* wv = reinterpret_cast<const pack*>(wh);
    const index_t n = a.C / DV;
#pragma unroll 2
    for (index_t i = threadIdx.x; i < n; i += threads) {
      const pack xp = decoder_load(xv + i), wp = decoder_load(wv + i);
#pragma unroll
      for (int e = 0; e < DV; ++e) dot += to_acc<T>(wp.v[e]) * to_acc<T>(xp.v[e]);
    }
  } else {
    for (index_t i = index_t(threadIdx.x) * DV; i < a.C; i += index_t(threads) * DV)
      for (index_t e = i; e < i + DV && e < a.C; ++e) dot += to_acc<T>(wh[e]) * to_acc<T>(xb[e]);
  }
  dot = reduce(reduce_tmp).Sum(dot);  // valid in thread 0

  const index_t rows = a.L + 2, stride = a.B * a.C;
  if (lead) {
    const A z = a.bias ? dot + bias : dot;
    const A o = talkconv::detail::sigmoid<A>(z);
    decoder_plan<A> p;
    p.k = talkconv::detail::make_taps<A>(t, o, A(0), a.L, 0, t + 1, true);
    // Ring rows by distance from t: one modulo per block. Every tap lies in [t - L - 1, t] (o = sigmoid(z)
    // is in [0, 1], so a_l = t - o L >= t - L; a NaN offset gives i2 = i3 = t - 1).
    const index_t now = t % rows;
    auto at = [&](index_t i) -> index_t {
      if (i < 0) return -1;
      const index_t r = now - (t - i);
      return (r < 0 ? r + rows : r) * stride;
    };
    p.cur = now * stride;
    p.prev = at(t - 1);
    p.at2 = at(p.k.i2);
    p.at3 = at(p.k.i3);
    p.rebase = t >= rows && now == 0;
    plan = p;
    *slot = t + 1;
  }
  __syncthreads();
  const decoder_plan<A> p = plan;

  const A inv_k = a.inv_k;
  const index_t R = a.R;
  constexpr int V = VecRow ? 16 / int(sizeof(A)) : 1;
  using apack = decoder_pack<A, V>;
  using tpack = decoder_pack<T, V>;
  A* col0 = a.ring + b * a.C + h * R;  // row 0 of the head's first channel
  const index_t xy0 = b * a.C + h * R;
  for (index_t j = index_t(threadIdx.x) * V; j < R; j += index_t(threads) * V) {
    A* col = col0 + j;
    if (p.rebase) {  // cpu::decoder::rebase(t - 1), this thread's V columns
      // Rows in batches: the batch's loads are all issued before its stores (a store may alias a later
      // row as far as the compiler knows), so L + 2 rows cost about (L + 2) / batch memory round trips.
      constexpr int batch = 4;
      const apack base = decoder_load(reinterpret_cast<const apack*>(col + p.prev));
      auto row_at = [&](index_t r) { return reinterpret_cast<apack*>(col + r * stride); };
      index_t r = 0;
      for (; r + batch <= rows; r += batch) {
        apack v[batch];
#pragma unroll
        for (int k = 0; k < batch; ++k) v[k] = decoder_load(row_at(r + k));
#pragma unroll
        for (int k = 0; k < batch; ++k) {
#pragma unroll
          for (int e = 0; e < V; ++e) v[k].v[e] -= base.v[e];
          decoder_store(row_at(r + k), v[k]);
        }
      }
      for (; r < rows; ++r) {
        apack v = decoder_load(row_at(r));
#pragma unroll
        for (int e = 0; e < V; ++e) v.v[e] -= base.v[e];
        decoder_store(row_at(r), v);
      }
    }
    const tpack xp = decoder_load(reinterpret_cast<const tpack*>(a.x + xy0 + j));
    apack cur, prev{}, s2{}, s3{};  // S[-1] = 0
    if (p.prev >= 0) prev = decoder_load(reinterpret_cast<const apack*>(col + p.prev));
    if (p.at2 >= 0) s2 = decoder_load(reinterpret_cast<const apack*>(col + p.at2));
    if (p.at3 >= 0) s3 = decoder_load(reinterpret_cast<const apack*>(col + p.at3));
    tpack yp;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      // S[t] = S[t - 1] + x_t / K, as cpu::decoder (x scaled first and rounded, then the previous sum
      // added): never one FMA, which nvcc formed in the unrolled vector variant and not in the element
      // one, so y depended on the alignment of x (seen on an H200).
      cur.v[e] = mul_rounded(inv_k, to_acc<T>(xp.v[e]));
      if (p.prev >= 0) cur.v[e] += prev.v[e];
      // Causal: i0 = i1 = t, S[t] is cur.
      yp.v[e] = from_acc<T>(talkconv::detail::window_value<A>(p.k, cur.v[e], cur.v[e], s2.v[e], s3.v[e]));
    }
    decoder_store(reinterpret_cast<apack*>(col + p.cur), cur);
    decoder_store(reinterpret_cast<tpack*>(a.y + xy0 + j), yp);
  }
}

template <class A>
struct decoder_reorder_args {
  A* ring = nullptr;                    // [L + 2][B][C], rewritten
  A* old = nullptr;                     // workspace: a copy of the ring's live rows
  const index_t* order = nullptr;       // [B], device
  const index_t* position = nullptr;    // the step kernel's slot 0: t
  index_t B = 0, C = 0, rows = 0;       // rows = L + 2
  A poison = A(0);  // NaN: the state of a sequence whose order entry is outside [0, B)
};

// Rows of the ring written so far: min(t, L + 2) (t from the device).
TALKCONV_HOST_DEVICE inline index_t decoder_live_rows(index_t t, index_t rows) { return t < rows ? t : rows; }

// grid (ceil(C / threads), B): copies the live rows of the ring into the workspace (only written rows are
// read: nothing uninitialized is copied).
template <class A>
static __global__ void __launch_bounds__(decoder_traits::threads) decoder_copy_kernel(decoder_reorder_args<A> a) {
  const index_t b = blockIdx.y, c = index_t(blockIdx.x) * decoder_traits::threads + threadIdx.x;
  if (c >= a.C) return;
  const index_t live = decoder_live_rows(*a.position, a.rows), stride = a.B * a.C;
  for (index_t r = 0; r < live; ++r) a.old[r * stride + b * a.C + c] = a.ring[r * stride + b * a.C + c];
}

// grid (ceil(C / threads), B): the live rows of sequence b's ring column from the copy's column of
// sequence order[b]. One writer per cell; the order is checked here (device memory).
template <class A>
static __global__ void __launch_bounds__(decoder_traits::threads) decoder_reorder_kernel(decoder_reorder_args<A> a) {
  const index_t b = blockIdx.y, c = index_t(blockIdx.x) * decoder_traits::threads + threadIdx.x;
  if (c >= a.C) return;
  const index_t src = a.order[b];
  const bool ok = src >= 0 && src < a.B;
  const index_t live = decoder_live_rows(*a.position, a.rows), stride = a.B * a.C;
  for (index_t r = 0; r < live; ++r)
    a.ring[r * stride + b * a.C + c] = ok ? a.old[r * stride + src * a.C + c] : a.poison;
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
