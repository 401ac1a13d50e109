// Plain descriptors of a TaLK problem (shape, layout, window, dropout) and their validation.
#pragma once

#include "talkconv/config.hpp"
#include "talkconv/error.hpp"

#include <cmath>
#include <cstdint>
#include <limits>

namespace talkconv {

// Memory order of a [tokens, sequences, width] tensor. Channels (the last axis) are always contiguous.
//   tbc: time-major  [T, B, width], element (t, b, j) at (t * B + b) * width + j  (SPEC's reference layout)
//   btc: batch-major [B, T, width], element (t, b, j) at (b * T + t) * width + j
// x, y, dx, dy use width C; offsets and their gradients use the same layout with width P.
enum class layout : int { tbc = 0, btc = 1 };

// Element strides of the time and sequence axes (the channel stride is 1).
struct seq_strides {
  index_t t;
  index_t b;
};

TALKCONV_HOST_DEVICE inline seq_strides strides_of(layout lay, index_t T, index_t B, index_t width) {
  return lay == layout::tbc ? seq_strides{B * width, width} : seq_strides{width, T * width};
}

// The tensor x: T tokens, B sequences, C channels, in layout `lay`.
struct seq_shape {
  index_t T = 0;
  index_t B = 0;
  index_t C = 0;
  layout lay = layout::tbc;

  index_t rows() const { return T * B; }  // N = T * B: x seen as an [N, C] row-major matrix
  seq_strides strides(index_t width) const { return strides_of(lay, T, B, width); }
};

// The window: H heads (R = C / H channels share one window), reach L to the left and M to the right.
// Causal (decoder) mode requires M = 0 and has P = H offsets per token; bidirectional has P = 2H
// (rows 0..H-1 left, H..2H-1 right).
struct window_params {
  index_t heads = 1;
  index_t max_left = 0;
  index_t max_right = 0;
  bool causal = false;

  index_t num_offsets() const { return causal ? heads : 2 * heads; }    // P
  index_t window_len() const { return max_left + max_right + 1; }       // K
};

// Offset dropout (training only): o <- o * m / (1 - p), m ~ Bernoulli(1 - p), drawn by a counter-based
// generator keyed on (seed, t, b, offset index), so every path draws the same mask.
struct dropout_params {
  float p = 0.0f;
  std::uint64_t seed = 0;
  bool training = false;

  bool active() const { return training && p > 0.0f; }
};

namespace detail {

// a * b for non-negative a and b, or a size_overflow error naming `what`.
inline index_t checked_mul(index_t a, index_t b, const char* what) {
  if (a != 0 && b > std::numeric_limits<index_t>::max() / a)
    fail(status::size_overflow, what, what, " = ", a, " * ", b, " overflows a 64-bit index");
  return a * b;
}

inline void validate_shape(const seq_shape& s) {
  if (s.T <= 0) fail(status::invalid_shape, "T", "T = ", s.T, " must be positive");
  if (s.B <= 0) fail(status::invalid_shape, "B", "B = ", s.B, " must be positive");
  if (s.C <= 0) fail(status::invalid_shape, "C", "C = ", s.C, " must be positive");
  if (s.lay != layout::tbc && s.lay != layout::btc)
    fail(status::invalid_layout, "layout", "layout = ", static_cast<int>(s.lay), " is neither tbc nor btc");
  checked_mul(checked_mul(s.T, s.B, "T*B"), s.C, "T*B*C");
}

inline void validate_window(const window_params& w) {
  if (w.heads <= 0) fail(status::invalid_shape, "H", "H = ", w.heads, " must be positive");
  if (!w.causal && w.heads > std::numeric_limits<index_t>::max() / 2)
    fail(status::size_overflow, "H", "P = 2H = 2 * ", w.heads, " overflows a 64-bit index");
  if (w.max_left < 0) fail(status::invalid_window, "max_left", "max_left (L) = ", w.max_left, " is negative");
  if (w.max_right < 0)
    fail(status::invalid_window, "max_right", "max_right (M) = ", w.max_right, " is negative");
  if (w.causal && w.max_right != 0)
    fail(status::invalid_window, "max_right", "max_right (M) = ", w.max_right, " must be 0 in causal mode");
  if (w.max_left > std::numeric_limits<index_t>::max() / 4 - w.max_right)
    fail(status::size_overflow, "max_left", "L + M + 1 = ", w.max_left, " + ", w.max_right,
         " + 1 overflows a 64-bit index");
}

inline void validate_heads(const seq_shape& s, const window_params& w) {
  if (s.C % w.heads != 0)
    fail(status::invalid_shape, "C", "C = ", s.C, " is not divisible by H = ", w.heads);
  checked_mul(checked_mul(s.T, s.B, "T*B"), w.num_offsets(), "T*B*P");
}

inline void validate_dropout(const dropout_params& d) {
  // Written so that NaN fails too.
  if (!(d.p >= 0.0f && d.p < 1.0f)) fail(status::invalid_dropout, "dropout", "dropout p = ", d.p, " is outside [0, 1)");
}

// lengths (host memory, B entries) may be null: every sequence then has length T.
inline void validate_lengths(const index_t* lengths, const seq_shape& s) {
  if (lengths == nullptr) return;
  for (index_t b = 0; b < s.B; ++b)
    if (lengths[b] < 0 || lengths[b] > s.T)
      fail(status::invalid_length, concat("lengths[", b, "]"), "lengths[", b, "] = ", lengths[b],
           " is outside [0, T = ", s.T, "]");
}

// Everything a window call needs checked, in the order SPEC lists the errors.
inline void validate_problem(const seq_shape& s, const window_params& w, const index_t* lengths) {
  validate_shape(s);
  validate_window(w);
  validate_heads(s, w);
  validate_lengths(lengths, s);
}

// `count` elements of `elem_bytes` bytes each: their byte size must be an index too (pointer arithmetic
// and std::vector stop at PTRDIFF_MAX bytes), or a size_overflow error naming `what`.
inline void checked_bytes(index_t count, index_t elem_bytes, const char* what) {
  if (count > std::numeric_limits<index_t>::max() / elem_bytes)
    fail(status::size_overflow, what, what, " = ", count, " elements of ", elem_bytes,
         " bytes overflow a 64-bit byte count");
}

// Byte sizes of a problem that passed validate_problem, for storage of `elem_bytes` and accumulators of
// `acc_bytes` bytes: the x-sized tensors (T*B*C, stored or accumulated) and the offsets (T*B*P
// accumulators).
inline void validate_bytes(const seq_shape& s, const window_params& w, index_t elem_bytes, index_t acc_bytes) {
  checked_bytes(s.T * s.B * s.C, elem_bytes > acc_bytes ? elem_bytes : acc_bytes, "T*B*C");
  checked_bytes(s.T * s.B * w.num_offsets(), acc_bytes, "T*B*P");
}

// The projection weight [P, C] (stored, and widened to accumulators): its elements and bytes.
inline void validate_weight(const window_params& w, index_t C, index_t elem_bytes, index_t acc_bytes) {
  checked_bytes(checked_mul(w.num_offsets(), C, "P*C"), elem_bytes > acc_bytes ? elem_bytes : acc_bytes, "P*C");
}

}  // namespace detail
}  // namespace talkconv
