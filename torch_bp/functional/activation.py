"""``torch_bp.functional``: elementwise activations, softmax and log_softmax. See the package docstring."""
from __future__ import annotations

from .._amp import autocast_inputs
from ..ops import activation as _act
from ._checks import _check_inplace, _floating_only, _implicit_softmax_dim


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
