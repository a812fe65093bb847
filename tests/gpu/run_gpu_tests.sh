#!/usr/bin/env bash
# GPU acceptance of the shim on GPU 0: the pass/fail tests in tests/gpu (pytest, marker `gpu`), then their
# figures as `name: value unit` lines (docs/benchmarks.md, "Real GPU"). Exits with pytest's status.
# Needs nvidia-smi, nvcc, gcc and a Python with pytest (the project venv from `make venv` when present, else
# PYTHON or python3); the PyTorch tests use GPU_PYTHON (default python3) and skip without torch.
# The shim under test is the shipped build (`make shim-cross`) when the venv can build it, else a gcc build.
# Extra arguments go to pytest, e.g. `-k colocated`. GPU_WINDOW_S (default 5) and GPU_WINDOWS (default 3) size
# each case: about 12 minutes on an H100 at the defaults; `-k alone` and `-k 'not alone'` split it in two.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 2
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export GPU_PYTHON=${GPU_PYTHON:-$(command -v python3)}
export GPU_METRICS_FILE=${GPU_METRICS_FILE:-$(mktemp /tmp/vcuda-gpu-metrics.XXXXXX)}
# Only with an up-to-date venv: make would otherwise reinstall it, which needs the package index.
if [ -f .venv/.installed ] && [ .venv/.installed -nt pyproject.toml ]; then
  make -s shim-cross >&2 || echo "# shipped build failed; the tests build the shim with gcc" >&2
fi
"$PY" -m pytest tests/gpu -m gpu -p no:cacheprovider -rfEs "$@" >&2
rc=$?
echo "# figures (also in $GPU_METRICS_FILE)"
cat "$GPU_METRICS_FILE"
exit "$rc"
