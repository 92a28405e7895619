"""Linear layers (subclasses of torch.nn's, so state_dicts and isinstance checks carry over)."""
from __future__ import annotations

import torch

from .. import functional as F


class Linear(torch.nn.Linear):
    r"""Drop-in :class:`torch.nn.Linear` whose backward is :class:`torch_bp.ops.linear.LinearFunction`.

    Args, Shape and parameters: as :class:`torch.nn.Linear`.

    Example::

        >>> m = torch_bp.nn.Linear(20, 30)
        >>> m(torch.randn(128, 20)).shape
        torch.Size([128, 30])
    """

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)


class Bilinear(torch.nn.Bilinear):
    """Drop-in :class:`torch.nn.Bilinear` (rule: :class:`torch_bp.ops.linear.BilinearFunction`)."""

    def forward(self, input1, input2):
        return F.bilinear(input1, input2, self.weight, self.bias)
