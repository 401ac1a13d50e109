// cuda::talk_conv<T, Heads>: the TaLK layer on the device (forward, backward; make_decoder gives the
// incremental decoder of decoder.cuh).
#pragma once

#include "talkconv/cuda/decoder.cuh"
#include "talkconv/cuda/device_offsets.cuh"
#include "talkconv/cuda/device_window.cuh"
#include "talkconv/cuda/shard_rows.cuh"
#include "talkconv/layer_args.hpp"
#include "talkconv/shard.hpp"

#include <cstdint>
#include <limits>
#include <utility>

namespace talkconv {
namespace cuda {

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
  // saved_offsets when given), then the window kernel; for 16-bit and float x where it applies, both in one kernel
  // (detail::launch_forward_fused: the offsets stay in shared memory, o_pre still goes to saved_offsets; the same
  // bits). Workspace: T * B * P accumulators, or 256 bytes when saved_offsets is given and dropout is off (the
  // window then reads saved_offsets); the one-kernel path leaves it untouched (its size does not depend on the
  // path, which the pointers' alignment decides).
  void forward(void* workspace, std::size_t& workspace_bytes, const forward_args<T>& a, cudaStream_t stream) const {
    forward_at(workspace, workspace_bytes, a, stream, 0);
  }

  // dx, dweight, dbias from dy: offsets (saved or recomputed) -> reach of the windows -> offset
  // gradients (per-head sums, fixed order) -> dz -> dx = window part, then dx += W^T dz (each rounded to
  // T) -> dW, dbias (row-chunk partial sums, combined in order). Workspace: T * B * P accumulators (dz), as
  // many again for the offsets after dropout (dropout on) and for o_pre (saved_offsets null), subs times as
  // many for split heads' partial sums (a head wider than a block), plus the dW partials.
  void backward(void* workspace, std::size_t& workspace_bytes, const backward_args<T>& a, cudaStream_t stream) const {
    backward_at(workspace, workspace_bytes, a, stream, 0);
  }

  // The layer on a time shard s (talkconv/shard.hpp, s from make_shard), the twin of the CPU layer's
  // shard overloads: a.shape.T = s.own(); a.x has s.rows() rows (s.halo.left before the own ones,
  // s.halo.right after); a.y and a.saved_offsets hold the own tokens only; a.lengths are the global
  // lengths (device memory). The kernels run on the extended rows with lengths shifted to them and the
  // dropout mask drawn at the global positions; y and saved_offsets come back through the workspace (one
  // device copy of the own rows: the kernels write whole tensors). Two-phase workspace, no allocation,
  // no synchronization.
  void forward(void* workspace, std::size_t& workspace_bytes, const forward_args<T>& a, const shard_params& s,
               cudaStream_t stream) const {
    check_shard(a.shape, s, a.dropout);
    const seq_shape xs{s.rows(), a.shape.B, a.shape.C, a.shape.lay};
    forward_args<T> e = a;
    e.shape = xs;
    std::size_t inner = 0;
    forward_at(nullptr, inner, e, stream, 0);
    const shard_workspace sw = plan_shard_workspace(inner, xs, a.saved_offsets != nullptr, a.lengths != nullptr);
    const std::size_t at_in = sw.inner, at_y = sw.rows, at_s = sw.saved, at_n = sw.lengths;
    if (detail::workspace_query(workspace, workspace_bytes, sw.bytes)) return;
    talkconv::detail::require_pointer(a.x, "x");
    talkconv::detail::require_pointer(a.weight, "weight");
    talkconv::detail::require_pointer(a.y, "y");
    char* ws = static_cast<char*>(workspace);
    e.y = reinterpret_cast<T*>(ws + at_y);
    e.saved_offsets = a.saved_offsets ? reinterpret_cast<acc_type*>(ws + at_s) : nullptr;
    e.lengths = shard_lengths(a.lengths, s, xs.B, ws + at_n, stream);
    forward_at(ws + at_in, inner, e, stream, s.first_row());
    detail::copy_shard_rows(a.y, e.y, s, xs, xs.C * index_t(sizeof(T)), true, stream);
    if (a.saved_offsets)
      detail::copy_shard_rows(a.saved_offsets, e.saved_offsets, s, xs, num_offsets() * index_t(sizeof(acc_type)), true,
                              stream);
  }

  // Backward on a time shard: a.x and a.dx have s.rows() rows, a.dy and a.saved_offsets the own tokens.
  // dx's own rows get the own tokens' window share plus W^T dz, its halo rows the own tokens' share of
  // those rows (to add to the owners' rows); dweight and dbias are this shard's partial sums. The
  // kernels run on the extended rows with dy zero on the halo rows (their tokens then add exactly zero).
  void backward(void* workspace, std::size_t& workspace_bytes, const backward_args<T>& a, const shard_params& s,
                cudaStream_t stream) const {
    check_shard(a.shape, s, a.dropout);
    const seq_shape xs{s.rows(), a.shape.B, a.shape.C, a.shape.lay};
    backward_args<T> e = a;
    e.shape = xs;
    std::size_t inner = 0;
    backward_at(nullptr, inner, e, stream, 0);
    const shard_workspace sw = plan_shard_workspace(inner, xs, a.saved_offsets != nullptr, a.lengths != nullptr);
    const std::size_t at_in = sw.inner, at_dy = sw.rows, at_s = sw.saved, at_n = sw.lengths;
    if (detail::workspace_query(workspace, workspace_bytes, sw.bytes)) return;
    talkconv::detail::require_pointer(a.x, "x");
    talkconv::detail::require_pointer(a.weight, "weight");
    talkconv::detail::require_pointer(a.dy, "dy");
    talkconv::detail::require_pointer(a.dx, "dx");
    talkconv::detail::require_pointer(a.dweight, "dweight");
    char* ws = static_cast<char*>(workspace);
    T* dy = reinterpret_cast<T*>(ws + at_dy);
    detail::check(cudaMemsetAsync(dy, 0, std::size_t(xs.T * xs.B * xs.C) * sizeof(T), stream), "cudaMemsetAsync(dy)");
    detail::copy_shard_rows(dy, a.dy, s, xs, xs.C * index_t(sizeof(T)), false, stream);
    e.dy = dy;
    if (a.saved_offsets) {
      acc_type* sv = reinterpret_cast<acc_type*>(ws + at_s);
      detail::check(cudaMemsetAsync(sv, 0, std::size_t(xs.T * xs.B * num_offsets()) * sizeof(acc_type), stream),
                    "cudaMemsetAsync(saved_offsets)");
      detail::copy_shard_rows(sv, a.saved_offsets, s, xs, num_offsets() * index_t(sizeof(acc_type)), false, stream);
      e.saved_offsets = sv;
    }
    e.lengths = shard_lengths(a.lengths, s, xs.B, ws + at_n, stream);
    backward_at(ws + at_in, inner, e, stream, s.first_row());
  }

  // Convenience forms of the shard calls (cudaMallocAsync / cudaFreeAsync on `stream`).
  void forward(const forward_args<T>& a, const shard_params& s, cudaStream_t stream) const {
    with_workspace(stream, [&](void* ws, std::size_t& n) { forward(ws, n, a, s, stream); });
  }
  void backward(const backward_args<T>& a, const shard_params& s, cudaStream_t stream) const {
    with_workspace(stream, [&](void* ws, std::size_t& n) { backward(ws, n, a, s, stream); });
  }

 private:
  // forward / backward with the dropout counter of row t at t + t_base (a time shard's first row).
  void forward_at(void* workspace, std::size_t& workspace_bytes, const forward_args<T>& a, cudaStream_t stream,
                  index_t t_base) const {
    const bool empty = check(a.shape, a.dropout);
    // Without dropout the offsets the window reads are o_pre itself (both zero past the length): when the
    // caller saves o_pre, the window reads it there and no second copy is written.
    // The workspace is never 0 bytes for a non-empty problem (one aligned block then): a caller's
    // allocation of 0 bytes is a null pointer, which the second call would take for another size query.
    const bool own_o = a.dropout.active() || a.saved_offsets == nullptr;
    detail::workspace_plan plan;
    const std::size_t at_o = plan.add(
        own_o ? detail::checked_bytes(a.shape.T * a.shape.B * num_offsets(), sizeof(acc_type), "T*B*P") : 1);
    if (detail::workspace_query(workspace, workspace_bytes, empty ? 0 : plan.bytes) || empty) return;
    talkconv::detail::require_pointer(a.x, "x");
    talkconv::detail::require_pointer(a.weight, "weight");
    talkconv::detail::require_pointer(a.y, "y");
    acc_type* o = own_o ? reinterpret_cast<acc_type*>(static_cast<char*>(workspace) + at_o) : a.saved_offsets;
    detail::offsets_args<T> p = detail::make_offsets_args<T>(a.shape, window(), a.lengths, a.dropout);
    p.x = a.x;
    p.weight = a.weight;
    p.bias = a.bias;
    p.o = own_o ? o : nullptr;
    p.o_pre = a.saved_offsets;
    p.t_base = t_base;
    detail::window_args<T> w = detail::make_window_args<T>(a.shape, window(), a.lengths);
    w.x = a.x;
    w.offsets = o;
    w.y = a.y;
    // 16-bit or float x where both halves take it: one kernel, x read once (o then stays in shared memory).
    if (detail::launch_forward_fused(p, w, a.shape, window(), max_offset(a.dropout), stream)) return;
    detail::launch_project(p, a.shape, stream);
    detail::launch_window_forward(w, a.shape, window(), max_offset(a.dropout), stream);
  }

  void backward_at(void* workspace, std::size_t& workspace_bytes, const backward_args<T>& a, cudaStream_t stream,
                   index_t t_base) const {
    const bool empty = check(a.shape, a.dropout);
    const window_params w = window();
    const detail::window_geom wg = detail::window_geom::make(w, this->cfg_.channels);
    const index_t P = num_offsets(), N = a.shape.T * a.shape.B, NP = N * P;
    const detail::param_plan pp = detail::param_plan::make(N, P, this->cfg_.channels);
    const std::size_t bytes_np = detail::checked_bytes(NP, sizeof(acc_type), "T*B*P");
    detail::workspace_plan plan;
    // Without dropout o = o_pre (zero past the length both): the window reads o_pre, no copy is made.
    const bool active = a.dropout.active();
    const std::size_t at_o = plan.add(active ? bytes_np : 0);
    const std::size_t at_pre = plan.add(a.saved_offsets ? 0 : bytes_np);
    const std::size_t at_reach = plan.add(2 * sizeof(unsigned long long));
    const std::size_t at_part =
        plan.add(wg.subs > 1 ? detail::checked_bytes(talkconv::detail::checked_mul(NP, wg.subs, "T*B*P*splits"),
                                                     sizeof(acc_type), "T*B*P*splits")
                             : 0);
    const std::size_t at_dz = plan.add(bytes_np);
    const std::size_t at_dw = plan.add(pp.dw_bytes(P, this->cfg_.channels, sizeof(acc_type)));
    const std::size_t at_db = plan.add(pp.db_bytes(P, sizeof(acc_type)));
    // dx by sorted events where the banded kernels do not take the problem (kernel_window_input_grad.cuh).
    const detail::sorted_dx_workspace sorted =
        empty ? detail::sorted_dx_workspace{} : detail::plan_sorted_dx_workspace<T>(a.shape, w);
    const std::size_t at_sort = plan.add(sorted.bytes);
    if (detail::workspace_query(workspace, workspace_bytes, empty ? 0 : plan.bytes) || empty) return;
    talkconv::detail::require_pointer(a.x, "x");
    talkconv::detail::require_pointer(a.weight, "weight");
    talkconv::detail::require_pointer(a.dy, "dy");
    talkconv::detail::require_pointer(a.dx, "dx");
    talkconv::detail::require_pointer(a.dweight, "dweight");
    char* ws = static_cast<char*>(workspace);
    acc_type* o = active ? reinterpret_cast<acc_type*>(ws + at_o) : nullptr;
    acc_type* dz = reinterpret_cast<acc_type*>(ws + at_dz);
    detail::offsets_args<T> p = detail::make_offsets_args<T>(a.shape, w, a.lengths, a.dropout);
    p.x = a.x;
    p.weight = a.weight;
    p.bias = a.bias;
    p.t_base = t_base;
    const acc_type* o_pre = a.saved_offsets;
    if (o_pre == nullptr) {  // recompute: one projection, writing o_pre (and o when dropout is active)
      p.o_pre = reinterpret_cast<acc_type*>(ws + at_pre);
      p.o = o;
      detail::launch_project(p, a.shape, stream);
      o_pre = p.o_pre;
    } else if (active) {
      p.o_pre = const_cast<acc_type*>(o_pre);  // read only below
      p.o = o;
      detail::launch_apply_dropout(p, stream);
    }
    const acc_type* offsets = active ? o : o_pre;
    detail::window_args<T> wa = detail::make_window_args<T>(a.shape, w, a.lengths);
    wa.x = a.x;
    wa.offsets = offsets;
    wa.dy = a.dy;
    wa.dx = a.dx;
    wa.partial = wg.subs > 1 ? reinterpret_cast<acc_type*>(ws + at_part) : dz;
    detail::offsets_args<T> c = p;
    c.o_pre = const_cast<acc_type*>(o_pre);
    c.partial = wa.partial;
    c.subs = wg.subs;
    if (sorted.on) wa.sort_ws = reinterpret_cast<unsigned char*>(ws + at_sort);
    wa.dz = dz;  // written before dx (the offset-gradient kernel's finish or the combine): the fused dx reads it
    wa.weight = a.weight;
    // dz finished in the offset-gradient kernel where a block holds whole heads (then no combine pass).
    wa.finish.on = true;
    wa.finish.o_pre = o_pre;
    wa.finish.dropout = p.dropout;
    wa.finish.p = p.p;
    wa.finish.seed = p.seed;
    wa.finish.t_base = p.t_base;
    const bool fused = detail::launch_window_backward(
        wa, a.shape, w, max_offset(a.dropout), reinterpret_cast<unsigned long long*>(ws + at_reach), stream,
        [&](bool finished) {
          if (!finished) detail::launch_combine_offsets_grad(c, dz, stream);
        });
    c.dz = dz;
    c.dx = a.dx;
    if (!fused) detail::launch_offset_path(c, stream);  // dx += W^T dz as its own pass (device_offsets.cuh)
    c.dw_part = reinterpret_cast<acc_type*>(ws + at_dw);
    c.db_part = reinterpret_cast<acc_type*>(ws + at_db);
    c.dweight = a.dweight;
    c.dbias = a.dbias;
    detail::launch_param_grads(c, a.shape, pp, stream);
  }

  // The shard calls' workspace: the inner call's, one T*B*C tensor of T over the extended rows (y or dy), the
  // saved offsets over them (when given), the shifted lengths (when given); byte offsets and the total.
  struct shard_workspace {
    std::size_t inner, rows, saved, lengths, bytes;
  };
  shard_workspace plan_shard_workspace(std::size_t inner, const seq_shape& xs, bool saved, bool lengths) const {
    detail::workspace_plan plan;
    shard_workspace w;
    w.inner = plan.add(inner);
    w.rows = plan.add(detail::checked_bytes(xs.T * xs.B * xs.C, sizeof(T), "T*B*C"));
    w.saved = plan.add(saved ? detail::checked_bytes(xs.T * xs.B * num_offsets(), sizeof(acc_type), "T*B*P") : 0);
    w.lengths = plan.add(lengths ? std::size_t(xs.B) * sizeof(index_t) : 0);
    w.bytes = plan.bytes;
    return w;
  }

  // Global lengths shifted to the shard's rows (device, into `at`), or null.
  static const index_t* shard_lengths(const index_t* lengths, const shard_params& s, index_t B, char* at,
                                      cudaStream_t stream) {
    if (lengths == nullptr) return nullptr;
    index_t* out = reinterpret_cast<index_t*>(at);
    detail::shard_lengths_kernel<<<detail::grid_for(B, detail::row_threads), detail::row_threads, 0, stream>>>(
        lengths, out, B, s.T, s.first_row(), s.rows());
    detail::check_launch("shard_lengths_kernel");
    return out;
  }
  void check_shard(const seq_shape& s, const shard_params& sh, const dropout_params& d) const {
    talkconv::detail::validate_dropout(d);
    talkconv::detail::validate_shard(sh, s, window(), d, nullptr);  // lengths live on the device
    this->check_channels(s);
    const seq_shape xs{sh.rows(), s.B, s.C, s.lay};
    check(xs, d);
  }

 public:
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
    if (!empty) detail::check_window_grids<T>(s, window());
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
