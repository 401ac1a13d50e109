// Checked CUDA runtime calls and launches: failures become talkconv::error(status::cuda_error, ...).
#pragma once

#include "talkconv/error.hpp"

#include <cuda_runtime_api.h>

namespace talkconv {
namespace cuda {
namespace detail {

// Throws status::cuda_error naming the call, with the runtime's name and description of the code.
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    talkconv::detail::fail(status::cuda_error, what, what, " failed: ", cudaGetErrorName(e), ": ",
                           cudaGetErrorString(e));
}

// After a <<<...>>> launch: reports a bad configuration or an earlier asynchronous fault. Never
// synchronizes, so a fault inside this kernel surfaces at the caller's next synchronizing call.
// cudaPeekAtLastError, not cudaGetLastError: a sticky error that belongs to the caller stays theirs to
// read (a failed launch of ours is not sticky, so peeking reports it the same way).
inline void check_launch(const char* kernel) { check(cudaPeekAtLastError(), kernel); }

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
