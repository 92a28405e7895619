"""Fake (meta) kernels of the ops in ``csrc/cpu/activation.cpp``: output shapes and dtypes, for
``torch.compile`` and FakeTensor. Registered by :func:`torch_bp.kernels.cpu.register_fakes`."""
from __future__ import annotations

import torch


def register(reg) -> None:
    """Register this family's fake kernels with ``reg`` (``torch.library.register_fake``)."""
    for name in ("relu_fwd", "tanh_fwd", "gelu_fwd", "silu_fwd", "leaky_relu_fwd", "elu_fwd", "softplus_fwd",
                 "sigmoid_fwd", "softmax_fwd", "log_softmax_fwd"):
        reg(f"torch_bp::{name}")(lambda x, *a: torch.empty_like(x, memory_format=torch.contiguous_format))

    for name in ("gelu_bwd", "silu_bwd", "leaky_relu_bwd", "elu_bwd", "softplus_bwd", "tanh_bwd", "sigmoid_bwd"):
        reg(f"torch_bp::{name}")(lambda g, x, *a: torch.empty_like(x, memory_format=torch.contiguous_format))

    @reg("torch_bp::relu_mask")
    def _(y):
        return y.new_empty(((y.numel() + 7) // 8,), dtype=torch.uint8)

    @reg("torch_bp::mask_bwd")
    def _(grad_y, mask, scale):
        return torch.empty_like(grad_y, memory_format=torch.contiguous_format)

    for name in ("softmax_bwd", "log_softmax_bwd"):
        reg(f"torch_bp::{name}")(lambda g, y: torch.empty_like(y, memory_format=torch.contiguous_format))

    # grad_x = mask_bwd(grad_y, mask, scale) is linear in grad_y: its derivative is itself
    # (relu and dropout support double backward through it).
    def _mask_bwd_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[1], inputs[2])

    def _mask_bwd_backward(ctx, gg):
        mask, scale = ctx.saved_tensors
        return torch.ops.torch_bp.mask_bwd(gg, mask, scale), None, None

    torch.library.register_autograd("torch_bp::mask_bwd", _mask_bwd_backward, setup_context=_mask_bwd_setup)
