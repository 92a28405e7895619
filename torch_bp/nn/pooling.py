"""Pooling modules: torch.nn's classes with forward routed through torch_bp.functional."""
from __future__ import annotations

import torch

from .. import functional as F


class MaxPool2d(torch.nn.MaxPool2d):
    """Drop-in :class:`torch.nn.MaxPool2d`; ties route the gradient as torch does
    (see :class:`torch_bp.ops.pooling.MaxPool2dFunction`).

    Example::

        >>> torch_bp.nn.MaxPool2d(3, stride=2, padding=1)(torch.randn(2, 4, 9, 9)).shape
        torch.Size([2, 4, 5, 5])
    """

    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    """Drop-in :class:`torch.nn.AvgPool2d` (ceil_mode, count_include_pad, divisor_override)."""

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    """Drop-in :class:`torch.nn.AdaptiveAvgPool2d` (``None`` in output_size keeps that input size)."""

    def forward(self, input):
        return F.adaptive_avg_pool2d(input, self.output_size)
