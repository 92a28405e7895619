"""Dropout module: torch.nn's class with forward routed through torch_bp.functional."""
from __future__ import annotations

import torch

from .. import functional as F


class Dropout(torch.nn.Dropout):
    """Drop-in :class:`torch.nn.Dropout` (rule: :class:`torch_bp.ops.dropout.DropoutFunction`).

    Args, Shape: as :class:`torch.nn.Dropout`. On CPU the same seed draws the same mask as
    torch's. ``inplace=True`` is computed out of place (see :mod:`torch_bp.functional`).

    Example::

        >>> m = torch_bp.nn.Dropout(p=0.2)
        >>> m(torch.randn(20, 16)).shape
        torch.Size([20, 16])
    """

    def forward(self, input):
        return F.dropout(input, self.p, self.training, self.inplace)
