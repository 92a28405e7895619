"""Fake (meta) kernels of the ops in ``csrc/cpu/embedding.cpp``: output shapes and dtypes, for
``torch.compile`` and FakeTensor. Registered by :func:`torch_bp.kernels.cpu.register_fakes`."""
from __future__ import annotations

def register(reg) -> None:
    """Register this family's fake kernels with ``reg`` (``torch.library.register_fake``)."""
    @reg("torch_bp::embedding_fwd")
    def _(indices, weight):
        return weight.new_empty((*indices.shape, weight.shape[1]))

    @reg("torch_bp::embedding_bwd")
    def _(grad_y, indices, num_weights, padding_idx, scale_grad_by_freq):
        return grad_y.new_empty((num_weights, grad_y.shape[-1]))
