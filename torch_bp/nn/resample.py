"""Resampling modules (Upsample, PixelShuffle, ChannelShuffle, Fold, ...): torch.nn's classes with
forward routed through torch_bp.functional; their rules are in :mod:`torch_bp.ops.resample`."""
from __future__ import annotations

import torch

from .. import functional as F


class _UpsampleForward:
    def forward(self, input):
        return F.interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                             recompute_scale_factor=self.recompute_scale_factor)


class Upsample(_UpsampleForward, torch.nn.Upsample):
    """Drop-in :class:`torch.nn.Upsample` (every mode; backward: the adjoint interpolation).

    Example::

        >>> torch_bp.nn.Upsample(scale_factor=2, mode="bilinear")(torch.randn(1, 3, 4, 4)).shape
        torch.Size([1, 3, 8, 8])
    """


class UpsamplingNearest2d(_UpsampleForward, torch.nn.UpsamplingNearest2d):
    """Drop-in :class:`torch.nn.UpsamplingNearest2d`."""


class UpsamplingBilinear2d(_UpsampleForward, torch.nn.UpsamplingBilinear2d):
    """Drop-in :class:`torch.nn.UpsamplingBilinear2d` (align_corners=True, as torch)."""


class PixelShuffle(torch.nn.PixelShuffle):
    """Drop-in :class:`torch.nn.PixelShuffle`."""

    def forward(self, input):
        return F.pixel_shuffle(input, self.upscale_factor)


class PixelUnshuffle(torch.nn.PixelUnshuffle):
    """Drop-in :class:`torch.nn.PixelUnshuffle`."""

    def forward(self, input):
        return F.pixel_unshuffle(input, self.downscale_factor)


class ChannelShuffle(torch.nn.ChannelShuffle):
    """Drop-in :class:`torch.nn.ChannelShuffle`."""

    def forward(self, input):
        return F.channel_shuffle(input, self.groups)


class Fold(torch.nn.Fold):
    """Drop-in :class:`torch.nn.Fold` (col2im; backward: unfold)."""

    def forward(self, input):
        return F.fold(input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)


class Unfold(torch.nn.Unfold):
    """Drop-in :class:`torch.nn.Unfold` (im2col; backward: fold)."""

    def forward(self, input):
        return F.unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)
