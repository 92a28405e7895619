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


# --- more activations (rules: torch_bp.ops.activation; each forward passes the module's options) ---
class Hardtanh(torch.nn.Hardtanh):
    """Drop-in :class:`torch.nn.Hardtanh`."""

    def forward(self, input):
        return F.hardtanh(input, self.min_val, self.max_val, self.inplace)


class ReLU6(torch.nn.ReLU6):
    """Drop-in :class:`torch.nn.ReLU6` (hardtanh(0, 6), as torch)."""

    def forward(self, input):
        return F.relu6(input, self.inplace)


class Hardswish(torch.nn.Hardswish):
    """Drop-in :class:`torch.nn.Hardswish`."""

    def forward(self, input):
        return F.hardswish(input, self.inplace)


class Hardsigmoid(torch.nn.Hardsigmoid):
    """Drop-in :class:`torch.nn.Hardsigmoid`."""

    def forward(self, input):
        return F.hardsigmoid(input, self.inplace)


class Hardshrink(torch.nn.Hardshrink):
    """Drop-in :class:`torch.nn.Hardshrink`."""

    def forward(self, input):
        return F.hardshrink(input, self.lambd)


class Softshrink(torch.nn.Softshrink):
    """Drop-in :class:`torch.nn.Softshrink`."""

    def forward(self, input):
        return F.softshrink(input, self.lambd)


class Threshold(torch.nn.Threshold):
    """Drop-in :class:`torch.nn.Threshold`."""

    def forward(self, input):
        return F.threshold(input, self.threshold, self.value, self.inplace)


class SELU(torch.nn.SELU):
    """Drop-in :class:`torch.nn.SELU`."""

    def forward(self, input):
        return F.selu(input, self.inplace)


class CELU(torch.nn.CELU):
    """Drop-in :class:`torch.nn.CELU`."""

    def forward(self, input):
        return F.celu(input, self.alpha, self.inplace)


class Mish(torch.nn.Mish):
    """Drop-in :class:`torch.nn.Mish`."""

    def forward(self, input):
        return F.mish(input, self.inplace)


class LogSigmoid(torch.nn.LogSigmoid):
    """Drop-in :class:`torch.nn.LogSigmoid`."""

    def forward(self, input):
        return F.logsigmoid(input)


class Softsign(torch.nn.Softsign):
    """Drop-in :class:`torch.nn.Softsign`."""

    def forward(self, input):
        return F.softsign(input)


class Tanhshrink(torch.nn.Tanhshrink):
    """Drop-in :class:`torch.nn.Tanhshrink`."""

    def forward(self, input):
        return F.tanhshrink(input)


class GLU(torch.nn.GLU):
    """Drop-in :class:`torch.nn.GLU`."""

    def forward(self, input):
        return F.glu(input, self.dim)


class PReLU(torch.nn.PReLU):
    """Drop-in :class:`torch.nn.PReLU` (parameter ``weight``, as torch's)."""

    def forward(self, input):
        return F.prelu(input, self.weight)


class RReLU(torch.nn.RReLU):
    """Drop-in :class:`torch.nn.RReLU` (training: random slopes, torch's draw on CPU; eval: the mean slope)."""

    def forward(self, input):
        return F.rrelu(input, self.lower, self.upper, self.training, self.inplace)


class Softmin(torch.nn.Softmin):
    """Drop-in :class:`torch.nn.Softmin`: softmax(-x) (rule: :class:`torch_bp.ops.activation.SoftmaxFunction`)."""

    def forward(self, input):
        return F.softmin(input, self.dim, _stacklevel=5)


class Softmax2d(torch.nn.Softmax2d):
    """Drop-in :class:`torch.nn.Softmax2d`: softmax over the channels, dim -3 of a (C, H, W) or
    (N, C, H, W) input (rule: :class:`torch_bp.ops.activation.SoftmaxFunction`)."""

    def forward(self, input):
        if input.dim() not in (3, 4):
            raise ValueError(f"Softmax2d: expected input to be 3D or 4D, got {input.dim()}D instead")
        return F.softmax(input, -3, _stacklevel=5)
