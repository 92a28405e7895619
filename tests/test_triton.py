"""The Triton kernels (torch_bp/kernels/triton/) against the Python rules they implement.

Without a GPU, Triton's interpreter (TRITON_INTERPRET=1, set here before the kernels are
imported) runs every kernel on CPU tensors; with one, the same tests run the compiled kernels
on CUDA tensors, and the tests marked ``cuda`` also run the layer harness through the ops
(``torch.ops.torch_bp.*`` dispatching to the Triton kernels) and ``opcheck``.
Shapes are small and ragged (row lengths and sequence lengths that are not multiples of the
block sizes, so masking is exercised), in float32 and bfloat16; tolerances are the harness's
dtype table. Skipped, with the reason, where triton is not installed.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"

if not CUDA:  # conftest.py sets it first; here too for a run of this file alone
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="triton is not installed (pip install 'torch_bp[triton]')")
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA device and TRITON_INTERPRET is not 1: the kernels cannot run", allow_module_level=True)

from harness import assert_close

import torch_bp
import torch_bp.functional as BF
from torch_bp import backend
from torch_bp.kernels import triton as tk
from torch_bp.kernels.triton import activation as ka
from torch_bp.kernels.triton import attention as kattn
from torch_bp.kernels.triton import dropout as kd
from torch_bp.kernels.triton import linear as kl
from torch_bp.kernels.triton import loss as kloss
from torch_bp.kernels.triton import normalization as kn
from torch_bp.ops import _util
from torch_bp.ops.activation import LogSoftmaxFunction, SoftmaxFunction
from torch_bp.ops.loss import CrossEntropyFunction
from torch_bp.ops.normalization import LayerNormFunction, RMSNormFunction

DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture(autouse=True)
def python_rules():
    """The reference is the Python rule: select the Python backend for each test."""
    before = backend.backend_info().requested
    torch_bp.set_backend("python")
    yield
    torch_bp.set_backend(before)


def rand(*shape, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype).to(DEVICE)


def leaf(t):
    return t.detach().clone().requires_grad_(True)


def reference(fn, inputs, upstream):
    """The Python rule's outputs and input gradients (autograd over the torch_bp functional)."""
    xs = [None if t is None else leaf(t) for t in inputs]
    out = fn(*xs)
    out.backward(upstream)
    return out.detach(), [None if x is None else x.grad for x in xs]


def test_every_op_has_a_kernel_and_a_schema():
    """Every launcher is a torch_bp op named in a rule's compiled declaration (the schema in csrc/ops.cpp)."""
    ops = {op for names in backend.compiled_rules().values() for op in names}
    kernels = tk.kernels()
    assert set(kernels) <= ops, set(kernels) - ops
    for name in ("layer_norm_fwd", "layer_norm_bwd", "rms_norm_fwd", "rms_norm_bwd", "bias_act_fwd", "bias_act_bwd",
                 "softmax_fwd", "softmax_bwd", "log_softmax_fwd", "log_softmax_bwd", "cross_entropy_fwd",
                 "cross_entropy_bwd", "relu_fwd", "relu_mask", "mask_bwd", "dropout_fwd", "pack_mask",
                 "attention_fwd", "attention_bwd"):
        assert name in kernels, name
        assert kernels[name].__module__.startswith("torch_bp.kernels.triton.")


def test_every_kernel_names_its_rule():
    """Every @triton.jit kernel's docstring names the Python rule (a Function or a *_grad helper)."""
    import inspect
    for mod in (ka, kattn, kd, kl, kloss, kn):
        for name, obj in vars(mod).items():
            if name.startswith("_") and name.endswith("_kernel"):
                doc = inspect.getdoc(getattr(obj, "fn", obj)) or ""
                assert "Function" in doc or "_grad" in doc, f"{mod.__name__}.{name}: docstring names no rule"


# --- normalization ---
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("d,affine", [(37, True), (16, False), (130, True)], ids=["d37", "d16-plain", "d130"])
def test_layer_norm(dtype, d, affine):
    x = rand(3, 5, d, dtype=dtype, scale=2.0) + 3.0
    w = rand(d, dtype=dtype, seed=1) if affine else None
    b = rand(d, dtype=dtype, seed=2) if affine else None
    gy = rand(3, 5, d, dtype=dtype, seed=3)
    y, mu, r = kn.layer_norm_fwd(x, w, b, d, 1e-5)
    with torch.no_grad():
        _, mu_ref, r_ref = LayerNormFunction.forward(x, w, b, d, 1e-5)
    y_ref, grads = reference(lambda x, w, b: BF.layer_norm(x, (d,), w, b), (x, w, b), gy)
    assert_close(y, y_ref, dtype, what="y")
    assert_close(mu, mu_ref, torch.float32, what="mean")
    assert_close(r, r_ref, torch.float32, what="rstd")
    gx, gw, gb = kn.layer_norm_bwd(gy, x, w, mu, r, d, [True, affine, affine])
    for got, want, what in zip((gx, gw, gb), grads, ("grad_x", "grad_w", "grad_b")):
        assert_close(got, want, dtype, cond=4.0 if what != "grad_x" else 1.0, what=what)


def test_layer_norm_constant_row_and_overflow():
    x = torch.tensor([[7.0] * 5, [3e19, -3e19, 0.0, 1.0, 2.0]], device=DEVICE)
    y, _, r = kn.layer_norm_fwd(x, None, None, 5, 1e-12)
    assert torch.equal(y[0], torch.zeros(5, device=DEVICE))       # centred to exactly 0
    assert r[1].isnan().all() and y[1].isnan().all()               # NaN, not a silent y = b


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("d,affine", [(37, True), (16, False)], ids=["d37", "d16-plain"])
def test_rms_norm(dtype, d, affine):
    x = rand(4, 3, d, dtype=dtype)
    w = rand(d, dtype=dtype, seed=1) if affine else None
    gy = rand(4, 3, d, dtype=dtype, seed=3)
    y, r = kn.rms_norm_fwd(x, w, d, 1e-6)
    with torch.no_grad():
        _, r_ref = RMSNormFunction.forward(x, w, d, 1e-6)
    y_ref, grads = reference(lambda x, w: BF.rms_norm(x, (d,), w, 1e-6), (x, w), gy)
    assert_close(y, y_ref, dtype, what="y")
    assert_close(r, r_ref, torch.float32, what="rstd")
    gx, gw = kn.rms_norm_bwd(gy, x, w, r, d, [True, affine])
    assert_close(gx, grads[0], dtype, what="grad_x")
    assert_close(gw, grads[1], dtype, cond=4.0, what="grad_w")


# --- bias + activation ---
ACTS = [("relu", "none"), ("gelu", "none"), ("gelu", "tanh"), ("silu", "none")]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", ACTS, ids=lambda a: "-".join(a))
def test_bias_act(dtype, act):
    activation, approximate = act
    h = rand(3, 41, 133, dtype=dtype, scale=2.0)        # 123 rows x 133 columns: ragged tiles
    b = rand(133, dtype=dtype, seed=1)
    gy = rand(3, 41, 133, dtype=dtype, seed=2)
    from torch_bp.ops.linear import BiasActivationFunction
    y, mask = kl.bias_act_fwd(h, b, activation, approximate)
    y_ref, (gh_ref, gb_ref) = reference(
        lambda h, b: BiasActivationFunction.apply(h, b, activation, approximate)[0], (h, b), gy)
    assert_close(y, y_ref, dtype, what="y")
    if activation == "relu":
        assert torch.equal(mask, _util.pack_bits(~(y <= 0)))
    else:
        assert mask.numel() == 0
    gh, gb = kl.bias_act_bwd(gy, mask if activation == "relu" else h, b, activation, approximate, True)
    assert_close(gh, gh_ref, dtype, what="grad_h")
    assert_close(gb, gb_ref, dtype, cond=4.0, what="grad_b")
    gh2, gb2 = kl.bias_act_bwd(gy, mask if activation == "relu" else h, b, activation, approximate, False)
    assert gb2 is None and torch.equal(gh2, gh)


@pytest.mark.parametrize("act", ACTS[1:], ids=lambda a: "-".join(a))
def test_gelu_silu(act):
    activation, approximate = act
    x = rand(1000, scale=3.0)
    gy = rand(1000, seed=1)
    if activation == "gelu":
        y, gx = ka.gelu_fwd(x, approximate), ka.gelu_bwd(gy, x, approximate)
        y_ref, (gx_ref,) = reference(lambda x: BF.gelu(x, approximate=approximate), (x,), gy)
    else:
        y, gx = ka.silu_fwd(x), ka.silu_bwd(gy, x)
        y_ref, (gx_ref,) = reference(BF.silu, (x,), gy)
    assert_close(y, y_ref, torch.float32, what="y")
    assert_close(gx, gx_ref, torch.float32, what="grad_x")


# --- relu, dropout: bit masks ---
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_relu_and_mask_bwd(dtype):
    x = rand(7, 13, dtype=dtype)                      # 91 elements: a partial last byte
    x[0, 0], x[0, 1] = float("nan"), 0.0
    y = ka.relu_fwd(x)
    assert torch.equal(y.isnan(), x.isnan()) and torch.equal(y.nan_to_num(), torch.relu(x).nan_to_num())
    bits = ka.relu_mask(y)
    assert bits.dtype == torch.uint8 and bits.numel() == 12
    assert torch.equal(bits, _util.pack_bits(~(y <= 0)))
    gy = rand(7, 13, dtype=dtype, seed=1)
    gy[1, 1] = float("nan")
    want = gy.masked_fill(y <= 0, 0)                  # ReLUFunction.backward
    assert torch.equal(ka.mask_bwd(gy, bits, None).nan_to_num(), want.nan_to_num())


def assert_rounded_equal(got, want):
    """Equal, bit for bit; in the interpreter, bfloat16 within the harness tolerance: Triton's
    interpreter (3.9) casts float32 to bfloat16 by truncation, the GPU (and torch) round to nearest."""
    if got.dtype == torch.bfloat16 and not CUDA:
        assert_close(got, want, got.dtype)
    else:
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dropout(dtype):
    x = rand(5, 21, dtype=dtype)
    g = torch.Generator().manual_seed(3)
    m = (torch.rand(5, 21, generator=g) > 0.3).to(DEVICE)
    s = torch.ones((), dtype=dtype, device=DEVICE).div_(0.7)
    assert_rounded_equal(kd.dropout_fwd(x, m, s), x * (m * s))        # DropoutFunction.forward
    bits = kd.pack_mask(m)
    assert torch.equal(bits, _util.pack_bits(m))
    gy = rand(5, 21, dtype=dtype, seed=1)
    assert_rounded_equal(ka.mask_bwd(gy, bits, s), gy * (m * s))      # DropoutFunction.backward


# --- softmax / log-softmax ---
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("d", [37, 5000], ids=["d37", "d5000"])
def test_softmax(dtype, log, d):
    rows = 6 if d < 100 else 2
    x = rand(rows, d, dtype=dtype, scale=3.0)
    gy = rand(rows, d, dtype=dtype, seed=1)
    fwd, bwd, fn = ((ka.log_softmax_fwd, ka.log_softmax_bwd, LogSoftmaxFunction) if log else
                    (ka.softmax_fwd, ka.softmax_bwd, SoftmaxFunction))
    y = fwd(x)
    y_ref, (gx_ref,) = reference(lambda x: fn.apply(x, -1), (x,), gy)
    assert_close(y, y_ref, dtype, what="y")
    assert_close(bwd(gy, y_ref), gx_ref, dtype, what="grad_x")


# --- cross-entropy ---
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted,smoothing", [(False, 0.0), (True, 0.1)], ids=["plain", "weighted-smoothed"])
def test_cross_entropy(dtype, reduction, weighted, smoothing):
    n, c = 9, 37
    x = rand(n, c, dtype=dtype, scale=3.0)
    t = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    t[2] = -100                                                            # an ignored row
    w = (rand(c, seed=2).abs() + 0.5).to(dtype) if weighted else None
    gy = rand(*((n,) if reduction == "none" else ()), seed=3).to(dtype)
    loss, m, s = kloss.cross_entropy_fwd(x, t, w, reduction, -100, smoothing)
    with torch.no_grad():
        _, m_ref, s_ref = CrossEntropyFunction.forward(x, t, w, reduction, -100, smoothing)
    l_ref, (gx_ref,) = reference(
        lambda x: BF.cross_entropy(x, t, w, reduction=reduction, label_smoothing=smoothing), (x,), gy)
    assert_close(loss, l_ref, dtype, what="loss")
    assert_close(m, m_ref, torch.float32, what="m")
    assert_close(s, s_ref, torch.float32, what="s")
    gx = kloss.cross_entropy_bwd(gy, x, t, w, m, s, reduction, -100, smoothing)
    assert_close(gx, gx_ref, dtype, what="grad_x")


def test_cross_entropy_large_vocabulary_and_bad_target():
    x = rand(3, 4500, scale=4.0)                       # more than one block of columns per row
    t = torch.tensor([0, 4499, 17], device=DEVICE)
    loss, m, s = kloss.cross_entropy_fwd(x, t, None, "sum", -100, 0.0)
    l_ref, (gx_ref,) = reference(lambda x: BF.cross_entropy(x, t, reduction="sum"), (x,), torch.tensor(1.0))
    assert_close(loss, l_ref, torch.float32, what="loss")
    assert_close(kloss.cross_entropy_bwd(torch.ones((), device=DEVICE), x, t, None, m, s, "sum", -100, 0.0),
                 gx_ref, torch.float32, what="grad_x")
    with pytest.raises(IndexError, match="out of bounds"):
        kloss.cross_entropy_fwd(x, torch.tensor([0, 4500, 1], device=DEVICE), None, "sum", -100, 0.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction,smoothing,bias", [("mean", 0.0, True), ("sum", 0.1, False)],
                         ids=["mean-bias", "sum-smoothed"])
def test_linear_cross_entropy_fused(dtype, reduction, smoothing, bias):
    """The fused head with the Triton chunk step against LinearCrossEntropyFunction (Python rule)."""
    n, vocab, d = 37, 300, 24                              # 3 chunks of 16 rows, the last one ragged
    x, w = rand(n, d, dtype=dtype), rand(vocab, d, dtype=dtype, seed=1, scale=d ** -0.5)
    b = rand(vocab, dtype=dtype, seed=2) if bias else None
    t = torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    t[5] = -100
    l_ref, grads = reference(lambda x, w, b: BF.linear_cross_entropy(x, w, t, linear_bias=b, reduction=reduction,
                                                                     label_smoothing=smoothing, chunk_size=16),
                             (x, w, b), torch.tensor(1.0, device=DEVICE).to(dtype))
    loss, gx, gw, gb = kloss.linear_cross_entropy_fused(x, w, b, t, reduction, -100, smoothing, chunk_size=16)
    assert_close(loss, l_ref, dtype, what="loss")
    for got, want, what in zip((gx, gw, gb), grads, ("grad_x", "grad_W", "grad_b")):
        assert_close(got, want, dtype, cond=2.0 if what != "grad_x" else 1.0, what=what)


# --- attention ---
def _sdpa_ref(q, k, v, causal, scale, key_keep=None):
    if key_keep is None:
        return lambda q, k, v: BF.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    mask = key_keep.reshape(q.shape[0], 1, 1, k.shape[-2])                        # (B, 1, 1, S)
    if causal:
        mask = mask & torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=DEVICE).tril()
    return lambda q, k, v: BF.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal,padded", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["full", "causal", "key-padding", "causal-key-padding"])
def test_attention(dtype, causal, padded):
    B, H, L, S, E = 2, 2, 37, 29 if not causal else 37, 24     # ragged: 37 queries, 29 keys, E = 24
    q, k, v = rand(B, H, L, E, dtype=dtype), rand(B, H, S, E, dtype=dtype, seed=1), rand(B, H, S, E, dtype=dtype,
                                                                                             seed=2)
    go = rand(B, H, L, E, dtype=dtype, seed=3)
    scale = 1 / math.sqrt(E)
    key_keep = None
    if padded:
        lengths = torch.tensor([S, S - 11], device=DEVICE)
        key_keep = (torch.arange(S, device=DEVICE) < lengths[:, None])            # (B, S)
    o_ref, grads = reference(_sdpa_ref(q, k, v, causal, scale, key_keep), (q, k, v), go)
    kk = None if key_keep is None else key_keep[:, None, :].expand(B, H, S).reshape(B * H, S)
    o, lse = kattn.attention_forward(q, k, v, None, causal, scale, 1.0, key_keep=kk)
    cond = 2.0 if dtype == torch.bfloat16 else 1.0     # bfloat16: p and ds enter the products rounded
    assert_close(o, o_ref, dtype, cond, what="o")
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    if causal:
        s = s.masked_fill(torch.ones(L, S, dtype=torch.bool, device=DEVICE).triu(1), float("-inf"))
    if padded:
        s = s.masked_fill(~key_keep[:, None, None, :], float("-inf"))
    assert_close(lse, torch.logsumexp(s, -1).float(), torch.float32, cond=4.0, what="lse")
    dq, dk, dv = kattn.attention_backward(go, q, k, v, o, lse, None, causal, scale, 1.0, key_keep=kk)
    for got, want, what in zip((dq, dk, dv), grads, ("grad_q", "grad_k", "grad_v")):
        assert_close(got, want, dtype, cond * 2, what=what)


def test_attention_dropout_and_fully_masked_row():
    """The keep mask as the compiled op receives it (..., L, S), against the docstring's dense
    formula in float64; a row whose every key is padded gives o = 0, lse = -inf, zero gradients."""
    BH, L, S, E = 3, 19, 21, 16
    q, k, v, go = rand(BH, L, E), rand(BH, S, E, seed=1), rand(BH, S, E, seed=2), rand(BH, L, E, seed=3)
    keep = (torch.rand(BH, L, S, generator=torch.Generator().manual_seed(4)) > 0.25).to(DEVICE)
    ks, scale = 1 / 0.75, 0.3
    o, lse = kattn.attention_fwd(q, k, v, keep, False, scale, ks)
    qd, kd_, vd = (leaf(t.double()) for t in (q, k, v))
    p = torch.softmax(qd @ kd_.transpose(-1, -2) * scale, -1)
    o_ref = (p * keep * ks) @ vd
    o_ref.backward(go.double())
    assert_close(o, o_ref.float(), torch.float32, what="o")
    grads = kattn.attention_bwd(go, q, k, v, o, lse, keep, False, scale, ks)
    for got, want, what in zip(grads, (qd.grad, kd_.grad, vd.grad), ("grad_q", "grad_k", "grad_v")):
        assert_close(got, want.float(), torch.float32, what=what)
    kk = torch.ones(BH, S, dtype=torch.bool, device=DEVICE)
    kk[1] = False
    o, lse = kattn.attention_forward(q, k, v, None, False, scale, 1.0, key_keep=kk)
    assert torch.equal(o[1], torch.zeros_like(o[1])) and (lse[1] == float("-inf")).all()
    dq, dk, dv = kattn.attention_backward(go, q, k, v, o, lse, None, False, scale, 1.0, key_keep=kk)
    assert not dq[1].any() and not dk[1].any() and not dv[1].any()


# --- on a GPU: the Functions through the ops (Triton kernels) and opcheck (marked cuda) ---
from samples import get_samples

from torch_bp.registry import LAYERS

KERNEL_OPS = set(tk.kernels())
TRITON_ROWS = [r.name for r in LAYERS
               if any(op in KERNEL_OPS for f in r.functions for op in f.compiled)]


def _cpp_on_cuda():
    """The compiled backend with the CUDA kernels registered (skips, with the reason, where not)."""
    try:
        torch_bp.set_backend("cpp")
    except RuntimeError as e:
        pytest.skip(str(e))
    assert backend.CUDA_OPS == frozenset(KERNEL_OPS), str(backend.backend_info())


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", TRITON_ROWS)
def test_cuda_kernels_match_python_rule(name, dtype):
    """Each row with a Triton kernel, on CUDA: the Functions through the ops give the Python rule's
    outputs and gradients, and the row's Triton ops really ran."""
    from test_backend import _run_backend
    row = torch_bp.registry.get(name)
    _cpp_on_cuda()
    want = {op for f in row.functions for op in f.compiled} & KERNEL_OPS
    called = set()
    for s in get_samples(name, dtype, device="cuda"):
        outs, grads, _, _ = _run_backend("python", row, s)
        k_outs, k_grads, _, calls = _run_backend("cpp", row, s)
        called |= {f._schema.name.split("::")[1] for f, _, _ in calls}
        for o, c in zip(outs, k_outs):
            assert_close(c, o, dtype, s.cond, f"{name}[{s.desc}] output")
        for i, (g, c) in enumerate(zip(grads, k_grads)):
            assert_close(c, g, dtype, s.cond, f"{name}[{s.desc}] grad of input {i}")
    assert want <= called, f"Triton ops never ran: {sorted(want - called)}"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", [r.name for r in LAYERS])
def test_cuda_matches_torch(name, dtype):
    """The layer harness on CUDA (every row; the Python rules, and the Triton kernels where the
    compiled backend runs them): outputs and gradients equal torch's on CUDA."""
    from harness import clone_args, run
    row = torch_bp.registry.get(name)
    if os.environ.get("TORCH_BP_BACKEND", "auto") != "python":
        torch_bp.set_backend("auto")
    for s in get_samples(name, dtype, device="cuda"):
        ours_a, ours_k = clone_args(s)
        ref_a, ref_k = clone_args(s)
        outs, grads, upstream = run(row.functional, ours_a, ours_k)
        ref_outs, ref_grads, _ = run(row.reference, ref_a, ref_k, upstream=upstream)
        for o, r in zip(outs, ref_outs):
            assert_close(o, r, dtype, s.cond, f"{name}[{s.desc}] output")
        for i, (g, r) in enumerate(zip(grads, ref_grads)):
            assert_close(g, r, dtype, s.cond, f"{name}[{s.desc}] grad of input {i}")


@pytest.mark.cuda
def test_cuda_opcheck():
    """torch.library.opcheck on every Triton-backed op, with CUDA arguments the Functions pass."""
    from test_backend import _run_backend
    _cpp_on_cuda()
    calls = {}
    for name in TRITON_ROWS:
        row = torch_bp.registry.get(name)
        for dtype in DTYPES:
            for s in get_samples(name, dtype, device="cuda")[:3]:
                for f, a, k in _run_backend("cpp", row, s)[3]:
                    if any(isinstance(t, torch.Tensor) and t.is_cuda for t in a):
                        calls.setdefault(f._schema.name, []).append((f, a, k))
    reached = {n.split("::")[1] for n in calls}
    assert reached == KERNEL_OPS, f"ops not reached by any CUDA sample: {sorted(KERNEL_OPS - reached)}"
    for recorded in calls.values():
        for f, a, k in recorded[:2]:
            torch.library.opcheck(f, a, k)


@pytest.mark.slow
@pytest.mark.skipif(CUDA, reason="on a GPU every kernel test above compiles its kernels for real")
def test_kernels_compile_for_a_gpu_without_one():
    """Triton's compiler (and ptxas) build the kernels for sm_90 on this machine, GPU or not: what
    the interpreter cannot check (types, constexpr branches, layouts). A quick subset here;
    ``python tests/triton_aot.py`` compiles every configuration."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, str(root / "tests" / "triton_aot.py"), "--quick"], check=False, env=env,
                       cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_op_schemas_defined_from_csrc_match_the_compiled_library(tmp_path):
    """Where the C++ library cannot be built (a GPU machine without a compiler or ninja), the CUDA
    kernels' op schemas are defined from csrc/ops.cpp's text: they must equal the library's."""
    import json
    import subprocess
    import sys
    if not backend._ext._loaded:
        pytest.skip("the compiled library is not loaded here: nothing to compare with")
    script = tmp_path / "schemas.py"
    script.write_text(
        "import json, sys, torch\n"
        "from torch_bp import backend as b\n"
        "if sys.argv[1] == 'define':\n"
        "    assert b._define_schemas()\n"
        "    b._register_fakes()\n"
        "ops = sorted({op for v in b.compiled_rules().values() for op in v})\n"
        "print(json.dumps({op: str(getattr(torch.ops.torch_bp, op).default._schema) for op in ops}))\n")
    root = str(Path(__file__).resolve().parent.parent)
    out = {}
    for mode, env in (("define", "python"), ("library", "cpp")):
        r = subprocess.run([sys.executable, str(script), mode], check=False, capture_output=True, text=True,
                           timeout=300, cwd=root, env={**os.environ, "TORCH_BP_BACKEND": env, "PYTHONPATH": root})
        assert r.returncode == 0, r.stderr[-3000:]
        out[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["define"] == out["library"]
    assert len(out["define"]) == len({op for v in backend.compiled_rules().values() for op in v})


def test_benchmark_plumbing(tmp_path):
    """experiments/benchmarks/cuda.py end to end on tiny shapes on the CPU (measures nothing)."""
    import json

    from experiments.benchmarks import cuda as bench
    out = tmp_path / "bench.json"
    rows = bench.main(["--device", "cpu", "--quick", "--no-compile", "--reps", "1", "--only", "layer_norm",
                       "attention_causal", "--out", str(out)])
    data = json.loads(out.read_text())
    assert [r["case"] for r in data["rows"]] == ["layer_norm", "attention_causal"] == [r["case"] for r in rows]
    assert all(r["ours_ms"] > 0 and r["eager_ms"] > 0 for r in rows)


def test_torch_bp_works_without_triton():
    """triton is optional: with it unimportable, torch_bp imports, runs a rule and says why there
    are no CUDA kernels; without a GPU, ``import torch_bp`` does not import triton at all."""
    import subprocess
    import sys
    root = str(Path(__file__).resolve().parent.parent)
    blocked = ("import sys\n"
               "sys.modules['triton'] = None\n"
               "import torch, torch_bp, torch_bp.functional as F\n"
               "x = torch.randn(3, 8, requires_grad=True, device='cuda' if torch.cuda.is_available() else 'cpu')\n"
               "F.layer_norm(x, (8,)).sum().backward()\n"
               "print(torch_bp.backend_info().cuda)\n")
    lazy = "import sys, torch_bp\nprint('triton' in sys.modules)\n"
    out = []
    for code in (blocked, lazy):
        r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300,
                           cwd=root, env={**os.environ, "PYTHONPATH": root})
        assert r.returncode == 0, r.stderr[-3000:]
        out.append(r.stdout.strip().splitlines()[-1])
    assert out[0].startswith("no CUDA kernels"), out[0]
    if CUDA:
        assert "triton is not installed" in out[0], out[0]
    else:
        assert out[1] == "False", "import torch_bp imported triton on a machine without a GPU"
