// 16-byte copies from global to shared memory that do not wait: cp.async on sm_80 and later (the load's
// latency hides behind whatever the block does before cp_async_wait_all), a plain load and store before.
#pragma once

#include "talkconv/cuda/policy.cuh"

#include <cstdint>

// L2 cache hints (createpolicy, .L2::cache_hint): PTX ISA 7.4 (CUDA 11.4) on sm_80 and later; plain accesses otherwise
// (TALKCONV_CUDA_L2_HINTS: policy.cuh).
#if TALKCONV_CUDA_L2_HINTS && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && \
    (__CUDACC_VER_MAJOR__ > 11 || (__CUDACC_VER_MAJOR__ == 11 && __CUDACC_VER_MINOR__ >= 4))
#define TALKCONV_CUDA_L2_HINTS_ON 1
#else
#define TALKCONV_CUDA_L2_HINTS_ON 0
#endif

namespace talkconv {
namespace cuda {
namespace detail {

// 16 bytes from src (global, 16-byte aligned) to dst (shared, 16-byte aligned). Visible to this thread after
// cp_async_wait_all(), to the block after that and a barrier.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
#else
  *reinterpret_cast<uint4*>(dst) = __ldg(reinterpret_cast<const uint4*>(src));
#endif
}

// 16 bytes from src to dst, or 16 zero bytes when !valid (src is not read then).
__device__ __forceinline__ void cp_async_16_or_zero(void* dst, const void* src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(bytes) : "memory");
#else
  *reinterpret_cast<uint4*>(dst) = valid ? __ldg(reinterpret_cast<const uint4*>(src)) : make_uint4(0u, 0u, 0u, 0u);
#endif
}

// An L2 eviction policy for hinted copies: evict-first (sm_80 and later; 0 and unused before). A line read under it
// is among the first L2 replaces, a hint only (the data read is the same): for a last read of data whose earlier read
// left it in L2, so that the lines still to be re-read stay.
__device__ __forceinline__ unsigned long long l2_evict_first_policy() {
  unsigned long long p = 0;
#if TALKCONV_CUDA_L2_HINTS_ON
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(p));
#endif
  return p;
}

// cp_async_16_or_zero with an L2 policy (l2_evict_first_policy).
__device__ __forceinline__ void cp_async_16_or_zero_hint(void* dst, const void* src, bool valid,
                                                         unsigned long long policy) {
#if TALKCONV_CUDA_L2_HINTS_ON
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(d), "l"(src), "r"(bytes),
               "l"(policy)
               : "memory");
#else
  (void)policy;
  cp_async_16_or_zero(dst, src, valid);
#endif
}

// The copies issued since the last commit form one group (cp.async.commit_group); the groups complete in
// order. cp_async_wait_group<N>() waits until at most N of this thread's groups are pending: a pipeline
// that keeps one step in flight commits every step (an empty group included) and waits with N = 1.
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// Waits for this thread's cp_async_16 copies.
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
