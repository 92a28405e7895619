"""Fake (meta) kernels of the ops in ``csrc/cpu/loss.cpp``: output shapes and dtypes, for
``torch.compile`` and FakeTensor. Registered by :func:`torch_bp.kernels.cpu.register_fakes`."""
from __future__ import annotations

import torch

from . import acc as _acc


def register(reg) -> None:
    """Register this family's fake kernels with ``reg`` (``torch.library.register_fake``)."""
    for name in ("pointwise_loss_bwd", "bce_with_logits_bwd"):
        reg(f"torch_bp::{name}")(lambda g, x, *a: torch.empty_like(x, memory_format=torch.contiguous_format))

    def _loss_fwd(x, reduction):
        return torch.empty_like(x, memory_format=torch.contiguous_format) if reduction == "none" else x.new_empty(())

    reg("torch_bp::pointwise_loss_fwd")(lambda x, t, loss, reduction, delta, scale: _loss_fwd(x, reduction))

    reg("torch_bp::bce_with_logits_fwd")(lambda x, t, w, pw, reduction: _loss_fwd(x, reduction))

    @reg("torch_bp::cross_entropy_fwd")
    def _(x, target, weight, reduction, ignore_index, label_smoothing):
        n = x.shape[0]
        loss = x.new_empty((n,) if reduction == "none" else ())
        return loss, x.new_empty((n, 1), dtype=_acc(x.dtype)), x.new_empty((n, 1), dtype=_acc(x.dtype))

    @reg("torch_bp::cross_entropy_bwd")
    def _(grad_out, x, target, weight, m, s, reduction, ignore_index, label_smoothing):
        return torch.empty_like(x, memory_format=torch.contiguous_format)
