// talkconv's demo (scripts/demo.sh): a bidirectional and a causal TaLK layer, forward and backward,
// checked against a naive windowed sum written from SPEC's direct form, finite differences and
// incremental decoding, and timed next to the naive sum. Exits non-zero if a check fails.
//
//   talkconv_demo [--quick] [--threads N]
//
// --quick runs the same checks on smaller sizes (ctest's smoke test); --threads sets OpenMP's count.
#include <talkconv/talkconv.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

using talkconv::index_t;

// ---- deterministic input --------------------------------------------------------------------------------

// Normal samples from mt19937 (whose output the standard fixes) by Box-Muller, so the input is the
// same on every platform.
struct normal_source {
  std::mt19937 gen;
  explicit normal_source(std::uint32_t seed) : gen(seed) {}
  double uniform() { return (double(gen() >> 5) + 0.5) / double(1u << 27); }
  double operator()(double mean, double sd) {
    const double u = uniform(), v = uniform();
    return mean + sd * std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
};

template <class T>
std::vector<T> normal_vector(size_t n, std::uint32_t seed, double mean, double sd) {
  normal_source g(seed);
  std::vector<T> v(n);
  for (auto& e : v) e = T(g(mean, sd));
  return v;
}

template <class To, class From>
std::vector<To> cast_vector(const std::vector<From>& v) {
  return std::vector<To>(v.begin(), v.end());
}

// ---- the naive reference: SPEC's direct form, in double ---------------------------------------------------

// y[t,b,c] = ( sum_{tau=ceil(a_l)}^{floor(a_r)} x[tau] + (a_r - floor(a_r)) x[ceil(a_r)]
//              + (ceil(a_l) - a_l) x[floor(a_l)] ) / K,   a from sigmoid(W x + bias), no dropout.
// Time-major x [T, B, C], weight [P, C], bias [P]. Written from SPEC alone: no prefix sums, no tiles.
std::vector<double> naive_forward(const std::vector<double>& x, const std::vector<double>& weight,
                                  const std::vector<double>& bias, index_t T, index_t B, index_t C, index_t H,
                                  index_t L, index_t M, bool causal) {
  const index_t P = causal ? H : 2 * H, R = C / H;
  const double K = double(L + M + 1);
  std::vector<double> y(x.size(), 0.0), o(static_cast<size_t>(P)), acc(static_cast<size_t>(R));
  auto X = [&](index_t t, index_t b) { return x.data() + (t * B + b) * C; };
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t) {
      for (index_t j = 0; j < P; ++j) {
        double z = bias[size_t(j)];
        for (index_t c = 0; c < C; ++c) z += weight[size_t(j * C + c)] * X(t, b)[c];
        o[size_t(j)] = 1.0 / (1.0 + std::exp(-z));
      }
      for (index_t h = 0; h < H; ++h) {
        const double a_l = std::clamp(double(t) - o[size_t(h)] * double(L), 0.0, double(T - 1));
        const double a_r =
            causal ? double(t) : std::clamp(double(t) + o[size_t(H + h)] * double(M), 0.0, double(T - 1));
        const index_t lo = index_t(std::ceil(a_l)), hi = index_t(std::floor(a_r));
        std::fill(acc.begin(), acc.end(), 0.0);
        for (index_t tau = lo; tau <= hi; ++tau)
          for (index_t r = 0; r < R; ++r) acc[size_t(r)] += X(tau, b)[h * R + r];
        const double fr = a_r - std::floor(a_r), fl = std::ceil(a_l) - a_l;
        for (index_t r = 0; r < R; ++r) {
          double s = acc[size_t(r)];
          if (fr > 0) s += fr * X(index_t(std::ceil(a_r)), b)[h * R + r];
          if (fl > 0) s += fl * X(index_t(std::floor(a_l)), b)[h * R + r];
          y[size_t((t * B + b) * C + h * R + r)] = s / K;
        }
      }
    }
  return y;
}

// ---- calling the layer ----------------------------------------------------------------------------------

template <class T, int Heads>
struct problem {
  talkconv::talk_conv<T, Heads> layer;
  talkconv::seq_shape shape;
  std::vector<T> x, weight, bias;

  problem(const talkconv::talk_config& cfg, index_t T_, index_t B, std::uint32_t seed, double x_mean = 0.0)
      : layer(cfg), shape{T_, B, cfg.channels, talkconv::layout::tbc} {
    const size_t n = size_t(shape.T * shape.B * shape.C);
    x = normal_vector<T>(n, seed, x_mean, 1.0);
    // Offsets spread over (0, 1): projections of O(1), so windows of every length occur.
    weight = normal_vector<T>(size_t(layer.weight_size()), seed + 1, 0.0, 1.0 / std::sqrt(double(cfg.channels)));
    bias = normal_vector<T>(size_t(layer.num_offsets()), seed + 2, 0.0, 0.5);
  }

  void forward(std::vector<T>& y, talkconv::acc_t<T>* saved = nullptr) const {
    talkconv::forward_args<T> a;
    a.shape = shape;
    a.x = x.data();
    a.weight = weight.data();
    a.bias = bias.data();
    a.y = y.data();
    a.saved_offsets = saved;
    layer.forward(a);
  }

  void backward(const std::vector<T>& dy, std::vector<T>& dx, std::vector<T>& dw, std::vector<T>& db,
                const talkconv::acc_t<T>* saved = nullptr) const {
    talkconv::backward_args<T> a;
    a.shape = shape;
    a.x = x.data();
    a.weight = weight.data();
    a.bias = bias.data();
    a.dy = dy.data();
    a.saved_offsets = saved;
    a.dx = dx.data();
    a.dweight = dw.data();
    a.dbias = db.data();
    layer.backward(a);
  }
};

// ---- reporting ----------------------------------------------------------------------------------------

int failures = 0;

void report(const char* what, double value, double bar) {
  const bool ok = value <= bar;  // NaN fails
  if (!ok) ++failures;
  std::printf("  %-64s %9.2e  <= %.0e  %s\n", what, value, bar, ok ? "pass" : "FAIL");
}

void report_bool(const char* what, bool ok, const char* detail) {
  if (!ok) ++failures;
  std::printf("  %-64s %-20s  %s\n", what, detail, ok ? "pass" : "FAIL");
}

template <class A, class B>
double max_abs_diff(const std::vector<A>& a, const std::vector<B>& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(double(a[i]) - double(b[i]));
    if (!(d <= m)) m = d;  // keeps NaN
  }
  return m;
}

template <class V>
double mean_abs(const V& v) {
  double s = 0.0;
  for (const auto& e : v) s += std::abs(double(e));
  return s / double(v.size());
}

// Median wall time in milliseconds of `runs` calls of f (after one warm-up call).
double median_ms(int runs, const std::function<void()>& f) {
  f();
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// ---- the checks ---------------------------------------------------------------------------------------

// Forward of a float layer against the naive sum in double.
template <int Heads>
void check_forward(const char* name, const problem<float, Heads>& p, std::vector<float>& y) {
  const auto& w = p.layer.config();
  p.forward(y);
  const std::vector<double> ref =
      naive_forward(cast_vector<double>(p.x), cast_vector<double>(p.weight), cast_vector<double>(p.bias), p.shape.T,
                    p.shape.B, p.shape.C, p.layer.heads(), w.max_left, w.max_right, w.causal);
  const double err = max_abs_diff(y, ref), scale = mean_abs(p.x);
  const std::string what = std::string(name) + " forward vs naive sum: max |err| / mean |x|";
  report(what.c_str(), err / scale, 1e-5);
}

// Finite differences of loss = sum(g * y) in double against the layer's backward, on a small problem.
void check_gradients(bool causal) {
  const talkconv::talk_config cfg{/*channels*/ 12, /*heads*/ 3, /*max_left*/ 5, /*max_right*/ causal ? 0 : 4, causal};
  problem<double, talkconv::dynamic_heads> p(cfg, /*T*/ 24, /*B*/ 2, /*seed*/ causal ? 77 : 55);
  const std::vector<double> g = normal_vector<double>(p.x.size(), 99, 0.0, 1.0);
  std::vector<double> y(p.x.size()), dx(p.x.size()), dw(p.weight.size()), db(p.bias.size());
  p.backward(g, dx, dw, db);
  auto loss = [&] {
    p.forward(y);
    double s = 0.0;
    for (size_t i = 0; i < y.size(); ++i) s += g[i] * y[i];
    return s;
  };
  double worst = 0.0;
  auto probe = [&](std::vector<double>& param, size_t i, double analytic) {
    const double h = 1e-6, keep = param[i];
    param[i] = keep + h;
    const double up = loss();
    param[i] = keep - h;
    const double down = loss();
    param[i] = keep;
    const double fd = (up - down) / (2 * h);
    worst = std::max(worst, std::abs(fd - analytic) / (1e-3 + std::abs(fd)));
  };
  for (size_t i = 3; i < p.x.size(); i += p.x.size() / 7) probe(p.x, i, dx[i]);
  for (size_t i = 1; i < p.weight.size(); i += p.weight.size() / 5) probe(p.weight, i, dw[i]);
  for (size_t i = 0; i < p.bias.size(); ++i) probe(p.bias, i, db[i]);
  const std::string what =
      std::string(causal ? "causal" : "bidirectional") + ": backward vs finite differences (double), rel err";
  report(what.c_str(), worst, 1e-6);
}

// The 1-minute load average (Linux; -1 elsewhere): timings taken on a busy machine say little.
double load_average() {
  double load = -1.0;
  if (std::FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = -1.0;
    std::fclose(f);
  }
  return load;
}

struct options {
  bool quick = false;
  int threads = 0;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      o.quick = true;
    } else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      o.threads = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--threads N]\n", argv[0]);
      std::exit(2);
    }
  }
  return o;
}

void set_threads(int n) {
#if defined(_OPENMP)
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  const options opt = parse(argc, argv);
  set_threads(opt.threads);
  const int threads = talkconv::cpu::max_threads();
  const index_t T = opt.quick ? 256 : 2048, B = 4, C = 256, H = 8;
  const int runs = opt.quick ? 3 : 5;
  std::printf("talkconv %d.%d.%d demo: TaLK convolution on the CPU, %d thread%s%s\n", TALKCONV_VERSION_MAJOR,
              TALKCONV_VERSION_MINOR, TALKCONV_VERSION_PATCH, threads, threads == 1 ? "" : "s",
              opt.quick ? " (--quick sizes)" : "");

  // The two layers of the demo: an encoder (bidirectional, L = M = 31) and a decoder (causal, L = 63).
  const problem<float, 8> enc(talkconv::talk_config{C, H, 31, 31, false}, T, B, 1);
  const problem<float, 8> dec(talkconv::talk_config{C, H, 63, 0, true}, T, B, 2);
  std::printf("input: T = %lld tokens, B = %lld sequences, C = %lld channels, H = %lld heads, layout [T, B, C]\n",
              (long long)T, (long long)B, (long long)C, (long long)H);
  std::printf("encoder: bidirectional, L = M = 31 (K = 63); decoder: causal, L = 63 (K = 64)\n\nchecks\n");

  // 1. Forward against the naive windowed sum.
  std::vector<float> y_enc(enc.x.size()), y_dec(dec.x.size());
  check_forward("bidirectional", enc, y_enc);
  check_forward("causal", dec, y_dec);

  // 2. Backward against finite differences (double layers, small problems).
  check_gradients(false);
  check_gradients(true);

  // 3. The float backward against the same backward in double, on the full problem.
  std::vector<float> dy = normal_vector<float>(enc.x.size(), 5, 0.0, 1.0);
  std::vector<float> dx(enc.x.size()), dw(enc.weight.size()), db(enc.bias.size());
  std::vector<float> saved(size_t(enc.layer.saved_size(T, B)));
  enc.forward(y_enc, saved.data());
  enc.backward(dy, dx, dw, db, saved.data());
  {
    problem<double, 8> ed(enc.layer.config(), T, B, 1);
    ed.x = cast_vector<double>(enc.x);
    ed.weight = cast_vector<double>(enc.weight);
    ed.bias = cast_vector<double>(enc.bias);
    std::vector<double> dxd(dx.size()), dwd(dw.size()), dbd(db.size());
    ed.backward(cast_vector<double>(dy), dxd, dwd, dbd);
    report("bidirectional float backward vs double: dx max |err| / mean |dx|", max_abs_diff(dx, dxd) / mean_abs(dxd),
           1e-4);
    report("bidirectional float backward vs double: dW max |err| / mean |dW|", max_abs_diff(dw, dwd) / mean_abs(dwd),
           1e-3);
  }

  // 4. Backward with the offsets saved by forward equals backward recomputing them.
  {
    std::vector<float> dx2(dx.size()), dw2(dw.size()), db2(db.size());
    enc.backward(dy, dx2, dw2, db2, nullptr);
    const bool same = dx == dx2 && dw == dw2 && db == db2;
    report_bool("backward with saved offsets vs recomputed offsets", same, same ? "bitwise equal" : "differ");
  }

  // 5. Incremental decoding, token by token, against the full causal forward.
  std::vector<float> y_inc(dec.x.size());
  auto decode_all = [&] {
    talkconv::cpu::decoder<float> state = dec.layer.make_decoder(B);
    for (index_t t = 0; t < T; ++t)
      state.step(dec.x.data() + t * B * C, dec.weight.data(), dec.bias.data(), y_inc.data() + t * B * C);
  };
  decode_all();
  report("causal incremental decoding vs full causal forward: max |err|", max_abs_diff(y_inc, y_dec), 1e-5);

  // 6. Determinism: one thread and all threads give the same bits.
  if (threads > 1) {
    std::vector<float> y1(y_enc.size()), dx1(dx.size()), dw1(dw.size()), db1(db.size());
    set_threads(1);
    enc.forward(y1);
    enc.backward(dy, dx1, dw1, db1, saved.data());
    set_threads(threads);
    const bool same = y1 == y_enc && dx1 == dx && dw1 == dw && db1 == db;
    const std::string what = "determinism: forward + backward, 1 thread vs " + std::to_string(threads) + " threads";
    report_bool(what.c_str(), same, same ? "bitwise equal" : "differ");
  } else {
    std::printf("  %-64s %-20s  skipped\n", "determinism across thread counts", "(one thread)");
  }

  // 7. Accuracy does not degrade with length: T = 10^6 tokens, x ~ N(1, 1) (SPEC's bar).
  {
    const index_t T_long = opt.quick ? 100000 : 1000000;
    const problem<float, 1> lng(talkconv::talk_config{4, 1, 31, 31, false}, T_long, 1, 3, /*x_mean*/ 1.0);
    std::vector<float> y(lng.x.size());
    lng.forward(y);
    const std::vector<double> ref = naive_forward(cast_vector<double>(lng.x), cast_vector<double>(lng.weight),
                                                  cast_vector<double>(lng.bias), T_long, 1, 4, 1, 31, 31, false);
    const std::string what = "T = " + std::to_string(T_long) + ", x ~ N(1, 1): forward vs naive, max |err| / mean |x|";
    report(what.c_str(), max_abs_diff(y, ref) / mean_abs(lng.x), 1e-5);
  }

  // 8. Bad input fails loudly with a named error, before touching memory.
  try {
    talkconv::talk_conv<float> bad(talkconv::talk_config{10, 3, 4, 4, false});
    report_bool("errors: talk_config with C = 10, H = 3 is refused", false, "accepted");
  } catch (const talkconv::error& e) {
    const bool ok = e.code() == talkconv::status::invalid_shape && e.argument() == "C";
    const std::string detail = std::string(talkconv::status_name(e.code())) + ", \"" + e.argument() + "\"";
    report_bool("errors: talk_config with C = 10, H = 3 is refused", ok, detail.c_str());
  }

  // Timings: talkconv against the naive sum (both compute offsets and the window), median of `runs`.
  std::printf("\ntimings (median of %d runs, %d thread%s; naive = SPEC's direct form in double, one thread)\n", runs,
              threads, threads == 1 ? "" : "s");
  const double load = load_average();
  const unsigned cpus = std::thread::hardware_concurrency();
  if (load >= 0.0 && cpus > 0 && load > 0.5 * double(cpus))
    std::printf(
        "  note: load average %.1f on %u CPUs: other work shares the machine, so these timings are rough\n"
        "  (on a shared machine OMP_WAIT_POLICY=passive, or --threads 1, avoids threads spinning at barriers)\n",
        load, cpus);
  std::printf("  %-34s %10s %14s %10s\n", "", "ms", "tokens/s", "speed-up");
  const double tokens = double(T * B);
  auto row = [&](const char* name, double ms, double naive_ms) {
    std::printf("  %-34s %10.2f %14.3g %9.1fx\n", name, ms, tokens / (ms * 1e-3), naive_ms / ms);
  };
  const std::vector<double> xd = cast_vector<double>(enc.x), wd = cast_vector<double>(enc.weight),
                            bd = cast_vector<double>(enc.bias);
  const double naive_ms = median_ms(opt.quick ? 1 : 3, [&] { naive_forward(xd, wd, bd, T, B, C, H, 31, 31, false); });
  const double fwd_ms = median_ms(runs, [&] { enc.forward(y_enc, saved.data()); });
  const double bwd_ms = median_ms(runs, [&] { enc.backward(dy, dx, dw, db, saved.data()); });
  const double bwd_re_ms = median_ms(runs, [&] { enc.backward(dy, dx, dw, db, nullptr); });
  const double cfwd_ms = median_ms(runs, [&] { dec.forward(y_dec); });
  const double inc_ms = median_ms(opt.quick ? 1 : 3, decode_all);
  row("naive windowed sum (bidirectional)", naive_ms, naive_ms);
  row("talkconv forward (bidirectional)", fwd_ms, naive_ms);
  row("talkconv backward (saved offsets)", bwd_ms, naive_ms);
  row("talkconv backward (recomputed)", bwd_re_ms, naive_ms);
  row("talkconv forward (causal)", cfwd_ms, naive_ms);
  row("talkconv incremental decoding", inc_ms, naive_ms);

  std::printf("\n%s\n", failures == 0 ? "all checks passed" : "SOME CHECKS FAILED");
  return failures == 0 ? 0 : 1;
}
