#!/usr/bin/env bash
# The main job: build and run the demo (a bidirectional and a causal TaLK layer, forward and backward,
# checked against a naive windowed sum and timed next to it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
cmake --preset release -DTALKCONV_BUILD_TESTS=OFF -DTALKCONV_BUILD_BENCH=OFF >/dev/null
cmake --build --preset release --target talkconv_demo -j "$(nproc)"
./build/release/examples/talkconv_demo "$@"
