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
