#!/usr/bin/env bash
# The whole test suite: warnings as errors, every test, example and benchmark built (CUDA ones with
# nvcc when it is present; GPU cases report themselves skipped without a GPU), then the suite again
# under AddressSanitizer + UndefinedBehaviorSanitizer, then the fuzz target for a bounded time
# (TALKCONV_SKIP_SANITIZE=1, TALKCONV_SKIP_FUZZ=1 skip those steps), with the PyTorch extension's build and
# pytest suite after the first ctest (TALKCONV_SKIP_TORCH=1 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
# Idle OpenMP threads sleep instead of spinning: on a busy (shared, 2-core) machine spinning threads
# wait for one the OS has paused and make timings 10x worse. Set OMP_WAIT_POLICY to override.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
scripts/setup-deps.sh
jobs=$(nproc)
cmake --preset ci
cmake --build --preset ci -j "$jobs"
ctest --preset ci --parallel "$jobs"
# talkconv from PyTorch: python/ built against Debian's python3-torch, its pytest suite (scripts/test-torch.sh).
if [ "${TALKCONV_SKIP_TORCH:-0}" != 1 ]; then
  scripts/test-torch.sh
fi
if [ "${TALKCONV_SKIP_SANITIZE:-0}" != 1 ]; then
  cmake --preset sanitize
  cmake --build --preset sanitize -j "$jobs"
  ctest --preset sanitize --parallel "$jobs"
fi
# Then the fuzz target (clang-14, libFuzzer, ASan + UBSan): 30,000 executions from seed 1 (about one
# minutes here), the same inputs on every run, so a red run is reproducible and a green one is not luck.
# Exploration is for longer runs with a fresh seed: FUZZ_SECONDS=600 scripts/fuzz.sh (see there).
if [ "${TALKCONV_SKIP_FUZZ:-0}" != 1 ]; then
  TALKCONV_SKIP_SETUP=1 FUZZ_RUNS="${FUZZ_RUNS:-30000}" FUZZ_SEED="${FUZZ_SEED:-1}" scripts/fuzz.sh
fi
