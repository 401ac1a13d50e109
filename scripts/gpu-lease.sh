#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool: $OUT comes back, at most 8 files): build, CUDA tests,
# Nsight Compute's per-kernel table, the quick GPU benchmark set and compute-sanitizer on a case set, each
# step under its own time limit, in that order of priority. After every step everything so far is packed
# into $OUT/all.tgz, and summary.txt, ncu.md and bench_cuda.json are copied beside it, so a call stopped at
# its limit still returns what it measured. Carry build/deps (scripts/gpu-deps-bundle.sh) and build/prebuilt
# (scripts/gpu-prebuild.sh: the programs built on the calling machine, so the device runs rather than compiles).
#
#   scripts/gpu-lease.sh [out_dir]      (default $OUT, else ./gpu-lease-out)
#
# Environment: STEPS (default "check ncu decode ncu-wide bench sanitize"; ksweep-bf16: ncu's bf16 table at
# L = M = 31 .. 255 with and without the banded kernels, T_KSWEEP_BF16 (240 s), KSWEEP_LS; ksweep-f32: the f32 window sweep over
# K = 16 .. 127 for the banded float kernels' crossover, T_KSWEEP (120 s); ksweep-wide: ncu's bf16 table at L = M = 255
# and 511 with the sorted-events dx (default), the event dx (-DTALKCONV_CUDA_DX_SORTED=0) and the banded kernels
# (-DTALKCONV_CUDA_BAND_MAX_K=1023), T_KSWEEP_WIDE (420 s); ncu-noband: ncu's table with the banded
# kernels, the fused 16-bit layer forward and the cp.async pipelines of bfloat16 dW and the 16-bit projection off
# and the event dx for the sorted one (-DTALKCONV_CUDA_BAND=0 -DTALKCONV_CUDA_DW_ASYNC=0 -DTALKCONV_CUDA_PROJECT_ASYNC=0
# -DTALKCONV_CUDA_FUSED_FORWARD=0 -DTALKCONV_CUDA_FUSED_BACKWARD=0 -DTALKCONV_CUDA_DX_SORTED=0, its own build,
# bf16 and f32, ~150 s, T_NCU_NOBAND default 180), for an A/B in one call; ncu-wide: ncu's table at
# L = M = 511 bf16, NCU_WIDE_SHAPE to change it, T_NCU_WIDE (60 s); decode: the decoder-step benchmarks alone,
# about 10 s once the benchmark is built, so a bench step cut short still leaves them; it builds the
# benchmark: as one translation unit it took 66-100 s on an H200 machine's 16 cores (2026-11-30: a 50 s
# limit left no decoder numbers); since then five, compiled in parallel), T_CHECK / T_NCU / T_DECODE / T_BENCH /
# T_SANITIZE (seconds per step; defaults 200 / 150 / 150 / 150 / 150), SANITIZERS (default "memcheck racecheck"), SANITIZE_CASES
# (default: the layer's fused dx path and the float layer sweep), DTYPES and STALLS for ncu (default
# "bf16 f32", 0), BENCH_FILTER (default: the headline shapes, L = 255 and 511 (the segmented forward)
# and the decoder steps, 75 benchmarks, about 100 s; the whole quick set takes longer, its decoder family
# last), TALKCONV_BENCH_MIN_TIME (default 0.03),
# TALKCONV_COMMIT (the commit to name in the summary: the device's copy of .git can lag the working tree
# it was sent, so name it from the calling machine, e.g. TALKCONV_COMMIT=1a2b3c4).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${1:-${OUT:-$root/gpu-lease-out}}
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-lease.XXXXXX")
t_start=$SECONDS
pack() {
  {
    echo "gpu-lease $(date -u +%Y-%m-%dT%H:%M:%SZ) commit ${TALKCONV_COMMIT:-unnamed} (the device's git says" \
      "$(git rev-parse --short HEAD 2>/dev/null || echo unknown) with $(git status --porcelain 2>/dev/null | wc -l)" \
      "changed files), $((SECONDS - t_start)) s so far"
    for d in check decode bench ksweep-f32 sanitize; do
      [ -f "$work/$d/summary.txt" ] && { echo "== $d"; cat "$work/$d/summary.txt"; }
    done
    [ -f "$work/steps.txt" ] && { echo "== steps"; cat "$work/steps.txt"; }
  } >"$out/summary.txt"
  for f in ncu/ncu.md bench/bench_cuda.json; do [ -f "$work/$f" ] && cp "$work/$f" "$out/"; done
  [ -f "$work/ncu-wide/ncu.md" ] && cp "$work/ncu-wide/ncu.md" "$out/ncu-wide.md"
  [ -f "$work/ncu-noband/ncu.md" ] && cp "$work/ncu-noband/ncu.md" "$out/ncu-noband.md"
  [ -f "$work/decode/bench_cuda.json" ] && cp "$work/decode/bench_cuda.json" "$out/decode_cuda.json"
  [ -f "$work/ksweep-f32/bench_cuda.json" ] && cp "$work/ksweep-f32/bench_cuda.json" "$out/ksweep_f32.json"
  [ -f "$work/ksweep-bf16/ksweep.md" ] && cp "$work/ksweep-bf16/ksweep.md" "$out/ksweep_bf16.md"
  tar -czf "$out/all.tgz" -C "$work" . 2>/dev/null
}
step() {  # name, seconds, command...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  printf '%-9s exit %3d after %4d s (limit %d)\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >>"$work/steps.txt"
  pack
  return $rc
}
export SKIP_TORCH=1 SKIP_PEERS=1
# The headline benchmarks: the benchmark shape (bf16, f16, f32; bidirectional and causal L = 16), T = 1024 x
# B = 64, wide windows (L = 255 and 511, bf16) and the decoder steps. BENCH_FILTER= (empty) runs the whole
# quick set.
headline='(T:4096/B:16/C:1024/(min_time|H:16/L:(16|255|511)/M:(16|0|255|511)/))|(T:1024/B:64/C:1024/(min_time|H:16/L:16/M:16/))|decoder_step'
# The builds the A/B steps compare against: the 2026-12-01 kernel changes off (ncu-noband, ksweep-bf16), and the
# event dx kernel where the sorted-events dx (2026-12-02) would run.
# (scripts/prebuilt.sh names each build's flags once; scripts/gpu-prebuild.sh builds them all on another machine.)
. scripts/prebuilt.sh
noband_defs=$(prebuilt_defines gpu-noband)
# ncu's bf16 table at L = M = each of $1 from several builds, into $work/$2/<label>-L<l>/ and one table file
# $work/$2/ksweep.md; each build is three more arguments: label, CUDA_DEFINES, BUILD_DIR (empty: gpu-ncu.sh's default).
ncu_ab() {
  local ls=$1 dest=$2 l i lab defs dir
  shift 2
  local b=("$@")
  for l in $ls; do
    for ((i = 0; i < ${#b[@]}; i += 3)); do
      lab=${b[i]} defs=${b[i + 1]} dir=${b[i + 2]}
      env CUDA_DEFINES="$defs" ${dir:+BUILD_DIR="$dir"} SHAPE="4096 16 1024 16 $l $l 0" DTYPES=bf16 STALLS=0 \
        scripts/gpu-ncu.sh "$work/$dest/$lab-L$l" >/dev/null 2>&1
    done
    for ((i = 0; i < ${#b[@]}; i += 3)); do
      lab=${b[i]}
      { echo "### $lab, L = M = $l"; sed -n '/^| kernel/,/^$/p' "$work/$dest/$lab-L$l/ncu.md"; } >>"$work/$dest/ksweep.md" 2>/dev/null
    done
  done
}
for s in ${STEPS:-check ncu decode ncu-wide bench sanitize}; do
  case $s in
  check) step check "${T_CHECK:-200}" env SKIP_SANITIZE=1 SKIP_BENCH=1 scripts/gpu-check.sh "$work/check" >/dev/null ;;
  ncu) step ncu "${T_NCU:-150}" scripts/gpu-ncu.sh "$work/ncu" >/dev/null 2>"$work/ncu-stderr.txt" ;;
  # The same table at a wide window (bf16, L = M = 511 unless NCU_WIDE_SHAPE says otherwise): which kernels
  # grow with the window (2026-11-30: the offset gradients 2957 us and dx 1041 us there). About 25 s.
  ncu-wide)
    step ncu-wide "${T_NCU_WIDE:-60}" env SHAPE="${NCU_WIDE_SHAPE:-4096 16 1024 16 511 511 0}" DTYPES=bf16 STALLS=0 \
      scripts/gpu-ncu.sh "$work/ncu-wide" >/dev/null 2>"$work/ncu-wide-stderr.txt"
    ;;
  # The same table with the banded kernels off (-DTALKCONV_CUDA_BAND=0: the vector-tile forward and the event
  # dx kernel for 16-bit x and float; with it the fused 16-bit and float layer forward, -DTALKCONV_CUDA_FUSED_FORWARD=0; the fused 16-bit window backward, -DTALKCONV_CUDA_FUSED_BACKWARD=0), bfloat16 dW and the 16-bit projection register-staged (-DTALKCONV_CUDA_DW_ASYNC=0
  # -DTALKCONV_CUDA_PROJECT_ASYNC=0): an A/B of the 2026-12-01 kernel changes in one call. Its own build directory. (The passes removed from the backward the
  # same day, dropout copy and offset-gradient combine, have no switch: they show as absent kernels.)
  ncu-noband)
    step ncu-noband "${T_NCU_NOBAND:-180}" env CUDA_DEFINES="$noband_defs" BUILD_DIR="$root/build/gpu-noband" \
      DTYPES="bf16 f32" STALLS=0 scripts/gpu-ncu.sh "$work/ncu-noband" >/dev/null 2>"$work/ncu-noband-stderr.txt"
    ;;
  decode)
    step decode "${T_DECODE:-150}" env SKIP_TESTS=1 SKIP_SANITIZE=1 TALKCONV_BENCH_MIN_TIME="${TALKCONV_BENCH_MIN_TIME:-0.03}" \
      BENCH_FILTER=decoder_step scripts/gpu-check.sh "$work/decode" >/dev/null
    ;;
  bench)
    step bench "${T_BENCH:-150}" env SKIP_TESTS=1 SKIP_SANITIZE=1 TALKCONV_BENCH_MIN_TIME="${TALKCONV_BENCH_MIN_TIME:-0.03}" \
      BENCH_FILTER="${BENCH_FILTER-$headline}" scripts/gpu-check.sh "$work/bench" >/dev/null
    ;;
  # The f32 window forward and layer backward over K (L = M = 15, 31, 63 and causal: K = 16 .. 127), where the
  # banded float kernels meet the vector tiles / event dx (BUDGET.md, "What to measure first for float"): sets
  # fwd_band_max_k_tf32 and dx_band_max_k_tf32 against ncu-noband's f32 table or a build with
  # -DTALKCONV_CUDA_BAND=0. The full benchmark set's f32 window sweep, filtered; ~20 benchmarks.
  ksweep-f32)
    step ksweep-f32 "${T_KSWEEP:-120}" env SKIP_TESTS=1 SKIP_SANITIZE=1 TALKCONV_BENCH_SET=full \
      TALKCONV_BENCH_MIN_TIME="${TALKCONV_BENCH_MIN_TIME:-0.03}" \
      BENCH_FILTER='(copy|window_fwd|layer_bwd)/dtype:f32/T:4096/B:16/C:1024/(min_time|H:16/L:(15|31|63)/)' \
      scripts/gpu-check.sh "$work/ksweep-f32" >/dev/null
    ;;
  # ncu's bf16 table over K (L = M = 31, 63, 127, 255) with the banded kernels (the default build) and without them
  # (build/gpu-noband, -DTALKCONV_CUDA_BAND=0: the vector-tile forward and the event dx): where each banded kernel
  # stops paying, i.e. dx_band_max_k (255) for 16-bit x (BUDGET.md's model puts the dx crossover near K = 127).
  # Eight ncu runs of ~20 s once both builds exist (ncu and ncu-noband before it); T_KSWEEP_BF16 (default 240).
  ksweep-bf16)
    mkdir -p "$work/ksweep-bf16"
    step ksweep-bf16 "${T_KSWEEP_BF16:-240}" bash -c "$(declare -f ncu_ab); work='$work' ncu_ab '${KSWEEP_LS:-31 63 127 255}' \
      ksweep-bf16 band '' '' noband '$noband_defs' '$root/build/gpu-noband'"
    ;;
  # ncu's bf16 table at L = M = 255 and 511 (K = 511, 1023) from three builds: the default (the sorted-events dx,
  # the segments forward), the event dx (-DTALKCONV_CUDA_DX_SORTED=0, build/gpu-event) and the banded kernels
  # (-DTALKCONV_CUDA_BAND_MAX_K=1023, build/gpu-bandwide): which dx costs least past K = 255 (BUDGET.md, sixteenth and
  # seventeenth sessions). Two builds (~2 min each) and six ncu runs; T_KSWEEP_WIDE (default 420), KSWEEP_WIDE_LS.
  ksweep-wide)
    mkdir -p "$work/ksweep-wide"
    step ksweep-wide "${T_KSWEEP_WIDE:-420}" bash -c "$(declare -f ncu_ab); work='$work' ncu_ab '${KSWEEP_WIDE_LS:-255 511}' \
      ksweep-wide default '' '' event '$(prebuilt_defines gpu-event)' '$root/build/gpu-event' \
      band '$(prebuilt_defines gpu-bandwide)' '$root/build/gpu-bandwide'"
    ;;
  sanitize)
    step sanitize "${T_SANITIZE:-150}" env SKIP_TESTS=1 SKIP_BENCH=1 SANITIZERS="${SANITIZERS:-memcheck racecheck}" \
      SANITIZE_CASES="${SANITIZE_CASES:-*fused dx path*: float,*fused dx path*: bfloat16,*rows past the lengths*: float,*banded dx*: bfloat16,*banded dx*: float,*layer forward in one kernel*: bfloat16,*dx in one kernel*: bfloat16,*dx in one kernel*: float}" \
      scripts/gpu-check.sh "$work/sanitize" >/dev/null
    ;;
  *) echo "gpu-lease: unknown step $s" >>"$work/steps.txt" ;;
  esac
done
pack
cat "$out/summary.txt"
[ -f "$work/ncu/ncu.md" ] && cat "$work/ncu/ncu.md"
[ -f "$work/ncu-wide/ncu.md" ] && sed -n '/^## /,/^$/p' "$work/ncu-wide/ncu.md"
[ -f "$work/ksweep-wide/ksweep.md" ] && { echo "== ksweep-wide (all.tgz: ksweep-wide/)"; cat "$work/ksweep-wide/ksweep.md"; }
[ -f "$work/ncu-noband/ncu.md" ] && { echo "== banded kernels, fused forward and backward, cp.async pipelines and the sorted-events dx off (TALKCONV_CUDA_BAND=0, TALKCONV_CUDA_DW_ASYNC=0, TALKCONV_CUDA_PROJECT_ASYNC=0, TALKCONV_CUDA_FUSED_FORWARD=0, TALKCONV_CUDA_FUSED_BACKWARD=0, TALKCONV_CUDA_DX_SORTED=0)"; sed -n '/^## /,/^$/p' "$work/ncu-noband/ncu.md"; }
grep -hE "FAILED|ERROR|error:" "$work"/check/tests.txt 2>/dev/null | head -n 40
