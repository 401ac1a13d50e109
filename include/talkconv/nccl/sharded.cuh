// talkconv::nccl: the CUDA layer on sequences sharded along time over the ranks of an NCCL communicator.
// Optional: needs <nccl.h> (cmake/FindNCCL.cmake, NCCL::NCCL); talkconv/cuda/talkconv.cuh does not.
//
// Rank r owns tokens [bounds[r], bounds[r + 1]) of every sequence; every rank passes the same bounds.
// Its x and dx buffers hold shard.rows() rows (talkconv::make_shard's halo around its own rows), y, dy
// and saved_offsets its own tokens only, as for the CPU layer (talkconv/shard.hpp, talkconv/mpi/sharded.hpp).
//
//   nccl::halo_plan plan(layer.window(), dropout, bounds, rank, B, C, layout, sizeof(T));  // host only
//   nccl::forward(layer, plan, comm, ws, ws_bytes, fa, stream);   // halo rows in, then the layer
//   nccl::backward(layer, plan, comm, ws, ws_bytes, ba, stream);  // the layer, then halo dx rows back
//
// The exchange is ncclSend / ncclRecv inside ncclGroupStart / ncclGroupEnd on the caller's stream and
// communicator, in and out of the caller's buffers (tbc: one message per peer and run; btc: one per
// sequence). Two-phase workspace (null = size query, no communication); no allocation, no
// synchronization. Not overlapped: the kernels run after the halo arrives, on the same stream.
// Bytes per rank per layer call, each way: (halo.left + halo.right) * B * C * sizeof(T) forward (x rows),
// the same backward (dx rows).
#pragma once

#include "talkconv/cuda/talk_conv.cuh"

#include <nccl.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>
#include <vector>

namespace talkconv {
namespace nccl {

namespace detail {

inline void check(ncclResult_t r, const char* call) {
  if (r != ncclSuccess) talkconv::detail::fail(status::comm_error, call, call, " failed: ", ncclGetErrorString(r));
}

// NCCL's type for T's dW / dbias reduction.
template <class T>
ncclDataType_t nccl_type() {
  if constexpr (std::is_same<T, float>::value)
    return ncclFloat32;
  else if constexpr (std::is_same<T, double>::value)
    return ncclFloat64;
  else if constexpr (std::is_same<T, __half>::value)
    return ncclFloat16;
  else if constexpr (std::is_same<T, __nv_bfloat16>::value)
    return ncclBfloat16;
  else
    talkconv::detail::fail(status::comm_error, "dweight", "NCCL has no reduction type for this storage type");
}

}  // namespace detail

// Who sends which rows to whom (host only, no communication): the same on every rank up to `rank`.
class halo_plan {
 public:
  halo_plan(const window_params& w, const dropout_params& d, std::vector<index_t> bounds, int rank, index_t B,
            index_t C, layout lay, std::size_t elem_bytes)
      : bounds_(std::move(bounds)), B_(B), C_(C), lay_(lay), elem_(elem_bytes) {
    talkconv::detail::validate_bounds(bounds_);
    if (rank < 0 || rank + 1 >= static_cast<int>(bounds_.size()))
      talkconv::detail::fail(status::invalid_shape, "rank", "rank ", rank, " has no shard among ", bounds_.size() - 1);
    shard_ = make_shard(w, d, bounds_[static_cast<std::size_t>(rank)], bounds_[static_cast<std::size_t>(rank) + 1],
                        bounds_.back());
    ex_ = exchange_of(w, d, bounds_, rank);
  }
  const shard_params& shard() const { return shard_; }
  const shard_exchange& exchange() const { return ex_; }
  index_t halo_bytes() const { return bytes(ex_.halo); }    // received forward, sent back backward
  index_t owned_bytes() const { return bytes(ex_.owned); }  // sent forward, received back backward
  index_t B() const { return B_; }
  index_t C() const { return C_; }
  layout lay() const { return lay_; }
  std::size_t elem_bytes() const { return elem_; }

  // ncclSend (send) or ncclRecv of `runs` rows of a buffer of shard().rows() rows at `buf`; to or from
  // `packed` instead when given (the runs one after the other, tbc [rows][B][C], btc [B][rows][C]).
  void post(bool send, const std::vector<shard_run>& runs, void* buf, void* packed, ncclComm_t comm,
            cudaStream_t stream) const {
    const index_t row_bytes = C_ * index_t(elem_);
    const seq_strides s = strides_of(lay_, shard_.rows(), B_, C_);
    char* base = static_cast<char*>(buf);
    char* pk = static_cast<char*>(packed);
    for (const shard_run& r : runs) {
      const int pieces = lay_ == layout::tbc ? 1 : static_cast<int>(B_);
      const std::size_t piece = std::size_t(r.rows * row_bytes * (lay_ == layout::tbc ? B_ : 1));
      for (int b = 0; b < pieces; ++b) {
        char* at = pk ? pk : base + (r.row * s.t + b * s.b) * index_t(elem_);
        if (send)
          detail::check(ncclSend(at, piece, ncclUint8, r.peer, comm, stream), "ncclSend");
        else
          detail::check(ncclRecv(at, piece, ncclUint8, r.peer, comm, stream), "ncclRecv");
        if (pk) pk += piece;
      }
    }
  }

 private:
  index_t bytes(const std::vector<shard_run>& v) const {
    index_t n = 0;
    for (const shard_run& r : v) n += r.rows * B_ * C_ * index_t(elem_);
    return n;
  }
  std::vector<index_t> bounds_;
  index_t B_, C_;
  layout lay_;
  std::size_t elem_;
  shard_params shard_;
  shard_exchange ex_;
};

namespace detail {
template <class T>
void check_plan(const halo_plan& plan, const seq_shape& s) {
  if (plan.B() != s.B || plan.C() != s.C || plan.lay() != s.lay || plan.elem_bytes() != sizeof(T))
    talkconv::detail::fail(status::invalid_shape, "plan", "the halo plan was made for B = ", plan.B(),
                           ", C = ", plan.C(), ", layout ", static_cast<int>(plan.lay()), ", ", plan.elem_bytes(),
                           "-byte elements; the call has B = ", s.B, ", C = ", s.C, ", layout ",
                           static_cast<int>(s.lay), ", ", sizeof(T), "-byte elements");
}
}  // namespace detail

// Forward of the sharded layer on the device. a.x: this rank's buffer of shard.rows() rows (device) with
// its own rows filled; the halo rows are received into it (writable). Collective over comm: every rank
// calls it for the same step. Workspace: cuda::talk_conv's shard forward's.
template <class T, int Heads>
void forward(const cuda::talk_conv<T, Heads>& layer, const halo_plan& plan, ncclComm_t comm, void* workspace,
             std::size_t& workspace_bytes, const forward_args<T>& a, cudaStream_t stream) {
  detail::check_plan<T>(plan, a.shape);
  std::size_t need = 0;
  layer.forward(nullptr, need, a, plan.shard(), stream);  // validates the call before any message
  if (cuda::detail::workspace_query(workspace, workspace_bytes, need)) return;
  talkconv::detail::require_pointer(a.x, "x");
  T* x = const_cast<T*>(a.x);  // documented: the caller's writable buffer
  detail::check(ncclGroupStart(), "ncclGroupStart");
  plan.post(false, plan.exchange().halo, x, nullptr, comm, stream);
  plan.post(true, plan.exchange().owned, x, nullptr, comm, stream);
  detail::check(ncclGroupEnd(), "ncclGroupEnd");
  layer.forward(workspace, workspace_bytes, a, plan.shard(), stream);
}

// dW and dbias after backward: this rank's partial sums (default), or summed over comm with
// ncclAllReduce (float, double, __half, __nv_bfloat16; order NCCL's: fixed for a fixed topology).
enum class param_grads { partial, allreduce };

// Backward of the sharded layer on the device: the layer's shard backward (a.x the buffer forward
// filled, a.dx shard.rows() rows), then dx's halo rows go to their owners and the peers' shares of this
// rank's rows come back into the workspace and are added to dx in ascending peer order (one rounding
// each). Workspace: the layer's shard backward's plus the received rows.
template <class T, int Heads>
void backward(const cuda::talk_conv<T, Heads>& layer, const halo_plan& plan, ncclComm_t comm, void* workspace,
              std::size_t& workspace_bytes, const backward_args<T>& a, cudaStream_t stream,
              param_grads reduce = param_grads::partial) {
  detail::check_plan<T>(plan, a.shape);
  std::size_t inner = 0;
  layer.backward(nullptr, inner, a, plan.shard(), stream);
  cuda::detail::workspace_plan wp;
  const std::size_t at_in = wp.add(inner);
  const std::size_t at_rx = wp.add(std::size_t(plan.owned_bytes()));
  if (cuda::detail::workspace_query(workspace, workspace_bytes, wp.bytes)) return;
  char* ws = static_cast<char*>(workspace);
  layer.backward(ws + at_in, inner, a, plan.shard(), stream);
  T* rx = reinterpret_cast<T*>(ws + at_rx);
  detail::check(ncclGroupStart(), "ncclGroupStart");
  plan.post(true, plan.exchange().halo, a.dx, nullptr, comm, stream);
  if (!plan.exchange().owned.empty()) plan.post(false, plan.exchange().owned, nullptr, rx, comm, stream);
  detail::check(ncclGroupEnd(), "ncclGroupEnd");
  const seq_strides sx = strides_of(a.shape.lay, plan.shard().rows(), a.shape.B, a.shape.C);
  for (const shard_run& r : plan.exchange().owned) {  // ascending peer: a fixed order of additions
    const index_t n = r.rows * a.shape.B * a.shape.C;
    cuda::detail::add_shard_rows_kernel<T>
        <<<cuda::detail::grid_for(n, cuda::detail::row_threads), cuda::detail::row_threads, 0, stream>>>(
            a.dx, rx, r.row, r.rows, a.shape.B, a.shape.C, sx.t, sx.b, static_cast<int>(a.shape.lay));
    cuda::detail::check_launch("add_shard_rows_kernel");
    rx += n;
  }
  if (reduce == param_grads::allreduce) {
    const index_t P = layer.num_offsets();
    detail::check(ncclGroupStart(), "ncclGroupStart");
    detail::check(
        ncclAllReduce(a.dweight, a.dweight, std::size_t(P * a.shape.C), detail::nccl_type<T>(), ncclSum, comm, stream),
        "ncclAllReduce(dweight)");
    if (a.dbias)
      detail::check(ncclAllReduce(a.dbias, a.dbias, std::size_t(P), detail::nccl_type<T>(), ncclSum, comm, stream),
                    "ncclAllReduce(dbias)");
    detail::check(ncclGroupEnd(), "ncclGroupEnd");
  }
}

}  // namespace nccl
}  // namespace talkconv
