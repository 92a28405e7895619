"""The runnable examples in examples/, each in its tiny mode (a few steps)."""
from __future__ import annotations

import importlib.util
import math
import os

import pytest
import torch

pytest.importorskip("lightning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_hf_tiny_bert(tmp_path):
    pytest.importorskip("transformers")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = _example("hf_tiny_bert").main(["--tiny", "--out", str(tmp_path)])
    assert out["steps"] == 4 and 0.0 <= out["val_acc"] <= 1.0
    assert out["gradcheck"] and all(max(d.values()) < 1e-4 for _, d in out["gradcheck"])
    acc = EventAccumulator(out["log_dir"], size_guidance={"scalars": 0})
    acc.Reload()
    signals = [t for t in acc.Tags()["scalars"] if t.startswith("bp/error_signal_norm/")]
    assert any("attention.self.query" in t for t in signals) and any("classifier" in t for t in signals)


def test_plain_lightning_module(tmp_path):
    out = _example("plain_lightning_module").main(["--tiny", "--out", str(tmp_path)])
    layers = [k for k in out["monitor"] if k.startswith("error_signal_norm/")]
    assert len(layers) == 5 and all(math.isfinite(out["monitor"][k]) and out["monitor"][k] > 0 for k in layers)
    assert out["gradcheck"] and all(max(d.values()) < 1e-4 for _, d in out["gradcheck"])
    assert os.path.isfile(os.path.join(out["log_dirs"][1], "metrics.csv"))


@pytest.mark.parametrize("ghost", [False, True], ids=["per-sample", "ghost"])
def test_dp_training_reports_opacus_epsilon(tmp_path, ghost):
    pytest.importorskip("opacus")
    out = _example("dp_training").main(["--tiny", "--out", str(tmp_path)] + (["--ghost"] if ghost else []))
    assert out["steps"] == 3 and 0 < out["epsilon"] < math.inf
    assert out["epsilon"] == pytest.approx(out["epsilon_opacus"], rel=1e-12)
