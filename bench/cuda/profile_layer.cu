// One layer forward + backward (and a few decoder steps) through the public CUDA API, each kernel
// launched once inside a cudaProfilerStart/Stop region: the program Nsight Compute profiles
// (scripts/gpu-ncu.sh) to count each kernel's instructions per element for bench/cuda/BUDGET.md.
//
//   talkconv_cuda_profile [dtype=bf16|f16|f32] [T=4096] [B=16] [C=1024] [H=16] [L=16] [M=16] [causal=0]
//
// Prints the shape and the element count T*B*C (the denominator of "instructions per element").
// Without a GPU it says so and exits 0.
#include "profile_layer.cuh"

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("talkconv_cuda_profile: no CUDA device; nothing to profile\n");
    return 0;
  }
  const std::string dtype = argc > 1 ? argv[1] : "bf16";
  talkconv_profile::shape_args s;
  talkconv::index_t* fields[] = {&s.T, &s.B, &s.C, &s.H, &s.L, &s.M};
  for (int i = 0; i < 6 && i + 2 < argc; ++i) *fields[i] = std::atoll(argv[i + 2]);
  if (argc > 8) s.causal = std::atoi(argv[8]) != 0;
  try {
    if (dtype == "bf16") return talkconv_profile::run<__nv_bfloat16>(s);
    if (dtype == "f16") return talkconv_profile::run<__half>(s);
    if (dtype == "f32") return talkconv_profile::run<float>(s);
  } catch (const talkconv::error& e) {
    std::fprintf(stderr, "talkconv_cuda_profile: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "talkconv_cuda_profile: unknown dtype %s (bf16, f16, f32)\n", dtype.c_str());
  return 2;
}
