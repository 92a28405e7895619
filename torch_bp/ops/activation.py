r"""Elementwise activations and softmax.

Conventions (the same as torch's):
- relu'(0) = 0; leaky_relu'(0) = negative_slope; elu'(0) = alpha (the x <= 0 branch).
- softplus is linear above ``threshold`` (beta * x > threshold), with derivative 1 there.

Every backward here is written with differentiable tensor ops, so these rules support
double backward (``gradgradcheck``).

Compiled (csrc/cpu/activation.cpp), one pass each way: leaky_relu, elu, gelu, silu, softplus,
tanh, sigmoid, softmax and log_softmax (over the last dim; one row at a time); relu's forward
and its backward from a 1-bit mask.
"""
from __future__ import annotations

import functools
import math

import torch

from .. import backend
from . import _lean
from ._util import opmath, sum_to_size
from ._rule import Rule


# --- ReLU ---
class ReLUFunction(Rule):
    r"""Forward: y = max(x, 0).   Backward: grad_x = grad_y * [not y <= 0].
    Saved: the mask [y <= 0] (bool, 1 byte per element), not y; compiled backend: [not y <= 0],
           1 bit per element                                                     Double backward: yes
    Lean:  y itself is not kept, so if x has a recompute recipe x = g(h) (a batch norm's output,
           ops/_lean.py), records y = relu(g(h)): a conv that follows saves h instead of y
    NOTE: written as "zero where y <= 0", as torch's threshold_backward, so that grad_y passes
    through where x is NaN (y = NaN), exactly as in torch.
    """

    compiled = ("relu_fwd", "relu_mask", "mask_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        if backend.use_cpp(x, op="relu_fwd"):  # the same function, compiled (csrc/cpu/activation.cpp)
            return torch.ops.torch_bp.relu_fwd(x)
        return torch.relu(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.packed = backend.use_cpp(output, op="relu_mask")  # compiled: saves [not y <= 0], 1 bit per element
        ctx.save_for_backward(torch.ops.torch_bp.relu_mask(output) if ctx.packed else output <= 0)
        lean = _lean.recipe(inputs[0])
        if lean is not None:
            _lean.record(output, lean[0], functools.partial(_relu_again, lean[1]), *_lean.deps(inputs[0]))

    @staticmethod
    def backward(ctx, grad_y):
        (mask,) = ctx.saved_tensors
        if ctx.packed:  # the bit mask (csrc/cpu/activation.cpp)
            return torch.ops.torch_bp.mask_bwd(grad_y, mask, None)
        return grad_y.masked_fill(mask, 0)  # mask = [y <= 0]: relu_grad with the comparison done


def _relu_again(f, h: torch.Tensor) -> torch.Tensor:
    """relu(f(h)) once more (a lean rule's recompute recipe); differentiable under create_graph."""
    x = f(h)
    return ReLUFunction.apply(x) if torch.is_grad_enabled() else torch.relu(x)


def relu_grad(y: torch.Tensor, grad_y: torch.Tensor) -> torch.Tensor:
    """grad_y where not y <= 0, else 0: the backward rule of :class:`ReLUFunction` (shared by fused
    rules). y is relu's output or its input alike: y <= 0 exactly where x <= 0."""
    return grad_y.masked_fill(y <= 0, 0)


# --- LeakyReLU ---
class LeakyReLUFunction(Rule):
    r"""Forward: y = x if x > 0 else s x.   Backward: grad_x = grad_y * (1 if x > 0 else s).
    Saved: x                                Double backward: yes
    """

    compiled = ("leaky_relu_fwd", "leaky_relu_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, negative_slope):
        if backend.use_cpp(x):  # the same rule, compiled (csrc/cpu/activation.cpp)
            return torch.ops.torch_bp.leaky_relu_fwd(x, negative_slope)
        return torch.where(x > 0, x, x * negative_slope)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.negative_slope = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        if backend.use_cpp(x, grad_y):
            return torch.ops.torch_bp.leaky_relu_bwd(grad_y, x, ctx.negative_slope), None
        return torch.where(x > 0, grad_y, grad_y * ctx.negative_slope), None


# --- ELU ---
class ELUFunction(Rule):
    r"""Forward: y = x if x > 0 else a (e^x - 1).
    Backward: grad_x = grad_y if x > 0 else grad_y * a e^x.
    Saved: x                                Double backward: yes
    """

    compiled = ("elu_fwd", "elu_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, alpha):
        if backend.use_cpp(x):  # the same rule, compiled (csrc/cpu/activation.cpp)
            return torch.ops.torch_bp.elu_fwd(x, alpha)
        xf = opmath(x)
        return torch.where(xf > 0, xf, alpha * torch.expm1(xf)).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.alpha = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        if backend.use_cpp(x, grad_y):
            return torch.ops.torch_bp.elu_bwd(grad_y, x, ctx.alpha), None
        xf, gf = opmath(x), opmath(grad_y)
        grad_x = torch.where(xf > 0, gf, gf * ctx.alpha * torch.exp(xf))
        return grad_x.to(grad_y.dtype), None


# --- GELU ---
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GELUFunction(Rule):
    r"""Gaussian error linear unit.

    Exact ('none'):  y = x Phi(x),                    y' = Phi(x) + x phi(x)
    Tanh ('tanh'):   u = k (x + c x^3), t = tanh(u),  y = x (1 + t) / 2
                     y' = (1 + t) / 2 + x (1 - t^2) k (1 + 3 c x^2) / 2
                     with k = sqrt(2 / pi), c = 0.044715
    Saved: x                                          Double backward: yes
    Lean:  records y = gelu(x) as a recompute recipe (ops/_lean.py), so a linear that follows
           saves x (kept here anyway) instead of y and recomputes y in its backward; not under
           torch.compile tracing or torch.func transforms
    """

    compiled = ("gelu_fwd", "gelu_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, approximate):
        if backend.use_cpp(x, op="gelu_fwd"):  # the same rule, compiled (csrc/cpu/activation.cpp)
            return torch.ops.torch_bp.gelu_fwd(x, approximate)
        xf = opmath(x)
        if approximate == "tanh":
            y = 0.5 * xf * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (xf + 0.044715 * xf.pow(3))))
        else:
            y = xf * 0.5 * (1.0 + torch.erf(xf * _INV_SQRT_2))
        return y.to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.approximate = inputs
        ctx.save_for_backward(x)
        _lean.record(output, x, functools.partial(_gelu_again, ctx.approximate))

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        if backend.use_cpp(x, grad_y, op="gelu_bwd"):
            return torch.ops.torch_bp.gelu_bwd(grad_y, x, ctx.approximate), None
        return gelu_grad(x, grad_y, ctx.approximate), None


def _gelu_again(approximate: str, x: torch.Tensor) -> torch.Tensor:
    """The forward of :class:`GELUFunction` once more (a lean rule's recompute recipe)."""
    return GELUFunction.apply(x, approximate)


def gelu_grad(x: torch.Tensor, grad_y: torch.Tensor, approximate: str) -> torch.Tensor:
    """grad_y * gelu'(x), the backward rule of :class:`GELUFunction` (shared by fused rules)."""
    xf, gf = opmath(x), opmath(grad_y)
    if approximate == "tanh":
        x2 = xf * xf
        t = torch.tanh(_SQRT_2_OVER_PI * (xf + 0.044715 * x2 * xf))
        d = 0.5 * (1.0 + t) + 0.5 * xf * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x2)
    else:
        d = 0.5 * (1.0 + torch.erf(xf * _INV_SQRT_2)) + xf * _INV_SQRT_2PI * torch.exp(-0.5 * xf * xf)
    return (gf * d).to(grad_y.dtype)


# --- SiLU ---
class SiLUFunction(Rule):
    r"""Forward: y = x s(x), s the logistic sigmoid.   Backward: grad_x = grad_y s (1 + x (1 - s)).
    Saved: x                                           Double backward: yes
    Lean:  records y = silu(x) as a recompute recipe (ops/_lean.py), as GELU: a linear or the
           SwiGLU product that follows saves x (kept here anyway) instead of y
    """

    compiled = ("silu_fwd", "silu_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        if backend.use_cpp(x, op="silu_fwd"):  # the same rule, compiled (csrc/cpu/activation.cpp)
            return torch.ops.torch_bp.silu_fwd(x)
        xf = opmath(x)
        return (xf * torch.sigmoid(xf)).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        _lean.record(output, inputs[0], _silu_again)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        if backend.use_cpp(x, grad_y, op="silu_bwd"):
            return torch.ops.torch_bp.silu_bwd(grad_y, x)
        return silu_grad(x, grad_y)


def _silu_again(x: torch.Tensor) -> torch.Tensor:
    """The forward of :class:`SiLUFunction` once more (a lean rule's recompute recipe)."""
    return SiLUFunction.apply(x)


def silu_grad(x: torch.Tensor, grad_y: torch.Tensor) -> torch.Tensor:
    """grad_y * silu'(x), the backward rule of :class:`SiLUFunction` (shared by fused rules)."""
    xf, gf = opmath(x), opmath(grad_y)
    s = torch.sigmoid(xf)
    return (gf * s * (1.0 + xf * (1.0 - s))).to(grad_y.dtype)


# --- Softplus ---
class SoftplusFunction(Rule):
    r"""Forward: y = log(1 + e^{b x}) / b if b x <= threshold else x.
    Backward: grad_x = grad_y s(b x) if b x <= threshold else grad_y.
    Saved: x                                Double backward: yes
    """

    compiled = ("softplus_fwd", "softplus_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, beta, threshold):
        if backend.use_cpp(x):  # the same rule, compiled (csrc/cpu/activation.cpp)
            return torch.ops.torch_bp.softplus_fwd(x, beta, threshold)
        xf = opmath(x)
        bx = xf * beta
        y = torch.where(bx > threshold, xf, torch.log1p(torch.exp(bx)) / beta)
        return y.to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.beta, ctx.threshold = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        if backend.use_cpp(x, grad_y):
            return torch.ops.torch_bp.softplus_bwd(grad_y, x, ctx.beta, ctx.threshold), None, None
        bx, gf = opmath(x) * ctx.beta, opmath(grad_y)
        grad_x = torch.where(bx > ctx.threshold, gf, gf * torch.sigmoid(bx))
        return grad_x.to(grad_y.dtype), None, None


# --- Tanh ---
class TanhFunction(Rule):
    r"""Forward: y = tanh(x).   Backward: grad_x = grad_y (1 - y^2).
    Saved: y                    Double backward: yes
    """

    compiled = ("tanh_fwd", "tanh_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        if backend.use_cpp(x):  # the same function, compiled (csrc/cpu/activation.cpp)
            return torch.ops.torch_bp.tanh_fwd(x)
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        if backend.use_cpp(y, grad_y):  # the same rule, compiled (csrc/cpu/activation.cpp)
            return torch.ops.torch_bp.tanh_bwd(grad_y, y)
        yf = opmath(y).conj()  # complex z: grad_z = grad_y conj(dy/dz), torch's convention; real: y itself
        return (opmath(grad_y) * (1.0 - yf * yf)).to(grad_y.dtype)


# --- Sigmoid ---
class SigmoidFunction(Rule):
    r"""Forward: y = 1 / (1 + e^{-x}).   Backward: grad_x = grad_y y (1 - y).
    Saved: y                             Double backward: yes
    """

    compiled = ("sigmoid_fwd", "sigmoid_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        if backend.use_cpp(x):  # the same function, compiled (csrc/cpu/activation.cpp)
            return torch.ops.torch_bp.sigmoid_fwd(x)
        return torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        if backend.use_cpp(y, grad_y):  # the same rule, compiled (csrc/cpu/activation.cpp)
            return torch.ops.torch_bp.sigmoid_bwd(grad_y, y)
        yf, gf = opmath(y).conj(), opmath(grad_y)  # conj: complex z, as tanh's
        return (gf * yf * (1.0 - yf)).to(grad_y.dtype)


# ======================================================================================
# --- Softmax / LogSoftmax --- (core: softmax family)
# ======================================================================================
def _last_dim(x: torch.Tensor, dim: int) -> bool:
    """True when ``dim`` names the last dim of ``x`` (where the compiled kernels apply)."""
    return x.dim() > 0 and dim in (-1, x.dim() - 1)


class SoftmaxFunction(Rule):
    r"""Softmax along ``dim``.

    Forward:   y = e^{x - max x} / sum(e^{x - max x})         (sums along dim)
    Backward:  grad_x = y * (grad_y - sum(grad_y * y))
    Saved:     y (the output; x is not needed)
    Double backward: yes (the backward is differentiable in y, whose node is this rule)
    """

    compiled = ("softmax_fwd", "softmax_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, dim):
        if _last_dim(x, dim) and backend.use_cpp(x, op="softmax_fwd"):  # csrc/cpu/activation.cpp
            return torch.ops.torch_bp.softmax_fwd(x)
        return torch.softmax(x, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.dim = inputs[1]
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        if _last_dim(y, ctx.dim) and backend.use_cpp(y, grad_y, op="softmax_bwd"):  # csrc/cpu/activation.cpp
            return torch.ops.torch_bp.softmax_bwd(grad_y, y), None
        yf, gf = opmath(y), opmath(grad_y)
        grad_x = yf * (gf - (gf * yf).sum(ctx.dim, keepdim=True))
        return grad_x.to(grad_y.dtype), None


class LogSoftmaxFunction(Rule):
    r"""Log-softmax along ``dim``.

    Forward:   y = (x - max x) - log(sum(e^{x - max x}))      (sums along dim)
    Backward:  grad_x = grad_y - e^y * sum(grad_y)
    Saved:     y (the output; e^y is the softmax, recomputed rather than saved)
    Double backward: yes (the backward is differentiable in y, whose node is this rule)
    NOTE: x - max x is exact, so y keeps full relative precision near 0 even for logits of
    magnitude 1e4; computing x - logsumexp(x) instead would lose ~|x| * eps there.
    """

    compiled = ("log_softmax_fwd", "log_softmax_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, dim):
        if _last_dim(x, dim) and backend.use_cpp(x, op="log_softmax_fwd"):  # csrc/cpu/activation.cpp
            return torch.ops.torch_bp.log_softmax_fwd(x)
        return torch.log_softmax(x, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.dim = inputs[1]
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        if _last_dim(y, ctx.dim) and backend.use_cpp(y, grad_y, op="log_softmax_bwd"):  # csrc/cpu/activation.cpp
            return torch.ops.torch_bp.log_softmax_bwd(grad_y, y), None
        gf = opmath(grad_y)
        grad_x = gf - torch.exp(opmath(y)) * gf.sum(ctx.dim, keepdim=True)
        return grad_x.to(grad_y.dtype), None


# ======================================================================================
# --- more elementwise activations: one pattern ---
# Each rule below saves x and its scalar options; its backward is grad_x = grad_y * y'(x),
# written as ``slope(x, *options) -> (mask, d)``: grad_x = grad_y * d where mask holds, 0
# elsewhere (mask None: everywhere; d None: d = 1). A mask is a select, as in torch's
# *_backward kernels, so an inf or NaN in grad_y reaches grad_x only where the mask holds.
# d is computed in float32 for bfloat16/float16 (opmath) and the product rounded once.
# The forwards follow torch's kernels (the same formula, in opmath where torch's is).
# ======================================================================================
def _save_x(ctx, inputs, output):
    """setup_context of the elementwise rules: save x, keep the scalar options."""
    ctx.save_for_backward(inputs[0])
    ctx.options = inputs[1:]


def _elementwise_grad(ctx, grad_y, slope):
    """The backward of every elementwise rule below: grad_y * d where mask holds, else 0."""
    (x,) = ctx.saved_tensors
    mask, d = slope(opmath(x), *ctx.options)
    g = grad_y if d is None else (opmath(grad_y) * d).to(grad_y.dtype)
    if mask is not None:
        g = torch.where(mask, g, g.new_zeros(()))
    return (g,) + (None,) * len(ctx.options)


def _in_opmath(fn):
    """fn evaluated in opmath and rounded once to x's dtype (as torch's float kernels)."""
    return lambda x, *options: fn(opmath(x), *options).to(x.dtype)


# --- ReLU6 / Hardtanh ---
class HardtanhFunction(Rule):
    r"""Forward:  y = min(max(x, lo), hi)        (relu6: lo = 0, hi = 6, as torch's relu6)
    Backward: grad_x = grad_y where lo < x < hi, else 0 (0 at both kinks, as torch; NaN
              x passes grad_y)
    Saved: x                                     Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(lambda x, lo, hi: torch.clamp(x, lo, hi).to(x.dtype))  # integer x stays integer
    setup_context = staticmethod(_save_x)

    @staticmethod
    def backward(ctx, grad_y):
        return _elementwise_grad(ctx, grad_y, lambda x, lo, hi: (~((x <= lo) | (x >= hi)), None))


# --- Hardswish / Hardsigmoid ---
class HardswishFunction(Rule):
    r"""Forward:  y = x min(max(x + 3, 0), 6) / 6
    Backward: grad_x = 0 if x <= -3;  grad_y (x / 3 + 1/2) if x < 3;  grad_y above (as torch: at
              x = -3 the left slope 0, at x = 3 the right slope 1)
    Saved: x                                     Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(_in_opmath(lambda x: x * torch.clamp(x + 3, 0, 6) / 6))
    setup_context = staticmethod(_save_x)

    @staticmethod
    def backward(ctx, grad_y):
        return _elementwise_grad(ctx, grad_y, lambda x: (~(x <= -3), torch.where(x < 3, x / 3 + 0.5, 1.0)))


class HardsigmoidFunction(Rule):
    r"""Forward:  y = min(max(x + 3, 0), 6) / 6
    Backward: grad_x = grad_y / 6 where -3 < x < 3, else 0
    Saved: x                                     Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(_in_opmath(lambda x: torch.clamp(x + 3, 0, 6) / 6))
    setup_context = staticmethod(_save_x)

    @staticmethod
    def backward(ctx, grad_y):
        return _elementwise_grad(ctx, grad_y, lambda x: ((x > -3) & (x < 3), 1.0 / 6))


# --- Hardshrink / Softshrink / Threshold ---
class HardshrinkFunction(Rule):
    r"""Forward:  y = 0 where -l <= x <= l, else x
    Backward: grad_x = 0 where -l <= x <= l, else grad_y
    Saved: x                                     Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(lambda x, lambd: x.masked_fill((x >= -lambd) & (x <= lambd), 0))
    setup_context = staticmethod(_save_x)

    @staticmethod
    def backward(ctx, grad_y):
        return _elementwise_grad(ctx, grad_y, lambda x, lambd: (~((x >= -lambd) & (x <= lambd)), None))


class SoftshrinkFunction(Rule):
    r"""Forward:  y = x - l if x > l;  x + l if x < -l;  0 otherwise (NaN stays NaN, as torch)
    Backward: grad_x = 0 where -l <= x <= l, else grad_y
    Saved: x                                     Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(_in_opmath(lambda x, lambd: torch.where(
        x > lambd, x - lambd, torch.where(x < -lambd, x + lambd, x * 0))))
    setup_context = staticmethod(_save_x)

    @staticmethod
    def backward(ctx, grad_y):
        return _elementwise_grad(ctx, grad_y, lambda x, lambd: (~((x >= -lambd) & (x <= lambd)), None))


class ThresholdFunction(Rule):
    r"""Forward:  y = v where x <= th, else x
    Backward: grad_x = 0 where x <= th, else grad_y (NaN x passes grad_y)
    Saved: x                                     Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(lambda x, threshold, value: x.masked_fill(x <= threshold, value))
    setup_context = staticmethod(_save_x)

    @staticmethod
    def backward(ctx, grad_y):
        return _elementwise_grad(ctx, grad_y, lambda x, threshold, value: (~(x <= threshold), None))


# --- SELU / CELU ---
class ScaledELUFunction(Rule):
    r"""torch's elu with its three coefficients: selu (a = 1.6733, s = 1.0507, i = 1) and
    celu (a = alpha, s = 1, i = 1 / alpha) are this rule, as in torch.

    Forward:  y = s x if x > 0, else s a (e^{i x} - 1)
    Backward: grad_x = grad_y s if x > 0, else grad_y s a i e^{i x}
    Saved: x                                     Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(_in_opmath(lambda x, a, s, i: torch.where(x > 0, x * s, torch.expm1(x * i) * (a * s))))
    setup_context = staticmethod(_save_x)

    @staticmethod
    def backward(ctx, grad_y):
        return _elementwise_grad(ctx, grad_y, lambda x, a, s, i: (
            None, torch.where(x > 0, s, torch.exp(x * i) * (a * s * i))))


# --- Mish ---
class MishFunction(Rule):
    r"""Forward:  y = x tanh(softplus(x)),  softplus(x) = log(1 + e^x)
    Backward: t = tanh(softplus(x)),  grad_x = grad_y (t + x s(x) (1 - t^2))
    Saved: x                                     Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(_in_opmath(lambda x: x * torch.tanh(torch.log1p(torch.exp(x)))))
    setup_context = staticmethod(_save_x)

    @staticmethod
    def backward(ctx, grad_y):
        def slope(x):
            t = torch.tanh(torch.log1p(torch.exp(x)))
            return None, t + x * torch.sigmoid(x) * (1 - t * t)
        return _elementwise_grad(ctx, grad_y, slope)


# --- LogSigmoid / Softsign / Tanhshrink ---
class LogSigmoidFunction(Rule):
    r"""Forward:  y = log s(x) = min(x, 0) - log(1 + e^{-|x|})   (finite for every finite x)
    Backward: grad_x = grad_y s(-x)
    Saved: x                                     Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(_in_opmath(lambda x: torch.clamp(x, max=0) - torch.log1p(torch.exp(-x.abs()))))
    setup_context = staticmethod(_save_x)

    @staticmethod
    def backward(ctx, grad_y):
        return _elementwise_grad(ctx, grad_y, lambda x: (None, torch.sigmoid(-x)))


class SoftsignFunction(Rule):
    r"""Forward:  y = x / (1 + |x|)
    Backward: grad_x = grad_y / (1 + |x|)^2
    Saved: x                                     Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(lambda x: x / (x.abs() + 1))
    setup_context = staticmethod(_save_x)

    @staticmethod
    def backward(ctx, grad_y):
        return _elementwise_grad(ctx, grad_y, lambda x: (None, (x.abs() + 1).pow(-2)))


class TanhshrinkFunction(Rule):
    r"""Forward:  y = x - tanh(x)
    Backward: grad_x = grad_y tanh(x)^2
    Saved: x                                     Double backward: yes
    """

    generate_vmap_rule = True
    forward = staticmethod(lambda x: x - torch.tanh(x))
    setup_context = staticmethod(_save_x)

    @staticmethod
    def backward(ctx, grad_y):
        return _elementwise_grad(ctx, grad_y, lambda x: (None, torch.tanh(x).pow(2)))


# --- GLU ---
class GLUFunction(Rule):
    r"""Gated linear unit: x split in halves a, b along ``dim``.

    Forward:  y = a s(b)
    Backward: grad_a = grad_y s(b),   grad_b = grad_y a s(b) (1 - s(b));   grad_x = cat(grad_a, grad_b)
    Saved: x                                     Double backward: yes
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, dim):
        a, b = opmath(x).chunk(2, dim)
        return (a * torch.sigmoid(b)).to(x.dtype)

    setup_context = staticmethod(_save_x)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        (dim,) = ctx.options
        a, b = opmath(x).chunk(2, dim)
        g, s = opmath(grad_y), torch.sigmoid(b)
        gs = g * s
        return torch.cat([gs, gs * a * (1 - s)], dim).to(grad_y.dtype), None


# --- PReLU ---
class PReLUFunction(Rule):
    r"""Forward:  y = x if x > 0, else w x    (w (1, C, 1, ...) broadcast over x, or one slope)
    Backward: grad_x = grad_y if x > 0, else grad_y w
              grad_w = sum over the broadcast dims of (0 if x > 0, else grad_y x)
    Saved: x, w                                  Double backward: yes
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight):
        return torch.where(x > 0, x, weight * x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        pos = x > 0
        if ctx.needs_input_grad[0]:
            grad_x = torch.where(pos, grad_y, weight * grad_y)
        if ctx.needs_input_grad[1]:
            grad_w = sum_to_size(torch.where(pos, grad_y.new_zeros(()), x * grad_y), weight.shape)
        return grad_x, grad_w


# --- RReLU ---
class RReLUFunction(Rule):
    r"""Randomized leaky ReLU in training mode (eval mode is :class:`LeakyReLUFunction` with the
    slope (lower + upper) / 2, as torch).

    Forward:  y = x r,  r = 1 where x > 0, else a slope drawn from U(lower, upper) per element
              (drawn by the functional, torch's draw; handed to the rule as ``noise``)
    Backward: grad_x = grad_y r
    Saved: r (x's dtype: the slopes are real numbers, not bits; x itself is not kept)
    Double backward: yes (linear in grad_y; r is a constant)
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, noise):
        return (opmath(x) * noise).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[1].to(inputs[0].dtype))

    @staticmethod
    def backward(ctx, grad_y):
        (noise,) = ctx.saved_tensors
        return grad_y * noise, None
