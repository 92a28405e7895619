"""The verification harness: run a layer and torch's reference alike, compare everything.

Tolerances: one table, keyed by the dtype under test. We and torch evaluate the same
formula in a different order of operations; each rounding costs at most eps/2, and a
reduction of n terms can accumulate about n*eps of its largest term. Our samples reduce
over at most ~100 O(1) terms, so float64 and float32 agree to ~100 eps (1e-13, 1e-5).
bfloat16 results are computed in float32 and rounded once, by torch and by us, so they
agree to within 2 ulp (2 * 2^-7). A sample's ``cond`` multiplies these for ill-conditioned
inputs. gradcheck (float64, finite differences) keeps torch's own defaults.
"""
from __future__ import annotations

import torch

from samples import Sample

TOL = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.bfloat16: 2 * 2.0 ** -7,
    torch.float16: 2 * 2.0 ** -10,
}


def tol(dtype, cond=1.0):
    t = TOL[dtype] * cond
    return dict(rtol=t, atol=t)


def clone_leaf(t):
    """A fresh leaf with the same values, strides and requires_grad."""
    if not isinstance(t, torch.Tensor):
        return t
    c = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=t.device)
    with torch.no_grad():
        c.copy_(t)
    return c.requires_grad_(t.requires_grad)


def clone_args(sample: Sample):
    args = tuple(_clone_nested(a) for a in sample.args)
    kwargs = {k: _clone_nested(v) for k, v in sample.kwargs.items()}
    return args, kwargs


def _clone_nested(a):
    if isinstance(a, (list, tuple)) and any(isinstance(x, torch.Tensor) for x in a):
        return rebuild(a, [clone_leaf(x) for x in a])
    return clone_leaf(a)


def rebuild(a, items):
    """A list/tuple like ``a`` holding ``items`` (namedtuples such as PackedSequence take them positionally)."""
    return type(a)(*items) if hasattr(a, "_fields") else type(a)(items)


def leaves(args, kwargs):
    """Tensors requiring grad among the (possibly nested) arguments, in order."""
    out = []
    for a in list(args) + list(kwargs.values()):
        items = a if isinstance(a, (list, tuple)) else [a]
        out += [x for x in items if isinstance(x, torch.Tensor) and x.requires_grad]
    return out


def float_outputs(out):
    """The floating-point tensors of a layer's output, flattened (tuples, nested tuples)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in float_outputs(o)]
    if hasattr(out, "data") and isinstance(getattr(out, "data"), torch.Tensor):  # PackedSequence
        return float_outputs(out.data)
    return []


def run(fn, args, kwargs, seed=0, upstream=None):
    """Call fn, backprop ``upstream`` (random, fixed by seed, if None); return outputs, grads, upstream."""
    torch.manual_seed(seed)
    out = fn(*args, **kwargs)
    outs = float_outputs(out)
    diff = [o for o in outs if o.requires_grad]
    if upstream is None:
        g = torch.Generator().manual_seed(seed + 1)
        upstream = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device, o.dtype) for o in diff]
    kept = [u.clone() for u in upstream]
    if diff:
        torch.autograd.backward(diff, upstream)
    for u, k in zip(upstream, kept):
        assert torch.equal(u, k), "a backward rule modified grad_output in place"
    return outs, [x.grad for x in leaves(args, kwargs)], upstream


def assert_close(actual, expected, dtype, cond=1.0, what=""):
    if actual is None or expected is None:
        assert actual is None and expected is None, f"{what}: one gradient is None, the other is not"
        return
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    torch.testing.assert_close(actual, expected, equal_nan=True, msg=lambda m: f"{what}: {m}", **tol(dtype, cond))


def our_nodes(row):
    return {f.__name__ + "Backward" for f in row.functions}
