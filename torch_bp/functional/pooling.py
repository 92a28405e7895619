"""``torch_bp.functional``: pooling. See the package docstring."""
from __future__ import annotations

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
    return _pool.AvgPool2dFunction.apply(input, k, s, p, bool(ceil_mode), bool(count_include_pad),
                                         divisor_override)


def adaptive_avg_pool2d(input, output_size):
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    else:
        output_size = tuple(output_size)
        if input.dim() <= len(output_size):
            raise ValueError(f"Input dimension should be at least {len(output_size) + 1}")
        output_size = tuple(v if v is not None else d for v, d in zip(output_size, input.shape[-len(output_size):]))
    return _pool.AdaptiveAvgPool2dFunction.apply(input, output_size)
