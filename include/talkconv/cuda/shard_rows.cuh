// Time shards on CUDA: a shard's global lengths shifted to its rows, and its own rows copied between a
// tensor of the shard's extended rows and one of its own rows (cuda::talk_conv's shard calls).
#pragma once

#include "talkconv/cuda/error.hpp"
#include "talkconv/params.hpp"
#include "talkconv/shard.hpp"
#include "talkconv/traits.hpp"

#include <cuda_runtime.h>

namespace talkconv {
namespace cuda {
namespace detail {

// out[b] = the length of sequence b on the shard's rows [0, rows), global row first + 0: lengths[b]
// clamped to [0, T] (as every kernel clamps device lengths), shifted by `first`, clamped to [0, rows].
static __global__ void shard_lengths_kernel(const index_t* lengths, index_t* out, index_t B, index_t T, index_t first,
                                            index_t rows) {
  const index_t b = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  index_t n = lengths[b];
  n = n < 0 ? 0 : (n > T ? T : n);
  n -= first;
  out[b] = n < 0 ? 0 : (n > rows ? rows : n);
}

// Copies the own rows of a [xs.T = s.rows(), B, width] tensor (rows of row_bytes bytes, layout xs.lay) to
// a [s.own(), B, width] one (to_own), or back (!to_own). tbc: one contiguous block; btc: B blocks.
template <class X>
void copy_shard_rows(X* dst, const X* src, const shard_params& s, const seq_shape& xs, index_t row_bytes, bool to_own,
                     cudaStream_t stream) {
  const char* from = reinterpret_cast<const char*>(src);
  char* to = reinterpret_cast<char*>(dst);
  if (xs.lay == layout::tbc) {
    const std::size_t skip = std::size_t(s.halo.left * xs.B * row_bytes);
    check(cudaMemcpyAsync(to + (to_own ? 0 : skip), from + (to_own ? skip : 0), std::size_t(s.own() * xs.B * row_bytes),
                          cudaMemcpyDeviceToDevice, stream),
          "cudaMemcpyAsync(shard rows)");
    return;
  }
  const std::size_t skip = std::size_t(s.halo.left * row_bytes);
  const std::size_t ext_pitch = std::size_t(xs.T * row_bytes), own_pitch = std::size_t(s.own() * row_bytes);
  check(
      cudaMemcpy2DAsync(to + (to_own ? 0 : skip), to_own ? own_pitch : ext_pitch, from + (to_own ? skip : 0),
                        to_own ? ext_pitch : own_pitch, own_pitch, std::size_t(xs.B), cudaMemcpyDeviceToDevice, stream),
      "cudaMemcpy2DAsync(shard rows)");
}

// dx rows [row0, row0 + rows) of a shard's [xs.T, B, C] buffer += `in`, the same rows packed (tbc:
// [rows][B][C], btc: [B][rows][C]), each sum rounded once to T: a peer's share of those rows.
template <class T>
static __global__ void add_shard_rows_kernel(T* dx, const T* in, index_t row0, index_t rows, index_t B, index_t C,
                                             index_t xt, index_t xb, int lay) {
  const index_t n = rows * B * C;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const index_t c = i % C, r = i / C;
    const index_t t = lay == 0 ? r / B : r % rows, b = lay == 0 ? r % B : r / rows;
    T& d = dx[(row0 + t) * xt + b * xb + c];
    d = from_acc<T>(to_acc<T>(d) + to_acc<T>(in[i]));
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
