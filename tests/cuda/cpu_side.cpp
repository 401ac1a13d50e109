// The CPU path for the CUDA tests (see cpu_side.hpp), compiled by the host compiler.
#include "cpu_side.hpp"

#include <talkconv/talkconv.hpp>

namespace cpu_side {

template <class T>
void window_forward(const talkconv::seq_shape& s, const talkconv::window_params& w, const T* x, const acc_t<T>* o, T* y,
                    const index_t* lengths) {
  talkconv::cpu::window_forward<T>(s, w, x, o, y, lengths);
}
template <class T>
void window_backward(const talkconv::seq_shape& s, const talkconv::window_params& w, const T* x, const acc_t<T>* o,
                     const T* dy, T* dx, acc_t<T>* d_o, const index_t* lengths) {
  talkconv::cpu::window_backward<T>(s, w, x, o, dy, dx, d_o, lengths);
}
template <class T>
void offsets_forward(const talkconv::seq_shape& s, const talkconv::window_params& w, const T* x, const T* W,
                     const T* bias, const talkconv::dropout_params& d, acc_t<T>* o, acc_t<T>* o_pre,
                     const index_t* lengths) {
  talkconv::cpu::offsets_forward<T>(s, w, x, W, bias, d, o, o_pre, lengths);
}
template <class T>
void offsets_backward(const talkconv::seq_shape& s, const talkconv::window_params& w, const T* x, const T* W,
                      const acc_t<T>* o_pre, const acc_t<T>* d_o, const talkconv::dropout_params& d, T* dx, T* dW,
                      T* dbias, const index_t* lengths) {
  talkconv::cpu::offsets_backward<T>(s, w, x, W, o_pre, d_o, d, dx, dW, dbias, lengths);
}
template <class T>
void layer_forward(const talkconv::talk_config& cfg, const talkconv::forward_args<T>& a) {
  talkconv::talk_conv<T>(cfg).forward(a);
}
template <class T>
void layer_backward(const talkconv::talk_config& cfg, const talkconv::backward_args<T>& a) {
  talkconv::talk_conv<T>(cfg).backward(a);
}
template <class T>
void decode(const talkconv::talk_config& cfg, index_t B, index_t steps, const T* x, const T* W, const T* bias, T* y) {
  auto dec = talkconv::talk_conv<T>(cfg).make_decoder(B);
  for (index_t t = 0; t < steps; ++t) dec.step(x + t * B * cfg.channels, W, bias, y + t * B * cfg.channels);
}
template <class T>
void decode_reorder(const talkconv::talk_config& cfg, index_t B, index_t steps1, index_t steps2,
                    const index_t* new_order, const T* x, const T* W, const T* bias, T* y) {
  auto dec = talkconv::talk_conv<T>(cfg).make_decoder(B);
  for (index_t t = 0; t < steps1 + steps2; ++t) {
    if (t == steps1) dec.reorder(new_order);
    dec.step(x + t * B * cfg.channels, W, bias, y + t * B * cfg.channels);
  }
}
template <class T>
void prefix_sum(const talkconv::seq_shape& s, const T* x, acc_t<T>* S, acc_t<T> scale, index_t segment) {
  talkconv::cpu::prefix_sum<T>(s, x, S, scale, segment);
}
template <class A>
void head_sum(const talkconv::seq_shape& s, const talkconv::window_params& w, const A* in, A* out) {
  talkconv::cpu::head_sum<A>(s, w, in, out);
}

#define TALKCONV_CPU_SIDE(T)                                                                                         \
  template void window_forward<T>(const talkconv::seq_shape&, const talkconv::window_params&, const T*,              \
                                  const acc_t<T>*, T*, const index_t*);                                              \
  template void window_backward<T>(const talkconv::seq_shape&, const talkconv::window_params&, const T*,             \
                                   const acc_t<T>*, const T*, T*, acc_t<T>*, const index_t*);                        \
  template void offsets_forward<T>(const talkconv::seq_shape&, const talkconv::window_params&, const T*, const T*,   \
                                   const T*, const talkconv::dropout_params&, acc_t<T>*, acc_t<T>*, const index_t*); \
  template void offsets_backward<T>(const talkconv::seq_shape&, const talkconv::window_params&, const T*, const T*,  \
                                    const acc_t<T>*, const acc_t<T>*, const talkconv::dropout_params&, T*, T*, T*,   \
                                    const index_t*);                                                                 \
  template void layer_forward<T>(const talkconv::talk_config&, const talkconv::forward_args<T>&);                    \
  template void layer_backward<T>(const talkconv::talk_config&, const talkconv::backward_args<T>&);                  \
  template void decode<T>(const talkconv::talk_config&, index_t, index_t, const T*, const T*, const T*, T*);         \
  template void decode_reorder<T>(const talkconv::talk_config&, index_t, index_t, index_t, const index_t*, const T*, \
                                  const T*, const T*, T*);                                                           \
  template void prefix_sum<T>(const talkconv::seq_shape&, const T*, acc_t<T>*, acc_t<T>, index_t);

TALKCONV_CPU_SIDE(float)
TALKCONV_CPU_SIDE(double)
TALKCONV_CPU_SIDE(__half)
TALKCONV_CPU_SIDE(__nv_bfloat16)
template void head_sum<float>(const talkconv::seq_shape&, const talkconv::window_params&, const float*, float*);
template void head_sum<double>(const talkconv::seq_shape&, const talkconv::window_params&, const double*, double*);

}  // namespace cpu_side
