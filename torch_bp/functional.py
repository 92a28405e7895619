"""Drop-in twins of ``torch.nn.functional``: same names, positional order, keywords, defaults.

Thin on purpose: each function resolves its options (defaults, autocast, argument checks
that torch makes before its kernel runs) and calls one Function from ``torch_bp.ops``,
where the backward rule lives. Nothing here states a gradient.

NOTE: ``inplace=True`` (relu, leaky_relu, elu, silu, dropout) is accepted for signature
compatibility but computed out of place: the result is returned and the input is left
untouched, because an in-place write would put torch's CopyBackwards, not our rule, on the
output. Code that uses the returned tensor, as every module does, behaves the same.
"""
from __future__ import annotations

import torch

from ._amp import autocast_inputs
from .ops import activation as _act
from .ops import linear as _lin
from .ops import normalization as _norm


# --- linear ---
def linear(input, weight, bias=None):
    input, weight, bias = autocast_inputs("linear", input, weight, bias)
    if input.dim() == 0:
        raise RuntimeError("linear: input must have at least 1 dimension, got a 0-d tensor")
    return _lin.LinearFunction.apply(input, weight, bias)


# --- activations ---
def relu(input, inplace=False):
    return _act.ReLUFunction.apply(input)


def _floating_only(input, name):
    """torch's kernels of these layers are defined for floating dtypes only."""
    if not input.is_floating_point():
        raise NotImplementedError(f"{name}: not implemented for input of dtype {input.dtype} "
                                  "(a floating point input is needed)")


def leaky_relu(input, negative_slope=0.01, inplace=False):
    _floating_only(input, "leaky_relu")
    return _act.LeakyReLUFunction.apply(input, float(negative_slope))


def elu(input, alpha=1.0, inplace=False):
    _floating_only(input, "elu")
    return _act.ELUFunction.apply(input, float(alpha))


def gelu(input, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}")
    _floating_only(input, "gelu")
    return _act.GELUFunction.apply(input, approximate)


def silu(input, inplace=False):
    _floating_only(input, "silu")
    return _act.SiLUFunction.apply(input)


def softplus(input, beta=1.0, threshold=20.0):
    (input,) = autocast_inputs("softplus", input)
    _floating_only(input, "softplus")
    return _act.SoftplusFunction.apply(input, float(beta), float(threshold))


def tanh(input):
    return _act.TanhFunction.apply(input)


def sigmoid(input):
    return _act.SigmoidFunction.apply(input)


# --- normalization ---
def _normalized_size(input, normalized_shape, name):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if len(shape) == 0 or tuple(input.shape[input.dim() - len(shape):]) != shape or input.dim() < len(shape):
        raise RuntimeError(
            f"{name}: expected input with trailing shape {list(shape)} (normalized_shape), "
            f"but got input of size {list(input.shape)}"
        )
    d = 1
    for s in shape:
        d *= s
    return shape, d


def _check_affine(param, shape, what, name):
    if param is not None and tuple(param.shape) != shape:
        raise RuntimeError(
            f"{name}: expected {what} of shape {list(shape)} (normalized_shape), got {list(param.shape)}"
        )


def _check_norm_dtypes(input, params, name):
    """As torch's CPU kernel: parameters of the input's dtype, or float32 for a bf16/fp16 input."""
    _floating_only(input, name)
    dtypes = {p.dtype for p in params if p is not None}
    if dtypes and dtypes != {input.dtype} and not (
            input.dtype in (torch.bfloat16, torch.float16) and dtypes == {torch.float32}):
        raise RuntimeError(f"{name}: weight and bias must have the input's dtype {input.dtype} (or float32 "
                           f"for a bfloat16/float16 input), got {sorted(map(str, dtypes))}")


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-05):
    input, weight, bias = autocast_inputs("layer_norm", input, weight, bias)
    _check_norm_dtypes(input, (weight, bias), "layer_norm")
    shape, d = _normalized_size(input, normalized_shape, "layer_norm")
    _check_affine(weight, shape, "weight", "layer_norm")
    _check_affine(bias, shape, "bias", "layer_norm")
    return _norm.LayerNormFunction.apply(input, weight, bias, d, float(eps))[0]


def rms_norm(input, normalized_shape, weight=None, eps=None):
    input, weight = autocast_inputs("rms_norm", input, weight)
    _floating_only(input, "rms_norm")
    shape, d = _normalized_size(input, normalized_shape, "rms_norm")
    _check_affine(weight, shape, "weight", "rms_norm")
    if eps is None:  # torch takes the eps of the compute dtype: float32's for bfloat16/float16
        eps = torch.finfo(torch.float32 if input.dtype in (torch.bfloat16, torch.float16) else input.dtype).eps
    return _norm.RMSNormFunction.apply(input, weight, d, float(eps))[0]
