// 16-byte copies from global to shared memory that do not wait: cp.async on sm_80 and later (the load's
// latency hides behind whatever the block does before cp_async_wait_all), a plain load and store before.
#pragma once

#include <cstdint>

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

// Waits for this thread's cp_async_16 copies.
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
