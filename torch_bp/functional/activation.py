"""``torch_bp.functional``: elementwise activations, softmax and log_softmax. See the package docstring."""
from __future__ import annotations

import torch

from .._amp import autocast_inputs
from ..ops import activation as _act
from ..ops._util import opmath
from ._checks import _real_only, _check_inplace, _floating_only, _implicit_softmax_dim


def relu(input, inplace=False):
    if inplace:
        _check_inplace(input)
    return _act.ReLUFunction.apply(input)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    _floating_only(input, "leaky_relu")
    if inplace:
        _check_inplace(input)
    return _act.LeakyReLUFunction.apply(input, float(negative_slope))


def elu(input, alpha=1.0, inplace=False):
    _floating_only(input, "elu")
    if inplace:
        _check_inplace(input)
    return _act.ELUFunction.apply(input, float(alpha))


def gelu(input, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}")
    _floating_only(input, "gelu")
    return _act.GELUFunction.apply(input, approximate)


def silu(input, inplace=False):
    _floating_only(input, "silu")
    if inplace:
        _check_inplace(input)
    return _act.SiLUFunction.apply(input)


def softplus(input, beta=1.0, threshold=20.0):
    (input,) = autocast_inputs("softplus", input)
    _floating_only(input, "softplus")
    return _act.SoftplusFunction.apply(input, float(beta), float(threshold))


def tanh(input):
    return _act.TanhFunction.apply(input)


def sigmoid(input):
    return _act.SigmoidFunction.apply(input)


def _softmax_input(input, dim, stacklevel, dtype, name):
    (input,) = autocast_inputs(name, input)
    if dim is None:
        dim = _implicit_softmax_dim(name, input.dim(), stacklevel + 1)
    if dtype is not None:
        input = input.to(dtype)  # as torch: cast first, the gradient flows back through the cast
    # A non-floating input: torch's own kernel in the rule's forward checks dim first, then
    # raises NotImplementedError (an empty input passes, as in torch).
    return input, dim


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    input, dim = _softmax_input(input, dim, _stacklevel, dtype, "softmax")
    return _act.SoftmaxFunction.apply(input, dim)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    input, dim = _softmax_input(input, dim, _stacklevel, dtype, "log_softmax")
    return _act.LogSoftmaxFunction.apply(input, dim)


# --- more elementwise activations ---
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _check_inplace_if(input, inplace):
    if inplace:
        _check_inplace(input)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    if input.dtype == torch.bool:
        raise RuntimeError("Bool inputs not supported for hardtanh")
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    _check_inplace_if(input, inplace)
    return _act.HardtanhFunction.apply(input, min_val, max_val)


def relu6(input, inplace=False):
    return hardtanh(input, 0.0, 6.0, inplace)  # as torch: relu6 is hardtanh(0, 6)


def hardswish(input, inplace=False):
    _floating_only(input, "hardswish")
    _check_inplace_if(input, inplace)
    return _act.HardswishFunction.apply(input)


def hardsigmoid(input, inplace=False):
    _floating_only(input, "hardsigmoid")
    _check_inplace_if(input, inplace)
    return _act.HardsigmoidFunction.apply(input)


def hardshrink(input, lambd=0.5):
    _floating_only(input, "hardshrink")
    return _act.HardshrinkFunction.apply(input, float(lambd))


def softshrink(input, lambd=0.5):
    _floating_only(input, "softshrink")
    if lambd < 0:
        raise RuntimeError(f"lambda must be greater or equal to 0, but found to be {lambd}.")
    return _act.SoftshrinkFunction.apply(input, float(lambd))


def threshold(input, threshold, value, inplace=False):
    if input.dtype == torch.bool:
        raise NotImplementedError("\"threshold_cpu\" not implemented for 'Bool'")
    _check_inplace_if(input, inplace)
    return _act.ThresholdFunction.apply(input, threshold, value)


def selu(input, inplace=False):
    _floating_only(input, "selu")
    _check_inplace_if(input, inplace)
    return _act.ScaledELUFunction.apply(input, _SELU_ALPHA, _SELU_SCALE, 1.0)


def celu(input, alpha=1.0, inplace=False):
    if alpha == 0:
        raise RuntimeError("ZeroDivisionError: alpha cannot be 0 for CELU")
    _floating_only(input, "celu")
    _check_inplace_if(input, inplace)
    return _act.ScaledELUFunction.apply(input, float(alpha), 1.0, 1.0 / float(alpha))


def mish(input, inplace=False):
    _floating_only(input, "mish")
    _check_inplace_if(input, inplace)
    return _act.MishFunction.apply(input)


def logsigmoid(input):
    _floating_only(input, "log_sigmoid")
    return _act.LogSigmoidFunction.apply(input)


def softsign(input):
    _real_only("softsign", input)
    if input.dtype == torch.bool:
        raise NotImplementedError("\"abs_cpu\" not implemented for 'Bool' (softsign)")
    return _act.SoftsignFunction.apply(input)


def tanhshrink(input):
    if input.dtype == torch.bool:
        raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not supported (tanhshrink)")
    return _act.TanhshrinkFunction.apply(input)


def glu(input, dim=-1):
    if input.dim() == 0:
        raise RuntimeError("glu does not support scalars because halving size must be even")
    size = input.shape[dim]  # IndexError for a dim out of range, as torch
    if size % 2:
        raise RuntimeError(f"Halving dimension must be even, but dimension {dim % input.dim()} is size {size}")
    _floating_only(input, "glu")
    return _act.GLUFunction.apply(input, dim)


def prelu(input, weight):
    if weight.dim() > 1:
        raise RuntimeError(f"prelu: Expected `weight` to be a scalar or 1D tensor, but got: ndim = {weight.dim()}")
    if weight.numel() != 1:
        if input.dim() == 0:
            raise RuntimeError("Not allow zero-dim input tensor.")
        channels = input.shape[1] if input.dim() > 1 else 1
        if channels != weight.numel():
            raise RuntimeError(f"Mismatch of parameter numbers and input channel size. Found parameter numbers = "
                               f"{weight.numel()} and channel size = {channels}.")
    if input.dim() >= 2:  # (C,) -> (1, C, 1, ...), as torch
        weight = weight.reshape((1, weight.numel()) + (1,) * (input.dim() - 2))
    elif input.dim() < weight.dim():
        weight = weight.reshape(())
    (input, weight) = autocast_inputs("prelu", input, weight)
    _floating_only(input, "prelu")
    if weight.dtype != input.dtype:
        raise RuntimeError(f"prelu: expected weight of the input's dtype {input.dtype}, got {weight.dtype}")
    return _act.PReLUFunction.apply(input, weight)


def rrelu(input, lower=1.0 / 8, upper=1.0 / 3, training=False, inplace=False):
    _floating_only(input, "rrelu")
    if lower > upper:
        raise RuntimeError("Lower bound should be less than or equal to the upper bound")
    _check_inplace_if(input, inplace)
    if not training:  # as torch: a leaky relu with the mean slope
        return _act.LeakyReLUFunction.apply(input, (lower + upper) / 2)
    if input.dtype == torch.float16 and input.device.type == "cpu":
        raise NotImplementedError("\"rrelu_with_noise_out_cpu\" not implemented for 'Half'")
    # NOTE: torch's CPU draw: one U(lower, upper) double per element x <= 0, in memory order of
    # the contiguous input, cast to opmath; the same seed draws the same slopes.
    nonpos = input.detach().contiguous() <= 0
    noise = torch.ones(input.shape, dtype=opmath(input.detach()).dtype, device=input.device)
    draw = torch.empty(int(nonpos.sum()), dtype=torch.float64, device=input.device).uniform_(lower, upper)
    noise[nonpos] = draw.to(noise.dtype)
    return _act.RReLUFunction.apply(input, noise)


def softmin(input, dim=None, _stacklevel=3, dtype=None):
    """softmin(x) = softmax(-x), as torch: the rule is :class:`~torch_bp.ops.activation.SoftmaxFunction`."""
    if dim is None:
        dim = _implicit_softmax_dim("softmin", input.dim(), _stacklevel + 1)
    return softmax(-input, dim, _stacklevel, dtype)
