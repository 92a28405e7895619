#!/usr/bin/env bash
# bash scripts/test.sh [pytest args]           set up .venv (scripts/setup.sh), run the whole suite
#                                              on the pinned torch
# bash scripts/test.sh --newest [pytest args]  set up .venv-newest with the newest torch release
#                                              CI proves ($NEWEST_TORCH, the upper end of
#                                              pyproject.toml's torch range), run the smoke subset
# pytest's exit code 5 ("no tests collected") is a failure of ours, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
NEWEST_TORCH=2.14.1
# The smoke subset: import and the private-API probes, the backend switch and loading, a few
# harness rows on both backends (python and the compiled kernels built against this torch),
# convert, torch.compile, one Lightning step. Small: CI runs the whole suite besides.
SMOKE=(tests/test_compat.py tests/test_backend.py tests/test_layers.py tests/test_composability.py)
SMOKE_K="test_compat or test_compiled_backend_is_built or test_switch_and_info or test_import_never_builds
 or test_damaged_cache or ((test_compiled_matches_python_rule or test_gradcheck or test_matches_torch
 or test_module_matches_torch) and (linear or layer_norm or gelu) and not linear_)
 or test_convert_model_from_another_library or test_compile_fullgraph_aot_eager"
if [ "${1:-}" = "--newest" ]; then
  shift
  TORCH_BP_VENV=.venv-newest TORCH_BP_TORCH=$NEWEST_TORCH bash scripts/setup.sh || exit 1
  .venv-newest/bin/python -c "import torch, torch_bp; print('torch', torch.__version__, '|', torch_bp.backend_info())"
  .venv-newest/bin/python -m pytest "${SMOKE[@]}" -k "$(echo $SMOKE_K)" --durations=5 "$@"
else
  bash scripts/setup.sh || exit 1
  .venv/bin/python -m pytest "$@"
fi
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
