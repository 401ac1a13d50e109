# Sourced by scripts/gpu-prebuild.sh (on the machine without a GPU) and by scripts/gpu-check.sh / gpu-ncu.sh (on a lent
# GPU machine): the CUDA programs built here, carried there, so that a session's minutes on the device go to running
# them, not to compiling them (2026-11-30: the builds took ~60-100 s of each call, ~4 of a 15-minute session).
#
# build/prebuilt/<config>/ holds a configuration's binaries and a stamp: the hash of every source the build reads
# (tree_hash), the CUDA architecture, the -D flags and the nvcc that built them. A device script uses a binary only
# when the stamp matches the tree it was sent, its own architecture and its -D flags, and every library the binary
# needs loads there (ldd: the CUDA runtime, Google Benchmark from build/deps); otherwise it builds as before.
# The configurations are the builds gpu-lease.sh's steps ask for (prebuilt_defines).

# The -D flags of a configuration (its build directory's name under build/), the one place they are written.
prebuilt_defines() {
  case $1 in
  gpu-check) echo "" ;;
  # the 2026-12-01 kernel changes off (ncu-noband, ksweep-bf16)
  gpu-noband) echo "-DTALKCONV_CUDA_BAND=0 -DTALKCONV_CUDA_DW_ASYNC=0 -DTALKCONV_CUDA_PROJECT_ASYNC=0 -DTALKCONV_CUDA_FUSED_FORWARD=0 -DTALKCONV_CUDA_FUSED_BACKWARD=0 -DTALKCONV_CUDA_DX_SORTED=0" ;;
  gpu-event) echo "-DTALKCONV_CUDA_DX_SORTED=0" ;;  # ksweep-wide: the event dx
  gpu-bandwide) echo "-DTALKCONV_CUDA_BAND_MAX_K=1023" ;;  # ksweep-wide: the banded kernels to K = 1023
  *) return 1 ;;
  esac
}

# Hash of what the CUDA builds compile (run from the repository root): sources, headers and CMake files under
# include/, tests/, bench/, cmake/ and the top CMakeLists.txt, by path and content.
tree_hash() {
  find include tests bench cmake CMakeLists.txt -type f \( -name '*.hpp' -o -name '*.h' -o -name '*.cuh' -o -name '*.cu' \
    -o -name '*.cpp' -o -name '*.cmake' -o -name '*.in' -o -name CMakeLists.txt \) -not -path 'bench/cuda/results/*' |
    LC_ALL=C sort | xargs sha1sum | sha1sum | cut -c1-16
}

# The stamp line of a configuration built from this tree: prebuilt_stamp <config> <arch>
prebuilt_stamp() {
  echo "tree=$(tree_hash) arch=$2 defines=[$(prebuilt_defines "$1")]"
}

# The bundled Google Benchmark (scripts/gpu-deps-bundle.sh) on the loader's path, for binaries linked elsewhere: a
# script that runs a carried binary calls it itself (prebuilt_path runs in a command substitution, whose export is lost).
# The CUDA runtime is looked up where this machine's nvcc has it too (the binaries' RUNPATH names the build machine's
# /usr/local/cuda/lib).
prebuilt_libs() {
  local l nv
  l=${DEPS_PREFIX:-$(pwd)/build/deps/usr}/lib/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
  [ -d "$l" ] && export LD_LIBRARY_PATH="$l${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  nv=$(command -v nvcc 2>/dev/null) || nv=/usr/local/cuda/bin/nvcc
  for l in "$(dirname "$nv")/../lib64" "$(dirname "$nv")/../lib"; do
    [ -e "$l/libcudart.so.13" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}${LD_LIBRARY_PATH:+:}$l" && break
  done
  return 0
}

# The binaries travel xz-compressed (~3.8x: six programs of 10-18 MB within the carry's 64 MiB): <binary>.xz to
# <binary>, by xz or, without it, Python's lzma.
prebuilt_unpack() {
  [ -f "$1.xz" ] || return 1
  { xz -dc "$1.xz" >"$1.part" 2>/dev/null ||
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$1.xz" "$1.part" 2>/dev/null; } && chmod +x "$1.part" && mv "$1.part" "$1" && return 0
  rm -f "$1.part"
  return 1
}

# prebuilt_path <config> <binary> <defines> <arch>: prints the carried binary's path and returns 0 when it may stand
# in for this tree's build with those -D flags for that architecture; returns 1 (printing nothing) otherwise, or
# when PREBUILT=0.
prebuilt_path() {
  local dir bin stamp want
  [ "${PREBUILT:-1}" = 0 ] && return 1
  dir=$(pwd)/build/prebuilt/$1
  bin=$dir/$2
  [ -f "$dir/stamp" ] || return 1
  [ -x "$bin" ] || prebuilt_unpack "$bin" || return 1
  [ "$(prebuilt_defines "$1" 2>/dev/null)" = "$3" ] || return 1
  stamp=$(head -n 1 "$dir/stamp")
  want=$(prebuilt_stamp "$1" "$4")
  [ "$stamp" = "$want" ] || return 1
  prebuilt_libs
  local libs
  libs=$(ldd "$bin" 2>&1) || return 1
  case $libs in *"not found"*) return 1 ;; esac
  echo "$bin"
}
