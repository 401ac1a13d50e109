// talkconv_cuda_profile's f32 layer: run<float> and every kernel it instantiates (profile_layer.cuh).
#include "profile_layer.cuh"

namespace talkconv_profile {
template int run<float>(const shape_args&);
}  // namespace talkconv_profile
