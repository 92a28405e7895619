"""Regressions of issue-level robustness: inference mode, second-order gradients through rules
without a double backward, gradient penalties through the norms."""
from __future__ import annotations

import pytest
import torch

import torch_bp


def _models():
    torch.manual_seed(0)
    yield "linear-gelu", torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.GELU()), (2, 3)
    yield "conv-bn-relu", torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                              torch.nn.Conv2d(4, 2, 1)), (2, 3, 8, 8)
    yield "transformer-gelu", torch.nn.TransformerEncoderLayer(8, 2, 16, activation="gelu", batch_first=True), (2, 5, 8)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name,model,shape", list(_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_inference_mode(name, model, shape, train):
    """Converted models run under torch.inference_mode (no recompute recipe, no version counter) and
    give torch's outputs."""
    model.train(train)
    ours = torch_bp.convert(model)
    x = torch.randn(shape)
    with torch.inference_mode():
        torch.manual_seed(1)
        y = ours(x)
        torch.manual_seed(1)
        ref = model(x)
    if not train:  # in training mode dropout masks are drawn by each in its own way
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)  # float32 tolerance of tests/harness.py


def test_lightning_validate_under_inference_mode():
    """Lightning validates under torch.inference_mode: a converted GELU MLP validates."""
    L = pytest.importorskip("lightning.pytorch")
    from torch_bp.lightning import BPModule
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 3))
    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randint(0, 3, (16,)))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    out = trainer.validate(BPModule(net, convert=True), torch.utils.data.DataLoader(data, batch_size=8), verbose=False)
    assert out and all(torch.isfinite(torch.tensor(v)) for v in out[0].values())


def _penalty_grads(net, x):
    """d/dW of the gradient penalty |d out / d x|^2 (WGAN-GP / R1 style), for every parameter."""
    g, = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    return torch.autograd.grad(g.pow(2).sum(), list(net.parameters()), allow_unused=True)


@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm", "group_norm", "batch_norm"])
def test_gradient_penalty_through_norms(norm):
    """Second-order gradients through the norms equal torch's (they were silently partial)."""
    torch.manual_seed(0)
    make = {"layer_norm": lambda: torch.nn.LayerNorm(4), "rms_norm": lambda: torch.nn.RMSNorm(4),
            "group_norm": lambda: torch.nn.GroupNorm(2, 4), "batch_norm": lambda: torch.nn.BatchNorm1d(4)}[norm]
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), make(), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    ours = torch_bp.convert(net)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    for a, b in zip(_penalty_grads(ours, x), _penalty_grads(net, x)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)  # float64 tolerance of tests/harness.py


@pytest.mark.parametrize("make", [
    lambda: torch.nn.MultiheadAttention(4, 2, batch_first=True),
    lambda: torch.nn.LSTM(4, 4, batch_first=True),
], ids=["attention", "lstm"])
def test_second_order_without_double_backward_raises(make):
    """Rules without a double backward raise at the create_graph backward, on every path (also a
    penalty differentiated only with respect to an earlier layer's weight)."""
    net = torch_bp.convert(make())
    first = torch.nn.Linear(4, 4)
    x = torch.randn(2, 3, 4, requires_grad=True)
    h = first(x)
    out = net(h, h, h)[0] if isinstance(net, torch.nn.MultiheadAttention) else net(h)[0]
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.grad(out.sum(), x, create_graph=True)
