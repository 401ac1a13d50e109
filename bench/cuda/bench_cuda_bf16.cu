// The bf16 kernels of both GPU programs, compiled once: talkconv_cuda_bench's registry::add<bf16>
// (bench_cuda.cuh) and talkconv_cuda_profile's run<__nv_bfloat16> (profile_layer.cuh), in one translation unit of
// their own, so the layer's kernels they share go through cicc once (the CUDA front end's device code
// generation is ~2/3 of a dtype's compile time), and the three dtypes compile in parallel.
#include "bench_cuda.cuh"
#include "profile_layer.cuh"

namespace talkconv_bench {
template void registry::add<bf16>(unsigned, const problem&);
}  // namespace talkconv_bench

namespace talkconv_profile {
template int run<__nv_bfloat16>(const shape_args&);
}  // namespace talkconv_profile
