// Building block 2 (CPU): offset generation o = dropout(sigmoid(W x + bias)), forward and backward.
#pragma once

#include "talkconv/cpu/convert.hpp"
#include "talkconv/cpu/parallel.hpp"
#include "talkconv/detail/dropout.hpp"
#include "talkconv/detail/math.hpp"
#include "talkconv/detail/tile_plan.hpp"
#include "talkconv/params.hpp"
#include "talkconv/traits.hpp"

#include "talkconv/detail/eigen.hpp"

#include <algorithm>
#include <type_traits>
#include <vector>

namespace talkconv {
namespace cpu {
namespace detail {

template <class A>
using row_matrix = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class A>
using const_strided_map = Eigen::Map<const row_matrix<A>, 0, Eigen::OuterStride<>>;
template <class A>
using strided_map = Eigen::Map<row_matrix<A>, 0, Eigen::OuterStride<>>;

// Parameters widened once per call to the accumulator type (a no-op view for float and double).
template <class T>
struct acc_params {
  using A = acc_t<T>;
  std::vector<A> storage;
  const A* weight = nullptr;  // [P, C]
  const A* bias = nullptr;    // [P], may be null

  acc_params(const T* w, const T* b, index_t P, index_t C) {
    if constexpr (std::is_same<T, A>::value) {
      weight = w;
      bias = b;
    } else {
      storage.resize(static_cast<size_t>(P * C + (b ? P : 0)));
      row_convert<T>::widen(w, P * C, storage.data());
      if (b) row_convert<T>::widen(b, P, storage.data() + P * C);
      weight = storage.data();
      bias = b ? storage.data() + P * C : nullptr;
    }
  }
};

// `rows` rows of x, `ld` elements apart, as an A matrix: mapped in place when T is A, else widened
// into `tmp`.
template <class T, class A = acc_t<T>>
const_strided_map<A> rows_as_acc(const T* x, index_t ld, index_t rows, index_t C, std::vector<A>& tmp) {
  if constexpr (std::is_same<T, A>::value) {
    (void)tmp;
    return const_strided_map<A>(x, rows, C, Eigen::OuterStride<>(ld));
  } else {
    tmp.resize(static_cast<size_t>(rows * C));
    for (index_t r = 0; r < rows; ++r) row_convert<T>::widen(x + r * ld, C, tmp.data() + r * C);
    return const_strided_map<A>(tmp.data(), rows, C, Eigen::OuterStride<>(C));
  }
}

// z = x W^T + bias for `rows` rows of x (`ld` apart): an Eigen GEMM in the accumulator type.
// z is rows x P, row-major, `ldz` apart.
template <class T, class A = acc_t<T>>
void project_rows(const T* x, index_t ld, index_t rows, index_t C, const acc_params<T>& prm, index_t P, A* z,
                  index_t ldz, std::vector<A>& tmp) {
  const auto X = rows_as_acc<T>(x, ld, rows, C, tmp);
  const Eigen::Map<const row_matrix<A>> W(prm.weight, P, C);
  strided_map<A> Z(z, rows, P, Eigen::OuterStride<>(ldz));
  Z.noalias() = X * W.transpose();
  if (prm.bias) Z.rowwise() += Eigen::Map<const Eigen::Matrix<A, 1, Eigen::Dynamic>>(prm.bias, P);
}

// SPEC step 1 for token (t, b) given its projection z (P values): o_pre = sigmoid(z) and
// o = o_pre * m / (1 - p). Either output may be null.
template <class A>
void activate_offsets(const A* z, index_t P, index_t t, index_t b, const dropout_params& d, A* o_pre, A* o) {
  const bool active = d.active();
  for (index_t j = 0; j < P; ++j) {
    const A s = talkconv::detail::sigmoid<A>(z[j]);
    if (o_pre) o_pre[j] = s;
    if (o) o[j] = s * talkconv::detail::dropout_scale<A>(active, d.seed, t, b, j, d.p);
  }
}

// SPEC backward, offsets to parameters, for token (t, b): dz = d_offsets * m / (1 - p) * o_pre (1 - o_pre).
template <class A>
void offsets_pre_grad(const A* d_off, const A* o_pre, index_t P, index_t t, index_t b, const dropout_params& d,
                      A* dz) {
  const bool active = d.active();
  for (index_t j = 0; j < P; ++j)
    dz[j] = talkconv::detail::offset_pre_grad<A>(
        d_off[j], talkconv::detail::dropout_scale<A>(active, d.seed, t, b, j, d.p), o_pre[j]);
}

// The offset path's share of dx for channels [c0, c0 + cn) of one token: row[c] += sum_j dz[j] W[j, c0 + c].
template <class A>
void add_offset_path(const A* dz, index_t P, const A* weight, index_t C, index_t c0, index_t cn, A* row) {
  for (index_t j = 0; j < P; ++j) {
    const A g = dz[j];
    if (g == A(0)) continue;
    const A* wr = weight + j * C + c0;
    for (index_t c = 0; c < cn; ++c) row[c] += g * wr[c];
  }
}

// dL/dW and dL/dbias from dz (layout of the offsets, zero rows ignored past each length) and x:
//   dW = sum_{b, t < n_b} dz[t, b]^T x[t, b],  dbias = sum_{b, t < n_b} dz[t, b].
// Column blocks of dW are independent tasks, each summing every row in the same order.
// x_strides, when given, replace x's strides from shape (a time shard's x holds halo rows too).
template <class T, class A = acc_t<T>>
void param_grads(const seq_shape& shape, index_t P, const index_t* lengths, const A* dz, const T* x, T* dweight,
                 T* dbias, const seq_strides* x_strides = nullptr) {
  const seq_strides sx = x_strides ? *x_strides : shape.strides(shape.C), sz = shape.strides(P);
  constexpr index_t col_block = 64, row_chunk = 256;
  const index_t blocks = talkconv::detail::ceil_div(shape.C, col_block);
  parallel_tasks(
      blocks, detail::saturating_mul(shape.rows() * shape.C, P) / 8, [] { return std::vector<A>{}; },
      [&](index_t blk, std::vector<A>& tmp) {
        const index_t c0 = blk * col_block, cn = std::min(col_block, shape.C - c0);
        row_matrix<A> acc = row_matrix<A>::Zero(P, cn);
        for (index_t b = 0; b < shape.B; ++b) {
          const index_t n = lengths ? lengths[b] : shape.T;
          for (index_t t0 = 0; t0 < n; t0 += row_chunk) {
            const index_t rows = std::min(row_chunk, n - t0);
            const const_strided_map<A> Dz(dz + b * sz.b + t0 * sz.t, rows, P, Eigen::OuterStride<>(sz.t));
            acc.noalias() += Dz.transpose() * rows_as_acc<T>(x + b * sx.b + t0 * sx.t + c0, sx.t, rows, cn, tmp);
          }
        }
        for (index_t p = 0; p < P; ++p)
          for (index_t c = 0; c < cn; ++c) dweight[p * shape.C + c0 + c] = from_acc<T>(acc(p, c));
      });
  if (dbias) {
    std::vector<A> acc(static_cast<size_t>(P), A(0));
    for (index_t b = 0; b < shape.B; ++b) {
      const index_t n = lengths ? lengths[b] : shape.T;
      for (index_t t = 0; t < n; ++t)
        for (index_t p = 0; p < P; ++p) acc[static_cast<size_t>(p)] += dz[b * sz.b + t * sz.t + p];
    }
    for (index_t p = 0; p < P; ++p) dbias[p] = from_acc<T>(acc[static_cast<size_t>(p)]);
  }
}

template <class T>
void validate_offsets_call(const seq_shape& shape, const window_params& w, const dropout_params& d,
                           const index_t* lengths) {
  talkconv::detail::validate_problem(shape, w, lengths);
  talkconv::detail::validate_bytes(shape, w, sizeof(T), sizeof(acc_t<T>));
  talkconv::detail::validate_weight(w, shape.C, sizeof(T), sizeof(acc_t<T>));
  talkconv::detail::validate_dropout(d);
}

}  // namespace detail

// Offset generation (SPEC step 1): for every valid token, z = W x + bias (an Eigen GEMM in acc_t<T>),
//   offsets_pre = sigmoid(z)                 (what backward needs; may be null)
//   offsets     = offsets_pre * m / (1 - p)  (the window's offsets; m from the dropout mask in training)
// x: layout of shape, width C. weight: [P, C] row-major. bias: [P] or null. Outputs: layout of shape,
// width P; rows t >= n_b are set to 0. Throws talkconv::error on bad input, before touching memory.
template <class T>
void offsets_forward(const seq_shape& shape, const window_params& w, const T* x, const T* weight, const T* bias,
                     const dropout_params& dropout, acc_t<T>* offsets, acc_t<T>* offsets_pre = nullptr,
                     const index_t* lengths = nullptr) {
  using A = acc_t<T>;
  detail::validate_offsets_call<T>(shape, w, dropout, lengths);
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(weight, "weight");
  talkconv::detail::require_pointer(offsets, "offsets");
  const index_t P = w.num_offsets();
  const detail::acc_params<T> prm(weight, bias, P, shape.C);
  const seq_strides sx = shape.strides(shape.C), so = shape.strides(P);
  const index_t tile = talkconv::detail::cpu_tile_length(w.window_len(), shape.T, shape.B);
  const index_t tiles = talkconv::detail::ceil_div(shape.T, tile);
  struct scratch {
    std::vector<A> tmp, z;
  };
  detail::parallel_tasks(
      shape.B * tiles, detail::saturating_mul(shape.rows() * shape.C, P) / 8, [] { return scratch{}; },
      [&](index_t task, scratch& s) {
        const index_t b = task / tiles, t0 = (task % tiles) * tile, t1 = std::min(t0 + tile, shape.T);
        const index_t n = lengths ? lengths[b] : shape.T, tv1 = std::max(t0, std::min(t1, n));
        s.z.resize(static_cast<size_t>(tile * P));
        constexpr index_t block = 64;  // the layer's forward projects the same blocks: the same bits
        for (index_t u = t0; u < tv1; u += block)
          detail::project_rows(x + b * sx.b + u * sx.t, sx.t, std::min(block, tv1 - u), shape.C, prm, P,
                               s.z.data() + (u - t0) * P, P, s.tmp);
        for (index_t t = t0; t < t1; ++t) {
          A* o = offsets + t * so.t + b * so.b;
          A* op = offsets_pre ? offsets_pre + t * so.t + b * so.b : nullptr;
          if (t < tv1) {
            detail::activate_offsets(s.z.data() + (t - t0) * P, P, t, b, dropout, op, o);
          } else {
            std::fill(o, o + P, A(0));
            if (op) std::fill(op, op + P, A(0));
          }
        }
      });
}

// Offset generation backward. Given offsets_pre (from offsets_forward) and d_offsets = dL/d(offsets)
// (e.g. from window_backward), with dz = d_offsets * m / (1 - p) * o_pre (1 - o_pre):
//   dx      += W^T dz   (accumulated into dx, layout of x; may be null to skip)
//   dweight  = sum dz x^T  ([P, C]),  dbias = sum dz  ([P]; may be null)
// Rows t >= n_b contribute nothing. Deterministic whatever the thread count.
template <class T>
void offsets_backward(const seq_shape& shape, const window_params& w, const T* x, const T* weight,
                      const acc_t<T>* offsets_pre, const acc_t<T>* d_offsets, const dropout_params& dropout, T* dx,
                      T* dweight, T* dbias, const index_t* lengths = nullptr) {
  using A = acc_t<T>;
  detail::validate_offsets_call<T>(shape, w, dropout, lengths);
  talkconv::detail::require_pointer(x, "x");
  talkconv::detail::require_pointer(weight, "weight");
  talkconv::detail::require_pointer(offsets_pre, "offsets_pre");
  talkconv::detail::require_pointer(d_offsets, "d_offsets");
  talkconv::detail::require_pointer(dweight, "dweight");
  const index_t P = w.num_offsets();
  const detail::acc_params<T> prm(weight, nullptr, P, shape.C);
  const seq_strides sx = shape.strides(shape.C), so = shape.strides(P);
  std::vector<A> dz(static_cast<size_t>(shape.rows() * P), A(0));
  detail::parallel_tasks(
      shape.B, detail::saturating_mul(shape.rows() * shape.C, P) / 8, [] { return std::vector<A>{}; },
      [&](index_t b, std::vector<A>& row) {
        const index_t n = lengths ? lengths[b] : shape.T;
        for (index_t t = 0; t < n; ++t) {
          const index_t r = t * so.t + b * so.b;
          detail::offsets_pre_grad(d_offsets + r, offsets_pre + r, P, t, b, dropout, dz.data() + r);
          if (dx) {
            T* dxr = dx + t * sx.t + b * sx.b;
            row.resize(static_cast<size_t>(shape.C));
            detail::row_convert<T>::widen(dxr, shape.C, row.data());
            detail::add_offset_path(dz.data() + r, P, prm.weight, shape.C, 0, shape.C, row.data());
            detail::row_convert<T>::narrow(row.data(), shape.C, dxr);
          }
        }
      });
  detail::param_grads<T>(shape, P, lengths, dz.data(), x, dweight, dbias);
}

}  // namespace cpu
}  // namespace talkconv
