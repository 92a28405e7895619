"""torch.func, torch.compile, autocast and the converter work through our rules."""
from __future__ import annotations

import pytest
import torch

import torch_bp
import torch_bp.functional as F
from harness import assert_close


def _mlp_loss(params, x, y):
    w1, b1, w2, b2 = params
    h = F.gelu(F.linear(x, w1, b1))
    out = F.linear(h, w2, b2)
    return ((out - y) ** 2).sum()


def test_vmap_grad_gives_per_sample_gradients():
    torch.manual_seed(0)
    params = [torch.randn(8, 5, dtype=torch.float64), torch.randn(8, dtype=torch.float64),
              torch.randn(3, 8, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    per_sample = torch.func.vmap(torch.func.grad(_mlp_loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(x.shape[0]):
        ps = [p.clone().requires_grad_() for p in params]
        grads = torch.autograd.grad(_mlp_loss(ps, x[i], y[i]), ps)
        for g, v in zip(grads, per_sample):
            assert_close(v[i], g, torch.float64, what="per-sample grad")


def _torch_twin():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.LayerNorm(16), torch.nn.SiLU(),
                               torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def test_compile_fullgraph_aot_eager():
    model = torch_bp.convert(_torch_twin())
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(5, 6)
    out = compiled(x)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref = model(x)
    ref.square().sum().backward()
    assert_close(out, ref, torch.float32, what="compiled output")
    for g, p in zip(grads, model.parameters()):
        assert_close(g, p.grad, torch.float32, what="compiled grad")


def test_autocast_bf16_matches_torch():
    ref = _torch_twin()
    ours = torch_bp.convert(ref)
    x = torch.randn(5, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, rout = ours(x), ref(x)
    assert out.dtype == rout.dtype
    assert type(out.grad_fn).__name__ == "LinearFunctionBackward"
    out.float().square().sum().backward()
    rout.float().square().sum().backward()
    assert_close(out, rout, torch.bfloat16, what="autocast output")
    for p, rp in zip(ours.parameters(), ref.parameters()):
        assert p.grad.dtype == rp.grad.dtype == torch.float32
        # a bf16 forward/backward chain through 3 layers: a few bf16 roundings per layer
        torch.testing.assert_close(p.grad, rp.grad, rtol=8 * 2.0 ** -7, atol=8 * 2.0 ** -7 * rp.grad.abs().max())


class _OtherLibraryModel(torch.nn.Module):
    """A model 'from another library': plain torch.nn layers plus functional calls."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(20, 8)
        self.fc1 = torch.nn.Linear(8, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.drop = torch.nn.Dropout(0.1)
        self.head = torch.nn.Linear(16, 5)

    def forward(self, tokens):
        h = self.emb(tokens).mean(1)
        h = torch.nn.functional.relu(self.fc1(h))
        return self.head(self.drop(self.norm(h)))


def test_convert_model_from_another_library():
    torch.manual_seed(0)
    ref = _OtherLibraryModel()
    ours = torch_bp.convert(ref)
    assert ours is not ref and isinstance(ours.fc1, torch_bp.nn.Linear)
    assert isinstance(ref.fc1, torch.nn.Linear) and type(ref.fc1) is torch.nn.Linear
    tokens = torch.randint(0, 20, (4, 7))
    target = torch.randint(0, 5, (4,))
    for m in (ours, ref):
        torch.manual_seed(1)
        torch.nn.functional.cross_entropy(m(tokens), target).backward()
    for (n, p), rp in zip(ours.named_parameters(), ref.parameters()):
        assert_close(p.grad, rp.grad, torch.float32, what=n)
    report = torch_bp.conversion_report(ours)
    assert report.converted["Linear"] == 2 and report.converted["LayerNorm"] == 1
    back = torch_bp.revert(ours)
    assert type(back.fc1) is torch.nn.Linear and not torch_bp.conversion_report(back).converted


def test_convert_keeps_mode_device_dtype_and_inplace():
    model = _torch_twin().double().eval()
    out = torch_bp.convert(model, inplace=True)
    assert out is model and not out.training
    assert all(p.dtype == torch.float64 for p in out.parameters())
    assert type(out[0]) is torch_bp.nn.Linear
