// First include of every talkconv header: language check, host/device markers, index type.
#pragma once

#if __cplusplus < 201703L && !defined(_MSVC_LANG)
#error "talkconv requires C++17"
#endif

#include <cstdint>

#define TALKCONV_VERSION_MAJOR 0
#define TALKCONV_VERSION_MINOR 1
#define TALKCONV_VERSION_PATCH 0

// Functions that carry SPEC math are compiled for both sides when nvcc sees them.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define TALKCONV_HOST_DEVICE __host__ __device__
#define TALKCONV_DEVICE __device__
#else
#define TALKCONV_HOST_DEVICE
#define TALKCONV_DEVICE
#endif

#define TALKCONV_FORCEINLINE inline

#if defined(_OPENMP)
#define TALKCONV_HAS_OPENMP 1
#else
#define TALKCONV_HAS_OPENMP 0
#endif

namespace talkconv {

// Every size and stride is 64-bit on the host; kernels narrow to 32-bit where the extent allows.
using index_t = std::int64_t;

}  // namespace talkconv
