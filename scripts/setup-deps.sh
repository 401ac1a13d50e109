#!/usr/bin/env bash
# Installs what talkconv builds with, from Debian's packages (Debian 12). Safe to re-run.
set -euo pipefail
pkgs=(cmake g++ make libeigen3-dev doctest-dev libbenchmark-dev librandom123-dev)
# scripts/test.sh stops its background fuzz step with pgrep (procps) when an earlier step fails.
pkgs+=(procps)
# talkconv::mpi (include/talkconv/mpi/sharded.hpp): its tests and example run under Open MPI's mpirun.
pkgs+=(libopenmpi-dev openmpi-bin)
# The fuzz step (scripts/fuzz.sh: clang-14 with libFuzzer and the sanitizer runtimes), unless skipped.
[ "${TALKCONV_SKIP_FUZZ:-0}" = 1 ] || pkgs+=(clang-14 libclang-rt-14-dev)
# talkconv from PyTorch (python/, scripts/test-torch.sh), unless skipped: Debian's PyTorch 1.13 (CPU) for
# /usr/bin/python3, its C++ headers (libtorch-dev) and pybind11, pytest, ninja; without recommends: 191
# packages on a Debian 12 machine that has the above: about 150 MB to download, 650 MiB installed, 101 s
# to install here (a 2-core VM).
torch_pkgs=()
[ "${TALKCONV_SKIP_TORCH:-0}" = 1 ] || torch_pkgs=(python3-torch libtorch-dev pybind11-dev python3-pytest ninja-build)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
torch_missing=()
for p in "${torch_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || torch_missing+=("$p"); done
if ((${#missing[@]} + ${#torch_missing[@]})); then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "talkconv: installing ${missing[*]} ${torch_missing[*]}"
  $sudo_cmd apt-get update -qq
  if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ((${#torch_missing[@]})); then
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${torch_missing[@]}" >/dev/null
  fi
fi
# cuobjdump, for the talkconv.cuda.resources test (bench/cuda/resources.py: every kernel's registers, spills and
# static shared memory against bench/cuda/resources.txt), where nvcc is present without it (CUDA 13 here ships
# none): NVIDIA's wheel of the same major version from PyPI (~0.3 MB), unpacked into build/tools (no pip install).
# Without it the test reports itself skipped. TALKCONV_SKIP_CUOBJDUMP=1 skips this step.
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/build/tools"
if [ "${TALKCONV_SKIP_CUOBJDUMP:-0}" != 1 ] && command -v nvcc >/dev/null 2>&1 && ! command -v cuobjdump >/dev/null 2>&1 &&
  [ ! -x "$(dirname "$(readlink -f "$(command -v nvcc)")")/cuobjdump" ] && [ ! -x "$tools/bin/cuobjdump" ]; then
  major=$(nvcc --version | sed -n 's/.*release \([0-9][0-9]*\)\..*/\1/p')
  tmp=$(mktemp -d)
  # A bounded wait where the network is away (no retries, 10 s), and nothing here may stop the script.
  if [ -n "$major" ] && python3 -m pip download -q --no-deps --only-binary=:all: --timeout 10 --retries 0 -d "$tmp" \
    "nvidia-cuda-cuobjdump>=${major},<$((major + 1))" >/dev/null 2>&1 &&
    rm -rf "$tools/cuobjdump" && mkdir -p "$tools/bin" &&
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$tmp"/*.whl "$tools/cuobjdump"; then
    bin=$(find "$tools/cuobjdump" -type f -name cuobjdump | head -n 1)
    if [ -n "$bin" ]; then
      chmod +x "$bin" && ln -sf "$bin" "$tools/bin/cuobjdump"
      echo "talkconv: cuobjdump $("$tools/bin/cuobjdump" --version | sed -n 's/.*release //p') in $tools/bin"
    fi
  else
    echo "talkconv: could not fetch cuobjdump from PyPI: the talkconv.cuda.resources test will be skipped" >&2
  fi
  rm -rf "$tmp"
fi
