r"""Fused rules: two adjacent layers in one Function, for the fusion pass of ``torch_bp.convert``
(docs/fusion.md).

A fused rule computes what its two layers compute one after the other, with the layers' own
formulas (the unfused pair is its reference in tests), but as one node of the graph: fewer passes
over memory and fewer tensors kept for backward. Linear followed by ReLU/GELU/SiLU is
``linear_activation`` (:class:`torch_bp.ops.linear.BiasActivationFunction`, the bias and the
activation in one pass after the matmul).
"""
from __future__ import annotations

import functools

import torch

from .. import backend
from . import _lean
from .activation import relu_grad
from .normalization import BatchNormFunction
from ._rule import Rule


# --- BatchNorm + ReLU ---
def _bn_relu_compiled(x, weight, bias) -> bool:
    """The compiled kernels run for contiguous (N, C, ...) float32/float64 inputs, where z = bn(x) is kept
    unrounded, so that the backward's recomputed mask [z <= 0] is the forward's (bfloat16 rounds z first:
    the Python rule runs there)."""
    return (x.dim() > 2 and x.numel() > 0 and x.is_contiguous() and x.dtype in (torch.float32, torch.float64)
            and backend.use_cpp(x, weight, bias, op="batch_norm_relu_fwd"))


class _BatchNormCtx:
    """The context :meth:`BatchNormFunction.backward` reads, for batch norm's rule applied to relu's
    masked gradient (the rule is stated once, in ops/normalization.py)."""

    def __init__(self, saved, needs_input_grad, bias_dtype, training, eps):
        self.saved_tensors, self.needs_input_grad = saved, needs_input_grad
        self.bias_dtype, self.training, self.eps = bias_dtype, training, eps


class BatchNormReLUFunction(Rule):
    r"""relu(batch_norm(x)): batch normalization (batch statistics in training, given statistics in
    eval) followed by ReLU, as one node.

    Forward:   z, mu, v = batch_norm(x) exactly as :class:`BatchNormFunction` (same code)
               y = relu(z) = z where not z <= 0, else 0 (NaN passes, as ReLU)
    Backward:  grad_z = grad_y where not z <= 0, else 0       (ReLU's rule; z recomputed from x with the
               saved mu, v: batch norm's normalisation code with given statistics, bit-identical)
               grad_x, grad_w, grad_b = :class:`BatchNormFunction`'s backward of grad_z
    Saved:     compiled: x, w, b, mu, v: batch norm's, plus b to recompute z; no mask (the unfused pair
               keeps x and ReLU's mask). Python: x, w, mu, v and the mask [y <= 0] (bool), as the pair
    Lean:      records y = relu(bn(x)) (ops/_lean.py): a conv that follows saves x, kept here
    Double backward: yes (Python rule: ReLU's masking and batch norm's differentiable backward)
    Compiled (contiguous float32/float64): batch_norm_relu_fwd applies the relu in batch norm's
    normalisation pass; batch_norm_relu_bwd recomputes the mask with the forward's fmadd inside
    batch norm's two backward passes (csrc/cpu/normalization.cpp).
    The running statistics are updated by the functional, as for batch norm.
    """

    compiled = ("batch_norm_relu_fwd", "batch_norm_relu_bwd")  # csrc/cpu

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, training, eps):
        if _bn_relu_compiled(x, weight, bias):
            return torch.ops.torch_bp.batch_norm_relu_fwd(x, weight, bias, running_mean, running_var, eps)
        z, mean, var = BatchNormFunction.forward(x, weight, bias, running_mean, running_var, training, eps)
        return torch.relu(z), mean, var

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, _, _, ctx.training, ctx.eps = inputs
        y, mean, var = output
        ctx.mark_non_differentiable(mean, var)
        ctx.compiled = _bn_relu_compiled(x, weight, bias)   # the backward recomputes z as the forward made it
        ctx.bias_dtype = None if bias is None else bias.dtype
        # compiled: the backward recomputes the mask inside batch norm's passes; Python: the mask is kept, as
        # ReLU's Python rule keeps it (a recompute would be one more pass over x there)
        ctx.save_for_backward(x, weight, bias if ctx.compiled else y <= 0, mean, var)
        _lean.record(y, x, functools.partial(_bn_relu_again, weight, bias, mean, var, ctx.training, ctx.eps),
                     weight, bias, mean, var)

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        x, weight, saved, mean, var = ctx.saved_tensors   # saved: b (compiled) or the mask [y <= 0] (Python)
        if ctx.compiled:
            bias = saved
            want = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1],
                    bias is not None and ctx.needs_input_grad[2]]
            if not torch.is_grad_enabled() and grad_y.dtype == x.dtype:
                gx, gw, gb = torch.ops.torch_bp.batch_norm_relu_bwd(grad_y.contiguous(), x, weight, bias, mean, var,
                                                                     ctx.training, ctx.eps, want)
                return gx, gw, gb, None, None, None, None
            with torch.no_grad():   # y: the forward's, recomputed with its statistics (only its sign is used)
                y = torch.ops.torch_bp.batch_norm_relu_fwd(x, weight, bias, mean, var, ctx.eps)[0]
            grad_z = relu_grad(y, grad_y)   # relu(z) <= 0 exactly where z <= 0
        else:
            grad_z = grad_y.masked_fill(saved, 0)   # ReLU's rule, the comparison done in the forward
        bn = _BatchNormCtx((x, weight, mean, var), ctx.needs_input_grad, ctx.bias_dtype, ctx.training, ctx.eps)
        return BatchNormFunction.backward(bn, grad_z, None, None)


def _bn_relu_again(weight, bias, mean, var, training, eps, x):
    """y = relu(bn(x)) once more with the forward's statistics (a lean rule's recompute recipe): the same
    code, so y is bit-identical; through the rule (differentiable) under create_graph."""
    if torch.is_grad_enabled():
        return BatchNormReLUFunction.apply(x, weight, bias, mean, var, training, eps)[0]
    return BatchNormReLUFunction.forward(x, weight, bias, mean, var, training, eps)[0]
