"""The error-signal capture (autograd hooks on the layers' outputs), GradientMonitor and GradientCheck."""
from __future__ import annotations

import importlib
import math
import warnings

import pytest
import torch

pytest.importorskip("lightning")
import lightning.pytorch as L  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import torch_bp  # noqa: E402
import torch_bp.nn as bnn  # noqa: E402
from torch_bp import _signals  # noqa: E402
from torch_bp.lightning import (MLP, BPModule, GradientCheck, GradientCheckWarning, GradientFlowWarning,  # noqa: E402
                                GradientMonitor)



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small models: one thread is fastest, and robust on a shared machine (as the CLI's default)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# --- the capture (no Lightning) ---
class _SharedAct(torch.nn.Module):
    """Linear -> tanh -> Linear -> the same tanh module again -> LayerNorm -> Linear."""

    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = bnn.Linear(5, 8), bnn.Tanh(), bnn.Linear(8, 8)
        self.norm, self.head = bnn.LayerNorm(8), bnn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.norm(self.act(self.fc2(self.act(self.fc1(x))))))


def test_error_signals_are_the_gradients_wrt_layer_outputs():
    torch.manual_seed(0)
    model = _SharedAct().double()
    x = torch.randn(7, 5, dtype=torch.float64)
    outs = {}

    def keep(name):
        def hook(module, args, out):
            out.retain_grad()
            outs.setdefault(name, []).append(out)
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in model.named_children()]
    model(x).pow(3).sum().backward()
    for h in handles:
        h.remove()
    expected = {n: math.sqrt(sum(o.grad.pow(2).sum().item() for o in os)) for n, os in outs.items()}

    watch = _signals.watch(model)
    with _signals.capture(keep_tensors=True) as cap:
        model(x).pow(3).sum().backward()
    watch.remove()
    assert cap.order == ["fc1", "act", "fc2", "norm", "head"]          # first-call (depth) order
    got = cap.norms()
    assert list(got) == cap.order
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name
    assert len(cap.tensors["act"]) == 2                               # the shared module, both uses
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_capture_off_leaves_no_trace_and_records_nothing():
    model = torch_bp.convert(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()))
    assert not _signals._ACTIVE
    watch = _signals.watch(model)
    with _signals.capture() as cap:
        with _signals.suspended():
            model(torch.randn(3, 4)).sum().backward()
    watch.remove()
    assert cap.norms() == {} and not _signals._ACTIVE and _signals._capture is None
    with _signals.capture() as cap:                                    # active, but no layer is watched
        model(torch.randn(3, 4)).sum().backward()
    assert cap.norms() == {}


def test_capture_skips_vmap_and_compile():
    torch.manual_seed(0)
    model = torch_bp.convert(torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)))
    x = torch.randn(4, 6)
    params = dict(model.named_parameters())
    watch = _signals.watch(model)
    with _signals.capture() as cap:
        per_sample = torch.func.vmap(torch.func.grad(
            lambda p, xi: torch.func.functional_call(model, p, (xi,)).square().sum()), in_dims=(None, 0))(params, x)
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        compiled(x).square().sum().backward()
    watch.remove()
    assert per_sample["0.weight"].shape == (4, 8, 6)
    assert cap.norms() == {}


# --- the callbacks, with a Trainer ---
def _loader(n=32, d=16, classes=4, batch=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def _fit(module, tmp_path, callbacks, steps=2, **kw):
    trainer = L.Trainer(max_steps=steps, logger=TensorBoardLogger(str(tmp_path), name="t", default_hp_metric=False),
                        callbacks=callbacks, accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, log_every_n_steps=1, **kw)
    trainer.fit(module, _loader())
    return trainer


def _events(trainer):
    acc = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _texts(acc, tag):
    return [e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag)]


def test_deep_sigmoid_network_triggers_the_vanishing_warning(tmp_path):
    torch.manual_seed(0)
    monitor = GradientMonitor(every_n_steps=1, histogram_every_n_steps=0)
    net = MLP(16, [32] * 10, 4, activation="sigmoid")
    with pytest.warns(GradientFlowWarning, match="vanishing") as rec:
        trainer = _fit(BPModule(net), tmp_path, [monitor])
    assert len([w for w in rec if "vanishing" in str(w.message)]) == 1          # once, not every step
    msg = monitor.warned["vanishing"]
    assert "net.1 (" in msg and "net.21" in msg          # first layer named; the last is the reference
    texts = _texts(_events(trainer), "bp/warnings/text_summary")
    assert len(texts) == 1 and "net.1 (" in texts[0]


def test_healthy_network_does_not_warn_and_large_init_explodes(tmp_path):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientFlowWarning)
        _fit(BPModule(MLP(16, [32, 32], 4, activation="gelu")), tmp_path, [GradientMonitor(every_n_steps=1)])
    monitor = GradientMonitor(every_n_steps=1, histogram_every_n_steps=0)
    with pytest.warns(GradientFlowWarning, match="exploding"):
        _fit(BPModule(MLP(16, [64] * 8, 4, activation="relu", init_range=1.0),
                      optimizer=lambda p: torch.optim.SGD(p, 0.0)),
             tmp_path, [monitor], steps=1)
    assert "net.1 (" in monitor.warned["exploding"]


def test_nonfinite_gradients_are_counted_and_warned(tmp_path):
    torch.manual_seed(0)
    net = MLP(16, [8], 4, activation="relu")
    with torch.no_grad():
        net[1].weight[0, 0] = float("nan")
    monitor = GradientMonitor(every_n_steps=1, histogram_every_n_steps=1)
    with pytest.warns(GradientFlowWarning, match="non-finite"):
        _fit(BPModule(net), tmp_path, [monitor], steps=1)
    m = monitor.last_metrics
    assert m["grad_nan/net.1.weight"] > 0 and m["grad_nonfinite"] > 0
    assert not [k for k in m if k.startswith("grad_inf/")]                       # per parameter: only where non-zero
    assert math.isnan(m["grad_norm/total"])                                     # logged as NaN, not dropped
    assert "net.1.weight" in monitor.warned["nonfinite"]


def test_update_ratio_is_the_relative_step(tmp_path):
    torch.manual_seed(0)
    net = MLP(16, [8], 4, activation="tanh")
    before = {f"net.{n}": p.detach().clone() for n, p in net.named_parameters()}
    monitor = GradientMonitor(every_n_steps=1, histogram_every_n_steps=0)
    _fit(BPModule(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.1)), tmp_path, [monitor], steps=1)
    for name, w in before.items():
        expected = 0.1 * monitor.last_metrics[f"grad_norm/{name}"] / w.norm().item()
        assert monitor.last_metrics[f"update_ratio/{name}"] == pytest.approx(expected, rel=1e-4), name
    assert not _signals._ACTIVE and all(not m._forward_pre_hooks for m in net.modules())


# A test-only layer whose backward rule is wrong: grad_W and grad_b are 1.5x too large (relative difference 0.5).
class _BrokenLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(x, weight, bias):
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _ = inputs
        ctx.save_for_backward(x, weight)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        return grad_y @ weight, 1.5 * grad_y.t() @ x, 1.5 * grad_y.sum(0)


class _BrokenLinear(torch.nn.Linear):
    def forward(self, x):
        return _BrokenLinearFunction.apply(x, self.weight, self.bias)


def test_gradient_check_catches_a_broken_backward_rule(tmp_path, monkeypatch):
    convert = importlib.import_module("torch_bp.convert")  # the module (torch_bp.convert is the function)
    monkeypatch.setitem(convert._REVERTERS, _BrokenLinear, lambda m: convert._swap_class(m, torch.nn.Linear))
    torch.manual_seed(0)
    net = torch.nn.Sequential(bnn.Linear(16, 8), bnn.Tanh(), _BrokenLinear(8, 4))
    check = GradientCheck(every_n_steps=1)
    with pytest.warns(GradientCheckWarning, match=r"net\.2"):
        trainer = _fit(BPModule(net), tmp_path, [check], steps=2)
    assert [step for step, _ in check.failures] == [0, 1]
    assert all(set(bad) == {"net.2"} and bad["net.2"] == pytest.approx(0.5, rel=1e-3) for _, bad in check.failures)
    for _, diffs in check.history:                               # the correct rules agree with torch
        assert diffs["net.0"] < 1e-5 and diffs["input"] < 1e-5
    acc = _events(trainer)
    assert [e.value for e in acc.Scalars("bp/gradcheck/max_rel_diff/net.2")] == pytest.approx([0.5] * 2, rel=1e-3)
    assert "net.2" in _texts(acc, "bp/gradcheck/warnings/text_summary")[0]
