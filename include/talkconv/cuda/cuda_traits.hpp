// scalar_traits for CUDA's 16-bit types (__half, __nv_bfloat16): stored 16-bit, accumulated in float.
#pragma once

#include "talkconv/traits.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace talkconv {

// Round-to-nearest-even both ways, on the host and the device, so the CPU path run on these types
// (it only needs scalar_traits) gives the same bits as Eigen::half / Eigen::bfloat16.
template <>
struct scalar_traits<__half> {
  using acc_type = float;
  TALKCONV_HOST_DEVICE static float to_acc(__half v) { return __half2float(v); }
  TALKCONV_HOST_DEVICE static __half from_acc(float v) { return __float2half_rn(v); }
};

template <>
struct scalar_traits<__nv_bfloat16> {
  using acc_type = float;
  TALKCONV_HOST_DEVICE static float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
  TALKCONV_HOST_DEVICE static __nv_bfloat16 from_acc(float v) { return __float2bfloat16_rn(v); }
};

}  // namespace talkconv
