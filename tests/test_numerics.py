"""Numerical guards: where torch's outputs and gradients are finite, ours are too (and equal).

Each layer gets the inputs that break naive formulas: logits of 1e4 and near the dtype's
maximum (exp overflows), -inf masks, rows of tiny variance (1 - 1 cancels, 1/sqrt(0 + eps)),
values whose squares underflow, the far tails of GELU. For each, in float32 and the low
precision dtypes: every position where torch's output or gradient is finite is finite in
ours, and the values agree with the exact answer within the harness's tolerance (values
beyond 2^20 compared after an exact power-of-two rescale, see tests/fuzz/compare.py).

Values are compared with the exact answer (torch's own float64 result on the same input
values): in float16 torch's cross-entropy overflows to inf at logits of 1e4 where ours is
finite and right, and its low-precision LayerNorm is off by more than the table allows for
rows far from 0, where ours is not.

The registry decides what is tested: a layer not (yet) registered is skipped by name.
"""
from __future__ import annotations

import math

import pytest
import torch

from fuzz.compare import rescaled
from harness import assert_close, clone_leaf, run
from torch_bp.registry import LAYERS

ROWS = {row.name: row for row in LAYERS}
F32_MAX = torch.finfo(torch.float32).max
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _row(name):
    if name not in ROWS:
        pytest.skip(f"{name} is not in the registry yet")
    return ROWS[name]


def _t(values, dtype, requires_grad=True):
    t = torch.as_tensor(values, dtype=torch.float64).to(dtype)
    return t.requires_grad_(requires_grad and t.is_floating_point())


def _upcast(a):
    if isinstance(a, torch.Tensor) and a.is_floating_point():
        return a.detach().double().requires_grad_(a.requires_grad)
    return a


def _check(name, dtype, args, kwargs=None, what="", exact_kwargs=None):
    """Ours finite wherever torch's output and gradients are (same dtype), and equal to the
    exact answer: torch's own float64 result on the same input values (upcast exactly).
    ``exact_kwargs`` override options for that float64 run (a dtype-dependent default)."""
    row = _row(name)
    kwargs = kwargs or {}
    ref_outs, ref_grads, up = run(row.reference, tuple(clone_leaf(a) for a in args), kwargs)
    outs, grads, _ = run(row.functional, tuple(clone_leaf(a) for a in args), kwargs, upstream=up)
    ex_outs, ex_grads, _ = run(row.reference, tuple(_upcast(a) for a in args),
                               {k: _upcast(v) for k, v in {**kwargs, **(exact_kwargs or {})}.items()},
                               upstream=[u.double() for u in up])
    checked = 0
    for kind, ours, refs, exact in (("output", outs, ref_outs, ex_outs), ("grad", grads, ref_grads, ex_grads)):
        for i, (o, r, e) in enumerate(zip(ours, refs, exact)):
            where = f"{name}[{what}, {dtype}] {kind} {i}"
            if r is None:
                assert o is None, f"{where}: torch gives None"
                continue
            o, r, e = o.detach(), r.detach(), e.detach()
            bad = r.isfinite() & ~o.isfinite()
            assert not bad.any(), (f"{where}: non-finite at {bad.nonzero()[:5].tolist()} where torch is finite: "
                                   f"ours {o[bad][:5].tolist()}, torch {r[bad][:5].tolist()}")
            # Values: against the exact answer, wherever it is finite and fits the dtype, and
            # torch or we are finite (neither is asked to beat an intermediate overflow).
            fits = e.isfinite() & (e.abs() <= torch.finfo(dtype).max) & (r.isfinite() | o.isfinite())
            assert_close(*rescaled(o.double()[fits], e.to(dtype).double()[fits]), dtype, 1.0, where)
            checked += int((r.isfinite() & fits).sum())
    assert checked, f"{name}[{what}]: torch gives nothing finite; the guard checks nothing"


def _big(dtype):
    """Logit magnitudes that overflow a naive exp: 1e4, and half the dtype's maximum."""
    return [1e4, torch.finfo(dtype).max / 2]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_large_logits(name, dtype):
    for big in _big(dtype):
        x = _t([[big, 0.0, -big, 1.0], [big, big, big - 1, -big], [-big, -big, -big, -big]], dtype)
        _check(name, dtype, (x,), {"dim": -1}, f"logits {big:g}")
        _check(name, dtype, (x,), {"dim": 0}, f"logits {big:g}, dim 0")
    masked = _t([[0.5, -math.inf, 2.0, -math.inf], [-math.inf, 3.0, -math.inf, -math.inf]], dtype)
    _check(name, dtype, (masked,), {"dim": -1}, "-inf mask")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cross_entropy_large_logits(dtype):
    for big in _big(dtype):
        x = _t([[big, 0.0, -big, 1.0], [-big, big, 0.0, 0.0], [0.0, 0.0, -big, 0.0]], dtype)
        target = torch.tensor([0, 0, 2])  # right, badly wrong, -big on the target class
        for kw in ({}, {"reduction": "none"}, {"label_smoothing": 0.1}, {"reduction": "sum"},
                   {"weight": _t([1.0, 2.0, 0.5, 1.0], dtype, requires_grad=False)}):
            _check("cross_entropy", dtype, (x, target), kw, f"logits {big:g} {kw}")
        probs = _t([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 1.0, 0.0]], dtype,
                   requires_grad=False)
        _check("cross_entropy", dtype, (x, probs), {"reduction": "none"}, f"logits {big:g}, prob targets")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bce_with_logits_large_logits(dtype):
    for big in [20.0, 100.0] + _big(dtype):
        x = _t([big, -big, big, -big, 0.0], dtype)
        target = _t([1.0, 0.0, 0.0, 1.0, 0.5], dtype, requires_grad=False)  # right, right, wrong, wrong
        _check("binary_cross_entropy_with_logits", dtype, (x, target), {"reduction": "none"}, f"logits {big:g}")
        _check("binary_cross_entropy_with_logits", dtype, (x, target),
               {"pos_weight": _t([3.0] * 5, dtype, requires_grad=False)}, f"logits {big:g}, pos_weight")


def _tiny_variance_rows(dtype):
    """Rows whose variance is tiny against their mean or absolutely, and a constant row."""
    base = torch.tensor([1.0, 1.0 + 2 ** -20, 1.0 - 2 ** -20, 1.0, 1.0, 1.0], dtype=torch.float64)
    rows = [base, base * 1e-20, base * 0 + 3.0, base * 0, base + 1e4, torch.linspace(-1e-30, 1e-30, 6)]
    return _t(torch.stack(rows), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layer_norm_tiny_variance(dtype):
    x = _tiny_variance_rows(dtype)
    w, b = _t([1.0, -2.0, 0.5, 1.0, 3.0, 1.0], dtype), _t([0.0] * 6, dtype)
    for eps in (1e-5, 1e-12):
        _check("layer_norm", dtype, (x, (6,), w, b), {"eps": eps}, f"eps {eps:g}")
        _check("layer_norm", dtype, (x, (6,)), {"eps": eps}, f"no affine, eps {eps:g}")


def test_layer_norm_constant_rows_tiny_eps_bfloat16():
    """bfloat16 rows of one value at eps = 1e-30 (rstd = 1e15): ours is the exact answer, torch's float64 result on
    the rows shifted to 0 (LayerNorm is invariant under a per-row shift; unshifted, float64's own mean has rounding
    noise that rstd amplifies). torch's bfloat16 kernel gives y ~ 1e7 there (tests/fuzz/known.py)."""
    row = _row("layer_norm")
    x = _t([[0.3] * 5, [-1.7] * 5, [100.0] * 5], torch.bfloat16)
    w, b = _t([0.5, -1.0, 2.0, 1.5, -0.25], torch.bfloat16), _t([0.1, -0.3, 0.7, -1.1, 0.9], torch.bfloat16)
    outs, grads, up = run(row.functional, (x, (5,), w, b), {"eps": 1e-30})
    x64 = x.detach().double()
    shifted = (x64 - x64[:, :1]).requires_grad_()
    ex_outs, ex_grads, _ = run(row.reference, (shifted, (5,), _upcast(w), _upcast(b)), {"eps": 1e-30},
                               upstream=[u.double() for u in up])
    assert torch.equal(outs[0], b.detach().expand(3, 5)), "y = b on a row of one value"
    for i, (o, e) in enumerate(zip(grads, ex_grads)):
        assert_close(*rescaled(o.double(), e), torch.bfloat16, 1.0, f"grad {i}")


def test_cosine_embedding_loss_zero_row_and_overflow_like_torch():
    """A row of zeros: d c / d x2 = x1 / sqrt(m1 eps) with torch's eps, 1e-12 rounded to float32 (float64: equal to
    torch's to rounding). A row whose sum of squares overflows float32: NaN for the other input's gradient, as
    torch (never a silent 0)."""
    row = _row("cosine_embedding_loss")
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(4, 5, generator=g, dtype=torch.float64)
    t = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    for dtype, x2 in ((torch.float64, torch.zeros(4, 5, dtype=torch.float64)),
                      (torch.float32, torch.randn(4, 5, generator=g, dtype=torch.float64) * 2.0 ** 100)):
        args = (x1.to(dtype).requires_grad_(), x2.to(dtype).requires_grad_(), t.to(dtype))
        ref_outs, ref_grads, up = run(row.reference, tuple(clone_leaf(a) for a in args), {"margin": 0.0})
        outs, grads, _ = run(row.functional, tuple(clone_leaf(a) for a in args), {"margin": 0.0}, upstream=up)
        for o, r in zip(outs + grads, ref_outs + ref_grads):
            torch.testing.assert_close(o, r, rtol=1e-13 if dtype == torch.float64 else 1e-6, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rms_norm_tiny_values(dtype):
    x = _tiny_variance_rows(dtype)
    w = _t([1.0, -2.0, 0.5, 1.0, 3.0, 1.0], dtype)
    default_eps = torch.finfo(torch.float32).eps  # torch's eps=None in float32, bf16, fp16
    for kw in ({}, {"eps": 1e-12}, {"eps": 1e-5}):
        _check("rms_norm", dtype, (x, (6,), w), kw, f"{kw}", exact_kwargs={"eps": kw.get("eps", default_eps)})


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_tails(approximate, dtype):
    big = torch.finfo(dtype).max / 2
    # One element per call as well: torch's vectorized kernel and its scalar path differ at
    # +-inf only (tests/fuzz/known.py); finite inputs of any size agree.
    x = _t([-big, -1e4, -40.0, -10.0, -5.0, 5.0, 10.0, 40.0, 1e4, big, 0.0, -1e-30], dtype)
    _check("gelu", dtype, (x,), {"approximate": approximate}, "tails")
