#!/usr/bin/env bash
# Fuzzes talkconv's public CPU API: builds the libFuzzer target (preset `fuzz`: clang-14, ASan + UBSan,
# tests/fuzz/fuzz_talkconv.cpp) and runs it for FUZZ_SECONDS (default 120) from a scratch copy of the
# committed corpus tests/fuzz/corpus (which it never modifies). Exits non-zero on any finding (a
# mismatch with the float64 reference, a refusal the oracle does not expect, a sanitizer report, a
# leak, an input slower than 10 s or a process above 2 GiB); the input is left in $FUZZ_WORKDIR/artifacts.
#   FUZZ_SECONDS=600 scripts/fuzz.sh        a longer run
#   FUZZ_RUNS=30000 FUZZ_SEED=1 scripts/fuzz.sh
#                                           a fixed number of executions from a fixed seed: the same
#                                           inputs on every run (what scripts/test.sh, and so CI, runs)
#   scripts/fuzz.sh -only_ascii=1           extra arguments go to libFuzzer
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-120}"
work="${FUZZ_WORKDIR:-build/fuzz/run}"
[ "${TALKCONV_SKIP_SETUP:-0}" = 1 ] || scripts/setup-deps.sh
cmake --preset fuzz
cmake --build --preset fuzz -j "${FUZZ_BUILD_JOBS:-$(nproc)}"
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
cp tests/fuzz/corpus/* "$work/corpus/"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
bound=(-max_total_time="$seconds")
[ -z "${FUZZ_RUNS:-}" ] || bound=(-runs="$FUZZ_RUNS" -max_total_time=900)
[ -z "${FUZZ_SEED:-}" ] || bound+=(-seed="$FUZZ_SEED")
echo "talkconv fuzz: ${bound[*]} from $(ls tests/fuzz/corpus | wc -l) corpus inputs (scratch: $work)"
if ! build/fuzz/tests/fuzz/talkconv_fuzz "$work/corpus" "${bound[@]}" -rss_limit_mb=2048 -timeout=10 \
    -max_len=256 -len_control=0 -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$@"; then
  echo "talkconv fuzz: FINDING; the input is in $work/artifacts:" >&2
  ls -l "$work/artifacts" >&2
  echo "reproduce: build/fuzz/tests/fuzz/talkconv_fuzz <input>   (or build/<preset>/tests/fuzz/talkconv_fuzz_replay <input>)" >&2
  exit 1
fi
echo "talkconv fuzz: no finding"
