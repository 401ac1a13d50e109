// One layer forward + backward (and a few decoder steps) through the public CUDA API, each kernel
// launched once inside a cudaProfilerStart/Stop region: the program Nsight Compute profiles
// (scripts/gpu-ncu.sh) to count each kernel's instructions per element for bench/cuda/BUDGET.md.
//
//   talkconv_cuda_profile [dtype=bf16|f16|f32] [T=4096] [B=16] [C=1024] [H=16] [L=16] [M=16] [causal=0]
//
// Prints the shape and the element count T*B*C (the denominator of "instructions per element").
// Without a GPU it says so and exits 0.
#include <talkconv/cuda/talkconv.cuh>

#include "bench_inputs.cuh"

#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

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

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("talkconv_cuda_profile: no CUDA device; nothing to profile\n");
    return 0;
  }
  const std::string dtype = argc > 1 ? argv[1] : "bf16";
  shape_args s;
  index_t* fields[] = {&s.T, &s.B, &s.C, &s.H, &s.L, &s.M};
  for (int i = 0; i < 6 && i + 2 < argc; ++i) *fields[i] = std::atoll(argv[i + 2]);
  if (argc > 8) s.causal = std::atoi(argv[8]) != 0;
  try {
    if (dtype == "bf16") return run<__nv_bfloat16>(s);
    if (dtype == "f16") return run<__half>(s);
    if (dtype == "f32") return run<float>(s);
  } catch (const talkconv::error& e) {
    std::fprintf(stderr, "talkconv_cuda_profile: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "talkconv_cuda_profile: unknown dtype %s (bf16, f16, f32)\n", dtype.c_str());
  return 2;
}
