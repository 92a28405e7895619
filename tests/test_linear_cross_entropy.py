"""linear_cross_entropy (ops/loss.py LinearCrossEntropyFunction): the language-model head.

The registry row runs the layer harness (gradcheck, bf16/float32 vs torch, errors, fuzz);
here: the option grid against torch in float64 for both modes and chunkings, the memory
claims (no (N, V) tensor is ever allocated; saved bytes O(N d + V d), not O(N V)), the
module (nn.Linear's state_dict), errors, and per-example gradients reporting the layer.
"""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as TF
from torch.utils._python_dispatch import TorchDispatchMode

import torch_bp
import torch_bp.functional as F
from harness import assert_close
from torch_bp.registry import get

REF = get("linear_cross_entropy").reference
DT = torch.float64


def _inputs(n=11, d=6, v=7, bias=True, dtype=DT, lead=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, n, d, generator=g, dtype=dtype).requires_grad_()
    w = torch.randn(v, d, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(v, generator=g, dtype=dtype).requires_grad_() if bias else None
    y = torch.randint(0, v, (*lead, n), generator=g)
    y.view(-1)[::4] = 3  # the ignore_index of some cases: several ignored rows
    return x, w, b, y


def _grads(fn, x, w, b, y, upstream=None, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b) if t is not None]
    xx, ww, bb = leaves[0], leaves[1], (leaves[2] if b is not None else None)
    out = fn(xx, ww, y, linear_bias=bb, **kw)
    u = torch.ones_like(out) * 0.7 if upstream is None else upstream
    out.backward(u)
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("mode", ["fused", "recompute"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_options_match_torch(mode, reduction):
    """Every combination of ignore_index, label_smoothing, bias and chunk size (1, 4 and 5 rows,
    none of which divides 11; None: one chunk) equals cross_entropy(linear(...)) in float64."""
    for ignore, smooth, bias, chunk in itertools.product((-100, 3), (0.0, 0.25), (True, False), (None, 1, 4, 5)):
        x, w, b, y = _inputs(bias=bias)
        kw = dict(ignore_index=ignore, reduction=reduction, label_smoothing=smooth)
        up = torch.randn(11, dtype=DT) if reduction == "none" else None
        ours, g_ours = _grads(F.linear_cross_entropy, x, w, b, y, up, chunk_size=chunk, mode=mode, **kw)
        ref, g_ref = _grads(REF, x, w, b, y, up, **kw)
        what = f"{mode} {reduction} ignore={ignore} a={smooth} bias={bias} chunk={chunk}"
        assert_close(ours, ref, DT, what=what + " loss")
        for i, (p, q) in enumerate(zip(g_ours, g_ref)):
            assert_close(p, q, DT, what=f"{what} grad {i}")


def test_leading_dims_and_chunks_across_them():
    """The module LinearCrossEntropy takes x (B, T, d), y (B, T) (torch's functional takes 1-d or
    2-d inputs only): chunks of 4 rows straddle the sequences; 'none' has y's shape."""
    x, w, b, y = _inputs(n=5, lead=(3,))
    for reduction in ("mean", "none"):
        head = torch_bp.nn.LinearCrossEntropy(6, 7, reduction=reduction, chunk_size=4, dtype=DT)
        head.load_state_dict({"weight": w.detach(), "bias": b.detach()})
        ours = head(x, y)
        ref = REF(x.reshape(15, 6), w, y.reshape(15), linear_bias=b, reduction=reduction)
        assert ours.shape == (() if reduction == "mean" else (3, 5))
        assert_close(ours.reshape(ref.shape), ref, DT, what=reduction)


def test_signature_is_torchs():
    """torch's parameters, names, kinds and defaults, then our keyword-only extras."""
    import inspect
    ours = list(inspect.signature(F.linear_cross_entropy).parameters.values())
    ref = list(inspect.signature(TF.linear_cross_entropy).parameters.values())
    assert [(p.name, p.kind, p.default) for p in ours[:len(ref)]] == [(p.name, p.kind, p.default) for p in ref]
    assert [(p.name, p.kind) for p in ours[len(ref):]] == [("chunk_size", inspect.Parameter.KEYWORD_ONLY),
                                                          ("mode", inspect.Parameter.KEYWORD_ONLY)]


@pytest.mark.parametrize("mode", ["fused", "recompute"])
def test_class_weights_match_torch(mode):
    """``weight`` is torch's class weight: with ignore_index and label smoothing, every reduction."""
    for reduction, smooth, chunk in itertools.product(("mean", "sum", "none"), (0.0, 0.3), (None, 4)):
        x, w, b, y = _inputs()
        cw = torch.rand(7, dtype=DT) + 0.2
        kw = dict(weight=cw, ignore_index=3, reduction=reduction, label_smoothing=smooth)
        up = torch.randn(11, dtype=DT) if reduction == "none" else None
        ours, g_ours = _grads(F.linear_cross_entropy, x, w, b, y, up, chunk_size=chunk, mode=mode, **kw)
        ref, g_ref = _grads(REF, x, w, b, y, up, **kw)
        what = f"{mode} {reduction} a={smooth} chunk={chunk}"
        assert_close(ours, ref, DT, what=what + " loss")
        for i, (p, q) in enumerate(zip(g_ours, g_ref)):
            assert_close(p, q, DT, what=f"{what} grad {i}")


class _LargestTensor(TorchDispatchMode):
    """The largest number of elements of any tensor an op returns (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("mode", ["fused", "recompute"])
def test_never_materialises_the_logits(mode):
    """No op of forward + backward returns a tensor of more than chunk x V elements (torch's
    composite returns N x V ones); the largest is a chunk's logits, or W's gradient."""
    n, d, v, chunk = 256, 8, 300, 32
    x, w, b, y = _inputs(n, d, v, dtype=torch.float32)
    with _LargestTensor() as ours:
        F.linear_cross_entropy(x, w, y, linear_bias=b, chunk_size=chunk, mode=mode).backward()
    with _LargestTensor() as ref:
        REF(x, w, y, linear_bias=b).backward()
    assert ref.largest == n * v
    assert ours.largest == max(chunk * v, v * d, n * d), ours.largest


def _saved(mode, n, d, v):
    from experiments.benchmarks.measure import saved_bytes
    x, w, b, y = _inputs(n, d, v, dtype=torch.float32)
    fn = REF if mode == "torch" else lambda *a, **k: F.linear_cross_entropy(*a, mode=mode, **k)
    return saved_bytes(lambda: fn(x, w, y, linear_bias=b), (x, w, b, y))


def test_saved_bytes():
    """Saved for backward beyond the inputs (x, W, b, y): torch keeps the (N, V) log-probabilities;
    recompute keeps nothing; fused keeps grad_x, grad_W, grad_b, whatever N V is."""
    n, d, v = 512, 16, 1024
    assert _saved("torch", n, d, v) >= 4 * n * v
    assert _saved("recompute", n, d, v) == 0
    assert _saved("fused", n, d, v) == 4 * (n * d + v * d + v)
    # the gate, at a size where it means something: saved <= 0.25 x torch's
    assert _saved("fused", n, d, v) <= 0.25 * _saved("torch", n, d, v)


def test_no_grad_and_frozen_head():
    """Without a gradient to take, the fused mode saves and computes nothing extra; with a frozen
    W (no grad) it saves only grad_x."""
    from experiments.benchmarks.measure import saved_bytes
    x, w, b, y = _inputs(64, 8, 50, dtype=torch.float32)
    with torch.no_grad():
        out = F.linear_cross_entropy(x, w, y, linear_bias=b)
    assert out.grad_fn is None
    assert_close(out, REF(x, w, y, linear_bias=b).detach(), torch.float32)
    w.requires_grad_(False)
    b.requires_grad_(False)
    assert saved_bytes(lambda: F.linear_cross_entropy(x, w, y, linear_bias=b), (x, w, b, y)) == 4 * 64 * 8


def test_bfloat16_close_to_float64():
    """bf16 inputs: loss and gradients within the dtype's tolerance of the float64 answer."""
    x, w, b, y = _inputs(40, 16, 30, dtype=torch.bfloat16)
    for mode in ("fused", "recompute"):
        ours, g = _grads(F.linear_cross_entropy, x, w, b, y, mode=mode, chunk_size=7)
        ref, gr = _grads(REF, x.double(), w.double(), b.double(), y)
        assert ours.dtype == torch.bfloat16
        torch.testing.assert_close(ours.double(), ref, rtol=2 * 2 ** -7, atol=2 * 2 ** -7)
        for p, q in zip(g, gr):
            torch.testing.assert_close(p.double(), q, rtol=4 * 2 ** -7, atol=4 * 2 ** -7 * q.abs().max().item())


def test_errors():
    x, w, b, y = _inputs(4, 3, 5, dtype=torch.float32)
    cases = [
        (lambda: F.linear_cross_entropy(x, w, y[:3], linear_bias=b), ValueError, "batch_size"),
        (lambda: F.linear_cross_entropy(x, w.double(), y, linear_bias=b), RuntimeError, "weight of the input's dtype"),
        (lambda: F.linear_cross_entropy(x, w, y, linear_bias=b[:4]), RuntimeError, "linear_bias shape"),
        (lambda: F.linear_cross_entropy(x[None], w, y[None], linear_bias=b), RuntimeError, "dimensionality 1 or 2"),
        (lambda: F.linear_cross_entropy(x[:, :2], w, y, linear_bias=b), RuntimeError, "in_features"),
        (lambda: F.linear_cross_entropy(x, w, y.int(), linear_bias=b), RuntimeError, "Long or Byte"),
        (lambda: F.linear_cross_entropy(x, w, y, linear_bias=b, mode="fast"), ValueError, "mode"),
        (lambda: F.linear_cross_entropy(x, w, y, linear_bias=b, chunk_size=0), ValueError, "chunk_size"),
        (lambda: F.linear_cross_entropy(x, w, torch.full((4,), 5), linear_bias=b), IndexError, "out of bounds"),
        (lambda: F.linear_cross_entropy(x, w, y, linear_bias=b, reduction="avg"), ValueError, "reduction"),
    ]
    for fn, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            fn()


def test_module_loads_a_linear_head():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 9)
    torch.manual_seed(0)
    head = torch_bp.nn.LinearCrossEntropy(6, 9, label_smoothing=0.1)
    assert list(head.state_dict()) == list(lin.state_dict()) == ["weight", "bias"]
    assert torch.equal(head.weight, lin.weight) and torch.equal(head.bias, lin.bias)  # same init
    lin2 = torch.nn.Linear(6, 9)
    head.load_state_dict(lin2.state_dict())
    x, y = torch.randn(2, 5, 6), torch.randint(0, 9, (2, 5))
    loss = head(x, y)
    ref = TF.cross_entropy(lin2(x).flatten(0, 1), y.flatten(), label_smoothing=0.1)
    loss.backward()
    ref.backward()
    assert_close(loss, ref, torch.float32)
    assert_close(head.weight.grad, lin2.weight.grad, torch.float32)
    assert_close(head.bias.grad, lin2.bias.grad, torch.float32)
    shared = torch_bp.nn.LinearCrossEntropy.from_linear(lin2, reduction="sum")
    assert shared.weight is lin2.weight and shared.bias is lin2.bias
    assert list(torch_bp.nn.LinearCrossEntropy(6, 9, bias=False).state_dict()) == ["weight"]
    assert "num_classes=9" in repr(head)


def test_per_sample_reports_the_head():
    """The head has no per-example rule: ``missing()`` names its parameters instead of guessing."""
    model = torch.nn.Sequential(torch_bp.nn.Linear(4, 6))
    head = torch_bp.nn.LinearCrossEntropy(6, 5)
    params = torch.nn.ModuleDict({"body": model, "head": head})
    with torch_bp.per_sample_grads(params) as ps:
        head(model(torch.randn(3, 4)), torch.randint(0, 5, (3,))).backward()
    assert sorted(ps.missing()) == ["head.bias", "head.weight"]
    assert params["body"][0].weight.grad_sample.shape == (3, 6, 4)


def test_autocast():
    """CPU autocast: the matmuls in bfloat16, the loss in float32, as torch's linear and cross_entropy."""
    x, w, b, y = _inputs(20, 8, 13, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = F.linear_cross_entropy(x, w, y, linear_bias=b)
        ref = REF(x, w, y, linear_bias=b)
    assert ours.dtype == ref.dtype == torch.float32
    g, gr = torch.autograd.grad(ours, (x, w)), torch.autograd.grad(ref, (x, w))
    assert_close(ours, ref, torch.bfloat16)
    for p, q in zip(g, gr):
        assert p.dtype == q.dtype == torch.float32
        assert_close(p, q, torch.bfloat16)
