// The CPU path, compiled by the host compiler (Eigen, OpenMP) in cpu_side.cpp, for the CUDA tests to
// compare with. Instantiated for float, double, __half and __nv_bfloat16 (scalar_traits from
// talkconv/cuda/cuda_traits.hpp: the CPU path runs on CUDA's 16-bit types directly).
#pragma once

#include "talkconv/cuda/cuda_traits.hpp"
#include "talkconv/layer_args.hpp"
#include "talkconv/params.hpp"

#include <vector>

namespace cpu_side {

using talkconv::acc_t;
using talkconv::index_t;

template <class T>
void window_forward(const talkconv::seq_shape& s, const talkconv::window_params& w, const T* x, const acc_t<T>* o, T* y,
                    const index_t* lengths);
template <class T>
void window_backward(const talkconv::seq_shape& s, const talkconv::window_params& w, const T* x, const acc_t<T>* o,
                     const T* dy, T* dx, acc_t<T>* d_o, const index_t* lengths);
template <class T>
void offsets_forward(const talkconv::seq_shape& s, const talkconv::window_params& w, const T* x, const T* W,
                     const T* bias, const talkconv::dropout_params& d, acc_t<T>* o, acc_t<T>* o_pre,
                     const index_t* lengths);
template <class T>
void offsets_backward(const talkconv::seq_shape& s, const talkconv::window_params& w, const T* x, const T* W,
                      const acc_t<T>* o_pre, const acc_t<T>* d_o, const talkconv::dropout_params& d, T* dx, T* dW,
                      T* dbias, const index_t* lengths);
template <class T>
void layer_forward(const talkconv::talk_config& cfg, const talkconv::forward_args<T>& a);
template <class T>
void layer_backward(const talkconv::talk_config& cfg, const talkconv::backward_args<T>& a);
// Decodes `steps` tokens: x, y are [steps][B][C].
template <class T>
void decode(const talkconv::talk_config& cfg, index_t B, index_t steps, const T* x, const T* W, const T* bias, T* y);
// Decodes steps1 tokens, then reorder(new_order) (host, B entries), then steps2 tokens: x, y are
// [steps1 + steps2][B][C].
template <class T>
void decode_reorder(const talkconv::talk_config& cfg, index_t B, index_t steps1, index_t steps2,
                    const index_t* new_order, const T* x, const T* W, const T* bias, T* y);
template <class T>
void prefix_sum(const talkconv::seq_shape& s, const T* x, acc_t<T>* S, acc_t<T> scale, index_t segment);
template <class A>
void head_sum(const talkconv::seq_shape& s, const talkconv::window_params& w, const A* in, A* out);

}  // namespace cpu_side
