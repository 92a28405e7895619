"""Autocast for custom Functions, the way torch's autocast treats the built-in ops.

Autocast does not look inside an ``autograd.Function``: it would cast the matmuls in our
forward but not those in our backward, and the backward would then mix dtypes. So each
functional casts its inputs *before* the Function, with the policy torch applies to the
op it replaces, and the Function sees tensors of one dtype in forward and backward. The
casts are ordinary autograd ops, so gradients flow back to float32 master weights.
"""
from __future__ import annotations

import torch

# Ops that torch's autocast runs in the lower precision dtype (on every device).
# (bilinear is not among them: under CPU autocast torch keeps it in its input dtype.)
_LOWER_OPS = {"linear", "conv1d", "conv2d", "conv_transpose2d", "scaled_dot_product_attention",
              "rnn", "prelu"}
# Ops that torch's autocast runs in float32, per device type (the lists in
# aten/src/ATen/autocast_mode.cpp). On CPU the norms and softmax keep their input dtype.
_LOSSES = {"mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "cross_entropy", "nll_loss",
           "binary_cross_entropy_with_logits",
           "kl_div", "poisson_nll_loss", "soft_margin_loss", "hinge_embedding_loss", "margin_ranking_loss",
           "cosine_embedding_loss", "multi_margin_loss", "multilabel_margin_loss", "triplet_margin_loss"}
# binary_cross_entropy: float32 under CPU autocast; torch's CUDA autocast refuses it (unsafe).
_FP32_OPS = {
    "cpu": _LOSSES | {"binary_cross_entropy"},
    "cuda": _LOSSES | {"softmax", "log_softmax", "layer_norm", "group_norm", "rms_norm", "softplus",
                       "cosine_similarity"},
}


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
    if op in _LOWER_OPS:
        target = torch.get_autocast_dtype(dev)
    elif op in _FP32_OPS.get(dev, ()):
        target = torch.float32
    else:
        return tensors
    # torch casts only eligible tensors: floating point and not float64.
    return tuple(
        t.to(target) if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64
        else t for t in tensors
    )
