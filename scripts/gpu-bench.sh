#!/usr/bin/env bash
# One command on a machine with an NVIDIA GPU: build, CUDA tests, GPU benchmarks, PyTorch peers on the same
# shapes, and the report, in about 5 minutes on an H100 / H200 (cold build included; no sanitizers: those
# are scripts/gpu-check.sh's). Writes to the first argument, else $OUT, else ./gpu-bench-out:
#
#   summary.txt        one line per step (OK / FAILED / SKIPPED) and the verdict, device, driver, commit
#   RESULTS-gpu.md     the GPU section of bench/RESULTS.md for this run (tables; plots in the tarball)
#   bench_cuda.json    talkconv_cuda_bench's Google Benchmark JSON (names carry every parameter)
#   peers.json         bench/peer_torch.py's times of the peers (SDPA, cuDNN conv1d, DynamicConv, TaLK in PyTorch)
#   run.json           commit, date, GPU, driver, nvcc, architecture, set
#   gpu-bench.tar.gz   all of the above, the logs of every step, peers.md and plots/*.png
#
# To keep a run: copy bench_cuda.json, peers.json and run.json to bench/cuda/results/<date>-<gpu>-<commit>/
# and run `python3 bench/report.py` (it then writes that run's GPU section, with plots, into bench/RESULTS.md).
#
#   scripts/gpu-bench.sh [out_dir]
#
# Environment: JOBS, CUDA_ARCH (as scripts/gpu-check.sh), BENCH_SET (quick, default, or full), BENCH_FILTER
# (a --benchmark_filter regex), TALKCONV_BENCH_MIN_TIME (seconds per benchmark, default 0.03), SKIP_TESTS=1,
# SKIP_PEERS=1, PEER_BUDGET_S (seconds of peer timing before the remaining shapes are left out, default 150),
# PEER_ARGS (more arguments for peer_torch.py, e.g. "--shapes 5"). Dependencies: as
# gpu-check.sh (carry build/deps from scripts/gpu-deps-bundle.sh to a machine without network).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${1:-${OUT:-$root/gpu-bench-out}}
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-bench.XXXXXX")
summary="$work/summary.txt"
log="$work/gpu-bench.log"
: >"$summary"
t_start=$SECONDS
say() { echo "$*" | tee -a "$log"; }
note() { printf '%-10s %-8s %s\n' "$1" "$2" "${3:-}" >>"$summary"; }
status=0

say "talkconv gpu-bench $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# ---- build and tests: gpu-check.sh's own steps (its sanitizers and benchmark step skipped) ----------------
SKIP_SANITIZE=1 SKIP_BENCH=1 SKIP_TESTS=${SKIP_TESTS:-0} scripts/gpu-check.sh "$work/check" >>"$log" 2>&1
check_rc=$?
cat "$work/check/summary.txt" >>"$summary" 2>/dev/null
if [ $check_rc -ne 0 ]; then
  status=1
  grep -q '^build *OK' "$work/check/summary.txt" 2>/dev/null || {
    note gpu-check FAILED "exit $check_rc before the build finished (see check/gpu-check.log)"
  }
fi
build=$root/build/gpu-check
bench=$build/bench/cuda/talkconv_cuda_bench

# ---- benchmarks ---------------------------------------------------------------------------------------------
if grep -q '^build *OK' "$work/check/summary.txt" 2>/dev/null; then
  t0=$SECONDS
  if cmake --build "$build" -j "${JOBS:-$(nproc)}" --target talkconv_cuda_bench >"$work/build_bench.txt" 2>&1; then
    note build_bench OK "$((SECONDS - t0)) s"
  else
    note build_bench FAILED "see build_bench.txt"
    status=1
  fi
fi
if [ -x "$bench" ]; then
  t0=$SECONDS
  TALKCONV_BENCH_MIN_TIME=${TALKCONV_BENCH_MIN_TIME:-0.03} "$bench" --set="${BENCH_SET:-quick}" \
    --benchmark_out="$work/bench_cuda.json" --benchmark_out_format=json \
    ${BENCH_FILTER:+--benchmark_filter="$BENCH_FILTER"} >"$work/bench.txt" 2>&1
  rc=$?
  n=$(grep -c '"run_name"' "$work/bench_cuda.json" 2>/dev/null)
  n=${n:-0}
  if [ $rc -eq 0 ]; then note bench OK "$((SECONDS - t0)) s, $n results"; else
    note bench FAILED "exit $rc after $((SECONDS - t0)) s, $n results (see bench.txt)"
    status=1
  fi
  tail -n 5 "$work/bench.txt" | tee -a "$log"
else
  note bench FAILED "no benchmark program"
  status=1
fi

# ---- peers (PyTorch on the same GPU) ------------------------------------------------------------------------
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
nvcc_v=$(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || true)
arch=$(grep -o 'sm_[0-9]*' "$work/check/gpu-check.log" 2>/dev/null | head -n 1)
python3 - "$work/run.json" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$gpu" "$driver" "$nvcc_v" \
  "$arch" "${BENCH_SET:-quick}" <<'EOF'
import datetime, json, sys
path, commit, gpu, driver, nvcc, arch, which = sys.argv[1:]
json.dump({"commit": commit, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "gpu": gpu, "driver": driver, "nvcc": nvcc, "arch": arch, "set": which}, open(path, "w"), indent=1)
EOF
if [ "${SKIP_PEERS:-0}" = 1 ]; then
  note peers SKIPPED "SKIP_PEERS=1"
elif [ ! -s "$work/bench_cuda.json" ]; then
  note peers FAILED "no talkconv JSON to compare with"
  status=1
elif ! python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  note peers FAILED "no PyTorch with CUDA here"
  status=1
else
  t0=$SECONDS
  # shellcheck disable=SC2086
  PYTHONUNBUFFERED=1 python3 bench/peer_torch.py --talkconv-json "$work/bench_cuda.json" --set "${BENCH_SET:-quick}" \
    --out "$work/peers.md" --json-out "$work/peers.json" --budget-s "${PEER_BUDGET_S:-150}" ${PEER_ARGS:-} \
    >"$work/peers.txt" 2>&1
  rc=$?
  tail -n 12 "$work/peers.txt" | tee -a "$log"
  if [ $rc -eq 0 ]; then note peers OK "$((SECONDS - t0)) s"; else
    note peers FAILED "exit $rc after $((SECONDS - t0)) s (2: talkconv entries missing; see peers.txt)"
    status=1
  fi
fi

# ---- report ---------------------------------------------------------------------------------------------------
if [ -s "$work/bench_cuda.json" ]; then
  mkdir -p "$work/run"
  for f in bench_cuda.json peers.json run.json; do [ -f "$work/$f" ] && cp "$work/$f" "$work/run/"; done
  if python3 bench/report.py --no-cpu --gpu-run "$work/run" --results "$work/RESULTS-gpu.md" \
    --plots "$work/plots" >"$work/report.txt" 2>&1; then
    note report OK "$(tail -n 1 "$work/report.txt")"
  else
    note report FAILED "see report.txt"
    status=1
  fi
fi

verdict=$([ $status -eq 0 ] && echo OK || echo FAILED)
{
  echo "gpu-bench: $verdict in $((SECONDS - t_start)) s"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "device: $gpu, driver $driver, $nvcc_v"
} >>"$summary"
cat "$summary" | tee -a "$log"
for f in summary.txt RESULTS-gpu.md bench_cuda.json peers.json run.json; do [ -f "$work/$f" ] && cp "$work/$f" "$out/"; done
tar -czf "$out/gpu-bench.tar.gz" -C "$work" . 2>/dev/null || echo "gpu-bench: could not write the tarball"
echo "gpu-bench: results in $out"
exit $status
