#!/usr/bin/env bash
# Builds, on this machine (no GPU needed), the CUDA programs a device session runs, and puts them with their stamps in
# build/prebuilt/<config>/ (scripts/prebuilt.sh), so that the lent GPU machine runs them instead of compiling them:
#
#   scripts/gpu-deps-bundle.sh && scripts/gpu-prebuild.sh
#   then on the device: carry ["build/deps", "build/prebuilt"], scripts/gpu-lease.sh as usual
#
# Configurations (CONFIGS, default all four): gpu-check (the CUDA tests, the benchmark and the profiler program:
# gpu-check.sh's check, bench, decode and sanitize steps and gpu-ncu.sh's ncu step), gpu-noband, gpu-event and
# gpu-bandwide (the profiler program only: the ncu-noband, ksweep-bf16 and ksweep-wide steps). Each is configured as
# the device scripts configure it (Release, warnings as errors, sm_$ARCH real code, ARCH default 90: an H100 / H200)
# in build/<config>, so an incremental rebuild after an edit is quick; JOBS (default nproc). About 14 minutes on 2
# cores from nothing; the six binaries, 80 MB, travel xz-compressed: ~21 MB, with build/deps' ~12 MB within the device
# tool's 64 MiB carry.
# A device script that finds a stamp not matching its tree (an edit after this ran) builds as before.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/prebuilt.sh
arch=${ARCH:-90}
jobs=${JOBS:-$(nproc)}
deps=${DEPS_PREFIX:-$root/build/deps/usr}
[ -d "$deps" ] && export CMAKE_PREFIX_PATH="$deps${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
for config in ${CONFIGS:-gpu-check gpu-noband gpu-event gpu-bandwide}; do
  defs=$(prebuilt_defines "$config") || { echo "gpu-prebuild: unknown configuration $config" >&2; exit 1; }
  build=$root/build/$config
  dest=$root/build/prebuilt/$config
  case $config in
  gpu-check) targets=(talkconv_cuda_tests talkconv_cuda_bench talkconv_cuda_profile) ;;
  *) targets=(talkconv_cuda_profile) ;;
  esac
  t0=$SECONDS
  echo "gpu-prebuild: $config (${defs:-no -D flags}): ${targets[*]}"
  # the cache of a build directory configured elsewhere (another source path) cannot be reused
  if [ -f "$build/CMakeCache.txt" ] && ! grep -q "^CMAKE_HOME_DIRECTORY:INTERNAL=$root\$" "$build/CMakeCache.txt"; then
    rm -rf "$build"
  fi
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTALKCONV_WERROR=ON -DTALKCONV_BUILD_TESTS=ON \
    -DTALKCONV_BUILD_EXAMPLES=OFF -DTALKCONV_BUILD_BENCH=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
    -DTALKCONV_CUDA_BENCH_ARCHITECTURES= -DCMAKE_CUDA_FLAGS="$defs" >/dev/null
  cmake --build "$build" -j "$jobs" --target "${targets[@]}" >"$build/prebuild.log" 2>&1 ||
    { tail -n 30 "$build/prebuild.log" >&2; echo "gpu-prebuild: $config failed (see $build/prebuild.log)" >&2; exit 1; }
  rm -rf "$dest"
  mkdir -p "$dest"
  for t in "${targets[@]}"; do
    f=$(find "$build" -name "$t" -type f -perm -u+x | head -n 1)
    [ -n "$f" ] || { echo "gpu-prebuild: $t not found under $build" >&2; exit 1; }
    xz -T0 -6 -c "$f" >"$dest/$t.xz"  # unpacked on the device (prebuilt_unpack)
  done
  {
    prebuilt_stamp "$config" "$arch"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
      "($(git status --porcelain 2>/dev/null | wc -l) changed files) with $(nvcc --version | tail -n 2 | head -n 1)"
  } >"$dest/stamp"
  echo "gpu-prebuild: $config in $((SECONDS - t0)) s: $(head -n 1 "$dest/stamp")"
done
du -sh "$root/build/prebuilt"
