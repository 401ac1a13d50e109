// cuda::talk_conv<T, Heads>: the TaLK layer on the device (forward, backward; make_decoder gives the
// incremental decoder of decoder.cuh).
#pragma once

#include "talkconv/cuda/decoder.cuh"
#include "talkconv/cuda/device_offsets.cuh"
#include "talkconv/cuda/device_window.cuh"
#include "talkconv/layer_args.hpp"

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
    detail::launch_offset_path(c, stream);  // dx += W^T dz: the one device definition (device_offsets.cuh)
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
