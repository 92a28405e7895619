"""Fake (meta) kernels of the ops in ``csrc/cpu/conv.cpp``: output shapes and dtypes, for
``torch.compile`` and FakeTensor. Registered by :func:`torch_bp.kernels.cpu.register_fakes`."""
from __future__ import annotations

import torch


def register(reg) -> None:
    """Register this family's fake kernels with ``reg`` (``torch.library.register_fake``)."""
    @reg("torch_bp::conv_weight_grad")
    def _(x, grad_y, kernel_size, stride, padding, dilation, groups):
        return x.new_empty((grad_y.shape[1], x.shape[1] // groups, *kernel_size))

    @reg("torch_bp::conv_transpose_backward")
    def _(grad_y, x, weight, stride, padding, output_padding, dilation, groups, output_mask):
        gx = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else None
        gw = torch.empty_like(weight, memory_format=torch.contiguous_format) if output_mask[1] else None
        gb = weight.new_empty((weight.shape[1] * groups,)) if output_mask[2] else None
        return gx, gw, gb
