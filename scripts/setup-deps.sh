#!/usr/bin/env bash
# Installs what talkconv builds with, from Debian's packages (Debian 12). Safe to re-run.
set -euo pipefail
pkgs=(cmake g++ make libeigen3-dev doctest-dev libbenchmark-dev librandom123-dev)
# The fuzz step (scripts/fuzz.sh: clang-14 with libFuzzer and the sanitizer runtimes), unless skipped.
[ "${TALKCONV_SKIP_FUZZ:-0}" = 1 ] || pkgs+=(clang-14 libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "talkconv: installing ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
