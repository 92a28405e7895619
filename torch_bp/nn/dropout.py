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


# --- dropout variants (rules: DropoutFunction with a per-channel mask; AlphaDropoutFunction) ---
class Dropout1d(torch.nn.Dropout1d):
    """Drop-in :class:`torch.nn.Dropout1d`: one mask bit per channel of (N, C, L) or (C, L)."""

    def forward(self, input):
        return F.dropout1d(input, self.p, self.training, self.inplace)


class Dropout2d(torch.nn.Dropout2d):
    """Drop-in :class:`torch.nn.Dropout2d` (a 3-d input is (N, C, L), as torch's, with its warning)."""

    def forward(self, input):
        return F.dropout2d(input, self.p, self.training, self.inplace)


class Dropout3d(torch.nn.Dropout3d):
    """Drop-in :class:`torch.nn.Dropout3d`: one mask bit per channel of (N, C, D, H, W) or (C, D, H, W)."""

    def forward(self, input):
        return F.dropout3d(input, self.p, self.training, self.inplace)


class AlphaDropout(torch.nn.AlphaDropout):
    """Drop-in :class:`torch.nn.AlphaDropout` (rule: :class:`torch_bp.ops.dropout.AlphaDropoutFunction`)."""

    def forward(self, input):
        return F.alpha_dropout(input, self.p, self.training)


class FeatureAlphaDropout(torch.nn.FeatureAlphaDropout):
    """Drop-in :class:`torch.nn.FeatureAlphaDropout`: alpha dropout of whole channels."""

    def forward(self, input):
        return F.feature_alpha_dropout(input, self.p, self.training)
