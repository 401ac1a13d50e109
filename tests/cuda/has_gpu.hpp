// Whether a CUDA device can run kernels: GPU cases are decorated with doctest::skip(!has_gpu()), and the
// doctest main (main.cpp) exits 77 (ctest: skipped) when there is none. Host code only: the main compiles
// with the host compiler, without talkconv's kernels.
#pragma once

#include <cuda_runtime.h>

inline bool has_gpu() {
  static const bool yes = [] {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  }();
  return yes;
}
