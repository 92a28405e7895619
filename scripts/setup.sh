#!/usr/bin/env bash
# Set up (or refresh) a virtual environment (.venv, or $TORCH_BP_VENV) and build the kernels:
#  - torch first: with TORCH_BP_TORCH=X.Y.Z exactly that torch (scripts/test.sh --newest);
#    otherwise the CPU wheel torch==$PINNED_TORCH unless a torch>=2.11 is already there
#    (a GPU user installs the torch build they want into .venv first and this keeps it);
#  - then torch_bp itself, editable, with the Lightning/TensorBoard and test extras;
#  - then the C++ kernels, once per torch version (python -m torch_bp.build): importing
#    torch_bp never compiles. Without a compiler the Python rules run; set-up still succeeds.
set -euo pipefail
cd "$(dirname "$0")/.."
PINNED_TORCH=2.13.0
VENV=${TORCH_BP_VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
V=$VENV/bin/python
if [ -n "${TORCH_BP_TORCH:-}" ]; then
  have=$($V -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
  [ "$have" = "$TORCH_BP_TORCH" ] || $V -m pip install -q "torch==$TORCH_BP_TORCH"
elif ! $V -c 'import sys, torch; v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 11))' 2>/dev/null; then
  $V -m pip install -q "torch==$PINNED_TORCH"
fi
$V -m pip install -q -e '.[dev]'
$V -m torch_bp.build || echo "torch_bp: the compiled kernels are unavailable (reason above); the Python rules run" >&2
