// Building block 2 on CUDA: offset generation o = dropout(sigmoid(W x + bias)), forward and backward.
#pragma once

#include "talkconv/cuda/device_window.cuh"
#include "talkconv/cuda/dispatch.cuh"
#include "talkconv/cuda/kernel_offsets.cuh"

namespace talkconv {
namespace cuda {
namespace detail {

template <class T>
offsets_args<T> make_offsets_args(const seq_shape& s, const window_params& w, const index_t* lengths,
                                  const dropout_params& d) {
  offsets_args<T> a;
  a.g = make_geom(s, w.num_offsets(), lengths);
  a.H = w.heads;
  a.L = w.max_left;
  a.M = w.max_right;
  a.dropout = d.active();
  a.p = d.p;
  a.seed = d.seed;
  return a;
}

// Projection + sigmoid + dropout of every row of a.x into a.o / a.o_pre.
template <class T>
void launch_project(const offsets_args<T>& a, const seq_shape& s, cudaStream_t stream) {
  const index_t rows = a.g.T * a.g.B;
  dispatch_index(fits_int32(s, a.g.P), [&](auto I) {
    using Idx = typename decltype(I)::type;
    dispatch_heads(a.g.P, [&](auto pc) {
      constexpr int PC = decltype(pc)::value;
      // proj_rows * PC sums per warp, whatever P is (at most 2 KiB a block: no opt-in needed).
      const std::size_t smem = sizeof(acc_t<T>) * std::size_t(proj_warps * proj_rows * PC);
      auto* kernel = &project_offsets_kernel<T, Idx, PC>;
      kernel<<<grid_for(rows, proj_warps * proj_rows), row_threads, smem, stream>>>(a);
      check_launch("project_offsets_kernel");
    });
  });
}

template <class T>
void launch_apply_dropout(const offsets_args<T>& a, cudaStream_t stream) {
  apply_dropout_kernel<T><<<grid_for(a.g.T * a.g.B * a.g.P, row_threads), row_threads, 0, stream>>>(a);
  check_launch("apply_dropout_kernel");
}

// Row chunks of the dW / dbias partial sums: a fixed function of the row count (never of the device),
// so the summation order, and the bits, are the same on every GPU.
// At most 256 chunks. Also checks the partial-sum grid (ceil(C / param_threads), chunks,
// ceil(P / proj_chunk)) against CUDA's limits, so callers can refuse a problem before any launch.
struct param_plan {
  index_t rows_per_chunk = 0, chunks = 0;
  static param_plan make(index_t rows, index_t P, index_t C) {
    param_plan p;
    const index_t per = (rows + 255) / 256;
    p.rows_per_chunk = per > 256 ? per : 256;
    p.chunks = (rows + p.rows_per_chunk - 1) / p.rows_per_chunk;
    if (p.chunks < 1) p.chunks = 1;
    const index_t gx = (C + param_threads - 1) / param_threads, gz = (P + proj_chunk - 1) / proj_chunk;
    if (gx > std::numeric_limits<std::int32_t>::max() || p.chunks > 65535 || gz > 65535)
      talkconv::detail::fail(status::size_overflow, "P", "the dW grid (", gx, ", ", p.chunks, ", ", gz, ") for P = ", P,
                             ", C = ", C, " exceeds the CUDA grid");
    return p;
  }
  // Bytes of the dW and dbias partial sums ([chunks][P][C] and [chunks][P]), overflow-checked.
  std::size_t dw_bytes(index_t P, index_t C, std::size_t elem) const {
    return checked_bytes(
        talkconv::detail::checked_mul(talkconv::detail::checked_mul(chunks, P, "chunks*P"), C, "chunks*P*C"), elem,
        "dW partial sums");
  }
  std::size_t db_bytes(index_t P, std::size_t elem) const {
    return checked_bytes(talkconv::detail::checked_mul(chunks, P, "chunks*P"), elem, "dbias partial sums");
  }
};

// dW, dbias from a.dz and a.x: partial sums per row chunk, then a combine in chunk order.
template <class T>
void launch_param_grads(offsets_args<T> a, const seq_shape& s, const param_plan& pp, cudaStream_t stream) {
  a.rows_per_chunk = pp.rows_per_chunk;
  a.chunks = pp.chunks;
  const dim3 grid(static_cast<unsigned>((a.g.C + param_threads - 1) / param_threads), static_cast<unsigned>(pp.chunks),
                  static_cast<unsigned>((a.g.P + proj_chunk - 1) / proj_chunk));
  dispatch_index(fits_int32(s, a.g.P), [&](auto I) {
    using Idx = typename decltype(I)::type;
    param_grads_partial_kernel<T, Idx><<<grid, param_threads, 0, stream>>>(a);
    check_launch("param_grads_partial_kernel");
  });
  param_grads_combine_kernel<T><<<grid_for(a.g.P * a.g.C + a.g.P, row_threads), row_threads, 0, stream>>>(a);
  check_launch("param_grads_combine_kernel");
}

}  // namespace detail

// Offset generation on the device (SPEC step 1), the CUDA twin of cpu::offsets_forward: for every valid
// token, z = W x + bias (one warp per token, fixed-order warp sums in acc_t<T>),
//   offsets_pre = sigmoid(z) (may be null), offsets = offsets_pre * m / (1 - p) (may be null).
// The dropout mask is detail::dropout_keep: bitwise the CPU's mask. All pointers are device memory
// (lengths: B int64 values, or null). Rows t >= n_b are zero. Asynchronous on `stream`, no workspace.
template <class T>
void offsets_forward(const seq_shape& shape, const window_params& w, const T* x, const T* weight, const T* bias,
                     const dropout_params& dropout, acc_t<T>* offsets, acc_t<T>* offsets_pre, const index_t* lengths,
                     cudaStream_t stream) {
  const bool empty = detail::validate_or_empty(shape, w);
  talkconv::detail::validate_bytes(shape, w, sizeof(T), sizeof(acc_t<T>));
  talkconv::detail::validate_weight(w, shape.C, sizeof(T), sizeof(acc_t<T>));
  talkconv::detail::validate_dropout(dropout);
  if (empty) return;
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(weight, "weight");
  if (offsets == nullptr && offsets_pre == nullptr) talkconv::detail::require_pointer(offsets, "offsets");
  detail::offsets_args<T> a = detail::make_offsets_args<T>(shape, w, lengths, dropout);
  a.x = x;
  a.weight = weight;
  a.bias = bias;
  a.o = offsets;
  a.o_pre = const_cast<acc_t<T>*>(offsets_pre);  // read only by the combine
  detail::launch_project(a, shape, stream);
}

// Offset generation backward on the device, the CUDA twin of cpu::offsets_backward. Given offsets_pre
// and d_offsets = dL/d(offsets), with dz = d_offsets * m / (1 - p) * o_pre (1 - o_pre):
//   dx += W^T dz (may be null to skip),  dweight = sum dz x^T,  dbias = sum dz (may be null).
// Two-phase workspace (CUB); deterministic (partial sums per fixed row chunk, combined in order).
template <class T>
void offsets_backward(void* workspace, std::size_t& workspace_bytes, const seq_shape& shape, const window_params& w,
                      const T* x, const T* weight, const acc_t<T>* offsets_pre, const acc_t<T>* d_offsets,
                      const dropout_params& dropout, T* dx, T* dweight, T* dbias, const index_t* lengths,
                      cudaStream_t stream) {
  using A = acc_t<T>;
  const bool empty = detail::validate_or_empty(shape, w);
  talkconv::detail::validate_bytes(shape, w, sizeof(T), sizeof(acc_t<T>));
  talkconv::detail::validate_weight(w, shape.C, sizeof(T), sizeof(acc_t<T>));
  talkconv::detail::validate_dropout(dropout);
  const index_t P = w.num_offsets(), N = shape.T * shape.B;
  const detail::param_plan pp = detail::param_plan::make(N, P, shape.C);
  detail::workspace_plan plan;
  const std::size_t at_dz = plan.add(detail::checked_bytes(N * P, sizeof(A), "T*B*P"));
  const std::size_t at_dw = plan.add(pp.dw_bytes(P, shape.C, sizeof(A)));
  const std::size_t at_db = plan.add(pp.db_bytes(P, sizeof(A)));
  if (detail::workspace_query(workspace, workspace_bytes, empty ? 0 : plan.bytes) || empty) return;
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(weight, "weight");
  talkconv::detail::require_pointer(offsets_pre, "offsets_pre");
  talkconv::detail::require_pointer(d_offsets, "d_offsets");
  talkconv::detail::require_pointer(dweight, "dweight");
  char* ws = static_cast<char*>(workspace);
  detail::offsets_args<T> a = detail::make_offsets_args<T>(shape, w, lengths, dropout);
  a.x = x;
  a.weight = weight;
  a.o_pre = const_cast<acc_t<T>*>(offsets_pre);  // read only by the combine
  a.partial = d_offsets;
  a.subs = 1;
  a.L = a.M = 1;  // d_offsets are already dL/do: no window factor
  A* dz = reinterpret_cast<A*>(ws + at_dz);
  detail::launch_combine_offsets_grad(a, dz, stream);
  a.dz = dz;
  if (dx) {
    a.dx = dx;
    detail::dispatch_index(detail::fits_int32(shape, P), [&](auto I) {
      using Idx = typename decltype(I)::type;
      detail::offset_path_kernel<T, Idx>
          <<<detail::grid_for(N * shape.C, detail::row_threads), detail::row_threads, 0, stream>>>(a);
      detail::check_launch("offset_path_kernel");
    });
  }
  a.dw_part = reinterpret_cast<A*>(ws + at_dw);
  a.db_part = reinterpret_cast<A*>(ws + at_db);
  a.dweight = dweight;
  a.dbias = dbias;
  detail::launch_param_grads(a, shape, pp, stream);
}

}  // namespace cuda
}  // namespace talkconv
