#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds talkconv's CUDA tests and benchmarks for sm_90 (override with
# CUDA_ARCH=80 ...), runs the CUDA tests, compute-sanitizer memcheck and racecheck on a reduced case set,
# and the GPU benchmarks (JSON), and writes everything with the device, driver and date to an output
# directory: the first argument, else $OUT, else ./gpu-check-out.
#
#   scripts/gpu-check.sh [out_dir]
#
# Environment: JOBS (build jobs, default nproc), CUDA_ARCH (default 90), SKIP_TESTS=1, SKIP_SANITIZE=1,
# SKIP_BENCH=1, BENCH_FILTER (a --benchmark_filter regex). The build directory (build/gpu-check) is
# reused, so the steps can run as separate calls: SKIP_SANITIZE=1 SKIP_BENCH=1, then SKIP_TESTS=1 ...
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${1:-${OUT:-$root/gpu-check-out}}
mkdir -p "$out"
log="$out/gpu-check.log"
: >"$log"
say() { echo "$*" | tee -a "$log"; }
run() {  # run a command, its output into the log and a file of its own; returns its status
  local name=$1
  shift
  say "---- $name: $*"
  local t0=$SECONDS
  "$@" >"$out/$name.txt" 2>&1
  local rc=$?
  tail -n 40 "$out/$name.txt" | tee -a "$log"
  say "---- $name: exit $rc after $((SECONDS - t0)) s"
  return $rc
}

say "talkconv gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | wc -l) changed files"
say "host: $(uname -a)"

# ---- what the machine has --------------------------------------------------------------------------
# Dependencies bundled by scripts/gpu-deps-bundle.sh (carry build/deps to a machine without network).
deps=${DEPS_PREFIX:-$root/build/deps/usr}
if [ -d "$deps" ]; then
  export CMAKE_PREFIX_PATH="$deps${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  say "using bundled dependencies in $deps"
fi
prefixes() { echo /usr /usr/local ${CMAKE_PREFIX_PATH:+${CMAKE_PREFIX_PATH//:/ }}; }
missing=()
command -v nvidia-smi >/dev/null || missing+=("nvidia-smi (NVIDIA driver)")
command -v nvcc >/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH; }
command -v nvcc >/dev/null || missing+=("nvcc (CUDA toolkit; expected in /usr/local/cuda/bin)")
command -v g++ >/dev/null || missing+=("g++ (apt: g++)")
have_header() { for p in $(prefixes); do [ -e "$p/include/$1" ] || [ -e "$p/include/eigen3/$1" ] && return 0; done; return 1; }
have_header Eigen/Core || missing+=("Eigen 3 headers (apt: libeigen3-dev)")
have_header doctest/doctest.h || missing+=("doctest (apt: doctest-dev)")
have_header benchmark/benchmark.h || missing+=("Google Benchmark (apt: libbenchmark-dev)")
have_header Random123/philox.h || missing+=("Random123 (apt: librandom123-dev)")
apt_missing=0
for m in "${missing[@]}"; do [[ $m == *apt:* ]] && apt_missing=1; done
if ((apt_missing)) && command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
  say "trying apt-get for: ${missing[*]}"
  timeout 120 apt-get update -qq >/dev/null 2>&1 &&
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq cmake g++ make libeigen3-dev doctest-dev \
      libbenchmark-dev librandom123-dev >/dev/null 2>&1 || say "apt-get failed (no network?)"
  missing=()
  command -v nvidia-smi >/dev/null || missing+=("nvidia-smi (NVIDIA driver)")
  command -v nvcc >/dev/null || missing+=("nvcc (CUDA toolkit)")
  have_header Eigen/Core || missing+=("Eigen 3 headers (apt: libeigen3-dev)")
  have_header doctest/doctest.h || missing+=("doctest (apt: doctest-dev)")
  have_header benchmark/benchmark.h || missing+=("Google Benchmark (apt: libbenchmark-dev)")
  have_header Random123/philox.h || missing+=("Random123 (apt: librandom123-dev)")
fi
if ((${#missing[@]})); then
  say "MISSING, cannot go on:"
  for m in "${missing[@]}"; do say "  - $m"; done
  say "(set CMAKE_PREFIX_PATH to where they are installed, or install them and re-run)"
  exit 2
fi

say "---- device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv | tee -a "$log"
nvidia-smi | tee "$out/nvidia-smi.txt" >/dev/null
say "$(nvcc --version | tail -n 2 | head -n 1)"

# ---- build -------------------------------------------------------------------------------------------
build=$root/build/gpu-check
jobs=${JOBS:-$(nproc)}
arch=${CUDA_ARCH:-90}
status=0
mkdir -p "$build"
t0=$SECONDS
if command -v cmake >/dev/null && [ "${DIRECT_BUILD:-0}" != 1 ]; then
  run configure cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTALKCONV_WERROR=ON -DTALKCONV_BUILD_TESTS=ON \
    -DTALKCONV_BUILD_EXAMPLES=OFF -DTALKCONV_BUILD_BENCH=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" || exit 3
  run build cmake --build "$build" -j "$jobs" --target talkconv_cuda_tests talkconv_cuda_bench || exit 4
  tests=$build/tests/cuda/talkconv_cuda_tests
  bench=$build/bench/cuda/talkconv_cuda_bench
else
  # No cmake: the same programs straight from nvcc (one object per source, in parallel, then a link).
  say "building with nvcc directly (no cmake, or DIRECT_BUILD=1)"
  inc=(-I"$root/include" -I"$root/tests")
  libdirs=()
  for p in $(prefixes); do
    [ -d "$p/include" ] && inc+=(-I"$p/include")
    [ -d "$p/include/eigen3" ] && inc+=(-I"$p/include/eigen3")
    for l in "$p/lib/$(gcc -dumpmachine 2>/dev/null)" "$p/lib"; do [ -d "$l" ] && libdirs+=(-L"$l" -Xlinker -rpath="$l"); done
  done
  flags=(-std=c++17 -O3 -DNDEBUG -arch=sm_"$arch" --expt-relaxed-constexpr -Xptxas=-v -Xcompiler=-fopenmp "${inc[@]}")
  direct() {
    local objs=() pids=() src
    for src in "$root"/tests/cuda/*.cu "$root"/tests/cuda/*.cpp; do
      objs+=("$build/$(basename "$src").o")
      nvcc "${flags[@]}" -c "$src" -o "$build/$(basename "$src").o" &
      pids+=($!)
      while (($(jobs -rp | wc -l) >= jobs)); do sleep 1; done
    done
    for p in "${pids[@]}"; do wait "$p" || return 1; done
    nvcc "${flags[@]}" "${objs[@]}" -o "$build/talkconv_cuda_tests" "${libdirs[@]}" -lgomp || return 1
    nvcc "${flags[@]}" "$root/bench/cuda/bench_cuda.cu" -o "$build/talkconv_cuda_bench" "${libdirs[@]}" -lbenchmark -lpthread
  }
  run build direct || exit 4
  tests=$build/talkconv_cuda_tests
  bench=$build/talkconv_cuda_bench
fi
say "build time: $((SECONDS - t0)) s"
grep -E "ptxas info +: (Compiling entry|Used)" "$out/build.txt" >"$out/ptxas.txt" || true

# ---- tests -------------------------------------------------------------------------------------------
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  # The same program ctest runs as talkconv.cuda (label gpu): exit 77 = every GPU case skipped.
  run tests "$tests" --no-version --force-colors=false --duration=true
  rc=$?
  [ $rc -eq 77 ] && say "TESTS SKIPPED: no usable CUDA device" && status=1
  [ $rc -ne 0 ] && [ $rc -ne 77 ] && status=1
fi

# ---- sanitizers on a reduced case set (no 64-bit case: it needs 28 GiB) ---------------------------------
if [ "${SKIP_SANITIZE:-0}" != 1 ]; then
  if command -v compute-sanitizer >/dev/null || [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
    cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
    subset='*float,*beyond the shared-memory*,*integer bounds*,*offsets*,*prefix sums*,*deterministic*,*incremental*'
    run memcheck "$cs" --tool memcheck --error-exitcode 1 --leak-check full "$tests" --no-version \
      --test-case="$subset" || status=1
    run racecheck "$cs" --tool racecheck --error-exitcode 1 --racecheck-report all "$tests" --no-version \
      --test-case='*window forward and backward*: float,*layer forward and backward*: float,*incremental*: float' ||
      status=1
    run synccheck "$cs" --tool synccheck --error-exitcode 1 "$tests" --no-version \
      --test-case='*window forward and backward*: float' || status=1
  else
    say "compute-sanitizer not found: sanitizers skipped"
    status=1
  fi
fi

# ---- benchmarks ----------------------------------------------------------------------------------------
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  run bench "$bench" --benchmark_out="$out/bench_cuda.json" --benchmark_out_format=json \
    ${BENCH_FILTER:+--benchmark_filter="$BENCH_FILTER"} || status=1
  cat "$out/bench.txt" >>"$log"
  # Peer comparison (PyTorch SDPA and the original algorithm in PyTorch) where PyTorch with CUDA exists.
  if command -v python3 >/dev/null && python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    python3 "$root/bench/peer_torch.py" --talkconv-json "$out/bench_cuda.json" --out "$out/peer.md" >>"$log" 2>&1 ||
      say "peer_torch.py failed (see the log)"
  else
    say "peer comparison skipped: no PyTorch with CUDA here"
  fi
fi

say "results in $out (gpu-check.log, tests.txt, memcheck.txt, racecheck.txt, bench_cuda.json, ptxas.txt)"
say "gpu-check: $([ $status -eq 0 ] && echo OK || echo FAILED)"
exit $status
