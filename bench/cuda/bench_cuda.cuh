// What the GPU benchmark's translation units share (bench_cuda.cu registers and runs; bench_cuda_<dtype>.cu
// instantiate one dtype's benchmarks; bench_cuda_decoder.cu the decoder steps): the device buffers, the
// event timing loop, the copy roof, the problem shapes, the original algorithm's kernels and the
// benchmark bodies. Names and counters: bench_cuda.cu's header.
#pragma once

#include <talkconv/cuda/talkconv.cuh>

#include "bench_inputs.cuh"

#include <benchmark/benchmark.h>

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

namespace talkconv_bench {


namespace tcu = talkconv::cuda;
using talkconv::acc_t;
using talkconv::index_t;


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

// Times f() with CUDA events around each iteration (manual time); returns the total seconds. per: the
// iteration's time is reported divided by it (f runs `per` units of work, e.g. decoder steps).
template <class F>
double time_loop(benchmark::State& st, cudaStream_t s, F&& f, double per = 1.0) {
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
    st.SetIterationTime(double(ms) * 1e-3 / per);
    total += double(ms) * 1e-3;
  }
  BENCH_CUDA(cudaEventDestroy(a));
  BENCH_CUDA(cudaEventDestroy(b));
  return total;
}

// Device-to-device copy rate (read + write bytes per second) of a copy moving `moved` bytes in all
// (moved / 2 read, moved / 2 written), measured once per size in this process: the roof a kernel that
// must move `moved` bytes is held against.
inline double copy_rate(std::size_t moved) {
  static std::map<std::size_t, double> cache;
  const auto it = cache.find(moved);
  if (it != cache.end()) return it->second;
  const std::size_t bytes = moved / 2 > 256 ? moved / 2 : 256;
  dev<char> a(bytes, 1, 0.0f, 1.0f), b(bytes);
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  BENCH_CUDA(cudaMemcpy(b.p, a.p, bytes, cudaMemcpyDeviceToDevice));
  float best = 0.0f;
  for (int rep = 0; rep < 5; ++rep) {  // the best of 5 timings of 4 copies: other work only slows a copy down
    BENCH_CUDA(cudaEventRecord(e0));
    for (int i = 0; i < 4; ++i) BENCH_CUDA(cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice));
    BENCH_CUDA(cudaEventRecord(e1));
    BENCH_CUDA(cudaEventSynchronize(e1));
    float ms = 0.0f;
    BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    if (rep == 0 || ms < best) best = ms;
  }
  BENCH_CUDA(cudaEventDestroy(e0));
  BENCH_CUDA(cudaEventDestroy(e1));
  const double rate = 2.0 * double(bytes) * 4.0 / (double(best) * 1e-3);
  cache[moved] = rate;
  return rate;
}

// Per call: bytes (the least the call must move) and tokens (T * B); rates over the measured time:
// bytes_per_second, tokens_per_second, and copy_fraction = bytes_per_second / copy_rate(bytes).
inline void set_counters(benchmark::State& st, double seconds, double bytes_moved, double tokens) {
  const double iters = double(st.iterations());
  const double rate = seconds > 0.0 ? bytes_moved * iters / seconds : 0.0;
  const double roof = copy_rate(static_cast<std::size_t>(bytes_moved));
  st.counters["bytes"] = bytes_moved;
  st.counters["tokens"] = tokens;
  st.counters["bytes_per_second"] = rate;
  st.counters["tokens_per_second"] = seconds > 0.0 ? tokens * iters / seconds : 0.0;
  st.counters["copy_GBps"] = roof * 1e-9;
  st.counters["copy_fraction"] = rate / roof;
  st.SetBytesProcessed(static_cast<int64_t>(bytes_moved * iters));
}

// One benchmark point: sequence shape, heads and window; the name carries every field.
struct problem {
  index_t T = 4096, B = 16, C = 1024, H = 16, L = 16, M = 16;
  bool causal = false;
  talkconv::seq_shape shape() const { return talkconv::seq_shape{T, B, C, talkconv::layout::tbc}; }
  talkconv::window_params window() const { return talkconv::window_params{H, L, M, causal}; }
  std::size_t n() const { return std::size_t(T * B * C); }
  std::size_t np() const { return std::size_t(T * B * window().num_offsets()); }
  double tokens() const { return double(T) * double(B); }
  talkconv::talk_config config() const { return talkconv::talk_config{C, H, L, M, causal}; }
  std::string tbc() const {
    return "/T:" + std::to_string(T) + "/B:" + std::to_string(B) + "/C:" + std::to_string(C);
  }
  std::string suffix() const {
    return tbc() + "/H:" + std::to_string(H) + "/L:" + std::to_string(L) + "/M:" + std::to_string(M) +
           "/causal:" + (causal ? "1" : "0");
  }
};

// A bidirectional (M = L) or causal (M = 0) point.
inline problem make_problem(index_t T, index_t B, index_t C, index_t H, index_t L, bool causal) {
  problem p;
  p.T = T, p.B = B, p.C = C, p.H = H, p.L = L, p.M = causal ? 0 : L, p.causal = causal;
  return p;
}

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

inline unsigned blocks_for(std::size_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

// ---- benchmarks: one function per family, called with the point it measures --------------------------

template <class T>
void BM_copy(benchmark::State& st, const problem& pb) {
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), y(pb.n());
  cudaStream_t s = nullptr;
  const double secs =
      time_loop(st, s, [&] { BENCH_CUDA(cudaMemcpyAsync(y.p, x.p, pb.n() * sizeof(T), cudaMemcpyDeviceToDevice, s)); });
  set_counters(st, secs, double(2 * pb.n() * sizeof(T)), pb.tokens());
}

template <class T>
void BM_window_forward(benchmark::State& st, const problem& pb) {
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), y(pb.n());
  dev<float> o(pb.np(), 2, 0.0f, 1.0f);
  cudaStream_t s = nullptr;
  const double secs =
      time_loop(st, s, [&] { tcu::window_forward<T>(pb.shape(), pb.window(), x.p, o.p, y.p, nullptr, s); });
  // x and the offsets read, y written.
  set_counters(st, secs, double(2 * pb.n() * sizeof(T) + pb.np() * sizeof(float)), pb.tokens());
}

template <class T>
void BM_original_forward(benchmark::State& st, const problem& pb) {
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), y(pb.n());
  dev<float> o(pb.np(), 2, 0.0f, 1.0f), S(pb.n()), totals(pb.n() / scan_chunk + pb.B * pb.C);
  const float inv_k = 1.0f / float(pb.L + pb.M + 1);
  cudaStream_t s = nullptr;
  const double secs = time_loop(st, s, [&] {
    global_scan<T, float, false>(x.p, S.p, totals.p, static_cast<float*>(nullptr), pb.T, pb.B * pb.C, inv_k, 1.0f, s);
    original_gather_kernel<T>
        <<<blocks_for(pb.n(), 256), 256, 0, s>>>(S.p, o.p, y.p, pb.T, pb.B, pb.C, pb.H, pb.L, pb.M, pb.causal);
  });
  set_counters(st, secs, double(2 * pb.n() * sizeof(T) + pb.np() * sizeof(float)), pb.tokens());
}

template <class T>
void BM_layer_forward(benchmark::State& st, const problem& pb) {
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
  // x read, y written (the saved offsets, P / C of that, are not counted).
  set_counters(st, secs, double(2 * pb.n() * sizeof(T)), pb.tokens());
}

// The layer forward as two kernels (the projection, then the window), as talk_conv::forward runs it where the
// one-kernel forward of 16-bit or float x (forward_fused_kernel) does not apply: beside layer_fwd, the same-run A/B of
// that kernel. The same inputs, dropout, saved offsets, bytes and counters as BM_layer_forward.
template <class T>
void BM_layer_forward_two_kernels(benchmark::State& st, const problem& pb) {
  namespace td = talkconv::cuda::detail;
  const talkconv::window_params w = pb.window();
  const index_t P = w.num_offsets();
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), y(pb.n()), W(std::size_t(P * pb.C), 3, -0.05f, 0.05f),
      b(std::size_t(P), 4, -0.5f, 0.5f);
  dev<float> saved(pb.np()), o(pb.np());
  const talkconv::dropout_params d{0.1f, 7, true};
  td::offsets_args<T> oa = td::make_offsets_args<T>(pb.shape(), w, nullptr, d);
  oa.x = x.p;
  oa.weight = W.p;
  oa.bias = b.p;
  oa.o = o.p;
  oa.o_pre = saved.p;
  td::window_args<T> wa = td::make_window_args<T>(pb.shape(), w, nullptr);
  wa.x = x.p;
  wa.offsets = o.p;
  wa.y = y.p;
  const double max_offset = 1.0 / (1.0 - double(d.p));
  const double secs = time_loop(st, nullptr, [&] {
    td::launch_project(oa, pb.shape(), nullptr);
    td::launch_window_forward(wa, pb.shape(), w, max_offset, nullptr);
  });
  set_counters(st, secs, double(2 * pb.n() * sizeof(T)), pb.tokens());
}

template <class T>
void BM_layer_backward(benchmark::State& st, const problem& pb) {
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
  // At least: x twice (offset gradients, dW), dy read, dx written.
  set_counters(st, secs, double(4 * pb.n() * sizeof(T)), pb.tokens());
}

// The window's share of the layer backward, as talk_conv::backward runs it (saved offsets, no dropout): the offset
// gradients finished into dz, dx with W^T dz, and whatever the path leaves to its caller (the combine where a head
// spans channel blocks, W^T dz as its own pass). Fuse: where it applies, in one kernel (backward_fused_kernel, 16-bit
// x); else the two kernels (gather, banded dx): window_bwd and window_bwd_2k, the fused kernel's same-run A/B (where
// it does not apply, e.g. heads wider than 64 channels, both run the two kernels). At least dy and x read, dx
// written (the offsets, o_pre and dz, ~6% more at the benchmark shape in bf16, are not counted).
template <class T, bool Fuse>
void BM_window_backward(benchmark::State& st, const problem& pb) {
  namespace td = talkconv::cuda::detail;
  const talkconv::window_params w = pb.window();
  const index_t P = w.num_offsets();
  const td::window_geom wg = td::window_geom::make(w, pb.C);
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), dy(pb.n(), 5, -1.0f, 1.0f), dx(pb.n()), W(std::size_t(P * pb.C), 3, -0.05f, 0.05f);
  dev<float> saved(pb.np(), 6, 0.05f, 0.95f), dz(pb.np()), part(wg.subs > 1 ? pb.np() * std::size_t(wg.subs) : 1);
  dev<double> reach_buf(2);  // the reach's two 64-bit counters (launch_window_backward zeroes them)
  auto* reach = reinterpret_cast<unsigned long long*>(reach_buf.p);
  td::window_args<T> wa = td::make_window_args<T>(pb.shape(), w, nullptr);
  wa.x = x.p;
  wa.offsets = saved.p;
  wa.dy = dy.p;
  wa.dx = dx.p;
  wa.partial = wg.subs > 1 ? part.p : dz.p;
  wa.dz = dz.p;
  wa.weight = W.p;
  wa.finish.on = true;
  wa.finish.o_pre = saved.p;
  td::offsets_args<T> c = td::make_offsets_args<T>(pb.shape(), w, nullptr, {});
  c.x = x.p;
  c.weight = W.p;
  c.o_pre = saved.p;
  c.partial = wa.partial;
  c.subs = wg.subs;
  c.dz = dz.p;
  c.dx = dx.p;
  const double max_offset = 1.0;
  const double secs = time_loop(st, nullptr, [&] {
    const bool wtdz = td::launch_window_backward(
        wa, pb.shape(), w, max_offset, reach, nullptr,
        [&](bool finished) {
          if (!finished) td::launch_combine_offsets_grad(c, dz.p, nullptr);
        },
        Fuse);
    if (!wtdz) td::launch_offset_path(c, nullptr);
  });
  set_counters(st, secs, double(3 * pb.n() * sizeof(T)), pb.tokens());
}

template <class T>
void BM_original_backward(benchmark::State& st, const problem& pb) {
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), dy(pb.n(), 5, -1.0f, 1.0f), dx(pb.n());
  dev<float> o(pb.np(), 2, 0.0f, 1.0f), S(pb.n()), dS(pb.n()), d_o(pb.np()), totals(pb.n() / scan_chunk + pb.B * pb.C);
  const float inv_k = 1.0f / float(pb.L + pb.M + 1);
  cudaStream_t s = nullptr;
  const double secs = time_loop(st, s, [&] {
    global_scan<T, float, false>(x.p, S.p, totals.p, static_cast<float*>(nullptr), pb.T, pb.B * pb.C, inv_k, 1.0f, s);
    BENCH_CUDA(cudaMemsetAsync(dS.p, 0, pb.n() * sizeof(float), s));
    BENCH_CUDA(cudaMemsetAsync(d_o.p, 0, pb.np() * sizeof(float), s));
    original_scatter_kernel<T><<<blocks_for(pb.n(), 256), 256, 0, s>>>(S.p, o.p, dy.p, dS.p, d_o.p, pb.T, pb.B, pb.C,
                                                                       pb.H, pb.L, pb.M, pb.causal);
    global_scan<float, T, true>(dS.p, dS.p, totals.p, dx.p, pb.T, pb.B * pb.C, 1.0f, inv_k, s);
  });
  set_counters(st, secs, double(4 * pb.n() * sizeof(T)), pb.tokens());
}

// The offset GEMMs alone. Forward: x W^T with sigmoid and dropout; at least x read, o and o_pre written.
template <class T>
void BM_offsets_forward(benchmark::State& st, const problem& pb) {
  const index_t P = pb.window().num_offsets();
  dev<T> x(pb.n(), 1, -1.0f, 3.0f), W(std::size_t(P * pb.C), 3, -0.05f, 0.05f), b(std::size_t(P), 4, -0.5f, 0.5f);
  dev<float> o(pb.np()), pre(pb.np());
  const talkconv::dropout_params d{0.1f, 7, true};
  const double secs = time_loop(st, nullptr, [&] {
    tcu::offsets_forward<T>(pb.shape(), pb.window(), x.p, W.p, b.p, d, o.p, pre.p, nullptr, nullptr);
  });
  set_counters(st, secs, double(pb.n() * sizeof(T) + 2 * pb.np() * sizeof(float)), pb.tokens());
}

// Backward: dz, dx += W^T dz, dW and dbias; at least x read, dx read and written.
template <class T>
void BM_offsets_backward(benchmark::State& st, const problem& pb) {
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
  set_counters(st, secs, double(3 * pb.n() * sizeof(T) + 2 * pb.np() * sizeof(float)), pb.tokens());
}

// ---- registration: named points, so every parameter is in the name ------------------------------------

template <class T>
const char* dtype_name();
template <>
inline const char* dtype_name<float>() { return "f32"; }
template <>
inline const char* dtype_name<__half>() { return "f16"; }
template <>
inline const char* dtype_name<__nv_bfloat16>() { return "bf16"; }

enum family : unsigned {
  copy = 1, window_fwd = 2, layer_fwd = 4, layer_bwd = 8, orig_fwd = 16, orig_bwd = 32, offsets_fwd = 64, offsets_bwd = 128,
  layer_fwd_2k = 256,  // the layer forward as two kernels (16-bit and float x: the fused forward's baseline)
  window_bwd = 512,    // the window's share of the layer backward (fused where it applies)
  window_bwd_2k = 1024  // the same as two kernels (16-bit x: the fused backward's baseline)
};
constexpr unsigned layer_families = copy | window_fwd | layer_fwd | layer_fwd_2k | layer_bwd;
constexpr unsigned all_families = layer_families | orig_fwd | orig_bwd;

struct registry {
  std::set<std::string> seen;
  double min_time = 0.05;

  void add_one(const std::string& name, void (*fn)(benchmark::State&, const problem&), const problem& pb) {
    if (!seen.insert(name).second) return;  // the sweeps share points (the base shape is in every one)
    benchmark::RegisterBenchmark(name.c_str(), [fn, pb](benchmark::State& st) { fn(st, pb); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->MinTime(min_time);
  }
  template <class T>
  void add(unsigned fams, const problem& pb);
};

// Defined out of the class (so not inline: the extern template declarations below then keep every other
// translation unit from instantiating it, and the kernels with it), instantiated once per dtype in its own
// translation unit (bench_cuda_<dtype>.cu): the benchmark's kernels compile once each, in parallel (one file
// took 66-100 s on a 16-core H200 machine). Defined in the class, it was inline, and bench_cuda.cu compiled
// every kernel of all three dtypes again (cicc 71 s + ptxas 57 s here, 2026-12-01).
template <class T>
void registry::add(unsigned fams, const problem& pb) {
  const std::string d = std::string("/dtype:") + dtype_name<T>(), s = d + pb.suffix();
  if (fams & copy) add_one("copy" + d + pb.tbc(), &BM_copy<T>, pb);
  if (fams & window_fwd) add_one("window_fwd" + s, &BM_window_forward<T>, pb);
  if (fams & layer_fwd) add_one("layer_fwd" + s, &BM_layer_forward<T>, pb);
  if (fams & layer_fwd_2k) add_one("layer_fwd_2k" + s, &BM_layer_forward_two_kernels<T>, pb);
  if (fams & layer_bwd) add_one("layer_bwd" + s, &BM_layer_backward<T>, pb);
  if (fams & window_bwd) add_one("window_bwd" + s, &BM_window_backward<T, true>, pb);
  if constexpr (!std::is_same<T, float>::value)
    if (fams & window_bwd_2k) add_one("window_bwd_2k" + s, &BM_window_backward<T, false>, pb);
  if (fams & orig_fwd) add_one("orig_fwd" + s, &BM_original_forward<T>, pb);
  if (fams & orig_bwd) add_one("orig_bwd" + s, &BM_original_backward<T>, pb);
  if (fams & offsets_fwd) add_one("offsets_fwd" + s, &BM_offsets_forward<T>, pb);
  if (fams & offsets_bwd) add_one("offsets_bwd" + s, &BM_offsets_backward<T>, pb);
}

using bf16 = __nv_bfloat16;
using f16 = __half;

// registry::add is compiled once per dtype, in bench_cuda_bf16.cu / _f32.cu / _f16.cu.
extern template void registry::add<bf16>(unsigned, const problem&);
extern template void registry::add<float>(unsigned, const problem&);
extern template void registry::add<f16>(unsigned, const problem&);

// The decoder-step benchmarks (bench_cuda_decoder.cu).
void register_decoders();

}  // namespace talkconv_bench
