#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run the whole test suite.
# pytest's exit code 5 ("no tests collected") is a failure of ours, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
