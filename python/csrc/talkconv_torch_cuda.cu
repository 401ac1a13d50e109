// The CUDA half of the binding: talkconv::cuda over the plain descriptors of bridge.hpp. No torch
// header here; the workspace comes from the binding's allocator (PyTorch's caching allocator).
#include "bridge.hpp"

#include <talkconv/cuda/talkconv.cuh>

#include <cuda_runtime_api.h>

namespace talkconv_torch {
namespace cuda {
namespace {

template <dtype D>
struct storage;
template <>
struct storage<dtype::f32> {
  using type = float;
};
template <>
struct storage<dtype::f64> {
  using type = double;
};
template <>
struct storage<dtype::f16> {
  using type = __half;
};
template <>
struct storage<dtype::bf16> {
  using type = __nv_bfloat16;
};

template <class Fn>
void dispatch(dtype t, Fn&& fn) {
  switch (t) {
    case dtype::f32:
      return fn(storage<dtype::f32>{});
    case dtype::f64:
      return fn(storage<dtype::f64>{});
    case dtype::f16:
      return fn(storage<dtype::f16>{});
    case dtype::bf16:
      return fn(storage<dtype::bf16>{});
  }
}

// Size query, then the call with a workspace of that size (a dummy byte when none is needed).
template <class Run>
void with_workspace(const alloc_fn& alloc, Run&& run) {
  std::size_t bytes = 0;
  run(nullptr, bytes);
  static char dummy;
  void* ws = bytes ? alloc(bytes) : &dummy;
  run(ws, bytes);
}

template <class T>
talkconv::forward_args<T> forward_args_of(const call& c) {
  talkconv::forward_args<T> a;
  a.shape = c.shape;
  a.x = static_cast<const T*>(c.x);
  a.weight = static_cast<const T*>(c.weight);
  a.bias = static_cast<const T*>(c.bias);
  a.lengths = c.lengths;
  a.dropout = c.dropout;
  return a;
}

template <class T>
class typed_decoder final : public decoder {
 public:
  typed_decoder(const talkconv::talk_config& cfg, index_t batch, void* state, std::size_t bytes)
      : d_(talkconv::basic_talk_conv<talkconv::dynamic_heads>(cfg).window(), cfg.channels, batch, state, bytes) {}
  void step(const void* x_t, const void* weight, const void* bias, void* y_t, void* stream) override {
    d_.step(static_cast<const T*>(x_t), static_cast<const T*>(weight), static_cast<const T*>(bias),
            static_cast<T*>(y_t), static_cast<cudaStream_t>(stream));
  }
  void reorder(const index_t* new_order, const alloc_fn& alloc, void* stream) override {
    with_workspace(alloc,
                   [&](void* ws, std::size_t& n) { d_.reorder(ws, n, new_order, static_cast<cudaStream_t>(stream)); });
  }
  void reset() override { d_.reset(); }
  index_t position() const override { return d_.position(); }

 private:
  talkconv::cuda::decoder<T> d_;
};

}  // namespace

void forward(dtype t, const call& c, void* y, void* saved, const alloc_fn& alloc) {
  dispatch(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const talkconv::cuda::talk_conv<T> layer(c.cfg);
    talkconv::forward_args<T> a = forward_args_of<T>(c);
    a.y = static_cast<T*>(y);
    a.saved_offsets = static_cast<talkconv::acc_t<T>*>(saved);
    with_workspace(alloc,
                   [&](void* ws, std::size_t& n) { layer.forward(ws, n, a, static_cast<cudaStream_t>(c.stream)); });
  });
}

void backward(dtype t, const call& c, const void* dy, const void* saved, void* dx, void* dweight, void* dbias,
              const alloc_fn& alloc) {
  dispatch(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const talkconv::cuda::talk_conv<T> layer(c.cfg);
    const talkconv::forward_args<T> f = forward_args_of<T>(c);
    talkconv::backward_args<T> a;
    a.shape = f.shape;
    a.x = f.x;
    a.weight = f.weight;
    a.bias = f.bias;
    a.lengths = f.lengths;
    a.dropout = f.dropout;
    a.dy = static_cast<const T*>(dy);
    a.saved_offsets = static_cast<const talkconv::acc_t<T>*>(saved);
    a.dx = static_cast<T*>(dx);
    a.dweight = static_cast<T*>(dweight);
    a.dbias = static_cast<T*>(dbias);
    with_workspace(alloc,
                   [&](void* ws, std::size_t& n) { layer.backward(ws, n, a, static_cast<cudaStream_t>(c.stream)); });
  });
}

std::size_t decoder_state_bytes(dtype t, const talkconv::talk_config& cfg, index_t batch) {
  std::size_t bytes = 0;
  dispatch(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    bytes = talkconv::cuda::decoder<T>::state_bytes(talkconv::basic_talk_conv<talkconv::dynamic_heads>(cfg).window(),
                                                    cfg.channels, batch);
  });
  return bytes;
}

std::unique_ptr<decoder> make_decoder(dtype t, const talkconv::talk_config& cfg, index_t batch, void* state,
                                      std::size_t bytes) {
  std::unique_ptr<decoder> d;
  dispatch(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    d = std::make_unique<typed_decoder<T>>(cfg, batch, state, bytes);
  });
  return d;
}

}  // namespace cuda
}  // namespace talkconv_torch
