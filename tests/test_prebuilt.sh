#!/usr/bin/env bash
# scripts/prebuilt.sh's rule, without a GPU: a carried program stands in for the device's own build only when its stamp
# matches the tree, the architecture and the -D flags, PREBUILT is not 0 and its libraries load; it travels
# xz-compressed and is unpacked on first use. Also: every script under scripts/ parses (bash -n).
#
#   tests/test_prebuilt.sh <repository root>
set -uo pipefail
root=$(cd "${1:-$(dirname "$0")/..}" && pwd)
fails=0
check() {  # description, then a command that must succeed
  local what=$1
  shift
  if "$@"; then echo "ok: $what"; else
    echo "FAILED: $what"
    fails=$((fails + 1))
  fi
}
for s in "$root"/scripts/*.sh; do check "bash -n $(basename "$s")" bash -n "$s"; done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
mkdir -p include/talkconv tests bench/cuda/results cmake
echo '#pragma once' >include/talkconv/a.hpp
echo 'int main() {}' >tests/t.cpp
echo '{}' >bench/cuda/results/r.cu  # results are not build inputs
echo 'project(x)' >CMakeLists.txt
. "$root/scripts/prebuilt.sh"
cfg=gpu-event
defs=$(prebuilt_defines $cfg)
dir=build/prebuilt/$cfg
mkdir -p "$dir"
cp "$(type -P true)" "$dir/prog"
prebuilt_stamp $cfg 90 >"$dir/stamp"
found() { [ "$(prebuilt_path "$@")" = "$tmp/$dir/prog" ]; }
absent() { ! prebuilt_path "$@" >/dev/null; }
check "a matching stamp is used" found $cfg prog "$defs" 90
check "another architecture is not" absent $cfg prog "$defs" 80
check "other -D flags are not" absent $cfg prog "-DTALKCONV_CUDA_BAND=0" 90
check "an unknown configuration is not" absent gpu-other prog "" 90
check "PREBUILT=0 builds" env PREBUILT=0 bash -c ". '$root/scripts/prebuilt.sh'; ! prebuilt_path $cfg prog '$defs' 90"
echo '{}' >bench/cuda/results/s.cu
check "a file under bench/cuda/results changes nothing" found $cfg prog "$defs" 90
echo '// edited' >>include/talkconv/a.hpp
check "an edited header is not used" absent $cfg prog "$defs" 90
prebuilt_stamp $cfg 90 >"$dir/stamp"
echo '// new' >include/talkconv/b.hpp
check "a new header is not used" absent $cfg prog "$defs" 90
prebuilt_stamp $cfg 90 >"$dir/stamp"
if command -v xz >/dev/null; then
  xz -c "$dir/prog" >"$dir/prog.xz" && rm "$dir/prog"
  check "the compressed program is unpacked and used" found $cfg prog "$defs" 90
  check "unpacked executable" test -x "$dir/prog"
  rm "$dir/prog"
  # xz missing (a function that fails stands in for it): Python's lzma unpacks the same bytes
  check "unpacked by Python's lzma without xz" bash -c \
    "xz() { return 127; }; . '$root/scripts/prebuilt.sh'; prebuilt_unpack '$tmp/$dir/prog' && cmp -s '$tmp/$dir/prog' '$(type -P true)' && test -x '$tmp/$dir/prog'"
fi
rm -f "$dir/stamp"
check "no stamp, no program" absent $cfg prog "$defs" 90
prebuilt_stamp $cfg 90 >"$dir/stamp"
# A program whose library is missing here (ldd: not found) is not used.
if command -v cc >/dev/null; then
  echo 'int f(void) { return 0; }' | cc -shared -fPIC -x c - -o libtalkconvfake.so &&
    echo 'int f(void); int main(void) { return f(); }' | cc -x c - -L. -ltalkconvfake -o "$dir/needs" &&
    rm libtalkconvfake.so && check "a library that does not load: not used" absent $cfg needs "$defs" 90
fi
echo "test_prebuilt: $fails failed"
[ $fails -eq 0 ]
