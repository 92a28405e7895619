"""Fake (meta) kernels of the ops in ``csrc/cpu/pooling.cpp``: output shapes and dtypes, for
``torch.compile`` and FakeTensor. Registered by :func:`torch_bp.kernels.cpu.register_fakes`."""
from __future__ import annotations

import torch


def register(reg) -> None:
    """Register this family's fake kernels with ``reg`` (``torch.library.register_fake``)."""
    @reg("torch_bp::max_pool2d_fwd")
    def _(x, kernel_size, stride, padding, dilation, ho, wo):
        shape = tuple(x.shape[:-2]) + (ho, wo)
        dtype = torch.uint8 if kernel_size[0] * kernel_size[1] <= 256 else torch.int32
        return x.new_empty(shape), x.new_empty(shape, dtype=dtype)

    @reg("torch_bp::max_pool2d_bwd")
    def _(grad_y, idx, x_size, kernel_size, stride, padding, dilation):
        return grad_y.new_empty(x_size)

    @reg("torch_bp::avg_pool2d_fwd")
    def _(x, kernel_size, stride, padding, count_include_pad, divisor_override, ho, wo):
        return x.new_empty(tuple(x.shape[:-2]) + (ho, wo))

    @reg("torch_bp::avg_pool2d_bwd")
    def _(grad_y, x_size, kernel_size, stride, padding, count_include_pad, divisor_override):
        return grad_y.new_empty(x_size)
