"""Run one fuzz case through torch and torch_bp and state how they differ, if they do.

The contract: either both raise, with the same exception type (ours an instance of
torch's), or both succeed with outputs of the same shapes, dtypes and values, and the same
gradients for every leaf under the same random upstream gradient; NaN exactly where
torch has NaN. Float values are compared with the harness's tolerance table for the least
precise floating dtype in the case (times the sample's own ``cond``), integers exactly.

NOTE: the table is made for values of order 1 (tests/harness.py). A perturbed draw can
produce values of order 2^60 (huge inputs, or eps = 1e-30 on a zero-variance row), where
its absolute tolerance would demand 30 more digits than float64 has. A pair of tensors
whose reference exceeds 2^20 in magnitude (no harness sample comes near) is divided by the
power of two nearest below its largest finite value (exact) and then compared with the
table, unchanged: the same relative demand as on an O(1) sample, never a looser one.
"""
from __future__ import annotations

import math

import torch

from harness import TOL, assert_close, our_nodes
from torch_bp.registry import get

from .cases import FuzzCase
from .known import torch_crash, torch_quirk


def tensor_outputs(out):
    """Every tensor of a layer's output, flattened (tuples, nested tuples, PackedSequence)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in tensor_outputs(o)]
    if isinstance(getattr(out, "data", None), torch.Tensor):  # PackedSequence
        return tensor_outputs(out.data)
    return []


def _run(fn, case: FuzzCase, upstream=None):
    """Call fn on fresh copies of the case; backprop; return (outputs, grads, upstream) or the error."""
    leaves, args, kwargs = case.call_args()
    try:
        torch.manual_seed(0)  # dropout and friends draw the same numbers on both sides
        outs = tensor_outputs(fn(*args, **kwargs))
        diff = [o for o in outs if o.requires_grad]
        if upstream is None:
            g = torch.Generator().manual_seed(1)
            upstream = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in diff]
        if diff and len(upstream) == len(diff) and all(u.shape == o.shape for u, o in zip(upstream, diff)):
            kept = [u.clone() for u in upstream]
            torch.autograd.backward(diff, [u.to(o.dtype) for u, o in zip(upstream, diff)])
            assert all(torch.equal(u, k) for u, k in zip(upstream, kept)), "grad_output modified in place"
    except Exception as e:  # noqa: BLE001 - the exception type itself is what we compare
        return e
    return outs, [x.grad for x in leaves], upstream


_HUGE = 2.0 ** 20


def rescaled(a, b):
    """(a, b) / 2^k for b's largest finite magnitude >= 2^20 (see the module NOTE); else as is. Sparse gradients
    (embedding's sparse=True) must have torch's layout and are compared as dense tensors."""
    if a is not None and b is not None and torch.strided not in (a.layout, b.layout):
        assert a.layout == b.layout, f"layout {a.layout}, torch gives {b.layout}"
        a, b = a.to_dense(), b.to_dense()
    elif a is not None and b is not None and a.layout != b.layout:
        raise AssertionError(f"layout {a.layout}, torch gives {b.layout}")
    if a is None or b is None or not b.is_floating_point() or b.numel() == 0:
        return a, b
    finite = b.detach()[b.detach().isfinite()]
    m = finite.abs().max().item() if finite.numel() else 0.0
    if m < _HUGE:
        return a, b
    s = 2.0 ** math.floor(math.log2(m))
    return a.detach() / s, b.detach() / s


def _case_dtype(case: FuzzCase, tensors):
    """The least precise floating dtype among the case's tensors (it sets the tolerance)."""
    floats = [t.dtype for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return max(floats, key=lambda d: TOL[d], default=case.dtype)


def check(case: FuzzCase):
    """``"both raised"``, ``"both succeeded"``, ``"xfail: <reason>"`` for a difference that a
    known torch quirk explains, or ``"skipped: <reason>"`` for a case that would crash torch
    (tests/fuzz/known.py); else AssertionError naming the difference."""
    crash = torch_crash(case)
    if crash is not None:
        return f"skipped: {crash}"
    row = get(case.name)
    ref = _run(row.reference, case)
    ours = _run(row.functional, case, upstream=None if isinstance(ref, Exception) else ref[2])
    try:
        return _compare(row, case, ours, ref)
    except AssertionError:
        reason = torch_quirk(case, ours, ref)
        if reason is None:
            raise
        return f"xfail: {reason}"


def _compare(row, case, ours, ref, dtype=None):
    """The comparison of ``check``; ``dtype`` given: ``ours`` and ``ref`` are float64 results
    (an accuracy check, tests/fuzz/known.py), compared with that dtype's tolerance."""
    if isinstance(ref, Exception) or isinstance(ours, Exception):
        if isinstance(ref, Exception) and isinstance(ours, Exception):
            assert isinstance(ours, type(ref)), (
                f"torch raised {type(ref).__name__}({ref}) but torch_bp raised {type(ours).__name__}({ours})")
            assert str(ours), f"torch_bp raised {type(ours).__name__} with an empty message"
            return "both raised"
        if isinstance(ref, Exception):
            raise AssertionError(f"torch raised {type(ref).__name__}({str(ref)[:300]}) but torch_bp succeeded")
        raise AssertionError(f"torch succeeded but torch_bp raised {type(ours).__name__}({str(ours)[:500]})")

    (outs, grads, _), (rout, rgrads, _) = ours, ref
    upcast = dtype is not None
    dtype = dtype or _case_dtype(case, case.tensors() + rout)
    assert len(outs) == len(rout), f"{len(outs)} outputs, torch gives {len(rout)}"
    for i, (o, r) in enumerate(zip(outs, rout)):
        what = f"output {i}"
        assert o.shape == r.shape and (o.dtype == r.dtype or upcast), (
            f"{what}: {tuple(o.shape)} {o.dtype}, torch gives {tuple(r.shape)} {r.dtype}")
        if r.is_floating_point():
            assert_close(*rescaled(o, r), dtype, case.cond, what)
        else:
            assert torch.equal(o, r), f"{what}: integer outputs differ"
        if upcast:
            continue
        assert o.requires_grad == r.requires_grad, f"{what}: requires_grad {o.requires_grad} != torch's"
        if o.requires_grad:
            node = type(o.grad_fn).__name__
            assert node in our_nodes(row), f"{what} carries {node}, not our rule"
    assert len(grads) == len(rgrads)
    for i, (g, r) in enumerate(zip(grads, rgrads)):
        assert_close(*rescaled(g, r), dtype, case.cond, f"grad of input {i}")
    return "both succeeded"
