// Building block 4 on CUDA: window aggregation forward (fused local prefix sums) and backward.
#pragma once

#include "talkconv/cuda/dispatch.cuh"
#include "talkconv/cuda/kernel_offsets.cuh"
#include "talkconv/cuda/kernel_window.cuh"
#include "talkconv/cuda/kernel_window_input_grad.cuh"

#include <cstdint>
#include <limits>

namespace talkconv {
namespace cuda {
namespace detail {

// Validates what SPEC lists (lengths live on the device: they are clamped to [0, T] in the kernels
// instead). Returns true for an empty problem (T == 0 or B == 0): nothing to launch, success.
inline bool validate_or_empty(const seq_shape& s, const window_params& w) {
  seq_shape v = s;
  const bool empty = (s.T == 0 || s.B == 0) && s.T >= 0 && s.B >= 0;
  if (empty) {
    v.T = s.T == 0 ? 1 : s.T;
    v.B = s.B == 0 ? 1 : s.B;
  }
  talkconv::detail::validate_problem(v, w, nullptr);
  return empty;
}

template <class T>
window_args<T> make_window_args(const seq_shape& s, const window_params& w, const index_t* lengths) {
  window_args<T> a;
  a.g = make_geom(s, w.num_offsets(), lengths);
  a.w = window_geom::make(w, s.C);
  return a;
}

// True when the vector tiles apply: every 16-byte vector of channels lies in one head (R % vec == 0, so
// C, the strides and every block's first channel are multiples of vec too) and the tensors are aligned.
template <class T>
bool vector_tiles(const window_args<T>& a, const void* out) {
  constexpr index_t V = window_tile_policy<T>::vec;
  auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  return a.w.R % V == 0 && aligned(a.x) && aligned(out);
}

// Fills a's vector-tile plan; false when not even one tile unit and its base row fit (then the caller
// fails as the generic plan would).
template <class T>
talkconv::detail::window_tile_plan vtile_plan(window_args<T>& a, const seq_shape& s, const window_params& w,
                                              double max_offset, bool grad) {
  const int nh = heads_per_block(a.w);
  const talkconv::detail::window_tile_plan p = plan_vtile<T>(w, max_offset, grad, nh, smem_per_sm(), smem_optin());
  if (p.tile == 0) talkconv::detail::fail(status::cuda_error, "shared memory", "the device's shared memory is too small");
  a.tile = p.tile;
  a.tiles = (s.T + p.tile - 1) / p.tile;
  a.cap_rows = p.rows;
  a.left = p.left;
  a.tap_heads = nh;
  return p;
}

// The segmented forward's plan (window_forward_segments), when the vector-tile plan `vt` cannot keep a
// tile's whole span (the tile and the halos of max_offset): tiles of segment_policy::tile tokens (fewer
// where the tap table would crowd out the rows), segments of as many rows as keep segment_policy::min_blocks
// blocks per SM (at most the span). rows == 0: no segments (vt keeps the
// span, the span is too long for int, or not even a base row and one data row fit).
struct segments_plan {
  int tile = 0, rows = 0, left = 0, right = 0;
  std::size_t smem = 0;
};
template <class T>
segments_plan plan_segments(const window_params& w, double max_offset, int nh, std::size_t per_sm,
                            const talkconv::detail::window_tile_plan& vt) {
  if (!(max_offset >= 0.0) || !std::isfinite(max_offset)) max_offset = 1.0;
  const double hl = talkconv::detail::halo_left_rows(w.max_left, max_offset);
  const double hr = talkconv::detail::halo_right_rows(w.max_right, w.causal, max_offset);
  segments_plan p;
  if (vt.rows >= vt.tile + hl + hr) return p;
  using S = segment_policy<T>;
  if (hl + hr + S::tile > double(INT_MAX / 4)) return p;
  const std::size_t share = per_sm / S::min_blocks, fixed = smem_reserved_per_block + vtile_static_smem;
  if (share <= fixed) return p;
  // The tile (at most S::tile, the tokens the kernel's threads cover) with the least work per token:
  // span / tile rows staged and scanned, plus one tap evaluation per segment, span / (rows - 1) of them
  // (about the same cost each). The tap table takes tile * nh entries from the rows: with many heads per
  // block on a 100 KB SM a shorter tile keeps more rows.
  const double span = hl + hr;
  double best = 0.0, best_rows = 0.0;
  int tile = 0;
  for (int t = S::tile; t >= window_tile_policy<T>::unit; t /= 2) {
    const std::size_t taps = vtile_layout<T>::token_bytes(nh, false) * std::size_t(t);
    if (share <= fixed + taps) continue;
    const double fit = std::floor(double(share - fixed - taps) / double(vtile_layout<T>::row_bytes()));
    const double rows = fit < span + t + 1.0 ? fit : span + t + 1.0;
    if (rows < 2.0) continue;
    const double cost = (span + t) / t + std::ceil((span + t) / (rows - 1.0));
    if (tile == 0 || cost < best) {
      best = cost;
      best_rows = rows;
      tile = t;
    }
  }
  if (tile == 0) return p;
  const double rows = best_rows;
  const std::size_t taps = vtile_layout<T>::token_bytes(nh, false) * std::size_t(tile);
  p.tile = tile;
  p.rows = static_cast<int>(rows);
  p.left = static_cast<int>(hl);
  p.right = static_cast<int>(hr);
  p.smem = vtile_layout<T>::taps_at(p.rows) + taps;
  return p;
}

// The banded forward's launch plan (host-testable): segment rows, tiles per block, shared memory.
// per_sm (the SM's shared memory; 0: no cap): float's stage is capped by band_stage_cap.
template <class T>
dx_band_launch plan_window_forward_band(const seq_shape& s, const window_params& w, double max_offset, int nh,
                                        std::size_t per_sm = 0) {
  const int max_rows = band_stage_cap<T>(per_sm, std::size_t(nh) * 128u * dx_band_smem<T>::tap_bytes, 0);
  dx_band_launch p = plan_band<T>(s, w, max_offset, dx_band_policy<T>::fwd_tiles_per_block, max_rows);
  p.smem = dx_band_smem<T>::forward_bytes(p.args.stage_rows, nh);
  return p;
}

// Time tiles per sequence of the fused kernels (one tile of band_tile_rows rows per block).
inline index_t fused_time_tiles(const seq_shape& s) {
  return (s.T + talkconv::detail::band_tile_rows - 1) / talkconv::detail::band_tile_rows;
}

// The fused layer forward's plan (host-testable): the banded forward's segments for one tile of 128 rows per block
// (its stage rows, float's capped as the banded forward kernel's are for nh heads a block and per_sm bytes an SM:
// the same segments, the same sums), the grid's tiles per sequence and the shared memory (forward_fused_smem).
struct forward_fused_launch {
  dx_band_args args;
  index_t tiles = 0;
  std::size_t smem = 0;
};
template <class T, int BN>
forward_fused_launch plan_forward_fused(const seq_shape& s, const window_params& w, double max_offset, int nh,
                                        std::size_t per_sm = 0) {
  const int max_rows = band_stage_cap<T>(per_sm, std::size_t(nh) * 128u * dx_band_smem<T>::tap_bytes, 0);
  const dx_band_launch b = plan_band<T>(s, w, max_offset, 1, max_rows);
  forward_fused_launch p;
  p.args = b.args;
  p.tiles = fused_time_tiles(s);
  p.smem = forward_fused_smem<T, BN>::bytes(p.args.stage_rows, w.num_offsets(), w.heads);
  return p;
}

// The layer forward in one kernel (agent_forward_fused.cuh) where it applies: 16-bit or float x on tensor cores for
// both halves (forward_fused_types; sm_80+ code), the banded forward's conditions (band_applies), the projection's
// tiled form (project_dot_form: else its sums, hence the bits, would differ), at least two blocks (time tiles of 128
// rows) per SM (fewer: the two kernels spread the window over channel blocks too, which the fused block walks one
// after the other) and two blocks' shared memory per SM (the offsets tile and the taps table grow with P and H: 16-bit
// x at P = 32 takes 75 KB a block, P = 64 107 KB: an H100 / H200 only; float's stage, 512 bytes a token, takes 110 KB
// at K = 33, H = 16, P = 32: an H100 / H200 up to K = 47 there, K = 63 with 8 heads; an A100 only with a few heads
// and narrow windows); TALKCONV_CUDA_FUSED_FORWARD=0 turns it off. oa: the
// projection's arguments (oa.o is not written: the offsets stay in shared memory; oa.o_pre is, when set), wa: the
// window's (wa.offsets unused). Returns false (nothing launched) where it does not apply: the
// caller runs launch_project and launch_window_forward then. With launch = false, only whether it applies (tests).
// A speed choice only: y and o_pre are the two kernels' bits. Asynchronous on `stream`.
template <class T>
bool launch_forward_fused(offsets_args<T> oa, const window_args<T>& wa, const seq_shape& s, const window_params& w,
                          double max_offset, cudaStream_t stream, bool launch = true) {
  if constexpr (!(TALKCONV_CUDA_FUSED_FORWARD != 0 && forward_fused_types<T>)) {
    (void)oa, (void)wa, (void)s, (void)w, (void)max_offset, (void)stream, (void)launch;
    return false;
  } else {
    const index_t P = w.num_offsets();
    if (!band_applies<T, true>(wa.w, s, w, wa.x, wa.y) || !band_kernels_built<T>()) return false;
    oa.o = nullptr;
    bool done = false;
    dispatch_heads(P, [&](auto pc) {
      constexpr int PC = decltype(pc)::value;
      constexpr int BN = project_bn<T, PC>();  // launch_project's tiles
      const forward_fused_launch p = plan_forward_fused<T, BN>(s, w, max_offset, heads_per_block(wa.w), smem_per_sm());
      const index_t blocks = s.B * p.tiles;
      // where the projection alone would take its dot-product form (T * B <= ~4k rows), its sums differ: not here
      if (project_dot_form(s.T * s.B, P, project_policy<T>::rows, BN)) return;
      // two blocks per SM (the static span pair, aligned, and the runtime's reserve included): one block's
      // projection overlaps the other's window
      const std::size_t block = p.smem + 128u + smem_reserved_per_block;
      if (blocks < 2 * index_t(sm_count()) || blocks > std::numeric_limits<std::int32_t>::max() ||
          block > smem_optin() || 2 * block > smem_per_sm())
        return;
      done = true;
      if (!launch) return;
      dispatch_index(fits_int32(s, P), [&](auto I) {
        using Idx = typename decltype(I)::type;
        auto* kernel = &forward_fused_kernel<T, BN, Idx>;
        allow_smem(kernel, p.smem, "cudaFuncSetAttribute(forward_fused_kernel)");
        kernel<<<static_cast<unsigned>(blocks), dx_band_policy<T>::threads, p.smem, stream>>>(oa, wa, p.args, p.tiles);
        check_launch("forward_fused_kernel");
      });
    });
    return done;
  }
}

// y from x and a.offsets, no global prefix tensor: the banded product on tensor cores for 16-bit x and float
// with windows up to dx_band_policy::fwd_max_k, else vector tiles when they apply (in segments when a tile's span does not fit
// a block), else the generic tile.
template <class T>
void launch_window_forward(window_args<T> a, const seq_shape& s, const window_params& w, double max_offset,
                           cudaStream_t stream) {
  const dx_band_launch band = plan_window_forward_band<T>(s, w, max_offset, heads_per_block(a.w), smem_per_sm());
  if (band_applies<T, true>(a.w, s, w, a.x, a.y) && band.smem + smem_reserved_per_block <= smem_optin() &&
      band_kernels_built<T>()) {
    const dx_band_launch& p = band;
    const dim3 grid = window_grid(s, p.args.blocks_per_seq, a.w);
    dispatch_index(fits_int32(s, w.num_offsets()), [&](auto I) {
      using Idx = typename decltype(I)::type;
      auto* kernel = &window_forward_band_kernel<T, Idx>;
      allow_smem(kernel, p.smem, "cudaFuncSetAttribute(window_forward_band_kernel)");
      kernel<<<grid, dx_band_policy<T>::threads, p.smem, stream>>>(a, p.args);
      check_launch("window_forward_band_kernel");
    });
    return;
  }
  if (vector_tiles(a, a.y)) {
    const talkconv::detail::window_tile_plan p = vtile_plan(a, s, w, max_offset, false);
    const segments_plan q = plan_segments<T>(w, max_offset, heads_per_block(a.w), smem_per_sm(), p);
    if (q.rows > 0) {
      a.tile = q.tile;
      a.tiles = (s.T + q.tile - 1) / q.tile;
      a.cap_rows = q.rows;
      a.left = q.left;
      a.right = q.right;
    }
    const std::size_t smem = q.rows > 0 ? q.smem : p.smem;
    auto run = [&](auto* kernel, const char* attr, const char* name) {
      allow_smem(kernel, smem, attr);
      kernel<<<window_grid(s, a.tiles, a.w), window_tile_policy<T>::threads, smem, stream>>>(a);
      check_launch(name);
    };
    dispatch_window(fits_int32(s, w.num_offsets()), w.causal, [&](auto I, auto causal) {
      using Idx = typename decltype(I)::type;
      constexpr bool Causal = decltype(causal)::value;
      if (q.rows > 0)
        run(&window_forward_segments_kernel<T, Idx, Causal>, "cudaFuncSetAttribute(window_forward_segments_kernel)",
            "window_forward_segments_kernel");
      else
        run(&window_forward_vtile_kernel<T, Idx, Causal>, "cudaFuncSetAttribute(window_forward_vtile_kernel)",
            "window_forward_vtile_kernel");
    });
    return;
  }
  const window_launch p = plan_window<acc_t<T>>(s, w, max_offset, false);
  a.tile = p.tile;
  a.tiles = p.tiles;
  a.cap_rows = p.cap_rows;
  const dim3 grid = window_grid(s, p.tiles, a.w);
  dispatch_window(fits_int32(s, w.num_offsets()), w.causal, [&](auto I, auto causal) {
    using Idx = typename decltype(I)::type;
    auto* kernel = &window_forward_kernel<T, Idx, decltype(causal)::value>;
    allow_smem(kernel, p.smem, "cudaFuncSetAttribute(window_forward_kernel)");
    kernel<<<grid, window_traits::threads, p.smem, stream>>>(a);
    check_launch("window_forward_kernel");
  });
}

// The reach of every window of a (window_reach_kernel: the definition the gather kernel folds in) into reach[0..1],
// which the caller zeroed. Asynchronous on `stream`.
template <class T, class Idx, bool Causal>
void launch_reach(const window_args<T>& a, const seq_shape& s, unsigned long long* reach, cudaStream_t stream) {
  window_reach_kernel<T, Idx, Causal><<<grid_for(s.T * s.B, row_threads), row_threads, 0, stream>>>(a, reach);
  check_launch("window_reach_kernel");
}

// The fused window backward's plan (host-testable): the banded dx's plan (its segments: the same k steps) for one
// tile of 128 rows per block, the grid's tiles per sequence, and the shared memory: the larger of the gather's
// (offsets_grad_layout) and the banded dx's.
struct backward_fused_launch {
  dx_band_args args;
  index_t tiles = 0;
  std::size_t smem = 0;
};
template <class T>
backward_fused_launch plan_backward_fused(const seq_shape& s, const window_params& w, double max_offset, int nh,
                                          std::size_t per_sm = 0) {
  const dx_band_launch band = plan_input_grad_band<T>(s, w, max_offset, nh, true, per_sm);
  backward_fused_launch p;
  p.args = band.args;
  p.args.tiles_per_block = 1;
  p.tiles = fused_time_tiles(s);
  p.args.blocks_per_seq = p.tiles;
  const std::size_t gather = offsets_grad_layout<T>::bytes(offsets_grad_policy<T>::tile, nh);
  p.smem = band.smem > gather ? band.smem : gather;
  return p;
}

// The window backward of 16-bit and float x in one kernel (agent_backward_fused.cuh) where it applies: the gather kernel's
// conditions (a.partial set, vector tiles), its finish (finish_asked, whole heads per channel block: a.partial is
// dz then), the banded dx with W^T dz (a.dz, a.weight, P <= 8 max_steps), two blocks' shared memory within an SM,
// and at least two tiles per SM (fewer: the two kernels spread over channel blocks too). Launches the reach pass (reach zeroed by
// the caller) and the kernel; returns false (nothing launched) where it does not apply. With launch = false, only
// whether it applies (tests). A speed choice only: dz and dx are the two kernels' bits. Asynchronous on `stream`.
template <class T>
bool launch_backward_fused(window_args<T> a, const seq_shape& s, const window_params& w, double max_offset,
                           unsigned long long* reach, bool finish_asked, cudaStream_t stream, bool launch = true) {
  if constexpr (!(TALKCONV_CUDA_FUSED_BACKWARD != 0 && backward_fused_types<T> && dx_band_policy<T>::supported)) {
    (void)a, (void)s, (void)w, (void)max_offset, (void)reach, (void)finish_asked, (void)stream, (void)launch;
    return false;
  } else {
    const index_t P = w.num_offsets();
    if (!finish_asked || a.w.subs != 1 || a.partial == nullptr || a.dz != a.partial || a.weight == nullptr ||
        P > 8 * dx_band_policy<T>::max_steps || !vector_tiles(a, a.dy) || !use_input_grad_band(a, s, w))
      return false;
    const int nh = heads_per_block(a.w);
    const backward_fused_launch p = plan_backward_fused<T>(s, w, max_offset, nh, smem_per_sm());
    const index_t blocks = s.B * p.tiles;
    // two blocks per SM (the kernel's bound; fewer: the two kernels keep more in flight), >= 2 tiles per SM
    const std::size_t block = p.smem + smem_reserved_per_block;
    if (block > smem_optin() || 2 * block > smem_per_sm() || blocks < 2 * index_t(sm_count()) ||
        blocks > std::numeric_limits<std::int32_t>::max())
      return false;
    if (!launch) return true;
    window_args<T> g = a;  // the gather's: whole tiles of its own size, dz finished, no reach folded
    g.tile = offsets_grad_policy<T>::tile;
    g.tiles = (s.T + g.tile - 1) / g.tile;
    g.tap_heads = nh;
    g.finish.on = true;
    g.reach = nullptr;
    a.reach = reach;
    dispatch_window(fits_int32(s, P), w.causal, [&](auto I, auto causal) {
      using Idx = typename decltype(I)::type;
      constexpr bool Causal = decltype(causal)::value;
      launch_reach<T, Idx, Causal>(a, s, reach, stream);
      auto* kernel = &backward_fused_kernel<T, Idx, Causal>;
      allow_smem(kernel, p.smem, "cudaFuncSetAttribute(backward_fused_kernel)");
      kernel<<<static_cast<unsigned>(blocks), dx_band_policy<T>::threads, p.smem, stream>>>(g, a, p.args, p.tiles);
      check_launch("backward_fused_kernel");
    });
    return true;
  }
}

// Reach of all windows into reach[0..1] (zeroed here), then, when a.partial is set, the offsets'
// partial head sums, then dx: the window part, plus W^T dz when a.dz is set and the fused path applies
// (launch_input_grad; returns whether it did, else the caller adds W^T dz). `between(finished)` runs
// after the offset gradients and before dx (the layer turns them into dz there: the fused dx reads it);
// finished: the offset-gradient kernel already applied a.finish (its formula is the combine's; it does
// where a.finish.on is asked, the gather kernel runs and a block holds its heads whole), so a.partial
// holds the result and no combine is needed.
// Where it applies (launch_backward_fused; fuse = false keeps the kernels apart: tests), the offset gradients and dx
// run as one kernel, which finishes dz itself (a.partial is dz there) before its dx reads it; between(true) runs after
// it (finished: a caller has nothing left to do before dx), and it returns true (W^T dz added).
template <class T, class Between>
bool launch_window_backward(window_args<T> a, const seq_shape& s, const window_params& w, double max_offset,
                            unsigned long long* reach, cudaStream_t stream, Between&& between, bool fuse = true) {
  using A = acc_t<T>;
  const bool use32 = fits_int32(s, w.num_offsets());
  check(cudaMemsetAsync(reach, 0, 2 * sizeof(unsigned long long), stream), "cudaMemsetAsync(reach)");
  a.reach = reach;
  const bool finish_asked = a.finish.on;
  if (fuse && launch_backward_fused(a, s, w, max_offset, reach, finish_asked, stream)) {
    between(true);
    return true;
  }
  a.finish.on = false;
  bool finished = false;
  dispatch_window(use32, w.causal, [&](auto I, auto causal) {
    using Idx = typename decltype(I)::type;
    constexpr bool Causal = decltype(causal)::value;
    // The vector offset gradients fold the reach into their row tables (window_offsets_grad_gather); any
    // other path takes the reach pass first.
    const bool vtile_grad = a.partial != nullptr && vector_tiles(a, a.dy);
    if (!vtile_grad) {
      launch_reach<T, Idx, Causal>(a, s, reach, stream);
    }
    if (vtile_grad) {
      // Two x rows per (token, head): no prefix rows, no halo, the same tile whatever the window.
      using G = offsets_grad_policy<T>;
      window_args<T> b = a;
      b.tile = G::tile;
      b.tiles = (s.T + G::tile - 1) / G::tile;
      b.tap_heads = heads_per_block(a.w);
      b.finish.on = finish_asked && a.w.subs == 1;
      const std::size_t smem = offsets_grad_layout<T>::bytes(G::tile, b.tap_heads);
      auto* kernel = &window_offsets_grad_gather_kernel<T, Idx, Causal>;
      allow_smem(kernel, smem, "cudaFuncSetAttribute(window_offsets_grad_gather_kernel)");
      kernel<<<window_grid(s, b.tiles, b.w), G::threads, smem, stream>>>(b);
      check_launch("window_offsets_grad_gather_kernel");
      finished = b.finish.on;
    } else if (a.partial != nullptr) {
      const window_launch p = plan_window<A>(s, w, max_offset, true);
      window_args<T> b = a;
      b.tile = p.tile;
      b.tiles = p.tiles;
      b.cap_rows = p.cap_rows;
      auto* kernel = &window_offsets_grad_kernel<T, Idx, Causal>;
      allow_smem(kernel, p.smem, "cudaFuncSetAttribute(window_offsets_grad_kernel)");
      kernel<<<window_grid(s, p.tiles, b.w), window_traits::threads, p.smem, stream>>>(b);
      check_launch("window_offsets_grad_kernel");
    }
    between(finished);
  });
  return launch_input_grad(a, s, w, stream, max_offset);  // W^T dz too when a.dz is set and the fused path applies
}

// dL/do (or dz when a.o_pre is set) from the partial head sums, into out.
template <class T>
void launch_combine_offsets_grad(const offsets_args<T>& a, acc_t<T>* out, cudaStream_t stream) {
  combine_offsets_grad_kernel<T><<<grid_for(a.g.T * a.g.B * offset_groups(a.g.P), row_threads), row_threads, 0, stream>>>(a, out);
  check_launch("combine_offsets_grad_kernel");
}

}  // namespace detail

// Forward of the window aggregation on the device (SPEC steps 2-4), the CUDA twin of
// cpu::window_forward:  y[t, b, c] = I(a_r) - I(a_l - 1), zero for t >= n_b.
//   x, y      device, [T, B, C] or [B, T, C] (shape.lay), storage type T
//   offsets   device, layout of x with width P, after dropout, acc_t<T>
//   lengths   device array of B valid lengths (int64), or null for T; values are clamped to [0, T]
//   max_offset  the largest offset expected (1 for sigmoid offsets, 1 / (1 - p) after dropout): sizes the
//             halo kept in shared memory. Larger offsets are still handled exactly (a slower path).
// Fused: each block prefix-sums its time tile plus halo in shared memory; no prefix tensor is written,
// and the error does not grow with T. Needs no workspace. Asynchronous on `stream`: no allocation, no
// synchronization. Throws talkconv::error on invalid input before launching anything; an empty problem
// (T == 0 or B == 0) launches nothing.
template <class T>
void window_forward(const seq_shape& shape, const window_params& w, const T* x, const acc_t<T>* offsets, T* y,
                    const index_t* lengths, cudaStream_t stream, float max_offset = 1.0f) {
  if (detail::validate_or_empty(shape, w)) return;
  talkconv::detail::validate_bytes(shape, w, sizeof(T), sizeof(acc_t<T>));
  detail::check_window_grids<T>(shape, w);
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(offsets, "offsets");
  talkconv::detail::require_pointer(y, "y");
  detail::window_args<T> a = detail::make_window_args<T>(shape, w, lengths);
  a.x = x;
  a.offsets = offsets;
  a.y = y;
  detail::launch_window_forward(a, shape, w, max_offset, stream);
}

// Backward of the window aggregation on the device, the CUDA twin of cpu::window_backward:
//   dx        the window's gradient to x (overwritten, layout of x)
//   d_offsets dL/d(offset) per head (overwritten, layout of offsets, acc_t<T>); null to skip
// Two-phase workspace (CUB): with workspace == nullptr only sets workspace_bytes; a smaller workspace
// fails with status::workspace_too_small. Deterministic: no floating-point atomics; per-head channel
// sums in a fixed order, across blocks combined in a fixed order. Asynchronous on `stream`.
template <class T>
void window_backward(void* workspace, std::size_t& workspace_bytes, const seq_shape& shape, const window_params& w,
                     const T* x, const acc_t<T>* offsets, const T* dy, T* dx, acc_t<T>* d_offsets,
                     const index_t* lengths, cudaStream_t stream, float max_offset = 1.0f) {
  using A = acc_t<T>;
  const bool empty = detail::validate_or_empty(shape, w);
  talkconv::detail::validate_bytes(shape, w, sizeof(T), sizeof(A));
  if (!empty) detail::check_window_grids<T>(shape, w);
  const detail::window_geom wg = detail::window_geom::make(w, shape.C);
  const index_t NP = shape.T * shape.B * w.num_offsets();
  detail::workspace_plan plan;
  const std::size_t at_reach = plan.add(2 * sizeof(unsigned long long));
  const std::size_t at_partial = plan.add(
      d_offsets && wg.subs > 1
          ? detail::checked_bytes(talkconv::detail::checked_mul(NP, wg.subs, "T*B*P*splits"), sizeof(A), "T*B*P*splits")
          : 0);
  // dx by sorted events where the banded kernels do not take the problem (kernel_window_input_grad.cuh).
  const detail::sorted_dx_workspace sorted =
      empty ? detail::sorted_dx_workspace{} : detail::plan_sorted_dx_workspace<T>(shape, w);
  const std::size_t at_sort = plan.add(sorted.bytes);
  if (detail::workspace_query(workspace, workspace_bytes, empty ? 0 : plan.bytes) || empty) return;
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(offsets, "offsets");
  talkconv::detail::require_pointer(dy, "dy");
  talkconv::detail::require_pointer(dx, "dx");
  char* ws = static_cast<char*>(workspace);
  detail::window_args<T> a = detail::make_window_args<T>(shape, w, lengths);
  a.x = x;
  a.offsets = offsets;
  a.dy = dy;
  a.dx = dx;
  if (d_offsets) a.partial = wg.subs > 1 ? reinterpret_cast<A*>(ws + at_partial) : d_offsets;
  if (sorted.on) a.sort_ws = reinterpret_cast<unsigned char*>(ws + at_sort);
  a.finish.on = true;  // dL/do = head sum * L or M in the offset-gradient kernel where it can (o_pre null)
  detail::launch_window_backward(a, shape, w, max_offset, reinterpret_cast<unsigned long long*>(ws + at_reach), stream,
                                 [&](bool finished) {
                                   if (!d_offsets || finished) return;
                                   detail::offsets_args<T> c;
                                   c.g = a.g;
                                   c.partial = a.partial;
                                   c.subs = wg.subs;
                                   c.L = w.max_left;
                                   c.M = w.max_right;
                                   c.H = w.heads;
                                   detail::launch_combine_offsets_grad(c, d_offsets, stream);
                                 });
}

}  // namespace cuda
}  // namespace talkconv
