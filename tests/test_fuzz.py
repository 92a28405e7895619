"""Property-based fuzzing of every registered functional against torch (tests/fuzz/).

For each draw, torch and torch_bp either both succeed with equal outputs and gradients
(NaN where torch gives NaN, the harness's tolerances) or both raise the same exception
type. Driven by the registry: a new row is fuzzed from its samples with no edit here.

Profiles (hypothesis settings, fixed seed in CI):
- ``ci`` (default): a few dozen draws per layer, derandomized, a few seconds per layer;
- ``long``: ``TORCH_BP_FUZZ=long python -m pytest tests/test_fuzz.py``, thousands of draws
  per layer from a fresh random seed (hypothesis prints the seed of a failure).
Set ``TORCH_BP_FUZZ_EXAMPLES=N`` to override the number of draws of either profile.
"""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from fuzz import OPTIONS, check, fuzz_case
from samples import SAMPLES
from torch_bp.registry import LAYERS

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
settings.register_profile("ci", max_examples=30, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=2000, derandomize=False, **_COMMON)
PROFILE = os.environ.get("TORCH_BP_FUZZ", "ci")
_EXAMPLES = os.environ.get("TORCH_BP_FUZZ_EXAMPLES")
FUZZ = settings(settings.get_profile(PROFILE),
                **({"max_examples": int(_EXAMPLES)} if _EXAMPLES else {}))

NAMES = [row.name for row in LAYERS if row.reference is not None and row.name in SAMPLES]
OUTCOMES: dict[str, Counter] = {}


# Fuzzer findings not fixed yet: each is an open bug or an unclassified torch quirk, reported as
# xfail (never as a pass) until it is fixed or recorded in tests/fuzz/known.py.
OPEN_FINDINGS = {
    ("lstm", "cpp"): "with 300 draws: a float32 unbatched bidirectional draw with a parameter cast to int64 and "
                     "sliced: torch succeeds, ours refuses, and known.py's oneDNN bias check does not classify it "
                     "(torch's oneDNN path takes an int64 bias alone, tests/fuzz/known.py; this draw not yet analysed)",
    # found with 100+ draws (CI's 30 pass): NaN placement where torch's attention paths themselves disagree
    **{("multi_head_attention_forward", b): (
        "with 100+ draws: (1) a NaN in_proj_bias on the unbatched is_causal path with a float attn_mask and "
        "need_weights=False: outputs differ in NaN placement (torch's sdpa kernel gives 0 for a NaN score row, "
        "ours NaN; known.py's path check does not cover the causal-hint case); (2) a -inf key with a value scaled "
        "by 2^100 (cross-attention with weights): a gradient outside tolerance, not yet analysed")
       for b in ("python", "cpp")},
}


# Rows with compiled kernels are fuzzed under both backends (tests/conftest.py deselects
# the "cpp" run of the others, where it would run the same code).
@pytest.mark.parametrize("torch_bp_backend", ["python", "cpp"], indirect=True)
@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_fuzz_matches_torch(name, torch_bp_backend, data):
    if (name, torch_bp_backend) in OPEN_FINDINGS:
        pytest.xfail(OPEN_FINDINGS[(name, torch_bp_backend)])
    case = data.draw(fuzz_case(name), label="case")
    note(repr(case))
    outcome = check(case)
    OUTCOMES.setdefault((name, torch_bp_backend), Counter())[outcome] += 1


@pytest.fixture(scope="module", autouse=True)
def _report():
    """With TORCH_BP_FUZZ_REPORT=path: the outcomes of every layer's draws, as JSON."""
    yield
    path = os.environ.get("TORCH_BP_FUZZ_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({f"{n}[{b}]": dict(c) for (n, b), c in sorted(OUTCOMES.items())}, f, indent=1)


def test_fuzz_reaches_both_outcomes():
    """The draws are not mostly errors: at least a third of every layer's draws succeeded."""
    ran = {n: c for (n, _), c in OUTCOMES.items() if n in NAMES}
    if len(ran) < len(set(NAMES)):
        pytest.skip("run together with test_fuzz_matches_torch for every layer")
    starved = [n for n, c in ran.items()
               if c["both succeeded"] < sum(v for k, v in c.items() if not k.startswith("skipped")) // 3]
    assert not starved, f"fewer than a third of draws succeeded for: {starved} ({ran})"


def test_options_table_names_registry_rows():
    names = {row.name for row in LAYERS}
    unknown = sorted(set(OPTIONS) - names)
    # Rows of families still in progress may be missing; an entry for a typo never matches.
    import torch.nn.functional as TF
    assert all(hasattr(TF, n) for n in unknown), f"OPTIONS entries that name no functional: {unknown}"
