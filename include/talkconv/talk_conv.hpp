// talk_conv<T, Heads>: the TaLK convolution layer (offsets + head tying + window aggregation).
#pragma once

#include "talkconv/cpu/decoder.hpp"
#include "talkconv/cpu/layer.hpp"
#include "talkconv/layer_args.hpp"
#include "talkconv/shard.hpp"

#include <functional>

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

  // The layer on a time shard s (talkconv/shard.hpp; s from make_shard): the rows of the whole-sequence
  // call for tokens [s.t_begin, s.t_end), lengths, clamps at the true sequence ends, causal mode and
  // dropout mask (drawn at the global position) included.
  //   a.shape    own tokens: a.shape.T = s.own()
  //   a.x        s.rows() rows in a.shape.lay: s.halo.left rows before the own ones, s.halo.right after
  //   a.y, a.saved_offsets   own tokens only
  //   a.lengths  global lengths (<= s.T)
  // between, if set, is called once on the calling thread after the tiles that read no halo row and
  // before the others: x's halo rows may arrive until it returns (the MPI layer receives them there).
  void forward(const forward_args<T>& a, const shard_params& s, const std::function<void()>& between = {}) const {
    check_shard(a.shape, s, a.lengths, a.dropout);
    detail::require_pointer(a.x, "x");
    detail::require_pointer(a.weight, "weight");
    detail::require_pointer(a.y, "y");
    cpu::detail::row_span span = cpu::detail::row_span::of(s);
    span.between = between;
    cpu::detail::layer_forward<T>(window(), a, &span);
  }

  // Backward on a time shard: a.x and a.dx have s.rows() rows; a.dy and a.saved_offsets own tokens only.
  // dx is overwritten on every row: own rows get the own tokens' window share plus W^T dz; halo rows the
  // own tokens' share of those rows only. The caller adds the halo rows to the owners' dx rows (the
  // owner's own tokens' share is already there): the sum is the whole call's dx up to rounding (each
  // addition rounds in T). dweight and dbias are this shard's partial sums (its own valid tokens): sum
  // them over the shards. between, if set, is called once after the tiles that write dx's halo rows
  // (those rows are final then) and before the others.
  void backward(const backward_args<T>& a, const shard_params& s, const std::function<void()>& between = {}) const {
    check_shard(a.shape, s, a.lengths, a.dropout);
    detail::require_pointer(a.x, "x");
    detail::require_pointer(a.weight, "weight");
    detail::require_pointer(a.dy, "dy");
    detail::require_pointer(a.dx, "dx");
    detail::require_pointer(a.dweight, "dweight");
    cpu::detail::row_span span = cpu::detail::row_span::of(s);
    span.between = between;
    cpu::detail::layer_backward<T>(window(), a, &span);
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
  void check_shard(const seq_shape& s, const shard_params& sh, const index_t* lengths, const dropout_params& d) const {
    detail::validate_dropout(d);
    detail::validate_shard(sh, s, window(), d, lengths);
    this->check_channels(s);
    const seq_shape xs{sh.rows(), s.B, s.C, s.lay};
    detail::validate_bytes(xs, window(), sizeof(T), sizeof(acc_type));
    detail::validate_weight(window(), s.C, sizeof(T), sizeof(acc_type));
  }
};

}  // namespace talkconv
