#!/usr/bin/env bash
# Copies the headers, libraries and CMake package files talkconv's CUDA build needs (Eigen, doctest,
# Google Benchmark, Random123) from this machine into build/deps/usr (git-ignored, about 12 MB), so a GPU
# machine without network can build with them: carry build/deps there; scripts/gpu-check.sh uses it.
#
#   scripts/gpu-deps-bundle.sh [dir]   (default build/deps)
set -euo pipefail
cd "$(dirname "$0")/.."
dst=${1:-build/deps}/usr
rm -rf "$dst"
mkdir -p "$dst"
arch_lib=/usr/lib/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
for p in /usr/include/eigen3 /usr/share/eigen3 /usr/include/doctest /usr/lib/cmake/doctest /usr/include/benchmark \
  "$arch_lib/cmake/benchmark" "$arch_lib"/libbenchmark.so* "$arch_lib/libbenchmark_main.a" /usr/include/Random123; do
  [ -e "$p" ] || { echo "gpu-deps-bundle: not on this machine: $p" >&2; exit 1; }
  rel=${p#/usr/}
  mkdir -p "$dst/$(dirname "$rel")"
  # Links are copied as the files they name: a tool that carries the tree to the GPU machine may drop
  # symbolic links, and the benchmark loads libbenchmark.so.1debian (a link) at run time.
  cp -rL --preserve=mode,timestamps "$p" "$dst/$rel"
done
# Debian's doctest package hard-codes its prefix; make it relative to where the file now lives.
sed -i 's|^set(_IMPORT_PREFIX "/usr")|get_filename_component(_IMPORT_PREFIX "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)|' \
  "$dst/lib/cmake/doctest/doctestTargets.cmake"
du -sh "$dst"
