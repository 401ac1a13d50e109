#!/usr/bin/env bash
# CPU benchmarks end to end: configure the release preset, build talkconv_bench_cpu, run it with JSON out,
# then bench/report.py writes bench/plots/*.png and bench/RESULTS.md. Extra arguments go to the benchmark
# program (e.g. --benchmark_filter='^window_fwd/'). Environment:
#   TALKCONV_BENCH_BUILD_DIR  build directory (default build/release, the preset's)
#   TALKCONV_BENCH_JOBS       build jobs (default: nproc)
#   TALKCONV_BENCH_QUIET      wait up to this many seconds for the 1-minute load average to drop below
#                             TALKCONV_BENCH_MAX_LOAD (default 0.5) before running (default 0: no wait)
#   TALKCONV_BENCH_NO_REPORT  1: run and keep the JSON, skip report.py
#   TALKCONV_BENCH_PYTHON     the interpreter for report.py (default /usr/bin/python3)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${TALKCONV_BENCH_BUILD_DIR:-build/release}
jobs=${TALKCONV_BENCH_JOBS:-$(nproc)}
json="$build/bench-cpu.json"

scripts/setup-deps.sh
# Debian's python3 (python3-matplotlib is a Debian package), not whatever python3 is first on PATH.
py=${TALKCONV_BENCH_PYTHON:-/usr/bin/python3}
[ -x "$py" ] || py=python3
if ! "$py" -c "import matplotlib" 2>/dev/null; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "bench.sh: installing python3-matplotlib"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-matplotlib >/dev/null
fi

load() { cut -d' ' -f1-3 /proc/loadavg; }
quiet=${TALKCONV_BENCH_QUIET:-0}
max_load=${TALKCONV_BENCH_MAX_LOAD:-0.5}
waited=0
while ((waited < quiet)) && awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v m="$max_load" 'BEGIN { exit !(l >= m) }'; do
  echo "bench.sh: load $(load), waiting for < $max_load ($waited s of $quiet)"
  sleep 15
  waited=$((waited + 15))
done
load_quiet="$(load) ($(date -u +%H:%M:%S) UTC, before the build)"

# Built after the wait, so the numbers belong to the sources as they are when the run starts.
cmake --preset release -B "$build" -DTALKCONV_ENABLE_CUDA=OFF -DTALKCONV_BUILD_TESTS=OFF \
  -DTALKCONV_BUILD_EXAMPLES=OFF -DTALKCONV_BUILD_BENCH=ON
cmake --build "$build" -j "$jobs" --target talkconv_bench_cpu

# Which talkconv the numbers belong to: the commit, and whether the headers differ from it.
source_rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- include ':!include/talkconv/cuda' 2>/dev/null || source_rev="$source_rev + uncommitted changes in include/"
load_before="$(load) ($(date -u +%H:%M:%S) UTC)"
# 1-minute load average every 10 s during the run (it includes the benchmark's own threads).
samples="$build/bench-cpu-load.txt"
(while :; do cut -d' ' -f1 /proc/loadavg; sleep 10; done) >"$samples" &
sampler=$!
"$build/bench/cpu/talkconv_bench_cpu" --benchmark_out="$json" --benchmark_out_format=json "$@"
kill "$sampler"
load_after="$(load) ($(date -u +%H:%M:%S) UTC)"
load_during=$(awk '{ s += $1; if ($1 > m) m = $1; n++ } END { if (n) printf "mean %.2f, max %.2f over %d samples", s / n, m, n }' "$samples")
echo "bench.sh: load average $load_quiet; at the start $load_before; during the run $load_during; at the end $load_after"

if [ "${TALKCONV_BENCH_NO_REPORT:-0}" != 1 ]; then
  mkdir -p bench/plots
  cp "$json" bench/plots/bench_cpu.json
  # What ran it, beside the JSON: a later report.py run (on any machine) still names this one.
  "$py" - "$source_rev" "scripts/bench.sh $*" "$load_quiet; $load_before" "$load_after" "$load_during" <<'EOF2'
import json, sys
sys.path.insert(0, "bench")
from report import machine
m = machine()
m.update(zip(["source", "run_command", "load_before", "load_after", "load_during"], sys.argv[1:]))
json.dump(m, open("bench/plots/bench_cpu.machine.json", "w"), indent=1)
EOF2
  "$py" bench/report.py bench/plots/bench_cpu.json --load-before "$load_quiet; $load_before" --load-after "$load_after" \
    --load-during "$load_during" --source "$source_rev" \
    --run-command "scripts/bench.sh $*"
fi
