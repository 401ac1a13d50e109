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
class talk_conv : public basic_talk_conv<Heads> {
  using base = basic_talk_conv<Heads>;

 public:
  using value_type = T;
  using acc_type = acc_t<T>;
  using base::base;
  using base::window;

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
  cpu::decoder<T> make_decoder(index_t batch) const { return cpu::decoder<T>(window(), this->cfg_.channels, batch); }

 private:
  void check(const seq_shape& s, const index_t* lengths, const dropout_params& d) const {
    detail::validate_problem(s, window(), lengths);
    this->check_channels(s);
    detail::validate_bytes(s, window(), sizeof(T), sizeof(acc_type));
    detail::validate_weight(window(), s.C, sizeof(T), sizeof(acc_type));
    detail::validate_dropout(d);
  }
};

}  // namespace talkconv
