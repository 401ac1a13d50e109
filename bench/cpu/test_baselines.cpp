// The benchmark baselines checked against float64 references written straight from their definitions,
// and the TaLK ones (naive windowed sum, original algorithm) against talkconv's own window aggregation.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "../baselines/kv_attention.hpp"
#include "../baselines/light_dynamic_conv.hpp"
#include "../baselines/naive_window.hpp"
#include "../baselines/original_talk.hpp"

#include <talkconv/talkconv.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace {

using talkconv::index_t;
using talkconv::layout;
using talkconv::seq_shape;
using talkconv::window_params;

// ---- float64 references ------------------------------------------------------------------------------

// SPEC forward, literally: real bounds, ceil/floor, fractional edge terms, divided by K.
std::vector<double> ref_window_forward(const seq_shape& s, const window_params& w, const std::vector<double>& x,
                                       const std::vector<double>& off) {
  const index_t C = s.C, H = w.heads, R = C / H, P = w.num_offsets(), n = s.T;
  const auto sx = s.strides(C), so = s.strides(P);
  const double K = double(w.window_len());
  std::vector<double> y(x.size(), 0.0);
  for (index_t b = 0; b < s.B; ++b)
    for (index_t t = 0; t < s.T; ++t)
      for (index_t h = 0; h < H; ++h) {
        const double ol = off[t * so.t + b * so.b + h];
        const double orr = w.causal ? 0.0 : off[t * so.t + b * so.b + H + h];
        const double al = std::clamp(double(t) - ol * double(w.max_left), 0.0, double(n - 1));
        const double ar = w.causal ? double(t) : std::clamp(double(t) + orr * double(w.max_right), 0.0, double(n - 1));
        for (index_t c = h * R; c < (h + 1) * R; ++c) {
          auto X = [&](index_t tau) { return x[tau * sx.t + b * sx.b + c]; };
          double acc = 0.0;
          for (index_t tau = index_t(std::ceil(al)); tau <= index_t(std::floor(ar)); ++tau) acc += X(tau);
          acc += (ar - std::floor(ar)) * X(index_t(std::ceil(ar)));
          acc += (std::ceil(al) - al) * X(index_t(std::floor(al)));
          y[t * sx.t + b * sx.b + c] = acc / K;
        }
      }
  return y;
}

// SPEC backward: dx[tau] = (1/K) sum_t dy[t] w_t(tau); d_off from the prefix sums S (S[-1] = 0).
void ref_window_backward(const seq_shape& s, const window_params& w, const std::vector<double>& x,
                         const std::vector<double>& off, const std::vector<double>& dy, std::vector<double>& dx,
                         std::vector<double>& doff) {
  const index_t C = s.C, H = w.heads, R = C / H, P = w.num_offsets(), n = s.T;
  const auto sx = s.strides(C), so = s.strides(P);
  const double K = double(w.window_len());
  dx.assign(x.size(), 0.0);
  doff.assign(off.size(), 0.0);
  std::vector<double> S(x.size());
  for (index_t b = 0; b < s.B; ++b)
    for (index_t c = 0; c < C; ++c) {
      double run = 0.0;
      for (index_t t = 0; t < s.T; ++t) S[t * sx.t + b * sx.b + c] = (run += x[t * sx.t + b * sx.b + c] / K);
    }
  for (index_t b = 0; b < s.B; ++b)
    for (index_t t = 0; t < s.T; ++t)
      for (index_t h = 0; h < H; ++h) {
        const double ol = off[t * so.t + b * so.b + h];
        const double orr = w.causal ? 0.0 : off[t * so.t + b * so.b + H + h];
        const double al = std::clamp(double(t) - ol * double(w.max_left), 0.0, double(n - 1));
        const double ar = w.causal ? double(t) : std::clamp(double(t) + orr * double(w.max_right), 0.0, double(n - 1));
        const index_t cl = index_t(std::ceil(al)), fl = index_t(std::floor(al));
        const index_t cr = index_t(std::ceil(ar)), fr = index_t(std::floor(ar));
        double gl = 0.0, gr = 0.0;
        for (index_t c = h * R; c < (h + 1) * R; ++c) {
          const double g = dy[t * sx.t + b * sx.b + c];
          auto DX = [&](index_t tau) -> double& { return dx[tau * sx.t + b * sx.b + c]; };
          auto Sv = [&](index_t i) { return i < 0 ? 0.0 : S[i * sx.t + b * sx.b + c]; };
          for (index_t tau = cl; tau <= fr; ++tau) DX(tau) += g / K;
          if (cr != fr) DX(cr) += g * (ar - fr) / K;
          if (cl != fl) DX(fl) += g * (cl - al) / K;
          gl += g * double(w.max_left) * (Sv(cl - 1) - Sv(fl - 1));
          gr += g * double(w.max_right) * (Sv(cr) - Sv(fr));
        }
        doff[t * so.t + b * so.b + h] = gl;
        if (!w.causal) doff[t * so.t + b * so.b + H + h] = gr;
      }
}

// LightConv / DynamicConv from the definition: weights wt(t, h, k) already softmax-normalized.
template <class W>
std::vector<double> ref_conv(const seq_shape& s, index_t H, index_t K, index_t pad, const std::vector<double>& x,
                             W&& wt) {
  const index_t C = s.C, R = C / H;
  const auto sx = s.strides(C);
  std::vector<double> y(x.size(), 0.0);
  for (index_t b = 0; b < s.B; ++b)
    for (index_t t = 0; t < s.T; ++t)
      for (index_t c = 0; c < C; ++c) {
        double acc = 0.0;
        for (index_t k = 0; k < K; ++k) {
          const index_t tau = t + k - pad;
          if (tau >= 0 && tau < s.T) acc += wt(b, t, c / R, k) * x[tau * sx.t + b * sx.b + c];
        }
        y[t * sx.t + b * sx.b + c] = acc;
      }
  return y;
}

std::vector<double> softmax64(std::vector<double> v) {
  const double m = *std::max_element(v.begin(), v.end());
  double sum = 0.0;
  for (double& e : v) sum += (e = std::exp(e - m));
  for (double& e : v) e /= sum;
  return v;
}

// ---- helpers ----------------------------------------------------------------------------------------

template <class T>
std::vector<T> random_vec(size_t n, unsigned seed, double lo, double hi) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  std::vector<T> v(n);
  for (auto& e : v) e = T(static_cast<float>(d(gen)));
  return v;
}

template <class T>
std::vector<double> widen(const std::vector<T>& v) {
  std::vector<double> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = double(static_cast<float>(v[i]));
  return r;
}

template <class U, class V>
double max_abs_diff(const std::vector<U>& a, const std::vector<V>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(double(static_cast<float>(a[i])) - double(static_cast<float>(b[i])));
    if (!(d <= m)) m = d;  // NaN propagates
  }
  return m;
}

struct problem {
  seq_shape s;
  window_params w;
  std::string name() const {
    return "T=" + std::to_string(s.T) + " B=" + std::to_string(s.B) + " C=" + std::to_string(s.C) +
           " H=" + std::to_string(w.heads) + " L=" + std::to_string(w.max_left) + " M=" +
           std::to_string(w.max_right) + (w.causal ? " causal" : "") + (s.lay == layout::btc ? " btc" : " tbc");
  }
};

std::vector<problem> problems() {
  return {
      {{37, 2, 12, layout::tbc}, {3, 5, 3, false}},   {{64, 1, 16, layout::tbc}, {1, 31, 31, false}},
      {{29, 3, 8, layout::btc}, {2, 4, 7, false}},    {{40, 2, 6, layout::tbc}, {6, 9, 0, true}},
      {{50, 1, 32, layout::tbc}, {4, 1, 1, false}},   {{17, 2, 4, layout::btc}, {1, 40, 40, false}},
      {{300, 2, 24, layout::tbc}, {3, 70, 20, false}},
  };
}

}  // namespace

TEST_CASE("float64 reference backward agrees with finite differences of the reference forward") {
  const problem p{{23, 2, 6, layout::tbc}, {3, 4, 3, false}};
  const auto x = widen(random_vec<float>(size_t(p.s.rows() * p.s.C), 1, -1, 1));
  const auto off = widen(random_vec<float>(size_t(p.s.rows() * p.w.num_offsets()), 2, 0.02, 0.98));
  const auto dy = widen(random_vec<float>(x.size(), 3, -1, 1));
  std::vector<double> dx, doff;
  ref_window_backward(p.s, p.w, x, off, dy, dx, doff);
  auto loss = [&](const std::vector<double>& xx, const std::vector<double>& oo) {
    const auto y = ref_window_forward(p.s, p.w, xx, oo);
    double l = 0.0;
    for (size_t i = 0; i < y.size(); ++i) l += y[i] * dy[i];
    return l;
  };
  const double h = 1e-6;
  for (size_t i = 0; i < x.size(); i += 7) {
    auto xp = x, xm = x;
    xp[i] += h, xm[i] -= h;
    CHECK(std::abs((loss(xp, off) - loss(xm, off)) / (2 * h) - dx[i]) < 1e-6);
  }
  for (size_t i = 0; i < off.size(); ++i) {
    auto op = off, om = off;
    op[i] += h, om[i] -= h;
    CHECK(std::abs((loss(x, op) - loss(x, om)) / (2 * h) - doff[i]) < 1e-6);
  }
}

TEST_CASE_TEMPLATE("naive and original TaLK baselines match the float64 reference and talkconv", T, float,
                   Eigen::bfloat16) {
  using A = talkconv::acc_t<T>;
  const bool f32 = std::is_same<T, float>::value;
  // Outputs are window means of |x| <= 1 (|y| <= 1): absolute tolerances. bfloat16 rounds x and y (2^-8).
  const double tol_y = f32 ? 2e-6 : 1e-2, tol_dx = f32 ? 2e-6 : 1e-2;
  for (const problem& p : problems()) {
    CAPTURE(p.name());
    const index_t N = p.s.rows(), C = p.s.C, P = p.w.num_offsets();
    const auto x = random_vec<T>(size_t(N * C), 11, -1, 1);
    const auto dy = random_vec<T>(size_t(N * C), 12, -1, 1);
    const auto off = random_vec<A>(size_t(N * P), 13, 0, 1);
    const auto y64 = ref_window_forward(p.s, p.w, widen(x), widen(off));
    std::vector<double> dx64, doff64;
    ref_window_backward(p.s, p.w, widen(x), widen(off), widen(dy), dx64, doff64);
    double doff_scale = 1.0;
    for (double v : doff64) doff_scale = std::max(doff_scale, std::abs(v));
    const double tol_doff = (f32 ? 1e-5 : 2e-2) * doff_scale;

    std::vector<T> y_tc(x.size()), dx_tc(x.size());
    std::vector<A> doff_tc(off.size());
    talkconv::cpu::window_forward<T>(p.s, p.w, x.data(), off.data(), y_tc.data());
    talkconv::cpu::window_backward<T>(p.s, p.w, x.data(), off.data(), dy.data(), dx_tc.data(), doff_tc.data());

    SUBCASE("naive") {
      std::vector<T> y(x.size()), dx(x.size());
      std::vector<A> doff(off.size());
      talkconv_bench::naive::window_forward<T>(p.s, p.w, x.data(), off.data(), y.data());
      talkconv_bench::naive::window_backward<T>(p.s, p.w, x.data(), off.data(), dy.data(), dx.data(), doff.data());
      CHECK(max_abs_diff(y, y64) <= tol_y);
      CHECK(max_abs_diff(y, y_tc) <= tol_y);
      CHECK(max_abs_diff(dx, dx64) <= tol_dx);
      CHECK(max_abs_diff(dx, dx_tc) <= tol_dx);
      CHECK(max_abs_diff(doff, doff64) <= tol_doff);
      CHECK(max_abs_diff(doff, doff_tc) <= tol_doff);
    }
    SUBCASE("original") {
      std::vector<T> y(x.size()), dx(x.size());
      std::vector<A> doff(off.size()), S(x.size());
      std::vector<A> ws(size_t(talkconv_bench::original::backward_workspace(p.s, talkconv_bench::num_threads())));
      talkconv_bench::original::window_forward<T>(p.s, p.w, x.data(), off.data(), y.data(), S.data());
      talkconv_bench::original::window_backward<T>(p.s, p.w, x.data(), off.data(), dy.data(), dx.data(), doff.data(),
                                                   S.data(), ws.data());
      // The original subtracts global sums: its error grows with T (|S| up to T / K), as SPEC says.
      const double grow = double(p.s.T) / double(p.w.window_len());
      CHECK(max_abs_diff(y, y64) <= tol_y * grow);
      CHECK(max_abs_diff(y, y_tc) <= tol_y * grow);
      CHECK(max_abs_diff(dx, dx64) <= tol_dx * grow);
      CHECK(max_abs_diff(dx, dx_tc) <= tol_dx * grow);
      CHECK(max_abs_diff(doff, doff64) <= tol_doff * grow);
      CHECK(max_abs_diff(doff, doff_tc) <= tol_doff * grow);
    }
  }
}

TEST_CASE_TEMPLATE("LightConv and DynamicConv match the float64 reference", T, float, Eigen::bfloat16) {
  using A = talkconv::acc_t<T>;
  const bool f32 = std::is_same<T, float>::value;
  const double tol = f32 ? 1e-5 : 2e-2;
  struct conv_case {
    seq_shape s;
    index_t H, K, pad;
  };
  const conv_case cases[] = {{{40, 2, 16, layout::tbc}, 4, 7, 3},
                             {{33, 3, 12, layout::btc}, 3, 31, 15},
                             {{25, 1, 8, layout::tbc}, 1, 5, 4},    // decoder: pad = K - 1
                             {{150, 2, 64, layout::tbc}, 8, 3, 1}};
  for (const conv_case& cc : cases) {
    CAPTURE(cc.s.T);
    CAPTURE(cc.K);
    const index_t N = cc.s.rows(), C = cc.s.C, HK = cc.H * cc.K;
    const auto x = random_vec<T>(size_t(N * C), 21, -1, 1);
    const auto x64 = widen(x);
    const auto sx = cc.s.strides(C);
    SUBCASE("LightConv") {
      const auto w = random_vec<A>(size_t(HK), 22, -2, 2);
      std::vector<std::vector<double>> wn(size_t(cc.H));
      for (index_t h = 0; h < cc.H; ++h)
        wn[size_t(h)] = softmax64(std::vector<double>(w.begin() + h * cc.K, w.begin() + (h + 1) * cc.K));
      const auto y64 = ref_conv(cc.s, cc.H, cc.K, cc.pad, x64,
                                [&](index_t, index_t, index_t h, index_t k) { return wn[size_t(h)][size_t(k)]; });
      std::vector<T> y(x.size());
      talkconv_bench::lightdyn::lightconv_forward<T>(cc.s, cc.H, cc.K, cc.pad, x.data(), w.data(), y.data());
      CHECK(max_abs_diff(y, y64) <= tol);
    }
    SUBCASE("DynamicConv") {
      const auto W = random_vec<A>(size_t(HK * C), 23, -0.5, 0.5);
      const auto bias = random_vec<A>(size_t(HK), 24, -1, 1);
      // weights of (b, t): softmax_k(W x[t, b] + bias) per head, in float64.
      std::vector<double> wt(size_t(N * HK));
      for (index_t b = 0; b < cc.s.B; ++b)
        for (index_t t = 0; t < cc.s.T; ++t)
          for (index_t h = 0; h < cc.H; ++h) {
            std::vector<double> z(size_t(cc.K));
            for (index_t k = 0; k < cc.K; ++k) {
              double acc = double(bias[size_t(h * cc.K + k)]);
              for (index_t c = 0; c < C; ++c)
                acc += double(W[size_t((h * cc.K + k) * C + c)]) * x64[size_t(t * sx.t + b * sx.b + c)];
              z[size_t(k)] = acc;
            }
            z = softmax64(z);
            std::copy(z.begin(), z.end(), wt.begin() + (b * cc.s.T + t) * HK + h * cc.K);
          }
      const auto y64 = ref_conv(cc.s, cc.H, cc.K, cc.pad, x64, [&](index_t b, index_t t, index_t h, index_t k) {
        return wt[size_t((b * cc.s.T + t) * HK + h * cc.K + k)];
      });
      std::vector<T> y(x.size());
      talkconv_bench::lightdyn::dynamicconv_forward<T>(cc.s, cc.H, cc.K, cc.pad, x.data(), W.data(), bias.data(),
                                                       y.data());
      CHECK(max_abs_diff(y, y64) <= tol);
    }
  }
}

TEST_CASE("KV-cache attention step matches the float64 reference") {
  for (const index_t B : {1, 3})
    for (const index_t context : {1, 5, 300}) {
      CAPTURE(B);
      CAPTURE(context);
      const index_t C = 60, H = 3, R = C / H;  // R = 20: two blocks of 8 and a remainder
      const auto q = random_vec<float>(size_t(B * C), 31, -1, 1);
      const auto k = random_vec<float>(size_t(B * C * context), 32, -1, 1);
      const auto v = random_vec<float>(size_t(B * C * context), 33, -1, 1);
      std::vector<float> out(size_t(B * C));
      talkconv_bench::kv_attention::step(B, C, H, context, q.data(), k.data(), v.data(), out.data());
      std::vector<double> want(out.size());
      for (index_t b = 0; b < B; ++b)
        for (index_t h = 0; h < H; ++h) {
          std::vector<double> s(static_cast<size_t>(context));
          for (index_t j = 0; j < context; ++j) {
            double d = 0;
            for (index_t r = 0; r < R; ++r)
              d += double(q[size_t(b * C + h * R + r)]) * double(k[size_t(((b * H + h) * context + j) * R + r)]);
            s[size_t(j)] = d / std::sqrt(double(R));
          }
          s = softmax64(s);
          for (index_t r = 0; r < R; ++r) {
            double o = 0;
            for (index_t j = 0; j < context; ++j) o += s[size_t(j)] * double(v[size_t(((b * H + h) * context + j) * R + r)]);
            want[size_t(b * C + h * R + r)] = o;
          }
        }
      CHECK(max_abs_diff(out, want) <= 1e-5);
    }
}
