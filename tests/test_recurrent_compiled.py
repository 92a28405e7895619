"""The compiled LSTM/GRU/RNN time loops (csrc/cpu/recurrent.cpp) against the Python rule, at sizes
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
    (torch.nn.RNN, {"num_layers": 2, "bidirectional": True}),
    (torch.nn.RNN, {"nonlinearity": "relu", "bias": False, "batch_first": True}),
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
    I, H, T, B = 7, 37, 6, 5  # 37: full vectors and a tail for float32 and float64 (RNN: a vector past H in a tile)
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



@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("cls, kw", [(torch.nn.LSTM, {}), (torch.nn.LSTM, {"proj_size": 21}), (torch.nn.GRU, {}),
                                     (torch.nn.RNN, {}), (torch.nn.RNN, {"nonlinearity": "relu"})],
                         ids=["LSTM", "LSTM-proj", "GRU", "RNN", "RNN-relu"])
def test_fused_loops_blocks(cls, kw, dtype, backends):
    """The fused multi-step loops where every blocking path runs: 13 rows (register blocks of 4, 4
    and 5 rows; a packed batch shrinks to 10, 7 and 5 rows), hidden size 70 (float32: 5 unit tiles,
    float64: 9, each with a tail tile of 6 units and, on the columns of the backward, groups of up to
    4 tiles; RNN: tiles of 4 vectors, the last with one; LSTM with proj_size 21: h's columns in 2 or 3
    tiles, the last with a tail), both directions."""
    torch.manual_seed(1)
    I, H, T, B = 9, 70, 4, 13
    model = torch_bp.convert(cls(I, H, bidirectional=True, **kw)).to(dtype)
    x = torch.randn(T, B, I, dtype=dtype)
    lengths = torch.tensor([4, 1, 3, 4, 2, 4, 1, 1, 3, 2, 4, 4, 2])
    for packed in (None, lengths):
        want = _run("python", model, x, packed, False)
        got = _run("cpp", model, x, packed, False)
        what = f"{cls.__name__} packed={packed is not None}"
        assert {f"{cls.__name__.lower()}_layer_fwd", f"{cls.__name__.lower()}_layer_bwd"} <= got[3]
        assert_close(got[0], want[0], dtype, what=f"{what} output")
        for i, (g, w) in enumerate(zip(got[1], want[1])):
            assert_close(g, w, dtype, what=f"{what} gradient {i}")


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("mode", ["lstm", "lstm_proj", "gru", "rnn_tanh", "rnn_relu"])
def test_fused_loops_independent_of_threads(mode, reverse, backends):
    """Each value of the fused loops is computed by one thread in a fixed order, so one thread and two
    give the same bits (steps of a packed batch, visited forward or in reverse)."""
    torch.manual_seed(2)
    G, H, B = {"lstm": 4, "lstm_proj": 4, "gru": 3}.get(mode, 1), 70, 13
    K = 21 if mode == "lstm_proj" else H  # the state's width: proj_size, or H
    sizes = [13, 10, 7, 5]
    offsets = [sum(sizes[:t]) for t in range(len(sizes))]
    if reverse:
        offsets, sizes = offsets[::-1], sizes[::-1]
    N = sum(sizes)
    gi, w, w_hr = torch.randn(N, G * H), torch.randn(G * H, K) * 0.2, torch.randn(K, H) * 0.2
    h0, c0, dY = torch.randn(B, K), torch.randn(B, H), torch.randn(N, K)
    ops = torch.ops.torch_bp

    def run():
        if mode.startswith("lstm"):
            wr = w_hr if mode == "lstm_proj" else None
            fwd = ops.lstm_layer_fwd(gi, w, wr, h0, c0, offsets, sizes)
            Y, h, c, Hprev, Cprev, A, C = fwd
            bwd = ops.lstm_layer_bwd(dY, h0, c0, w, wr, Cprev, A, C, offsets[::-1], sizes[::-1])
            return [*fwd, *(t for t in bwd if t is not None)]
        if mode.startswith("rnn"):
            relu = mode == "rnn_relu"
            Y, h = ops.rnn_layer_fwd(gi, w, h0, offsets, sizes, relu)
            return [Y, h, *ops.rnn_layer_bwd(dY, h0, w, Y, offsets[::-1], sizes[::-1], relu)]
        fwd = ops.gru_layer_fwd(gi, w, torch.randn(G * H, generator=torch.Generator().manual_seed(3)), h0,
                                offsets, sizes)
        Y, h, Hprev, A, HN = fwd
        return [*fwd, *ops.gru_layer_bwd(dY, h0, w, Hprev, A, HN, offsets[::-1], sizes[::-1])]

    threads = torch.get_num_threads()
    two = run()
    try:
        torch.set_num_threads(1)
        one = run()
    finally:
        torch.set_num_threads(threads)
    for i, (a, b) in enumerate(zip(one, two)):
        assert torch.equal(a, b), f"{mode} output {i} differs between 1 and {threads} threads"
