"""``torch_bp.functional``: resampling (interpolate, pixel/channel shuffle, fold/unfold). See the package docstring."""
from __future__ import annotations

import warnings

from ..ops import resample as _resample


def _seq(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    # torch's own checks (mode, sizes, align_corners, antialias) run in the forward
    opts = _resample.InterpolateOptions(_seq(size), _seq(scale_factor), mode, align_corners, recompute_scale_factor,
                                        antialias)
    return _resample.InterpolateFunction.apply(input, opts)


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    warnings.warn("`nn.functional.upsample` is deprecated. Use `nn.functional.interpolate` instead.", stacklevel=2)
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input, size=None, scale_factor=None):
    warnings.warn("`nn.functional.upsample_nearest` is deprecated. Use `nn.functional.interpolate` instead.",
                  stacklevel=2)
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input, size=None, scale_factor=None):
    warnings.warn("`nn.functional.upsample_bilinear` is deprecated. Use `nn.functional.interpolate` instead.",
                  stacklevel=2)
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


def pixel_shuffle(input, upscale_factor):
    return _resample.PixelShuffleFunction.apply(input, int(upscale_factor), False)


def pixel_unshuffle(input, downscale_factor):
    return _resample.PixelShuffleFunction.apply(input, int(downscale_factor), True)


def channel_shuffle(input, groups):
    return _resample.ChannelShuffleFunction.apply(input, int(groups))


def _pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    opts = _resample.FoldOptions(_pair(kernel_size), _pair(dilation), _pair(padding), _pair(stride))
    return _resample.FoldFunction.apply(input, None, opts, False)


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    opts = _resample.FoldOptions(_pair(kernel_size), _pair(dilation), _pair(padding), _pair(stride))
    return _resample.FoldFunction.apply(input, _pair(output_size), opts, True)
