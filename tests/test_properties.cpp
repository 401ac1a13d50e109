// Property tests: identities that SPEC implies for every input, checked through the public API (the
// building blocks and talk_conv<T>) on thousands of seeded random cases. Each case is drawn from its own
// seed (printed with the problem on failure, so a failing case can be rerun alone); tt::draws() cuts the
// counts to a third under the sanitizers. Every check compares against an exact identity (bitwise where
// the algorithm guarantees it, to a tolerance justified next to it otherwise) or against SPEC's formula
// evaluated in double.
#include "util.hpp"

#include <array>
#include <map>
#include <numeric>

using namespace tt;
namespace cpu = talkconv::cpu;

namespace {

template <class T>
using acc = talkconv::acc_t<T>;

const double qnan = std::numeric_limits<double>::quiet_NaN();
const double inf = std::numeric_limits<double>::infinity();

// Random cases run per property, for the report at the end of each test case (and in the log).
std::map<std::string, long>& case_counts() {
  static std::map<std::string, long> m;
  return m;
}
void count_case(const std::string& property) { ++case_counts()[property]; }

// ---- one random case ------------------------------------------------------------------------------

struct pcase {
  ref::problem pb;
  layout lay = layout::tbc;
  std::uint64_t seed = 0;
  int index = 0;
  std::mt19937_64 rng;  // the case's data stream, seeded from `seed` after the shape is drawn

  std::string str(const std::string& dtype) const {
    return "case #" + std::to_string(index) + " seed=" + std::to_string(seed) + " " + pb.str() +
           " layout=" + layout_name(lay) + " dtype=" + dtype;
  }
  talkconv::seq_shape shape() const { return shape_of(pb, lay); }
  talkconv::window_params window() const { return window_of(pb); }
  bool has_padding() const {
    for (long b = 0; b < pb.B; ++b)
      if (pb.n(b) < pb.T) return true;
    return false;
  }
};

// Case `i` of a property whose base seed is `base`: a pure function of (base, i).
//   T:        1..40 (one time tile), or 1 in 16: 257..700 (two or three tiles of the CPU path)
//   B 1..4, H 1..4, R = C / H 1..5
//   L, M:     0..10, or 1 in 4 (short sequences only): up to 2T + 2 (windows wider than the sequence)
//   lengths:  half the cases ragged, each n_b in [0, T] (force_padding: at least one n_b < T)
//   force_long: always the long sequences
pcase draw_case(std::uint64_t base, int i, bool causal, bool force_padding = false, bool force_long = false) {
  pcase c;
  c.index = i;
  c.seed = base * 1000003u + static_cast<std::uint64_t>(i);
  std::mt19937_64 rng(c.seed);
  ref::problem& pb = c.pb;
  const bool long_seq = force_long || uniform_int(rng, 0, 15) == 0;
  pb.T = long_seq ? uniform_int(rng, 257, 700) : uniform_int(rng, 1, 40);
  pb.B = uniform_int(rng, 1, long_seq ? 2 : 4);
  pb.H = uniform_int(rng, 1, 4);
  pb.C = pb.H * uniform_int(rng, 1, long_seq ? 3 : 5);
  const long wmax = !long_seq && uniform_int(rng, 0, 3) == 0 ? 2 * pb.T + 2 : 10;
  pb.causal = causal;
  pb.L = uniform_int(rng, 0, wmax);
  pb.M = causal ? 0 : uniform_int(rng, 0, wmax);
  if (force_padding || uniform_int(rng, 0, 1) == 0) {
    pb.lengths.resize(static_cast<size_t>(pb.B));
    for (auto& n : pb.lengths) n = uniform_int(rng, 0, pb.T);
    if (force_padding && pb.T > 1) pb.lengths[static_cast<size_t>(uniform_int(rng, 0, pb.B - 1))] = uniform_int(rng, 0, pb.T - 1);
  }
  c.lay = uniform_int(rng, 0, 1) == 0 ? layout::tbc : layout::btc;
  c.rng.seed(c.seed ^ 0x5DEECE66Dull);
  return c;
}

// ---- calls on the library's layout ------------------------------------------------------------------

template <class T>
std::vector<T> lib_window_forward(const pcase& c, const std::vector<T>& x, const std::vector<acc<T>>& o) {
  std::vector<T> y(x.size(), to_store<T>(-777.0));
  const auto len = lengths_of(c.pb);
  cpu::window_forward<T>(c.shape(), c.window(), x.data(), o.data(), y.data(), lengths_ptr(len));
  return y;
}

template <class T>
void lib_window_backward(const pcase& c, const std::vector<T>& x, const std::vector<acc<T>>& o, const std::vector<T>& dy,
                         std::vector<T>& dx, std::vector<acc<T>>& d_o) {
  dx.assign(x.size(), to_store<T>(-777.0));
  d_o.assign(o.size(), acc<T>(-777));
  const auto len = lengths_of(c.pb);
  cpu::window_backward<T>(c.shape(), c.window(), x.data(), o.data(), dy.data(), dx.data(), d_o.data(), lengths_ptr(len));
}

// The layer's results on the library's layout.
template <class T>
struct layer_result {
  std::vector<T> y, dx, dW, db;
  std::vector<acc<T>> saved;
};

template <class T>
layer_result<T> lib_layer(const pcase& c, const std::vector<T>& x, const std::vector<T>& W, const std::vector<T>& bias,
                          const std::vector<T>& dy, const talkconv::dropout_params& dp, bool backward = true,
                          const std::vector<acc<T>>* saved_in = nullptr) {
  const ref::problem& pb = c.pb;
  const talkconv::talk_conv<T> conv(talkconv::talk_config{pb.C, pb.H, pb.L, pb.M, pb.causal});
  const auto len = lengths_of(pb);
  layer_result<T> r;
  r.y.assign(x.size(), to_store<T>(-777.0));
  r.saved.assign(pb.o_size(), acc<T>(-777));
  talkconv::forward_args<T> fa;
  fa.shape = c.shape(), fa.x = x.data(), fa.weight = W.data(), fa.bias = bias.empty() ? nullptr : bias.data();
  fa.y = r.y.data(), fa.saved_offsets = r.saved.data(), fa.lengths = lengths_ptr(len), fa.dropout = dp;
  conv.forward(fa);
  if (!backward) return r;
  r.dx.assign(x.size(), to_store<T>(-777.0));
  r.dW.assign(W.size(), to_store<T>(-777.0));
  r.db.assign(static_cast<size_t>(pb.P()), to_store<T>(-777.0));
  talkconv::backward_args<T> ba;
  ba.shape = fa.shape, ba.x = x.data(), ba.weight = W.data(), ba.bias = fa.bias, ba.dy = dy.data();
  ba.saved_offsets = saved_in ? saved_in->data() : nullptr;
  ba.dx = r.dx.data(), ba.dweight = r.dW.data(), ba.dbias = r.db.data(), ba.lengths = fa.lengths, ba.dropout = dp;
  conv.backward(ba);
  return r;
}

// ---- data -------------------------------------------------------------------------------------------

// Values exactly representable in every storage type tested, closed under the linear combinations
// below: multiples of 1/8 in [-4, 4] (6 significant bits; half has 11, bfloat16 8).
vec grid_vec(std::mt19937_64& rng, size_t n) {
  vec v(n);
  for (auto& e : v) e = static_cast<double>(uniform_int(rng, -32, 32)) / 8.0;
  return v;
}

template <class T>
constexpr bool is16() {
  return std::is_same<T, Eigen::half>::value || std::is_same<T, Eigen::bfloat16>::value;
}

// Data of a case in storage type T: normal for float and double; on the 1/8 grid for 16-bit types.
template <class T>
vec data_vec(pcase& c, size_t n) {
  if constexpr (is16<T>()) return grid_vec(c.rng, n);
  else return round_through<T>(normal_vec(c.rng, n));
}

// The projection weight of a layer case (offsets spread over (0, 1), not saturated).
template <class T>
vec weight_vec(pcase& c) {
  return round_through<T>(normal_vec(c.rng, static_cast<size_t>(c.pb.P() * c.pb.C), 0.0, 1.5 / std::sqrt(double(c.pb.C))));
}

// A value no valid output may see: NaN, +-Inf, huge, or ordinary garbage.
double garbage(std::mt19937_64& rng) {
  switch (uniform_int(rng, 0, 4)) {
    case 0: return qnan;
    case 1: return inf;
    case 2: return -inf;
    case 3: return 3e38 * (uniform_int(rng, 0, 1) ? 1.0 : -1.0);
    default: return std::normal_distribution<double>(0.0, 1e6)(rng);
  }
}

// ---- comparisons --------------------------------------------------------------------------------------

// First row (t, b) with keep(t, b) where the raw bits of a and b differ, as text; empty when none.
template <class S, class Keep>
std::string first_row_difference(const std::vector<S>& a, const std::vector<S>& b, const pcase& c, long width, Keep&& keep) {
  REQUIRE(a.size() == b.size());
  for (long t = 0; t < c.pb.T; ++t)
    for (long bb = 0; bb < c.pb.B; ++bb) {
      if (!keep(t, bb)) continue;
      const size_t at = lidx(c.lay, c.pb.T, c.pb.B, width, t, bb, 0);
      if (std::memcmp(a.data() + at, b.data() + at, static_cast<size_t>(width) * sizeof(S)) != 0)
        return "row t=" + std::to_string(t) + " b=" + std::to_string(bb) + " differs";
    }
  return {};
}
#define PT_CHECK_ROWS_BITWISE(what, a, b, c, width, keep)                     \
  do {                                                                      \
    const std::string pt_d_ = first_row_difference((a), (b), (c), (width), (keep)); \
    INFO(what, ": ", pt_d_);                                                \
    CHECK(pt_d_.empty());                                                   \
  } while (0)

// Rows t >= n_b of a [T, B, width] tensor are all exactly zero (SPEC: y = 0 there; README: so are dx
// and the offset gradients).
template <class S>
std::string first_nonzero_padding(const std::vector<S>& v, const pcase& c, long width) {
  for (long b = 0; b < c.pb.B; ++b)
    for (long t = c.pb.n(b); t < c.pb.T; ++t)
      for (long j = 0; j < width; ++j) {
        const double e = static_cast<double>(talkconv::to_acc<S>(v[lidx(c.lay, c.pb.T, c.pb.B, width, t, b, j)]));
        if (!(e == 0.0)) return "padded row t=" + std::to_string(t) + " b=" + std::to_string(b) + " holds " + std::to_string(e);
      }
  return {};
}
#define PT_CHECK_PADDING_ZERO(what, v, c, width)                       \
  do {                                                               \
    const std::string pt_z_ = first_nonzero_padding((v), (c), (width)); \
    INFO(what, ": ", pt_z_);                                         \
    CHECK(pt_z_.empty());                                            \
  } while (0)

inline auto all_rows() {
  return [](long, long) { return true; };
}
inline auto valid_rows(const pcase& c) {
  return [&c](long t, long b) { return t < c.pb.n(b); };
}

vec lin_comb(double a, const vec& u, double b, const vec& v) {
  vec r(u.size());
  for (size_t i = 0; i < u.size(); ++i) r[i] = a * u[i] + b * v[i];
  return r;
}

// The window scale of a comparison (as the block tests use): what the window averages, or the largest
// value if larger.
double wscale(const vec& x, const vec& y) { return std::max({1e-300, mean_abs(x), max_abs(y)}); }

// Typical size of one head's offset gradient (tt::d_offsets_scale without a reference).
double do_scale(const ref::problem& pb, const vec& d, const vec& x, const vec& dy) {
  const double typical = static_cast<double>(std::max(pb.L, pb.M)) / static_cast<double>(pb.K()) *
                         static_cast<double>(pb.R()) * mean_abs(x) * mean_abs(dy);
  return std::max({1e-300, max_abs(d), typical});
}

template <class T>
std::vector<acc<T>> offsets_in(pcase& c, double hi) {
  return to_layout<acc<T>>(window_offsets<acc<T>>(c.rng, c.pb, hi), c.lay, c.pb.T, c.pb.B, c.pb.P());
}

#define PT_DTYPES float, double, Eigen::half, Eigen::bfloat16

}  // namespace

TEST_SUITE("properties") {

// ---- 1. linearity ------------------------------------------------------------------------------------
// For fixed offsets the window is linear: window(a x1 + b x2) = a window(x1) + b window(x2); its input
// gradient is linear in dy, and its offset gradient is bilinear in (x, dy).
// Tolerance: every output carries the rounding of its own call (tol<T>() times its window scale, as in
// the block tests); the combination's error is at most the sum, |a| e1 + |b| e2 + e3. The inputs are
// exact: for 16-bit types x, dy, a and b are on a grid where a x1 + b x2 is representable.
TEST_CASE_TEMPLATE("properties: the window is linear in x and its backward linear in dy (fixed offsets)", T, PT_DTYPES) {
  using A = acc<T>;
  const std::uint64_t base = 11;
  const int n = draws(800);
  for (int i = 0; i < n; ++i) {
    pcase c = draw_case(base, i, i % 2 == 1);
    INFO(c.str(dtype_name<T>()));
    const ref::problem& pb = c.pb;
    const auto o = offsets_in<T>(c, i % 3 == 0 ? 2.0 : 1.0);
    double a, b;
    if constexpr (is16<T>()) {
      const double pick[] = {-2.0, -1.0, 1.0, 2.0};
      a = pick[uniform_int(c.rng, 0, 3)], b = pick[uniform_int(c.rng, 0, 3)];
    } else {
      a = std::uniform_real_distribution<double>(-2.0, 2.0)(c.rng), b = std::uniform_real_distribution<double>(-2.0, 2.0)(c.rng);
    }
    CAPTURE(a);
    CAPTURE(b);
    const vec x1 = data_vec<T>(c, pb.x_size()), x2 = data_vec<T>(c, pb.x_size());
    const vec dy1 = data_vec<T>(c, pb.x_size()), dy2 = data_vec<T>(c, pb.x_size());
    const vec x3 = round_through<T>(lin_comb(a, x1, b, x2)), dy3 = round_through<T>(lin_comb(a, dy1, b, dy2));
    auto L = [&](const vec& v) { return to_layout<T>(v, c.lay, pb.T, pb.B, pb.C); };
    auto Cx = [&](const std::vector<T>& v) { return from_layout(v.data(), c.lay, pb.T, pb.B, pb.C); };
    auto Co = [&](const std::vector<A>& v) { return from_layout(v.data(), c.lay, pb.T, pb.B, pb.P()); };

    // forward, in x
    const vec y1 = Cx(lib_window_forward<T>(c, L(x1), o)), y2 = Cx(lib_window_forward<T>(c, L(x2), o));
    const vec y3 = Cx(lib_window_forward<T>(c, L(x3), o));
    const double sy = std::fabs(a) * wscale(x1, y1) + std::fabs(b) * wscale(x2, y2) + wscale(x3, y3);
    TT_CHECK_CLOSE("window(a x1 + b x2) vs a window(x1) + b window(x2)", y3, lin_comb(a, y1, b, y2), tol<T>(), sy);

    // backward: dx in dy, d_offsets in dy (x = x1) and in x (dy = dy1)
    std::vector<T> dx1, dx2, dx3, dxx;
    std::vector<A> do1, do2, do3, dox2, dox3;
    lib_window_backward<T>(c, L(x1), o, L(dy1), dx1, do1);
    lib_window_backward<T>(c, L(x1), o, L(dy2), dx2, do2);
    lib_window_backward<T>(c, L(x1), o, L(dy3), dx3, do3);
    const vec g1 = Cx(dx1), g2 = Cx(dx2), g3 = Cx(dx3);
    const double sdx = std::fabs(a) * dx_scale(g1, dy1) + std::fabs(b) * dx_scale(g2, dy2) + dx_scale(g3, dy3);
    TT_CHECK_CLOSE("dx(a dy1 + b dy2) vs a dx(dy1) + b dx(dy2)", g3, lin_comb(a, g1, b, g2), tol<T>(), sdx);
    const vec e1 = Co(do1), e2 = Co(do2), e3 = Co(do3);
    const double sdo = std::fabs(a) * do_scale(pb, e1, x1, dy1) + std::fabs(b) * do_scale(pb, e2, x1, dy2) +
                       do_scale(pb, e3, x1, dy3);
    TT_CHECK_CLOSE("d_offsets(x1, a dy1 + b dy2)", e3, lin_comb(a, e1, b, e2), tol<A>(), sdo);
    lib_window_backward<T>(c, L(x2), o, L(dy1), dxx, dox2);
    lib_window_backward<T>(c, L(x3), o, L(dy1), dxx, dox3);
    const vec f2 = Co(dox2), f3 = Co(dox3);
    const double sdx2 = std::fabs(a) * do_scale(pb, e1, x1, dy1) + std::fabs(b) * do_scale(pb, f2, x2, dy1) +
                        do_scale(pb, f3, x3, dy1);
    TT_CHECK_CLOSE("d_offsets(a x1 + b x2, dy1)", f3, lin_comb(a, e1, b, f2), tol<A>(), sdx2);
    count_case("linearity/" + dtype_name<T>());
  }
  MESSAGE("linearity/", dtype_name<T>(), ": ", case_counts()["linearity/" + dtype_name<T>()], " random cases");
}

// ---- 2. the window of all-ones -------------------------------------------------------------------------
// With x = 1, SPEC step 4 gives sum_{ceil a_l}^{floor a_r} 1 + (a_r - floor a_r) + (ceil a_l - a_l)
// = a_r - a_l + 1 (also when a bound is an integer: its fractional term is then 0), so
//   y[t] = (a_r - a_l + 1) / K,  a_l = clamp(t - o_l L, 0, n_b - 1),  a_r = clamp(t + o_r M, 0, n_b - 1)
// (causal: a_r = t), and y = 0 for t >= n_b. Evaluated here in double from the offsets the library sees.
// Tolerance tol<T>() relative to max(1, y): the window scale of |x| = 1.
double ones_value(const ref::problem& pb, long t, long b, double ol, double orr) {
  const long n = pb.n(b);
  if (t >= n) return 0.0;
  const double al = std::min(std::max(static_cast<double>(t) - ol * static_cast<double>(pb.L), 0.0), static_cast<double>(n - 1));
  const double ar = pb.causal ? static_cast<double>(t)
                              : std::min(std::max(static_cast<double>(t) + orr * static_cast<double>(pb.M), 0.0),
                                         static_cast<double>(n - 1));
  return (ar - al + 1.0) / static_cast<double>(pb.K());
}

TEST_CASE_TEMPLATE("properties: the window of all-ones is the window length over K (building block)", T, PT_DTYPES) {
  const std::uint64_t base = 22;
  const int n = draws(800);
  for (int i = 0; i < n; ++i) {
    pcase c = draw_case(base, i, i % 2 == 1);
    INFO(c.str(dtype_name<T>()));
    const ref::problem& pb = c.pb;
    const vec o = window_offsets<acc<T>>(c.rng, pb, i % 3 == 0 ? 2.0 : 1.0);
    const auto os = to_layout<acc<T>>(o, c.lay, pb.T, pb.B, pb.P());
    const vec ones(pb.x_size(), 1.0);
    const vec y = from_layout(lib_window_forward<T>(c, to_layout<T>(ones, c.lay, pb.T, pb.B, pb.C), os).data(), c.lay,
                              pb.T, pb.B, pb.C);
    vec want(pb.x_size());
    for (long t = 0; t < pb.T; ++t)
      for (long b = 0; b < pb.B; ++b)
        for (long h = 0; h < pb.H; ++h) {
          const double v = ones_value(pb, t, b, o[pb.oi(t, b, h)], pb.causal ? 0.0 : o[pb.oi(t, b, pb.H + h)]);
          for (long r = 0; r < pb.R(); ++r) want[pb.xi(t, b, h * pb.R() + r)] = v;
        }
    TT_CHECK_CLOSE("window(1)", y, want, tol<T>(), std::max(1.0, max_abs(want)));
    count_case("ones-window/" + dtype_name<T>());
  }
  MESSAGE("ones-window/", dtype_name<T>(), ": ", case_counts()["ones-window/" + dtype_name<T>()], " random cases");
}

// The layer with W = 0 and x = 1: offsets are sigmoid(bias) (times the dropout mask), the same at every
// token, and y is the all-ones value above. Its backward then has a closed form too: where a bound is
// fractional and unclamped, S[ceil a_l - 1] - S[floor a_l - 1] = x[floor a_l] / K = 1 / K, so
//   dL/do_l[t, b, h] = L / K * sum_{c in h} dy[t, b, c]  (likewise M for o_r), and 0 at integer or
//   clamped bounds; dbias_j = sum_{t < n_b, b} dL/do_j * m / (1 - p) * o_pre (1 - o_pre);
// and with x = 1 every column of dweight equals dbias (dW = sum dz x^T).
TEST_CASE_TEMPLATE("properties: talk_conv on all-ones with W = 0 (window length over K; closed-form dbias)", T, PT_DTYPES) {
  using A = acc<T>;
  const std::uint64_t base = 23;
  const int n = draws(480);
  for (int i = 0; i < n; ++i) {
    pcase c = draw_case(base, i, i % 2 == 1);
    const ref::problem& pb = c.pb;
    const float p = i % 3 == 0 ? 0.0f : (i % 3 == 1 ? 0.25f : 0.6f);
    const talkconv::dropout_params dp{p, 900 + static_cast<std::uint64_t>(i), p > 0.0f};
    const ref::dropout rd{dp.active(), p, dp.seed};
    INFO(c.str(dtype_name<T>()), " dropout p=", p);
    const vec bias = round_through<T>(normal_vec(c.rng, static_cast<size_t>(pb.P()), 0.0, 2.0));
    const vec dy = data_vec<T>(c, pb.x_size());
    const vec ones(pb.x_size(), 1.0), W(static_cast<size_t>(pb.P() * pb.C), 0.0);
    const auto r = lib_layer<T>(c, to_layout<T>(ones, c.lay, pb.T, pb.B, pb.C), to_store_vec<T>(W), to_store_vec<T>(bias),
                                to_layout<T>(dy, c.lay, pb.T, pb.B, pb.C), dp);
    vec want(pb.x_size()), db(static_cast<size_t>(pb.P()), 0.0), db_mag(db.size(), 0.0);
    bool near_kink = false;
    auto frac_unclamped = [&](double a, long nb) {
      if (a <= 0.0 || a >= static_cast<double>(nb - 1)) return false;
      const double d = std::fabs(a - std::round(a));
      if (d < 1e-3) near_kink = true;  // float rounding of o L could move the bound onto the integer
      return d != 0.0;
    };
    for (long t = 0; t < pb.T; ++t)
      for (long b = 0; b < pb.B; ++b)
        for (long h = 0; h < pb.H; ++h) {
          const double pre_l = 1.0 / (1.0 + std::exp(-static_cast<double>(static_cast<A>(bias[static_cast<size_t>(h)]))));
          const double pre_r = pb.causal ? 0.0 : 1.0 / (1.0 + std::exp(-bias[static_cast<size_t>(pb.H + h)]));
          const double ol = pre_l * rd.scale(t, b, h), orr = pb.causal ? 0.0 : pre_r * rd.scale(t, b, pb.H + h);
          const double v = ones_value(pb, t, b, ol, orr);
          double dys = 0.0;
          for (long rr = 0; rr < pb.R(); ++rr) {
            want[pb.xi(t, b, h * pb.R() + rr)] = v;
            dys += dy[pb.xi(t, b, h * pb.R() + rr)];
          }
          if (t >= pb.n(b)) continue;
          const double al = static_cast<double>(t) - ol * static_cast<double>(pb.L);
          if (frac_unclamped(al, pb.n(b))) {
            const double dz = static_cast<double>(pb.L) / static_cast<double>(pb.K()) * dys * rd.scale(t, b, h) * pre_l * (1 - pre_l);
            db[static_cast<size_t>(h)] += dz, db_mag[static_cast<size_t>(h)] += std::fabs(dz);
          }
          if (!pb.causal && frac_unclamped(static_cast<double>(t) + orr * static_cast<double>(pb.M), pb.n(b))) {
            const double dz = static_cast<double>(pb.M) / static_cast<double>(pb.K()) * dys * rd.scale(t, b, pb.H + h) * pre_r * (1 - pre_r);
            db[static_cast<size_t>(pb.H + h)] += dz, db_mag[static_cast<size_t>(pb.H + h)] += std::fabs(dz);
          }
        }
    TT_CHECK_CLOSE("talk_conv(1) with W = 0", from_layout(r.y.data(), c.lay, pb.T, pb.B, pb.C), want, tol<T>(),
                   std::max(1.0, max_abs(want)));
    const vec got_db = to_dbl_vec(r.db), got_dW = to_dbl_vec(r.dW);
    if (!near_kink) TT_CHECK_CLOSE("dbias (closed form)", got_db, db, tol<T>(), sum_scale(db_mag) + 1e-30);
    vec db_cols(got_dW.size());
    for (long j = 0; j < pb.P(); ++j)
      for (long cc = 0; cc < pb.C; ++cc) db_cols[static_cast<size_t>(j * pb.C + cc)] = got_db[static_cast<size_t>(j)];
    TT_CHECK_CLOSE("every column of dweight equals dbias (x = 1)", got_dW, db_cols, 2 * tol<T>(), sum_scale(db_mag) + 1e-30);
    count_case("ones-layer/" + dtype_name<T>());
  }
  MESSAGE("ones-layer/", dtype_name<T>(), ": ", case_counts()["ones-layer/" + dtype_name<T>()], " random cases");
}

// ---- 3. causality ---------------------------------------------------------------------------------------
// Causal (M = 0): y[t] reads x on [floor a_l, t] only. The CPU path keeps this bitwise, not only in value:
// a tile streams its prefix sums in token order and reads rows up to t + reach.right before visiting t,
// and a causal reach.right is 0 (the building block's reach comes from the taps, whose right index is t;
// the layer's from L, M and p only, never from x). The re-base schedule is a function of the indices,
// and the tiles of the shape only. So perturbing x at t' > t* (with NaN, Inf, huge values or noise)
// leaves y[t <= t*] bit-for-bit unchanged, in the building block and in the layer (whose offsets at
// t' change too).
// Backward, the mirror: dx[tau] = sum_{t >= tau} dy[t] w_t(tau) / K (+ W^T dz[tau] in the layer, dz[tau]
// from dy[tau]); the backward stores row tau before it scatters any token below tau, and a token's taps
// never lie above it. So perturbing dy at t' < t* leaves dx and the offset gradients of rows >= t*
// bitwise unchanged.
template <class T>
void perturb_rows(std::vector<T>& v, const pcase& c, long width, std::mt19937_64& rng, bool future, long t_star) {
  const bool wild = uniform_int(rng, 0, 1) == 0;
  for (long t = 0; t < c.pb.T; ++t) {
    if (future ? t <= t_star : t >= t_star) continue;
    for (long b = 0; b < c.pb.B; ++b)
      for (long j = 0; j < width; ++j)
        v[lidx(c.lay, c.pb.T, c.pb.B, width, t, b, j)] = to_store<T>(wild ? garbage(rng) : std::normal_distribution<double>(0, 3)(rng));
  }
}

TEST_CASE_TEMPLATE("properties: causal outputs never depend on future tokens (bitwise; building blocks and layer)", T, PT_DTYPES) {
  using A = acc<T>;
  const std::uint64_t base = 33;
  const int n = draws(600);
  for (int i = 0; i < n; ++i) {
    pcase c = draw_case(base, i, true);
    const ref::problem& pb = c.pb;
    const long t_star = uniform_int(c.rng, 0, pb.T - 1);
    INFO(c.str(dtype_name<T>()), " t*=", t_star);
    auto before = [t_star](long t, long) { return t <= t_star; };
    auto from = [t_star](long t, long) { return t >= t_star; };
    const auto x = to_layout<T>(data_vec<T>(c, pb.x_size()), c.lay, pb.T, pb.B, pb.C);
    const auto dy = to_layout<T>(data_vec<T>(c, pb.x_size()), c.lay, pb.T, pb.B, pb.C);
    const auto o = offsets_in<T>(c, i % 3 == 0 ? 2.0 : 1.0);
    auto x_future = x;
    perturb_rows(x_future, c, pb.C, c.rng, true, t_star);
    auto dy_past = dy;
    perturb_rows(dy_past, c, pb.C, c.rng, false, t_star);

    // building blocks
    PT_CHECK_ROWS_BITWISE("window_forward y[t <= t*] after x[t > t*] changed", lib_window_forward<T>(c, x, o),
                          lib_window_forward<T>(c, x_future, o), c, pb.C, before);
    std::vector<T> dx0, dx1;
    std::vector<A> do0, do1;
    lib_window_backward<T>(c, x, o, dy, dx0, do0);
    lib_window_backward<T>(c, x, o, dy_past, dx1, do1);
    PT_CHECK_ROWS_BITWISE("window_backward dx[t >= t*] after dy[t < t*] changed", dx0, dx1, c, pb.C, from);
    PT_CHECK_ROWS_BITWISE("window_backward d_offsets[t >= t*] after dy[t < t*] changed", do0, do1, c, pb.P(), from);

    // the layer (offsets from x: perturbing x[t'] also changes the offsets of t')
    const auto W = to_store_vec<T>(weight_vec<T>(c));
    const auto bias = to_store_vec<T>(normal_vec(c.rng, static_cast<size_t>(pb.P())));
    const float p = i % 2 == 0 ? 0.0f : 0.3f;
    const talkconv::dropout_params dp{p, 77 + static_cast<std::uint64_t>(i), p > 0.0f};
    CAPTURE(p);
    const auto r0 = lib_layer<T>(c, x, W, bias, dy, dp);
    const auto r1 = lib_layer<T>(c, x_future, W, bias, dy, dp, false);
    PT_CHECK_ROWS_BITWISE("talk_conv y[t <= t*] after x[t > t*] changed", r0.y, r1.y, c, pb.C, before);
    PT_CHECK_ROWS_BITWISE("talk_conv saved_offsets[t <= t*] after x[t > t*] changed", r0.saved, r1.saved, c, pb.P(), before);
    const auto r2 = lib_layer<T>(c, x, W, bias, dy_past, dp, true);
    PT_CHECK_ROWS_BITWISE("talk_conv dx[t >= t*] after dy[t < t*] changed", r0.dx, r2.dx, c, pb.C, from);
    const auto r3 = lib_layer<T>(c, x, W, bias, dy, dp, true, &r0.saved);
    const auto r4 = lib_layer<T>(c, x, W, bias, dy_past, dp, true, &r0.saved);
    PT_CHECK_ROWS_BITWISE("talk_conv dx[t >= t*] after dy[t < t*] changed (saved offsets)", r3.dx, r4.dx, c, pb.C, from);
    count_case("causality/" + dtype_name<T>());
  }
  MESSAGE("causality/", dtype_name<T>(), ": ", case_counts()["causality/" + dtype_name<T>()], " random cases");
}

// ---- 4. padding ---------------------------------------------------------------------------------------------
// Rows t >= n_b are never read: NaN, Inf, huge values or noise there (in x, dy, the offsets, and the
// saved offsets handed back to the backward) leave every valid output bitwise unchanged. The padded rows
// of every output are exactly 0 (SPEC: y = 0 for t >= n_b; README: dx too, and they contribute no
// gradient), and dweight / dbias are bitwise unchanged.
template <class S>
void fill_padding(std::vector<S>& v, const pcase& c, long width, std::mt19937_64& rng) {
  for (long b = 0; b < c.pb.B; ++b)
    for (long t = c.pb.n(b); t < c.pb.T; ++t)
      for (long j = 0; j < width; ++j) v[lidx(c.lay, c.pb.T, c.pb.B, width, t, b, j)] = to_store<S>(garbage(rng));
}
template <class S>
void zero_padding(std::vector<S>& v, const pcase& c, long width) {
  for (long b = 0; b < c.pb.B; ++b)
    for (long t = c.pb.n(b); t < c.pb.T; ++t)
      for (long j = 0; j < width; ++j) v[lidx(c.lay, c.pb.T, c.pb.B, width, t, b, j)] = to_store<S>(0.0);
}

TEST_CASE_TEMPLATE("properties: padding beyond n_b never reaches a valid output; padded outputs are 0", T, PT_DTYPES) {
  using A = acc<T>;
  const std::uint64_t base = 44;
  const int n = draws(600);
  for (int i = 0; i < n; ++i) {
    pcase c = draw_case(base, i, i % 2 == 1, true);
    const ref::problem& pb = c.pb;
    INFO(c.str(dtype_name<T>()));
    if (pb.T > 1) REQUIRE(c.has_padding());
    auto x = to_layout<T>(data_vec<T>(c, pb.x_size()), c.lay, pb.T, pb.B, pb.C);
    auto dy = to_layout<T>(data_vec<T>(c, pb.x_size()), c.lay, pb.T, pb.B, pb.C);
    auto o = offsets_in<T>(c, i % 3 == 0 ? 2.0 : 1.0);
    zero_padding(x, c, pb.C), zero_padding(dy, c, pb.C), zero_padding(o, c, pb.P());
    auto xg = x, dyg = dy;
    auto og = o;
    fill_padding(xg, c, pb.C, c.rng), fill_padding(dyg, c, pb.C, c.rng), fill_padding(og, c, pb.P(), c.rng);
    const auto valid = valid_rows(c);

    // window blocks
    const auto y0 = lib_window_forward<T>(c, x, o), y1 = lib_window_forward<T>(c, xg, og);
    PT_CHECK_ROWS_BITWISE("window_forward y (valid rows)", y0, y1, c, pb.C, valid);
    PT_CHECK_PADDING_ZERO("window_forward y (padding)", y1, c, pb.C);
    std::vector<T> dx0, dx1;
    std::vector<A> do0, do1;
    lib_window_backward<T>(c, x, o, dy, dx0, do0);
    lib_window_backward<T>(c, xg, og, dyg, dx1, do1);
    PT_CHECK_ROWS_BITWISE("window_backward dx (valid rows)", dx0, dx1, c, pb.C, valid);
    PT_CHECK_ROWS_BITWISE("window_backward d_offsets (valid rows)", do0, do1, c, pb.P(), valid);
    PT_CHECK_PADDING_ZERO("window_backward dx (padding)", dx1, c, pb.C);
    PT_CHECK_PADDING_ZERO("window_backward d_offsets (padding)", do1, c, pb.P());

    // offset blocks
    const auto W = to_store_vec<T>(weight_vec<T>(c));
    const auto bias = to_store_vec<T>(normal_vec(c.rng, static_cast<size_t>(pb.P())));
    const talkconv::dropout_params dp{i % 2 ? 0.2f : 0.0f, 5 + static_cast<std::uint64_t>(i), i % 2 == 1};
    const auto len = lengths_of(pb);
    std::vector<A> of0(pb.o_size(), A(-1)), op0(pb.o_size(), A(-1)), of1(pb.o_size(), A(-2)), op1(pb.o_size(), A(-2));
    cpu::offsets_forward<T>(c.shape(), c.window(), x.data(), W.data(), bias.data(), dp, of0.data(), op0.data(), lengths_ptr(len));
    cpu::offsets_forward<T>(c.shape(), c.window(), xg.data(), W.data(), bias.data(), dp, of1.data(), op1.data(), lengths_ptr(len));
    PT_CHECK_ROWS_BITWISE("offsets_forward offsets", of0, of1, c, pb.P(), all_rows());
    PT_CHECK_ROWS_BITWISE("offsets_forward offsets_pre", op0, op1, c, pb.P(), all_rows());
    PT_CHECK_PADDING_ZERO("offsets_forward offsets (padding)", of1, c, pb.P());
    PT_CHECK_PADDING_ZERO("offsets_forward offsets_pre (padding)", op1, c, pb.P());
    auto opg = op1, dog = do1;
    fill_padding(opg, c, pb.P(), c.rng), fill_padding(dog, c, pb.P(), c.rng);
    std::vector<T> odx0 = dx0, odx1 = dx0, dW0(W.size()), dW1(W.size()), db0(bias.size()), db1(bias.size());
    cpu::offsets_backward<T>(c.shape(), c.window(), x.data(), W.data(), op0.data(), do0.data(), dp, odx0.data(), dW0.data(),
                             db0.data(), lengths_ptr(len));
    cpu::offsets_backward<T>(c.shape(), c.window(), xg.data(), W.data(), opg.data(), dog.data(), dp, odx1.data(), dW1.data(),
                             db1.data(), lengths_ptr(len));
    PT_CHECK_ROWS_BITWISE("offsets_backward dx (all rows: padded rows are left as they were)", odx0, odx1, c, pb.C, all_rows());
    CHECK(bitwise_equal(dW0, dW1));
    CHECK(bitwise_equal(db0, db1));

    // the layer, with saved offsets (garbage in their padding) and recomputed
    const auto r0 = lib_layer<T>(c, x, W, bias, dy, dp, true);
    auto saved_g = r0.saved;
    fill_padding(saved_g, c, pb.P(), c.rng);
    const auto r1 = lib_layer<T>(c, xg, W, bias, dyg, dp, true, &saved_g);
    PT_CHECK_ROWS_BITWISE("talk_conv y (valid rows)", r0.y, r1.y, c, pb.C, valid);
    PT_CHECK_ROWS_BITWISE("talk_conv saved_offsets", r0.saved, r1.saved, c, pb.P(), all_rows());
    PT_CHECK_PADDING_ZERO("talk_conv y (padding)", r1.y, c, pb.C);
    PT_CHECK_PADDING_ZERO("talk_conv saved_offsets (padding)", r1.saved, c, pb.P());
    PT_CHECK_ROWS_BITWISE("talk_conv dx (valid rows)", r0.dx, r1.dx, c, pb.C, valid);
    PT_CHECK_PADDING_ZERO("talk_conv dx (padding)", r1.dx, c, pb.C);
    CHECK(bitwise_equal(r0.dW, r1.dW));
    CHECK(bitwise_equal(r0.db, r1.db));
    count_case("padding/" + dtype_name<T>());
  }
  MESSAGE("padding/", dtype_name<T>(), ": ", case_counts()["padding/" + dtype_name<T>()], " random cases");
}

// ---- 5. dropout switched off ---------------------------------------------------------------------------------
// SPEC step 1 applies dropout only in training, and with p = 0 the mask keeps everything and the scale
// m / (1 - p) is 1: training with p = 0 (any seed) and inference with any p (any seed) are bitwise
// inference, in every output of the layer and of the offset blocks.
TEST_CASE_TEMPLATE("properties: dropout p = 0 in training, and any p in inference, equal inference bitwise", T, PT_DTYPES) {
  using A = acc<T>;
  const std::uint64_t base = 55;
  const int n = draws(400);
  for (int i = 0; i < n; ++i) {
    pcase c = draw_case(base, i, i % 2 == 1);
    const ref::problem& pb = c.pb;
    INFO(c.str(dtype_name<T>()));
    const auto x = to_layout<T>(data_vec<T>(c, pb.x_size()), c.lay, pb.T, pb.B, pb.C);
    const auto dy = to_layout<T>(data_vec<T>(c, pb.x_size()), c.lay, pb.T, pb.B, pb.C);
    const auto W = to_store_vec<T>(weight_vec<T>(c));
    const auto bias = to_store_vec<T>(normal_vec(c.rng, static_cast<size_t>(pb.P())));
    const auto d_o = to_layout<A>(normal_vec(c.rng, pb.o_size()), c.lay, pb.T, pb.B, pb.P());
    const float p_any = std::uniform_real_distribution<float>(0.0f, 0.99f)(c.rng);
    const std::uint64_t s1 = c.rng(), s2 = c.rng();
    const talkconv::dropout_params inference{}, train0{0.0f, s1, true}, infer_p{p_any, s2, false};
    CAPTURE(p_any);
    const auto len = lengths_of(pb);
    auto offsets_all = [&](const talkconv::dropout_params& dp) {
      std::vector<A> o(pb.o_size(), A(-3)), op(pb.o_size(), A(-3));
      cpu::offsets_forward<T>(c.shape(), c.window(), x.data(), W.data(), bias.data(), dp, o.data(), op.data(), lengths_ptr(len));
      std::vector<T> dx(x.size(), to_store<T>(0.5)), dW(W.size()), db(bias.size());
      cpu::offsets_backward<T>(c.shape(), c.window(), x.data(), W.data(), op.data(), d_o.data(), dp, dx.data(), dW.data(),
                               db.data(), lengths_ptr(len));
      return std::make_tuple(o, op, dx, dW, db);
    };
    const auto ref_layer = lib_layer<T>(c, x, W, bias, dy, inference);
    const auto ref_off = offsets_all(inference);
    for (const auto& dp : {train0, infer_p}) {
      INFO("dropout p=", dp.p, " training=", dp.training, " seed=", dp.seed);
      const auto r = lib_layer<T>(c, x, W, bias, dy, dp);
      CHECK(bitwise_equal(r.y, ref_layer.y));
      CHECK(bitwise_equal(r.saved, ref_layer.saved));
      CHECK(bitwise_equal(r.dx, ref_layer.dx));
      CHECK(bitwise_equal(r.dW, ref_layer.dW));
      CHECK(bitwise_equal(r.db, ref_layer.db));
      const auto rs = lib_layer<T>(c, x, W, bias, dy, dp, true, &ref_layer.saved);  // saved-offsets path
      CHECK(bitwise_equal(rs.dx, ref_layer.dx));
      const auto o = offsets_all(dp);
      CHECK(bitwise_equal(std::get<0>(o), std::get<0>(ref_off)));
      CHECK(bitwise_equal(std::get<1>(o), std::get<1>(ref_off)));
      CHECK(bitwise_equal(std::get<2>(o), std::get<2>(ref_off)));
      CHECK(bitwise_equal(std::get<3>(o), std::get<3>(ref_off)));
      CHECK(bitwise_equal(std::get<4>(o), std::get<4>(ref_off)));
    }
    count_case("dropout-off/" + dtype_name<T>());
  }
  MESSAGE("dropout-off/", dtype_name<T>(), ": ", case_counts()["dropout-off/" + dtype_name<T>()], " random cases");
}

// ---- 6. the adjoint identity ---------------------------------------------------------------------------------
// For fixed offsets the window is a linear map J (SPEC step 4) and window_backward's dx is J^T dy (SPEC
// Backward, window to input), so <J x, dy> = <x, J^T dy> for every x and dy: a dot-product test of the
// forward against the backward, padding included (both are 0 there). In double the two sides agree to
// ~1e-16 per term: the bar is 1e-12 of the sum of |terms|; in float 1e-5 of it.
TEST_CASE_TEMPLATE("properties: <window_forward(x), dy> = <x, window_backward(dy)> (dot-product test)", T, double, float) {
  const std::uint64_t base = 66;
  const int n = draws(std::is_same<T, double>::value ? 1600 : 800);
  for (int i = 0; i < n; ++i) {
    pcase c = draw_case(base, i, i % 2 == 1);
    const ref::problem& pb = c.pb;
    INFO(c.str(dtype_name<T>()));
    const vec x = data_vec<T>(c, pb.x_size()), dy = data_vec<T>(c, pb.x_size());
    const auto o = offsets_in<T>(c, i % 3 == 0 ? 2.0 : 1.0);
    const auto xs = to_layout<T>(x, c.lay, pb.T, pb.B, pb.C), dys = to_layout<T>(dy, c.lay, pb.T, pb.B, pb.C);
    const vec y = from_layout(lib_window_forward<T>(c, xs, o).data(), c.lay, pb.T, pb.B, pb.C);
    std::vector<T> dxs;
    std::vector<acc<T>> d_o;
    lib_window_backward<T>(c, xs, o, dys, dxs, d_o);
    const vec dx = from_layout(dxs.data(), c.lay, pb.T, pb.B, pb.C);
    double lhs = 0.0, rhs = 0.0, mag = 0.0;
    for (size_t k = 0; k < x.size(); ++k) {
      lhs += y[k] * dy[k], rhs += x[k] * dx[k];
      mag += std::fabs(y[k] * dy[k]) + std::fabs(x[k] * dx[k]);
    }
    const double bar = (std::is_same<T, double>::value ? 1e-12 : 1e-5) * std::max(mag, 1e-300);
    INFO("<J x, dy> = ", lhs, "  <x, J^T dy> = ", rhs, "  |diff| = ", std::fabs(lhs - rhs), "  bar = ", bar);
    CHECK(std::fabs(lhs - rhs) <= bar);
    count_case("adjoint/" + dtype_name<T>());
  }
  MESSAGE("adjoint/", dtype_name<T>(), ": ", case_counts()["adjoint/" + dtype_name<T>()], " random cases");
}

// ---- 7. time reversal -------------------------------------------------------------------------------------------
// Reverse each sequence's valid part (t -> n_b - 1 - t), swap L and M and the left and right offsets:
// then a_l' = n_b - 1 - a_r and a_r' = n_b - 1 - a_l (the clamp to [0, n_b - 1] is symmetric), the whole
// tokens and both fractional edges map onto each other, K is unchanged, so y' is y reversed; likewise
// dx' is dx reversed (dy reversed) and the offset gradients swap sides. A causal problem (M = 0) reverses
// into a bidirectional one with L' = 0 and M' = L, whose left offsets do nothing (their gradient is 0).
// Not bitwise (the sums run the other way): tol<T>() of the window scale.
struct reversal {
  ref::problem pb;  // the reversed problem
  // canonical [T, B, width] tensor reversed along each sequence's valid part (padding kept in place)
  vec flip(const ref::problem& orig, const vec& v, long width) const {
    vec r = v;
    for (long b = 0; b < orig.B; ++b)
      for (long t = 0; t < orig.n(b); ++t)
        for (long j = 0; j < width; ++j)
          r[static_cast<size_t>((t * orig.B + b) * width + j)] = v[static_cast<size_t>(((orig.n(b) - 1 - t) * orig.B + b) * width + j)];
    return r;
  }
  // offsets [T, B, P] of the original -> [T, B, 2H] of the reversed problem: left <- right, right <- left
  // (a causal original's left offsets become the right ones; the new left ones are `filler`).
  vec swap_offsets(const ref::problem& orig, const vec& o, double filler) const {
    vec f = flip(orig, o, orig.P());
    vec r(static_cast<size_t>(orig.T * orig.B * 2 * orig.H), filler);
    for (long t = 0; t < orig.T; ++t)
      for (long b = 0; b < orig.B; ++b)
        for (long h = 0; h < orig.H; ++h) {
          const size_t row = static_cast<size_t>((t * orig.B + b) * 2 * orig.H);
          const double ol = f[orig.oi(t, b, h)];
          r[row + static_cast<size_t>(orig.H + h)] = ol;
          if (!orig.causal) r[row + static_cast<size_t>(h)] = f[orig.oi(t, b, orig.H + h)];
        }
    return r;
  }
  // A [P, C] (or [P]) parameter of the original as one of the reversed problem: rows swapped the same way.
  vec swap_rows(const ref::problem& orig, const vec& w, long cols, const vec& filler_rows) const {
    vec r = filler_rows;
    for (long h = 0; h < orig.H; ++h)
      for (long cc = 0; cc < cols; ++cc) {
        r[static_cast<size_t>((orig.H + h) * cols + cc)] = w[static_cast<size_t>(h * cols + cc)];
        if (!orig.causal) r[static_cast<size_t>(h * cols + cc)] = w[static_cast<size_t>((orig.H + h) * cols + cc)];
      }
    return r;
  }
};
reversal reverse_of(const ref::problem& pb) {
  reversal r;
  r.pb = pb;
  r.pb.causal = false;
  r.pb.L = pb.M;
  r.pb.M = pb.L;
  return r;
}

TEST_CASE_TEMPLATE("properties: time reversal swaps L and M and the offsets' sides (building blocks)", T, PT_DTYPES) {
  using A = acc<T>;
  const std::uint64_t base = 77;
  const int n = draws(600);
  for (int i = 0; i < n; ++i) {
    pcase c = draw_case(base, i, i % 2 == 1);
    const ref::problem& pb = c.pb;
    INFO(c.str(dtype_name<T>()));
    const reversal rv = reverse_of(pb);
    pcase cr = c;
    cr.pb = rv.pb;
    const vec x = data_vec<T>(c, pb.x_size()), dy = data_vec<T>(c, pb.x_size());
    const vec o = window_offsets<A>(c.rng, pb, i % 3 == 0 ? 2.0 : 1.0);
    auto Lx = [&](const ref::problem& q, const vec& v) { return to_layout<T>(v, c.lay, q.T, q.B, q.C); };
    auto Lo = [&](const ref::problem& q, const vec& v) { return to_layout<A>(v, c.lay, q.T, q.B, q.P()); };
    const vec y = from_layout(lib_window_forward<T>(c, Lx(pb, x), Lo(pb, o)).data(), c.lay, pb.T, pb.B, pb.C);
    const vec o_r = rv.swap_offsets(pb, o, 0.75);
    const vec y_r = from_layout(lib_window_forward<T>(cr, Lx(pb, rv.flip(pb, x, pb.C)), Lo(rv.pb, o_r)).data(), c.lay, pb.T,
                                pb.B, pb.C);
    TT_CHECK_CLOSE("y of the reversed problem vs y reversed", y_r, rv.flip(pb, y, pb.C), tol<T>(), wscale(x, y));
    std::vector<T> dx, dx_r;
    std::vector<A> d_o, d_o_r;
    lib_window_backward<T>(c, Lx(pb, x), Lo(pb, o), Lx(pb, dy), dx, d_o);
    lib_window_backward<T>(cr, Lx(pb, rv.flip(pb, x, pb.C)), Lo(rv.pb, o_r), Lx(pb, rv.flip(pb, dy, pb.C)), dx_r, d_o_r);
    const vec gx = from_layout(dx.data(), c.lay, pb.T, pb.B, pb.C);
    TT_CHECK_CLOSE("dx of the reversed problem vs dx reversed", from_layout(dx_r.data(), c.lay, pb.T, pb.B, pb.C),
                   rv.flip(pb, gx, pb.C), tol<T>(), dx_scale(gx, dy));
    const vec go = from_layout(d_o.data(), c.lay, pb.T, pb.B, pb.P());
    TT_CHECK_CLOSE("d_offsets of the reversed problem vs d_offsets reversed and swapped",
                   from_layout(d_o_r.data(), c.lay, pb.T, pb.B, rv.pb.P()), rv.swap_offsets(pb, go, 0.0), tol<A>(),
                   do_scale(pb, go, x, dy));
    count_case("reversal-window/" + dtype_name<T>());
  }
  MESSAGE("reversal-window/", dtype_name<T>(), ": ", case_counts()["reversal-window/" + dtype_name<T>()], " random cases");
}

// The layer: the same reversal with W's and bias's left and right rows swapped (inference: the dropout
// mask is keyed on t and the offset index, which the reversal moves). dweight and dbias swap rows; a
// causal original's reversed left rows get a zero gradient (L' = 0).
TEST_CASE_TEMPLATE("properties: time reversal of talk_conv (y, dx reversed; dweight, dbias rows swapped)", T, float, double) {
  const std::uint64_t base = 78;
  const int n = draws(480);
  for (int i = 0; i < n; ++i) {
    pcase c = draw_case(base, i, i % 2 == 1);
    const ref::problem& pb = c.pb;
    INFO(c.str(dtype_name<T>()));
    const reversal rv = reverse_of(pb);
    pcase cr = c;
    cr.pb = rv.pb;
    const vec x = data_vec<T>(c, pb.x_size()), dy = data_vec<T>(c, pb.x_size());
    const vec W = weight_vec<T>(c), bias = round_through<T>(normal_vec(c.rng, static_cast<size_t>(pb.P())));
    const vec W_fill = round_through<T>(normal_vec(c.rng, static_cast<size_t>(2 * pb.H * pb.C)));
    const vec b_fill = round_through<T>(normal_vec(c.rng, static_cast<size_t>(2 * pb.H)));
    const vec W_r = rv.swap_rows(pb, W, pb.C, W_fill), b_r = rv.swap_rows(pb, bias, 1, b_fill);
    auto Lx = [&](const vec& v) { return to_layout<T>(v, c.lay, pb.T, pb.B, pb.C); };
    const talkconv::dropout_params inference{};
    const auto r = lib_layer<T>(c, Lx(x), to_store_vec<T>(W), to_store_vec<T>(bias), Lx(dy), inference);
    const auto rr = lib_layer<T>(cr, Lx(rv.flip(pb, x, pb.C)), to_store_vec<T>(W_r), to_store_vec<T>(b_r),
                                 Lx(rv.flip(pb, dy, pb.C)), inference);
    const vec y = from_layout(r.y.data(), c.lay, pb.T, pb.B, pb.C), gx = from_layout(r.dx.data(), c.lay, pb.T, pb.B, pb.C);
    TT_CHECK_CLOSE("y reversed", from_layout(rr.y.data(), c.lay, pb.T, pb.B, pb.C), rv.flip(pb, y, pb.C), tol<T>(), wscale(x, y));
    TT_CHECK_CLOSE("dx reversed", from_layout(rr.dx.data(), c.lay, pb.T, pb.B, pb.C), rv.flip(pb, gx, pb.C), tol<T>(),
                   dx_scale(gx, dy));
    // Scale of dweight / dbias: the largest sum of |terms| (tt::sum_scale) is bounded by the norms here.
    const vec dW = to_dbl_vec(r.dW), db = to_dbl_vec(r.db);
    const double sW = std::max(1e-300, static_cast<double>(pb.T * pb.B) * max_abs(dW) / std::max(1.0, static_cast<double>(pb.T * pb.B)) +
                                           mean_abs(x) * mean_abs(dy) * static_cast<double>(pb.T * pb.B * pb.R()));
    TT_CHECK_CLOSE("dweight rows swapped", to_dbl_vec(rr.dW), rv.swap_rows(pb, dW, pb.C, vec(W_r.size(), 0.0)), tol<T>(), sW);
    TT_CHECK_CLOSE("dbias rows swapped", to_dbl_vec(rr.db), rv.swap_rows(pb, db, 1, vec(b_r.size(), 0.0)), tol<T>(), sW);
    count_case("reversal-layer/" + dtype_name<T>());
  }
  MESSAGE("reversal-layer/", dtype_name<T>(), ": ", case_counts()["reversal-layer/" + dtype_name<T>()], " random cases");
}

// ---- 8. head tying ------------------------------------------------------------------------------------------------
// A head's R channels share one window and nothing else couples channels in y or dx: permuting the heads
// (with their offset rows) and the channels inside each head permutes y and dx, bit for bit (each channel
// runs the same operations on the same values wherever its column lies; there is no reduction across
// channels in y or dx). The offset gradients are per-head sums over the channels, whose order the
// permutation inside a head changes: equal to tol<A>().
TEST_CASE_TEMPLATE("properties: head tying: permuting heads and channels within heads permutes y and dx bitwise", T, PT_DTYPES) {
  using A = acc<T>;
  const std::uint64_t base = 88;
  const int n = draws(600);
  for (int i = 0; i < n; ++i) {
    pcase c = draw_case(base, i, i % 2 == 1);
    const ref::problem& pb = c.pb;
    INFO(c.str(dtype_name<T>()));
    std::vector<long> head_perm(static_cast<size_t>(pb.H)), chan_of(static_cast<size_t>(pb.C));  // new channel -> old
    std::iota(head_perm.begin(), head_perm.end(), 0L);
    std::shuffle(head_perm.begin(), head_perm.end(), c.rng);  // new head g holds old head head_perm[g]
    for (long g = 0; g < pb.H; ++g) {
      std::vector<long> in(static_cast<size_t>(pb.R()));
      std::iota(in.begin(), in.end(), 0L);
      std::shuffle(in.begin(), in.end(), c.rng);
      for (long r = 0; r < pb.R(); ++r) chan_of[static_cast<size_t>(g * pb.R() + r)] = head_perm[static_cast<size_t>(g)] * pb.R() + in[static_cast<size_t>(r)];
    }
    auto perm_x = [&](const vec& v) {
      vec r(v.size());
      for (long t = 0; t < pb.T; ++t)
        for (long b = 0; b < pb.B; ++b)
          for (long cc = 0; cc < pb.C; ++cc) r[pb.xi(t, b, cc)] = v[pb.xi(t, b, chan_of[static_cast<size_t>(cc)])];
      return r;
    };
    auto perm_o = [&](const vec& v) {
      vec r(v.size());
      for (long t = 0; t < pb.T; ++t)
        for (long b = 0; b < pb.B; ++b)
          for (long g = 0; g < pb.H; ++g) {
            r[pb.oi(t, b, g)] = v[pb.oi(t, b, head_perm[static_cast<size_t>(g)])];
            if (!pb.causal) r[pb.oi(t, b, pb.H + g)] = v[pb.oi(t, b, pb.H + head_perm[static_cast<size_t>(g)])];
          }
      return r;
    };
    const vec x = data_vec<T>(c, pb.x_size()), dy = data_vec<T>(c, pb.x_size());
    const vec o = window_offsets<A>(c.rng, pb, i % 3 == 0 ? 2.0 : 1.0);
    auto Lx = [&](const vec& v) { return to_layout<T>(v, c.lay, pb.T, pb.B, pb.C); };
    auto Lo = [&](const vec& v) { return to_layout<A>(v, c.lay, pb.T, pb.B, pb.P()); };
    // y of the permuted problem vs y permuted, compared as raw storage bits (canonical order).
    auto y = lib_window_forward<T>(c, Lx(x), Lo(o));
    auto yp = lib_window_forward<T>(c, Lx(perm_x(x)), Lo(perm_o(o)));
    std::vector<T> dx, dxp;
    std::vector<A> d_o, d_op;
    lib_window_backward<T>(c, Lx(x), Lo(o), Lx(dy), dx, d_o);
    lib_window_backward<T>(c, Lx(perm_x(x)), Lo(perm_o(o)), Lx(perm_x(dy)), dxp, d_op);
    auto permuted_bits = [&](const std::vector<T>& v) {  // v (library layout) with its channels permuted
      std::vector<T> r(v.size());
      for (long t = 0; t < pb.T; ++t)
        for (long b = 0; b < pb.B; ++b)
          for (long cc = 0; cc < pb.C; ++cc)
            r[lidx(c.lay, pb.T, pb.B, pb.C, t, b, cc)] = v[lidx(c.lay, pb.T, pb.B, pb.C, t, b, chan_of[static_cast<size_t>(cc)])];
      return r;
    };
    PT_CHECK_ROWS_BITWISE("y of the permuted problem vs y permuted", yp, permuted_bits(y), c, pb.C, all_rows());
    PT_CHECK_ROWS_BITWISE("dx of the permuted problem vs dx permuted", dxp, permuted_bits(dx), c, pb.C, all_rows());
    const vec go = from_layout(d_o.data(), c.lay, pb.T, pb.B, pb.P());
    TT_CHECK_CLOSE("d_offsets of the permuted problem vs d_offsets permuted", from_layout(d_op.data(), c.lay, pb.T, pb.B, pb.P()),
                   perm_o(go), tol<A>(), do_scale(pb, go, x, dy));
    count_case("head-tying/" + dtype_name<T>());
  }
  MESSAGE("head-tying/", dtype_name<T>(), ": ", case_counts()["head-tying/" + dtype_name<T>()], " random cases");
}

// ---- 9. the normalization K ---------------------------------------------------------------------------------------
// The bounds depend on o_l L and o_r M only: (2L, 2M, o / 2) has bitwise the same bounds as (L, M, o)
// (halving and doubling are exact), so y' K' = y K with K' = 2L + 2M + 1: y' = y K / K', dx' = dx K / K',
// and the offset gradients d' = 2 d K / K' (the factor L' = 2L). To tol<T>() of the window scale.
TEST_CASE_TEMPLATE("properties: doubling L and M and halving the offsets rescales by K / K'", T, float, double) {
  using A = acc<T>;
  const std::uint64_t base = 99;
  const int n = draws(600);
  for (int i = 0; i < n; ++i) {
    pcase c = draw_case(base, i, i % 2 == 1);
    const ref::problem& pb = c.pb;
    INFO(c.str(dtype_name<T>()));
    pcase c2 = c;
    c2.pb.L = 2 * pb.L, c2.pb.M = 2 * pb.M;
    const double k = static_cast<double>(pb.K()) / static_cast<double>(c2.pb.K());
    const vec x = data_vec<T>(c, pb.x_size()), dy = data_vec<T>(c, pb.x_size());
    const vec o = window_offsets<A>(c.rng, pb, i % 3 == 0 ? 2.0 : 1.0);
    vec o2 = o;
    for (auto& e : o2) e /= 2.0;
    auto Lx = [&](const vec& v) { return to_layout<T>(v, c.lay, pb.T, pb.B, pb.C); };
    auto Lo = [&](const vec& v) { return to_layout<A>(v, c.lay, pb.T, pb.B, pb.P()); };
    auto scaled = [](const vec& v, double s) {
      vec r(v);
      for (auto& e : r) e *= s;
      return r;
    };
    const vec y = from_layout(lib_window_forward<T>(c, Lx(x), Lo(o)).data(), c.lay, pb.T, pb.B, pb.C);
    const vec y2 = from_layout(lib_window_forward<T>(c2, Lx(x), Lo(o2)).data(), c.lay, pb.T, pb.B, pb.C);
    TT_CHECK_CLOSE("y' vs y K / K'", y2, scaled(y, k), tol<T>(), wscale(x, y));
    std::vector<T> dx, dx2;
    std::vector<A> d_o, d_o2;
    lib_window_backward<T>(c, Lx(x), Lo(o), Lx(dy), dx, d_o);
    lib_window_backward<T>(c2, Lx(x), Lo(o2), Lx(dy), dx2, d_o2);
    const vec gx = from_layout(dx.data(), c.lay, pb.T, pb.B, pb.C), go = from_layout(d_o.data(), c.lay, pb.T, pb.B, pb.P());
    TT_CHECK_CLOSE("dx' vs dx K / K'", from_layout(dx2.data(), c.lay, pb.T, pb.B, pb.C), scaled(gx, k), tol<T>(), dx_scale(gx, dy));
    TT_CHECK_CLOSE("d_offsets' vs 2 d_offsets K / K'", from_layout(d_o2.data(), c.lay, pb.T, pb.B, pb.P()), scaled(go, 2 * k),
                   tol<A>(), do_scale(pb, go, x, dy));
    count_case("k-normalization/" + dtype_name<T>());
  }
  MESSAGE("k-normalization/", dtype_name<T>(), ": ", case_counts()["k-normalization/" + dtype_name<T>()], " random cases");
}

// ---- 11. saved offsets or recomputation ------------------------------------------------------------------------------
// README: the backward takes the forward's saved offsets or recomputes them, and "both give bitwise the
// same gradients". The forward projects a tile's rows in blocks from the tile's start; the recomputation
// must project the same blocks (a GEMM's rounding of a row depends on the block it is computed in), which
// ragged lengths (a tile ending at n_b) used to break.
TEST_CASE_TEMPLATE("properties: backward with saved offsets equals backward with recomputed offsets, bitwise", T, PT_DTYPES) {
  const std::uint64_t base = 122;
  const int n = draws(400);
  for (int i = 0; i < n; ++i) {
    pcase c = draw_case(base, i, i % 2 == 1, i % 4 < 2, i % 4 == 0);  // a quarter long and ragged
    const ref::problem& pb = c.pb;
    const float p = i % 3 == 0 ? 0.0f : 0.3f;
    const talkconv::dropout_params dp{p, 31 + static_cast<std::uint64_t>(i), p > 0.0f};
    INFO(c.str(dtype_name<T>()), " dropout p=", p);
    const auto x = to_layout<T>(data_vec<T>(c, pb.x_size()), c.lay, pb.T, pb.B, pb.C);
    const auto dy = to_layout<T>(data_vec<T>(c, pb.x_size()), c.lay, pb.T, pb.B, pb.C);
    const auto W = to_store_vec<T>(weight_vec<T>(c));
    const auto bias = to_store_vec<T>(normal_vec(c.rng, static_cast<size_t>(pb.P())));
    const auto recomputed = lib_layer<T>(c, x, W, bias, dy, dp);
    const auto saved = lib_layer<T>(c, x, W, bias, dy, dp, true, &recomputed.saved);
    CHECK(bitwise_equal(saved.dx, recomputed.dx));
    CHECK(bitwise_equal(saved.dW, recomputed.dW));
    CHECK(bitwise_equal(saved.db, recomputed.db));
    count_case("saved-vs-recomputed/" + dtype_name<T>());
  }
  MESSAGE("saved-vs-recomputed/", dtype_name<T>(), ": ", case_counts()["saved-vs-recomputed/" + dtype_name<T>()], " random cases");
}

// ---- 10. sequences are independent; the layout is only a layout --------------------------------------------------
// Every sequence is computed on its own (its tiles, sums and taps never mix with another's), and the tile
// plan depends on (K, T, B) only: permuting the sequences of a batch (x, offsets, dy and lengths alike)
// permutes y, dx and the offset gradients of the window blocks bit for bit, and so does storing them
// batch-major instead of time-major (the same element-wise arithmetic at other addresses).
TEST_CASE_TEMPLATE("properties: permuting sequences and switching tbc / btc permutes the window's results bitwise", T, PT_DTYPES) {
  using A = acc<T>;
  const std::uint64_t base = 111;
  const int n = draws(600);
  for (int i = 0; i < n; ++i) {
    pcase c = draw_case(base, i, i % 2 == 1);
    const ref::problem& pb = c.pb;
    INFO(c.str(dtype_name<T>()));
    std::vector<long> bp(static_cast<size_t>(pb.B));  // new sequence b holds old bp[b]
    std::iota(bp.begin(), bp.end(), 0L);
    std::shuffle(bp.begin(), bp.end(), c.rng);
    pcase cp = c;
    cp.lay = c.lay == layout::tbc ? layout::btc : layout::tbc;
    if (!pb.lengths.empty())
      for (long b = 0; b < pb.B; ++b) cp.pb.lengths[static_cast<size_t>(b)] = pb.lengths[static_cast<size_t>(bp[static_cast<size_t>(b)])];
    auto perm = [&](const vec& v, long width) {
      vec r(v.size());
      for (long t = 0; t < pb.T; ++t)
        for (long b = 0; b < pb.B; ++b)
          for (long j = 0; j < width; ++j)
            r[static_cast<size_t>((t * pb.B + b) * width + j)] = v[static_cast<size_t>((t * pb.B + bp[static_cast<size_t>(b)]) * width + j)];
      return r;
    };
    const vec x = data_vec<T>(c, pb.x_size()), dy = data_vec<T>(c, pb.x_size());
    const vec o = window_offsets<A>(c.rng, pb, i % 3 == 0 ? 2.0 : 1.0);
    const auto y = lib_window_forward<T>(c, to_layout<T>(x, c.lay, pb.T, pb.B, pb.C), to_layout<A>(o, c.lay, pb.T, pb.B, pb.P()));
    const auto yp = lib_window_forward<T>(cp, to_layout<T>(perm(x, pb.C), cp.lay, pb.T, pb.B, pb.C),
                                          to_layout<A>(perm(o, pb.P()), cp.lay, pb.T, pb.B, pb.P()));
    std::vector<T> dx, dxp;
    std::vector<A> d_o, d_op;
    lib_window_backward<T>(c, to_layout<T>(x, c.lay, pb.T, pb.B, pb.C), to_layout<A>(o, c.lay, pb.T, pb.B, pb.P()),
                           to_layout<T>(dy, c.lay, pb.T, pb.B, pb.C), dx, d_o);
    lib_window_backward<T>(cp, to_layout<T>(perm(x, pb.C), cp.lay, pb.T, pb.B, pb.C),
                           to_layout<A>(perm(o, pb.P()), cp.lay, pb.T, pb.B, pb.P()),
                           to_layout<T>(perm(dy, pb.C), cp.lay, pb.T, pb.B, pb.C), dxp, d_op);
    // Compare as raw bits, both moved to the canonical order of the permuted problem.
    auto bits_perm = [&](const auto& v, long width) {  // v (c's layout), sequences permuted, canonical order
      std::remove_const_t<std::remove_reference_t<decltype(v)>> r(v.size());
      for (long t = 0; t < pb.T; ++t)
        for (long b = 0; b < pb.B; ++b)
          for (long j = 0; j < width; ++j)
            r[static_cast<size_t>((t * pb.B + b) * width + j)] = v[lidx(c.lay, pb.T, pb.B, width, t, bp[static_cast<size_t>(b)], j)];
      return r;
    };
    auto bits_canon = [&](const auto& v, long width) {  // v (cp's layout) in canonical order
      std::remove_const_t<std::remove_reference_t<decltype(v)>> r(v.size());
      for (long t = 0; t < pb.T; ++t)
        for (long b = 0; b < pb.B; ++b)
          for (long j = 0; j < width; ++j) r[static_cast<size_t>((t * pb.B + b) * width + j)] = v[lidx(cp.lay, pb.T, pb.B, width, t, b, j)];
      return r;
    };
    CHECK(bitwise_equal(bits_canon(yp, pb.C), bits_perm(y, pb.C)));
    CHECK(bitwise_equal(bits_canon(dxp, pb.C), bits_perm(dx, pb.C)));
    CHECK(bitwise_equal(bits_canon(d_op, pb.P()), bits_perm(d_o, pb.P())));
    count_case("batch-layout/" + dtype_name<T>());
  }
  MESSAGE("batch-layout/", dtype_name<T>(), ": ", case_counts()["batch-layout/" + dtype_name<T>()], " random cases");
}

}  // TEST_SUITE
