#!/usr/bin/env bash
# The main job: build and run the demo (a bidirectional and a causal TaLK layer, forward and backward,
# checked against a naive windowed sum and timed next to it).
set -euo pipefail
cd "$(dirname "$0")/.."
# Idle OpenMP threads sleep instead of spinning: on a busy (shared, 2-core) machine spinning threads
# wait for one the OS has paused and make timings 10x worse. Set OMP_WAIT_POLICY to override.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
TALKCONV_SKIP_FUZZ=1 scripts/setup-deps.sh  # the demo needs no fuzz toolchain (clang-14)
cmake --preset release -DTALKCONV_BUILD_TESTS=OFF -DTALKCONV_BUILD_BENCH=OFF >/dev/null
cmake --build --preset release --target talkconv_demo -j "$(nproc)"
./build/release/examples/talkconv_demo "$@"
