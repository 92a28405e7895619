"""Fake (meta) kernels of the ops in ``csrc/cpu/linear.cpp``: output shapes and dtypes, for
``torch.compile`` and FakeTensor. Registered by :func:`torch_bp.kernels.cpu.register_fakes`."""
from __future__ import annotations

import torch


def register(reg) -> None:
    """Register this family's fake kernels with ``reg`` (``torch.library.register_fake``)."""
    @reg("torch_bp::bias_act_fwd")
    def _(h, bias, activation, approximate):
        bits = (h.numel() + 7) // 8 if activation == "relu" else 0
        return torch.empty_like(h, memory_format=torch.contiguous_format), h.new_empty((bits,), dtype=torch.uint8)

    @reg("torch_bp::bias_act_bwd")
    def _(grad_y, saved, bias, activation, approximate, bias_grad):
        return grad_y.new_empty(grad_y.shape), (torch.empty_like(bias) if bias_grad else None)
