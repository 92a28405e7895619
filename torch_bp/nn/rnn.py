"""RNN, LSTM, GRU: torch.nn's classes with forward routed through our backpropagation through time.

Same constructors, parameter names (``weight_ih_l0``, ``weight_hh_l0_reverse``, ``weight_hr_l0``,
...), state_dicts and reprs as torch.nn; the rule is in :mod:`torch_bp.ops.recurrent`.
"""
from __future__ import annotations

import torch

from .. import functional as F


def _flat_params(module):
    return [getattr(module, name) for name in module._flat_weights_names]


class RNN(torch.nn.RNN):
    r"""Drop-in :class:`torch.nn.RNN` (``nonlinearity`` ``'tanh'`` or ``'relu'``), rule
    :class:`torch_bp.ops.recurrent.RNNFunction`.

    Args, Shape (incl. unbatched input and ``PackedSequence``): as :class:`torch.nn.RNN`.
    With ``dropout > 0`` in training, our inter-layer masks are not torch's (same distribution).

    Example::

        >>> rnn = torch_bp.nn.RNN(10, 20, 2)
        >>> out, h_n = rnn(torch.randn(5, 3, 10))
        >>> out.shape, h_n.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
    """

    def forward(self, input, hx=None):
        fn = F.rnn_tanh if self.nonlinearity == "tanh" else F.rnn_relu
        return fn(input, hx, _flat_params(self), self.bias, self.num_layers, self.dropout, self.training,
                  self.bidirectional, self.batch_first)


class LSTM(torch.nn.LSTM):
    r"""Drop-in :class:`torch.nn.LSTM` (incl. ``proj_size``), rule :class:`torch_bp.ops.recurrent.LSTMFunction`.

    Args, Shape (incl. unbatched input and ``PackedSequence``): as :class:`torch.nn.LSTM`.
    With ``dropout > 0`` in training, our inter-layer masks are not torch's (same distribution).

    Example::

        >>> lstm = torch_bp.nn.LSTM(10, 20, 2, bidirectional=True)
        >>> out, (h_n, c_n) = lstm(torch.randn(5, 3, 10))
        >>> out.shape, h_n.shape
        (torch.Size([5, 3, 40]), torch.Size([4, 3, 20]))
    """

    def forward(self, input, hx=None):
        out, h, c = F.lstm(input, hx, _flat_params(self), self.bias, self.num_layers, self.dropout, self.training,
                           self.bidirectional, self.batch_first)
        return out, (h, c)


class GRU(torch.nn.GRU):
    r"""Drop-in :class:`torch.nn.GRU`, rule :class:`torch_bp.ops.recurrent.GRUFunction`.

    Args, Shape (incl. unbatched input and ``PackedSequence``): as :class:`torch.nn.GRU`.
    With ``dropout > 0`` in training, our inter-layer masks are not torch's (same distribution).

    Example::

        >>> gru = torch_bp.nn.GRU(10, 20)
        >>> out, h_n = gru(torch.randn(5, 3, 10))
        >>> out.shape, h_n.shape
        (torch.Size([5, 3, 20]), torch.Size([1, 3, 20]))
    """

    def forward(self, input, hx=None):
        return F.gru(input, hx, _flat_params(self), self.bias, self.num_layers, self.dropout, self.training,
                     self.bidirectional, self.batch_first)


def torch_reference(mode: str):
    """What torch does for ``torch_bp.functional.<lstm|gru|rnn_tanh|rnn_relu>``: torch's module
    (its argument checks included) with the given weights, same signature as ours."""
    gates = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}[mode]

    def reference(input, hx, params, has_biases=True, num_layers=1, dropout=0.0, train=True, bidirectional=False,
                  batch_first=False):
        params = list(params)
        per = len(params) // (num_layers * (2 if bidirectional else 1))
        proj = mode == "LSTM" and per == (5 if has_biases else 3)
        kw = dict(num_layers=num_layers, bias=has_biases, batch_first=batch_first, dropout=dropout,
                  bidirectional=bidirectional, device="meta")
        sizes = (params[0].shape[1], params[1].shape[0] // gates)
        if mode == "LSTM":
            m = torch.nn.LSTM(*sizes, proj_size=params[per - 1].shape[0] if proj else 0, **kw)
        elif mode == "GRU":
            m = torch.nn.GRU(*sizes, **kw)
        else:
            m = torch.nn.RNN(*sizes, nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kw)
        m.train(train)
        out, h = torch.func.functional_call(m, dict(zip(m._flat_weights_names, params)), (input, hx))
        return (out, *h) if mode == "LSTM" else (out, h)

    reference.__name__ = reference.__qualname__ = f"torch_{mode.lower()}"
    return reference


# --- RNNCell / LSTMCell / GRUCell ---
class _CellForward:
    """torch's cell ``forward`` (unbatched input, default zero state) with the step routed through our rules."""

    def forward(self, input, hx=None):
        if input.dim() not in (1, 2):
            raise ValueError(f"{type(self).__name__}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        states = hx if isinstance(hx, tuple) else (hx,) if hx is not None else None
        if states is not None and any(h.dim() not in (1, 2) for h in states):
            raise ValueError(f"{type(self).__name__}: Expected hidden to be 1D or 2D, "
                             f"got {[h.dim() for h in states]}D instead")
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        if states is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
            states = (zeros, zeros) if isinstance(self, torch.nn.LSTMCell) else (zeros,)
        elif not batched:
            states = tuple(h.unsqueeze(0) for h in states)
        out = self._step(input, states)
        if not batched:
            out = tuple(o.squeeze(0) for o in out) if isinstance(out, tuple) else out.squeeze(0)
        return out


class RNNCell(_CellForward, torch.nn.RNNCell):
    """Drop-in :class:`torch.nn.RNNCell` (backward: :class:`torch_bp.ops.recurrent.RNNCellFunction`)."""

    def _step(self, input, states):
        fn = F.rnn_tanh_cell if self.nonlinearity == "tanh" else F.rnn_relu_cell
        return fn(input, states[0], self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class LSTMCell(_CellForward, torch.nn.LSTMCell):
    """Drop-in :class:`torch.nn.LSTMCell` (backward: :class:`torch_bp.ops.recurrent.LSTMCellFunction`)."""

    def _step(self, input, states):
        return F.lstm_cell(input, states, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRUCell(_CellForward, torch.nn.GRUCell):
    """Drop-in :class:`torch.nn.GRUCell` (backward: :class:`torch_bp.ops.recurrent.GRUCellFunction`)."""

    def _step(self, input, states):
        return F.gru_cell(input, states[0], self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
