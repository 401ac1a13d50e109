// GPU benchmarks (Google Benchmark, CUDA events, UseManualTime): talkconv's fused window forward, the
// layer forward and backward, against the original TaLK algorithm (a global prefix-sum tensor, then a
// gather; float atomics in backward) and a device-to-device copy of the same bytes.
//
// Names carry every parameter, so bench/peer_torch.py and bench/report.py read them without guessing:
//   <family>/dtype:<f32|f16|bf16>/T:<T>/B:<B>/C:<C>/H:<H>/L:<L>/M:<M>/causal:<0|1>
//   copy/dtype:<..>/T:<T>/B:<B>/C:<C>            (a device-to-device copy of x: the bandwidth roof)
// families: copy, window_fwd (offsets given), layer_fwd, layer_fwd_2k (the two-kernel forward beside the one-
// kernel one), layer_bwd (saved offsets), window_bwd and window_bwd_2k (the window's share of the backward, fused
// where it applies / as two kernels: base shape and heads only), orig_fwd, orig_bwd
// (Google Benchmark appends /min_time:../manual_time). Counters, per call: bytes (the least a call must
// move), tokens (T * B); rates: bytes_per_second, tokens_per_second, copy_fraction (bytes_per_second
// over the rate of a device copy of the same number of bytes, timed in this process), copy_GBps.
//
// Sets (--set=quick|full, or TALKCONV_BENCH_SET; default quick, about a minute on an H200): quick is
// the base shape (bf16, T = 4096, B = 16, C = 1024, H = 16, L = M = 16, bidirectional and causal), T
// from 1k to 256k at a fixed T * B = 262144 and at B = 1, L = M (and causal L) over 1 .. 511, dtype f32
// / f16 / bf16, C 256 .. 4096, heads 1 .. 64; full adds the T, window and C sweeps in f32 and f16.
// TALKCONV_BENCH_MIN_TIME=<seconds> (default 0.05) sets every benchmark's minimum time.
// Without a GPU the program says so and exits 0 (CI only builds it), except --benchmark_list_tests,
// which lists the names (the ctest bench_cuda_names checks them against bench/benchlib.py).
// This file registers and runs; the benchmark bodies are in bench_cuda.cuh, compiled once per dtype in
// bench_cuda_bf16.cu / _f32.cu / _f16.cu and the decoder steps in bench_cuda_decoder.cu (in parallel).
#include "bench_cuda.cuh"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

using namespace talkconv_bench;

// The sweeps; bench/benchlib.py (peer_shapes) names the same points for the peers.
template <class X>
void t_sweeps(registry& r, unsigned fams) {
  // T from 1k to 256k at a fixed T * B = 262144 tokens, and at B = 1 (C = 1024, H = 16, L = M = 16).
  for (index_t T : {1024, 4096, 16384, 65536, 262144}) {
    r.add<X>(fams, make_problem(T, 262144 / T, 1024, 16, 16, false));
    r.add<X>(fams, make_problem(T, 1, 1024, 16, 16, false));
  }
  r.add<X>(fams, make_problem(1024, 64, 1024, 16, 16, false));  // GPU-PROFILE.md's attention crossover point
}
template <class T>
void window_sweeps(registry& r, unsigned fams) {
  // L = M (K = 2L + 1) and causal L (K = L + 1) over 1 .. 511, T = 4096, B = 16, C = 1024, H = 16.
  for (index_t L : {1, 3, 7, 15, 31, 63, 127, 255, 511})
    for (bool causal : {false, true}) r.add<T>(fams, make_problem(4096, 16, 1024, 16, L, causal));
}
template <class T>
void channel_sweeps(registry& r, unsigned fams) {
  for (index_t C : {256, 512, 1024, 2048, 4096}) r.add<T>(fams, make_problem(4096, 16, C, 16, 16, false));
}

void register_all(registry& r, bool full) {
  // The base shape (GPU-PROFILE.md's), every family, every dtype, bidirectional and causal.
  for (bool causal : {false, true}) {
    r.add<bf16>(all_families | offsets_fwd | offsets_bwd | window_bwd | window_bwd_2k,
                make_problem(4096, 16, 1024, 16, 16, causal));
    r.add<float>(all_families | offsets_fwd | offsets_bwd | window_bwd, make_problem(4096, 16, 1024, 16, 16, causal));
    r.add<f16>(all_families | window_bwd | window_bwd_2k, make_problem(4096, 16, 1024, 16, 16, causal));
  }
  t_sweeps<bf16>(r, all_families);
  window_sweeps<bf16>(r, layer_families | orig_fwd);
  channel_sweeps<bf16>(r, layer_families);
  // Heads: R = C / H channels share a window (C = 1024).
  for (index_t H : {1, 4, 16, 64})
    r.add<bf16>(layer_families | window_bwd | window_bwd_2k, make_problem(4096, 16, 1024, H, 16, false));
  // Decoding: decoder_step/dtype:<bf16|f32>/B:<1|8|64>/C:1024/L:63/H:16 (one step() per token on a stream)
  // and the same name + /graph:1 (CUDA graph replay), as bench/benchlib.py's expected_decoder_names.
  register_decoders();
  if (!full) return;
  t_sweeps<float>(r, layer_families);
  t_sweeps<f16>(r, layer_families);
  window_sweeps<float>(r, layer_families);
  window_sweeps<f16>(r, layer_families);
  channel_sweeps<float>(r, layer_families);
  channel_sweeps<f16>(r, layer_families);
}

// --set=quick|full (taken out of argv before Google Benchmark reads it), else TALKCONV_BENCH_SET.
bool take_full_flag(int& argc, char** argv) {
  const char* env = std::getenv("TALKCONV_BENCH_SET");
  bool full = env != nullptr && std::string(env) == "full";
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--set=", 0) == 0) {
      const std::string v = a.substr(6);
      if (v != "quick" && v != "full") {
        std::fprintf(stderr, "talkconv_cuda_bench: --set takes quick or full, not '%s'\n", v.c_str());
        std::exit(1);
      }
      full = v == "full";
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  return full;
}

bool listing(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--benchmark_list_tests", 22) == 0 && std::strcmp(argv[i], "--benchmark_list_tests=false") != 0)
      return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const bool full = take_full_flag(argc, argv);
  registry r;
  if (const char* mt = std::getenv("TALKCONV_BENCH_MIN_TIME")) r.min_time = std::atof(mt);
  int devices = 0;
  const bool have_device = cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0;
  if (!have_device && !listing(argc, argv)) {
    std::printf("talkconv CUDA benchmarks: no CUDA device found, nothing to measure\n");
    return 0;
  }
  register_all(r, full);
  if (have_device) {
    cudaDeviceProp prop{};
    BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    benchmark::AddCustomContext("device", prop.name);
    benchmark::AddCustomContext("device_sms", std::to_string(prop.multiProcessorCount));
    benchmark::AddCustomContext("device_cc", std::to_string(prop.major) + "." + std::to_string(prop.minor));
    benchmark::AddCustomContext("cuda_driver", std::to_string(driver));
    benchmark::AddCustomContext("cuda_runtime", std::to_string(runtime));
  }
  benchmark::AddCustomContext("talkconv_bench_set", full ? "full" : "quick");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
