"""Smoke test of the benchmark suite's command (experiments/benchmarks): one layer and one model,
few repetitions, its JSON read back. Times are never asserted; saved bytes are (deterministic)."""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

from experiments.benchmarks.__main__ import main  # noqa: E402


def test_suite_writes_its_tables(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(["--quick", "--only", "relu", "mlp_gelu", "--out", str(out)])
    printed = capsys.readouterr().out
    d = json.loads(out.read_text())
    assert "relu" in printed and "mlp_gelu" in printed
    assert d["threads"] >= 1 and d["reps"] == 3
    relu = {r["backend"]: r for r in d["layers"] if r["layer"] == "relu"}
    assert "python" in relu
    for r in relu.values():
        assert r["time_vs_eager"] > 0 and r["saved_ratio"] <= 0.25  # a mask of at most 1 byte per element
        assert r["ours_iqr_ms"] >= 0 and r["eager_iqr_ms"] >= 0 and r["threads"] == d["threads"]
    (mlp,) = {m["backend"]: m for m in d["models"] if m["model"] == "mlp_gelu" and m["backend"] == "python"}.values()
    assert mlp["converted"] == "100%" and mlp["grad_max_rel_err"] < 1e-5 and mlp["saved_ratio"] <= 0.6
    for m in d["models"]:  # the spread of the repetitions beside every median, models too
        assert m["ours_iqr_ms"] >= 0 and m["eager_iqr_ms"] >= 0 and m["threads"] == d["threads"]


def test_spread_of_repetitions():
    from experiments.benchmarks.measure import interleaved_stats, spread
    s = spread([4.0, 1.0, 3.0, 2.0, 5.0])
    assert s["median"] == 3.0 and s["q1"] == 2.0 and s["q3"] == 4.0 and s["iqr"] == 2.0 and s["min"] == 1.0
    st = interleaved_stats({"a": lambda: None, "b": lambda: sum(range(100))}, reps=3, warmup=1)
    assert set(st) == {"a", "b"} and st["a"]["reps"] == 3 and st["a"]["threads"] >= 1


def test_probes_run(capsys):
    """The probes quoted in the README's reasons for missed targets still run and print their timings."""
    import pytest
    import torch
    from experiments.benchmarks import probes
    from torch_bp import backend

    with torch.no_grad():
        probes.lstm()
        assert "addmm" in capsys.readouterr().out
        threads = torch.get_num_threads()
        try:
            probes.mlp(reps=2)
        finally:
            torch.set_num_threads(threads)
        assert "batch 2, forward without grad" in capsys.readouterr().out
        if backend.backend_info().backend != "cpp":
            pytest.skip("the compiled kernels did not build here")
        probes.conv()
    printed = capsys.readouterr().out
    assert printed.count("swapped") == 3 and "torch" in printed


def test_saved_only_fills_the_saved_columns_and_keeps_the_times(tmp_path):
    """``--saved-only`` measures saved bytes without timing; rows already timed keep their times."""
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"machine": "m", "threads": 1, "reps": 3, "heads": [], "models": [], "layers": [
        {"layer": "relu", "backend": "python", "eager_ms": 1.0, "time_vs_eager": 2.0, "saved_ratio": 9.0}]}))
    main(["--saved-only", "--only", "relu", "sigmoid", "--out", str(out)])
    d = json.loads(out.read_text())
    rows = {(r["layer"], r.get("backend")): r for r in d["layers"]}
    relu = rows[("relu", "python")]
    assert relu["eager_ms"] == 1.0 and relu["time_vs_eager"] == 2.0 and relu["saved_ratio"] <= 0.25
    sig = rows[("sigmoid", "python")]
    assert "eager_ms" not in sig and sig["saved_ratio"] == 1.0  # torch and ours save the output
    assert {r["layer"] for r in d["layers"]} == {"relu", "sigmoid"}  # rows not measured nor present: none
