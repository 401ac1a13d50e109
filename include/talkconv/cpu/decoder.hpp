// Incremental decoding on the CPU: one token at a time, equal to the causal forward, O((L + 2) C) state.
#pragma once

#include "talkconv/cpu/heads.hpp"
#include "talkconv/cpu/offsets.hpp"
#include "talkconv/cpu/window.hpp"

#include <algorithm>
#include <vector>

namespace talkconv {
namespace cpu {

// Decoding state for B sequences that advance together. step(x_t) gives row t of the causal forward
// (inference: no dropout) for every sequence. The state is a ring of the last L + 2 prefix sums per
// channel; every L + 2 steps they are re-based on the newest, so their size, and the error, stays
// window-sized however long the decode runs.
template <class T>
class decoder {
 public:
  using acc_type = acc_t<T>;

  decoder(const window_params& w, index_t channels, index_t batch) : w_(w), C_(channels), B_(batch) {
    if (!w.causal) talkconv::detail::fail(status::invalid_window, "causal", "incremental decoding needs causal mode");
    talkconv::detail::validate_shape(seq_shape{1, batch, channels, layout::tbc});
    talkconv::detail::validate_window(w);
    talkconv::detail::validate_heads(seq_shape{1, batch, channels, layout::tbc}, w);
    talkconv::detail::validate_bytes(seq_shape{1, batch, channels, layout::tbc}, w, sizeof(T), sizeof(acc_type));
    talkconv::detail::validate_weight(w, channels, sizeof(T), sizeof(acc_type));
    ring_rows_ = w.max_left + 2;
    const index_t ring_size = talkconv::detail::checked_mul(
        talkconv::detail::checked_mul(ring_rows_, batch, "(L+2)*B"), channels, "(L+2)*B*C");
    talkconv::detail::checked_bytes(ring_size, sizeof(acc_type), "(L+2)*B*C");
    ring_.assign(static_cast<size_t>(ring_size), acc_type(0));
    z_.resize(static_cast<size_t>(batch * w.num_offsets()));
    zero_.assign(static_cast<size_t>(channels), acc_type(0));
    base_.resize(static_cast<size_t>(channels));
  }

  // Tokens consumed so far (the index t of the next step).
  index_t position() const { return t_; }
  // Bytes of state per sequence: (L + 2) * C accumulators.
  index_t state_bytes_per_sequence() const { return ring_rows_ * C_ * index_t(sizeof(acc_type)); }
  void reset() {
    t_ = 0;
    std::fill(ring_.begin(), ring_.end(), acc_type(0));
  }

  // Beam search: sequence b continues from the state sequence new_order[b] had (B entries in
  // [0, B), host memory; repeats allowed), as fairseq's reorder_incremental_state.
  void reorder(const index_t* new_order) {
    talkconv::detail::require_pointer(new_order, "new_order");
    for (index_t b = 0; b < B_; ++b)
      if (new_order[b] < 0 || new_order[b] >= B_)
        talkconv::detail::fail(status::invalid_shape, talkconv::detail::concat("new_order[", b, "]"), "new_order[", b,
                               "] = ", new_order[b], " is outside [0, B = ", B_, ")");
    std::vector<acc_type> old(ring_);
    for (index_t r = 0; r < ring_rows_; ++r)
      for (index_t b = 0; b < B_; ++b)
        std::copy(old.begin() + (r * B_ + new_order[b]) * C_, old.begin() + (r * B_ + new_order[b] + 1) * C_,
                  ring_.begin() + (r * B_ + b) * C_);
  }

  // x_t, y_t: [B, C] row-major (token t of every sequence). weight [P, C], bias [P] or null.
  void step(const T* x_t, const T* weight, const T* bias, T* y_t) {
    using A = acc_type;
    talkconv::detail::require_pointer(x_t, "x_t");
    talkconv::detail::require_pointer(weight, "weight");
    talkconv::detail::require_pointer(y_t, "y_t");
    const index_t P = w_.num_offsets(), t = t_;
    const A inv_k = A(1) / A(w_.window_len());
    if (t >= ring_rows_ && t % ring_rows_ == 0) rebase(t - 1);
    if (B_ <= 16) {
      // A few sequences: one matrix-vector product each, on the calling thread (W stays in cache after the
      // first). Eigen's general product would pack W every step and, built with OpenMP, start a thread
      // team for a few microseconds of work: 69 us per step at B = 8 against 2.9 us at B = 1 (2 threads,
      // passive waiting), 24.5 us with this loop. Above 16 sequences the packed product wins (B = 64:
      // 280 us against 451 us for the loop, which reads W from L2 once per sequence).
      const auto X = detail::rows_as_acc<T>(x_t, C_, B_, C_, tmp_);
      // Four rows of W at a time (4 x 8 independent lanes), W read in its own type (bfloat16 widened in
      // registers): a widened copy of a 16-bit W cost more than the product (bfloat16, C = 1024, P = 32:
      // 13.7-15.5 us per step with the copy, 6.6-9.5 us without, on a loaded machine).
      for (index_t b = 0; b < B_; ++b) {
        const A* xb = X.data() + b * X.outerStride();
        A* z = z_.data() + b * P;
        index_t p = 0;
        for (; p + 4 <= P; p += 4) detail::lane_dot_rows<4, T, A>(weight + p * C_, C_, C_, xb, z + p);
        for (; p < P; ++p) detail::lane_dot_rows<1, T, A>(weight + p * C_, C_, C_, xb, z + p);
        if (bias)
          for (p = 0; p < P; ++p) z[p] += to_acc<T>(bias[p]);
      }
    } else {
      const detail::acc_params<T> prm(weight, bias, P, C_);
      detail::project_rows(x_t, C_, B_, C_, prm, P, z_.data(), P, tmp_);
    }
    const talkconv::detail::head_map hm{w_.heads, C_ / w_.heads};
    for (index_t b = 0; b < B_; ++b) {
      A* z = z_.data() + b * P;
      detail::activate_offsets(z, P, t, b, dropout_params{}, static_cast<A*>(nullptr), z);
      // S[t] = S[t - 1] + x_t / K: one pass, the forward's scan step.
      detail::scan_step(t > 0 ? static_cast<const A*>(row(t - 1, b)) : static_cast<const A*>(nullptr), x_t + b * C_, C_,
                        inv_k, row(t, b));
      for (index_t h = 0; h < w_.heads; ++h) {
        const auto k = detail::token_taps<A>(w_, t + 1, t, z, h);
        const A *s0 = row(k.i0, b), *s1 = row(k.i1, b), *s2 = row(k.i2, b), *s3 = row(k.i3, b);
        const index_t c0 = hm.first_channel(h);
        detail::store_acc(y_t + b * C_ + c0, hm.head_dim, [&](index_t j) {
          const index_t c = c0 + j;
          return talkconv::detail::window_value<A>(k, s0[c], s1[c], s2[c], s3[c]);
        });
      }
    }
    ++t_;
  }

 private:
  // Row of S[i] for sequence b; i = -1 is the zero row (only read while t <= L, before any re-base).
  acc_type* row(index_t i, index_t b) {
    if (i < 0) return zero_.data();
    return ring_.data() + ((i % ring_rows_) * B_ + b) * C_;
  }
  void rebase(index_t newest) {
    for (index_t b = 0; b < B_; ++b) {
      std::copy(row(newest, b), row(newest, b) + C_, base_.begin());
      for (index_t r = 0; r < ring_rows_; ++r) {
        acc_type* s = ring_.data() + (r * B_ + b) * C_;
        for (index_t c = 0; c < C_; ++c) s[c] -= base_[static_cast<size_t>(c)];
      }
    }
  }

  window_params w_;
  index_t C_, B_, ring_rows_ = 0, t_ = 0;
  std::vector<acc_type> ring_, z_, tmp_, zero_, base_;
};

}  // namespace cpu
}  // namespace talkconv
