#!/usr/bin/env bash
# talkconv from PyTorch: builds python/ (talkconv_torch) against Debian's python3-torch with Debian's
# /usr/bin/python3 (the torch it runs with; a pyenv or venv python first on PATH has no torch) and runs
# its pytest suite. CUDA cases report themselves skipped without a GPU. Called by scripts/test.sh
# (TALKCONV_SKIP_TORCH=1 skips it there); run alone after scripts/setup-deps.sh.
#
#   TALKCONV_PYTHON   the interpreter whose torch to build against (default /usr/bin/python3)
#   PYTEST_ARGS       extra pytest arguments (e.g. "-k cuda"; without pytest only "-k substring" is understood)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=${TALKCONV_PYTHON:-/usr/bin/python3}
out=$root/build/torch
log=$out/build.log
mkdir -p "$out"
if ! "$py" -c "import torch" 2>/dev/null; then
  echo "test-torch: $py has no torch (Debian: scripts/setup-deps.sh installs python3-torch)" >&2
  exit 2
fi
"$py" -c "import torch; print('test-torch: torch', torch.__version__, 'cuda', torch.version.cuda, 'from', torch.__file__)"
# A build for another interpreter, torch or CUDA setting is thrown away, not reused.
stamp="$py $("$py" -c 'import torch; print(torch.__version__, torch.version.cuda)') cuda=${TALKCONV_TORCH_CUDA:-auto}"
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" != "$stamp" ]; then rm -rf "$out"; fi
mkdir -p "$out"
echo "$stamp" >"$out/stamp"
t0=$SECONDS
# An out-of-tree build (nothing is installed); ninja, when present, rebuilds what changed, headers included.
(cd python && MAX_JOBS=${MAX_JOBS:-$(nproc)} "$py" setup.py -q build -b "$out" --build-lib "$out/lib" >"$log" 2>&1) || {
  tail -n 60 "$log" >&2
  echo "test-torch: the build failed (whole log: $log)" >&2
  exit 1
}
echo "test-torch: built in $((SECONDS - t0)) s ($out/lib)"
t0=$SECONDS
export PYTHONPATH="$out/lib${PYTHONPATH:+:$PYTHONPATH}"
if "$py" -c "import pytest" 2>/dev/null; then
  # shellcheck disable=SC2086
  "$py" -m pytest -q -p no:cacheprovider -rs python/tests ${PYTEST_ARGS:-}
else
  # No pytest (e.g. a GPU machine without network): the suite's own stand-in runs the same cases.
  echo "test-torch: no pytest for $py; running python/tests/run_without_pytest.py"
  # shellcheck disable=SC2086
  "$py" python/tests/run_without_pytest.py ${PYTEST_ARGS:-}
fi
echo "test-torch: tests ran in $((SECONDS - t0)) s"
