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
