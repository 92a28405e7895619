"""Fake (meta) kernels of the ops in ``csrc/cpu/conv.cpp``: output shapes and dtypes, for
``torch.compile`` and FakeTensor. Registered by :func:`torch_bp.kernels.cpu.register_fakes`."""
from __future__ import annotations

def register(reg) -> None:
    """Register this family's fake kernels with ``reg`` (``torch.library.register_fake``)."""
    @reg("torch_bp::conv_weight_grad")
    def _(x, grad_y, kernel_size, stride, padding, dilation, groups):
        return x.new_empty((grad_y.shape[1], x.shape[1] // groups, *kernel_size))
