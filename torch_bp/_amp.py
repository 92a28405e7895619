"""Autocast for custom Functions, the way torch's autocast treats the built-in ops.

Autocast does not look inside an ``autograd.Function``: it would cast the matmuls in our
forward but not those in our backward, and the backward would then mix dtypes. So each
functional casts its inputs *before* the Function, with the policy torch applies to the
op it replaces, and the Function sees tensors of one dtype in forward and backward. The
casts are ordinary autograd ops, so gradients flow back to float32 master weights.
"""
from __future__ import annotations

import torch

# The policy of each layer is its registry row's ``autocast`` (torch_bp/registry.py), the one torch's
# autocast applies to the op it replaces (the lists in aten/src/ATen/autocast_mode.cpp):
#   "lower"     the autocast dtype (float16/bfloat16) on every device
#   "fp32"      float32 on every device
#   "fp32_cuda" float32 on CUDA, the input's dtype on CPU (the norms and softmax)
#   "lower_cuda" the autocast dtype on CUDA, the input's dtype on CPU (the recurrent cells)
#   ""          the input's dtype


def _device_type(tensors) -> str | None:
    for t in tensors:
        if isinstance(t, torch.Tensor):
            return t.device.type
    return None


def autocast_inputs(op: str, *tensors):
    """Cast floating ``tensors`` as torch's autocast would for ``op``; unchanged outside autocast.

    Returns the tuple of (possibly cast) tensors; non-tensors and ``None`` pass through.
    """
    dev = _device_type(tensors)
    if dev is None or not torch.is_autocast_enabled(dev):
        return tensors
    from .registry import autocast_policy  # only under autocast: the registry imports the functionals

    policy = autocast_policy(op)
    if policy == "lower" or (policy == "lower_cuda" and dev == "cuda"):
        target = torch.get_autocast_dtype(dev)
    elif policy == "fp32" or (policy == "fp32_cuda" and dev == "cuda"):
        target = torch.float32
    else:
        return tensors
    # torch casts only eligible tensors: floating point and not float64.
    return tuple(
        t.to(target) if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64
        else t for t in tensors
    )
