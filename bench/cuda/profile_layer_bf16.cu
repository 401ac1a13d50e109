// talkconv_cuda_profile's bf16 layer: run<__nv_bfloat16> and every kernel it instantiates (profile_layer.cuh).
#include "profile_layer.cuh"

namespace talkconv_profile {
template int run<__nv_bfloat16>(const shape_args&);
}  // namespace talkconv_profile
