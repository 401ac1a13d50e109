// cuda::talk_conv<T, Heads>: the TaLK layer on the device (forward, backward, incremental decoding).
#pragma once

#include "talkconv/cuda/device_offsets.cuh"
#include "talkconv/cuda/device_window.cuh"
#include "talkconv/cuda/kernel_decoder.cuh"
#include "talkconv/layer_args.hpp"

#include <cstdint>
#include <limits>
#include <utility>

namespace talkconv {
namespace cuda {

// Incremental decoding on the device, the CUDA twin of cpu::decoder: step(x_t) gives row t of the
// causal forward (inference, no dropout) for B sequences. State: the last L + 2 prefix sums per
// channel (re-based every L + 2 steps, so error and memory stay window-sized) and the token's offsets,
// state_bytes() in caller memory (or owned: see the allocating constructor). The position lives on the
// host; step() launches two kernels on `stream` and never synchronizes.
template <class T>
class decoder {
 public:
  using acc_type = acc_t<T>;

  static std::size_t state_bytes(const window_params& w, index_t channels, index_t batch) {
    validate(w, channels, batch);
    detail::workspace_plan p;
    p.add(ring_bytes(w, channels, batch));
    p.add(detail::checked_bytes(batch * w.num_offsets(), sizeof(acc_type), "B*P"));
    return p.bytes;
  }

  // Over caller memory (device, state_bytes() bytes). Needs no initialization: rows are written
  // before they are read.
  decoder(const window_params& w, index_t channels, index_t batch, void* state, std::size_t bytes)
      : w_(w), C_(channels), B_(batch) {
    const std::size_t need = state_bytes(w, channels, batch);
    talkconv::detail::require_pointer(state, "state");
    if (bytes < need)
      talkconv::detail::fail(status::workspace_too_small, "state_bytes", "state_bytes = ", bytes,
                             " is smaller than the ", need, " bytes the decoder needs");
    bind(state);
  }

  // Convenience: allocates its state with cudaMallocAsync on `stream`. When destroyed it frees the state
  // with cudaFreeAsync on the stream of its last step() or reorder() (the creating stream if none): a
  // caller that moves the decoder between streams already orders those uses, so the free comes after all.
  decoder(const window_params& w, index_t channels, index_t batch, cudaStream_t stream)
      : w_(w), C_(channels), B_(batch), stream_(stream) {
    void* p = nullptr;
    detail::check(cudaMallocAsync(&p, state_bytes(w, channels, batch), stream), "cudaMallocAsync(decoder state)");
    owned_ = p;
    bind(p);
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
      z_ = o.z_;
      owned_ = std::exchange(o.owned_, nullptr);
      stream_ = o.stream_;
    }
    return *this;
  }
  decoder(const decoder&) = delete;
  decoder& operator=(const decoder&) = delete;
  ~decoder() { release(); }

  index_t position() const { return t_; }
  void reset() { t_ = 0; }
  index_t state_bytes_per_sequence() const { return (w_.max_left + 2) * C_ * index_t(sizeof(acc_type)); }

  // Workspace of reorder(): room for a copy of the ring, (L + 2) * B * C accumulators (whatever the position).
  std::size_t reorder_workspace_bytes() const { return ring_bytes(w_, C_, B_); }

  // Beam search, the CUDA twin of cpu::decoder::reorder (fairseq's reorder_incremental_state): sequence b
  // continues from the state sequence new_order[b] had; repeats allowed. new_order: B int64 values in
  // DEVICE memory (the order a beam search computes on the GPU). The host cannot read them without a
  // synchronization, so they are checked in the kernel: an entry outside [0, B) sets sequence b's state
  // to NaN (its outputs are NaN until reset()); no memory outside the state is addressed.
  // Two-phase workspace (CUB): workspace == nullptr only sets workspace_bytes (reorder_workspace_bytes());
  // a smaller one fails with status::workspace_too_small. Stream-ordered on `stream` (a copy of the ring
  // into the workspace, then one gather kernel); no allocation, no synchronization. The position is kept.
  void reorder(void* workspace, std::size_t& workspace_bytes, const index_t* new_order, cudaStream_t stream) {
    if (detail::workspace_query(workspace, workspace_bytes, reorder_workspace_bytes())) return;
    talkconv::detail::require_pointer(new_order, "new_order");
    const index_t ring_rows = w_.max_left + 2;
    const index_t live = t_ < ring_rows ? t_ : ring_rows;  // rows written so far: only those are copied
    if (live == 0) return;
    detail::decoder_reorder_args<acc_type> a;
    a.ring = ring_;
    a.old = static_cast<acc_type*>(workspace);
    a.order = new_order;
    a.B = B_;
    a.C = C_;
    a.rows = live;
    a.poison = std::numeric_limits<acc_type>::quiet_NaN();
    detail::check(cudaMemcpyAsync(workspace, ring_, sizeof(acc_type) * std::size_t(live * B_ * C_),
                                  cudaMemcpyDeviceToDevice, stream),
                  "cudaMemcpyAsync(decoder ring)");
    const dim3 grid(static_cast<unsigned>((C_ + detail::row_threads - 1) / detail::row_threads),
                    static_cast<unsigned>(B_));
    detail::decoder_reorder_kernel<acc_type><<<grid, detail::row_threads, 0, stream>>>(a);
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

  // x_t, y_t: device [B, C] row-major (token t of every sequence); weight [P, C], bias [P] or null.
  void step(const T* x_t, const T* weight, const T* bias, T* y_t, cudaStream_t stream) {
    talkconv::detail::require_pointer(x_t, "x_t");
    talkconv::detail::require_pointer(weight, "weight");
    talkconv::detail::require_pointer(y_t, "y_t");
    const seq_shape s{1, B_, C_, layout::tbc};
    detail::offsets_args<T> p = detail::make_offsets_args<T>(s, w_, nullptr, dropout_params{});
    p.x = x_t;
    p.weight = weight;
    p.bias = bias;
    p.o = z_;
    p.t_base = t_;
    detail::launch_project(p, s, stream);
    detail::decoder_args<T> a;
    a.x = x_t;
    a.y = y_t;
    a.ring = ring_;
    a.z = z_;
    a.B = B_;
    a.C = C_;
    a.H = w_.heads;
    a.L = w_.max_left;
    a.t = t_;
    const dim3 grid(static_cast<unsigned>((C_ + detail::row_threads - 1) / detail::row_threads),
                    static_cast<unsigned>(B_));
    detail::decoder_step_kernel<T><<<grid, detail::row_threads, 0, stream>>>(a);
    detail::check_launch("decoder_step_kernel");
    stream_ = stream;
    ++t_;
  }

 private:
  static void validate(const window_params& w, index_t channels, index_t batch) {
    if (!w.causal) talkconv::detail::fail(status::invalid_window, "causal", "incremental decoding needs causal mode");
    const seq_shape s{1, batch, channels, layout::tbc};
    talkconv::detail::validate_shape(s);
    talkconv::detail::validate_window(w);
    talkconv::detail::validate_heads(s, w);
    talkconv::detail::validate_bytes(s, w, sizeof(T), sizeof(acc_type));
    talkconv::detail::validate_weight(w, channels, sizeof(T), sizeof(acc_type));
    if (batch > 65535) talkconv::detail::fail(status::size_overflow, "B", "B = ", batch, " exceeds the CUDA grid");
    if ((channels + detail::row_threads - 1) / detail::row_threads > std::numeric_limits<std::int32_t>::max())
      talkconv::detail::fail(status::size_overflow, "C", "C = ", channels, " exceeds the CUDA grid");
  }
  static std::size_t ring_bytes(const window_params& w, index_t channels, index_t batch) {
    return detail::checked_bytes(
        talkconv::detail::checked_mul(talkconv::detail::checked_mul(w.max_left + 2, batch, "(L+2)*B"), channels,
                                      "(L+2)*B*C"),
        sizeof(acc_type), "(L+2)*B*C");
  }
  void bind(void* state) {
    char* p = static_cast<char*>(state);
    detail::workspace_plan plan;
    ring_ = reinterpret_cast<acc_type*>(p + plan.add(sizeof(acc_type) * std::size_t((w_.max_left + 2) * B_ * C_)));
    z_ = reinterpret_cast<acc_type*>(p + plan.add(sizeof(acc_type) * std::size_t(B_ * w_.num_offsets())));
  }
  void release() noexcept {
    if (owned_) (void)cudaFreeAsync(owned_, stream_);
    owned_ = nullptr;
  }

  window_params w_;
  index_t C_ = 0, B_ = 0, t_ = 0;
  acc_type* ring_ = nullptr;
  acc_type* z_ = nullptr;
  void* owned_ = nullptr;
  cudaStream_t stream_ = nullptr;  // the owned state is freed on it: the creating stream, then the last used
};

// The layer on the device for storage type T (float, double, __half, __nv_bfloat16, or a type with a
// TALKCONV_HOST_DEVICE scalar_traits specialization) and a head count fixed at compile time or at run
// time, the CUDA twin of talkconv::talk_conv. Same configuration, same argument structs, same named
// validation errors; but every pointer in forward_args / backward_args is DEVICE memory, lengths
// included (B int64 values, clamped to [0, T] in the kernels since the host cannot read them).
//
// Each call takes a stream and comes in two forms:
//   forward(workspace, workspace_bytes, args, stream)  two-phase (CUB): workspace == nullptr only sets
//       workspace_bytes; too small fails with status::workspace_too_small; no allocation, no sync.
//   forward(args, stream)  convenience: allocates the workspace with cudaMallocAsync on the stream and
//       frees it there (stream-ordered; still no synchronization).
// Results are bitwise reproducible run to run (no floating-point atomics anywhere).
template <class T, int Heads = dynamic_heads>
class talk_conv : public basic_talk_conv<Heads> {
  using base = basic_talk_conv<Heads>;

 public:
  using value_type = T;
  using acc_type = acc_t<T>;
  using base::base;
  using base::num_offsets;
  using base::window;

  // y = TaLK(x): the projection kernel (offsets after dropout into the workspace, o_pre into
  // saved_offsets when given), then the fused window kernel. Workspace: T * B * P accumulators.
  void forward(void* workspace, std::size_t& workspace_bytes, const forward_args<T>& a, cudaStream_t stream) const {
    const bool empty = check(a.shape, a.dropout);
    detail::workspace_plan plan;
    const std::size_t at_o =
        plan.add(detail::checked_bytes(a.shape.T * a.shape.B * num_offsets(), sizeof(acc_type), "T*B*P"));
    if (detail::workspace_query(workspace, workspace_bytes, empty ? 0 : plan.bytes) || empty) return;
    talkconv::detail::require_pointer(a.x, "x");
    talkconv::detail::require_pointer(a.weight, "weight");
    talkconv::detail::require_pointer(a.y, "y");
    acc_type* o = reinterpret_cast<acc_type*>(static_cast<char*>(workspace) + at_o);
    detail::offsets_args<T> p = detail::make_offsets_args<T>(a.shape, window(), a.lengths, a.dropout);
    p.x = a.x;
    p.weight = a.weight;
    p.bias = a.bias;
    p.o = o;
    p.o_pre = a.saved_offsets;
    detail::launch_project(p, a.shape, stream);
    detail::window_args<T> w = detail::make_window_args<T>(a.shape, window(), a.lengths);
    w.x = a.x;
    w.offsets = o;
    w.y = a.y;
    detail::launch_window_forward(w, a.shape, window(), max_offset(a.dropout), stream);
  }

  // dx, dweight, dbias from dy: offsets (saved or recomputed) -> reach of the windows -> offset
  // gradients (per-head sums, fixed order) -> dz -> dx = window part, then dx += W^T dz (each rounded to
  // T) -> dW, dbias (row-chunk partial sums, combined in order). Workspace: about (4 + subs) * T * B * P accumulators
  // plus the dW partials.
  void backward(void* workspace, std::size_t& workspace_bytes, const backward_args<T>& a, cudaStream_t stream) const {
    const bool empty = check(a.shape, a.dropout);
    const window_params w = window();
    const detail::window_geom wg = detail::window_geom::make(w, this->cfg_.channels);
    const index_t P = num_offsets(), N = a.shape.T * a.shape.B, NP = N * P;
    const detail::param_plan pp = detail::param_plan::make(N, P, this->cfg_.channels);
    const std::size_t bytes_np = detail::checked_bytes(NP, sizeof(acc_type), "T*B*P");
    detail::workspace_plan plan;
    const std::size_t at_o = plan.add(bytes_np);
    const std::size_t at_pre = plan.add(a.saved_offsets ? 0 : bytes_np);
    const std::size_t at_reach = plan.add(2 * sizeof(unsigned long long));
    const std::size_t at_part =
        plan.add(wg.subs > 1 ? detail::checked_bytes(talkconv::detail::checked_mul(NP, wg.subs, "T*B*P*splits"),
                                                     sizeof(acc_type), "T*B*P*splits")
                             : 0);
    const std::size_t at_dz = plan.add(bytes_np);
    const std::size_t at_dw = plan.add(pp.dw_bytes(P, this->cfg_.channels, sizeof(acc_type)));
    const std::size_t at_db = plan.add(pp.db_bytes(P, sizeof(acc_type)));
    if (detail::workspace_query(workspace, workspace_bytes, empty ? 0 : plan.bytes) || empty) return;
    talkconv::detail::require_pointer(a.x, "x");
    talkconv::detail::require_pointer(a.weight, "weight");
    talkconv::detail::require_pointer(a.dy, "dy");
    talkconv::detail::require_pointer(a.dx, "dx");
    talkconv::detail::require_pointer(a.dweight, "dweight");
    char* ws = static_cast<char*>(workspace);
    acc_type* o = reinterpret_cast<acc_type*>(ws + at_o);
    acc_type* dz = reinterpret_cast<acc_type*>(ws + at_dz);
    detail::offsets_args<T> p = detail::make_offsets_args<T>(a.shape, w, a.lengths, a.dropout);
    p.x = a.x;
    p.weight = a.weight;
    p.bias = a.bias;
    const acc_type* o_pre = a.saved_offsets;
    if (o_pre == nullptr) {  // recompute: one projection, writing both o_pre and o
      p.o_pre = reinterpret_cast<acc_type*>(ws + at_pre);
      p.o = o;
      detail::launch_project(p, a.shape, stream);
      o_pre = p.o_pre;
    } else {
      p.o_pre = const_cast<acc_type*>(o_pre);  // read only below
      p.o = o;
      detail::launch_apply_dropout(p, stream);
    }
    detail::window_args<T> wa = detail::make_window_args<T>(a.shape, w, a.lengths);
    wa.x = a.x;
    wa.offsets = o;
    wa.dy = a.dy;
    wa.dx = a.dx;
    wa.partial = wg.subs > 1 ? reinterpret_cast<acc_type*>(ws + at_part) : dz;
    detail::offsets_args<T> c = p;
    c.o_pre = const_cast<acc_type*>(o_pre);
    c.partial = wa.partial;
    c.subs = wg.subs;
    detail::launch_window_backward(wa, a.shape, w, max_offset(a.dropout),
                                   reinterpret_cast<unsigned long long*>(ws + at_reach), stream,
                                   [&] { detail::launch_combine_offsets_grad(c, dz, stream); });
    c.dz = dz;
    c.dx = a.dx;
    detail::dispatch_index(detail::fits_int32(a.shape, P), [&](auto I) {
      using Idx = typename decltype(I)::type;
      detail::offset_path_kernel<T, Idx><<<detail::grid_for(N * a.shape.C, detail::row_threads), detail::row_threads, 0,
                                           stream>>>(c);
      detail::check_launch("offset_path_kernel");
    });
    c.dw_part = reinterpret_cast<acc_type*>(ws + at_dw);
    c.db_part = reinterpret_cast<acc_type*>(ws + at_db);
    c.dweight = a.dweight;
    c.dbias = a.dbias;
    detail::launch_param_grads(c, a.shape, pp, stream);
  }

  // Convenience forms: the workspace comes from cudaMallocAsync on `stream` and goes back with
  // cudaFreeAsync on it (stream-ordered, no synchronization).
  void forward(const forward_args<T>& a, cudaStream_t stream) const {
    with_workspace(stream, [&](void* ws, std::size_t& n) { forward(ws, n, a, stream); });
  }
  void backward(const backward_args<T>& a, cudaStream_t stream) const {
    with_workspace(stream, [&](void* ws, std::size_t& n) { backward(ws, n, a, stream); });
  }

  // A decoder for `batch` sequences with its state allocated on `stream` (causal layers only).
  decoder<T> make_decoder(index_t batch, cudaStream_t stream) const {
    return decoder<T>(window(), this->cfg_.channels, batch, stream);
  }

 private:
  // Validation, then the launch plan's CUDA limits: everything that can refuse a call does so before its
  // workspace query returns and before any launch.
  bool check(const seq_shape& s, const dropout_params& d) const {
    const bool empty = detail::validate_or_empty(s, window());
    this->check_channels(s);
    talkconv::detail::validate_bytes(s, window(), sizeof(T), sizeof(acc_type));
    talkconv::detail::validate_weight(window(), s.C, sizeof(T), sizeof(acc_type));
    talkconv::detail::validate_dropout(d);
    if (!empty) detail::check_window_grids<acc_type>(s, window());
    return empty;
  }
  static double max_offset(const dropout_params& d) { return d.active() ? 1.0 / (1.0 - double(d.p)) : 1.0; }

  template <class Run>
  static void with_workspace(cudaStream_t stream, Run&& run) {
    std::size_t bytes = 0;
    run(nullptr, bytes);
    void* ws = nullptr;
    if (bytes == 0) {
      // An empty problem (or no workspace needed): any non-null pointer runs the call.
      static char dummy;
      run(&dummy, bytes);
      return;
    }
    detail::check(cudaMallocAsync(&ws, bytes, stream), "cudaMallocAsync(workspace)");
    try {
      run(ws, bytes);
    } catch (...) {
      (void)cudaFreeAsync(ws, stream);
      throw;
    }
    detail::check(cudaFreeAsync(ws, stream), "cudaFreeAsync(workspace)");
  }
};

}  // namespace cuda
}  // namespace talkconv
