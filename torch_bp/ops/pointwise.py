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
