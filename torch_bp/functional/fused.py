"""``torch_bp.functional``: fused pairs of layers (the rules of ``torch_bp.ops.fused``), torch_bp only.

What the fusion pass of ``torch_bp.convert`` calls in place of two modules (docs/fusion.md); each equals
its two torch functionals one after the other.
"""
from __future__ import annotations

from ..ops import fused as _fused
from .normalization import _batch_norm


def batch_norm_relu(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                    eps=1e-05):
    """``relu(batch_norm(input, ...))`` with :func:`batch_norm`'s signature, checks and running-statistics
    update (:class:`~torch_bp.ops.fused.BatchNormReLUFunction`)."""
    return _batch_norm(_fused.BatchNormReLUFunction, input, running_mean, running_var, weight, bias, training,
                       momentum, eps)
