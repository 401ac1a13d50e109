#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds talkconv's CUDA tests and benchmarks for the GPU's own
# architecture (from nvidia-smi; override with CUDA_ARCH=80 ...), runs the CUDA tests, compute-sanitizer
# memcheck, racecheck, synccheck and initcheck on reduced case sets, and the GPU benchmarks (JSON), and
# writes everything with the device, driver and date to an output directory: the first argument, else
# $OUT, else ./gpu-check-out. summary.txt there has one line per step (OK / FAILED / SKIPPED) and the
# verdict; each step's whole output is in <step>.txt, the tail of each in gpu-check.log.
#
#   scripts/gpu-check.sh [out_dir]
#
# Environment: JOBS (build jobs, default nproc), CUDA_ARCH (default: the GPU's compute capability, else
# 90), SKIP_TESTS=1, SKIP_SANITIZE=1, SANITIZERS (default "memcheck racecheck synccheck initcheck"),
# SKIP_BENCH=1, BENCH_FILTER (a --benchmark_filter regex), SKIP_PEERS=1 (no PyTorch peer timing after the benchmarks), SKIP_TORCH=1 (the PyTorch extension's suite,
# python/ through scripts/test-torch.sh; TALKCONV_PYTHON picks the interpreter), DIRECT_BUILD=1 (nvcc without cmake). The build
# directory (build/gpu-check) is reused, so the steps can run as separate calls (each call rewrites
# summary.txt with its own steps): SKIP_SANITIZE=1 SKIP_BENCH=1, then SKIP_TESTS=1 SKIP_BENCH=1 ...
# Programs in build/prebuilt/gpu-check (scripts/gpu-prebuild.sh, on another machine) replace the build when their
# stamp matches this tree (scripts/prebuilt.sh); PREBUILT=0 builds regardless.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${1:-${OUT:-$root/gpu-check-out}}
mkdir -p "$out"
log="$out/gpu-check.log"
summary="$out/summary.txt"
: >"$log"
: >"$summary"
say() { echo "$*" | tee -a "$log"; }
note() { printf '%-10s %-8s %s\n' "$1" "$2" "${3:-}" >>"$summary"; }  # step, OK|FAILED|SKIPPED, detail
run() {  # run a command, its output into the log and a file of its own; returns its status
  local name=$1
  shift
  say "---- $name: $*"
  local t0=$SECONDS
  "$@" >"$out/$name.txt" 2>&1
  local rc=$?
  tail -n 40 "$out/$name.txt" | tee -a "$log"
  say "---- $name: exit $rc after $((SECONDS - t0)) s"
  last_secs=$((SECONDS - t0))
  return $rc
}
last_secs=0
# A doctest run passes only if some test case passed: a filter that matches nothing must not read as a
# pass. (GPU cases skipped for want of a device make the program exit 77, a failure here; doctest counts
# the cases a filter leaves out as "skipped", so that count says nothing.)
ran_cases() {
  grep -Eq '\[doctest\] test cases: +[0-9]+ \| +[1-9][0-9]* passed' "$out/$1.txt"
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
  note setup FAILED "missing: ${missing[*]}"
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
# The GPU's own architecture (compute_cap "9.0" -> 90), so a kernel image exists for it.
detected=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
[[ $detected =~ ^[0-9]+$ ]] || detected=90
arch=${CUDA_ARCH:-$detected}
say "CUDA architecture: sm_$arch (detected: ${detected})"
status=0
bench_built=1
mkdir -p "$build"
t0=$SECONDS
# Programs built on another machine for this tree (scripts/gpu-prebuild.sh; carry build/prebuilt), when their
# stamp matches the tree, this GPU's architecture and no extra -D flags, and their libraries load here.
. "$root/scripts/prebuilt.sh"
prebuilt_libs
pre_tests=$(prebuilt_path gpu-check talkconv_cuda_tests "" "$arch") || pre_tests=
pre_bench=$(prebuilt_path gpu-check talkconv_cuda_bench "" "$arch") || pre_bench=
if [ -n "$pre_tests" ] && { [ "${SKIP_BENCH:-0}" = 1 ] || [ -n "$pre_bench" ]; }; then
  say "prebuilt: $(tail -n 1 "$root/build/prebuilt/gpu-check/stamp")"
  note build OK "prebuilt (build/prebuilt/gpu-check, $(head -n 1 "$root/build/prebuilt/gpu-check/stamp"))"
  tests=$pre_tests
  bench=${pre_bench:-none}
  [ -n "$pre_bench" ] || bench_built=0
elif command -v cmake >/dev/null && [ "${DIRECT_BUILD:-0}" != 1 ]; then
  [ -d "$root/build/prebuilt/gpu-check" ] && say "prebuilt programs not used: their stamp does not match this tree," \
    "sm_$arch and no -D flags, or a library does not load (build/prebuilt/gpu-check/stamp: $(head -n 1 \
    "$root/build/prebuilt/gpu-check/stamp" 2>/dev/null); this tree: $(prebuilt_stamp gpu-check "$arch"))"
  # A build directory carried from another machine (another source path or compiler) cannot be reused.
  if [ -f "$build/CMakeCache.txt" ] && ! grep -q "^CMAKE_HOME_DIRECTORY:INTERNAL=$root\$" "$build/CMakeCache.txt"; then
    rm -rf "$build"
    mkdir -p "$build"
  fi
  if ! run configure cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTALKCONV_WERROR=ON \
    -DTALKCONV_BUILD_TESTS=ON -DTALKCONV_BUILD_EXAMPLES=OFF -DTALKCONV_BUILD_BENCH=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$arch"; then
    note configure FAILED "see configure.txt"
    exit 3
  fi
  # The tests first: a benchmark that fails to build (e.g. a bundled library this machine cannot load)
  # must not stop them.
  if ! run build cmake --build "$build" -j "$jobs" --target talkconv_cuda_tests; then
    note build FAILED "see build.txt"
    exit 4
  fi
  note build OK "$last_secs s, sm_$arch"
  if [ "${SKIP_BENCH:-0}" != 1 ]; then
    run build_bench cmake --build "$build" -j "$jobs" --target talkconv_cuda_bench || bench_built=0
  fi
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
  # Compiles the given sources in parallel (jobs at a time) and links them into $build/<name>.
  compile_link() {
    local name=$1 objs=() pids=() src
    shift 2
    local libs=("${@}")
    for src in "${sources[@]}"; do
      objs+=("$build/${name}_$(basename "$src").o")
      nvcc "${flags[@]}" -c "$src" -o "$build/${name}_$(basename "$src").o" &
      pids+=($!)
      while (($(jobs -rp | wc -l) >= jobs)); do sleep 1; done
    done
    for p in "${pids[@]}"; do wait "$p" || return 1; done
    nvcc "${flags[@]}" "${objs[@]}" -o "$build/$name" "${libdirs[@]}" "${libs[@]}"
  }
  direct() {
    local sources=("$root"/tests/cuda/*.cu "$root"/tests/cuda/*.cpp)
    compile_link talkconv_cuda_tests -- -lgomp -lpthread
  }
  direct_bench() {  # bench_cuda.cu and its per-dtype / decoder translation units
    local sources=("$root"/bench/cuda/bench_cuda*.cu)
    compile_link talkconv_cuda_bench -- -lbenchmark -lpthread
  }
  if ! run build direct; then
    note build FAILED "see build.txt (direct nvcc)"
    exit 4
  fi
  note build OK "$last_secs s, sm_$arch, direct nvcc"
  if [ "${SKIP_BENCH:-0}" != 1 ]; then run build_bench direct_bench || bench_built=0; fi
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
  if [ $rc -eq 77 ]; then
    say "TESTS SKIPPED: no usable CUDA device"
    note tests FAILED "exit 77: every GPU case skipped (no usable CUDA device)"
    status=1
  elif [ $rc -ne 0 ] || ! ran_cases tests; then
    note tests FAILED "exit $rc, $last_secs s (see tests.txt)"
    status=1
  else
    note tests OK "$last_secs s, $(grep -E '\[doctest\] test cases:' "$out/tests.txt" | tail -n 1 | tr -s ' ')"
  fi
else
  note tests SKIPPED "SKIP_TESTS=1"
fi

# ---- the PyTorch extension (python/): built with CUDA against this machine's torch, its whole suite ------
# Every CUDA case must run here: a skipped case is a failure (the build would have no CUDA, or torch no GPU).
if [ "${SKIP_TORCH:-0}" != 1 ]; then
  tpy=${TALKCONV_PYTHON:-$(command -v python3 || true)}
  if [ -n "$tpy" ] && "$tpy" -c "import torch; assert torch.cuda.is_available() and torch.version.cuda" 2>/dev/null; then
    run torch env TALKCONV_PYTHON="$tpy" TALKCONV_TORCH_CUDA=1 TORCH_CUDA_ARCH_LIST="${arch%?}.${arch: -1}" \
      MAX_JOBS="$jobs" "$root/scripts/test-torch.sh"
    rc=$?
    line=$(grep -E '[0-9]+ passed' "$out/torch.txt" | tail -n 1)
    if [ $rc -eq 0 ] && ! grep -Eq '[0-9]+ skipped' <<<"$line"; then
      note torch OK "$last_secs s, $line"
    else
      note torch FAILED "exit $rc, ${line:-no summary} (see torch.txt; skipped CUDA cases count as failures here)"
      status=1
    fi
  else
    say "PyTorch extension skipped: no python3 with a CUDA-enabled torch and a GPU (TALKCONV_PYTHON=...)"
    note torch SKIPPED "no python3 with CUDA-enabled torch"
  fi
else
  note torch SKIPPED "SKIP_TORCH=1"
fi

# ---- sanitizers on reduced case sets (no 64-bit case: it needs 28 GiB) ----------------------------------
# Case sets (doctest --test-case filters; every one must match some case, see ran_cases):
#   memcheck / initcheck: every float building block and the layer's special paths, the decoder and its
#     reorder, streams and host threads (out-of-bounds and misaligned accesses, leaks; reads of device
#     memory never written: the workspace pieces, the decoder's ring before it fills, padding rows);
#   racecheck: the window kernels (shared-memory scans, carries, tap caches) and the decoder;
#   synccheck: every kernel with barriers (window tiles, block reductions), float and half.
# SANITIZE_CASES (a doctest --test-case filter) replaces all three sets, e.g. to check one new kernel.
sanitize_cases() {
  if [ -n "${SANITIZE_CASES:-}" ]; then
    echo "$SANITIZE_CASES"
    return
  fi
  case $1 in
  memcheck | initcheck)
    echo '*: float,*beyond the shared-memory*: float,*integer bounds*,*offsets:*,*offsets backward*,*prefix sums*,*deterministic*,*incremental*: float,*reorder*,*several streams*,*host threads*,*misaligned*'
    ;;
  racecheck) echo '*window forward and backward*: float,*layer forward and backward*: float,*incremental*: float,*reorder continues*: float' ;;
  synccheck) echo '*window forward and backward*: float,*window forward and backward*: half,*layer forward and backward*: float' ;;
  esac
}
if [ "${SKIP_SANITIZE:-0}" != 1 ]; then
  cs=$(command -v compute-sanitizer || true)
  for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    [ -z "$cs" ] && [ -x "$c" ] && cs=$c
  done
  if [ -n "$cs" ]; then
    say "$("$cs" --version 2>&1 | tail -n 1)"
    for tool in ${SANITIZERS:-memcheck racecheck synccheck initcheck}; do
      extra=()
      case $tool in
      memcheck) extra=(--leak-check full) ;;
      racecheck) extra=(--racecheck-report all) ;;
      synccheck | initcheck) ;;
      *)
        note "$tool" FAILED "unknown tool"
        status=1
        continue
        ;;
      esac
      cases=$(sanitize_cases "$tool")
      run "$tool" "$cs" --tool "$tool" --error-exitcode 99 "${extra[@]}" "$tests" --no-version --force-colors=false \
        --test-case="$cases"
      rc=$?
      # memcheck / initcheck / synccheck print "ERROR SUMMARY: n errors", racecheck "RACECHECK SUMMARY: n hazards".
      errors=$(grep -Eo '(ERROR SUMMARY: [0-9]+ errors?|RACECHECK SUMMARY: [0-9]+ hazards?)' "$out/$tool.txt" | tail -n 1)
      if [ $rc -eq 0 ] && ran_cases "$tool"; then
        note "$tool" OK "$last_secs s, ${errors:-no summary}"
      else
        note "$tool" FAILED "exit $rc, $last_secs s, ${errors:-no summary} (see $tool.txt)"
        status=1
      fi
    done
  else
    say "compute-sanitizer not found: sanitizers skipped"
    note sanitize FAILED "compute-sanitizer not found"
    status=1
  fi
else
  note sanitize SKIPPED "SKIP_SANITIZE=1"
fi

# ---- benchmarks ----------------------------------------------------------------------------------------
if [ "${SKIP_BENCH:-0}" = 1 ]; then
  note bench SKIPPED "SKIP_BENCH=1"
elif [ $bench_built != 1 ]; then
  note bench FAILED "the benchmark did not build (see build_bench.txt)"
  status=1
else
  if run bench "$bench" --benchmark_out="$out/bench_cuda.json" --benchmark_out_format=json \
    ${BENCH_FILTER:+--benchmark_filter="$BENCH_FILTER"}; then
    note bench OK "$last_secs s, bench_cuda.json"
  else
    note bench FAILED "see bench.txt"
    status=1
  fi
  cat "$out/bench.txt" >>"$log"
  # Peer comparison (PyTorch SDPA and the original algorithm in PyTorch) where PyTorch with CUDA exists.
  if [ "${SKIP_PEERS:-0}" = 1 ]; then
    say "peer comparison skipped: SKIP_PEERS=1"
  elif command -v python3 >/dev/null && python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    # The first PEER_SHAPES shapes (default 8) timed; all matched (scripts/gpu-bench.sh times every one).
    python3 "$root/bench/peer_torch.py" --talkconv-json "$out/bench_cuda.json" --out "$out/peer.md" \
      --json-out "$out/peers.json" --shapes "${PEER_SHAPES:-8}" >>"$log" 2>&1 ||
      say "peer_torch.py failed (see the log)"
  else
    say "peer comparison skipped: no PyTorch with CUDA here"
  fi
fi

say "results in $out (summary.txt, gpu-check.log, tests.txt, <sanitizer>.txt, bench_cuda.json, ptxas.txt)"
verdict=$([ $status -eq 0 ] && echo OK || echo FAILED)
{
  echo "gpu-check: $verdict"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
} >>"$summary"
tee -a "$log" <"$summary"
exit $status
