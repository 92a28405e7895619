r"""Elementwise products: the gates, layer scales and constant scalings that real models write as ``a * b``.

SwiGLU's ``act(gate(x)) * up(x)`` (Llama, Mistral), ConvNeXt's layer scale ``gamma * x``, T5's
``hidden * d_model ** -0.5``: products of two tensors (broadcasting) or of a tensor and a number.
"""
from __future__ import annotations

import torch

from ._rule import Rule


# --- Mul ---
class MulFunction(Rule):
    r"""Elementwise product with broadcasting; ``b`` a tensor of ``a``'s dtype, or a Python number.

    Forward:   y = a * b
    Backward:  grad_a = sum_to(a)(grad_y * b)
               grad_b = sum_to(b)(grad_y * a)          (none for a number)
    Saved:     b if a needs a gradient, a if b does (a number is kept on ctx)
    Double backward: yes (the backward is built from differentiable ops)
    """

    @staticmethod
    def forward(a, b):
        return a * b

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, b = inputs
        ctx.number = None if isinstance(b, torch.Tensor) else b
        ctx.shapes = (a.shape, b.shape if ctx.number is None else None)
        need_a, need_b = ctx.needs_input_grad[0], ctx.number is None and ctx.needs_input_grad[1]
        ctx.save_for_backward(a if need_b else None, b if need_a and ctx.number is None else None)

    @staticmethod
    def backward(ctx, grad_y):
        a, b = ctx.saved_tensors
        a_shape, b_shape = ctx.shapes
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = (grad_y * (ctx.number if ctx.number is not None else b)).sum_to_size(a_shape)
        if ctx.number is None and ctx.needs_input_grad[1]:
            grad_b = (grad_y * a).sum_to_size(b_shape)
        return grad_a, grad_b


# --- Where ---
class WhereFunction(Rule):
    r"""Elementwise selection with broadcasting: attention masks applied to a learned bias (T5's
    relative position bias under the causal mask). ``a`` and ``b`` tensors of one dtype, or numbers.

    Forward:   y = where(c, a, b)
    Backward:  grad_a = sum_to(a)(where(c, grad_y, 0))
               grad_b = sum_to(b)(where(c, 0, grad_y))      (none for a number)
    Saved:     c (bool)          Double backward: yes (differentiable ops)
    """

    @staticmethod
    def forward(c, a, b):
        return torch.where(c, a, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        c, a, b = inputs
        ctx.shapes = tuple(t.shape if isinstance(t, torch.Tensor) else None for t in (a, b))
        ctx.save_for_backward(c)

    @staticmethod
    def backward(ctx, grad_y):
        (c,) = ctx.saved_tensors
        grad_a = grad_b = None
        zero = grad_y.new_zeros(())
        if ctx.needs_input_grad[1] and ctx.shapes[0] is not None:
            grad_a = torch.where(c, grad_y, zero).sum_to_size(ctx.shapes[0])
        if ctx.needs_input_grad[2] and ctx.shapes[1] is not None:
            grad_b = torch.where(c, zero, grad_y).sum_to_size(ctx.shapes[1])
        return None, grad_a, grad_b
