// talk_conv<T, Heads>: the TaLK convolution layer (offsets + head tying + window aggregation).
#pragma once

#include "talkconv/cpu/decoder.hpp"
#include "talkconv/cpu/layer.hpp"
#include "talkconv/layer_args.hpp"

namespace talkconv {

// The layer for storage type T (float, double, Eigen::half, Eigen::bfloat16, or a type with a
// scalar_traits specialization) and a head count fixed at compile time (Heads > 0) or at run time
// (Heads = dynamic_heads; on the CPU a compile-time count is checked against the configuration and
// otherwise costs nothing, the CUDA path specializes its kernels on it). The object holds only the configuration: parameters, activations and
// gradients stay in the caller's memory, and calls are const and thread-compatible.
template <class T, int Heads = dynamic_heads>
class talk_conv {
  static_assert(Heads == dynamic_heads || Heads > 0, "Heads must be positive or talkconv::dynamic_heads");

 public:
  using value_type = T;
  using acc_type = acc_t<T>;
  static constexpr int static_heads = Heads;

  // Validates the configuration; throws talkconv::error naming the bad field.
  explicit talk_conv(const talk_config& cfg) : cfg_(cfg) {
    if constexpr (Heads != dynamic_heads) {
      if (cfg_.heads == 0) cfg_.heads = Heads;
      if (cfg_.heads != Heads)
        detail::fail(status::invalid_shape, "H", "H = ", cfg_.heads, " differs from the compile-time Heads = ", Heads);
    }
    detail::validate_window(window());
    detail::validate_shape(seq_shape{1, 1, cfg_.channels, layout::tbc});
    detail::validate_heads(seq_shape{1, 1, cfg_.channels, layout::tbc}, window());
  }

  const talk_config& config() const { return cfg_; }
  index_t heads() const {
    if constexpr (Heads != dynamic_heads) return Heads;
    return cfg_.heads;
  }
  window_params window() const { return window_params{heads(), cfg_.max_left, cfg_.max_right, cfg_.causal}; }
  index_t num_offsets() const { return window().num_offsets(); }                  // P
  index_t weight_size() const { return num_offsets() * cfg_.channels; }            // elements of weight
  index_t saved_size(index_t tokens, index_t batch) const { return tokens * batch * num_offsets(); }  // of saved_offsets

  // y = TaLK(x) on the CPU (OpenMP threads of the calling process). Throws talkconv::error on bad
  // input before touching memory. Deterministic: the same bits for any thread count.
  void forward(const forward_args<T>& a) const {
    check(a.shape, a.lengths, a.dropout);
    detail::require_pointer(a.x, "x");
    detail::require_pointer(a.weight, "weight");
    detail::require_pointer(a.y, "y");
    cpu::detail::layer_forward<T>(window(), a);
  }

  // dx, dweight, dbias from dy on the CPU; see backward_args. Same guarantees as forward.
  void backward(const backward_args<T>& a) const {
    check(a.shape, a.lengths, a.dropout);
    detail::require_pointer(a.x, "x");
    detail::require_pointer(a.weight, "weight");
    detail::require_pointer(a.dy, "dy");
    detail::require_pointer(a.dx, "dx");
    detail::require_pointer(a.dweight, "dweight");
    cpu::detail::layer_backward<T>(window(), a);
  }

  // State for incremental decoding of `batch` sequences (causal layers only).
  cpu::decoder<T> make_decoder(index_t batch) const { return cpu::decoder<T>(window(), cfg_.channels, batch); }

 private:
  void check(const seq_shape& s, const index_t* lengths, const dropout_params& d) const {
    detail::validate_problem(s, window(), lengths);
    if (s.C != cfg_.channels)
      detail::fail(status::invalid_shape, "C", "C = ", s.C, " differs from the layer's channels = ", cfg_.channels);
    detail::validate_dropout(d);
  }

  talk_config cfg_;
};

}  // namespace talkconv
