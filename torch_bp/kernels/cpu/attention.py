"""Fake (meta) kernels of the ops in ``csrc/cpu/attention.cpp``: output shapes and dtypes, for
``torch.compile`` and FakeTensor. Registered by :func:`torch_bp.kernels.cpu.register_fakes`."""
from __future__ import annotations

from . import acc as _acc


def register(reg) -> None:
    """Register this family's fake kernels with ``reg`` (``torch.library.register_fake``)."""
    @reg("torch_bp::attention_fwd")
    def _(q, k, v, keep, causal, scale, keep_scale):
        lse = q.new_empty(tuple(q.shape[:-1]), dtype=_acc(q.dtype))
        return q.new_empty(tuple(q.shape[:-1]) + (v.shape[-1],)), lse

    @reg("torch_bp::attention_bwd")
    def _(grad_o, q, k, v, o, lse, keep, causal, scale, keep_scale):
        return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)
