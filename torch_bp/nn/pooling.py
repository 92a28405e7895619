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


# --- 1-d / 3-d, adaptive, fractional pooling and unpooling (the rules of torch_bp.ops.pooling) ---
class MaxPool1d(torch.nn.MaxPool1d):
    """Drop-in :class:`torch.nn.MaxPool1d` (backward: scatter-add at torch's indices)."""

    def forward(self, input):
        return F.max_pool1d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class MaxPool3d(torch.nn.MaxPool3d):
    """Drop-in :class:`torch.nn.MaxPool3d` (backward: scatter-add at torch's indices)."""

    def forward(self, input):
        return F.max_pool3d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool1d(torch.nn.AvgPool1d):
    """Drop-in :class:`torch.nn.AvgPool1d`."""

    def forward(self, input):
        return F.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)


class AvgPool3d(torch.nn.AvgPool3d):
    """Drop-in :class:`torch.nn.AvgPool3d`."""

    def forward(self, input):
        return F.avg_pool3d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool1d(torch.nn.AdaptiveAvgPool1d):
    """Drop-in :class:`torch.nn.AdaptiveAvgPool1d`."""

    def forward(self, input):
        return F.adaptive_avg_pool1d(input, self.output_size)


class AdaptiveAvgPool3d(torch.nn.AdaptiveAvgPool3d):
    """Drop-in :class:`torch.nn.AdaptiveAvgPool3d`."""

    def forward(self, input):
        return F.adaptive_avg_pool3d(input, self.output_size)


class _AdaptiveMaxForward:
    _nd = 0

    def forward(self, input):
        fn = (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)[self._nd - 1]
        return fn(input, self.output_size, self.return_indices)


class AdaptiveMaxPool1d(_AdaptiveMaxForward, torch.nn.AdaptiveMaxPool1d):
    """Drop-in :class:`torch.nn.AdaptiveMaxPool1d`."""

    _nd = 1


class AdaptiveMaxPool2d(_AdaptiveMaxForward, torch.nn.AdaptiveMaxPool2d):
    """Drop-in :class:`torch.nn.AdaptiveMaxPool2d`."""

    _nd = 2


class AdaptiveMaxPool3d(_AdaptiveMaxForward, torch.nn.AdaptiveMaxPool3d):
    """Drop-in :class:`torch.nn.AdaptiveMaxPool3d`."""

    _nd = 3


class FractionalMaxPool2d(torch.nn.FractionalMaxPool2d):
    """Drop-in :class:`torch.nn.FractionalMaxPool2d` (random window placement drawn as torch draws it)."""

    def forward(self, input):
        return F.fractional_max_pool2d(input, self.kernel_size, self.output_size, self.output_ratio,
                                       self.return_indices, _random_samples=self._random_samples)


class FractionalMaxPool3d(torch.nn.FractionalMaxPool3d):
    """Drop-in :class:`torch.nn.FractionalMaxPool3d` (random window placement drawn as torch draws it)."""

    def forward(self, input):
        return F.fractional_max_pool3d(input, self.kernel_size, self.output_size, self.output_ratio,
                                       self.return_indices, _random_samples=self._random_samples)


class _MaxUnpoolForward:
    _nd = 0

    def forward(self, input, indices, output_size=None):
        fn = (F.max_unpool1d, F.max_unpool2d, F.max_unpool3d)[self._nd - 1]
        return fn(input, indices, self.kernel_size, self.stride, self.padding, output_size)


class MaxUnpool1d(_MaxUnpoolForward, torch.nn.MaxUnpool1d):
    """Drop-in :class:`torch.nn.MaxUnpool1d` (backward: a gather at the indices)."""

    _nd = 1


class MaxUnpool2d(_MaxUnpoolForward, torch.nn.MaxUnpool2d):
    """Drop-in :class:`torch.nn.MaxUnpool2d` (backward: a gather at the indices)."""

    _nd = 2


class MaxUnpool3d(_MaxUnpoolForward, torch.nn.MaxUnpool3d):
    """Drop-in :class:`torch.nn.MaxUnpool3d` (backward: a gather at the indices)."""

    _nd = 3


class _LPPoolForward:
    _nd = 0

    def forward(self, input):
        fn = (F.lp_pool1d, F.lp_pool2d, F.lp_pool3d)[self._nd - 1]
        return fn(input, float(self.norm_type), self.kernel_size, self.stride, self.ceil_mode)


class LPPool1d(_LPPoolForward, torch.nn.LPPool1d):
    """Drop-in :class:`torch.nn.LPPool1d` (backward: :class:`torch_bp.ops.pooling.LPPoolFunction`)."""

    _nd = 1


class LPPool2d(_LPPoolForward, torch.nn.LPPool2d):
    """Drop-in :class:`torch.nn.LPPool2d` (backward: :class:`torch_bp.ops.pooling.LPPoolFunction`)."""

    _nd = 2


class LPPool3d(_LPPoolForward, torch.nn.LPPool3d):
    """Drop-in :class:`torch.nn.LPPool3d` (backward: :class:`torch_bp.ops.pooling.LPPoolFunction`)."""

    _nd = 3
