"""``torch_bp.functional``: pooling. See the package docstring."""
from __future__ import annotations

import torch.nn.functional as TF

from ..ops import pooling as _pool
from ._checks import _pool_options, _pool_pair


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    k, s, p = _pool_options(kernel_size, stride, padding, "max_pool2d")
    d = _pool_pair(dilation, "dilation", "max_pool2d")
    out, indices = _pool.MaxPool2dFunction.apply(input, k, s, p, d, bool(ceil_mode))
    if not return_indices:
        return out
    return out, _pool.window_to_flat(indices, input.shape[-1], k, s, p, d)  # torch's flat indices


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    k, s, p = _pool_options(kernel_size, stride, padding, "avg_pool2d")
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("divisor must be not zero")
    return _pool.AvgPoolFunction.apply(input, k, s, p, bool(ceil_mode), bool(count_include_pad), divisor_override)


def adaptive_avg_pool2d(input, output_size):
    output_size = _adaptive_size(input, output_size, 2)
    return _pool.AdaptiveAvgPoolFunction.apply(input, output_size, 2)


# --- 1-d and 3-d average pooling, adaptive average pooling ---
def _tuple(value, nd, what, name):
    t = (value,) * nd if isinstance(value, int) else tuple(int(v) for v in value)
    if len(t) == 1:
        t = t * nd
    if len(t) != nd:
        raise RuntimeError(f"{name}: {what} must either be a single int, or a tuple of {nd} ints")
    return t


def _avg_poolnd(nd, name, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    k = _tuple(kernel_size, nd, "kernel_size", name)
    s = k if stride is None or (not isinstance(stride, int) and len(stride) == 0) else _tuple(stride, nd, "stride",
                                                                                              name)
    p = _tuple(padding, nd, "padding", name)
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("divisor must be not zero")
    return _pool.AvgPoolFunction.apply(input, k, s, p, bool(ceil_mode), bool(count_include_pad), divisor_override)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    return _avg_poolnd(1, "avg_pool1d", input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    return _avg_poolnd(3, "avg_pool3d", input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override)


def _adaptive_size(input, output_size, nd):
    """torch's output_size: an int for every dim, ``None`` keeps that input size (2-d/3-d: torch's ValueError
    for an input of too few dims); a wrong number of sizes is left to torch's kernel (its RuntimeError)."""
    if isinstance(output_size, int):
        return (output_size,) * nd
    output_size = tuple(output_size)
    if nd > 1 and input.dim() <= len(output_size):  # torch's Python wrapper of the 2-d/3-d kernels
        raise ValueError(f"Input dimension should be at least {len(output_size) + 1}")
    if any(v is None for v in output_size):
        output_size = tuple(v if v is not None else d for v, d in zip(output_size, input.shape[-len(output_size):]))
    return output_size


def adaptive_avg_pool1d(input, output_size):
    return _pool.AdaptiveAvgPoolFunction.apply(input, _adaptive_size(input, output_size, 1), 1)


def adaptive_avg_pool3d(input, output_size):
    return _pool.AdaptiveAvgPoolFunction.apply(input, _adaptive_size(input, output_size, 3), 3)


# --- max pooling by torch's indices (1-d, 3-d, adaptive, fractional) ---
def _max_by_index(kind, nd, input, return_indices, **options):
    out, indices = _pool.MaxIndexPoolFunction.apply(input, kind, nd, tuple(options.items()))
    return (out, indices) if return_indices else out


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if not return_indices and input.device.type == "cpu" and not input.is_floating_point():
        # torch's CPU max_pool1d without indices has a floating-point kernel only: after its shape checks it
        # raises NotImplementedError for an integer input (no gradient to take), so its own call decides.
        return TF.max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode)
    return _max_by_index("max_pool1d", 1, input, return_indices, kernel_size=kernel_size, stride=stride,
                         padding=padding, dilation=dilation, ceil_mode=ceil_mode)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    return _max_by_index("max_pool3d", 3, input, return_indices, kernel_size=kernel_size, stride=stride,
                         padding=padding, dilation=dilation, ceil_mode=ceil_mode)


def adaptive_max_pool1d(input, output_size, return_indices=False):
    return _max_by_index("adaptive_max_pool1d", 1, input, return_indices, output_size=output_size)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    return _max_by_index("adaptive_max_pool2d", 2, input, return_indices, output_size=output_size)


def adaptive_max_pool3d(input, output_size, return_indices=False):
    return _max_by_index("adaptive_max_pool3d", 3, input, return_indices, output_size=output_size)


def fractional_max_pool2d(input, kernel_size, output_size=None, output_ratio=None, return_indices=False,
                          _random_samples=None):
    return _max_by_index("fractional_max_pool2d", 2, input, return_indices, kernel_size=kernel_size,
                         output_size=output_size, output_ratio=output_ratio, _random_samples=_random_samples)


def fractional_max_pool3d(input, kernel_size, output_size=None, output_ratio=None, return_indices=False,
                          _random_samples=None):
    return _max_by_index("fractional_max_pool3d", 3, input, return_indices, kernel_size=kernel_size,
                         output_size=output_size, output_ratio=output_ratio, _random_samples=_random_samples)


# --- max unpooling ---
def _max_unpoolnd(nd, input, indices, kernel_size, stride, padding, output_size):
    k = _tuple(kernel_size, nd, "kernel_size", f"max_unpool{nd}d")
    s = k if stride is None else _tuple(stride, nd, "stride", f"max_unpool{nd}d")
    p = _tuple(padding, nd, "padding", f"max_unpool{nd}d")
    return _pool.MaxUnpoolFunction.apply(input, indices, k, s, p,
                                         None if output_size is None else tuple(output_size))


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    return _max_unpoolnd(1, input, indices, kernel_size, stride, padding, output_size)


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    return _max_unpoolnd(2, input, indices, kernel_size, stride, padding, output_size)


def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    return _max_unpoolnd(3, input, indices, kernel_size, stride, padding, output_size)


# --- power-average pooling ---
def _lp_poolnd(nd, name, input, norm_type, kernel_size, stride, ceil_mode):
    k = _tuple(kernel_size, nd, "kernel_size", name)
    s = k if stride is None else _tuple(stride, nd, "stride", name)
    return _pool.LPPoolFunction.apply(input, norm_type, k, s, bool(ceil_mode))


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    return _lp_poolnd(1, "lp_pool1d", input, norm_type, kernel_size, stride, ceil_mode)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    return _lp_poolnd(2, "lp_pool2d", input, norm_type, kernel_size, stride, ceil_mode)


def lp_pool3d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    return _lp_poolnd(3, "lp_pool3d", input, norm_type, kernel_size, stride, ceil_mode)
