// GPU benchmarks (Google Benchmark, CUDA events, UseManualTime): talkconv's fused window forward, the
// layer forward and backward, against the original TaLK algorithm (a global prefix-sum tensor, then a
// gather; float atomics in backward) and a device-to-device copy of the same bytes. Counters:
// bytes_per_second (bytes a kernel must move at least) and copy_fraction (that rate over the copy's).
// Without a GPU the program says so and exits 0 (CI only builds it).
#include <talkconv/cuda/talkconv.cuh>

#include <benchmark/benchmark.h>

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

namespace tcu = talkconv::cuda;
using talkconv::acc_t;
using talkconv::index_t;

#define BENCH_CUDA(expr)                                                                          \
  do {                                                                                            \
    const cudaError_t e_ = (expr);                                                                \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

// ---- inputs: random, never all zeros ----------------------------------------------------------------

__host__ __device__ inline float hash_unit(unsigned long long i, unsigned long long seed) {
  unsigned long long z = i + 0x9E3779B97F4A7C15ULL * (seed + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

template <class X>
__global__ void fill_kernel(X* p, std::size_t n, unsigned long long seed, float lo, float hi) {
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    p[i] = talkconv::from_acc<X>(static_cast<acc_t<X>>(lo + (hi - lo) * hash_unit(i, seed)));
}

template <class X>
struct dev {
  X* p = nullptr;
  std::size_t n = 0;
  explicit dev(std::size_t count, unsigned long long seed = 0, float lo = 0.0f, float hi = 0.0f) : n(count) {
    BENCH_CUDA(cudaMalloc(&p, n * sizeof(X)));
    if (hi > lo) fill_kernel<X><<<4096, 256>>>(p, n, seed, lo, hi);
    BENCH_CUDA(cudaGetLastError());
  }
  ~dev() { cudaFree(p); }
  dev(const dev&) = delete;
  dev& operator=(const dev&) = delete;
};

// Times f() with CUDA events around each iteration (manual time); returns the total seconds.
template <class F>
double time_loop(benchmark::State& st, cudaStream_t s, F&& f) {
  double total = 0.0;
  cudaEvent_t a, b;
  BENCH_CUDA(cudaEventCreate(&a));
  BENCH_CUDA(cudaEventCreate(&b));
  f();  // warm-up (also sets shared-memory attributes)
  BENCH_CUDA(cudaStreamSynchronize(s));
  for (auto _ : st) {
    BENCH_CUDA(cudaEventRecord(a, s));
    f();
    BENCH_CUDA(cudaEventRecord(b, s));
    BENCH_CUDA(cudaEventSynchronize(b));
    float ms = 0.0f;
    BENCH_CUDA(cudaEventElapsedTime(&ms, a, b));
    st.SetIterationTime(double(ms) * 1e-3);
    total += double(ms) * 1e-3;
  }
  BENCH_CUDA(cudaEventDestroy(a));
  BENCH_CUDA(cudaEventDestroy(b));
  return total;
}

// Device-to-device copy bandwidth (read + write bytes per second) for `bytes`, measured once per size.
double copy_rate(std::size_t bytes) {
  static std::size_t last_bytes = 0;
  static double last_rate = 0.0;
  if (bytes == last_bytes) return last_rate;
  dev<char> a(bytes, 1, 0.0f, 1.0f), b(bytes);
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  BENCH_CUDA(cudaMemcpy(b.p, a.p, bytes, cudaMemcpyDeviceToDevice));
  BENCH_CUDA(cudaEventRecord(e0));
  for (int i = 0; i < 10; ++i) BENCH_CUDA(cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice));
  BENCH_CUDA(cudaEventRecord(e1));
  BENCH_CUDA(cudaEventSynchronize(e1));
  float ms = 0.0f;
  BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
  last_bytes = bytes;
  last_rate = 2.0 * double(bytes) * 10.0 / (double(ms) * 1e-3);
  return last_rate;
}

// bytes_per_second: the bytes a kernel must move at least, over its measured time; copy_fraction: that
// rate over a device-to-device copy's (read + write) of the input's bytes, measured on the same device.
void set_counters(benchmark::State& st, double seconds, double bytes_moved, std::size_t copy_bytes) {
  const double rate = seconds > 0.0 ? bytes_moved * double(st.iterations()) / seconds : 0.0;
  st.counters["bytes_per_second"] = rate;
  st.counters["copy_GBps"] = copy_rate(copy_bytes) * 1e-9;
  st.counters["copy_fraction"] = rate / copy_rate(copy_bytes);
  st.SetBytesProcessed(static_cast<int64_t>(bytes_moved * double(st.iterations())));
}

// The problem every benchmark shares: T x B x C = 4096 x 16 x 1024 = 64M elements, 16 heads (R = 64),
// window L = M = range(0).
struct problem {
  index_t T = 4096, B = 16, C = 1024, H = 16, L = 16, M = 16;
  bool causal = false;
  explicit problem(const benchmark::State& st)
      : L(st.range(0)), M(st.range(1) ? 0 : st.range(0)), causal(st.range(1) != 0) {}
  talkconv::seq_shape shape() const { return talkconv::seq_shape{T, B, C, talkconv::layout::tbc}; }
  talkconv::window_params window() const { return talkconv::window_params{H, L, M, causal}; }
  std::size_t n() const { return std::size_t(T * B * C); }
  std::size_t np() const { return std::size_t(T * B * window().num_offsets()); }
  talkconv::talk_config config() const { return talkconv::talk_config{C, H, L, M, causal}; }
};

// ---- the original algorithm (baseline) ----------------------------------------------------------------

// The global scan of the original (a cumsum along time, as torch.cumsum gives it): chunks of
// scan_chunk tokens scanned per (b, c) thread, then every chunk adds the totals of the chunks before it
// (after it, for the reverse scan of the backward). out[t] = scale * sum x over the chunk, then the carry.
constexpr index_t scan_chunk = 64;

template <class In, bool Reverse>
__global__ void chunk_scan_kernel(const In* in, float* out, float* totals, index_t T_, index_t BC, float scale) {
  const index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x, k = blockIdx.y;
  if (i >= BC) return;
  const index_t t0 = k * scan_chunk, t1 = t0 + scan_chunk < T_ ? t0 + scan_chunk : T_;
  float run = 0.0f;
  for (index_t s = 0; s < t1 - t0; ++s) {
    const index_t t = Reverse ? t1 - 1 - s : t0 + s;
    run += scale * talkconv::to_acc<In>(in[t * BC + i]);
    out[t * BC + i] = run;
  }
  totals[k * BC + i] = run;
}

// Adds the carry of the preceding chunks; writes float S in place (final == nullptr) or final = v * post.
template <class Out, bool Reverse>
__global__ void chunk_carry_kernel(float* out, const float* totals, Out* final_out, index_t T_, index_t BC,
                                   index_t chunks, float post) {
  const index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x, k = blockIdx.y;
  if (i >= BC) return;
  float carry = 0.0f;
  if (Reverse)
    for (index_t j = chunks - 1; j > k; --j) carry += totals[j * BC + i];
  else
    for (index_t j = 0; j < k; ++j) carry += totals[j * BC + i];
  const index_t t0 = k * scan_chunk, t1 = t0 + scan_chunk < T_ ? t0 + scan_chunk : T_;
  for (index_t t = t0; t < t1; ++t) {
    const float v = out[t * BC + i] + carry;
    if (final_out)
      final_out[t * BC + i] = talkconv::from_acc<Out>(v * post);
    else
      out[t * BC + i] = v;
  }
}

template <class In, class Out, bool Reverse>
void global_scan(const In* in, float* out, float* totals, Out* final_out, index_t T_, index_t BC, float scale,
                 float post, cudaStream_t s) {
  const index_t chunks = (T_ + scan_chunk - 1) / scan_chunk;
  const dim3 grid(static_cast<unsigned>((BC + 255) / 256), static_cast<unsigned>(chunks));
  chunk_scan_kernel<In, Reverse><<<grid, 256, 0, s>>>(in, out, totals, T_, BC, scale);
  chunk_carry_kernel<Out, Reverse><<<grid, 256, 0, s>>>(out, totals, final_out, T_, BC, chunks, post);
}

// y = I(a_r) - I(a_l - 1) read from the global S (the original gather), one thread per element.
template <class T>
__global__ void original_gather_kernel(const float* S, const float* o, T* y, index_t T_, index_t B, index_t C,
                                       index_t H, index_t L, index_t M, bool causal) {
  const index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T_ * B * C) return;
  const index_t c = i % C, tb = i / C, b = tb % B, t = tb / B, P = causal ? H : 2 * H, h = c / (C / H);
  const float* orow = o + tb * P;
  const auto k = talkconv::detail::make_taps<float>(t, orow[h], causal ? 0.0f : orow[H + h], L, M, T_, causal);
  auto s = [&](index_t r) { return r < 0 ? 0.0f : S[(r * B + b) * C + c]; };
  y[i] = talkconv::from_acc<T>(talkconv::detail::window_value<float>(k, s(k.i0), s(k.i1), s(k.i2), s(k.i3)));
}

// Backward of the original: scatter tap weights with float atomics into dS, then a reverse cumsum to
// dx; offset gradients with float atomics into per-head sums.
template <class T>
__global__ void original_scatter_kernel(const float* S, const float* o, const T* dy, float* dS, float* d_o, index_t T_,
                                        index_t B, index_t C, index_t H, index_t L, index_t M, bool causal) {
  const index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T_ * B * C) return;
  const index_t c = i % C, tb = i / C, b = tb % B, t = tb / B, P = causal ? H : 2 * H, h = c / (C / H);
  const float* orow = o + tb * P;
  const auto k = talkconv::detail::make_taps<float>(t, orow[h], causal ? 0.0f : orow[H + h], L, M, T_, causal);
  const auto w = talkconv::detail::make_tap_weights<float>(k);
  const float d = talkconv::to_acc<T>(dy[i]);
  const index_t idx[4] = {k.i0, k.i1, k.i2, k.i3};
  const float wv[4] = {w.w0, w.w1, w.w2, w.w3};
  for (int j = 0; j < 4; ++j)
    if (idx[j] >= 0 && wv[j] != 0.0f) atomicAdd(&dS[(idx[j] * B + b) * C + c], wv[j] * d);
  auto s = [&](index_t r) { return r < 0 ? 0.0f : S[(r * B + b) * C + c]; };
  atomicAdd(&d_o[tb * P + h], d * float(L) * (s(k.i3) - s(k.i2)));
  if (!causal) atomicAdd(&d_o[tb * P + H + h], d * float(M) * (s(k.i1) - s(k.i0)));
}

unsigned blocks_for(std::size_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

// ---- benchmarks -----------------------------------------------------------------------------------------

template <class T>
void BM_window_forward(benchmark::State& st) {
  const problem pb(st);
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), y(pb.n());
  dev<float> o(pb.np(), 2, 0.0f, 1.0f);
  cudaStream_t s = nullptr;
  const double secs =
      time_loop(st, s, [&] { tcu::window_forward<T>(pb.shape(), pb.window(), x.p, o.p, y.p, nullptr, s); });
  set_counters(st, secs, double(2 * pb.n() * sizeof(T) + pb.np() * sizeof(float)), pb.n() * sizeof(T));
}

template <class T>
void BM_original_forward(benchmark::State& st) {
  const problem pb(st);
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), y(pb.n());
  dev<float> o(pb.np(), 2, 0.0f, 1.0f), S(pb.n()), totals(pb.n() / scan_chunk + pb.B * pb.C);
  const float inv_k = 1.0f / float(pb.L + pb.M + 1);
  cudaStream_t s = nullptr;
  const double secs = time_loop(st, s, [&] {
    global_scan<T, float, false>(x.p, S.p, totals.p, static_cast<float*>(nullptr), pb.T, pb.B * pb.C, inv_k, 1.0f, s);
    original_gather_kernel<T>
        <<<blocks_for(pb.n(), 256), 256, 0, s>>>(S.p, o.p, y.p, pb.T, pb.B, pb.C, pb.H, pb.L, pb.M, pb.causal);
  });
  set_counters(st, secs, double(2 * pb.n() * sizeof(T) + pb.np() * sizeof(float)), pb.n() * sizeof(T));
}

template <class T>
void BM_memcpy(benchmark::State& st) {
  const problem pb(st);
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), y(pb.n());
  cudaStream_t s = nullptr;
  const double secs =
      time_loop(st, s, [&] { BENCH_CUDA(cudaMemcpyAsync(y.p, x.p, pb.n() * sizeof(T), cudaMemcpyDeviceToDevice, s)); });
  set_counters(st, secs, double(2 * pb.n() * sizeof(T)), pb.n() * sizeof(T));
}

template <class T>
void BM_layer_forward(benchmark::State& st) {
  const problem pb(st);
  const index_t P = pb.window().num_offsets();
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), y(pb.n()), W(std::size_t(P * pb.C), 3, -0.05f, 0.05f),
      b(std::size_t(P), 4, -0.5f, 0.5f);
  dev<float> saved(pb.np());
  const tcu::talk_conv<T> layer(pb.config());
  talkconv::forward_args<T> a;
  a.shape = pb.shape();
  a.x = x.p;
  a.weight = W.p;
  a.bias = b.p;
  a.y = y.p;
  a.saved_offsets = saved.p;
  a.dropout = talkconv::dropout_params{0.1f, 7, true};
  std::size_t bytes = 0;
  layer.forward(nullptr, bytes, a, nullptr);
  dev<char> ws(bytes);
  const double secs = time_loop(st, nullptr, [&] { layer.forward(ws.p, bytes, a, nullptr); });
  set_counters(st, secs, double(2 * pb.n() * sizeof(T) + pb.np() * sizeof(float)), pb.n() * sizeof(T));
}

template <class T>
void BM_layer_backward(benchmark::State& st) {
  const problem pb(st);
  const index_t P = pb.window().num_offsets();
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), dy(pb.n(), 5, -1.0f, 1.0f), dx(pb.n()), W(std::size_t(P * pb.C), 3, -0.05f, 0.05f),
      b(std::size_t(P), 4, -0.5f, 0.5f), dW(static_cast<std::size_t>(P * pb.C)), db(static_cast<std::size_t>(P));
  dev<float> saved(pb.np(), 6, 0.05f, 0.95f);
  const tcu::talk_conv<T> layer(pb.config());
  talkconv::backward_args<T> a;
  a.shape = pb.shape();
  a.x = x.p;
  a.weight = W.p;
  a.bias = b.p;
  a.dy = dy.p;
  a.saved_offsets = saved.p;
  a.dx = dx.p;
  a.dweight = dW.p;
  a.dbias = db.p;
  a.dropout = talkconv::dropout_params{0.1f, 7, true};
  std::size_t bytes = 0;
  layer.backward(nullptr, bytes, a, nullptr);
  dev<char> ws(bytes);
  const double secs = time_loop(st, nullptr, [&] { layer.backward(ws.p, bytes, a, nullptr); });
  // At least: x twice (offset gradients, dW), dy, dx.
  set_counters(st, secs, double(4 * pb.n() * sizeof(T)), pb.n() * sizeof(T));
}

template <class T>
void BM_original_backward(benchmark::State& st) {
  const problem pb(st);
  const index_t P = pb.window().num_offsets();
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), dy(pb.n(), 5, -1.0f, 1.0f), dx(pb.n());
  dev<float> o(pb.np(), 2, 0.0f, 1.0f), S(pb.n()), dS(pb.n()), d_o(pb.np()), totals(pb.n() / scan_chunk + pb.B * pb.C);
  const float inv_k = 1.0f / float(pb.L + pb.M + 1);
  cudaStream_t s = nullptr;
  (void)P;
  const double secs = time_loop(st, s, [&] {
    global_scan<T, float, false>(x.p, S.p, totals.p, static_cast<float*>(nullptr), pb.T, pb.B * pb.C, inv_k, 1.0f, s);
    BENCH_CUDA(cudaMemsetAsync(dS.p, 0, pb.n() * sizeof(float), s));
    BENCH_CUDA(cudaMemsetAsync(d_o.p, 0, pb.np() * sizeof(float), s));
    original_scatter_kernel<T><<<blocks_for(pb.n(), 256), 256, 0, s>>>(S.p, o.p, dy.p, dS.p, d_o.p, pb.T, pb.B, pb.C,
                                                                       pb.H, pb.L, pb.M, pb.causal);
    global_scan<float, T, true>(dS.p, dS.p, totals.p, dx.p, pb.T, pb.B * pb.C, 1.0f, inv_k, s);
  });
  set_counters(st, secs, double(4 * pb.n() * sizeof(T)), pb.n() * sizeof(T));
}

// The offset GEMMs alone. Forward: x W^T with sigmoid and dropout; at least x read, o and o_pre written.
template <class T>
void BM_offsets_forward(benchmark::State& st) {
  const problem pb(st);
  const index_t P = pb.window().num_offsets();
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), W(std::size_t(P * pb.C), 3, -0.05f, 0.05f), b(std::size_t(P), 4, -0.5f, 0.5f);
  dev<float> o(pb.np()), pre(pb.np());
  const talkconv::dropout_params d{0.1f, 7, true};
  const double secs = time_loop(st, nullptr, [&] {
    tcu::offsets_forward<T>(pb.shape(), pb.window(), x.p, W.p, b.p, d, o.p, pre.p, nullptr, nullptr);
  });
  set_counters(st, secs, double(pb.n() * sizeof(T) + 2 * pb.np() * sizeof(float)), pb.n() * sizeof(T));
}

// Backward: dz, dx += W^T dz, dW and dbias; at least x read, dx read and written.
template <class T>
void BM_offsets_backward(benchmark::State& st) {
  const problem pb(st);
  const index_t P = pb.window().num_offsets();
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), dx(pb.n(), 5, -1.0f, 1.0f), W(std::size_t(P * pb.C), 3, -0.05f, 0.05f),
      dW(static_cast<std::size_t>(P * pb.C)), db(static_cast<std::size_t>(P));
  dev<float> pre(pb.np(), 6, 0.05f, 0.95f), d_o(pb.np(), 2, -1.0f, 1.0f);
  const talkconv::dropout_params d{0.1f, 7, true};
  std::size_t bytes = 0;
  tcu::offsets_backward<T>(nullptr, bytes, pb.shape(), pb.window(), x.p, W.p, pre.p, d_o.p, d, dx.p, dW.p, db.p,
                           nullptr, nullptr);
  dev<char> ws(bytes);
  const double secs = time_loop(st, nullptr, [&] {
    tcu::offsets_backward<T>(ws.p, bytes, pb.shape(), pb.window(), x.p, W.p, pre.p, d_o.p, d, dx.p, dW.p, db.p,
                             nullptr, nullptr);
  });
  set_counters(st, secs, double(3 * pb.n() * sizeof(T) + 2 * pb.np() * sizeof(float)), pb.n() * sizeof(T));
}

// range(0) = L (= M when bidirectional), range(1) = causal.
void window_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"L", "causal"})
      ->Args({16, 0})
      ->Args({64, 0})
      ->Args({16, 1})
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_memcpy<float>)->Apply(window_args);
BENCHMARK(BM_window_forward<float>)->Apply(window_args);
BENCHMARK(BM_original_forward<float>)->Apply(window_args);
BENCHMARK(BM_memcpy<__nv_bfloat16>)->Apply(window_args);
BENCHMARK(BM_window_forward<__nv_bfloat16>)->Apply(window_args);
BENCHMARK(BM_original_forward<__nv_bfloat16>)->Apply(window_args);
BENCHMARK(BM_layer_forward<float>)->Apply(window_args);
BENCHMARK(BM_layer_forward<__nv_bfloat16>)->Apply(window_args);
BENCHMARK(BM_layer_backward<float>)->Apply(window_args);
BENCHMARK(BM_layer_backward<__nv_bfloat16>)->Apply(window_args);
BENCHMARK(BM_original_backward<float>)->Apply(window_args);
BENCHMARK(BM_original_backward<__nv_bfloat16>)->Apply(window_args);
BENCHMARK(BM_offsets_forward<float>)->Apply(window_args);
BENCHMARK(BM_offsets_forward<__nv_bfloat16>)->Apply(window_args);
BENCHMARK(BM_offsets_backward<float>)->Apply(window_args);
BENCHMARK(BM_offsets_backward<__nv_bfloat16>)->Apply(window_args);

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("talkconv CUDA benchmarks: no CUDA device found, nothing to measure\n");
    return 0;
  }
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  benchmark::AddCustomContext("device", prop.name);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
