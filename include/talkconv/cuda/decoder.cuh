// cuda::decoder<T>: incremental decoding on the device, the CUDA twin of cpu::decoder (cpu/decoder.hpp).
#pragma once

#include "talkconv/cuda/error.hpp"
#include "talkconv/cuda/kernel_decoder.cuh"
#include "talkconv/cuda/workspace.cuh"
#include "talkconv/error.hpp"
#include "talkconv/params.hpp"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>

namespace talkconv {
namespace cuda {

// step(x_t) gives row t of the causal forward (inference, no dropout) for B sequences that advance together.
//
// State (state_bytes(), in caller memory or owned: see the allocating constructor): the last L + 2 prefix
// sums per channel, re-based every L + 2 steps so error and memory stay window-sized, and the position t,
// which lives in DEVICE memory: step() is one kernel launch whose arguments never change from one token to
// the next, so a step captured in a CUDA graph (cudaStreamBeginCapture ... cudaGraphInstantiate) and
// replayed N times with cudaGraphLaunch decodes N tokens, as N step() calls would. Every call is
// stream-ordered: no allocation (except the documented convenience forms), no synchronization, no host
// read-back.
//
// position() is a host mirror: the number of step() calls since construction or reset(). A graph replay
// does not update it (a step() issued while capturing counts once); device_position() points at the
// exact value in device memory (copy it yourself, ordered after the steps, if you need it then).
template <class T>
class decoder {
 public:
  using acc_type = acc_t<T>;

  static std::size_t state_bytes(const window_params& w, index_t channels, index_t batch) {
    validate(w, channels, batch);
    detail::workspace_plan p;
    p.add(ring_bytes(w, channels, batch));
    p.add(detail::checked_bytes(batch * w.heads, sizeof(index_t), "B*H"));
    return p.bytes;
  }

  // Over caller memory (device, state_bytes() bytes). The ring needs no initialization (rows are written
  // before they are read); the position is zeroed on the stream of the first step() or reorder(), ahead of
  // it. Before capturing the first step in a graph, call reset(stream) (capturing with the position still
  // to be zeroed fails: the zeroing would be replayed with every step).
  decoder(const window_params& w, index_t channels, index_t batch, void* state, std::size_t bytes)
      : w_(w), C_(channels), B_(batch) {
    const std::size_t need = state_bytes(w, channels, batch);
    talkconv::detail::require_pointer(state, "state");
    if (bytes < need)
      talkconv::detail::fail(status::workspace_too_small, "state_bytes", "state_bytes = ", bytes,
                             " is smaller than the ", need, " bytes the decoder needs");
    bind(state);
    pending_reset_ = true;
  }
  // Over caller memory, the position zeroed now on `stream` (stream-ordered).
  decoder(const window_params& w, index_t channels, index_t batch, void* state, std::size_t bytes,
          cudaStream_t stream)
      : decoder(w, channels, batch, state, bytes) {
    reset(stream);
  }

  // Convenience: allocates its state with cudaMallocAsync on `stream` (and zeroes the position there). When
  // destroyed it frees the state with cudaFreeAsync on the stream of its last step(), reorder() or
  // reset(stream) (the creating stream if none): a caller that moves the decoder between streams already
  // orders those uses, so the free comes after all.
  decoder(const window_params& w, index_t channels, index_t batch, cudaStream_t stream)
      : w_(w), C_(channels), B_(batch), stream_(stream) {
    void* p = nullptr;
    detail::check(cudaMallocAsync(&p, state_bytes(w, channels, batch), stream), "cudaMallocAsync(decoder state)");
    owned_ = p;
    bind(p);
    reset(stream);
  }
  decoder(decoder&& o) noexcept { *this = std::move(o); }
  decoder& operator=(decoder&& o) noexcept {
    if (this != &o) {
      release();
      w_ = o.w_;
      C_ = o.C_;
      B_ = o.B_;
      t_ = o.t_;
      ring_ = o.ring_;
      pos_ = o.pos_;
      pending_reset_ = o.pending_reset_;
      owned_ = std::exchange(o.owned_, nullptr);
      stream_ = o.stream_;
    }
    return *this;
  }
  decoder(const decoder&) = delete;
  decoder& operator=(const decoder&) = delete;
  ~decoder() { release(); }

  // Host mirror of the position (see the class comment): step() calls since construction or reset().
  index_t position() const { return t_; }
  // The position in device memory (one int64, exact also under graph replays). Reading it is the caller's
  // copy (cudaMemcpyAsync + a synchronization of their choosing).
  const index_t* device_position() const { return pos_; }

  // Start over. reset(stream): the position is zeroed now on `stream` (cudaMemsetAsync: stream-ordered,
  // capturable). reset(): on the stream of the next step() or reorder(), ahead of it; a graph replay is no
  // such call, so a decoder whose steps are replayed from a graph is reset with reset(stream).
  void reset(cudaStream_t stream) {
    detail::check(cudaMemsetAsync(pos_, 0, slots_bytes(), stream), "cudaMemsetAsync(decoder position)");
    pending_reset_ = false;
    stream_ = stream;
    t_ = 0;
  }
  void reset() {
    pending_reset_ = true;
    t_ = 0;
  }

  index_t state_bytes_per_sequence() const { return (w_.max_left + 2) * C_ * index_t(sizeof(acc_type)); }

  // Workspace of reorder(): room for a copy of the ring, (L + 2) * B * C accumulators (whatever the position).
  std::size_t reorder_workspace_bytes() const { return ring_bytes(w_, C_, B_); }

  // Beam search, the CUDA twin of cpu::decoder::reorder (fairseq's reorder_incremental_state): sequence b
  // continues from the state sequence new_order[b] had; repeats allowed. new_order: B int64 values in
  // DEVICE memory (the order a beam search computes on the GPU). The host cannot read them without a
  // synchronization, so they are checked in the kernel: an entry outside [0, B) sets sequence b's state
  // to NaN (its outputs are NaN until reset()); no memory outside the state is addressed.
  // Two-phase workspace (CUB): workspace == nullptr only sets workspace_bytes (reorder_workspace_bytes());
  // a smaller one fails with status::workspace_too_small. Stream-ordered on `stream`: a copy of the ring's
  // live rows (min(t, L + 2), t read on the device) into the workspace, then one gather kernel; no
  // allocation, no synchronization, capturable. The position is kept.
  void reorder(void* workspace, std::size_t& workspace_bytes, const index_t* new_order, cudaStream_t stream) {
    if (detail::workspace_query(workspace, workspace_bytes, reorder_workspace_bytes())) return;
    talkconv::detail::require_pointer(new_order, "new_order");
    flush_reset(stream);
    detail::decoder_reorder_args<acc_type> a;
    a.ring = ring_;
    a.old = static_cast<acc_type*>(workspace);
    a.order = new_order;
    a.position = pos_;
    a.B = B_;
    a.C = C_;
    a.rows = w_.max_left + 2;
    a.poison = std::numeric_limits<acc_type>::quiet_NaN();
    const dim3 grid(static_cast<unsigned>((C_ + threads - 1) / threads), static_cast<unsigned>(B_));
    detail::decoder_copy_kernel<acc_type><<<grid, threads, 0, stream>>>(a);
    detail::check_launch("decoder_copy_kernel");
    detail::decoder_reorder_kernel<acc_type><<<grid, threads, 0, stream>>>(a);
    detail::check_launch("decoder_reorder_kernel");
    stream_ = stream;
  }
  // Convenience: the workspace comes from cudaMallocAsync on `stream` and goes back with cudaFreeAsync
  // on it (stream-ordered, no synchronization), as talk_conv's convenience forms.
  void reorder(const index_t* new_order, cudaStream_t stream) {
    talkconv::detail::require_pointer(new_order, "new_order");
    void* ws = nullptr;
    std::size_t bytes = reorder_workspace_bytes();
    detail::check(cudaMallocAsync(&ws, bytes, stream), "cudaMallocAsync(reorder workspace)");
    try {
      reorder(ws, bytes, new_order, stream);
    } catch (...) {
      (void)cudaFreeAsync(ws, stream);
      throw;
    }
    detail::check(cudaFreeAsync(ws, stream), "cudaFreeAsync(reorder workspace)");
  }

  // x_t, y_t: device [B, C] row-major (token t of every sequence); weight [P = H, C], bias [H] or null.
  // One kernel launch, grid (H, B) (see decoder_step_kernel); the position advances on the device.
  void step(const T* x_t, const T* weight, const T* bias, T* y_t, cudaStream_t stream) {
    talkconv::detail::require_pointer(x_t, "x_t");
    talkconv::detail::require_pointer(weight, "weight");
    talkconv::detail::require_pointer(y_t, "y_t");
    flush_reset(stream);
    detail::decoder_args<T> a;
    a.x = x_t;
    a.weight = weight;
    a.bias = bias;
    a.y = y_t;
    a.ring = ring_;
    a.position = pos_;
    a.B = B_;
    a.C = C_;
    a.H = w_.heads;
    a.L = w_.max_left;
    const index_t R = C_ / w_.heads;
    a.R = R;
    a.inv_k = acc_type(1) / acc_type(w_.window_len());  // as cpu::decoder
    bool vec_dot = false, vec_row = false;
    if constexpr (can_vec_dot) vec_dot = C_ % index_t(16 / sizeof(T)) == 0 && aligned(x_t, 16) && aligned(weight, 16);
    if constexpr (can_vec_row) {
      constexpr std::size_t V = 16 / sizeof(acc_type);
      vec_row = R % index_t(V) == 0 && aligned(ring_, 16) && aligned(x_t, V * sizeof(T)) && aligned(y_t, V * sizeof(T));
    }
    if (vec_dot)
      launch_step<can_vec_dot>(a, vec_row, stream);
    else
      launch_step<false>(a, vec_row, stream);
    stream_ = stream;
    ++t_;
  }

 private:
  static constexpr int threads = detail::decoder_traits::threads;
  // 16-byte vectors exist for the storage type (x, W, y) and for the accumulator (the ring).
  static constexpr bool can_vec_dot = sizeof(T) <= 16 && 16 % sizeof(T) == 0;
  static constexpr std::size_t row_pack_bytes = sizeof(T) * (sizeof(acc_type) <= 16 ? 16 / sizeof(acc_type) : 1);
  static constexpr bool can_vec_row = sizeof(acc_type) <= 16 && 16 % sizeof(acc_type) == 0 &&
                                      (row_pack_bytes & (row_pack_bytes - 1)) == 0;  // x, y packs: a power of 2

  static void validate(const window_params& w, index_t channels, index_t batch) {
    if (!w.causal) talkconv::detail::fail(status::invalid_window, "causal", "incremental decoding needs causal mode");
    const seq_shape s{1, batch, channels, layout::tbc};
    talkconv::detail::validate_shape(s);
    talkconv::detail::validate_window(w);
    talkconv::detail::validate_heads(s, w);
    talkconv::detail::validate_bytes(s, w, sizeof(T), sizeof(acc_type));
    talkconv::detail::validate_weight(w, channels, sizeof(T), sizeof(acc_type));
    if (batch > 65535) talkconv::detail::fail(status::size_overflow, "B", "B = ", batch, " exceeds the CUDA grid");
    if (w.heads > std::numeric_limits<std::int32_t>::max())
      talkconv::detail::fail(status::size_overflow, "H", "H = ", w.heads, " exceeds the CUDA grid");
    if ((channels + threads - 1) / threads > std::numeric_limits<std::int32_t>::max())
      talkconv::detail::fail(status::size_overflow, "C", "C = ", channels, " exceeds the CUDA grid");
  }
  static std::size_t ring_bytes(const window_params& w, index_t channels, index_t batch) {
    return detail::checked_bytes(
        talkconv::detail::checked_mul(talkconv::detail::checked_mul(w.max_left + 2, batch, "(L+2)*B"), channels,
                                      "(L+2)*B*C"),
        sizeof(acc_type), "(L+2)*B*C");
  }
  static bool aligned(const void* p, std::size_t n) { return reinterpret_cast<std::uintptr_t>(p) % n == 0; }

  // One position slot per block of the step kernel: B * H.
  std::size_t slots_bytes() const { return sizeof(index_t) * std::size_t(B_ * w_.heads); }
  void bind(void* state) {
    char* p = static_cast<char*>(state);
    detail::workspace_plan plan;
    ring_ = reinterpret_cast<acc_type*>(p + plan.add(sizeof(acc_type) * std::size_t((w_.max_left + 2) * B_ * C_)));
    pos_ = reinterpret_cast<index_t*>(p + plan.add(slots_bytes()));
  }
  // The zeroing that construction over caller memory or reset() left to the next call, on its stream.
  void flush_reset(cudaStream_t stream) {
    if (!pending_reset_) return;
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    detail::check(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
    if (capture != cudaStreamCaptureStatusNone)
      talkconv::detail::fail(status::cuda_error, "decoder",
                             "the decoder's position is still to be zeroed (construction over caller memory or "
                             "reset()): call reset(stream) before capturing its steps in a graph");
    reset(stream);  // t_ is 0 already: only reset() and construction leave a zeroing pending
  }
  template <bool VecDot>
  static void launch_step(const detail::decoder_args<T>& a, bool vec_row, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>(a.H), static_cast<unsigned>(a.B));
    bool launched = false;
    if constexpr (can_vec_row) {
      if (vec_row) {
        detail::decoder_step_kernel<T, VecDot, true><<<grid, threads, 0, stream>>>(a);
        launched = true;
      }
    }
    if (!launched) detail::decoder_step_kernel<T, VecDot, false><<<grid, threads, 0, stream>>>(a);
    detail::check_launch("decoder_step_kernel");
  }
  void release() noexcept {
    if (owned_) (void)cudaFreeAsync(owned_, stream_);
    owned_ = nullptr;
  }

  window_params w_;
  index_t C_ = 0, B_ = 0, t_ = 0;
  acc_type* ring_ = nullptr;
  index_t* pos_ = nullptr;  // [B * H] position slots (all equal), device
  bool pending_reset_ = false;
  void* owned_ = nullptr;
  cudaStream_t stream_ = nullptr;  // the owned state is freed on it: the creating stream, then the last used
};

}  // namespace cuda
}  // namespace talkconv
