"""Known differences from torch that are torch's own inconsistencies, not our bugs.

Each entry: registry name -> list of ``(predicate, reason)``; ``predicate(case, ours, ref)``
sees the case and both results (``(outputs, grads, upstream)`` or the exception raised).
When a case fails the comparison and a predicate of its layer holds, the draw counts as an
expected failure (outcome ``"xfail: <reason>"``, tallied by tests/test_fuzz.py) instead of
failing. A predicate must be specific to the inputs (and results) that the torch behaviour
it names produces, so that it cannot hide anything else; a draw it matches that agrees
with torch passes as usual.
"""
from __future__ import annotations

import copy
import math
import warnings

import torch

from harness import TOL, tol



def _has(t, value):
    return isinstance(t, torch.Tensor) and t.is_floating_point() and bool((t == value).any())


def _gelu_inf(case, ours=None, ref=None):
    x = case.value("input")
    return (case.value("approximate") in (None, "none") and _has(x, math.inf)
            and x.dtype != torch.float64 and x.numel() > 1)


def _softplus_overflow(case, ours=None, ref=None):
    x = case.value("input")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return False
    beta, threshold = case.value("beta") or 1.0, case.value("threshold") or 20.0
    opmath = torch.float64 if x.dtype == torch.float64 else torch.float32
    bx = x.to(opmath) * beta
    return bool(((bx > math.log(torch.finfo(opmath).max)) & (bx <= threshold)).any())


def _elu_nan(case, ours=None, ref=None):
    x = case.value("input")
    return isinstance(x, torch.Tensor) and x.is_floating_point() and bool(x.isnan().any())


def _rows64(case):
    """(x as (N, D) float64 rows, the compute dtype's max) for layer/RMS norm cases."""
    x, shape = case.value("input"), case.value("normalized_shape")
    d = math.prod((shape,) if isinstance(shape, int) else shape)
    big = torch.finfo(torch.float64 if x.dtype == torch.float64 else torch.float32).max
    return x.double().reshape(-1, d), big


def _rms_norm_composite_overflow(case, ours=None, ref=None):
    x, eps, w = case.value("input"), case.value("eps"), case.value("weight")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or eps is None:
        return False
    rows, big = _rows64(case)
    r3 = (rows.pow(2).mean(1) + eps).pow(-1.5)
    if bool((r3 > big).any()):
        return True
    if isinstance(ref, Exception) or ref is None or not ref[2]:
        return False
    g = ref[2][0].double().reshape(rows.shape)
    gw = g * (w.double().reshape(-1) if isinstance(w, torch.Tensor) else 1.0)
    gwx = gw * rows
    return bool(((gwx.sum(1).abs() * r3 > big / 4) | (gwx.abs().sum(1) > big / 4)).any())


def _layer_norm_variance_overflow(case, ours=None, ref=None):
    x = case.value("input")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return False
    rows, big = _rows64(case)
    return bool(((rows - rows.mean(1, keepdim=True)).pow(2).sum(1) > big / 256).any())


def _group_norm_variance_overflow(case, ours=None, ref=None):
    """A group whose sum of squared deviations overflows the compute dtype (float32 for
    float32/bfloat16/float16 inputs), and only non-finite values differ."""
    x, g = case.value("input"), case.value("num_groups")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0 or not g:
        return False
    big = torch.finfo(torch.float64 if x.dtype == torch.float64 else torch.float32).max
    rows = x.double().reshape(x.shape[0] * g, -1)
    over = bool(((rows - rows.mean(1, keepdim=True)).pow(2).sum(1) > big / 256).any())
    return over and _only_nonfinite_differences(case, ours, ref, torch_nan_ok=True)


def _linear_gelu_inf(case, ours=None, ref=None):
    """linear_activation with GELU whose pre-activation holds +-inf (an infinite input or weight):
    torch's vectorized GELU gives NaN for +inf (see the gelu row); only non-finite values differ."""
    if case.value("activation") != "gelu" or case.value("approximate") not in (None, "none"):
        return False
    if not any(_has(case.value(p), v) for p in ("input", "weight", "bias") for v in (math.inf, -math.inf)):
        return False
    return case.dtype != torch.float64 and _only_nonfinite_differences(case, ours, ref)


def _rnn_nan_weight(case, ours=None, ref=None):
    """A NaN or +-inf in an RNN weight, and wherever we differ one side is NaN (finite values
    agree)."""
    if isinstance(ours, Exception) or isinstance(ref, Exception):
        return False
    params = [x.leaf if hasattr(x, "leaf") else x for x in (case.arguments.get("params") or [])]
    if not any(_has_nan(p) or _has(p, math.inf) or _has(p, -math.inf) for p in params):
        return False
    t = tol(case.dtype, case.cond)
    for a, b in zip(ours[0] + ours[1], ref[0] + ref[1]):
        if a is None or b is None:
            if (a is None) != (b is None):
                return False
            continue
        a, b = a.detach().double(), b.detach().double()
        if not bool((torch.isclose(a, b, equal_nan=True, **t) | a.isnan() | b.isnan()).all()):
            return False
    return True


def _has_nan(t):
    return isinstance(t, torch.Tensor) and t.is_floating_point() and bool(t.isnan().any())


def _only_nonfinite_differences(case, ours, ref, torch_nan_ok=False):
    """Both ran, and wherever they differ both are non-finite (NaN against +-inf), or, with
    ``torch_nan_ok``, torch is NaN; every finite pair agrees with the table's tolerance."""
    if isinstance(ours, Exception) or isinstance(ref, Exception):
        return False
    floats = [t.dtype for t in case.tensors() + list(ref[0]) if t.is_floating_point()]
    t = tol(max(floats, key=lambda d: TOL[d]), case.cond)  # the finite values: as strict as ever
    for a, b in zip(ours[0] + ours[1], ref[0] + ref[1]):
        if a is None or b is None or a.shape != b.shape or not a.is_floating_point():
            return False
        a, b = a.detach().double(), b.detach().double()
        ok = torch.isclose(a, b, equal_nan=True, **t) | (~a.isfinite() & ~b.isfinite())
        if torch_nan_ok:
            ok |= b.isnan()
        if not bool(ok.all()):
            return False
    return True


def _inf_differs_only_in_kind(case, ours, ref):
    """An infinite weight or input, and every difference is NaN against +-inf (both non-finite)."""
    if not any(_has(case.value(p), v) for p in ("input", "weight") for v in (math.inf, -math.inf)):
        return False
    return _only_nonfinite_differences(case, ours, ref)


def _layer_norm_rstd_overflow(case, ours, ref):
    """A row whose 1/sqrt(var + eps) overflows the dtype (zero or underflowed variance, eps 0
    or tiny), and torch is NaN (or both non-finite) wherever we differ."""
    x, eps = case.value("input"), case.value("eps")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
        return False
    rows, _ = _rows64(case)
    opmath = torch.float64 if x.dtype == torch.float64 else torch.float32
    xr = rows.to(opmath)
    var = (xr - xr.mean(1, keepdim=True)).pow(2).mean(1).double()
    if not bool(((var + (eps or 0.0)).rsqrt() > torch.finfo(x.dtype).max).any()):
        return False
    return _only_nonfinite_differences(case, ours, ref, torch_nan_ok=True)


def _layer_norm_constant_row(case, ours, ref):
    """A row of one repeated value, the outputs agree, and only gradients differ."""
    x = case.value("input")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
        return False
    if isinstance(ours, Exception) or isinstance(ref, Exception):
        return False
    rows, _ = _rows64(case)
    if not bool((rows == rows[:, :1]).all(1).any()):
        return False
    outs = ([o for o in ours[0]], [], ours[2]), ([r for r in ref[0]], [], ref[2])
    return _only_nonfinite_differences(case, outs[0], outs[1])


def _layer_norm_shifted_float64(case, ref):
    """torch's own float64 LayerNorm (same upstream) on the case's input with every row shifted by its first value,
    or None: LayerNorm's outputs and gradients are invariant under a per-row shift, and a row of one value becomes
    exactly 0, so float64's mean carries no rounding noise for a huge rstd to amplify."""
    from .cases import TArg
    from .compare import _run
    from torch_bp.registry import get

    x, arg = case.value("input"), case.arguments["input"]
    rows, _ = _rows64(case)
    shifted = (rows - rows[:, :1]).reshape(x.shape)
    up = copy.copy(case)
    up.arguments = {k: (TArg(v.leaf.detach().double().requires_grad_(v.leaf.requires_grad), v.expand_to)
                        if isinstance(v, TArg) and v.leaf.is_floating_point() else v)
                    for k, v in case.arguments.items()}
    up.arguments["input"] = TArg(shifted.requires_grad_(arg.leaf.requires_grad))
    exact = _run(get(case.name).reference, up, upstream=[u.double() for u in ref[2]])
    return None if isinstance(exact, Exception) else exact


def _layer_norm_constant_rows_low_precision(case, ours, ref):
    """bfloat16/float16 rows of one value x != 0 with |x| rstd >= 2^24 (zero variance: rstd = eps^(-1/2)), and ours
    agrees with :func:`_layer_norm_shifted_float64` within the dtype's tolerance (huge values compared as
    compare.py does); where that exact value is beyond the dtype's range, ours is the IEEE +-inf."""
    x, eps = case.value("input"), case.value("eps")
    if isinstance(ours, Exception) or isinstance(ref, Exception) or x.dtype not in (torch.bfloat16, torch.float16):
        return False
    eps = 1e-5 if eps is None else eps
    if not eps > 0 or x.numel() == 0:
        return False
    rows, _ = _rows64(case)
    lost = (rows == rows[:, :1]).all(1) & (rows[:, 0].abs() * eps ** -0.5 >= 2.0 ** 24)
    if not bool(lost.any()):
        return False
    exact = _layer_norm_shifted_float64(case, ref)
    return exact is not None and _agrees_with_exact(case, ours, exact, x.dtype)


def _agrees_with_exact(case, ours, exact, dtype):
    """Every output and gradient of ours within ``dtype``'s tolerance of ``exact`` (a float64 result; huge values
    compared as compare.py does); where the exact value is beyond ``dtype``'s range, ours is the IEEE +-inf."""
    from .compare import rescaled

    t, big = tol(dtype, case.cond), torch.finfo(dtype).max
    for o, e in zip(ours[0] + ours[1], exact[0] + exact[1]):
        if o is None or e is None:
            if (o is None) != (e is None):
                return False
            continue
        o, e = o.detach().double(), e.detach().double()
        over = e.abs() > big
        if not bool((o[over] == e[over].sign() * math.inf).all()):
            return False
        a, b = rescaled(o[~over], e[~over])
        if not bool(torch.isclose(a, b, equal_nan=True, **t).all()):
            return False
    return True


def _cosine_low_precision_composite(case, ours, ref):
    """float16: a row whose m = sum(x^2) + 1e-12, evaluated in float16 as torch's composite does, is 0 (the
    1e-12 underflows) or inf, and ours agrees with torch's float64 result (:func:`_agrees_with_exact`)."""
    x1, x2 = case.value("input1"), case.value("input2")
    if isinstance(ours, Exception) or isinstance(ref, Exception):
        return False
    if not all(isinstance(v, torch.Tensor) and v.dtype == torch.float16 for v in (x1, x2)):
        return False
    m = [((v * v).sum(-1) + 1e-12) for v in (x1, x2)]
    if not any(bool(((mk == 0) | mk.isinf()).any()) for mk in m):
        return False
    exact = _float64_reference(case, ref)
    return exact is not None and _agrees_with_exact(case, ours, exact, torch.float16)


def _layer_norm_mixed_bias_backward(case, ours, ref):
    x, w, b = case.value("input"), case.value("weight"), case.value("bias")
    return (isinstance(ref, Exception) and not isinstance(ours, Exception) and w is None
            and isinstance(b, torch.Tensor) and b.dtype == torch.float32
            and x.dtype in (torch.bfloat16, torch.float16))


def _float64_reference(case, ref):
    """torch's own result on the case's inputs upcast to float64 (same upstream), or None."""
    from .cases import TArg
    from .compare import _run
    from torch_bp.registry import get

    up = copy.copy(case)
    up.arguments = {}
    for k, v in case.arguments.items():
        items = v if type(v) in (list, tuple) else [v]
        items = [TArg(x.leaf.detach().double().requires_grad_(x.leaf.requires_grad), x.expand_to)
                 if isinstance(x, TArg) and x.leaf.is_floating_point() else x for x in items]
        up.arguments[k] = type(v)(items) if type(v) in (list, tuple) else items[0]
    exact = _run(get(case.name).reference, up, upstream=[u.double() for u in ref[2]])
    return None if isinstance(exact, Exception) else exact


def _gradient_overflows(case, ours, ref):
    """Finite inputs; wherever we differ, torch is NaN, ours is +-inf, and torch's own float64
    result there is beyond the dtype's range (the true gradient overflows)."""
    if isinstance(ours, Exception) or isinstance(ref, Exception):
        return False
    if not all(bool(t.isfinite().all()) for t in case.tensors() if t.is_floating_point()):
        return False
    exact = _float64_reference(case, ref)
    if exact is None:
        return False
    t_ok = tol(max((t.dtype for t in case.tensors() if t.is_floating_point()), key=lambda d: TOL[d]), case.cond)
    for a, b, e in zip(ours[0] + ours[1], ref[0] + ref[1], exact[0] + exact[1]):
        if a is None or b is None or e is None:
            if not (a is None and b is None):
                return False
            continue
        big = torch.finfo(a.dtype).max
        a, b, e = a.detach().double(), b.detach().double(), e.detach().double()
        differ = ~torch.isclose(a, b, equal_nan=True, **t_ok)
        if not bool((b[differ].isnan() & a[differ].isinf() & (e[differ].abs() > big)).all()):
            return False
    return True


def _head_grad_x_cancels(case, ours, ref):
    """linear_cross_entropy with a weight of identical rows (an expanded row): grad_x =
    sum_c G_c W_c = W_0 sum_c G_c is exactly 0 (each row of G sums to 0), so both results are
    rounding noise of at most ~V eps |W| |g|, which a huge |W| (2^100) makes large; everything
    else agrees within the table's tolerance."""
    x, w = case.value("input"), case.value("weight")
    if isinstance(ours, Exception) or isinstance(ref, Exception) or not case.arguments["input"].leaf.requires_grad:
        return False
    if not (w.is_floating_point() and w.dim() == 2 and w.shape[0] > 1 and bool((w == w[:1]).all())):
        return False
    bound = 4 * w.shape[0] * torch.finfo(x.dtype).eps * w.double().abs().max() * max(
        float(u.double().abs().max()) for u in ref[2])
    for g in (ours[1][0], ref[1][0]):  # the input's gradient (the first tensor requiring grad)
        if g is None or g.shape != x.shape or not bool((g.double().abs() <= bound).all()):
            return False
    rest = (ours[0], ours[1][1:], ours[2]), (ref[0], ref[1][1:], ref[2])
    return _only_nonfinite_differences(case, *rest)


def more_accurate_than_torch(case, ours, ref):
    """bfloat16/float16: ours agrees with torch's own float64 result on the same (upcast)
    inputs within the case dtype's tolerance, wherever it differs from torch's result."""
    from .compare import _compare
    from torch_bp.registry import get

    if isinstance(ours, Exception) or isinstance(ref, Exception):
        return False
    if not any(t.dtype in (torch.bfloat16, torch.float16) for t in case.tensors()):
        return False
    exact = _float64_reference(case, ref)
    if exact is None:
        return False
    # Our result, in float64, against torch's float64 result, with the tolerance of the
    # case's low-precision dtype (the case's dtype rules the comparison: see compare.py).
    ours64 = ([o.detach().double() if o.is_floating_point() else o for o in ours[0]],
              [None if g is None else g.double() for g in ours[1]], ours[2])
    low = min((t.dtype for t in case.tensors() if t.dtype in (torch.bfloat16, torch.float16)),
              key=lambda d: -TOL[d])
    try:
        _compare(get(case.name), case, ours64, exact, dtype=low)
    except AssertionError:
        return False
    return True


def _mha_paths_disagree(case, ours, ref):
    """multi_head_attention_forward: wherever ours and torch differ, one of them is NaN; on the same case with the
    other need_weights, ours and torch agree (outputs and gradients, the table's tolerance); and ours gives the same
    output on both paths."""
    from .compare import _compare, _run
    from torch_bp.registry import get

    if isinstance(ours, Exception) or isinstance(ref, Exception):
        return False
    nan_either = (_only_nonfinite_differences(case, ours, ref, torch_nan_ok=True)
                  or _only_nonfinite_differences(case, ref, ours, torch_nan_ok=True))
    if not nan_either:
        return False
    alt = copy.copy(case)
    alt.arguments = {**case.arguments, "need_weights": case.value("need_weights") is False}
    row = get(case.name)
    t_alt = _run(row.reference, alt)
    if isinstance(t_alt, Exception):
        return False
    o_alt = _run(row.functional, alt, upstream=t_alt[2])
    if isinstance(o_alt, Exception):
        return False
    try:
        _compare(row, alt, o_alt, t_alt)
    except AssertionError:
        return False
    return bool(torch.allclose(ours[0][0], o_alt[0][0], rtol=0, atol=0, equal_nan=True))


def _mha_promoted_bias(case, ours=None, ref=None):
    """multi_head_attention_forward: torch succeeded, ours raised, and a projection bias has another dtype than the
    query (torch's F.linear on the 3-d inputs promotes it: see linear)."""
    q = case.value("query")
    return (isinstance(ours, RuntimeError) and not isinstance(ref, Exception) and isinstance(q, torch.Tensor)
            and any(isinstance(b, torch.Tensor) and b.dtype != q.dtype
                    for b in (case.value("in_proj_bias"), case.value("out_proj_bias"))))


def _unpool_duplicate_kept(case, ours, ref):
    """max_unpool: the outputs differ only at positions that two or more indices of one plane name, where ours and
    torch's are each one of the values written there; the gradients agree (the table's tolerance)."""
    from harness import assert_close
    from .compare import _case_dtype, rescaled

    x, idx = case.value("input"), case.value("indices")
    if isinstance(ours, Exception) or isinstance(ref, Exception) or len(ours[0]) != 1 or len(ref[0]) != 1:
        return False
    nd = int(case.name[len("max_unpool")])
    o, r = ours[0][0].detach(), ref[0][0].detach()
    if o.shape != r.shape or o.dtype != r.dtype or idx.shape != x.shape or x.dim() <= nd:
        return False
    xs = x.reshape(-1, math.prod(x.shape[-nd:]))       # (planes, input positions)
    ids = idx.reshape(xs.shape).long()
    os, rs = o.reshape(xs.shape[0], -1), r.reshape(xs.shape[0], -1)   # (planes, output positions)
    same = (os == rs) | (os.isnan() & rs.isnan())
    for plane, pos in (~same).nonzero().tolist():
        written = xs[plane][ids[plane] == pos]          # every value scattered to this position
        if written.numel() < 2:
            return False
        for v in (os[plane, pos], rs[plane, pos]):
            if not bool(((written == v) | (written.isnan() & v.isnan())).any()):
                return False
    dtype = _case_dtype(case, case.tensors() + list(ref[0]))
    try:
        for i, (g, gr) in enumerate(zip(ours[1], ref[1])):
            assert_close(*rescaled(g, gr), dtype, case.cond, f"grad of input {i}")
    except AssertionError:
        return False
    return True


def _linear_promoted_bias(case, ours=None, ref=None):
    x, b = case.value("input"), case.value("bias")
    return isinstance(b, torch.Tensor) and x.dim() != 2 and b.dtype != x.dtype


def _linear_empty_output(case, ours=None, ref=None):
    x, w = case.value("input"), case.value("weight")
    return (isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor) and x.dim() > 2
            and w.dim() == 2 and w.shape[0] == 0 and x.dtype != w.dtype)


def _conv_empty_batch(case, ours=None, ref=None):
    x = case.value("input")
    dtypes = {t.dtype for t in case.tensors()}
    return isinstance(x, torch.Tensor) and x.numel() == 0 and len(dtypes) > 1


def _batch_norm_empty_unchecked(case, ours=None, ref=None):
    x = case.value("input")
    return (isinstance(x, torch.Tensor) and x.numel() == 0 and isinstance(ours, Exception)
            and not isinstance(ref, Exception)
            and ("running_mean must be defined" in str(ours) or "should contain" in str(ours)))


def _huber_mixed_dtypes_backward(case, ours, ref):
    """torch's huber_loss forward takes a target of another dtype, its backward then raises."""
    x, t = case.value("input"), case.value("target")
    return (isinstance(ref, Exception) and "Found dtype" in str(ref) and not isinstance(ours, Exception)
            and isinstance(x, torch.Tensor) and isinstance(t, torch.Tensor) and x.dtype != t.dtype)


def _sdpa_empty_unmatched(case, ours=None, ref=None):
    q = case.value("query")
    return (isinstance(q, torch.Tensor) and q.numel() == 0 and isinstance(ours, RuntimeError)
            and not isinstance(ref, Exception)
            and any(m in str(ours) for m in ("do not broadcast", "must have the same last dim")))


def _conv_bias_dtype(case, ours=None, ref=None):
    """A bias whose dtype is not the input's (conv/pooling/batch-norm family)."""
    x, b = case.value("input"), case.value("bias")
    return isinstance(x, torch.Tensor) and isinstance(b, torch.Tensor) and b.dtype != x.dtype


def _adaptive_pool_empty_channels(case, ours=None, ref=None):
    x = case.value("input")
    return (isinstance(ref, Exception) and not isinstance(ours, Exception) and isinstance(x, torch.Tensor)
            and x.dim() >= 3 and 0 in x.shape[-3:])


_CONV_BIAS_DTYPE = (_conv_bias_dtype,
                    "torch's convolutions check the bias dtype on some backends only (mkldnn: e.g. float32 "
                    "with a batch > 1) and add a cast bias on others (a batch of one, padding='same'); ours "
                    "always raises")
_NORM_INF = ("with an infinite weight or input, torch's batch/group norm kernels evaluate folded forms "
             "(y = x (r w) + (b - mu r w); dx = c1 dy + c2 x + c3) where NaN or +-inf depends on rounding; "
             "ours evaluates the docstring's formula: both are non-finite at the same positions")
_CONV_EMPTY = (_conv_empty_batch,
               "torch's convolution returns an empty output for an empty input before it checks that "
               "weight and bias have the input's dtype")

def _lstm_onednn_promoted_bias(case, ours, ref):
    """lstm: torch computed, ours refused, a bias alone has another dtype than the weights, and torch itself refuses
    the case with oneDNN disabled (its other LSTM paths), raising the exception type ours raised."""
    from .compare import _run
    from torch_bp.registry import get

    if isinstance(ref, Exception) or not isinstance(ours, RuntimeError):
        return False
    params = [p.leaf for p in case.arguments.get("params") or []]
    per = 4 if case.value("has_biases") is not False else 2
    odd = [i for i, p in enumerate(params) if p.dtype != params[0].dtype]
    if not odd or any(i % per < 2 for i in odd):   # a weight of another dtype: not this quirk
        return False
    # (torch's flag setter warns that TF32 on oneDNN needs an Intel GPU: not what is checked here)
    with warnings.catch_warnings(), torch.backends.mkldnn.flags(enabled=False):
        warnings.simplefilter("ignore", UserWarning)
        plain = _run(get(case.name).reference, case)
    return isinstance(plain, Exception) and isinstance(ours, type(plain))


def _lstm_cell_state_dtype(case, ours, ref):
    """lstm: torch computed, ours refused, and the cell state c0 alone has another dtype than the weights (the
    input, h0 and every weight share one)."""
    if isinstance(ref, Exception) or not isinstance(ours, RuntimeError) or "states must have" not in str(ours):
        return False
    hx, params, x = case.arguments.get("hx"), case.arguments.get("params") or [], case.value("input")
    if type(hx) not in (list, tuple) or len(hx) != 2 or not params:
        return False
    h, c = (t.leaf.dtype for t in hx)
    x = getattr(x, "data", x)  # a PackedSequence's data
    dtypes = {p.leaf.dtype for p in params} | {h, x.dtype}
    return len(dtypes) == 1 and c not in dtypes


_RNN_NAN = (_rnn_nan_weight, "a NaN or infinite weight: NaN reaches different gradient entries in torch's "
                             "fused RNN kernels (0 * NaN and inf - inf taken in another order, or skipped "
                             "inside its GEMMs) than in our step-by-step rule; the finite values agree")

def _has_inf(case, ours=None, ref=None):
    x = case.value("input")
    return isinstance(x, torch.Tensor) and x.is_floating_point() and bool(x.isinf().any())


def _float64_sixth(case, ours, ref):
    """float64 hardsigmoid: only the gradients differ, each by at most torch's constant's error (outputs equal,
    NaN where torch has NaN)."""
    x = case.value("input")
    if isinstance(ours, Exception) or isinstance(ref, Exception) or x.dtype != torch.float64:
        return False
    if not all(torch.allclose(o, r, rtol=0, atol=0, equal_nan=True) for o, r in zip(ours[0], ref[0])):
        return False
    return all((g is None and r is None) or torch.allclose(g, r, rtol=4e-8, atol=0, equal_nan=True)
               for g, r in zip(ours[1], ref[1]))


def _soft_margin_overflow(case, ours=None, ref=None):
    x, t = case.value("input"), case.value("target")
    if not all(isinstance(v, torch.Tensor) and v.is_floating_point() for v in (x, t)):
        return False
    return bool((-(t.double() * x.double()) > 88).any() or (~torch.isfinite(t)).any() or (~torch.isfinite(x)).any())


def _gaussian_low_precision_overflow(case, ours=None, ref=None):
    """float16/bfloat16: 1 / var or (x - t)^2 / var (var clamped at eps) beyond the dtype's range."""
    x, t, var, eps = case.value("input"), case.value("target"), case.value("var"), case.value("eps")
    if not isinstance(var, torch.Tensor) or var.dtype not in (torch.float16, torch.bfloat16):
        return False
    v = var.double().clamp(min=1e-6 if eps is None else eps)
    big = torch.finfo(var.dtype).max
    return bool(((1 / v > big / 4) | ((x.double() - t.double()) ** 2 / v > big / 4)).any())


def _empty_sum_uninitialised(case, ours=None, ref=None):
    x = case.value("input")
    return isinstance(x, torch.Tensor) and x.numel() == 0 and case.value("reduction") in (None, "mean", "sum")


_EMPTY_SUM = (_empty_sum_uninitialised, "torch's CPU multi_margin_loss / multilabel_margin_loss with an empty "
                                        "batch and reduction 'sum' or 'mean' return an uninitialised value; ours "
                                        "is 0 (sum) or NaN (mean: 0 / 0)")

def _nonfinite_input_nan_placement(case, ours, ref):
    """A non-finite input, and wherever we differ torch is NaN or both are non-finite."""
    if not any(t.is_floating_point() and not bool(t.isfinite().all()) for t in case.tensors()):
        return False
    return _only_nonfinite_differences(case, ours, ref, torch_nan_ok=True)


_NAN_PLACEMENT = (_nonfinite_input_nan_placement,
                  "an infinite or NaN input: torch's kernel forms inf * 0 or inf / inf (NaN) in other entries "
                  "than our formula's order of operations; the finite values agree")

_CLAMP_NAN = (_elu_nan, "torch's hardtanh/shrink backward at NaN depends on the element's position: its "
                        "vectorized loop gives 0, its scalar tail loop gives grad_y (as we do: NaN is "
                        "inside no band)")

TORCH_QUIRKS: dict[str, list] = {
    **{name: [_CLAMP_NAN] for name in ("hardtanh", "relu6", "hardshrink", "softshrink")},
    **{name: [(_elu_nan, "torch's ELU backward (selu and celu are ELU in torch) at NaN depends on the "
                         "element's position (see elu)")] for name in ("selu", "celu")},
    "hardsigmoid": [(_float64_sixth, "torch's hardsigmoid backward multiplies by 1/6 as a float32 constant "
                                     "(1.0f / 6.0f), also in float64: 3e-8 relative from the exact 1/6 we use")],
    "multi_margin_loss": [_EMPTY_SUM],
    "cosine_embedding_loss": [(_cosine_low_precision_composite,
                               "torch's cosine_embedding_loss is a composite evaluated in float16: its m = sum(x^2) "
                               "+ 1e-12 is 0 for a row of zeros (1e-12 underflows float16), giving 0 / 0 = NaN, or "
                               "overflows; ours evaluates in float32 and rounds once, agreeing with torch's float64 "
                               "result (a gradient beyond float16's range is inf)")],
    "bilinear": [_NAN_PLACEMENT],
    "ctc_loss": [_NAN_PLACEMENT],
    "cosine_similarity": [_NAN_PLACEMENT],
    "pairwise_distance": [_NAN_PLACEMENT],
    "poisson_nll_loss": [_NAN_PLACEMENT],
    "multilabel_soft_margin_loss": [_NAN_PLACEMENT],
    "multilabel_margin_loss": [_EMPTY_SUM],
    "soft_margin_loss": [(_soft_margin_overflow, "torch's soft_margin_loss backward is -t z / (1 + z) with z = "
                                                 "exp(-t x): inf / inf = NaN once z overflows (or t, x are "
                                                 "infinite); ours -t sigmoid(-t x) stays finite")],
    "gaussian_nll_loss": [(_gaussian_low_precision_overflow,
                           "torch's gaussian_nll_loss is a composite evaluated in float16/bfloat16: 1 / var "
                           "and (x - t)^2 / var overflow there, where ours (in float32, rounded once) does not")],
    "softsign": [(_has_inf, "torch's softsign is the composite x / (|x| + 1), whose autograd gives "
                            "inf / inf = NaN at x = +-inf; our rule's 1 / (1 + |x|)^2 gives 0 there")],
    **{name: [_RNN_NAN] for name in ("gru", "rnn_tanh", "rnn_relu")},
    "lstm": [_RNN_NAN, (_lstm_cell_state_dtype,
                        "torch's LSTM takes a cell state of another dtype than its weights on its non-oneDNN paths "
                        "(a packed input, a float64 one), where c' = f c + i g promotes it, and refuses it on its "
                        "oneDNN path (a float32 input, 'could not create a primitive descriptor'); ours refuses it "
                        "always, as torch refuses a hidden state h of another dtype on every path"),
             # Found by the fuzzer (torch 2.13 CPU): torch's oneDNN LSTM (a float32 or, where the CPU has it,
             # bfloat16 input; no projections; a packed input only when all its sequences have one length) adds
             # b_ih + b_hh with type promotion before its kernel, so it takes a bias of any dtype that promotes to
             # the weights' (int64, bool, float16 with float32 weights; float64 fails inside oneDNN), while its
             # other paths (float64 or float16 inputs, packed sequences of several lengths, projections, oneDNN
             # disabled) add each bias with addmm and refuse it. Which one runs is torch's internal choice; ours
             # refuses a parameter of another dtype on every path, as torch does with oneDNN disabled.
             (_lstm_onednn_promoted_bias,
              "torch's oneDNN LSTM path promotes a bias of another dtype (b_ih + b_hh before its kernel) and so "
              "accepts e.g. an int64 bias with float32 weights; its other paths, and torch with oneDNN disabled on "
              "this very case, refuse it as ours does")],
    "linear_activation": [(_linear_gelu_inf, "torch's vectorized GELU kernel gives NaN for +inf (see gelu); "
                                             "ours +inf: only non-finite values differ")],
    "gelu": [(_gelu_inf, "torch's vectorized float32/bfloat16/float16 GELU kernel gives NaN for +inf "
                         "(its scalar path, used for one element, and float64 give +inf, as we do)")],
    "softplus": [(_softplus_overflow, "torch's softplus backward computes z / (z + 1) with z = exp(beta x), "
                                      "NaN once exp overflows below the threshold; ours is sigmoid(beta x)")],
    "elu": [(_elu_nan, "torch's ELU backward at NaN depends on the element's position: its vectorized "
                       "loop gives NaN (as we do), its scalar tail loop gives grad_y (NaN <= 0 is false)")],
    "rms_norm": [(_rms_norm_composite_overflow,
                  "torch's rms_norm is a composite whose autograd forms sum(g w x) * r^3, r = "
                  "(mean(x^2) + eps)^(-1/2): it overflows to inf, or 0 * inf = NaN, where our closed "
                  "form r (g w - x r^2 mean(g w x)) stays finite")],
    "layer_norm": [(_gradient_overflows,
                    "a gradient beyond the dtype's range (torch's own float64 result overflows it): torch's "
                    "LayerNorm backward gives NaN there (inf - inf in its folded form), ours the IEEE +-inf"),
                   (_layer_norm_variance_overflow,
                    "torch's LayerNorm on a row whose variance overflows the compute dtype gives NaN "
                    "for short rows and y = bias (rstd = 0) for long ones (its vectorized path), "
                    "depending on dtype and row length; ours gives NaN, never a silently wrong y = b"),
                   (_inf_differs_only_in_kind,
                    "with an infinite weight or input, torch's LayerNorm kernels evaluate folded forms "
                    "(y = x (rstd w) + (b - mean rstd w); dx = a w dy + b' x + c per row) where NaN or "
                    "+-inf depends on the rounding of its mean; ours evaluates the docstring's formula: "
                    "both are non-finite at the same positions"),
                   (_layer_norm_rstd_overflow,
                    "a row whose 1 / sqrt(var + eps) overflows the dtype (zero variance with eps 0, or "
                    "1e-30 in float16): torch's LayerNorm folds rstd into products that give NaN (0 * inf); "
                    "ours gives the IEEE value of the docstring's formula (+-inf for grad_x, 0 for "
                    "grad_w of a zero row)"),
                   (_layer_norm_constant_row,
                    "torch's LayerNorm backward on a row of one repeated value keeps the rounding noise "
                    "of its mean: its folded dx = a dy + b x + c gives grad_x = 0 in float32 at eps = "
                    "1e-30 (exact: rstd (dy - mean dy), ~1e15) and grad_w ~ 1e-5 instead of 0 at eps = "
                    "1e-5; ours centres the row to exactly 0 (outputs agree; tests/test_numerics.py checks "
                    "ours against the float64 answer)"),
                   (_layer_norm_constant_rows_low_precision,
                    "torch's bfloat16/float16 CPU LayerNorm on a row of one value x (zero variance, rstd = "
                    "eps^(-1/2), 1e15 at eps = 1e-30): its forward evaluates the folded y = x (rstd w) + (b - mean "
                    "rstd w) in float32, where b is lost in the rounding of the two products ~|x| rstd |w|, so y is "
                    "that rounding error (~1e7; inf in float16) instead of y = b (x - mean = 0), which its float32 "
                    "and float64 kernels give; its backward gives 0 for grad_x on some of those rows. Ours agrees "
                    "with torch's float64 result on the rows shifted by their first value (exactly centred: "
                    "LayerNorm is invariant under that shift)"),
                   (_layer_norm_mixed_bias_backward,
                    "torch's CPU LayerNorm forward accepts a bfloat16/float16 input with a float32 bias "
                    "and no weight, but its backward then raises 'expected scalar type ... but found "
                    "Float'")],
    "linear": [(_linear_promoted_bias, "torch's F.linear on a 1-d or >2-d input adds the bias after the "
                                       "matmul with type promotion (any dtype of bias is taken), while on "
                                       "a 2-d input addmm rejects a bias of another dtype"),
               (_linear_empty_output, "torch's F.linear on a non-contiguous >2-d input with 0 output "
                                      "features returns an empty float result without checking that "
                                      "input and weight share a dtype (its other paths raise)")],
    "linear_cross_entropy": [(_head_grad_x_cancels,
                              "a weight of identical rows (expanded) makes grad_x = W_0 sum_c G_c exactly 0: "
                              "ours and torch's are both rounding noise below 4 V eps |W| |g| (large for "
                              "|W| ~ 2^100); the loss and the other gradients agree")],
    "huber_loss": [(_huber_mixed_dtypes_backward,
                    "torch's huber_loss forward accepts a target of another dtype (the loss has the "
                    "input's dtype) but its backward then raises 'Found dtype ... but expected ...'; "
                    "ours computes with the target cast to the input's dtype, forward and backward")],
    "conv1d": [_CONV_EMPTY, _CONV_BIAS_DTYPE],
    "conv2d": [_CONV_EMPTY, _CONV_BIAS_DTYPE],
    "conv_transpose2d": [_CONV_EMPTY, _CONV_BIAS_DTYPE],
    "batch_norm": [(_batch_norm_empty_unchecked,
                    "torch's batch_norm returns early for an empty input (x * w[0] + b[0]) before it checks "
                    "the sizes of the running statistics, weight and bias (or that the statistics are given in "
                    "eval mode); ours checks them first and raises"),
                   (_conv_empty_batch, "torch's batch_norm returns early for an empty input "
                                       "(x * w[0] + b[0]) before it checks the parameters' dtypes"),
                   (_inf_differs_only_in_kind, _NORM_INF)],
    "instance_norm": [(_inf_differs_only_in_kind, "torch's instance_norm runs its batch_norm kernel on (1, N C, ...): "
                       + _NORM_INF)],
    "group_norm": [(_inf_differs_only_in_kind, _NORM_INF),
                   (_group_norm_variance_overflow,
                    "a group whose variance overflows the compute dtype: torch's GroupNorm gives NaN where "
                    "ours is +-inf or NaN (both non-finite at the same positions)"),
                   (_gradient_overflows, "a gradient beyond the dtype's range (torch's own float64 result "
                                         "overflows it): torch's GroupNorm backward gives NaN there, ours +-inf")],
    "scaled_dot_product_attention": [(_sdpa_empty_unmatched,
                                      "torch's sdpa returns an empty output for some empty queries without "
                                      "matching their batch, head and feature dims against key and value "
                                      "(e.g. query (0, 0, L, E) or (0, H, L, 0) with key (0, 2, S, E)) yet "
                                      "rejects others ((1, 0) against (1, 2)); ours always matches them and "
                                      "raises naming the shapes")],
    "multi_head_attention_forward": [(_mha_paths_disagree,
                                      "torch's two attention paths disagree on rows without a finite score: with "
                                      "need_weights=True (an explicit softmax) a row of scores all -inf (every key "
                                      "masked, or -inf from an infinite input) gives NaN and a NaN score gives NaN; "
                                      "with need_weights=False (its CPU scaled_dot_product_attention kernel) the "
                                      "first gives 0 and so does a row of NaN scores. Ours gives 0 for an all -inf "
                                      "row and NaN for a NaN one on both paths (registry note), and agrees with "
                                      "torch's other path on this case"),
                                     _NAN_PLACEMENT,
                                     (_mha_promoted_bias,
                                      "torch's projections are F.linear on 3-d inputs, which adds a bias of another "
                                      "dtype with type promotion (see linear); ours refuses it")],
    # Found by the fuzzer (torch 2.13 CPU): with channels_last input (or indices), torch's max_unpool2d kernel runs
    # in parallel over the positions of all channels at once, so when two indices of one channel name the same
    # output position (overlapping pooling windows), the value kept there is whichever thread wrote last: it varies
    # from run to run with more than one thread (torch's contiguous kernel walks each channel in order and keeps the
    # last). Either written value is torch's legitimate result. The gradient is a gather of grad_y at the indices,
    # the same whichever value was kept (torch's backward and ours), so the gradients must agree as usual.
    **{f"max_unpool{nd}d": [(_unpool_duplicate_kept,
                             "indices that repeat within a channel: torch's channels_last max_unpool kernel keeps "
                             "whichever value a thread wrote last (it varies run to run); ours and torch's are each "
                             "one of the values written there, and the gradients agree")] for nd in (1, 2, 3)},
    "adaptive_avg_pool2d": [(_adaptive_pool_empty_channels,
                             "torch's adaptive_avg_pool2d backward rejects an input with an empty non-batch "
                             "dim (its forward accepts it); ours returns the empty gradient")],
}


# the other convolutions share conv2d's quirks (conv / pooling / resampling family)
_CONV_INF = (_inf_differs_only_in_kind, "with an infinite input or weight, torch's 3-d/transposed convolution kernels "
                                       "sum the infinite products in another order than ours: NaN against +-inf, "
                                       "both non-finite at the same positions")
TORCH_QUIRKS.update({name: [_CONV_EMPTY, _CONV_BIAS_DTYPE, _CONV_INF] for name in ("conv3d", "conv_transpose1d",
                                                                                   "conv_transpose3d")})


# For every layer: torch's low-precision CPU kernels that accumulate in bf16/fp16.
ANY_LAYER = [(more_accurate_than_torch,
              "torch's bfloat16/float16 CPU kernel is less accurate than ours here (e.g. LayerNorm's "
              "grad_bias accumulates in low precision): ours matches torch's own float64 result "
              "within the dtype's tolerance")]


def _rnn_params_reshaped(case):
    params = case.value("params")
    shapes = [tuple(x.leaf.shape if x.expand_to is None else x.expand_to)
              for x in case.arguments.get("params", []) if hasattr(x, "leaf")]
    return params is not None and shapes != case.shapes.get("params", [])


_RNN_CRASH = (_rnn_params_reshaped, "torch's RNN kernels (_VF.lstm/gru/rnn_*) do not check the weights' shapes: "
                                    "a weight of the wrong size reads out of bounds and kills the process")

# Draws that would crash torch itself (the process, not an exception): not run, counted as
# ``"skipped: <reason>"``. Each predicate sees only the case.
TORCH_CRASHES: dict[str, list] = {name: [_RNN_CRASH] for name in ("lstm", "gru", "rnn_tanh", "rnn_relu")}


def _group_norm_channels_last_no_input_grad(case):
    x = case.value("input")
    arg = case.arguments.get("input")
    return (isinstance(x, torch.Tensor) and x.dim() == 4 and x.numel() > 0
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            and not arg.leaf.requires_grad)


# Found by the fuzzer (torch 2.13 CPU): F.group_norm(x_channels_last, g, w, b).backward() with x
# not requiring grad (only the weight's and bias's gradients wanted) segfaults in torch's kernel.
TORCH_CRASHES["group_norm"] = [(_group_norm_channels_last_no_input_grad,
                                "torch's CPU group_norm backward segfaults for a channels_last input that does not "
                                "require grad (weight/bias gradients only)")]


def _embedding_bag_no_columns(case):
    w = case.value("weight")
    return isinstance(w, torch.Tensor) and w.dim() == 2 and w.shape[1] == 0


def _embedding_bag_no_bags(case):
    x, off = case.value("input"), case.value("offsets")
    return (isinstance(x, torch.Tensor) and x.dim() == 1 and x.numel() > 0 and isinstance(off, torch.Tensor)
            and off.numel() == 0)


def _embedding_bag_unchecked_index_in_no_bag(case):
    """include_last_offset and an index outside [0, V) at a position at or past the last offset (in no bag)."""
    x, w, off = case.value("input"), case.value("weight"), case.value("offsets")
    if not (case.value("include_last_offset") and isinstance(x, torch.Tensor) and x.dim() == 1
            and isinstance(off, torch.Tensor) and off.numel() and isinstance(w, torch.Tensor) and w.dim() == 2):
        return False
    tail = x[int(off[-1]):] if 0 <= int(off[-1]) <= x.numel() else x
    return bool(((tail < 0) | (tail >= w.shape[0])).any())


# Found by the fuzzer (torch 2.13 CPU): embedding_bag with a (V, 0) weight reads its indices out of bounds
# (garbage index values: an error or a result, by run); with 1-d indices and no offsets at all (no bag) it
# segfaults.
TORCH_CRASHES["embedding_bag"] = [(_embedding_bag_no_columns,
                                   "torch's CPU embedding_bag reads out of bounds for a weight with no columns"),
                                  (_embedding_bag_no_bags,
                                   "torch's CPU embedding_bag segfaults for 1-d indices with empty offsets"),
                                  (_embedding_bag_unchecked_index_in_no_bag,
                                   "torch's CPU embedding_bag does not check an index in no bag (past the last "
                                   "offset with include_last_offset) and reads out of bounds")]


def torch_crash(case):
    """The reason this case would crash torch's reference, or None."""
    for predicate, reason in TORCH_CRASHES.get(case.name, []):
        if predicate(case):
            return reason
    return None


def torch_quirk(case, ours, ref):
    """The reason of the first known torch quirk this case triggers, or None."""
    for predicate, reason in TORCH_QUIRKS.get(case.name, []) + ANY_LAYER:
        try:
            if predicate(case, ours, ref):
                return reason
        except Exception:  # noqa: BLE001 - a predicate that cannot apply does not match
            continue
    return None


def _ctc_torch_reads(tg, tl):
    """The label values torch's CPU ctc_loss reads: 2-d targets at b * stride(0) + k * stride(1); 1-d int32/int64
    targets at offset_b + k * stride(0), offset_b the cumulated lengths (not scaled by the stride); None where a
    read falls outside the tensor's storage. Other dtypes are converted (a contiguous copy) first."""
    if tg.dtype not in (torch.int32, torch.int64):
        tg = tg.long().contiguous()
    tl = torch.as_tensor(tl).reshape(-1).long().clamp(min=0)
    k = [torch.arange(int(n)) for n in tl]
    if tg.dim() == 1:
        offsets = torch.cumsum(tl, 0) - tl
        idx = torch.cat([int(o) + tg.stride(0) * kk for o, kk in zip(offsets, k)])
    else:
        idx = torch.cat([b * tg.stride(0) + tg.stride(1) * kk for b, kk in enumerate(k)])
    size = tg.untyped_storage().nbytes() // tg.element_size() - tg.storage_offset()
    if idx.numel() and int(idx.max()) >= size:
        return None
    flat = torch.empty(0, dtype=tg.dtype).set_(tg.untyped_storage(), tg.storage_offset(), (size,))
    return flat[idx]


def _ctc_target_out_of_range(case):
    """torch's CPU kernel would read a label outside [0, C) or outside the targets' storage (it reads unchecked)."""
    try:
        lp, tg, tl = case.value("log_probs"), case.value("targets"), case.value("target_lengths")
        if len(torch.as_tensor(tl).reshape(-1)) != (lp.shape[1] if lp.dim() == 3 else 1) or tg.dim() not in (1, 2):
            return False  # torch refuses before reading
        vals = _ctc_torch_reads(tg, tl)
        return vals is None or bool(((vals < 0) | (vals >= lp.shape[-1])).any())
    except Exception:  # noqa: BLE001 - a case torch refuses before reading any target
        return False


# Found by the fuzzer (torch 2.13 CPU): ctc_loss with a target label outside [0, C), or 1-d targets of stride 0
# (read past their storage, see below), segfaults in its backward (ours refuses labels outside [0, C)).
TORCH_CRASHES["ctc_loss"] = [(_ctc_target_out_of_range,
                              "torch's CPU ctc_loss reads a target label outside [0, C) or outside the "
                              "targets' storage unchecked")]


def _ctc_strided_concatenated_targets(case, ours=None, ref=None):
    t = case.value("targets")
    return (isinstance(t, torch.Tensor) and t.dim() == 1 and t.numel() > 1 and t.stride(0) != 1
            and t.dtype in (torch.int32, torch.int64))


# Found by the fuzzer (torch 2.13 CPU): with 1-d (concatenated) targets that are not contiguous, torch's CPU
# ctc_loss scales the position within a target by the stride but not the batch's offset, so batches after the
# first read the wrong labels (its result on targets.contiguous() is ours)
TORCH_QUIRKS["ctc_loss"].append((_ctc_strided_concatenated_targets,
                                 "torch's CPU ctc_loss misreads non-contiguous 1-d targets (the batch offsets are "
                                 "not scaled by the stride); ours reads them as targets.contiguous()"))


def _dense(t):
    """Contiguous in some memory format (what torch's CPU batch_norm kernel takes as contiguous)."""
    fmts = {4: [torch.channels_last], 5: [torch.channels_last_3d]}.get(t.dim(), [])
    return t.is_contiguous() or any(t.is_contiguous(memory_format=f) for f in fmts)


def _bn_relu_strided_argument(case, ours, ref):
    """An input that is not dense, or a non-contiguous weight, bias or running statistic (a slice, a transpose,
    a stride-0 expand), where ours agrees with torch's own relu(batch_norm(...)) run in float64 on contiguous
    copies of every argument (same upstream)."""
    from .cases import TArg
    from .compare import _run
    from torch_bp.registry import get

    x = case.value("input")
    if isinstance(ours, Exception) or isinstance(ref, Exception) or not isinstance(x, torch.Tensor):
        return False
    params = [case.value(k) for k in ("weight", "bias", "running_mean", "running_var")]
    if _dense(x) and all(p.is_contiguous() for p in params if isinstance(p, torch.Tensor)):
        return False
    up = copy.copy(case)
    up.arguments = {k: (TArg(case.value(k).detach().double().contiguous().requires_grad_(v.leaf.requires_grad))
                        if isinstance(v, TArg) and v.leaf.is_floating_point() else v)
                    for k, v in case.arguments.items()}
    exact = _run(get(case.name).reference, up, upstream=[u.double() for u in ref[2]])
    return not isinstance(exact, Exception) and _agrees_with_exact(case, ours, exact, x.dtype)


# batch_norm_relu's reference is torch's relu(batch_norm(...)): batch_norm's quirks, and the pair's own (found by
# the fuzzer, torch 2.13 CPU), both from torch's CPU batch_norm taking another code path when an argument is not
# contiguous:
# - forward: with a dense input and contiguous weight, bias and running statistics it evaluates the folded
#   y = x (r w) + (b - mu r w) (as ours does); otherwise its elementwise ((x - mu) r) w + b. The two differ only
#   through non-finite values: for an infinite weight, the folded form gives inf - inf = NaN, the other +-inf.
#   batch_norm alone accepts that (both non-finite, _NORM_INF), but relu maps -inf to 0, so torch's relu
#   (batch_norm(...)) is 0 on a strided draw where it (and ours) is NaN on its contiguous copy;
# - backward: for a non-contiguous weight (a slice), its gradient of x is wrong (off by O(1) against its own result
#   for a contiguous copy of the weight).
# Ours is the same on every layout, and agrees with torch's float64 result on contiguous copies of the arguments.
TORCH_QUIRKS["batch_norm_relu"] = TORCH_QUIRKS["batch_norm"] + [
    (_bn_relu_strided_argument,
     "torch's CPU batch_norm takes another path for a non-dense input or a non-contiguous weight, bias or running "
     "statistic: an unfolded forward ((x - mu) r) w + b, +-inf where the folded x (r w) + (b - mu r w) of its "
     "contiguous path gives NaN for an infinite weight (relu then maps -inf to 0), and a wrong gradient of x for "
     "a strided weight; ours agrees with torch's own float64 result on contiguous copies")]


# sync_batch_norm's reference is torch's batch_norm (one process): its quirks are batch_norm's
TORCH_QUIRKS["sync_batch_norm"] = TORCH_QUIRKS["batch_norm"]
