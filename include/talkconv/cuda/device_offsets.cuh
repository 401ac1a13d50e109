// Building block 2 on CUDA: offset generation o = dropout(sigmoid(W x + bias)), forward and backward.
#pragma once

#include "talkconv/cuda/device_window.cuh"
#include "talkconv/cuda/dispatch.cuh"
#include "talkconv/cuda/kernel_offsets.cuh"

#include <cstdint>
#include <type_traits>

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

// Projection + sigmoid + dropout of every row of a.x into a.o / a.o_pre: the tiled GEMM, or the
// dot-product form when the problem has fewer than project_min_tiles tiles (a decoder's token).
template <class T>
void launch_project(const offsets_args<T>& a, const seq_shape& s, cudaStream_t stream) {
  using pol = project_policy<T>;
  const index_t N = s.T * s.B, P = a.g.P;
  dispatch_heads(P, [&](auto pc) {
    constexpr int PC = decltype(pc)::value;
    constexpr int BN = project_bn<T, PC>();
    const index_t tiles_m = (N + pol::rows - 1) / pol::rows, tiles_n = (P + BN - 1) / BN;
    if (project_dot_form(N, P, pol::rows, BN)) {
      const index_t gx = (P + row_threads / 32 - 1) / (row_threads / 32);
      project_dot_kernel<T><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(N)), row_threads, 0, stream>>>(a);
      check_launch("project_dot_kernel");
    } else {
      const dim3 grid(static_cast<unsigned>(tiles_m < 0x7fffffff ? tiles_m : 0x7fffffff),
                      static_cast<unsigned>(tiles_n < 65535 ? tiles_n : 65535));
      project_tile_kernel<T, BN><<<grid, pol::threads, 0, stream>>>(a);
      check_launch("project_tile_kernel");
    }
  });
}

template <class T>
void launch_apply_dropout(const offsets_args<T>& a, cudaStream_t stream) {
  apply_dropout_kernel<T><<<grid_for(a.g.T * a.g.B * offset_groups(a.g.P), row_threads), row_threads, 0, stream>>>(a);
  check_launch("apply_dropout_kernel");
}

// Row chunks of the dW / dbias partial sums: a fixed function of the row count (never of the device),
// so the summation order, and the bits, are the same on every GPU. At most dz_gemm_policy::max_chunks
// chunks of at least min_rows_per_chunk rows (the partials, chunks * P * C accumulators, stay small next
// to x). Also checks the partial-sum grid (ceil(C / channels), chunks, ceil(P / proj_chunk)) against
// CUDA's limits, so callers can refuse a problem before any launch.
struct param_plan {
  index_t rows_per_chunk = 0, chunks = 0;
  static param_plan make(index_t rows, index_t P, index_t C) {
    using pol = dz_gemm_policy;
    param_plan p;
    const index_t per = (rows + pol::max_chunks - 1) / pol::max_chunks;
    p.rows_per_chunk = per > pol::min_rows_per_chunk ? per : pol::min_rows_per_chunk;
    p.chunks = (rows + p.rows_per_chunk - 1) / p.rows_per_chunk;
    if (p.chunks < 1) p.chunks = 1;
    const index_t gx = (C + 127) / 128, gz = (P + proj_chunk - 1) / proj_chunk;  // the smaller (tensor-core) tile
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
  (void)s;
  a.rows_per_chunk = pp.rows_per_chunk;
  a.chunks = pp.chunks;
  dispatch_heads(a.g.P, [&](auto pc) {
    constexpr int PC = decltype(pc)::value;
    if constexpr (project_policy<T>::tensor_cores || project_policy<T>::tf32x3) {  // 16-bit x, float (3xTF32)
      constexpr int PT = PC < 16 ? 16 : PC;
      using pol = dw_tc_policy<PT>;
      const dim3 grid(static_cast<unsigned>((a.g.C + pol::channels - 1) / pol::channels),
                      static_cast<unsigned>(pp.chunks), static_cast<unsigned>((a.g.P + PT - 1) / PT));
      // x by cp.async (16-byte vectors of whole rows) where it is aligned. float and half need the dynamic shared
      // memory of dw_tc_async_smem (79 KB for float; bfloat16's is static): only where the code run is sm_80's or
      // later (before it the block sums without it, and the size may pass the opt-in) and two blocks fit an SM (an
      // sm_86 / 89's 100 KB hold one: the register path keeps two there)
      constexpr bool async = TALKCONV_CUDA_DW_ASYNC != 0;
      constexpr bool bf16 = std::is_same<T, __nv_bfloat16>::value;
      constexpr std::size_t smem = bf16 ? 0 : sizeof(dw_tc_async_smem<T, PT>);
      auto* async_kernel = &param_grads_partial_tc_kernel<T, PT, async>;
      if (async && a.g.C % index_t(16 / sizeof(T)) == 0 && reinterpret_cast<std::uintptr_t>(a.x) % 16 == 0 &&
          (bf16 || (built_for_sm80(async_kernel) && 2 * (smem + smem_reserved_per_block) <= smem_per_sm()))) {
        allow_smem(async_kernel, smem, "param_grads_partial_tc_kernel");
        async_kernel<<<grid, pol::threads, smem, stream>>>(a);
      } else
        param_grads_partial_tc_kernel<T, PT><<<grid, pol::threads, 0, stream>>>(a);
      check_launch("param_grads_partial_tc_kernel");
    } else {
      const dim3 grid(static_cast<unsigned>((a.g.C + dz_gemm_policy::channels - 1) / dz_gemm_policy::channels),
                      static_cast<unsigned>(pp.chunks), static_cast<unsigned>((a.g.P + PC - 1) / PC));
      param_grads_partial_kernel<T, PC><<<grid, dz_gemm_policy::threads, 0, stream>>>(a);
      check_launch("param_grads_partial_kernel");
    }
  });
  param_grads_combine_kernel<T><<<grid_for(a.g.P * a.g.C + a.g.P, row_threads), row_threads, 0, stream>>>(a);
  check_launch("param_grads_combine_kernel");
}

// The offset path of the input gradient, its one definition on the device: dx[r, c] += sum_j dz[r, j] W[j, c]
// for every memory row r of a valid token (rows past a length are left as they are), j in order, one
// rounding to T. Reads a.dz ([N, P] accumulators, the offsets' layout), a.weight ([P, C]); updates a.dx
// (T, x's layout) in place; a.g gives the shape and lengths. Run it after the window's dx kernel has
// written dx. Deterministic: each element has one writer.
// Grid of the tensor-core offset path: blocks of rows * steps rows (x), channel blocks (y, grid-strided).
template <int PT>
inline dim3 dx_tc_grid(index_t N, index_t C) {
  using tc = dx_tc_policy<PT>;
  const index_t tx = (N + tc::rows * tc::steps - 1) / (tc::rows * tc::steps);
  const index_t ty = (C + tc::channels - 1) / tc::channels;
  return dim3(static_cast<unsigned>(tx < 0x7fffffff ? tx : 0x7fffffff), static_cast<unsigned>(ty < 65535 ? ty : 65535));
}

template <class T>
void launch_offset_path(const offsets_args<T>& a, cudaStream_t stream) {
  using pol = dz_gemm_policy;
  const index_t N = a.g.T * a.g.B, P = a.g.P;
  if (N == 0 || a.g.C == 0) return;
  const index_t gx = (N + pol::dx_rows - 1) / pol::dx_rows, cb = (a.g.C + pol::channels - 1) / pol::channels;
  const dim3 grid(static_cast<unsigned>(gx < 0x7fffffff ? gx : 0x7fffffff), static_cast<unsigned>(cb < 65535 ? cb : 65535));
  if (gx > 0x7fffffff)
    talkconv::detail::fail(status::size_overflow, "T*B", "T * B = ", N, " rows exceed the offset path's grid");
  if (P <= proj_chunk) {
    dispatch_heads(P, [&](auto pc) {
      constexpr int PC = decltype(pc)::value;
      if constexpr (project_policy<T>::tensor_cores) {
        constexpr int PT = PC < 16 ? 16 : PC;
        offset_path_tc_kernel<T, PT><<<dx_tc_grid<PT>(N, a.g.C), dx_tc_policy<PT>::threads, 0, stream>>>(a);
        check_launch("offset_path_tc_kernel");
      } else {
        offset_path_kernel<T, PC, false><<<grid, pol::threads, 0, stream>>>(a, 0);
        check_launch("offset_path_kernel");
      }
    });
  } else {
    if constexpr (project_policy<T>::tensor_cores) {
      // Chunks of 32 offsets, W of all of them staged once per block: while it fits the device.
      const index_t chunks = (P + 31) / 32;
      const std::size_t bytes = dx_tc_wide_layout::bytes(static_cast<int>(chunks < 65536 ? chunks : 65536));
      if (chunks < 65536 && bytes <= smem_optin()) {
        auto* kernel = &offset_path_tc_wide_kernel<T>;
        allow_smem(kernel, bytes, "cudaFuncSetAttribute(offset_path_tc_wide_kernel)");
        kernel<<<dx_tc_grid<32>(N, a.g.C), dx_tc_policy<32>::threads, bytes, stream>>>(a, static_cast<int>(chunks));
        check_launch("offset_path_tc_wide_kernel");
        return;
      }
      // 16-bit dx with W beyond shared memory: one pass (chunked passes would round dx to T once per chunk).
      offset_path_wide_kernel<T><<<grid, pol::threads, 0, stream>>>(a);
      check_launch("offset_path_wide_kernel");
    } else if constexpr (std::is_same<T, acc_t<T>>::value) {
      // float / double: one launch per chunk of proj_chunk offsets, in order, dx read and written in A per
      // chunk: the same sums in the same order as one pass, with the weights in registers.
      for (index_t p0 = 0; p0 < P; p0 += proj_chunk) {
        offset_path_kernel<T, proj_chunk, true><<<grid, pol::threads, 0, stream>>>(a, p0);
        check_launch("offset_path_kernel");
      }
    } else {  // a user type stored narrower than its accumulator: one pass, one rounding
      offset_path_wide_kernel<T><<<grid, pol::threads, 0, stream>>>(a);
      check_launch("offset_path_wide_kernel");
    }
  }
}

}  // namespace detail

// Offset generation on the device (SPEC step 1), the CUDA twin of cpu::offsets_forward: for every valid
// token, z = W x + bias (a tiled GEMM: tensor cores for 16-bit types, FMA otherwise; fixed order per row),
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
    detail::launch_offset_path(a, stream);
  }
  a.dw_part = reinterpret_cast<A*>(ws + at_dw);
  a.db_part = reinterpret_cast<A*>(ws + at_db);
  a.dweight = dweight;
  a.dbias = dbias;
  detail::launch_param_grads(a, shape, pp, stream);
}

}  // namespace cuda
}  // namespace talkconv
