"""The compiled LSTM/GRU time loops (csrc/cpu/recurrent.cpp) against the Python rule, at sizes
the registry samples (hidden size 2) do not reach: hidden sizes with full vectors and a tail,
variable-length packed batches in both directions, a projection, inter-layer dropout, and the
per-sample gradients, which reuse the compiled loops' pre-activation gradients."""
from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import torch_bp
from harness import assert_close
from test_backend import OpLog

CASES = [  # (module, kwargs)
    (torch.nn.LSTM, {"num_layers": 2, "bidirectional": True}),
    (torch.nn.LSTM, {"proj_size": 5, "bidirectional": True}),
    (torch.nn.LSTM, {"num_layers": 2, "dropout": 0.3, "batch_first": True}),
    (torch.nn.GRU, {"num_layers": 2, "bidirectional": True}),
    (torch.nn.GRU, {"bias": False, "batch_first": True}),
]


@pytest.fixture
def backends(cpp):
    """The compiled backend (conftest's ``cpp``): the loops compared against the Python rule."""


def _run(backend, model, x, packed_lengths, per_sample):
    torch_bp.set_backend(backend)
    model.zero_grad()
    for p in model.parameters():
        p.grad_sample = None
    x = x.detach().clone().requires_grad_()
    inp = x
    if packed_lengths is not None:
        inp = pack_padded_sequence(x, packed_lengths, batch_first=model.batch_first, enforce_sorted=False)
    log = OpLog()
    torch.manual_seed(0)
    with log:
        if per_sample:
            with torch_bp.per_sample_grads(model):
                out, _ = model(inp)
                (out.data if packed_lengths is not None else out).square().sum().backward()
        else:
            out, _ = model(inp)
            (out.data if packed_lengths is not None else out).square().sum().backward()
    ops = {f._schema.name.split("::")[1] for f, _, _ in log.calls}
    grads = [x.grad] + [p.grad for p in model.parameters()]
    per = [p.grad_sample for p in model.parameters()] if per_sample else []
    return (out.data if packed_lengths is not None else out), grads, per, ops


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_compiled_loops_match_python_rule(case, dtype, backends):
    cls, kw = CASES[case]
    torch.manual_seed(case)
    I, H, T, B = 7, 37, 6, 5  # 37: full vectors and a tail for float32 and float64
    model = torch_bp.convert(cls(I, H, **kw)).to(dtype).train()
    x = torch.randn(*((B, T) if kw.get("batch_first") else (T, B)), I, dtype=dtype)
    lengths = torch.tensor([6, 3, 6, 1, 4])
    for packed in (None, lengths):
        per_sample = not kw.get("dropout")
        want = _run("python", model, x, packed, per_sample)
        got = _run("cpp", model, x, packed, per_sample)
        name = cls.__name__.lower()
        assert {f"{name}_layer_fwd", f"{name}_layer_bwd"} <= got[3], f"compiled loops did not run: {got[3]}"
        what = f"{cls.__name__}{kw} packed={packed is not None}"
        assert_close(got[0], want[0], dtype, what=f"{what} output")
        for i, (g, w) in enumerate(zip(got[1] + got[2], want[1] + want[2])):
            assert_close(g, w, dtype, what=f"{what} gradient {i}")
