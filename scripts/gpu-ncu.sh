#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and Nsight Compute: profiles every kernel of one layer forward +
# backward (bench/cuda/profile_layer.cu, each kernel launched once inside a profiler region) and writes
# the per-kernel budget table that bench/cuda/BUDGET.md records: time, thread instructions per element
# (smsp__inst_executed x 32 / (T*B*C)), DRAM throughput, issue IPC, registers, shared memory, occupancy.
#
#   scripts/gpu-ncu.sh [out_dir]        (default $OUT, else ./gpu-ncu-out)
#
# Environment: STALLS=1 (also stall reasons, bank conflicts, L2 hit rate: more replay passes), DTYPES (default "bf16 f32"), SHAPE (default "4096 16 1024 16 16 16 0": T B C H L M causal),
# CUDA_ARCH (default: the GPU's compute capability), BUILD_DIR (default build/gpu-check, shared with
# scripts/gpu-check.sh), NCU (default ncu), CUDA_DEFINES (extra -D flags for nvcc, e.g. "-DTALKCONV_CUDA_BAND=0":
# the kernels before the banded ones; give it its own BUILD_DIR), PREBUILT=0 (build even where build/prebuilt/<the
# BUILD_DIR's name> holds a profiler program stamped for this tree and these flags: scripts/gpu-prebuild.sh). About a
# minute per dtype on an H200.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${1:-${OUT:-$root/gpu-ncu-out}}
mkdir -p "$out"
build=${BUILD_DIR:-$root/build/gpu-check}
ncu=${NCU:-ncu}
command -v "$ncu" >/dev/null || { echo "gpu-ncu: $ncu not found (Nsight Compute)" >&2; exit 2; }
arch=${CUDA_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)}
arch=${arch:-90}
deps=${DEPS_PREFIX:-$root/build/deps/usr}
[ -d "$deps" ] && export CMAKE_PREFIX_PATH="$deps${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# The profiler program built on another machine for this tree and these -D flags (scripts/gpu-prebuild.sh, carried in
# build/prebuilt/<the build directory's name>), else built here.
. scripts/prebuilt.sh
prebuilt_libs
if prog=$(prebuilt_path "$(basename "$build")" talkconv_cuda_profile "${CUDA_DEFINES:-}" "$arch"); then
  echo "prebuilt: $(head -n 1 "$(dirname "$prog")/stamp")" >"$out/ncu-build.txt"
else
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" \
    -DTALKCONV_BUILD_EXAMPLES=OFF -DCMAKE_CUDA_FLAGS="${CUDA_DEFINES:-}" >"$out/ncu-configure.txt" 2>&1
  cmake --build "$build" --target talkconv_cuda_profile -j "${JOBS:-$(nproc)}" >"$out/ncu-build.txt" 2>&1
  prog=$build/bench/cuda/talkconv_cuda_profile
fi
metrics=gpu__time_duration.sum,smsp__inst_executed.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,sm__inst_executed.avg.per_cycle_active,launch__registers_per_thread
metrics+=,launch__shared_mem_per_block_dynamic,launch__shared_mem_per_block_static
metrics+=,sm__warps_active.avg.pct_of_peak_sustained_active,launch__grid_size,launch__block_size
# STALLS=1: where the warps wait (the WarpStateStats section: stall reasons per issued instruction), shared-
# memory bank conflicts and the L2 hit rate; ncu_table.py prints them as a second table.
sections=()
if [ "${STALLS:-0}" = 1 ]; then
  sections=(--section WarpStateStats)
  metrics+=,lts__t_sector_hit_rate.pct
  metrics+=,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum
fi
{
  echo "# talkconv kernels under Nsight Compute"
  echo
  echo "- device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) ($(git status --porcelain 2>/dev/null | wc -l) changed files)"
  echo "- ncu: $("$ncu" --version | tail -1)"
  echo
} >"$out/ncu.md"
# shellcheck disable=SC2086
for dtype in ${DTYPES:-bf16 f32}; do
  csv=$out/ncu-$dtype.csv
  "$ncu" --profile-from-start off "${sections[@]}" --metrics "$metrics" --csv --page raw "$prog" "$dtype" ${SHAPE:-4096 16 1024 16 16 16 0} \
    >"$csv" 2>"$out/ncu-$dtype.err"
  elements=$(grep -o 'elements [0-9]*' "$csv" | awk '{print $2}')
  python3 bench/cuda/ncu_table.py "$csv" "$elements" "$dtype" >>"$out/ncu.md"
done
cat "$out/ncu.md"
