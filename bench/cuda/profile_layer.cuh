// The body of talkconv_cuda_profile (profile_layer.cu): one layer forward + backward of one dtype through the
// public CUDA API, each kernel once inside a cudaProfilerStart/Stop region. run<T> is compiled once per dtype, in
// the benchmarks' translation unit of that dtype (bench_cuda_<dtype>.cu, beside registry::add<T>): the kernels both
// programs instantiate compile once, and the three dtypes in parallel.
#pragma once

#include <talkconv/cuda/talkconv.cuh>

#include "bench_inputs.cuh"

#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <cstdio>

namespace talkconv_profile {

namespace tcu = talkconv::cuda;
using talkconv::acc_t;
using talkconv::index_t;

using talkconv_bench::fill_kernel;

template <class X>
X* alloc(std::size_t n, unsigned long long seed = 0, float lo = 0.0f, float hi = 0.0f) {
  X* p = nullptr;
  BENCH_CUDA(cudaMalloc(&p, (n ? n : 1) * sizeof(X)));
  if (hi > lo) {
    fill_kernel<X><<<1024, 256>>>(p, n, seed, lo, hi);
    BENCH_CUDA(cudaGetLastError());
  }
  return p;
}

struct shape_args {
  index_t T = 4096, B = 16, C = 1024, H = 16, L = 16, M = 16;
  bool causal = false;
};

// Defined here, not inline: the extern template declarations below keep profile_layer.cu from compiling it.
template <class T>
int run(const shape_args& s) {
  const talkconv::talk_config cfg{s.C, s.H, s.L, s.causal ? 0 : s.M, s.causal};
  const tcu::talk_conv<T> layer(cfg);
  const talkconv::seq_shape shape{s.T, s.B, s.C, talkconv::layout::tbc};
  const std::size_t n = std::size_t(s.T * s.B * s.C), P = std::size_t(layer.num_offsets());
  T* x = alloc<T>(n, 1, -1.0f, 1.0f);
  T* y = alloc<T>(n);
  T* dy = alloc<T>(n, 2, -1.0f, 1.0f);
  T* dx = alloc<T>(n);
  T* w = alloc<T>(P * std::size_t(s.C), 3, -0.03f, 0.03f);
  T* b = alloc<T>(P, 4, -0.5f, 0.5f);
  T* dw = alloc<T>(P * std::size_t(s.C));
  T* db = alloc<T>(P);
  acc_t<T>* saved = alloc<acc_t<T>>(std::size_t(s.T * s.B) * P);
  cudaStream_t stream;
  BENCH_CUDA(cudaStreamCreate(&stream));

  talkconv::forward_args<T> fwd;
  fwd.shape = shape;
  fwd.x = x;
  fwd.weight = w;
  fwd.bias = b;
  fwd.y = y;
  fwd.saved_offsets = saved;
  talkconv::backward_args<T> bwd;
  bwd.shape = shape;
  bwd.x = x;
  bwd.weight = w;
  bwd.bias = b;
  bwd.dy = dy;
  bwd.dx = dx;
  bwd.dweight = dw;
  bwd.dbias = db;
  bwd.saved_offsets = saved;
  std::size_t fb = 0, bb = 0;
  layer.forward(nullptr, fb, fwd, stream);
  layer.backward(nullptr, bb, bwd, stream);
  void* ws = nullptr;
  BENCH_CUDA(cudaMalloc(&ws, fb > bb ? fb : bb));

  // Warm-up outside the profiled region (shared-memory attributes, module loading).
  layer.forward(ws, fb, fwd, stream);
  layer.backward(ws, bb, bwd, stream);
  BENCH_CUDA(cudaStreamSynchronize(stream));

  BENCH_CUDA(cudaProfilerStart());
  layer.forward(ws, fb, fwd, stream);
  layer.backward(ws, bb, bwd, stream);
  BENCH_CUDA(cudaStreamSynchronize(stream));
  BENCH_CUDA(cudaProfilerStop());

  std::printf("talkconv profile: dtype %s T %lld B %lld C %lld H %lld L %lld M %lld causal %d elements %zu\n",
              sizeof(T) == 4 ? "f32" : "16-bit", static_cast<long long>(s.T), static_cast<long long>(s.B),
              static_cast<long long>(s.C), static_cast<long long>(s.H), static_cast<long long>(s.L),
              static_cast<long long>(s.causal ? 0 : s.M), s.causal ? 1 : 0, n);
  for (void* p : {static_cast<void*>(x), static_cast<void*>(y), static_cast<void*>(dy), static_cast<void*>(dx),
                  static_cast<void*>(w), static_cast<void*>(b), static_cast<void*>(dw), static_cast<void*>(db),
                  static_cast<void*>(saved), ws})
    BENCH_CUDA(cudaFree(p));
  BENCH_CUDA(cudaStreamDestroy(stream));
  return 0;
}

extern template int run<__nv_bfloat16>(const shape_args&);
extern template int run<__half>(const shape_args&);
extern template int run<float>(const shape_args&);

}  // namespace talkconv_profile
