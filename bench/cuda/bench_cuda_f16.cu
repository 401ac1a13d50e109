// talkconv_cuda_bench's f16 benchmarks: registry::add<f16> and every kernel it instantiates, in a
// translation unit of their own (bench_cuda.cuh).
#include "bench_cuda.cuh"

namespace talkconv_bench {
template void registry::add<f16>(unsigned, const problem&);
}  // namespace talkconv_bench
