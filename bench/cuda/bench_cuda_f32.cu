// talkconv_cuda_bench's f32 benchmarks: registry::add<float> and every kernel it instantiates, in a
// translation unit of their own (bench_cuda.cuh).
#include "bench_cuda.cuh"

namespace talkconv_bench {
template void registry::add<float>(unsigned, const problem&);
}  // namespace talkconv_bench
