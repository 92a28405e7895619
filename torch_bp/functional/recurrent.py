"""``torch_bp.functional``: LSTM, GRU and plain RNN (the ATen ops torch.nn.LSTM/GRU/RNN call), and their
cells. See the package docstring."""
from __future__ import annotations

import torch

from .. import _compat
from ._checks import _real_only

from .._amp import autocast_inputs
from ..ops import recurrent as _rnn


# Not in torch.nn.functional: these mirror the ATen ops torch.nn.LSTM/GRU/RNN call
# (torch.lstm, torch.gru, torch.rnn_tanh, torch.rnn_relu), with the same positional
# arguments, and also take what the modules handle around those ops: a PackedSequence as
# ``input`` (variable lengths, ``hx`` in the caller's batch order), an unbatched (T, I)
# input, and ``hx=None`` (zeros). ``params`` is the flat weight list in torch's order
# (``module._flat_weights``). Returns (output, h_n, c_n) for lstm and (output, h_n) else,
# ``output`` a PackedSequence when the input is one.
def lstm(input, hx, params, has_biases=True, num_layers=1, dropout=0.0, train=True, bidirectional=False,
         batch_first=False):
    return _recurrent("LSTM", input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)


def gru(input, hx, params, has_biases=True, num_layers=1, dropout=0.0, train=True, bidirectional=False,
        batch_first=False):
    return _recurrent("GRU", input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)


def rnn_tanh(input, hx, params, has_biases=True, num_layers=1, dropout=0.0, train=True, bidirectional=False,
             batch_first=False):
    return _recurrent("RNN_TANH", input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
                      batch_first)


def rnn_relu(input, hx, params, has_biases=True, num_layers=1, dropout=0.0, train=True, bidirectional=False,
             batch_first=False):
    return _recurrent("RNN_RELU", input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
                      batch_first)


_RNN_NAMES = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}


def _recurrent(mode, input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    """The checks torch.nn.LSTM/GRU/RNN make (same exception types and messages), then one Function."""
    from torch.nn.utils.rnn import PackedSequence

    params = list(params)
    packed = isinstance(input, PackedSequence)
    states = hx if isinstance(hx, (tuple, list)) else (hx,)
    _real_only(mode.lower(), input.data if packed else input, *states, *params)
    sorted_indices = unsorted_indices = batch_sizes = None
    if packed:
        input, batch_sizes, sorted_indices, unsorted_indices = input
    policy = mode.lower()  # the registry row's autocast policy
    (input,) = autocast_inputs(policy, input)
    params = list(autocast_inputs(policy, *params))
    if isinstance(hx, (tuple, list)):
        hx = type(hx)(autocast_inputs(policy, *hx))
    elif hx is not None:
        (hx,) = autocast_inputs(policy, hx)
    D = 2 if bidirectional else 1
    per = 2 + 2 * bool(has_biases)
    if num_layers < 1 or not params or len(params) % (num_layers * D):
        raise RuntimeError(f"{_RNN_NAMES[mode]}: expected a multiple of {num_layers * D} weights for "
                           f"num_layers={num_layers}, bidirectional={bidirectional}, got {len(params)}")
    k = len(params) // (num_layers * D)
    proj = mode == "LSTM" and k == per + 1
    if k != per + proj:
        raise RuntimeError(f"{_RNN_NAMES[mode]}: expected {per} weights per layer and direction "
                           f"(has_biases={has_biases}), got {k}")
    gates = _rnn.gate_count(mode)
    hidden_size = params[1].shape[0] // gates
    out_size = params[per].shape[0] if proj else hidden_size
    input_size = params[0].shape[1]
    name = _RNN_NAMES[mode]
    if input.dtype != params[0].dtype and not _compat.autocast_enabled():
        if packed and mode == "LSTM":  # torch's module checks nothing here: its kernel raises
            raise RuntimeError(f"self and mat2 must have the same dtype, but got {input.dtype} and {params[0].dtype}")
        raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype ({params[0].dtype}). "
                         f"Convert input: input.to({params[0].dtype}), or convert model: model.to({input.dtype})")
    is_lstm = mode == "LSTM"
    unbatched = False
    if packed:
        if input.dim() != 2:
            raise RuntimeError(f"input must have 2 dimensions, got {input.dim()}")
        mini_batch = int(batch_sizes[0])
    else:
        if input.dim() not in (2, 3):
            tail = "instead" if is_lstm else "tensor instead"
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D {tail}")
        unbatched = input.dim() == 2
        mini_batch = 1 if unbatched else (input.shape[0] if batch_first else input.shape[1])
    if input.shape[-1] != input_size:
        raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {input_size}, got {input.shape[-1]}")
    if not packed and input.shape[1 if batch_first and not unbatched else 0] == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    state_dims = 2 if unbatched else 3
    expect_h = (num_layers * D, mini_batch, out_size)
    expect_c = (num_layers * D, mini_batch, hidden_size)
    if hx is None:
        h0 = input.new_zeros(expect_h)
        c0 = input.new_zeros(expect_c) if is_lstm else None
    else:
        h0, c0 = (hx[0], hx[1]) if is_lstm else (hx, None)
        if not packed:
            got = (h0.dim(), c0.dim()) if is_lstm else (h0.dim(),)
            if any(g != state_dims for g in got):
                kind = "unbatched 2-D" if unbatched else "batched 3-D"
                what = "hx and cx" if is_lstm else "hx"
                dims = f"({got[0]}-D, {got[1]}-D) tensors" if is_lstm else f"{got[0]}-D tensor"
                raise RuntimeError(f"For {kind} input, {what} should also be {state_dims}-D but got {dims}")
        for t, expect, label in ((h0, expect_h, "hidden[0]" if is_lstm else "hidden"), (c0, expect_c, "hidden[1]")):
            if t is None:
                continue
            shape = (t.shape[0], 1) + tuple(t.shape[1:]) if unbatched else tuple(t.shape)
            if shape != expect:
                raise RuntimeError(f"Expected {label} size {expect}, got {list(shape)}")
    odd = [p.dtype for p in params if p.dtype != params[0].dtype]
    if odd and not _compat.autocast_enabled():  # torch's kernels (after its module's checks): one dtype for all
        raise RuntimeError(f"self and mat2 must have the same dtype, but got {params[0].dtype} and {odd[0]} "
                           f"(every weight and bias of the {_RNN_NAMES[mode]} must have one dtype)")
    if hx is not None and not _compat.autocast_enabled():
        # torch's kernels multiply h by W_hh as they are: a state of another dtype than the weights raises (its
        # oneDNN LSTM refuses a cell state of another dtype too; its other LSTM paths promote c: ours refuses)
        for t in (h0, c0):
            if t is not None and t.dtype != params[0].dtype:
                raise RuntimeError(f"mat1 and mat2 must have the same dtype, but got {t.dtype} and "
                                   f"{params[0].dtype} (the {name}'s states must have its weights' dtype)")
    opts = _rnn.RNNOptions(mode, int(num_layers), bool(bidirectional), bool(has_biases), proj,
                           float(dropout) if train else 0.0, bool(batch_first) and not packed, unbatched,
                           None if batch_sizes is None else tuple(int(b) for b in batch_sizes))
    if hx is None and unbatched:  # the Function takes (L*D, H) states with an unbatched input
        h0 = h0.squeeze(1)
        c0 = None if c0 is None else c0.squeeze(1)
    seed = int(torch.randint(0, 2 ** 62, (1,)).item()) if opts.dropout > 0 and num_layers > 1 else 0
    # the inputs are cast as torch's autocast would (above); the rule's own matmuls run in those dtypes
    with torch.autocast(input.device.type, enabled=False):
        outs = _rnn.FUNCTIONS[mode].apply(opts, input, h0, c0, sorted_indices, unsorted_indices, seed, *params)
    output = outs[0]
    if packed:
        output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
    return (output, outs[1], outs[2]) if is_lstm else (output, outs[1])


# --- cells: one time step ---
# torch's checks of a cell's sizes (aten/src/ATen/native/RNN.cpp), with its messages; ``size(1)`` of a 1-d tensor
# raises torch's IndexError, as there. The biases are not checked: torch adds them with addmm, which takes any
# bias that broadcasts to (batch, gates) (a one-element bias, a bias per batch row); so does the rule.
def _check_input(input, input_size):
    if input.size(1) != input_size:
        raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {input_size}")


def _check_hidden(input, hx, hidden_size, label):
    if input.size(0) != hx.size(0):
        raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{label} batch size {hx.size(0)}")
    if hx.size(1) != hidden_size:
        raise RuntimeError(f"hidden{label} has inconsistent hidden_size: got {hx.size(1)}, expected {hidden_size}")


def _check_weights(w_ih, w_hh, gate_count, hidden_size):
    for which, w in (("ih", w_ih), ("hh", w_hh)):
        if w.size(0) != gate_count * hidden_size:
            raise RuntimeError(f"weight_{which} first dim must be {gate_count} * hidden_size = "
                               f"{gate_count * hidden_size}, but got {w.size(0)}")


def _cell_args(name, input, hx, w_ih, w_hh, b_ih, b_hh):
    tensors = autocast_inputs(name, input, *hx, w_ih, w_hh, b_ih, b_hh)
    input, hx, (w_ih, w_hh, b_ih, b_hh) = tensors[0], tensors[1:1 + len(hx)], tensors[1 + len(hx):]
    hidden_size = w_hh.size(1)
    if name == "gru_cell":  # in torch's order for each cell
        _check_input(input, w_ih.size(1))
        _check_hidden(input, hx[0], hidden_size, 0)
        _check_weights(w_ih, w_hh, 3, hidden_size)
    elif name == "lstm_cell":
        _check_input(input, w_ih.size(1))
        _check_weights(w_ih, w_hh, 4, hidden_size)
        _check_hidden(input, hx[0], hidden_size, 0)
        _check_hidden(input, hx[1], hidden_size, 1)
    else:
        _check_weights(w_ih, w_hh, 1, hidden_size)
        _check_input(input, w_ih.size(1))
        _check_hidden(input, hx[0], hidden_size, 0)
    # torch's checks pass for some >2-d tensors (its linear then broadcasts them); the rule takes matrices
    if input.dim() != 2 or any(h.dim() != 2 for h in hx) or w_ih.dim() != 2 or w_hh.dim() != 2:
        raise RuntimeError(f"{name}: expected input (batch, input_size), hidden states (batch, hidden_size) and "
                           f"2-d weights, got {list(input.shape)}, {[list(h.shape) for h in hx]}, "
                           f"{list(w_ih.shape)}, {list(w_hh.shape)}")
    return input, hx, w_ih, w_hh, b_ih, b_hh


def rnn_tanh_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    input, (hx,), w_ih, w_hh, b_ih, b_hh = _cell_args("rnn_tanh_cell", input, (hx,), w_ih, w_hh, b_ih, b_hh)
    with torch.autocast(input.device.type, enabled=False):  # inputs cast as torch would, above
        return _rnn.RNNCellFunction.apply(input, hx, w_ih, w_hh, b_ih, b_hh, False)


def rnn_relu_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    input, (hx,), w_ih, w_hh, b_ih, b_hh = _cell_args("rnn_relu_cell", input, (hx,), w_ih, w_hh, b_ih, b_hh)
    with torch.autocast(input.device.type, enabled=False):  # inputs cast as torch would, above
        return _rnn.RNNCellFunction.apply(input, hx, w_ih, w_hh, b_ih, b_hh, True)


def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    input, (h, c), w_ih, w_hh, b_ih, b_hh = _cell_args("lstm_cell", input, tuple(hx), w_ih, w_hh, b_ih, b_hh)
    with torch.autocast(input.device.type, enabled=False):  # inputs cast as torch would, above
        return _rnn.LSTMCellFunction.apply(input, h, c, w_ih, w_hh, b_ih, b_hh)


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    input, (hx,), w_ih, w_hh, b_ih, b_hh = _cell_args("gru_cell", input, (hx,), w_ih, w_hh, b_ih, b_hh)
    with torch.autocast(input.device.type, enabled=False):  # inputs cast as torch would, above
        return _rnn.GRUCellFunction.apply(input, hx, w_ih, w_hh, b_ih, b_hh)
