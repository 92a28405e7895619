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


def bilinear(input1, input2, weight, bias=None):
    """torch's ``F.bilinear`` (rule: :class:`~torch_bp.ops.linear.BilinearFunction`)."""
    if input1.dim() != input2.dim():
        raise RuntimeError(f"bilinear(): input dimensions do not match: got {input1.dim()} and {input2.dim()}")
    if input1.dim() == 0:
        raise RuntimeError("bilinear(): inputs must have at least 1 dimension, got 0-d tensors")
    if input1.shape[:-1] != input2.shape[:-1]:
        raise RuntimeError(f"bilinear(): input batch dimensions do not match: got {list(input1.shape[:-1])} and "
                           f"{list(input2.shape[:-1])}")
    if weight.dim() != 3:
        raise RuntimeError(f"bilinear(): weight must be 3-d (out, in1, in2), got {weight.dim()}-d")
    if input1.shape[-1] != weight.shape[1]:
        raise RuntimeError(f"bilinear(): input1 size does not match weight size: got {input1.shape[-1]} but "
                           f"expected {weight.shape[1]}")
    if input2.shape[-1] != weight.shape[2]:
        raise RuntimeError(f"bilinear(): input2 size does not match weight size: got {input2.shape[-1]} but "
                           f"expected {weight.shape[2]}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise RuntimeError(f"bilinear(): bias size does not match weight size: got {list(bias.shape)} but "
                           f"expected [{weight.shape[0]}]")
    dtypes = {t.dtype for t in (input1, input2, weight, bias) if t is not None}
    if len(dtypes) > 1:
        raise RuntimeError(f"bilinear(): expected all tensors of one dtype, got {sorted(map(str, dtypes))}")
    if not input1.is_floating_point():
        raise NotImplementedError(f"bilinear: not implemented for input of dtype {input1.dtype}")
    return _lin.BilinearFunction.apply(input1, input2, weight, bias)
