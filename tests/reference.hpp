// An independent float64 reference of SPEC's TaLK convolution, written from its *direct form*.
//
// Nothing here uses talkconv's math: no prefix sums, no detail/math.hpp helpers, no tiles. The only
// piece of the library it reuses is the dropout mask talkconv::detail::dropout_keep, because SPEC makes
// the mask part of the contract (a pure function of (seed, t, b, offset index)).
//
// Every tensor here is a std::vector<double> in the canonical time-major order of SPEC:
//   x, y, dx, dy: [T, B, C] -> (t * B + b) * C + c
//   offsets:      [T, B, P] -> (t * B + b) * P + j   (rows 0..H-1 left, H..2H-1 right when bidirectional)
//   weight:       [P, C] row-major, bias: [P] (may be empty: no bias)
#pragma once

#include "talkconv/detail/dropout.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace ref {

using vec = std::vector<double>;

struct problem {
  long T = 1, B = 1, C = 1, H = 1, L = 0, M = 0;
  bool causal = false;
  std::vector<long> lengths;  // empty: every sequence has length T

  long n(long b) const { return lengths.empty() ? T : lengths[static_cast<size_t>(b)]; }
  long P() const { return causal ? H : 2 * H; }
  long K() const { return L + M + 1; }
  long R() const { return C / H; }
  size_t xi(long t, long b, long c) const { return static_cast<size_t>((t * B + b) * C + c); }
  size_t oi(long t, long b, long j) const { return static_cast<size_t>((t * B + b) * P() + j); }
  size_t x_size() const { return static_cast<size_t>(T * B * C); }
  size_t o_size() const { return static_cast<size_t>(T * B * P()); }

  std::string str() const {
    std::ostringstream os;
    os << "T=" << T << " B=" << B << " C=" << C << " H=" << H << " L=" << L << " M=" << M
       << (causal ? " causal" : " bidirectional") << " lengths=[";
    for (size_t i = 0; i < lengths.size(); ++i) os << (i ? "," : "") << lengths[i];
    os << "]";
    return os.str();
  }
};

// Offset dropout as SPEC step 1 states it: o <- o * m / (1 - p), m from the library's mask.
struct dropout {
  bool active = false;  // training && p > 0
  float p = 0.0f;       // the value the caller passes (the library takes p as float)
  std::uint64_t seed = 0;

  double scale(long t, long b, long j) const {
    if (!active) return 1.0;
    const bool keep = talkconv::detail::dropout_keep(seed, t, b, j, p);
    return keep ? 1.0 / (1.0 - static_cast<double>(p)) : 0.0;
  }
};

inline double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// SPEC step 1: z = W x[t,b] + bias, o_pre = sigmoid(z), o = o_pre * m / (1 - p). Rows t >= n_b are 0.
inline void offsets(const problem& pb, const vec& x, const vec& W, const vec& bias, const dropout& d, vec& o_pre,
                    vec& o) {
  o_pre.assign(pb.o_size(), 0.0);
  o.assign(pb.o_size(), 0.0);
  for (long b = 0; b < pb.B; ++b)
    for (long t = 0; t < pb.n(b); ++t)
      for (long j = 0; j < pb.P(); ++j) {
        double z = bias.empty() ? 0.0 : bias[static_cast<size_t>(j)];
        for (long c = 0; c < pb.C; ++c) z += W[static_cast<size_t>(j * pb.C + c)] * x[pb.xi(t, b, c)];
        const double s = sigmoid(z);
        o_pre[pb.oi(t, b, j)] = s;
        o[pb.oi(t, b, j)] = s * d.scale(t, b, j);
      }
}

// SPEC step 3: a_l = clamp(t - o_l L, 0, n - 1), a_r = clamp(t + o_r M, 0, n - 1) (causal: a_r = t).
struct bounds {
  double al, ar;
};
inline double clamp_bound(double v, long n) {
  if (std::isnan(v)) return v;
  return std::min(std::max(v, 0.0), static_cast<double>(n - 1));
}
inline bounds window_bounds(const problem& pb, long t, long b, const vec& o, long h) {
  const long n = pb.n(b);
  const double ol = o[pb.oi(t, b, h)];
  const double al = clamp_bound(static_cast<double>(t) - ol * static_cast<double>(pb.L), n);
  if (pb.causal) return {al, static_cast<double>(t)};
  const double orr = o[pb.oi(t, b, pb.H + h)];
  return {al, clamp_bound(static_cast<double>(t) + orr * static_cast<double>(pb.M), n)};
}
inline bool is_integer(double a) { return std::floor(a) == a; }

// SPEC step 4, the direct form:
//   y = ( sum_{tau=ceil(a_l)}^{floor(a_r)} x[tau] + (a_r - floor a_r) x[ceil a_r] + (ceil a_l - a_l) x[floor a_l] ) / K
// A NaN bound gives NaN for that head (no index is formed from it). y = 0 for t >= n_b.
inline vec window_forward(const problem& pb, const vec& x, const vec& o) {
  vec y(pb.x_size(), 0.0);
  const double K = static_cast<double>(pb.K());
  for (long b = 0; b < pb.B; ++b)
    for (long t = 0; t < pb.n(b); ++t)
      for (long h = 0; h < pb.H; ++h) {
        const bounds bd = window_bounds(pb, t, b, o, h);
        for (long c = h * pb.R(); c < (h + 1) * pb.R(); ++c) {
          if (std::isnan(bd.al) || std::isnan(bd.ar)) {
            y[pb.xi(t, b, c)] = std::numeric_limits<double>::quiet_NaN();
            continue;
          }
          const long lo = static_cast<long>(std::ceil(bd.al)), hi = static_cast<long>(std::floor(bd.ar));
          double s = 0.0;
          for (long tau = lo; tau <= hi; ++tau) s += x[pb.xi(tau, b, c)];
          if (!is_integer(bd.ar)) s += (bd.ar - std::floor(bd.ar)) * x[pb.xi(static_cast<long>(std::ceil(bd.ar)), b, c)];
          if (!is_integer(bd.al)) s += (std::ceil(bd.al) - bd.al) * x[pb.xi(static_cast<long>(std::floor(bd.al)), b, c)];
          y[pb.xi(t, b, c)] = s / K;
        }
      }
  return y;
}

// SPEC Backward, window part, straight from the direct form:
//   dx[tau] += (1/K) sum_t dy[t] w_t(tau): w = 1 on [ceil a_l, floor a_r], a_r - floor a_r at ceil a_r,
//              ceil a_l - a_l at floor a_l (fractional edges only);
//   d o_l = sum_{c in head} dy * d y / d o_l, with d y / d o_l = L * x[floor a_l] / K where a_l is
//   fractional (the derivative of (ceil a_l - a_l) x[floor a_l] / K times d a_l / d o_l = -L), 0 where
//   the bound is an integer or clamped; d o_r likewise with M * x[ceil a_r] / K.
inline void window_backward(const problem& pb, const vec& x, const vec& o, const vec& dy, vec& dx, vec& d_o) {
  dx.assign(pb.x_size(), 0.0);
  d_o.assign(pb.o_size(), 0.0);
  const double K = static_cast<double>(pb.K());
  for (long b = 0; b < pb.B; ++b)
    for (long t = 0; t < pb.n(b); ++t)
      for (long h = 0; h < pb.H; ++h) {
        const bounds bd = window_bounds(pb, t, b, o, h);
        const long lo = static_cast<long>(std::ceil(bd.al)), hi = static_cast<long>(std::floor(bd.ar));
        const bool frac_r = !is_integer(bd.ar), frac_l = !is_integer(bd.al);
        double dol = 0.0, dor = 0.0;
        for (long c = h * pb.R(); c < (h + 1) * pb.R(); ++c) {
          const double g = dy[pb.xi(t, b, c)];
          for (long tau = lo; tau <= hi; ++tau) dx[pb.xi(tau, b, c)] += g / K;
          if (frac_r) {
            const long i = static_cast<long>(std::ceil(bd.ar));
            dx[pb.xi(i, b, c)] += g * (bd.ar - std::floor(bd.ar)) / K;
            dor += g * static_cast<double>(pb.M) * x[pb.xi(i, b, c)] / K;
          }
          if (frac_l) {
            const long i = static_cast<long>(std::floor(bd.al));
            dx[pb.xi(i, b, c)] += g * (std::ceil(bd.al) - bd.al) / K;
            dol += g * static_cast<double>(pb.L) * x[pb.xi(i, b, c)] / K;
          }
        }
        d_o[pb.oi(t, b, h)] = dol;
        if (!pb.causal) d_o[pb.oi(t, b, pb.H + h)] = dor;
      }
}

// The layer: offsets then window.
inline vec layer_forward(const problem& pb, const vec& x, const vec& W, const vec& bias, const dropout& d,
                         vec* o_pre_out = nullptr) {
  vec o_pre, o;
  offsets(pb, x, W, bias, d, o_pre, o);
  if (o_pre_out) *o_pre_out = o_pre;
  return window_forward(pb, x, o);
}

// SPEC Backward, offsets to parameters and input, given d_o (dL/d offsets after dropout):
//   dz = d_o * m/(1-p) * o_pre (1 - o_pre); dW = sum dz x^T; dbias = sum dz; dx += W^T dz.
// dW_mag / db_mag (optional): the same sums over |terms|, the scale their rounding error is relative to.
inline void offsets_backward(const problem& pb, const vec& x, const vec& W, const vec& o_pre, const vec& d_o,
                             const dropout& d, vec& dx, vec& dW, vec& dbias, vec* dW_mag = nullptr,
                             vec* db_mag = nullptr) {
  dW.assign(static_cast<size_t>(pb.P() * pb.C), 0.0);
  dbias.assign(static_cast<size_t>(pb.P()), 0.0);
  if (dW_mag) dW_mag->assign(dW.size(), 0.0);
  if (db_mag) db_mag->assign(dbias.size(), 0.0);
  if (dx.size() != pb.x_size()) dx.assign(pb.x_size(), 0.0);
  for (long b = 0; b < pb.B; ++b)
    for (long t = 0; t < pb.n(b); ++t)
      for (long j = 0; j < pb.P(); ++j) {
        const double op = o_pre[pb.oi(t, b, j)];
        const double dz = d_o[pb.oi(t, b, j)] * d.scale(t, b, j) * op * (1.0 - op);
        dbias[static_cast<size_t>(j)] += dz;
        if (db_mag) (*db_mag)[static_cast<size_t>(j)] += std::fabs(dz);
        for (long c = 0; c < pb.C; ++c) {
          dW[static_cast<size_t>(j * pb.C + c)] += dz * x[pb.xi(t, b, c)];
          if (dW_mag) (*dW_mag)[static_cast<size_t>(j * pb.C + c)] += std::fabs(dz * x[pb.xi(t, b, c)]);
          dx[pb.xi(t, b, c)] += W[static_cast<size_t>(j * pb.C + c)] * dz;
        }
      }
}

inline void layer_backward(const problem& pb, const vec& x, const vec& W, const vec& bias, const dropout& d,
                           const vec& dy, vec& dx, vec& dW, vec& dbias, vec* dW_mag = nullptr, vec* db_mag = nullptr) {
  vec o_pre, o, d_o;
  offsets(pb, x, W, bias, d, o_pre, o);
  window_backward(pb, x, o, dy, dx, d_o);
  offsets_backward(pb, x, W, o_pre, d_o, d, dx, dW, dbias, dW_mag, db_mag);
}

// S[t] = scale * sum_{tau = start of t's segment}^{t} x[tau] (segment 0: the whole sequence).
inline vec prefix_sum(const problem& pb, const vec& x, double scale, long segment) {
  vec S(pb.x_size(), 0.0);
  const long seg = segment == 0 ? pb.T : segment;
  for (long b = 0; b < pb.B; ++b)
    for (long c = 0; c < pb.C; ++c)
      for (long t = 0, t0 = 0; t0 < pb.T; t0 += seg) {  // running sum, restarted at each segment
        double s = 0.0;
        for (t = t0; t < std::min(pb.T, t0 + seg); ++t) {
          s += x[pb.xi(t, b, c)];
          S[pb.xi(t, b, c)] = scale * s;
        }
      }
  return S;
}

// out[t, b, h] = sum_{c in head h} in[t, b, c]
inline vec head_sum(const problem& pb, const vec& in) {
  vec out(static_cast<size_t>(pb.T * pb.B * pb.H), 0.0);
  for (long t = 0; t < pb.T; ++t)
    for (long b = 0; b < pb.B; ++b)
      for (long c = 0; c < pb.C; ++c) out[static_cast<size_t>((t * pb.B + b) * pb.H + c / pb.R())] += in[pb.xi(t, b, c)];
  return out;
}

// Central finite difference of a scalar function f of the vector v, at every index in `which`.
inline vec finite_diff(vec& v, const std::vector<size_t>& which, double step, const std::function<double()>& f) {
  vec g(which.size(), 0.0);
  for (size_t k = 0; k < which.size(); ++k) {
    const size_t i = which[k];
    const double v0 = v[i];
    v[i] = v0 + step;
    const double fp = f();
    v[i] = v0 - step;
    const double fm = f();
    v[i] = v0;
    g[k] = (fp - fm) / (2.0 * step);
  }
  return g;
}

inline double dot(const vec& a, const vec& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Smallest distance of any unclamped, non-dropped bound t - o_l L / t + o_r M to an integer (or to the
// clamp points): finite differences are only meaningful away from those kinks.
inline double kink_distance(const problem& pb, const vec& o) {
  double dmin = std::numeric_limits<double>::infinity();
  auto dist = [](double v) { return std::fabs(v - std::round(v)); };
  for (long b = 0; b < pb.B; ++b)
    for (long t = 0; t < pb.n(b); ++t)
      for (long h = 0; h < pb.H; ++h) {
        const double ol = o[pb.oi(t, b, h)];
        if (pb.L > 0 && ol != 0.0) dmin = std::min(dmin, dist(static_cast<double>(t) - ol * static_cast<double>(pb.L)));
        if (!pb.causal && pb.M > 0) {
          const double orr = o[pb.oi(t, b, pb.H + h)];
          if (orr != 0.0) dmin = std::min(dmin, dist(static_cast<double>(t) + orr * static_cast<double>(pb.M)));
        }
      }
  return dmin;
}

}  // namespace ref
