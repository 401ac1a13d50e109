// Runtime-to-compile-time switches (index type x causal x offsets per projection pass) and launch helpers.
#pragma once

#include "talkconv/cuda/error.hpp"
#include "talkconv/cuda/smem_layout.cuh"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace talkconv {
namespace cuda {
namespace detail {

template <class I>
struct index_tag {
  using type = I;
};

// f(index_tag<int32 or int64>{}, std::bool_constant<causal>{}): the window kernels' instantiations.
template <class F>
void dispatch_window(bool use32, bool causal, F&& f) {
  if (use32) {
    if (causal)
      f(index_tag<std::int32_t>{}, std::true_type{});
    else
      f(index_tag<std::int32_t>{}, std::false_type{});
  } else {
    if (causal)
      f(index_tag<std::int64_t>{}, std::true_type{});
    else
      f(index_tag<std::int64_t>{}, std::false_type{});
  }
}

template <class F>
void dispatch_index(bool use32, F&& f) {
  if (use32)
    f(index_tag<std::int32_t>{});
  else
    f(index_tag<std::int64_t>{});
}

// The offset tile of the projection / dW / offset-path GEMMs from P = H or 2H: 8, 16 or proj_chunk (32;
// wider P takes several tiles, or the offset path's wide form). Each is one set of instantiations.
template <class F>
void dispatch_heads(index_t P, F&& f) {
  if (P <= 8)
    f(std::integral_constant<int, 8>{});
  else if (P <= 16)
    f(std::integral_constant<int, 16>{});
  else
    f(std::integral_constant<int, proj_chunk>{});
}

inline int current_device() {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  return dev;
}

// Dynamic shared memory a block may opt into on the current device.
inline std::size_t smem_optin() {
  int v = 0;
  check(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, current_device()),
        "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
  return static_cast<std::size_t>(v);
}

// Lets `kernel` launch with `bytes` of dynamic shared memory. The limit set is always the device's whole
// opt-in less the kernel's static shared memory, never this call's own need: the attribute belongs to
// the kernel (shared by every layer and host thread), and a smaller value set by one thread between
// another's attribute call and its launch would make that launch fail.
template <class Kernel>
void allow_smem(Kernel* kernel, std::size_t bytes, const char* name) {
  if (bytes <= 48 * 1024) return;
  cudaFuncAttributes attr{};
  check(cudaFuncGetAttributes(&attr, kernel), name);
  const std::size_t most = smem_optin() - attr.sharedSizeBytes;
  if (bytes > most)
    talkconv::detail::fail(status::cuda_error, "shared memory", "a block needs ", bytes,
                           " bytes of shared memory, the device allows ", most);
  if (static_cast<std::size_t>(attr.maxDynamicSharedSizeBytes) < most)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(most)), name);
}

// Whether `kernel`'s code on the current device was compiled for sm_80 or later: its SASS's architecture,
// or, when the driver JIT-compiled it from PTX, that PTX's (the code's __CUDA_ARCH__). Kernels without a
// path below sm_80 (the banded window) are launched only then.
template <class Kernel>
bool built_for_sm80(Kernel* kernel) {
  cudaFuncAttributes attr{};
  check(cudaFuncGetAttributes(&attr, kernel), "cudaFuncGetAttributes");
  const int arch = attr.ptxVersion > 0 && attr.ptxVersion < attr.binaryVersion ? attr.ptxVersion : attr.binaryVersion;
  return arch >= 80;
}

// Blocks for a grid-stride kernel over n items.
inline unsigned grid_for(index_t n, int threads) {
  const index_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65536 ? 65536 : blocks));
}

// Tiling of a window kernel launch: tile, shared rows and dynamic smem bytes.
struct window_launch {
  int tile = 0;
  int cap_rows = 0;
  index_t tiles = 0;
  std::size_t smem = 0;
};

// Forward / offset gradients: the tile keeps tile + halo rows of prefix sums, the halo sized for
// offsets up to max_offset (1 for sigmoid offsets, 1 / (1 - p) with dropout); capped by what a block
// can hold (tokens beyond take the direct path, so the cap only costs speed, never correctness).
// A pure function of the shape, the window and the device's opt-in shared memory (host-testable).
template <class A>
window_launch plan_window(const seq_shape& s, const window_params& w, double max_offset, bool offsets_grad,
                          std::size_t optin) {
  if (!(max_offset >= 0.0) || !std::isfinite(max_offset)) max_offset = 1.0;
  window_launch p;
  p.tile = window_traits::fwd_tile;
  const double hl = std::ceil(double(w.max_left) * max_offset) + 1.0;
  const double hr = w.causal ? 0.0 : std::ceil(double(w.max_right) * max_offset) + 1.0;
  const std::size_t fixed = offsets_grad ? window_smem<A>::offsets_grad(0) : window_smem<A>::forward(0);
  const std::size_t row_bytes = sizeof(A) * window_traits::lanes;
  const std::size_t reserve = 2048;  // static shared memory of the block reductions
  const double max_rows = optin > fixed + reserve ? double((optin - fixed - reserve) / row_bytes) : 0.0;
  const double need = double(p.tile) + hl + hr + 2.0;
  const double cap = need < max_rows ? need : max_rows;
  if (cap < 2.0) talkconv::detail::fail(status::cuda_error, "shared memory", "the device's shared memory is too small");
  p.cap_rows = static_cast<int>(cap);
  p.tiles = (s.T + p.tile - 1) / p.tile;
  p.smem = offsets_grad ? window_smem<A>::offsets_grad(p.cap_rows) : window_smem<A>::forward(p.cap_rows);
  return p;
}
template <class A>
window_launch plan_window(const seq_shape& s, const window_params& w, double max_offset, bool offsets_grad) {
  return plan_window<A>(s, w, max_offset, offsets_grad, smem_optin());
}

// Shared memory of one SM on the current device (what the policy's resident blocks divide).
inline std::size_t smem_per_sm() {
  int v = 0;
  check(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerMultiprocessor, current_device()),
        "cudaDeviceGetAttribute(MaxSharedMemoryPerMultiprocessor)");
  return static_cast<std::size_t>(v);
}

// Streaming multiprocessors of the current device.
inline int sm_count() {
  int v = 0;
  check(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, current_device()),
        "cudaDeviceGetAttribute(MultiProcessorCount)");
  return v;
}

// Static shared memory the vector tiles keep besides the plan's dynamic bytes (the warp scans' storage),
// and what the runtime reserves per block: an upper bound, so a plan never overshoots the opt-in.
constexpr std::size_t vtile_static_smem = 256;
constexpr std::size_t smem_reserved_per_block = 1024;

// Vector-tile plan (forward: grad = false; offset gradients: grad = true) for nh heads per block, from the
// SM's and the block's shared memory (host-testable: pass them). tile == 0 when nothing fits.
template <class T>
talkconv::detail::window_tile_plan plan_vtile(const window_params& w, double max_offset, bool grad, int nh,
                                              std::size_t per_sm, std::size_t optin) {
  using P = window_tile_policy<T>;
  talkconv::detail::window_tile_costs k;
  k.row_bytes = vtile_layout<T>::row_bytes();
  k.token_bytes = vtile_layout<T>::token_bytes(nh, grad);
  k.fixed_bytes = 0;
  const std::size_t share = per_sm / P::min_blocks;
  k.budget = share > smem_reserved_per_block + vtile_static_smem ? share - smem_reserved_per_block - vtile_static_smem : 0;
  k.limit = optin > vtile_static_smem ? optin - vtile_static_smem : 0;
  k.unit = P::unit;
  k.max_tile = P::max_tile;
  k.per_sm = per_sm;
  k.block_overhead = smem_reserved_per_block + vtile_static_smem;
  k.min_blocks = P::min_blocks;
  return talkconv::detail::plan_window_tile(w.max_left, w.causal ? 0 : w.max_right, w.causal, max_offset, k);
}

// Heads that meet one block's channels (the tap table's width).
inline int heads_per_block(const window_geom& wg) {
  return wg.subs > 1 ? 1 : static_cast<int>(wg.heads_per_block < wg.H ? wg.heads_per_block : wg.H);
}

// Grid of a window kernel: x = B * tiles (64-bit checked), y = channel blocks.
inline dim3 window_grid(const seq_shape& s, index_t tiles, const window_geom& wg) {
  const index_t x = s.B * tiles;
  if (x > std::numeric_limits<std::int32_t>::max() || wg.blocks > 65535)
    talkconv::detail::fail(status::size_overflow, "T*B", "B * tiles = ", x, " or channel blocks = ", wg.blocks,
                           " exceed the CUDA grid");
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>(wg.blocks));
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
