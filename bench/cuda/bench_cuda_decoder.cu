// The decoder-step benchmarks of talkconv_cuda_bench (registered by bench_cuda.cu's register_all).
#include "bench_cuda.cuh"

#include <string>

namespace talkconv_bench {
namespace {

// ---- incremental decoding: one token of B sequences per step ------------------------------------------

// cuda::decoder::step for C = 1024, H = 16, L = 63 (causal), B sequences; graph: one step captured in a
// CUDA graph and replayed with cudaGraphLaunch (how serving stacks decode), else step() called per token.
// Each iteration runs `steps` tokens back to back on one stream, timed with events around them; the
// reported time is per step (launch included: a step is a few microseconds, mostly launch latency).
template <class T>
void BM_decoder_step(benchmark::State& st, index_t B, bool graph) {
  constexpr index_t C = 1024, H = 16, L = 63, steps = 1000;
  const talkconv::window_params w{H, L, 0, true};
  dev<T> x(B * C, 1, -1.0f, 1.0f), W(H * C, 2, -0.03f, 0.03f), bias(H, 3, -0.5f, 0.5f), y(B * C);
  cudaStream_t s = nullptr;
  BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  {
    tcu::decoder<T> dec(w, C, B, s);
    cudaGraph_t g = nullptr;
    cudaGraphExec_t exec = nullptr;
    if (graph) {
      BENCH_CUDA(cudaStreamSynchronize(s));
      BENCH_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
      dec.step(x.p, W.p, bias.p, y.p, s);
      BENCH_CUDA(cudaStreamEndCapture(s, &g));
      BENCH_CUDA(cudaGraphInstantiate(&exec, g, 0));
    }
    auto run = [&] {
      for (index_t i = 0; i < steps; ++i) {
        if (graph)
          BENCH_CUDA(cudaGraphLaunch(exec, s));
        else
          dec.step(x.p, W.p, bias.p, y.p, s);
      }
    };
    time_loop(st, s, run, double(steps));  // warm-up first: the ring crosses several re-bases
    if (graph) {
      BENCH_CUDA(cudaGraphExecDestroy(exec));
      BENCH_CUDA(cudaGraphDestroy(g));
    }
    BENCH_CUDA(cudaStreamSynchronize(s));
  }
  BENCH_CUDA(cudaStreamSynchronize(s));
  BENCH_CUDA(cudaStreamDestroy(s));
}

constexpr benchmark::IterationCount decoder_iterations = 20;  // x 1000 steps: 20k tokens per benchmark

template <class T>
void register_decoder() {
  for (bool graph : {false, true})
    for (index_t B : {1, 8, 64}) {
      const std::string name = std::string("decoder_step/dtype:") + dtype_name<T>() + "/B:" + std::to_string(B) +
                               "/C:1024/L:63/H:16" + (graph ? "/graph:1" : "");
      // A fixed count of iterations: each runs 1000 steps but reports the time of one, so a min_time
      // (0.03 s of reported time) asked for ~3000 iterations of 1000 steps, 30 s or more per benchmark
      // (the H200 runs of 2026-11-30 never got past the first decoder benchmark in 100-170 s).
      benchmark::RegisterBenchmark(name.c_str(), [B, graph](benchmark::State& st) { BM_decoder_step<T>(st, B, graph); })
          ->UseManualTime()
          ->Iterations(decoder_iterations)
          ->Unit(benchmark::kMicrosecond);
    }
}

}  // namespace

void register_decoders() {
  register_decoder<bf16>();
  register_decoder<float>();
}

}  // namespace talkconv_bench
