// The layer's configuration and the flat argument structs of its forward and backward calls.
#pragma once

#include "talkconv/error.hpp"
#include "talkconv/params.hpp"
#include "talkconv/traits.hpp"

namespace talkconv {

// Head count chosen at run time: talk_conv<T, dynamic_heads> takes it from talk_config::heads.
inline constexpr int dynamic_heads = -1;

// The layer: C channels, H heads, window reach L left and M right (M = 0 when causal).
struct talk_config {
  index_t channels = 0;   // C
  index_t heads = 0;      // H (0 with a compile-time Heads: take Heads)
  index_t max_left = 0;   // L
  index_t max_right = 0;  // M
  bool causal = false;
};

// What the CPU and CUDA layers share: the validated configuration and the sizes it implies.
// Heads > 0 fixes the head count at compile time (talk_config::heads may then be 0, or must equal it).
template <int Heads>
class basic_talk_conv {
  static_assert(Heads == dynamic_heads || Heads > 0, "Heads must be positive or talkconv::dynamic_heads");

 public:
  static constexpr int static_heads = Heads;

  // Validates the configuration; throws talkconv::error naming the bad field.
  explicit basic_talk_conv(const talk_config& cfg) : cfg_(cfg) {
    if constexpr (Heads != dynamic_heads) {
      if (cfg_.heads == 0) cfg_.heads = Heads;
      if (cfg_.heads != Heads)
        detail::fail(status::invalid_shape, "H", "H = ", cfg_.heads, " differs from the compile-time Heads = ", Heads);
    }
    detail::validate_window(window());
    detail::validate_shape(seq_shape{1, 1, cfg_.channels, layout::tbc});
    detail::validate_heads(seq_shape{1, 1, cfg_.channels, layout::tbc}, window());
    detail::checked_mul(num_offsets(), cfg_.channels, "P*C");  // weight_size() must be an index
  }

  const talk_config& config() const { return cfg_; }
  index_t heads() const {
    if constexpr (Heads != dynamic_heads) return Heads;
    return cfg_.heads;
  }
  window_params window() const { return window_params{heads(), cfg_.max_left, cfg_.max_right, cfg_.causal}; }
  index_t num_offsets() const { return window().num_offsets(); }                                     // P
  index_t weight_size() const { return num_offsets() * cfg_.channels; }                               // of weight
  index_t saved_size(index_t tokens, index_t batch) const {  // of saved_offsets
    return detail::checked_mul(detail::checked_mul(tokens, batch, "T*B"), num_offsets(), "T*B*P");
  }

 protected:
  // A call's shape against the layer: C must be the layer's channels. The rest is validated by callers.
  void check_channels(const seq_shape& s) const {
    if (s.C != cfg_.channels)
      detail::fail(status::invalid_shape, "C", "C = ", s.C, " differs from the layer's channels = ", cfg_.channels);
  }

  talk_config cfg_;
};

// One forward call. Pointers are the caller's memory; nothing is copied whole.
//   x, y           [T, B, C] or [B, T, C] (shape.lay), storage type T
//   weight, bias   [P, C] row-major and [P] (bias may be null), P = 2H (bidirectional) or H (causal)
//   saved_offsets  optional output: sigmoid(W x + bias) before dropout, layout of x with width P,
//                  in acc_t<T> (what backward needs; pass it back to skip recomputing the projection)
//   lengths        optional, B valid lengths (index_t) in host memory (device memory for
//                  cuda::talk_conv); y rows t >= n_b are zero
//   dropout        offset dropout, applied only when dropout.training
template <class T>
struct forward_args {
  seq_shape shape;
  const T* x = nullptr;
  const T* weight = nullptr;
  const T* bias = nullptr;
  T* y = nullptr;
  acc_t<T>* saved_offsets = nullptr;
  const index_t* lengths = nullptr;
  dropout_params dropout;
};

// One backward call with the same shape, parameters, lengths and dropout (seed) as its forward.
//   dy             gradient of the loss with respect to y (layout of x)
//   saved_offsets  forward's saved_offsets, or null to recompute them from x, weight and bias
//   dx             output, overwritten (layout of x)
//   dweight, dbias outputs, overwritten ([P, C] and [P]; dbias may be null)
template <class T>
struct backward_args {
  seq_shape shape;
  const T* x = nullptr;
  const T* weight = nullptr;
  const T* bias = nullptr;
  const T* dy = nullptr;
  const acc_t<T>* saved_offsets = nullptr;
  T* dx = nullptr;
  T* dweight = nullptr;
  T* dbias = nullptr;
  const index_t* lengths = nullptr;
  dropout_params dropout;
};

}  // namespace talkconv
