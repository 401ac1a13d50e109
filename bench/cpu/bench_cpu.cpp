// talkconv CPU benchmarks: the layer, each building block, and the baselines (naive windowed sum, the
// original TaLK algorithm, LightConv / DynamicConv, a multithreaded memcpy of the same bytes), in one run.
//
// Names: <family>/<dtype>/T:<T>/B:<B>/C:<C>/H:<H>/L:<L>  (M = L; LightConv / DynamicConv use K = 2L + 1),
// dtype f32, bf16 or f16; decoding: decoder_step/<dtype>/B:/C:/L:/H: (one causal step, constant in the
// context) and kv_attn_step/f32/B:/C:/H:/context: (one KV-cache attention step, the CPU baseline),
// so --benchmark_filter='^window_fwd/f32/' or '/L:31/' select slices. Every benchmark reports
//   bytes_per_second  the minimum bytes: inputs read once (x, offsets, dy), outputs written once,
//   items_per_second  tokens (T * B) per second,
//   copy_frac         bytes_per_second / copy_bw,
//   copy_bw           the bandwidth of a multithreaded memcpy moving the same number of bytes (half read,
//                     half written), run untimed before every timed call (the same moments, the same
//                     threads, a mean over the same iterations: what the call is to be compared with),
// and the per-iteration counters bytes, tokens, T, B, C, H, L, K. Times are wall-clock (UseRealTime).
// TALKCONV_BENCH_SMOKE=1: every family once on tiny sizes (for ctest; asserts no timing).
// TALKCONV_BENCH_MIN_TIME=<seconds>: minimum time per benchmark (default 0.2; it overrides
// --benchmark_min_time, which the registrations' own MinTime would otherwise win over).
#include "../baselines/kv_attention.hpp"
#include "../baselines/light_dynamic_conv.hpp"
#include "../baselines/naive_window.hpp"
#include "../baselines/original_talk.hpp"

#include <talkconv/talkconv.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

using talkconv::index_t;
namespace tc = talkconv;
namespace tb = talkconv_bench;

// ---- problem configurations ----------------------------------------------------------------------------

struct config {
  index_t T, B, C, H, L;  // bidirectional window, M = L
  bool full = false;      // offsets near 1 (every window near its largest) instead of uniform in (0, 1)
  tc::seq_shape shape() const { return {T, B, C, tc::layout::tbc}; }
  tc::window_params window() const { return {H, L, L, false}; }
  index_t K() const { return 2 * L + 1; }
  std::string suffix() const {
    return "/T:" + std::to_string(T) + "/B:" + std::to_string(B) + "/C:" + std::to_string(C) +
           "/H:" + std::to_string(H) + "/L:" + std::to_string(L) + (full ? "/off:full" : "");
  }
  std::string key() const { return suffix(); }
};

template <class T>
const char* dtype_name();
template <>
const char* dtype_name<float>() { return "f32"; }
template <>
const char* dtype_name<Eigen::bfloat16>() { return "bf16"; }
template <>
const char* dtype_name<Eigen::half>() { return "f16"; }

// ---- buffers: first-touched by the threads that use them, random with a fixed seed -----------------------

template <class E>
struct buffer {
  std::unique_ptr<E[]> p;
  index_t n = 0;
  E* data() { return p.get(); }
  const E* data() const { return p.get(); }
  bool empty() const { return n == 0; }
};

inline std::uint64_t splitmix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Uniform in (lo, hi), never exactly lo or hi (nor 0 for a symmetric range: u is odd / 2^25).
inline float uniform(std::uint64_t seed, index_t i, float lo, float hi) {
  const std::uint64_t r = splitmix(seed * 0x632be59bd9b4e019ULL + static_cast<std::uint64_t>(i));
  const float u = static_cast<float>((r >> 40) | 1u) * (1.0f / 16777216.0f);
  return lo + (hi - lo) * u;
}

template <class E>
buffer<E> make_buffer(index_t n) {
  buffer<E> b;
  b.p.reset(new E[static_cast<size_t>(n)]);
  b.n = n;
  return b;
}

template <class E>
buffer<E> random_buffer(index_t n, std::uint64_t seed, float lo, float hi) {
  buffer<E> b = make_buffer<E>(n);
  E* d = b.data();
  tb::parallel_for(n, [&](index_t i) { d[i] = E(uniform(seed, i, lo, hi)); });
  return b;
}

template <class E>
buffer<E> zero_buffer(index_t n) {
  buffer<E> b = make_buffer<E>(n);
  E* d = b.data();
  tb::parallel_for(n, [&](index_t i) { d[i] = E(0.0f); });
  return b;
}

// Inputs and outputs of one configuration, made on first use and kept while consecutive benchmarks share
// the configuration (registration order groups them), so 1 GiB tensors are not rebuilt per family.
template <class T>
struct pool {
  using A = tc::acc_t<T>;
  config cfg{};
  std::string key;
  buffer<T> x, dy, y, dx, weight, bias, dweight, dbias;
  buffer<A> off, off2, doff, S, ws, saved, lc_w, dc_w, dc_b;

  index_t N() const { return cfg.T * cfg.B; }
  index_t P() const { return cfg.window().num_offsets(); }

  T* X() { return x.empty() ? (x = random_buffer<T>(N() * cfg.C, 1, -1.0f, 1.0f)).data() : x.data(); }
  T* DY() { return dy.empty() ? (dy = random_buffer<T>(N() * cfg.C, 2, -1.0f, 1.0f)).data() : dy.data(); }
  A* OFF() {
    return off.empty() ? (off = random_buffer<A>(N() * P(), 3, cfg.full ? 0.97f : 0.0f, 1.0f)).data() : off.data();
  }
  // W ~ U(-a, a) with a = 5 / sqrt(C) gives z = W x + bias a standard deviation near 1.7, where
  // sigmoid(z) is close to uniform on (0, 1): the layer's windows are then distributed like the
  // U(0, 1) offsets the window benchmarks read, and talk_fwd / window_fwd compares like with like.
  T* W() {
    const float a = 5.0f / std::sqrt(static_cast<float>(cfg.C));
    return weight.empty() ? (weight = random_buffer<T>(P() * cfg.C, 4, -a, a)).data() : weight.data();
  }
  T* BIAS() { return bias.empty() ? (bias = random_buffer<T>(P(), 5, -0.1f, 0.1f)).data() : bias.data(); }
  template <class E>
  static E* out(buffer<E>& b, index_t n) {
    if (b.empty()) b = zero_buffer<E>(n);
    return b.data();
  }
  T* Y() { return out(y, N() * cfg.C); }
  T* DX() { return out(dx, N() * cfg.C); }
  A* OFF2() { return out(off2, N() * P()); }
  A* DOFF() { return out(doff, N() * P()); }
  A* SBUF() { return out(S, N() * cfg.C); }
  T* DW() { return out(dweight, P() * cfg.C); }
  T* DB() { return out(dbias, P()); }
};

// One pool per dtype; a new configuration frees every pool first (memory stays one configuration's worth).
std::vector<std::function<void()>>& pool_resetters() {
  static std::vector<std::function<void()>> r;
  return r;
}

template <class T>
pool<T>& get_pool(const config& cfg) {
  static pool<T>* p = [] {
    auto* q = new pool<T>();
    pool_resetters().push_back([q] { *q = pool<T>(); });
    return q;
  }();
  if (p->key != cfg.key()) {
    for (auto& r : pool_resetters()) r();
    p->cfg = cfg;
    p->key = cfg.key();
  }
  return *p;
}

// ---- the bandwidth limit: a multithreaded memcpy -------------------------------------------------------

// bytes / 2 copied from one buffer to another by every thread on its own contiguous share.
void parallel_copy(const char* src, char* dst, size_t n) {
#if defined(_OPENMP)
#pragma omp parallel
  {
    const size_t th = static_cast<size_t>(omp_get_num_threads()), id = static_cast<size_t>(omp_get_thread_num());
    const size_t per = (n / th + 63) / 64 * 64, b = std::min(n, id * per), e = std::min(n, b + per);
    if (e > b) std::memcpy(dst + b, src + b, e - b);
  }
#else
  std::memcpy(dst, src, n);
#endif
}

// Two first-touched buffers of `n` bytes each for copies of a given size: kept while consecutive
// benchmarks move the same byte count (Google Benchmark calls a benchmark's function several times).
struct copy_buffers {
  buffer<char> src, dst;
  size_t n = 0;
};

copy_buffers& copy_buffers_of(size_t n) {
  static copy_buffers cb;
  if (cb.n != n) {
    cb = copy_buffers{};  // free the old pair first: memory stays one pair's worth
    cb.src = make_buffer<char>(static_cast<index_t>(n));
    cb.dst = make_buffer<char>(static_cast<index_t>(n));
    cb.n = n;
    const index_t pages = static_cast<index_t>((n + 4095) / 4096);  // first touch by the copying threads
    tb::parallel_for(pages, [&](index_t pg) {
      const size_t b = static_cast<size_t>(pg) * 4096, e = std::min(n, b + 4096);
      std::memset(cb.src.data() + b, int(pg & 0x7f) + 1, e - b);
      std::memset(cb.dst.data() + b, 0, e - b);
    });
  }
  return cb;
}

// Bytes per second (read + write counted) of parallel_copy moving `traffic` bytes: the best of timed
// repetitions, measured once per byte count per process. Only the KV-cache step uses it (its calls are
// microseconds, too short to interleave a copy with); the window and layer families time a copy of the
// same bytes next to every iteration instead (run_family).
double memcpy_bandwidth(index_t traffic) {
  static std::map<index_t, double> cache;
  const auto it = cache.find(traffic);
  if (it != cache.end()) return it->second;
  const size_t n = static_cast<size_t>(std::max<index_t>(traffic / 2, 64));
  copy_buffers& cb = copy_buffers_of(n);
  parallel_copy(cb.src.data(), cb.dst.data(), n);  // warm-up
  std::vector<double> secs;
  const auto start = std::chrono::steady_clock::now();
  while (secs.size() < 5 || (secs.size() < 1000 && std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                                                  start).count() < 0.2)) {
    const auto t0 = std::chrono::steady_clock::now();
    parallel_copy(cb.src.data(), cb.dst.data(), n);
    benchmark::ClobberMemory();
    secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const double bw = 2.0 * static_cast<double>(n) / *std::min_element(secs.begin(), secs.end());
  cache[traffic] = bw;
  return bw;
}

// ---- families --------------------------------------------------------------------------------------------

enum class fam {
  memcpy_,
  prefix_sum,
  offsets_fwd,
  window_fwd,
  window_bwd,
  talk_fwd,
  talk_bwd,
  naive_fwd,
  naive_bwd,
  orig_fwd,
  orig_bwd,
  lightconv_fwd,
  dynconv_fwd
};

const char* fam_name(fam f) {
  switch (f) {
    case fam::memcpy_: return "memcpy";
    case fam::prefix_sum: return "prefix_sum";
    case fam::offsets_fwd: return "offsets_fwd";
    case fam::window_fwd: return "window_fwd";
    case fam::window_bwd: return "window_bwd";
    case fam::talk_fwd: return "talk_fwd";
    case fam::talk_bwd: return "talk_bwd";
    case fam::naive_fwd: return "naive_fwd";
    case fam::naive_bwd: return "naive_bwd";
    case fam::orig_fwd: return "orig_fwd";
    case fam::orig_bwd: return "orig_bwd";
    case fam::lightconv_fwd: return "lightconv_fwd";
    case fam::dynconv_fwd: return "dynconv_fwd";
  }
  return "?";
}

const std::vector<fam>& all_families() {
  static const std::vector<fam> v = {fam::memcpy_,   fam::prefix_sum, fam::offsets_fwd, fam::window_fwd,
                                     fam::window_bwd, fam::talk_fwd,   fam::talk_bwd,    fam::naive_fwd,
                                     fam::naive_bwd,  fam::orig_fwd,   fam::orig_bwd,    fam::lightconv_fwd,
                                     fam::dynconv_fwd};
  return v;
}

// Minimum bytes one call moves: each input read once, each output written once (parameters ignored).
template <class T>
index_t min_bytes(fam f, const config& c) {
  const index_t e = c.T * c.B * c.C, o = c.T * c.B * c.window().num_offsets();
  const index_t st = sizeof(T), sa = sizeof(tc::acc_t<T>);
  switch (f) {
    case fam::memcpy_: return 2 * e * st;                           // x -> y
    case fam::prefix_sum: return e * st + e * sa;                   // x -> S
    case fam::offsets_fwd: return e * st + o * sa;                  // x -> offsets
    case fam::window_fwd:
    case fam::naive_fwd:
    case fam::orig_fwd: return 2 * e * st + o * sa;                 // x, offsets -> y
    case fam::window_bwd:
    case fam::naive_bwd:
    case fam::orig_bwd: return 3 * e * st + 2 * o * sa;             // x, offsets, dy -> dx, d_offsets
    case fam::talk_fwd: return 2 * e * st;                          // x -> y
    case fam::talk_bwd: return 3 * e * st + o * sa;                 // x, dy, saved offsets -> dx
    case fam::lightconv_fwd:
    case fam::dynconv_fwd: return 2 * e * st;                       // x -> y
  }
  return 0;
}

template <class T>
void run_family(benchmark::State& state, fam f, const config& c) {
  using A = tc::acc_t<T>;
  pool<T>& p = get_pool<T>(c);
  const tc::seq_shape s = c.shape();
  const tc::window_params w = c.window();
  const tc::talk_config lc{c.C, c.H, c.L, c.L, false};
  std::function<void()> call;
  switch (f) {
    case fam::memcpy_: {
      const char* src = reinterpret_cast<const char*>(p.X());
      char* dst = reinterpret_cast<char*>(p.Y());
      const size_t n = static_cast<size_t>(c.T * c.B * c.C) * sizeof(T);
      call = [=] { parallel_copy(src, dst, n); };
      break;
    }
    case fam::prefix_sum: {
      const T* x = p.X();
      A* S = p.SBUF();
      const A scale = A(1) / A(w.window_len());
      call = [=] { tc::cpu::prefix_sum<T>(s, x, S, scale); };
      break;
    }
    case fam::offsets_fwd: {
      const T *x = p.X(), *W = p.W(), *bias = p.BIAS();
      A* o = p.OFF2();
      call = [=] { tc::cpu::offsets_forward<T>(s, w, x, W, bias, tc::dropout_params{}, o); };
      break;
    }
    case fam::window_fwd: {
      const T* x = p.X();
      const A* o = p.OFF();
      T* y = p.Y();
      call = [=] { tc::cpu::window_forward<T>(s, w, x, o, y); };
      break;
    }
    case fam::window_bwd: {
      const T *x = p.X(), *dy = p.DY();
      const A* o = p.OFF();
      T* dx = p.DX();
      A* d = p.DOFF();
      call = [=] { tc::cpu::window_backward<T>(s, w, x, o, dy, dx, d); };
      break;
    }
    case fam::talk_fwd: {
      tc::forward_args<T> a;
      a.shape = s, a.x = p.X(), a.weight = p.W(), a.bias = p.BIAS(), a.y = p.Y();
      call = [a, layer = tc::talk_conv<T>(lc)] { layer.forward(a); };
      break;
    }
    case fam::talk_bwd: {
      const tc::talk_conv<T> layer(lc);
      if (p.saved.empty()) {  // what a training step's forward saves
        p.saved = zero_buffer<A>(p.N() * p.P());
        tc::forward_args<T> fa;
        fa.shape = s, fa.x = p.X(), fa.weight = p.W(), fa.bias = p.BIAS(), fa.y = p.Y(), fa.saved_offsets = p.saved.data();
        layer.forward(fa);
      }
      tc::backward_args<T> a;
      a.shape = s, a.x = p.X(), a.weight = p.W(), a.bias = p.BIAS(), a.dy = p.DY(), a.saved_offsets = p.saved.data();
      a.dx = p.DX(), a.dweight = p.DW(), a.dbias = p.DB();
      call = [a, layer] { layer.backward(a); };
      break;
    }
    case fam::naive_fwd: {
      const T* x = p.X();
      const A* o = p.OFF();
      T* y = p.Y();
      call = [=] { tb::naive::window_forward<T>(s, w, x, o, y); };
      break;
    }
    case fam::naive_bwd: {
      const T *x = p.X(), *dy = p.DY();
      const A* o = p.OFF();
      T* dx = p.DX();
      A* d = p.DOFF();
      call = [=] { tb::naive::window_backward<T>(s, w, x, o, dy, dx, d); };
      break;
    }
    case fam::orig_fwd: {
      const T* x = p.X();
      const A* o = p.OFF();
      T* y = p.Y();
      A* S = p.SBUF();
      call = [=] { tb::original::window_forward<T>(s, w, x, o, y, S); };
      break;
    }
    case fam::orig_bwd: {
      const T *x = p.X(), *dy = p.DY();
      const A* o = p.OFF();
      T* dx = p.DX();
      A* d = p.DOFF();
      A* S = p.SBUF();
      tb::original::window_forward<T>(s, w, x, o, p.Y(), S);  // S as the forward leaves it
      if (p.ws.empty()) p.ws = zero_buffer<A>(tb::original::backward_workspace(s, tb::num_threads()));
      A* ws = p.ws.data();
      call = [=] { tb::original::window_backward<T>(s, w, x, o, dy, dx, d, S, ws); };
      break;
    }
    case fam::lightconv_fwd: {
      if (p.lc_w.empty()) p.lc_w = random_buffer<A>(c.H * c.K(), 6, -2.0f, 2.0f);
      const T* x = p.X();
      const A* lw = p.lc_w.data();
      T* y = p.Y();
      call = [=] { tb::lightdyn::lightconv_forward<T>(s, c.H, c.K(), c.L, x, lw, y); };
      break;
    }
    case fam::dynconv_fwd: {
      const float sc = 4.0f / static_cast<float>(c.C);
      if (p.dc_w.empty()) p.dc_w = random_buffer<A>(c.H * c.K() * c.C, 7, -sc, sc);
      if (p.dc_b.empty()) p.dc_b = random_buffer<A>(c.H * c.K(), 8, -1.0f, 1.0f);
      const T* x = p.X();
      const A *dw = p.dc_w.data(), *db = p.dc_b.data();
      T* y = p.Y();
      call = [=] { tb::lightdyn::dynamicconv_forward<T>(s, c.H, c.K(), c.L, x, dw, db, y); };
      break;
    }
  }
  const index_t bytes = min_bytes<T>(f, c), tokens = c.T * c.B;
  // Before every timed call, untimed, a copy of the same bytes (half read, half written) by the same
  // threads: the bandwidth the call is compared with is the machine's at that moment, measured the same
  // way (a mean over the same iterations), not a best-of taken at another time. A caller's memory
  // traffic between calls is part of what the call then sees: its inputs are not left in cache by a
  // previous call of its own.
  const size_t copy_n = static_cast<size_t>(std::max<index_t>(bytes / 2, 64));
  copy_buffers& cb = copy_buffers_of(copy_n);
  double copy_secs = 0.0;
  for (auto _ : state) {
    state.PauseTiming();
    const auto t0 = std::chrono::steady_clock::now();
    parallel_copy(cb.src.data(), cb.dst.data(), copy_n);
    benchmark::ClobberMemory();
    copy_secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.ResumeTiming();
    call();
    benchmark::ClobberMemory();
  }
  const double it = static_cast<double>(state.iterations());
  const double bw = copy_secs > 0.0 ? it * 2.0 * static_cast<double>(copy_n) / copy_secs : 0.0;
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * bytes);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * tokens);
  // copy_frac = (time of the interleaved copies) / (time of the calls): the call's fraction of copy speed.
  state.counters["copy_frac"] =
      benchmark::Counter(bw > 0.0 ? it * static_cast<double>(bytes) / bw : 0.0, benchmark::Counter::kIsRate);
  state.counters["copy_bw"] = bw;
  state.counters["bytes"] = static_cast<double>(bytes);
  state.counters["tokens"] = static_cast<double>(tokens);
  state.counters["T"] = static_cast<double>(c.T);
  state.counters["B"] = static_cast<double>(c.B);
  state.counters["C"] = static_cast<double>(c.C);
  state.counters["H"] = static_cast<double>(c.H);
  state.counters["L"] = static_cast<double>(c.L);
  state.counters["K"] = static_cast<double>(c.K());
}

// ---- decoding: one step of talkconv's decoder against one step of a KV-cache attention ------------------

// decoder_step/<dtype>/B:/C:/L:/H: one cpu::decoder::step (causal, inference) for B sequences; the
// state is warmed past its first re-base, so the time is the steady state's (re-bases included at their
// rate, one every L + 2 steps). Its cost does not depend on how many tokens came before.
template <class T>
void decoder_step(benchmark::State& state, index_t B, index_t C, index_t H, index_t L) {
  using A = tc::acc_t<T>;
  const tc::window_params w{H, L, 0, true};
  const index_t P = w.num_offsets();
  const float a = 5.0f / std::sqrt(static_cast<float>(C));
  const buffer<T> x = random_buffer<T>(B * C, 1, -1.0f, 1.0f), W = random_buffer<T>(P * C, 4, -a, a),
                  bias = random_buffer<T>(P, 5, -0.1f, 0.1f);
  buffer<T> y = zero_buffer<T>(B * C);
  tc::cpu::decoder<T> dec(w, C, B);
  for (index_t i = 0; i < 2 * (L + 2); ++i) dec.step(x.data(), W.data(), bias.data(), y.data());
  // The least a step can cost: reading W (P * C values of T) and one ring row (B * C accumulators), from
  // where they live between steps (cache, as here): timed as Eigen's vectorized sum over a float buffer of
  // the same bytes, right before the steps, the mean of as many repetitions as fill 20 ms; counters
  // read_us, and step_per_read = step time / read time.
  const index_t read_floats = (P * C * index_t(sizeof(T)) + B * C * index_t(sizeof(A))) / 4;
  const buffer<float> read_buf = random_buffer<float>(read_floats, 9, -1.0f, 1.0f);
  auto read_once = [&] {
    const float sum = Eigen::Map<const Eigen::VectorXf>(read_buf.data(), read_floats).sum();
    benchmark::DoNotOptimize(sum);
  };
  double read_secs = 0.0;
  index_t reads = 0;
  {
    read_once();
    const auto start = std::chrono::steady_clock::now();
    do {
      for (int r = 0; r < 64; ++r) read_once();
      reads += 64;
      read_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    } while (read_secs < 0.02);
  }
  const auto steps_start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    dec.step(x.data(), W.data(), bias.data(), y.data());
    benchmark::ClobberMemory();
  }
  const double step_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - steps_start).count() /
                           static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
  const double read_each = read_secs / static_cast<double>(reads);
  state.counters["read_us"] = read_each * 1e6;
  state.counters["step_per_read"] = read_each > 0.0 ? step_secs / read_each : 0.0;
  const index_t bytes = 2 * B * C * index_t(sizeof(T)) + P * C * index_t(sizeof(T)) +
                        2 * B * C * index_t(sizeof(A));  // x, y, W; the newest prefix row written, 4 rows read
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * B);
  state.counters["bytes"] = static_cast<double>(bytes);
  state.counters["tokens"] = static_cast<double>(B);
  state.counters["state_bytes"] = static_cast<double>(dec.state_bytes_per_sequence() * B);
}

// fma_peak/f32: float multiply-adds per second on all threads (counter mac_per_s), from 48 independent
// chains per thread (enough to cover the add's latency with 128- or 256-bit vectors): the machine's ceiling
// for the layer's projection, P = 2H multiply-adds per element of x. report.py turns it into the floor of
// layer / window for this machine: 1 + (T B C P / mac_per_s) / (window forward time).
void fma_peak(benchmark::State& state) {
  constexpr int lanes = 48;
  constexpr int64_t steps = int64_t(1) << 20;
  int threads = 1;
  for (auto _ : state) {
    double total = 0.0;
#if defined(_OPENMP)
#pragma omp parallel reduction(+ : total)
#endif
    {
#if defined(_OPENMP)
#pragma omp single
      threads = omp_get_num_threads();
#endif
      float acc[lanes];
      for (int l = 0; l < lanes; ++l) acc[l] = 1.0f + 1e-3f * static_cast<float>(l);
      const float m = 0.999999f, a = 1e-7f;
      for (int64_t i = 0; i < steps; ++i)
        for (int l = 0; l < lanes; ++l) acc[l] = acc[l] * m + a;
      float sum = 0.0f;
      for (int l = 0; l < lanes; ++l) sum += acc[l];
      total += sum;
    }
    benchmark::DoNotOptimize(total);
  }
  const double macs = static_cast<double>(state.iterations()) * double(steps) * lanes * threads;
  state.counters["mac_per_s"] = benchmark::Counter(macs, benchmark::Counter::kIsRate);
  state.counters["threads"] = threads;
}

// kv_attn_step/f32/B:/C:/H:/context: one attention step (query of length 1) over a float KV cache of
// `context` tokens per sequence: bench/baselines/kv_attention.hpp.
void kv_attn_step(benchmark::State& state, index_t B, index_t C, index_t H, index_t context) {
  const buffer<float> q = random_buffer<float>(B * C, 1, -1.0f, 1.0f);
  const buffer<float> k = random_buffer<float>(B * C * context, 2, -1.0f, 1.0f),
                      v = random_buffer<float>(B * C * context, 3, -1.0f, 1.0f);
  buffer<float> out = zero_buffer<float>(B * C);
  for (auto _ : state) {
    tb::kv_attention::step(B, C, H, context, q.data(), k.data(), v.data(), out.data());
    benchmark::ClobberMemory();
  }
  const index_t bytes = 2 * B * C * context * index_t(sizeof(float));
  const double bw = memcpy_bandwidth(bytes);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * bytes);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * B);
  state.counters["copy_frac"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * static_cast<double>(bytes) / bw,
                         benchmark::Counter::kIsRate);
  state.counters["bytes"] = static_cast<double>(bytes);
  state.counters["tokens"] = static_cast<double>(B);
}

// ---- registration ---------------------------------------------------------------------------------------

struct registry {
  std::set<std::string> seen;
  bool smoke = false;
  double min_time = 0.2;

  template <class T>
  void add(fam f, const config& c) {
    const std::string name = std::string(fam_name(f)) + "/" + dtype_name<T>() + c.suffix();
    if (!seen.insert(name).second) return;
    auto* b = benchmark::RegisterBenchmark(name.c_str(), [f, c](benchmark::State& st) { run_family<T>(st, f, c); });
    b->UseRealTime()->Unit(benchmark::kMillisecond);
    if (smoke)
      b->Iterations(1);
    else
      b->MinTime(min_time);
  }
  template <class T>
  void add(const std::vector<fam>& fs, const config& c) {
    for (fam f : fs) add<T>(f, c);
  }
  template <class F>
  void add_named(const std::string& name, F fn, benchmark::TimeUnit unit) {
    if (!seen.insert(name).second) return;
    auto* b = benchmark::RegisterBenchmark(name.c_str(), fn);
    b->UseRealTime()->Unit(unit);
    if (smoke)
      b->Iterations(1);
    else
      b->MinTime(min_time);
  }
  // Decoding at C, H, window L: talkconv's step for each B, and a KV-cache attention step for each B and
  // context whose float cache fits in max_cache bytes.
  void add_decoding(const std::vector<index_t>& batches, index_t C, index_t H, index_t L,
                    const std::vector<index_t>& contexts, double max_cache) {
    const std::string tail = "/C:" + std::to_string(C) + "/L:" + std::to_string(L) + "/H:" + std::to_string(H);
    for (index_t B : batches) {
      const std::string bs = "/B:" + std::to_string(B);
      add_named("decoder_step/f32" + bs + tail,
                [=](benchmark::State& st) { decoder_step<float>(st, B, C, H, L); }, benchmark::kMicrosecond);
      add_named("decoder_step/bf16" + bs + tail,
                [=](benchmark::State& st) { decoder_step<Eigen::bfloat16>(st, B, C, H, L); }, benchmark::kMicrosecond);
      for (index_t ctx : contexts) {
        if (2.0 * double(B) * double(C) * double(ctx) * 4.0 > max_cache) continue;
        add_named("kv_attn_step/f32" + bs + "/C:" + std::to_string(C) + "/H:" + std::to_string(H) +
                      "/context:" + std::to_string(ctx),
                  [=](benchmark::State& st) { kv_attn_step(st, B, C, H, ctx); }, benchmark::kMicrosecond);
      }
    }
  }
};

void register_all(registry& r) {
  using bf16 = Eigen::bfloat16;
  const std::vector<fam>& all = all_families();
  if (r.smoke) {
    for (const config& c : {config{300, 2, 64, 4, 7}, config{64, 1, 32, 1, 40}}) {
      r.add<float>(all, c);
      r.add<bf16>(all, c);
      r.add<Eigen::half>({fam::memcpy_, fam::window_fwd, fam::talk_fwd, fam::talk_bwd}, c);
    }
    r.add_decoding({1, 3}, 64, 4, 7, {64}, 1e9);
    r.add_named("fma_peak/f32", fma_peak, benchmark::kMillisecond);
    return;
  }
  const std::vector<fam> talk_and_ref = {fam::memcpy_,  fam::prefix_sum, fam::offsets_fwd, fam::window_fwd,
                                         fam::window_bwd, fam::talk_fwd, fam::talk_bwd,    fam::naive_fwd,
                                         fam::naive_bwd, fam::orig_fwd,  fam::orig_bwd,    fam::lightconv_fwd};
  // Sweep 1: time per token vs T (C = 256, H = 8, L = M = 31).
  for (index_t T : {1024, 4096, 16384, 65536, 262144, 1048576}) r.add<float>(talk_and_ref, config{T, 1, 256, 8, 31});
  for (index_t T : {1024, 16384, 262144, 1048576}) {
    r.add<bf16>({fam::memcpy_, fam::window_fwd, fam::talk_fwd, fam::naive_fwd}, config{T, 1, 256, 8, 31});
    r.add<Eigen::half>({fam::memcpy_, fam::window_fwd, fam::talk_fwd}, config{T, 1, 256, 8, 31});
  }
  // Sweep 2: window size, L = M from 1 to 512 (K = 3 .. 1025), T = 64k, C = 256, H = 8.
  for (index_t L : {1, 3, 7, 15, 31, 63, 127, 255, 512}) {
    const config c{65536, 1, 256, 8, L};
    r.add<float>({fam::memcpy_, fam::window_fwd, fam::window_bwd, fam::talk_fwd, fam::talk_bwd, fam::naive_fwd,
                  fam::naive_bwd, fam::orig_fwd, fam::orig_bwd},
                 c);
    if (L <= 127) r.add<float>(fam::lightconv_fwd, c);
    if (L <= 15) r.add<float>(fam::dynconv_fwd, c);
  }
  // Sweep 3: channels C in {256, 512, 1024}, float32 and bfloat16, every family (T = 64k, H = 8, L = 31).
  for (index_t C : {256, 512, 1024}) {
    const config c{65536, 1, C, 8, 31};
    r.add<float>(all, c);
    r.add<bf16>(all, c);
    r.add<Eigen::half>({fam::memcpy_, fam::window_fwd, fam::window_bwd, fam::talk_fwd, fam::talk_bwd}, c);
  }
  // Sweep 4: heads (C = 512, T = 64k, L = 31): R = C / H channels share a window.
  for (index_t H : {1, 4, 16, 64})
    r.add<float>({fam::memcpy_, fam::window_fwd, fam::window_bwd, fam::talk_fwd, fam::talk_bwd, fam::naive_fwd,
                  fam::lightconv_fwd},
                 config{65536, 1, 512, H, 31});
  // Offsets near 1: every window near its largest (K = 2L + 1); uniform offsets average about half that.
  for (index_t L : {7, 31, 127}) {
    config c{65536, 1, 256, 8, L};
    c.full = true;
    r.add<float>({fam::memcpy_, fam::window_fwd, fam::window_bwd, fam::naive_fwd, fam::naive_bwd, fam::orig_fwd}, c);
  }
  // Batch: B = 8 sequences of 8k tokens, time-major.
  r.add<float>({fam::memcpy_, fam::window_fwd, fam::window_bwd, fam::talk_fwd, fam::talk_bwd, fam::naive_fwd},
               config{8192, 8, 512, 8, 31});
  // Decoding: C = 1024, H = 16, L = 63; the attention step's float KV cache up to 4 GiB (B = 64 stops at 4k).
  r.add_decoding({1, 8, 64}, 1024, 16, 63, {1024, 4096, 16384, 65536}, 4294967296.0);
  // The machine's multiply-add ceiling (the projection's floor in the issue-14 table).
  r.add_named("fma_peak/f32", fma_peak, benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  registry r;
  const char* smoke = std::getenv("TALKCONV_BENCH_SMOKE");
  r.smoke = smoke != nullptr && std::string(smoke) != "" && std::string(smoke) != "0";
  if (const char* mt = std::getenv("TALKCONV_BENCH_MIN_TIME")) r.min_time = std::atof(mt);
  register_all(r);
  benchmark::AddCustomContext("talkconv_compiler", TALKCONV_BENCH_COMPILER);
  benchmark::AddCustomContext("talkconv_flags", TALKCONV_BENCH_FLAGS);
  benchmark::AddCustomContext("talkconv_build_type", TALKCONV_BENCH_BUILD_TYPE);
  benchmark::AddCustomContext("talkconv_threads", std::to_string(talkconv::cpu::max_threads()));
  benchmark::AddCustomContext("talkconv_eigen", std::to_string(EIGEN_WORLD_VERSION) + "." +
                                                    std::to_string(EIGEN_MAJOR_VERSION) + "." +
                                                    std::to_string(EIGEN_MINOR_VERSION));
  benchmark::AddCustomContext("talkconv_smoke", r.smoke ? "1" : "0");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
