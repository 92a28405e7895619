"""Saved-bytes regression gate (issue 8): each benchmark model, converted with torch_bp.convert,
must keep at most GATE x the bytes torch eager saves for backward.

Bytes are counted as in the benchmark suite (experiments/benchmarks/measure.py: storages packed by
saved_tensors_hooks, deduplicated, parameters/buffers/inputs excluded). They depend only on shapes,
so the ratio is deterministic; the models run at the suite's sizes (forward only, a few seconds).
Times are never asserted here.

A gate is the issue's target where we meet it; where we miss it, the gate is the ratio measured
when the gate was written (rounded up), so memory cannot silently regress, and the comment names
the target as missed. Never loosen a met target.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

import torch_bp
from experiments.benchmarks.measure import saved_bytes
from experiments.benchmarks.models import MODELS

GATES = {
    # target 0.6: met (measured 0.500: each linear after a GELU saves the GELU input, ops/_lean.py)
    "mlp_gelu": 0.6,
    # target 0.7: MISSED (measured 1.031: the ReLU bit masks come on top of the ReLU outputs that
    # the next conv and the pool save anyway)
    "cnn_stack": 1.04,
    # target 0.6: met (measured 0.559 on both backends: dropout masks as bits, layer norm keeps
    # its input and row statistics, attention its row log-sum-exp)
    "transformer_block": 0.6,
    # no target in the issue; measured 0.459 at these sizes (0.473 at the suite's 32 x 64 steps)
    "lstm_2layer": 0.46,
}


def _ratio(name):
    torch.manual_seed(0)
    # the LSTM's time steps run in Python: a shorter sequence keeps the test fast; its ratio is
    # per step (both sides save the same tensors each step), so the sequence length does not move it
    ref, inputs = MODELS[name](batch=8, steps=16) if name == "lstm_2layer" else MODELS[name]()
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
