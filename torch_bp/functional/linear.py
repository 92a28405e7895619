"""``torch_bp.functional``: linear and the fused linear + activation. See the package docstring."""
from __future__ import annotations

from .._amp import autocast_inputs
from ..ops import linear as _lin


def linear(input, weight, bias=None):
    input, weight, bias = autocast_inputs("linear", input, weight, bias)
    if input.dim() == 0:
        raise RuntimeError("linear: input must have at least 1 dimension, got a 0-d tensor")
    return _lin.LinearFunction.apply(input, weight, bias)


def linear_activation(input, weight, bias=None, activation="relu", approximate="none"):
    """``activation(linear(input, weight, bias))``, the bias and the activation applied in one pass
    after the matmul (:class:`~torch_bp.ops.linear.BiasActivationFunction`). torch_bp only (no
    torch.nn.functional twin). ``activation``: ``"relu"``, ``"gelu"`` (with ``approximate``
    ``"none"`` or ``"tanh"``, as :func:`gelu`) or ``"silu"``.
    """
    input, weight, bias = autocast_inputs("linear_activation", input, weight, bias)
    if activation not in ("relu", "gelu", "silu"):
        raise ValueError(f"linear_activation: activation must be 'relu', 'gelu' or 'silu', got {activation!r}")
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}")
    if input.dim() == 0:
        raise RuntimeError("linear: input must have at least 1 dimension, got a 0-d tensor")
    if bias is not None and bias.dtype != input.dtype:
        # as torch's linear (addmm) does for a bias of another dtype
        raise RuntimeError(f"linear_activation: bias of dtype {bias.dtype} does not match input dtype {input.dtype}")
    h = _lin.LinearFunction.apply(input, weight, None)
    return _lin.BiasActivationFunction.apply(h, bias, activation, approximate)[0]
