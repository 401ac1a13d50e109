// talkconv_cuda_profile's f16 layer: run<__half> and every kernel it instantiates (profile_layer.cuh).
#include "profile_layer.cuh"

namespace talkconv_profile {
template int run<__half>(const shape_args&);
}  // namespace talkconv_profile
