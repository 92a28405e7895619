"""Fake (meta) kernels of the ops in ``csrc/cpu/dropout.cpp``: output shapes and dtypes, for
``torch.compile`` and FakeTensor. Registered by :func:`torch_bp.kernels.cpu.register_fakes`."""
from __future__ import annotations

import torch


def register(reg) -> None:
    """Register this family's fake kernels with ``reg`` (``torch.library.register_fake``)."""
    @reg("torch_bp::pack_mask")
    def _(mask):
        return mask.new_empty(((mask.numel() + 7) // 8,), dtype=torch.uint8)

    @reg("torch_bp::dropout_fwd")
    def _(x, mask, scale):
        return torch.empty_like(x, memory_format=torch.contiguous_format)
