#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv:
#  - torch first: the CPU wheel torch==2.13.0 unless a torch>=2.11 is already there
#    (a GPU user installs the torch build they want into .venv first and this keeps it);
#  - then torch_bp itself, editable, with the Lightning/TensorBoard and test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
V=.venv/bin/python
if ! $V -c 'import sys, torch; v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 11))' 2>/dev/null; then
  $V -m pip install -q torch==2.13.0
fi
$V -m pip install -q -e '.[dev]'
.venv/bin/python -c "import torch_bp; print(torch_bp.backend_info(build=True))"  # builds the C++ kernels once
