// The window's input gradient on CUDA: the thin __global__ entry points over agent_window_input_grad_band.cuh
// and agent_window_input_grad_band_tf32.cuh (16-bit x up to K = detail::dx_band_max_k, float up to
// detail::dx_band_max_k_tf32: a banded product on tensor cores) and
// agent_window_input_grad_sorted.cuh (every other case where the caller's workspace holds the sorted path's
// arrays: tap events sorted once by (sequence, head, row)) or agent_window_input_grad.cuh (the rest: tap events
// bucketed per tile), and their launch (which path, tile plan, vector width, index width, shared memory).
#pragma once

#include "talkconv/cuda/agent_window_input_grad.cuh"
#include "talkconv/cuda/agent_window_input_grad_band.cuh"
#include "talkconv/cuda/agent_window_input_grad_band_tf32.cuh"
#include "talkconv/cuda/agent_window_input_grad_sorted.cuh"
#include "talkconv/cuda/dispatch.cuh"
#include "talkconv/cuda/workspace.cuh"

#include <cub/device/device_radix_sort.cuh>

namespace talkconv {
namespace cuda {
namespace detail {

// grid (B * tiles, channel blocks), dx_policy::threads threads, dynamic smem dx_smem::bytes.
// Fused: W^T dz added too (a.dz, a.weight; d.chunks, d.w_at).
template <class T, class Idx, int VEC, bool Fused>
static __global__ void __launch_bounds__(dx_policy<T>::threads, Fused ? dx_policy<T>::fused_min_blocks : dx_policy<T>::min_blocks) input_grad_kernel(window_args<T> a, dx_args d) {
  input_grad_tile<Idx, VEC, Fused>(a, d);
}

// The sorted-events dx (agent_window_input_grad_sorted.cuh): the events pass, the starts pass (grid-stride,
// row_threads threads) and the gather (grid (B * blocks_per_seq, channel blocks), dx_policy::threads threads, dynamic
// smem plan_sorted_dx's). Fused: W^T dz added too.
template <class T, class Idx>
static __global__ void __launch_bounds__(row_threads)
    dx_sorted_events_kernel(window_args<T> a, std::make_unsigned_t<Idx>* keys,
                            talkconv::detail::dx_sorted_value<acc_t<T>, std::make_unsigned_t<Idx>>* vals,
                            std::make_unsigned_t<Idx> sentinel, bool causal) {
  dx_sorted_events_rows<Idx>(a, keys, vals, sentinel, causal);
}
template <class U>
static __global__ void __launch_bounds__(row_threads) dx_sorted_starts_kernel(const U* keys, U items, U rows, U* starts) {
  dx_sorted_starts_rows<U>(keys, items, rows, starts);
}
template <class T, class Idx, int VEC, bool Fused>
static __global__ void __launch_bounds__(dx_policy<T>::threads, Fused ? dx_policy<T>::fused_min_blocks : dx_policy<T>::min_blocks)
    input_grad_sorted_kernel(window_args<T> a, dx_sorted_args<acc_t<T>, Idx> d) {
  input_grad_sorted_tile<Idx, VEC, Fused>(a, d);
}

// The banded dx (16-bit x and float, windows up to dx_band_policy::max_k): grid (B * blocks_per_seq, channel blocks),
// dx_band_policy::threads threads, dynamic smem dx_band_smem::bytes. Fused: W^T dz added too.
template <class T, class Idx, bool Fused>
static __global__ void __launch_bounds__(dx_band_policy<T>::threads, dx_band_policy<T>::min_blocks)
    input_grad_band_kernel(window_args<T> a, dx_band_args d) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // no mma.sync on 16-bit types or TF32, no cp.async: never launched (band_kernels_built)
#else
  if constexpr (dx_band_policy<T>::supported && dx_band_policy<T>::tf32)
    input_grad_band_tile_tf32<Idx, Fused>(a, d);
  else if constexpr (dx_band_policy<T>::supported)
    input_grad_band_tile<T, Idx, Fused>(a, d);
#endif
}

// Whether this program's banded kernels for T run on the current device: built (SASS, or PTX it was
// JIT-compiled from) for sm_80 or later. A program built for older targets takes the other kernels. One
// cudaFuncGetAttributes per call (as allow_smem), no synchronization.
template <class T>
bool band_kernels_built() {
  if constexpr (!dx_band_policy<T>::supported) {
    return false;
  } else {
    return built_for_sm80(&input_grad_band_kernel<T, int, false>);
  }
}

// Whether the banded dx takes a problem (band_applies: 16-bit x or float, R % 16 == 0, K <= max_k, aligned;
// and code for sm_80 or later).
template <class T>
bool use_input_grad_band(const window_args<T>& a, const seq_shape& s, const window_params& w) {
  return band_applies<T>(a.w, s, w, a.dy, a.dx) && band_kernels_built<T>();
}

// The banded kernels' launch plans (host-testable): segment rows and grid for tiles_per_block tiles per block
// (plan_band), then the dx's W fragments and shared memory; the forward's are plan_window_forward_band.
struct dx_band_launch {
  dx_band_args args;
  std::size_t smem = 0;
};
template <class T>
dx_band_launch plan_band(const seq_shape& s, const window_params& w, double max_offset, int tiles_per_block,
                         int max_rows = 0) {
  const talkconv::detail::dx_band_plan bp =
      talkconv::detail::make_dx_band_plan(w.max_left, w.causal ? 0 : w.max_right, w.causal, max_offset, max_rows);
  dx_band_launch p;
  p.args.stage_rows = bp.stage_rows;
  p.args.tiles_per_block = tiles_per_block;
  const index_t tiles = (s.T + bp.tile - 1) / bp.tile;
  p.args.blocks_per_seq = (tiles + tiles_per_block - 1) / tiles_per_block;
  p.args.causal = w.causal;
  p.args.taps_at = dx_band_smem<T>::taps_at(bp.stage_rows);
  return p;
}
// Float's stage cap (0: none): the most rows (a multiple of 16, at least 32) that keep dx_band_policy::min_blocks
// blocks per SM of per_sm bytes (0: no cap) beside `fixed` bytes and `per_row` more bytes per staged row (the tap
// table). A wider span takes more segments: the same sums. 16-bit x: none (its rows are 128 bytes).
template <class T>
int band_stage_cap(std::size_t per_sm, std::size_t fixed, std::size_t per_row) {
  using pol = dx_band_policy<T>;
  if (!pol::tf32 || per_sm == 0) return 0;
  // the runtime's reserve and the kernels' static shared memory (the span pair, 8 bytes, padded to 128 where a kernel
  // with a 128-byte-aligned dynamic array, the fused forward, is in the same module: bench/cuda/resources.txt)
  const std::size_t share = per_sm / pol::min_blocks, reserved = smem_reserved_per_block + 128u;
  const std::size_t room = share > reserved + fixed ? share - reserved - fixed : 0;
  const long long rows = static_cast<long long>(room / (pol::row_bytes + per_row)) - pol::pad_rows;
  const int cap = static_cast<int>(rows / 16 * 16);
  return cap < 32 ? 32 : cap;  // then fewer blocks per SM
}
// per_sm (the SM's shared memory; 0: no cap): float's stage is capped by band_stage_cap.
template <class T>
dx_band_launch plan_input_grad_band(const seq_shape& s, const window_params& w, double max_offset, int nh, bool fused,
                                    std::size_t per_sm = 0) {
  using pol = dx_band_policy<T>;
  const int steps = fused ? static_cast<int>((w.num_offsets() + 7) / 8) : 0;
  const int max_rows = band_stage_cap<T>(per_sm, std::size_t(steps) * 256u * pol::w_frag_bytes,
                                         std::size_t(nh) * dx_band_smem<T>::tap_bytes);
  dx_band_launch p = plan_band<T>(s, w, max_offset, pol::tiles_per_block, max_rows);
  p.args.steps = steps;
  p.args.w_at = dx_band_smem<T>::w_at(p.args.stage_rows, nh);
  p.smem = dx_band_smem<T>::bytes(p.args.stage_rows, nh, p.args.steps);
  return p;
}

// The tile plan of the dx kernel for a problem (host): rows per tile, tiles per sequence, bucket count.
struct dx_launch {
  dx_args args;
  int bins = 0;
};
template <class T>
inline dx_launch plan_input_grad(const seq_shape& s, const window_params& w) {
  using P = dx_policy<T>;
  const window_geom wg = window_geom::make(w, s.C);
  dx_launch p;
  p.args.nh_max = wg.subs > 1 ? 1 : wg.heads_per_block;
  p.args.tile = talkconv::detail::dx_tile_rows(P::tile, p.args.nh_max);
  p.args.tiles = (s.T + p.args.tile - 1) / p.args.tile;
  p.args.tiles_per_block = P::tiles_per_block;
  p.args.blocks_per_seq = (p.args.tiles + p.args.tiles_per_block - 1) / p.args.tiles_per_block;
  p.args.causal = w.causal;
  p.bins = p.args.nh_max * (p.args.tile + 1);
  return p;
}

// The dx kernel's shared memory for one variant (host-testable: pass the SM's shared memory): the fused
// path's W^T chunks, the staged dy rows (dx_policy::stage_dy: as many as keep min_blocks blocks per SM beside
// the rank table), and the rank table where it fits. np: offsets per token (P).
struct dx_smem_plan {
  dx_args args;
  std::size_t smem = 0;
};
// Whether a plan's block fits the GPU's opt-in shared memory (the kernel's static shared memory included).
inline bool dx_plan_fits(const dx_smem_plan& q, std::size_t optin) { return q.smem + vtile_static_smem <= optin; }
template <class T, class Idx, int VEC, bool Fused>
dx_smem_plan plan_input_grad_smem(const dx_launch& p, index_t np, std::size_t per_sm) {
  using P = dx_policy<T>;
  const int groups = P::shape(VEC).groups;
  dx_smem_plan q;
  q.args = p.args;
  if (Fused) {
    q.args.chunks = static_cast<int>((np + 31) / 32);
    q.args.w_at = dx_smem<T, Idx>::weights_at(p.bins, groups);
  }
  q.smem = dx_smem<T, Idx>::bytes(p.bins, groups, q.args.chunks);
  // The compaction's ring: in the fused float path's dz buffer (free during the batches), else after the rest.
  const bool ring_in_dz = dx_smem<T, Idx>::queue_in_dz(Fused);
  const std::size_t ring = ring_in_dz ? 0 : dx_smem<T, Idx>::queue_bytes;
  // Shared memory one block may take and keep its resident blocks per SM (the launch bounds').
  const std::size_t share = per_sm / (Fused ? P::fused_min_blocks : P::min_blocks);
  const std::size_t fixed = smem_reserved_per_block + vtile_static_smem;
  const std::size_t budget = share > fixed ? share - fixed : 0;
  const std::size_t table = dx_smem<T, Idx>::rank_table_bytes(p.bins);
  if constexpr (P::stage_dy && VEC == P::vec) {
    // Staged dy: the rows that fit beside the ring and the rank table or in the fused path's dz buffer (which
    // the stage aliases), at most the distinct tokens of a batch's 256 records (one row each), at least
    // min_stage_rows (then fewer blocks per SM, the same sums).
    const std::size_t at = dx_smem<T, Idx>::stage_at(p.bins, groups, q.args.chunks);
    const int most = P::threads;
    const std::size_t beside = budget > table + ring ? budget - table - ring : 0;
    const std::size_t limit = beside > q.smem ? beside : q.smem;
    const std::size_t room = limit > at ? (limit - at) / P::stage_row_bytes : 0;
    q.args.stage_rows = talkconv::detail::dx_stage_rows(static_cast<long long>(room), most, P::min_stage_rows);
    q.args.stage_at = static_cast<unsigned>(at);
    q.smem = dx_smem<T, Idx>::bytes(p.bins, groups, q.args.chunks, q.args.stage_rows);
  }
  if (ring_in_dz) {
    q.args.queue_at = dx_smem<T, Idx>::tail_at(p.bins, groups, q.args.chunks);
  } else {
    q.args.queue_at = (q.smem + 15) / 16 * 16;
    q.smem = q.args.queue_at + ring;
  }
  // The rank table where it keeps min_blocks blocks per SM (else one warp ranks every chunk).
  if (q.smem + table <= budget) {
    q.args.rank_at = q.smem;
    q.smem += table;
  }
  return q;
}

// The dx kernels' variants: fused with 16-byte vectors where asked (run returns false when that plan does not fit: the
// unfused one then), unfused with 16-byte vectors, or element by element. run(vec, fuse) launches one.
template <int V, bool Fusable, class Run>
void dispatch_dx_variant(bool vectors, bool fused, Run&& run) {
  if constexpr (V > 1) {
    if (vectors) {
      if constexpr (Fusable) {
        if (fused && run(std::integral_constant<int, V>{}, std::true_type{})) return;
      }
      run(std::integral_constant<int, V>{}, std::false_type{});
      return;
    }
  }
  run(std::integral_constant<int, 1>{}, std::false_type{});
}

// ---- the sorted-events dx: its workspace, its plan and its launch ----

// Whether the sorted-events dx takes a problem: every one the banded dx does not take by shape (double; float past
// K = 127; 16-bit x past TALKCONV_CUDA_BAND_MAX_K; R % 16 != 0 or C % 8 != 0). By shape alone, so that a workspace
// query and its call agree; a problem the banded dx refuses for its pointers only (misaligned tensors) takes the
// event kernel.
template <class T>
bool sorted_dx_applies(const seq_shape& s, const window_params& w) {
  return TALKCONV_CUDA_DX_SORTED != 0 && s.T > 0 && s.B > 0 && !band_shape_applies<T>(window_geom::make(w, s.C), s, w);
}

// The sorted path's workspace (inside the window backward's and the layer backward's): the keys and the events twice
// (the sort's double buffer), the row starts, CUB's temporary storage. on = false and 0 bytes where the path does not
// apply, or where no CUDA device answers the sort's size query (then nothing runs at all).
struct sorted_dx_workspace {
  bool on = false;
  bool idx32 = true;  // 32-bit keys, positions and index arithmetic
  int bits = 0;       // key bits the sort compares (the sentinel: all of them set)
  index_t rows = 0;   // B * H * T keys (sequence, head, row)
  index_t items = 0;  // 4 events per (token, head)
  std::size_t temp_bytes = 0;
  std::size_t keys0 = 0, keys1 = 0, vals0 = 0, vals1 = 0, starts = 0, temp = 0, bytes = 0;
};

// The stable radix sort of the events (size query when temp is null), one call shape for the query and the run.
template <class U, class V>
cudaError_t sort_dx_events(void* temp, std::size_t& temp_bytes, cub::DoubleBuffer<U>& keys, cub::DoubleBuffer<V>& vals,
                           const sorted_dx_workspace& p, cudaStream_t stream) {
  if constexpr (sizeof(U) == 4)  // p.idx32: fewer than 2^30 events
    return cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys, vals, static_cast<int>(p.items), 0, p.bits, stream);
  else
    return cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys, vals, p.items, 0, p.bits, stream);
}

template <class T>
sorted_dx_workspace plan_sorted_dx_workspace(const seq_shape& s, const window_params& w) {
  using A = acc_t<T>;
  namespace td = talkconv::detail;
  sorted_dx_workspace p;
  if (!sorted_dx_applies<T>(s, w)) return p;
  p.rows = td::checked_mul(td::checked_mul(s.B, w.heads, "B*H"), s.T, "B*H*T");
  p.items = td::checked_mul(p.rows, td::dx_sorted_taps, "B*H*T*4");
  p.idx32 = fits_int32(s, w.num_offsets()) && p.items < (index_t(1) << 30);
  p.bits = td::dx_sorted_key_bits(static_cast<std::uint64_t>(p.rows));
  // CUB sizes its temporary storage for the current device: without one, the path is off (nothing can run).
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    (void)cudaGetLastError();  // this query's own error (no device: there is no caller's launch to report)
    return sorted_dx_workspace{};
  }
  dispatch_index(p.idx32, [&](auto I) {
    using U = std::make_unsigned_t<typename decltype(I)::type>;
    using V = td::dx_sorted_value<A, U>;
    cub::DoubleBuffer<U> kb(nullptr, nullptr);
    cub::DoubleBuffer<V> vb(nullptr, nullptr);
    check(sort_dx_events(nullptr, p.temp_bytes, kb, vb, p, nullptr), "cub::DeviceRadixSort::SortPairs (size query)");
    workspace_plan wp;
    p.keys0 = wp.add(checked_bytes(p.items, sizeof(U), "B*H*T*4 event keys"));
    p.keys1 = wp.add(checked_bytes(p.items, sizeof(U), "B*H*T*4 event keys"));
    p.vals0 = wp.add(checked_bytes(p.items, sizeof(V), "B*H*T*4 events"));
    p.vals1 = wp.add(checked_bytes(p.items, sizeof(V), "B*H*T*4 events"));
    p.starts = wp.add(checked_bytes(p.rows + 1, sizeof(U), "B*H*T row starts"));
    p.temp = wp.add(p.temp_bytes);
    p.bytes = wp.bytes;
  });
  p.on = true;
  return p;
}

// The gather kernel's plan and shared memory (host-testable): the tile of dx_policy::tile rows, the staged chunk (the
// raking pass aliases it), the row starts of nh_max heads, the heads' bases, the carry round, and for the fused offset
// path W^T and the dz buffer (as the event kernel stages them).
template <class T, class Idx, int VEC, bool Fused>
dx_sorted_args<acc_t<T>, Idx> plan_sorted_dx(const seq_shape& s, const window_params& w, index_t np, std::size_t& smem) {
  using A = acc_t<T>;
  using P = dx_policy<T>;
  using D = dx_sorted_args<A, Idx>;
  using U = typename D::U;
  const window_geom wg = window_geom::make(w, s.C);
  D d;
  d.nh_max = wg.subs > 1 ? 1 : wg.heads_per_block;
  d.tile = P::tile;
  d.tiles = (s.T + P::tile - 1) / P::tile;
  d.tiles_per_block = P::sorted_tiles_per_block;
  d.blocks_per_seq = (d.tiles + d.tiles_per_block - 1) / d.tiles_per_block;
  d.causal = w.causal;
  d.cap = P::sorted_stage_bytes / static_cast<int>(sizeof(typename D::value));
  auto up16 = [](std::size_t x) { return (x + 15) / 16 * 16; };
  const std::size_t scan = sizeof(A) * 2 * std::size_t(P::shape(VEC).groups) * P::lanes;
  const std::size_t stage = sizeof(typename D::value) * std::size_t(d.cap);
  std::size_t at = up16(stage > scan ? stage : scan);
  d.rs_at = static_cast<unsigned>(at);
  at = up16(at + sizeof(U) * std::size_t(d.nh_max) * (P::tile + 1));
  d.hb_at = static_cast<unsigned>(at);
  at = up16(at + sizeof(U) * (2 * std::size_t(d.nh_max) + 1));
  d.car_at = static_cast<unsigned>(at);
  at = up16(at + (sizeof(U) + sizeof(A) + 1) * std::size_t(P::threads));
  if (Fused) {
    d.chunks = static_cast<int>((np + 31) / 32);
    d.w_at = at;
    at += sizeof(float) * std::size_t(talkconv::detail::dxf_chunk_floats) * std::size_t(d.chunks) * (P::split_w ? 2 : 1) +
          sizeof(float) * std::size_t(P::tile) * 32;
  }
  smem = at;
  return d;
}

// dx by sorted events where a.sort_ws holds plan_sorted_dx_workspace's bytes (window_backward and the layer's backward
// ask for them where sorted_dx_applies): the events pass, the sort, the starts pass, the gather kernel, with W^T dz
// fused where the event kernel would fuse it (returns whether it did). Asynchronous on `stream`; no allocation.
template <class T>
bool launch_input_grad_sorted(const window_args<T>& a, const seq_shape& s, const window_params& w, cudaStream_t stream) {
  using A = acc_t<T>;
  using P = dx_policy<T>;
  namespace td = talkconv::detail;
  const sorted_dx_workspace ws = plan_sorted_dx_workspace<T>(s, w);
  if (!ws.on) td::fail(status::cuda_error, "dx", "the sorted-events dx was launched where it does not apply");
  constexpr int V = P::vec;
  const bool vectors = V > 1 && a.w.R % V == 0 && s.C % V == 0 && reinterpret_cast<std::uintptr_t>(a.dy) % 16 == 0 &&
                       reinterpret_cast<std::uintptr_t>(a.dx) % 16 == 0;
  const index_t np = w.num_offsets();
  const bool fused = P::fusable && vectors && a.dz != nullptr && a.weight != nullptr && np <= 32 * P::fused_chunks;
  bool done = false;
  dispatch_index(ws.idx32, [&](auto I) {
    using Idx = typename decltype(I)::type;
    using U = std::make_unsigned_t<Idx>;
    using Val = td::dx_sorted_value<A, U>;
    U* keys0 = reinterpret_cast<U*>(a.sort_ws + ws.keys0);
    U* keys1 = reinterpret_cast<U*>(a.sort_ws + ws.keys1);
    Val* vals0 = reinterpret_cast<Val*>(a.sort_ws + ws.vals0);
    Val* vals1 = reinterpret_cast<Val*>(a.sort_ws + ws.vals1);
    U* starts = reinterpret_cast<U*>(a.sort_ws + ws.starts);
    dx_sorted_events_kernel<T, Idx><<<grid_for(s.T * s.B, row_threads), row_threads, 0, stream>>>(
        a, keys0, vals0, static_cast<U>(td::dx_sorted_sentinel(ws.bits)), w.causal);
    check_launch("dx_sorted_events_kernel");
    cub::DoubleBuffer<U> kb(keys0, keys1);
    cub::DoubleBuffer<Val> vb(vals0, vals1);
    std::size_t temp_bytes = ws.temp_bytes;
    check(sort_dx_events(a.sort_ws + ws.temp, temp_bytes, kb, vb, ws, stream), "cub::DeviceRadixSort::SortPairs");
    dx_sorted_starts_kernel<U><<<grid_for(ws.rows + 1, row_threads), row_threads, 0, stream>>>(
        kb.Current(), static_cast<U>(ws.items), static_cast<U>(ws.rows), starts);
    check_launch("dx_sorted_starts_kernel");
    // The gather; false (nothing launched) for a fused plan beyond the opt-in: the unfused kernel runs then.
    auto run = [&](auto vec, auto fuse) {
      constexpr int VEC = decltype(vec)::value;
      constexpr bool Fused = decltype(fuse)::value;
      std::size_t smem = 0;
      dx_sorted_args<A, Idx> d = plan_sorted_dx<T, Idx, VEC, Fused>(s, w, np, smem);
      if (Fused && smem > smem_optin()) return false;
      d.vals = vb.Current();
      d.starts = starts;
      auto* kernel = &input_grad_sorted_kernel<T, Idx, VEC, Fused>;
      allow_smem(kernel, smem, "cudaFuncSetAttribute(input_grad_sorted_kernel)");
      kernel<<<window_grid(s, d.blocks_per_seq, a.w), P::threads, smem, stream>>>(a, d);
      check_launch("input_grad_sorted_kernel");
      done = Fused;
      return true;
    };
    dispatch_dx_variant<V, P::fusable>(vectors, fused, run);
  });
  return done;
}

// dx = the window part of the input gradient (overwritten). a.reach: the windows' reach on the device
// (window_reach_kernel), a.dy, a.dx, a.offsets set. When a.dz is set (with a.weight: the layer's dz after
// the sigmoid and dropout, zero past the lengths), W^T dz is added in the same pass where the fused path
// applies (dx_policy::fusable: 16-bit types and float; 16-byte vectors; P <= 32 * fused_chunks): returns
// true then; false means
// the caller adds W^T dz itself. The banded kernels where they apply; else the sorted-events path where a.sort_ws
// holds its workspace; else the event kernel. Asynchronous on `stream`.
// max_offset: the largest offset expected (sizes the banded path's segments; any offsets give the same sums).
template <class T>
bool launch_input_grad(const window_args<T>& a, const seq_shape& s, const window_params& w, cudaStream_t stream,
                       double max_offset = 1.0) {
  using P = dx_policy<T>;
  const bool band_fused = a.dz != nullptr && a.weight != nullptr && w.num_offsets() <= 8 * dx_band_policy<T>::max_steps;
  const dx_band_launch band =
      plan_input_grad_band<T>(s, w, max_offset, heads_per_block(a.w), band_fused, smem_per_sm());
  if (use_input_grad_band(a, s, w) && band.smem + smem_reserved_per_block <= smem_optin()) {
    const bool fused = band_fused;
    const dx_band_launch& p = band;
    const dim3 grid = window_grid(s, p.args.blocks_per_seq, a.w);
    dispatch_index(fits_int32(s, w.num_offsets()), [&](auto I) {
      using Idx = typename decltype(I)::type;
      auto run = [&](auto fuse) {
        auto* kernel = &input_grad_band_kernel<T, Idx, decltype(fuse)::value>;
        allow_smem(kernel, p.smem, "cudaFuncSetAttribute(input_grad_band_kernel)");
        kernel<<<grid, dx_band_policy<T>::threads, p.smem, stream>>>(a, p.args);
        check_launch("input_grad_band_kernel");
      };
      if (fused)
        run(std::true_type{});
      else
        run(std::false_type{});
    });
    return fused;
  }
  if (a.sort_ws != nullptr && sorted_dx_applies<T>(s, w)) return launch_input_grad_sorted(a, s, w, stream);
  dx_launch p = plan_input_grad<T>(s, w);
  const dim3 grid = window_grid(s, p.args.blocks_per_seq, a.w);
  constexpr int V = P::vec;
  const bool vectors = V > 1 && a.w.R % V == 0 && s.C % V == 0 &&
                       reinterpret_cast<std::uintptr_t>(a.dy) % 16 == 0 &&
                       reinterpret_cast<std::uintptr_t>(a.dx) % 16 == 0;
  const index_t np = w.num_offsets();
  const bool fused = P::fusable && vectors && a.dz != nullptr && a.weight != nullptr && np <= 32 * P::fused_chunks;
  bool done = false;
  dispatch_index(fits_int32(s, np), [&](auto I) {
    using Idx = typename decltype(I)::type;
    // Launches the variant; false (nothing launched) for a fused plan beyond the opt-in (W^T of many offsets
    // in float on a GPU with less shared memory): the unfused kernel runs then, the caller adds W^T dz.
    auto run = [&](auto vec, auto fuse) {
      constexpr int VEC = decltype(vec)::value;
      constexpr bool Fused = decltype(fuse)::value;
      const dx_smem_plan q = plan_input_grad_smem<T, Idx, VEC, Fused>(p, np, smem_per_sm());
      if (Fused && !dx_plan_fits(q, smem_optin())) return false;
      const dx_args& args = q.args;
      const std::size_t smem = q.smem;
      auto* kernel = &input_grad_kernel<T, Idx, VEC, Fused>;
      allow_smem(kernel, smem, "cudaFuncSetAttribute(input_grad_kernel)");
      kernel<<<grid, P::threads, smem, stream>>>(a, args);
      check_launch("input_grad_kernel");
      done = Fused;
      return true;
    };
    dispatch_dx_variant<V, P::fusable>(vectors, fused, run);
  });
  return done;
}

// Every grid the window kernels of a call launch (forward / offset-gradient tiles, and the dx tiles as
// plan_input_grad sizes them) fits: checked by the entry points right after validation, before any
// workspace query or launch, so a refused call touches no memory.
template <class T>
void check_window_grids(const seq_shape& s, const window_params& w) {
  const window_geom wg = window_geom::make(w, s.C);
  constexpr index_t vector_shortest = window_tile_policy<T>::unit < offsets_grad_policy<T>::tile
                                          ? window_tile_policy<T>::unit
                                          : offsets_grad_policy<T>::tile;
  constexpr index_t shortest = vector_shortest < window_traits::fwd_tile ? vector_shortest : window_traits::fwd_tile;
  window_grid(s, (s.T + shortest - 1) / shortest, wg);
  window_grid(s, plan_input_grad<T>(s, w).args.blocks_per_seq, wg);
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
