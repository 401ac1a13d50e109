// talkconv::mpi: the TaLK layer on sequences sharded along time over the ranks of an MPI communicator
// (CPU). Optional: needs <mpi.h> (find_package(MPI), link MPI::MPI_CXX); talkconv/talkconv.hpp does not.
//
// Rank r owns tokens [t_begin_r, t_end_r) of every sequence (the ranks' ranges tile [0, T) in rank
// order) and holds them in an extended buffer of shard.rows() rows: shard.halo.left rows before its own
// ones, shard.halo.right after (talkconv::make_shard; see talkconv/shard.hpp). A halo may be longer
// than a neighbour's shard: its rows then come from several ranks (multi-hop), each message straight
// into or out of the caller's buffers (MPI datatypes, no packing).
//
//   halo_plan plan(comm, layer.window(), dropout, shard, B, C, layout, sizeof(T));  // collective, once
//   mpi::forward(layer, plan, fa);   // receives x's halo rows, then the shard's forward
//   mpi::backward(layer, plan, ba);  // the shard's backward, returns dx's halo rows to their owners
//
// MPI is called only from the calling thread, outside the OpenMP regions of the layer: initialize MPI
// with MPI_Init_thread(..., MPI_THREAD_FUNNELED, ...) when the layer runs on OpenMP threads.
//
// Bytes per rank per layer call, each way: (halo.left + halo.right) * B * C * sizeof(T) in forward (x
// rows in), the same in backward (dx rows back out), fewer at the sequence ends.
#pragma once

#include "talkconv/talkconv.hpp"

// Only MPI's C API is used: leave out the deprecated C++ bindings (their casts warn with -Wextra).
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace talkconv {
namespace mpi {

namespace detail {

inline void check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  talkconv::detail::fail(status::comm_error, call, call, " failed: ", std::string(msg, static_cast<size_t>(len)));
}

inline int to_int(index_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    talkconv::detail::fail(status::size_overflow, what, what, " = ", v, " exceeds an MPI int count");
  return static_cast<int>(v);
}

}  // namespace detail

// Who sends which rows to whom, and the MPI datatypes that address them in place. Collective over
// comm (one MPI_Allgather); every rank passes the same window, dropout (p and training), T, B, C,
// layout and element size. Reuse it for every call with that shard and shape; not copyable.
class halo_plan {
 public:
  // One run of rows exchanged with one peer: local rows [row, row + rows) of this rank's buffer.
  struct run {
    int peer;
    index_t row;
    index_t rows;
    MPI_Datatype in_place;  // those rows of an x / dx buffer of shard.rows() rows
    MPI_Datatype packed;    // the same elements, contiguous (the backward's receive buffer)
  };

  halo_plan(MPI_Comm comm, const window_params& w, const dropout_params& d, const shard_params& shard, index_t B,
            index_t C, layout lay, size_t elem_bytes)
      : comm_(comm), shard_(shard), B_(B), C_(C), lay_(lay), elem_(elem_bytes) {
    detail::check(MPI_Comm_rank(comm, &rank_), "MPI_Comm_rank");
    detail::check(MPI_Comm_size(comm, &size_), "MPI_Comm_size");
    // Every rank's range and T, in rank order: the ranges must tile [0, T).
    const long long mine[3] = {shard.t_begin, shard.t_end, shard.T};
    std::vector<long long> all(static_cast<size_t>(3 * size_));
    detail::check(MPI_Allgather(mine, 3, MPI_LONG_LONG, all.data(), 3, MPI_LONG_LONG, comm), "MPI_Allgather");
    std::vector<index_t> bounds{0};
    for (int r = 0; r < size_; ++r) {
      const index_t b = all[static_cast<size_t>(3 * r)], e = all[static_cast<size_t>(3 * r + 1)],
                    T = all[static_cast<size_t>(3 * r + 2)];
      if (T != shard.T || b != bounds.back() || e <= b || (r == size_ - 1 && e != T))
        talkconv::detail::fail(status::invalid_shape, "shard",
                               "the ranks' shards must tile [0, T) in rank order with one T: rank ", r, " has [", b,
                               ", ", e, ") of T = ", T, " where [", bounds.back(), ", ...) of T = ", shard.T,
                               (r == size_ - 1 ? " ending at T" : ""), " was expected");
      bounds.push_back(e);
    }
    const shard_params me = make_shard(w, d, shard.t_begin, shard.t_end, shard.T);
    if (me.halo.left != shard.halo.left || me.halo.right != shard.halo.right)
      talkconv::detail::fail(status::invalid_shape, "shard.halo", "shard halo (", shard.halo.left, ", ",
                             shard.halo.right, ") differs from (", me.halo.left, ", ", me.halo.right,
                             ") that this window and dropout need (use talkconv::make_shard)");
    detail::to_int(checked_row_bytes(), "C*sizeof(T)");
    // My halo rows from their owners; the rows of mine that a peer's halo holds, to that peer.
    const shard_exchange ex = exchange_of(w, d, bounds, rank_);
    for (const shard_run& r : ex.halo) halo_.push_back(make_run(r.peer, r.row, r.rows));
    for (const shard_run& r : ex.owned) owned_.push_back(make_run(r.peer, r.row, r.rows));
  }
  halo_plan(const halo_plan&) = delete;
  halo_plan& operator=(const halo_plan&) = delete;
  ~halo_plan() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;  // MPI freed everything (a plan outliving MPI_Finalize)
    for (auto* v : {&halo_, &owned_})
      for (run& r : *v) {
        MPI_Type_free(&r.in_place);
        MPI_Type_free(&r.packed);
      }
  }

  const shard_params& shard() const { return shard_; }
  MPI_Comm comm() const { return comm_; }
  int rank() const { return rank_; }
  const std::vector<run>& halo_runs() const { return halo_; }    // rows this rank receives (forward)
  const std::vector<run>& owned_runs() const { return owned_; }  // own rows a peer's halo holds
  // Bytes this rank receives in forward (and sends back in backward); sends in forward (receives back).
  index_t halo_bytes() const { return bytes(halo_); }
  index_t owned_bytes() const { return bytes(owned_); }
  index_t B() const { return B_; }
  index_t C() const { return C_; }
  layout lay() const { return lay_; }
  size_t elem_bytes() const { return elem_; }

 private:
  index_t checked_row_bytes() const { return C_ * static_cast<index_t>(elem_); }
  index_t bytes(const std::vector<run>& v) const {
    index_t n = 0;
    for (const run& r : v) n += r.rows * B_ * checked_row_bytes();
    return n;
  }
  // Rows [row, row + rows) of a buffer of shard.rows() rows. tbc: one block of rows * B rows of C;
  // btc: B blocks of `rows` rows, shard.rows() rows apart. The packed type has the same element order.
  run make_run(int peer, index_t row, index_t rows) const {
    run r{peer, row, rows, MPI_DATATYPE_NULL, MPI_DATATYPE_NULL};
    MPI_Datatype line;
    detail::check(MPI_Type_contiguous(detail::to_int(checked_row_bytes(), "C*sizeof(T)"), MPI_BYTE, &line),
                  "MPI_Type_contiguous");
    const int n = detail::to_int(rows * B_, "halo rows * B");
    if (lay_ == layout::tbc) {
      detail::check(MPI_Type_contiguous(n, line, &r.in_place), "MPI_Type_contiguous");
    } else {
      const MPI_Aint stride = static_cast<MPI_Aint>(shard_.rows() * checked_row_bytes());
      detail::check(MPI_Type_create_hvector(detail::to_int(B_, "B"), detail::to_int(rows, "halo rows"), stride, line,
                                            &r.in_place),
                    "MPI_Type_create_hvector");
    }
    detail::check(MPI_Type_contiguous(n, line, &r.packed), "MPI_Type_contiguous");
    detail::check(MPI_Type_commit(&r.in_place), "MPI_Type_commit");
    detail::check(MPI_Type_commit(&r.packed), "MPI_Type_commit");
    MPI_Type_free(&line);
    return r;
  }

  MPI_Comm comm_;
  shard_params shard_;
  index_t B_, C_;
  layout lay_;
  size_t elem_;
  int rank_ = 0, size_ = 1;
  std::vector<run> halo_, owned_;
};

namespace detail {

// Where the buffer of a run's rows starts: local row `row`, sequence 0.
template <class T>
T* run_origin(T* buf, const halo_plan& plan, index_t row) {
  return buf + row * strides_of(plan.lay(), plan.shard().rows(), plan.B(), plan.C()).t;
}

template <class T>
void check_plan(const halo_plan& plan, const seq_shape& s) {
  if (plan.B() != s.B || plan.C() != s.C || plan.lay() != s.lay || plan.elem_bytes() != sizeof(T))
    talkconv::detail::fail(status::invalid_shape, "plan", "the halo plan was made for B = ", plan.B(),
                           ", C = ", plan.C(), ", layout ", static_cast<int>(plan.lay()), ", ", plan.elem_bytes(),
                           "-byte elements; the call has B = ", s.B, ", C = ", s.C, ", layout ",
                           static_cast<int>(s.lay), ", ", sizeof(T), "-byte elements");
}

inline void wait_all(std::vector<MPI_Request>& reqs) {
  if (!reqs.empty()) check(MPI_Waitall(static_cast<int>(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
  reqs.clear();
}

inline constexpr int tag_x = 0x7a1c, tag_dx = 0x7a1d;

}  // namespace detail

// Forward of the sharded layer (CPU). a.shape.T = plan.shard().own(); a.x points at this rank's buffer
// of shard.rows() rows with its own rows filled: the halo rows are received into it here (so it must be
// writable), straight from the owners' buffers. y and saved_offsets: own tokens only. lengths: global.
// The owners' rows go out with MPI_Isend and the halo rows come in with MPI_Irecv; the tiles that read
// no halo row run while they are in flight, the others after MPI_Waitall. Collective over the plan's
// communicator (every rank calls it, for the same step).
template <class T, int Heads>
void forward(const talk_conv<T, Heads>& layer, const halo_plan& plan, const forward_args<T>& a) {
  detail::check_plan<T>(plan, a.shape);
  talkconv::detail::require_pointer(a.x, "x");
  T* x = const_cast<T*>(a.x);  // documented: the caller's writable buffer
  std::vector<MPI_Request> recvs, sends;
  for (const auto& r : plan.halo_runs()) {
    recvs.emplace_back();
    detail::check(
        MPI_Irecv(detail::run_origin(x, plan, r.row), 1, r.in_place, r.peer, detail::tag_x, plan.comm(), &recvs.back()),
        "MPI_Irecv");
  }
  for (const auto& r : plan.owned_runs()) {
    sends.emplace_back();
    detail::check(
        MPI_Isend(detail::run_origin(x, plan, r.row), 1, r.in_place, r.peer, detail::tag_x, plan.comm(), &sends.back()),
        "MPI_Isend");
  }
  try {
    layer.forward(a, plan.shard(), [&] { detail::wait_all(recvs); });
  } catch (...) {
    // Validation failed before any tile ran: finish the exchange so no request dangles.
    detail::wait_all(recvs);
    detail::wait_all(sends);
    throw;
  }
  detail::wait_all(recvs);
  detail::wait_all(sends);
}

// dW and dbias after backward: each rank's partial sum over its own tokens (the default: reduce them
// yourself, e.g. together with the other parameters' gradients), or summed over the communicator here
// with MPI_Allreduce (float / double in their own MPI type, 16-bit types widened to float and rounded
// back). The reduction's order is MPI's: deterministic run to run for a fixed P and MPI library, but
// not the single-process sum's order.
enum class param_grads { partial, allreduce };

// Backward of the sharded layer (CPU). a.x: the buffer forward received the halo into (its halo rows
// are read again); a.dx: a buffer of shard.rows() rows, overwritten; a.dy and a.saved_offsets: own
// tokens only. The tiles that write dx's halo rows run first; those rows then go back to their owners
// (MPI_Isend) while the rest runs, and the contributions the peers send for this rank's rows are
// received (MPI_Irecv into one scratch buffer) and added to its dx rows in ascending peer rank order,
// each addition rounded once in T. On return dx's own rows are the whole call's dx rows (up to that
// rounding); its halo rows keep this rank's share (already sent). Collective over the communicator.
template <class T, int Heads>
void backward(const talk_conv<T, Heads>& layer, const halo_plan& plan, const backward_args<T>& a,
              param_grads reduce = param_grads::partial) {
  using A = acc_t<T>;
  detail::check_plan<T>(plan, a.shape);
  talkconv::detail::require_pointer(a.dx, "dx");
  const index_t B = a.shape.B, C = a.shape.C;
  std::vector<index_t> offset;  // of each owned run in `incoming`
  index_t total = 0;
  for (const auto& r : plan.owned_runs()) offset.push_back(total), total += r.rows * B * C;
  std::vector<T> incoming(static_cast<size_t>(total));
  std::vector<MPI_Request> recvs, sends;
  for (size_t i = 0; i < plan.owned_runs().size(); ++i) {
    const auto& r = plan.owned_runs()[i];
    recvs.emplace_back();
    detail::check(
        MPI_Irecv(incoming.data() + offset[i], 1, r.packed, r.peer, detail::tag_dx, plan.comm(), &recvs.back()),
        "MPI_Irecv");
  }
  auto send_halo = [&] {
    for (const auto& r : plan.halo_runs()) {
      sends.emplace_back();
      detail::check(MPI_Isend(detail::run_origin(a.dx, plan, r.row), 1, r.in_place, r.peer, detail::tag_dx, plan.comm(),
                              &sends.back()),
                    "MPI_Isend");
    }
  };
  bool sent = false;
  try {
    layer.backward(a, plan.shard(), [&] { send_halo(), sent = true; });
  } catch (...) {
    if (!sent) send_halo();  // peers wait for these rows; what they get is undefined, the error is ours
    detail::wait_all(recvs);
    detail::wait_all(sends);
    throw;
  }
  detail::wait_all(recvs);
  // Add each peer's rows to ours (packed order: tbc [rows][B][C], btc [B][rows][C]), ascending peer.
  const seq_strides sx = strides_of(a.shape.lay, plan.shard().rows(), B, C);
  for (size_t i = 0; i < plan.owned_runs().size(); ++i) {
    const auto& r = plan.owned_runs()[i];
    const T* in = incoming.data() + offset[i];
    for (index_t t = 0; t < r.rows; ++t)
      for (index_t b = 0; b < B; ++b) {
        const T* src = in + (a.shape.lay == layout::tbc ? (t * B + b) : (b * r.rows + t)) * C;
        T* dst = a.dx + (r.row + t) * sx.t + b * sx.b;
        for (index_t c = 0; c < C; ++c) dst[c] = from_acc<T>(to_acc<T>(dst[c]) + to_acc<T>(src[c]));
      }
  }
  detail::wait_all(sends);
  if (reduce == param_grads::allreduce) {
    const index_t P = layer.num_offsets();
    auto reduce_vec = [&](T* v, index_t n) {
      if (v == nullptr) return;
      if constexpr (std::is_same<T, float>::value || std::is_same<T, double>::value) {
        detail::check(MPI_Allreduce(MPI_IN_PLACE, v, detail::to_int(n, "P*C"),
                                    std::is_same<T, float>::value ? MPI_FLOAT : MPI_DOUBLE, MPI_SUM, plan.comm()),
                      "MPI_Allreduce");
      } else {
        using W = std::conditional_t<std::is_same<A, double>::value, double, float>;
        std::vector<W> wide(static_cast<size_t>(n));
        for (index_t i = 0; i < n; ++i) wide[static_cast<size_t>(i)] = static_cast<W>(to_acc<T>(v[i]));
        detail::check(MPI_Allreduce(MPI_IN_PLACE, wide.data(), detail::to_int(n, "P*C"),
                                    std::is_same<W, float>::value ? MPI_FLOAT : MPI_DOUBLE, MPI_SUM, plan.comm()),
                      "MPI_Allreduce");
        for (index_t i = 0; i < n; ++i) v[i] = from_acc<T>(static_cast<A>(wide[static_cast<size_t>(i)]));
      }
    };
    reduce_vec(a.dweight, P * C);
    reduce_vec(a.dbias, P);
  }
}

}  // namespace mpi
}  // namespace talkconv
