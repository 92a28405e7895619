"""Normalization modules: torch.nn's classes with forward routed through torch_bp.functional."""
from __future__ import annotations

import torch

from .. import functional as F


class LayerNorm(torch.nn.LayerNorm):
    """Drop-in :class:`torch.nn.LayerNorm` (same ``weight``/``bias`` names and shapes)."""

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(torch.nn.RMSNorm):
    """Drop-in :class:`torch.nn.RMSNorm`."""

    def forward(self, input):
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)
