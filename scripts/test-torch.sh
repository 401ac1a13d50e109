#!/usr/bin/env bash
# talkconv from PyTorch: builds python/ (talkconv_torch) against Debian's python3-torch with Debian's
# /usr/bin/python3 (the torch it runs with; a pyenv or venv python first on PATH has no torch) and runs
# its pytest suite. CUDA cases report themselves skipped without a GPU. Called by scripts/test.sh
# (TALKCONV_SKIP_TORCH=1 skips it there); run alone after scripts/setup-deps.sh.
#
#   TALKCONV_PYTHON   the interpreter whose torch to build against (default /usr/bin/python3)
#   PYTEST_ARGS       extra pytest arguments (e.g. "-k cuda")
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=${TALKCONV_PYTHON:-/usr/bin/python3}
out=$root/build/torch
log=$out/build.log
mkdir -p "$out"
if ! "$py" -c "import torch, pytest" 2>/dev/null; then
  echo "test-torch: $py has no torch or pytest (Debian: scripts/setup-deps.sh installs python3-torch python3-pytest)" >&2
  exit 2
fi
"$py" -c "import torch; print('test-torch: torch', torch.__version__, 'cuda', torch.version.cuda, 'from', torch.__file__)"
t0=$SECONDS
# An out-of-tree build (nothing is installed); ninja, when present, rebuilds what changed, headers included.
(cd python && MAX_JOBS=${MAX_JOBS:-$(nproc)} "$py" setup.py -q build -b "$out" --build-lib "$out/lib" >"$log" 2>&1) || {
  tail -n 60 "$log" >&2
  echo "test-torch: the build failed (whole log: $log)" >&2
  exit 1
}
echo "test-torch: built in $((SECONDS - t0)) s ($out/lib)"
t0=$SECONDS
# shellcheck disable=SC2086
PYTHONPATH="$out/lib${PYTHONPATH:+:$PYTHONPATH}" "$py" -m pytest -q -p no:cacheprovider -rs python/tests ${PYTEST_ARGS:-}
echo "test-torch: tests ran in $((SECONDS - t0)) s"
