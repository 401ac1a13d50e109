// What the GPU benchmark programs share: a checked CUDA call that exits, and deterministic random inputs
// (a splitmix hash of the index, never all zeros) filled on the device.
#pragma once

#include <talkconv/traits.hpp>

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>

#define BENCH_CUDA(expr)                                                                          \
  do {                                                                                            \
    const cudaError_t e_ = (expr);                                                                \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

namespace talkconv_bench {

__host__ __device__ inline float hash_unit(unsigned long long i, unsigned long long seed) {
  unsigned long long z = i + 0x9E3779B97F4A7C15ULL * (seed + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

// p[i] = lo + (hi - lo) * hash_unit(i, seed), for i < n (grid-stride).
template <class X>
__global__ void fill_kernel(X* p, std::size_t n, unsigned long long seed, float lo, float hi) {
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    p[i] = talkconv::from_acc<X>(static_cast<talkconv::acc_t<X>>(lo + (hi - lo) * hash_unit(i, seed)));
}

}  // namespace talkconv_bench
