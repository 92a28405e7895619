"""Saved-bytes regression gate (issue 8): each benchmark model, converted with torch_bp.convert,
must keep at most GATE x the bytes torch eager saves for backward; and every registry row, at the
benchmark suite's layer sizes made small (experiments/benchmarks/layers.py, ``Dims(small=True)``),
saves at most torch's bytes, on each backend (issue 21), but for the rows in ``LAYER_OVERHEAD``.

Bytes are counted as in the benchmark suite (experiments/benchmarks/measure.py: storages packed by
saved_tensors_hooks, deduplicated, parameters/buffers/inputs excluded). They depend only on shapes,
so the ratio is deterministic; the models run at the suite's sizes (forward only, a few seconds).
Times are never asserted here.

A gate is the issue's target where we meet it; where we miss it, the gate is the ratio measured
when the gate was written (rounded up), so memory cannot silently regress, and the comment names
the target as missed. Never loosen a met target.
"""
from __future__ import annotations

import copy
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

import torch_bp
from experiments.benchmarks.measure import saved_bytes
from harness import TOL
from experiments.benchmarks.models import MISSING, MODELS
from experiments.benchmarks.layers import SIZES, Dims
from torch_bp.registry import LAYERS

GATES = {
    # target 0.6: met (measured 0.500: each linear after a GELU saves the GELU input, ops/_lean.py)
    "mlp_gelu": 0.6,
    # cnn_stack: see CNN_GATES (per backend)
    # target 0.55: met (measured 0.456: dropout masks as bits, layer norm keeps its input and row
    # statistics and the linear after it recomputes its output from them, attention its row
    # log-sum-exp)
    "transformer_block": 0.55,
    # no target in the issue; measured 0.459 at these sizes (0.473 at the suite's 32 x 64 steps)
    "lstm_2layer": 0.46,
    # issue 23's target 0.55 for a second pre-LN block written independently of the suite's
    # (nn.MultiheadAttention with need_weights=False, GELU MLP, dropout): met (measured 0.318)
    "preln_block": 0.55,
    # issue 20's target 0.6 (as the Transformer block's) for transformers' GPT-2 block and Llama decoder
    # layer: met (measured 0.260 and 0.522: the norms' outputs, GELU/SiLU outputs and SwiGLU's product
    # recomputed from what their own rules keep, the attention output kept once)
    "gpt2_block": 0.6,
    "llama_block": 0.6,
}


# target 0.7, met on both backends: the max pool keeps a uint8 window argmax and not its input; a
# ReLU keeps a mask, not its output; a conv after BN -> ReLU saves the BN input and recomputes its
# own input (ops/_lean.py). Measured 0.509 compiled (1-bit ReLU masks), 0.603 Python (bool masks).
CNN_GATES = {"cpp": 0.7, "python": 0.7}


def _build(name, **kw):
    built = MODELS[name](**kw)
    if built is None:
        pytest.skip(f"{name} needs {MISSING[name]}, which is not installed")
    return built


def _ratio(name):
    torch.manual_seed(0)
    # the LSTM's time steps run in Python: a shorter sequence keeps the test fast; its ratio is
    # per step (both sides save the same tensors each step), so the sequence length does not move it
    ref, inputs = _build(name, batch=8, steps=16) if name == "lstm_2layer" else _build(name)
    ours = torch_bp.convert(ref)
    ref.train(), ours.train()
    excl = list(inputs) + list(ref.parameters()) + list(ours.parameters()) + list(ref.buffers()) \
        + list(ours.buffers())
    theirs = saved_bytes(lambda: ref(*inputs), excl)
    mine = saved_bytes(lambda: ours(*inputs), excl)
    assert theirs > 0
    return mine / theirs


@pytest.mark.parametrize("name", sorted(GATES))
def test_saved_bytes_under_gate(name):
    ratio = _ratio(name)
    assert ratio <= GATES[name], f"{name}: torch_bp saves {ratio:.3f} x torch eager, gate {GATES[name]}"


@pytest.mark.parametrize("backend", sorted(CNN_GATES))
def test_cnn_saved_bytes_under_gate(backend):
    before = torch_bp.backend_info().requested
    try:
        try:
            torch_bp.set_backend(backend)
        except RuntimeError as e:
            pytest.skip(str(e))
        ratio = _ratio("cnn_stack")
    finally:
        torch_bp.set_backend(before)
    gate = CNN_GATES[backend]
    assert ratio <= gate, f"cnn_stack ({backend}): torch_bp saves {ratio:.3f} x torch eager, gate {gate}"


# --- every layer: at most torch's bytes ---
# Rows that save more than torch, by how many bytes at most, and why. Never a fraction of the input: a
# constant the row cannot avoid.
LAYER_OVERHEAD = {
    # torch's upsampling backward keeps the input sizes as integers; ours keeps a one-element stand-in
    # expanded to x's shape (4 bytes in float32), as a shape on ctx breaks torch.compile's dynamic shapes
    # (ops/pooling.py's NOTE)
    "interpolate": 4,
}


def _tensors(args, kwargs):
    from experiments.benchmarks.__main__ import _tensors as tensors
    return tensors(args, kwargs)


def test_every_layer_has_a_benchmark_size():
    assert sorted(set(row.name for row in LAYERS) - set(SIZES)) == []


@pytest.mark.parametrize("name", [row.name for row in LAYERS])
def test_layer_saves_at_most_torchs_bytes(name):
    row = next(r for r in LAYERS if r.name == name)
    torch.manual_seed(0)
    args, kwargs = SIZES[name](Dims(small=True))
    excl = _tensors(args, kwargs)  # inputs and parameters are alive anyway (as in the suite)
    theirs = saved_bytes(lambda: row.reference(*args, **kwargs), excl)
    before = torch_bp.backend_info().requested
    try:
        for backend in ("python", "cpp"):
            try:
                torch_bp.set_backend(backend)
            except RuntimeError:  # the compiled backend did not build here
                continue
            torch.manual_seed(0)
            mine = saved_bytes(lambda: row.functional(*args, **kwargs), excl)
            assert mine <= theirs + LAYER_OVERHEAD.get(name, 0), (
                f"{name} ({backend}): torch_bp saves {mine} bytes, torch {theirs}")
    finally:
        torch_bp.set_backend(before)


# --- lean rules (torch_bp/ops/_lean.py): less saved, the same gradients ---
def _mlp():
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 8),
                              torch.nn.GELU(approximate="tanh"), torch.nn.Linear(8, 3)).double()
    return ref, torch_bp.convert(ref), torch.randn(5, 6, dtype=torch.double, requires_grad=True)


def test_linear_after_gelu_saves_one_tensor_per_layer_with_equal_gradients():
    ref, ours, x = _mlp()
    excl = [x] + list(ref.parameters()) + list(ours.parameters())
    assert saved_bytes(lambda: ours(x), excl) * 2 == saved_bytes(lambda: ref(x), excl)
    grads = []
    for m in (ref, ours):
        out = m(x).pow(2).sum()
        grads.append(torch.autograd.grad(out, [x, *m.parameters()], create_graph=True))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    # double backward goes through the recomputed activation
    dd = [torch.autograd.grad(sum(g.sum() for g in gs[1:]), x)[0] for gs in grads]
    torch.testing.assert_close(dd[0], dd[1], rtol=0, atol=1e-14)
    assert torch.autograd.gradgradcheck(ours, (x,))


def test_lean_recipe_not_used_after_in_place_change_nor_under_vmap():
    from torch_bp.ops import _lean
    h = torch.randn(4, 6, requires_grad=True)
    y = torch_bp.functional.gelu(h * 1)
    assert _lean.recipe(y) is not None
    with torch.no_grad():
        y.mul_(2)  # the linear must see (and save) the changed y, not gelu(h)
    assert _lean.recipe(y) is None
    w = torch.randn(3, 6, requires_grad=True)
    torch_bp.functional.linear(y, w).sum().backward()
    torch.testing.assert_close(w.grad, y.detach().sum(0).expand(3, 6))
    # under torch.func transforms the rules save y as usual
    seen = []
    torch.func.vmap(lambda r: seen.append(_lean.active()) or r)(torch.zeros(2))
    assert seen == [False]


@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_dropout_saves_one_bit_per_element(backend):
    """Both backends keep dropout's mask as bits (pack_bits / csrc pack_mask), with torch's gradient."""
    from torch_bp.ops._util import pack_bits, unpack_bits

    if backend == "cpp" and torch_bp.backend_info().backend != "cpp":
        pytest.skip("compiled backend unavailable")
    for shape in [(3, 5, 7), (1,), (64, 100)]:  # numel not a multiple of 8, and one that is
        m = torch.rand(shape) > 0.3
        assert torch.equal(unpack_bits(pack_bits(m), m.shape), m)
    torch_bp.set_backend(backend)
    try:
        x = torch.randn(37, 101, requires_grad=True)
        n_saved = saved_bytes(lambda: torch_bp.functional.dropout(x, 0.5), [x])
        assert n_saved <= -(-x.numel() // 8) + 8  # the bits and the 0-d scale
        torch.manual_seed(0)
        y = torch_bp.functional.dropout(x, 0.5)
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
        torch.manual_seed(0)
        y_ref = torch.nn.functional.dropout(x, 0.5)
        (gx_ref,) = torch.autograd.grad(y_ref, x, torch.ones_like(y_ref))
        assert torch.equal(y, y_ref) and torch.equal(gx, gx_ref)
    finally:
        torch_bp.set_backend("auto")


# --- CNN: BN -> ReLU -> conv saves the BN input once; max pool saves a uint8 argmax ---
def _bn_relu_conv(dtype=torch.double, fuse=False):
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4),
                              torch.nn.ReLU(), torch.nn.Conv2d(4, 5, 3, padding=1), torch.nn.BatchNorm2d(5),
                              torch.nn.Conv2d(5, 4, 1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)).to(dtype)
    return ref, torch_bp.convert(ref, fuse=fuse), torch.randn(6, 3, 8, 8, dtype=dtype, requires_grad=True)


def test_conv_after_batch_norm_relu_saves_the_batch_norm_input_with_equal_gradients(cpp):
    ref, ours, x = _bn_relu_conv()
    excl = [x] + list(ref.parameters()) + list(ours.parameters()) + list(ref.buffers()) + list(ours.buffers())
    n = 6 * 8 * 8
    # the two BN inputs (float64; the convs after them save these too), two ReLU bit masks, the BN
    # statistics (2 C values each) and the pool's uint8 argmax (one per output; its shape stand-in is a
    # view of it); torch would save 7 float64 activations and int64 indices
    want = n * 4 * 8 + n * 5 * 8 + 2 * (n * 4 // 8) + 8 * 2 * (4 + 5) + n * 4 // 4
    assert saved_bytes(lambda: ours(x), excl) == want
    # fused (convert's default): BatchNorm2d(4) -> ReLU is one rule, which keeps no mask
    fused = torch_bp.convert(ref)
    excl += list(fused.parameters()) + list(fused.buffers())
    assert saved_bytes(lambda: fused(x), excl) == want - n * 4 // 8
    g = torch.randn(6, 4, 4, 4, dtype=torch.double)
    grads = []
    for m in (ref, ours):
        (m(x) * g).sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in m.parameters()])
        x.grad = None
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_conv_after_batch_norm_relu_recompute_is_bit_identical(cpp):
    """The conv's recomputed input equals the ReLU output of the forward exactly (float32)."""
    from torch_bp.ops import _lean
    torch.manual_seed(0)
    c = torch.randn(4, 3, 6, 6, requires_grad=True)
    w, b = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    y = torch_bp.functional.relu(torch_bp.functional.batch_norm(c * 1, None, None, w, b, training=True))
    h, f = _lean.recipe(y)
    with torch.no_grad():
        assert torch.equal(f(h), y)


def test_conv_after_batch_norm_relu_recipe_dropped_after_in_place_change(cpp):
    from torch_bp.ops import _lean
    torch.manual_seed(0)
    c = torch.randn(4, 3, 6, 6, requires_grad=True)
    y = torch_bp.functional.relu(torch_bp.functional.batch_norm(c * 1, None, None, training=True))
    assert _lean.recipe(y) is not None
    with torch.no_grad():
        y.mul_(2)  # the conv must see (and save) the changed y
    assert _lean.recipe(y) is None
    w = torch.randn(2, 3, 1, 1, requires_grad=True)
    torch_bp.functional.conv2d(y, w).sum().backward()
    torch.testing.assert_close(w.grad, y.detach().sum((0, 2, 3)).reshape(1, 3, 1, 1).expand(2, 3, 1, 1))


def test_conv_recompute_under_create_graph_is_differentiable(cpp):
    """grad of grad through a conv whose input is recomputed as bn(c) (batch norm weight frozen and
    the BN node's own backward out of the second derivative: d/dc of <grad_w, v> only)."""
    torch.manual_seed(0)
    c = torch.randn(3, 2, 5, 5, dtype=torch.double, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.double, requires_grad=True)
    v = torch.randn(3, 2, 3, 3, dtype=torch.double)

    def f(c, bn, conv):
        z = bn(c, None, None, training=True)
        gw, = torch.autograd.grad(conv(z, w, padding=1).square().sum(), w, create_graph=True)
        return (gw * v).sum()

    ours = torch.autograd.grad(f(c, torch_bp.functional.batch_norm, torch_bp.functional.conv2d), c)[0]
    ref = torch.autograd.grad(f(c, torch.nn.functional.batch_norm, torch.nn.functional.conv2d), c)[0]
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("conv", ["Conv2d", "ConvTranspose2d"])
def test_per_sample_grads_of_a_conv_after_eval_batch_norm_relu(cpp, conv):
    """The per-sample rules of a conv whose input is recomputed (eval-mode BN -> ReLU) see x."""
    torch.manual_seed(0)
    layer = getattr(torch.nn, conv)(3, 2, 3, padding=1).double()
    bn = torch.nn.BatchNorm2d(3).double().eval()
    bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)
    ours = torch_bp.convert(torch.nn.Sequential(bn, torch.nn.ReLU(), layer))
    x = torch.randn(4, 3, 5, 5, dtype=torch.double, requires_grad=True)
    with torch_bp.per_sample_grads(ours[2]):
        ours(x).square().sum().backward()
    for n in range(4):
        xn = x[n:n + 1].detach()
        ref = torch.autograd.grad(torch.nn.Sequential(bn, torch.nn.ReLU(), layer)(xn).square().sum(), layer.weight)[0]
        torch.testing.assert_close(ours[2].weight.grad_sample[n], ref, rtol=1e-10, atol=1e-12)


# --- Transformer blocks (pre-LN, GPT-2, Llama): the recipes change what is saved, never a gradient ---
BLOCKS = {"preln_block": {"p": 0.0}, "gpt2_block": {"p": 0.0}, "llama_block": {}}


def _block_grads(model, x, g):
    model.zero_grad()
    xg = x.clone().requires_grad_()
    (model(xg) * g).sum().backward()
    return [xg.grad] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_gradients_with_recipes_equal_without(name, monkeypatch, each_backend):
    """Converted block, small sizes, train mode (dropout 0 where the block has dropout): the gradients
    with the recompute recipes are bit-identical to those of the same rules saving their inputs
    (recipes off), and as close to the unconverted model's as torch's float32 is to float64."""
    from torch_bp.ops import _lean
    torch.manual_seed(0)
    ref, (x,) = _build(name, batch=2, T=16, d=32, heads=4, hidden=64, **BLOCKS[name])
    ours = torch_bp.convert(ref)
    g = torch.randn_like(ref(x))
    excl = [x] + list(ref.parameters()) + list(ours.parameters())
    lean_saved = saved_bytes(lambda: ours(x), excl)
    lean = _block_grads(ours, x, g)
    with monkeypatch.context() as m:
        m.setattr(_lean, "active", lambda: False)
        plain_saved = saved_bytes(lambda: ours(x), excl)
        plain = _block_grads(ours, x, g)
    assert lean_saved < plain_saved  # the recipes are in use
    for a, b in zip(lean, plain):
        assert torch.equal(a, b)
    exact = _block_grads(copy.deepcopy(ref).double(), x.double(), g.double())
    theirs = _block_grads(ref, x, g)
    for a, b, e in zip(lean, theirs, exact):
        scale = e.abs().max().item() or 1.0
        t = max(TOL[torch.float32], 2 * (b.double() - e).abs().max().item() / scale)
        torch.testing.assert_close(a, b, rtol=t, atol=t * scale)


def test_linear_after_dropout_of_gelu_saves_the_gelu_input_with_equal_gradients(each_backend):
    """fc2(dropout(gelu(fc1(x)))) saves the GELU input and the dropout bits, not the dropout output;
    same masks as torch's for the same seed, gradients equal to torch's (float64)."""
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.Dropout(0.3),
                              torch.nn.Linear(16, 5)).double()
    ours = torch_bp.convert(ref)
    x = torch.randn(7, 6, dtype=torch.double, requires_grad=True)
    excl = [x] + list(ref.parameters()) + list(ours.parameters())
    n = 7 * 16
    # the GELU input (float64; fc2 saves it too), the dropout bits and its 0-d scale
    assert saved_bytes(lambda: ours(x), excl) == n * 8 + -(-n // 8) + 8
    grads = []
    for m in (ref, ours):
        torch.manual_seed(1)
        m(x).square().sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in m.parameters()])
        x.grad = None
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_swiglu_product_recipe_is_bit_identical_and_dropped_after_in_place_change():
    from torch_bp.ops import _lean
    torch.manual_seed(0)
    gate, up = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    y = torch_bp.functional.mul(torch_bp.functional.silu(gate * 1), up * 1)
    h, f = _lean.recipe(y)
    with torch.no_grad():
        assert torch.equal(f(h), y)
    u = _lean.deps(y)[-1]
    with torch.no_grad():
        u.mul_(2)  # up changed in place: the down projection must not recompute from it
    assert _lean.recipe(y) is None


def test_swiglu_double_backward_through_recomputed_product():
    torch.manual_seed(0)
    gate = torch.randn(3, 4, dtype=torch.double, requires_grad=True)
    up = torch.randn(3, 4, dtype=torch.double, requires_grad=True)
    w = torch.randn(2, 4, dtype=torch.double, requires_grad=True)

    def f(silu, mul, linear):
        out = linear(mul(silu(gate), up), w)
        gs = torch.autograd.grad(out.square().sum(), (gate, up, w), create_graph=True)
        return torch.autograd.grad(sum(t.square().sum() for t in gs), (gate, up, w))

    F = torch_bp.functional
    ours = f(F.silu, F.mul, F.linear)
    ref = f(torch.nn.functional.silu, torch.mul, torch.nn.functional.linear)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
