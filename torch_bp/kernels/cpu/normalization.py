"""Fake (meta) kernels of the ops in ``csrc/cpu/normalization.cpp``: output shapes and dtypes, for
``torch.compile`` and FakeTensor. Registered by :func:`torch_bp.kernels.cpu.register_fakes`."""
from __future__ import annotations

import torch

from . import acc as _acc


def register(reg) -> None:
    """Register this family's fake kernels with ``reg`` (``torch.library.register_fake``)."""
    @reg("torch_bp::layer_norm_fwd")
    def _(x, weight, bias, d, eps):
        n = x.numel() // d
        return (torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty((n, 1), dtype=_acc(x.dtype)),
                x.new_empty((n, 1), dtype=_acc(x.dtype)))

    @reg("torch_bp::layer_norm_bwd")
    def _(grad_y, x, weight, mean, rstd, d, output_mask):
        gx = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else None
        gw = torch.empty_like(weight, memory_format=torch.contiguous_format) \
            if output_mask[1] and weight is not None else None
        gb = x.new_empty((d,)) if output_mask[2] else None
        return gx, gw, gb

    @reg("torch_bp::rms_norm_fwd")
    def _(x, weight, d, eps):
        return (torch.empty_like(x, memory_format=torch.contiguous_format),
                x.new_empty((x.numel() // d, 1), dtype=_acc(x.dtype)))

    @reg("torch_bp::rms_norm_bwd")
    def _(grad_y, x, weight, rstd, d, output_mask):
        gx = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else None
        gw = torch.empty_like(weight, memory_format=torch.contiguous_format) \
            if output_mask[1] and weight is not None else None
        return gx, gw

    @reg("torch_bp::batch_norm_fwd")
    def _(x, weight, bias, mean, var, eps):
        c = x.shape[1]
        return (torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty((c,), dtype=_acc(x.dtype)),
                x.new_empty((c,), dtype=_acc(x.dtype)))

    @reg("torch_bp::batch_norm_bwd")
    def _(grad_y, x, weight, mean, var, training, eps, output_mask):
        gx = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else None
        gw = torch.empty_like(weight, memory_format=torch.contiguous_format) \
            if output_mask[1] and weight is not None else None
        gb = x.new_empty((x.shape[1],)) if output_mask[2] else None
        return gx, gw, gb

    @reg("torch_bp::batch_norm_relu_fwd")
    def _(x, weight, bias, mean, var, eps):
        c = x.shape[1]
        return (torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty((c,), dtype=_acc(x.dtype)),
                x.new_empty((c,), dtype=_acc(x.dtype)))

    @reg("torch_bp::batch_norm_relu_bwd")
    def _(grad_y, x, weight, bias, mean, var, training, eps, output_mask):
        gx = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else None
        gw = torch.empty_like(weight, memory_format=torch.contiguous_format) \
            if output_mask[1] and weight is not None else None
        gb = x.new_empty((x.shape[1],)) if output_mask[2] else None
        return gx, gw, gb

    @reg("torch_bp::group_norm_fwd")
    def _(x, weight, bias, groups, eps):
        stats = (x.shape[0], groups, 1)
        return (torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(stats, dtype=_acc(x.dtype)),
                x.new_empty(stats, dtype=_acc(x.dtype)))

    @reg("torch_bp::group_norm_bwd")
    def _(grad_y, x, weight, mean, rstd, groups, output_mask):
        gx = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else None
        gw = torch.empty_like(weight, memory_format=torch.contiguous_format) \
            if output_mask[1] and weight is not None else None
        gb = x.new_empty((x.shape[1],)) if output_mask[2] else None
        return gx, gw, gb
