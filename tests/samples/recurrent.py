"""Samples for lstm / gru / rnn_tanh / rnn_relu (torch.lstm-style functionals) and RNN/LSTM/GRU.

Sizes are tiny: gradcheck perturbs every weight of every layer and direction. Realistic
sizes are compared against torch in float32 in tests/test_attention_rnn.py.
"""
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from . import ModuleSample, Sample, error_samples, module_samples, samples

_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
_MODULE = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN}


def _weights(make, name, I, H, layers=1, bidirectional=False, bias=True, proj=0, requires_grad=True):
    """The flat weight list in torch's order (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr per layer/direction).

    NOTE (relu): torch's bf16 RNN rounds the pre-activation's terms to bf16 before adding them
    (~2^-8 of their size), so a pre-activation that close to 0 may switch relu's branch
    between torch and us: a kink. For rnn_relu the input-hidden biases are +-1.5 (units
    alternately on and off) and the weights small (+-0.15), so that the pre-activations of
    these samples stay well clear of 0 and both branches of relu are exercised.
    """
    G, D, out = _GATES[name], 2 if bidirectional else 1, proj or H
    w = 0.15 if name == "rnn_relu" else 0.7
    ws = []
    for layer in range(layers):
        inp = I if layer == 0 else out * D
        for _ in range(D):
            ws += [make(G * H, inp, low=-w, high=w, requires_grad=requires_grad),
                   make(G * H, out, low=-w, high=w, requires_grad=requires_grad)]
            if bias and name == "rnn_relu":
                b = make(G * H, low=1.4, high=1.6, requires_grad=False)
                b[1::2] *= -1
                ws += [b.requires_grad_(requires_grad), make(G * H, low=-0.1, high=0.1, requires_grad=requires_grad)]
            elif bias:
                ws += [make(G * H, low=-0.5, high=0.5, requires_grad=requires_grad),
                       make(G * H, low=-0.5, high=0.5, requires_grad=requires_grad)]
            if proj:
                ws.append(make(proj, H, low=-0.7, high=0.7, requires_grad=requires_grad))
    return ws


def _state(make, name, shape_h, shape_c=None, requires_grad=True):
    h = make(*shape_h, low=-1, high=1, requires_grad=requires_grad)
    if name != "lstm":
        return h
    return (h, make(*(shape_c or shape_h), low=-1, high=1, requires_grad=requires_grad))


def packed(make, lengths, I, batch_first=False, requires_grad=True):
    """A PackedSequence with a leaf ``data`` (variable lengths, not sorted)."""
    T, B = max(lengths), len(lengths)
    ref = pack_padded_sequence(torch.zeros(T, B, I), torch.tensor(lengths), enforce_sorted=False)
    data = make(ref.data.shape[0], I, requires_grad=requires_grad)
    return PackedSequence(data, ref.batch_sizes, ref.sorted_indices, ref.unsorted_indices)


def _functional_samples(name):
    def gen(make):
        T, B, I, H = 3, 2, 2, 2
        yield Sample("1-layer", (make(T, B, I), None, _weights(make, name, I, H), True, 1, 0.0, True, False, False))
        yield Sample("2-layer-bidirectional-hx",
                     (make(T, B, I), _state(make, name, (4, B, H)), _weights(make, name, I, H, 2, True),
                      True, 2, 0.0, True, True, False))
        yield Sample("batch-first-no-bias",
                     (make(B, T, I), _state(make, name, (1, B, H)), _weights(make, name, I, H, bias=False),
                      False, 1, 0.0, True, False, True))
        yield Sample("unbatched", (make(T, I), _state(make, name, (2, H)), _weights(make, name, I, H, 1, True),
                                   True, 1, 0.0, True, True, False))
        yield Sample("packed-bidirectional-hx",
                     (packed(make, [2, 3, 1], I), _state(make, name, (2, 3, H)), _weights(make, name, I, H, 1, True),
                      True, 1, 0.0, True, True, False))
        yield Sample("packed-2-layer", (packed(make, [1, 3], I), None, _weights(make, name, I, H, 2),
                                        True, 2, 0.0, True, False, False))
        yield Sample("dropout-eval", (make(T, B, I), None, _weights(make, name, I, H, 2), True, 2, 0.5, False,
                                      False, False))
        yield Sample("weights-only-grad", (make(T, B, I, requires_grad=False), None, _weights(make, name, I, H),
                                           True, 1, 0.0, True, False, False))
        yield Sample("input-only-grad", (make(T, B, I), None, _weights(make, name, I, H, requires_grad=False),
                                         True, 1, 0.0, True, False, False))
        if name == "lstm":
            yield Sample("proj-2-layer-bidirectional-hx",
                         (make(T, B, I), _state(make, name, (4, B, 1), (4, B, H)),
                          _weights(make, name, I, H, 2, True, proj=1), True, 2, 0.0, True, True, False))
            yield Sample("proj-packed", (packed(make, [3, 2], I), None, _weights(make, name, I, H, proj=1),
                                         True, 1, 0.0, True, False, False))
    return gen


def _module_samples(name):
    def gen(make):
        T, B, I, H = 5, 3, 4, 6
        extra = {"nonlinearity": "relu"} if name == "rnn_relu" else {}
        yield ModuleSample("2-layer-bidirectional", (I, H, 2), {"bidirectional": True, **extra}, (make(T, B, I),))
        yield ModuleSample("batch-first-no-bias-hx", (I, H), {"batch_first": True, "bias": False, **extra},
                           (make(B, T, I), _state(make, name, (1, B, H), requires_grad=False)))
        yield ModuleSample("unbatched", (I, H), extra, (make(T, I),))
        yield ModuleSample("packed", (I, H, 1), {"bidirectional": True, **extra},
                           (packed(make, [3, 5, 2], I, requires_grad=False),
                            _state(make, name, (2, 3, H), requires_grad=False)))
        yield ModuleSample("dropout-eval", (I, H, 2), {"dropout": 0.4, **extra}, (make(T, B, I),), train=False)
        if name == "rnn_tanh":
            yield ModuleSample("relu", (I, H, 2), {"nonlinearity": "relu"}, (make(T, B, I),))
        if name == "lstm":
            yield ModuleSample("proj", (I, H, 2), {"proj_size": 2, "bidirectional": True}, (make(T, B, I),))
    return gen


def _error_samples(name):
    def gen(make):
        T, B, I, H = 4, 2, 3, 3
        w = _weights(make, name, I, H)
        ok = (True, 1, 0.0, True, False, False)
        yield Sample("hidden-shape", (make(T, B, I), _state(make, name, (1, B + 1, H), (1, B, H)), w) + ok)
        if name == "lstm":
            yield Sample("cell-shape", (make(T, B, I), _state(make, name, (1, B, H), (2, B, H)), w) + ok)
        yield Sample("input-size", (make(T, B, I + 1), None, w) + ok)
        yield Sample("input-1d", (make(T), None, w) + ok)
        yield Sample("batch-first-mismatch", (make(B, T + 1, I), _state(make, name, (1, B, H)), w) + ok)
        yield Sample("unbatched-with-3d-hx", (make(T, I), _state(make, name, (1, 1, H)), w) + ok)
        yield Sample("dtype", (make(T, B, I, dtype=torch.float64), None, w) + ok)
        # a hidden state of another dtype than the weights: torch's kernels refuse it (padded and packed input)
        h = make(1, B, H, dtype=torch.bfloat16)
        state = (h, make(1, B, H)) if name == "lstm" else h
        yield Sample("state-dtype", (make(T, B, I), state, w) + ok)
        yield Sample("packed-state-dtype", (packed(make, [T, 2], I), state, w) + ok)
    return gen


for _name in _GATES:
    samples(_name)(_functional_samples(_name))
    error_samples(_name)(_error_samples(_name))
    if _name != "rnn_relu":
        module_samples(_name)(_module_samples(_name))


# --- cells: rnn_tanh_cell, rnn_relu_cell, lstm_cell, gru_cell (one generator; G gates per cell) ---
_CELL_GATES = {"rnn_tanh_cell": 1, "rnn_relu_cell": 1, "lstm_cell": 4, "gru_cell": 3}


def _cell_samples(make, name):
    g = _CELL_GATES[name]
    h = 3

    def state(b):
        return (make(b, h), make(b, h)) if name == "lstm_cell" else make(b, h)

    yield Sample("bias", (make(4, 5), state(4), make(g * h, 5), make(g * h, h), make(g * h), make(g * h)))
    yield Sample("no-bias", (make(2, 5), state(2), make(g * h, 5), make(g * h, h)))
    yield Sample("batch-of-one", (make(1, 2), state(1), make(g * h, 2), make(g * h, h), make(g * h), make(g * h)))
    yield Sample("state-no-grad", (make(3, 4), (make(3, h, requires_grad=False),) * 2 if name == "lstm_cell"
                                   else make(3, h, requires_grad=False), make(g * h, 4), make(g * h, h)))
    # torch adds the biases with addmm: any bias that broadcasts to (batch, gates) is taken (one element, per row)
    yield Sample("broadcast-biases", (make(4, 5), state(4), make(g * h, 5), make(g * h, h), make(1), make(4, g * h)))


def _cell_modules(make, name):
    if name == "rnn_relu_cell":
        return
    cls_kw = {"rnn_tanh_cell": {}, "lstm_cell": {}, "gru_cell": {}}[name]
    yield ModuleSample("batched", (4, 3), cls_kw, (make(2, 4),))
    state = (make(2, 3), make(2, 3)) if name == "lstm_cell" else make(2, 3)
    yield ModuleSample("given-state", (4, 3), cls_kw, (make(2, 4), state))
    yield ModuleSample("unbatched-no-bias", (4, 3), {"bias": False, **cls_kw}, (make(4),))
    if name == "rnn_tanh_cell":
        yield ModuleSample("relu", (4, 3), {"nonlinearity": "relu"}, (make(2, 4),))


def _cell_errors(make, name):
    g = _CELL_GATES[name]
    state = (make(2, 3), make(2, 3)) if name == "lstm_cell" else make(2, 3)
    yield Sample("input-size", (make(2, 5), state, make(g * 3, 4), make(g * 3, 3)))
    # torch checks that both weights have gates * hidden_size rows (hidden_size: W_hh's columns)
    yield Sample("weight-ih-rows", (make(2, 4), state, make(g * 3 + 1, 4), make(g * 3, 3)))
    yield Sample("weight-hh-rows", (make(2, 4), state, make(g * 3, 4), make(g * 3 - 1, 3)))
    yield Sample("bias-not-broadcastable", (make(2, 4), state, make(g * 3, 4), make(g * 3, 3), make(2), make(g * 3)))


for _name in _CELL_GATES:
    samples(_name)(lambda make, n=_name: _cell_samples(make, n))
    module_samples(_name)(lambda make, n=_name: _cell_modules(make, n))
    error_samples(_name)(lambda make, n=_name: _cell_errors(make, n))
