"""The fusion pass of torch_bp.convert (torch_bp/nn/fused.py, registry.FUSIONS): a fused model computes what
the unfused converted model computes (values, gradients, running statistics) within the dtype table of
tests/harness.py, keeps its children, parameters and state_dict keys, reverts to torch.nn, and yields to
hooks, per-sample blocks and error-signal captures."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import torch_bp
from torch_bp import _signals
from torch_bp.nn.fused import FusedSequential
from harness import tol

from experiments.benchmarks.measure import saved_bytes

def mlp(act):
    return nn.Sequential(nn.Linear(6, 8), act, nn.Linear(8, 8), copy.deepcopy(act), nn.Linear(8, 3)), (6,)


def cnn():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3)), (2, 4, 4)


def bn1d():
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)), (5,)


def encoder(norm_first, activation):
    return nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, activation=activation,
                                      batch_first=True, norm_first=norm_first), (5, 8)


MODELS = {
    "mlp-gelu": lambda: mlp(nn.GELU()),
    "mlp-gelu-tanh": lambda: mlp(nn.GELU(approximate="tanh")),
    "mlp-relu": lambda: mlp(nn.ReLU()),
    "mlp-silu": lambda: mlp(nn.SiLU()),
    "cnn": cnn,
    "bn1d-relu": bn1d,
    "encoder-pre-ln-gelu": lambda: encoder(True, "gelu"),
    "encoder-post-ln-relu": lambda: encoder(False, "relu"),
    "encoder-module-activation": lambda: encoder(True, nn.GELU()),
}


def _step(model, x):
    """Output, parameter gradients and input gradient of one forward + backward."""
    x = x.detach().requires_grad_()
    model.zero_grad()
    y = model(x)
    y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape))
    return y.detach(), [p.grad.clone() for p in model.parameters()], x.grad.clone()


def _close(a, b, dtype):
    torch.testing.assert_close(a, b, **tol(dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", MODELS)
def test_fused_matches_unfused(name, dtype, each_backend):  # each_backend: tests/conftest.py
    torch.manual_seed(0)
    ref, shape = MODELS[name]()
    ref = ref.to(dtype)
    unfused, fused = torch_bp.convert(ref, fuse=False), torch_bp.convert(ref)
    x = torch.randn(4, *shape, dtype=dtype)
    torch_y, _, torch_gx = _step(copy.deepcopy(ref).train(), x)   # torch's own model, one training step
    for mode in ("train", "eval"):
        for m in (unfused, fused):
            m.train(mode == "train")
        (ya, ga, gxa), (yb, gb, gxb) = _step(unfused, x), _step(fused, x)
        _close(yb, ya, dtype)
        _close(gxb, gxa, dtype)
        for p, q in zip(gb, ga):
            _close(p, q, dtype)
        for p, q in zip(fused.buffers(), unfused.buffers()):   # running statistics, num_batches_tracked
            _close(p, q, dtype)
        if mode == "train":
            _close(yb, torch_y, dtype)
            _close(gxb, torch_gx, dtype)


def test_the_pass_fuses():
    """What is fused: the Sequentials with a pair become FusedSequential, the encoder layer gets its switch;
    the fused calls run the fused rules (one node instead of two)."""
    model, _ = mlp(nn.GELU())
    fused = torch_bp.convert(model)
    assert type(fused) is FusedSequential
    y = fused(torch.randn(3, 6))
    assert type(y.grad_fn).__name__ == "LinearFunctionBackward"
    assert type(y.grad_fn.next_functions[0][0]).__name__ == "BiasActivationFunctionBackward"
    c = torch_bp.convert(cnn()[0])
    assert type(c) is FusedSequential
    y = c[:3](torch.randn(2, 2, 4, 4))   # slicing gives a Sequential of the same class
    assert type(y.grad_fn).__name__ == "BatchNormReLUFunctionBackward"
    enc = torch_bp.convert(encoder(True, "gelu")[0])
    assert enc.fuse_layers
    plain = nn.Sequential(nn.Linear(3, 3), nn.Tanh())   # no pattern: stays a plain Sequential
    assert type(torch_bp.convert(plain)) is nn.Sequential


@pytest.mark.parametrize("name", ["mlp-gelu", "cnn", "encoder-pre-ln-gelu"])
def test_fuse_false_revert_state_dict(name):
    torch.manual_seed(0)
    ref, _ = MODELS[name]()
    keys = list(ref.state_dict())
    params = [id(p) for p in ref.parameters()]
    fused = torch_bp.convert(ref, inplace=True)
    assert list(fused.state_dict()) == keys and [id(p) for p in fused.parameters()] == params
    unfused = torch_bp.convert(fused, inplace=True, fuse=False)   # turns fusion off on a converted model
    assert type(unfused) is not FusedSequential and "fuse_layers" not in unfused.__dict__
    back = torch_bp.revert(torch_bp.convert(unfused, inplace=True), inplace=True)
    assert list(back.state_dict()) == keys and [id(p) for p in back.parameters()] == params
    assert all(type(m).__module__.startswith("torch.nn") for m in back.modules())
    assert "fuse_layers" not in back.__dict__


def test_hooks_see_every_layer():
    """A hook on a module that a fusion would merge runs as registered, on that module's own output."""
    torch.manual_seed(0)
    model = torch_bp.convert(mlp(nn.GELU())[0])
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(("linear", o.detach())))
    model[3].register_forward_hook(lambda m, i, o: seen.append(("gelu", o.detach())))
    x = torch.randn(2, 6)
    model(x)
    assert [s for s, _ in seen] == ["linear", "gelu"]
    torch.testing.assert_close(seen[0][1], torch.nn.functional.linear(x, model[0].weight, model[0].bias))
    grads = []
    model[1].register_full_backward_hook(lambda m, gi, go: grads.append(go[0]))
    model(x).sum().backward()
    assert len(grads) == 1   # the GELU module ran on its own, so its backward hook fired


def test_per_sample_and_signals_see_every_layer():
    """Fusion yields inside a per-sample block and during an error-signal capture: per-example gradients of
    every parameter (the fused bias has no per-sample rule of its own), error signals of every layer."""
    torch.manual_seed(0)
    model = torch_bp.convert(mlp(nn.GELU())[0])
    unfused = torch_bp.convert(model, fuse=False)
    x = torch.randn(4, 6)
    with torch_bp.per_sample_grads(model) as ps:
        model(x).sum().backward()
    assert ps.missing() == []
    with torch_bp.per_sample_grads(unfused):
        unfused(x).sum().backward()
    for p, q in zip(model.parameters(), unfused.parameters()):
        torch.testing.assert_close(p.grad_sample, q.grad_sample)
    w = _signals.watch(model)
    with _signals.capture() as cap:
        model(x).sum().backward()
    w.remove()
    assert list(cap.norms()) == ["0", "1", "2", "3", "4"]


def test_saved_bytes_not_more():
    """Fusion keeps no more for backward than the unfused converted model (the lean recipes carry over)."""
    for make in (lambda: mlp(nn.GELU()), cnn, lambda: encoder(True, "gelu")):
        torch.manual_seed(0)
        ref, shape = make()
        x = torch.randn(8, *shape)
        unfused, fused = torch_bp.convert(ref, fuse=False), torch_bp.convert(ref)
        excl = [x] + list(unfused.parameters()) + list(fused.parameters()) + list(unfused.buffers()) + \
            list(fused.buffers())
        assert saved_bytes(lambda: fused(x), excl) <= saved_bytes(lambda: unfused(x), excl)
