"""Activation modules: torch.nn's classes with forward routed through torch_bp.functional."""
from __future__ import annotations

import torch

from .. import functional as F


class ReLU(torch.nn.ReLU):
    """Drop-in :class:`torch.nn.ReLU` (``inplace`` is computed out of place, see functional)."""

    def forward(self, input):
        return F.relu(input, self.inplace)


class LeakyReLU(torch.nn.LeakyReLU):
    """Drop-in :class:`torch.nn.LeakyReLU`."""

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope, self.inplace)


class ELU(torch.nn.ELU):
    """Drop-in :class:`torch.nn.ELU`."""

    def forward(self, input):
        return F.elu(input, self.alpha, self.inplace)


class GELU(torch.nn.GELU):
    """Drop-in :class:`torch.nn.GELU` (``approximate='none'`` or ``'tanh'``)."""

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)


class SiLU(torch.nn.SiLU):
    """Drop-in :class:`torch.nn.SiLU`."""

    def forward(self, input):
        return F.silu(input, self.inplace)


class Softplus(torch.nn.Softplus):
    """Drop-in :class:`torch.nn.Softplus`."""

    def forward(self, input):
        return F.softplus(input, self.beta, self.threshold)


class Tanh(torch.nn.Tanh):
    """Drop-in :class:`torch.nn.Tanh`."""

    def forward(self, input):
        return F.tanh(input)


class Sigmoid(torch.nn.Sigmoid):
    """Drop-in :class:`torch.nn.Sigmoid`."""

    def forward(self, input):
        return F.sigmoid(input)


# --- Softmax / LogSoftmax --- (core: softmax family)
class Softmax(torch.nn.Softmax):
    """Drop-in :class:`torch.nn.Softmax` (rule: :class:`torch_bp.ops.activation.SoftmaxFunction`).

    Args, Shape: as :class:`torch.nn.Softmax` (``dim=None`` keeps torch's legacy choice and warning).

    Example::

        >>> torch_bp.nn.Softmax(dim=1)(torch.randn(2, 3)).sum(1)
        tensor([1.0000, 1.0000], grad_fn=<SumBackward1>)
    """

    def forward(self, input):
        return F.softmax(input, self.dim, _stacklevel=5)


class LogSoftmax(torch.nn.LogSoftmax):
    """Drop-in :class:`torch.nn.LogSoftmax` (rule: :class:`torch_bp.ops.activation.LogSoftmaxFunction`)."""

    def forward(self, input):
        return F.log_softmax(input, self.dim, _stacklevel=5)
