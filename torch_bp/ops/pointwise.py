r"""Elementwise products: the gates, layer scales and constant scalings that real models write as ``a * b``.

SwiGLU's ``act(gate(x)) * up(x)`` (Llama, Mistral), ConvNeXt's layer scale ``gamma * x``, T5's
``hidden * d_model ** -0.5``: products of two tensors (broadcasting) or of a tensor and a number.
"""
from __future__ import annotations

import functools

import torch

from . import _lean
from ._rule import Rule


# --- Mul ---
class MulFunction(Rule):
    r"""Elementwise product with broadcasting; ``b`` a tensor of ``a``'s dtype, or a Python number.

    Forward:   y = a * b
    Backward:  grad_a = sum_to(a)(grad_y * b)
               grad_b = sum_to(b)(grad_y * a)          (none for a number)
    Saved:     b if a needs a gradient, a if b does (a number is kept on ctx)
    Lean:      an operand to save that has a recompute recipe (SwiGLU's silu(gate): ops/_lean.py) is
               saved as the recipe's input and deps and recomputed (bit-identical) in the backward.
               y = a * b is recorded as a recipe when one operand has a recipe and the other is kept
               here (or is a number): y = f(h) * b, so that a linear after SwiGLU's product (the down
               projection) saves gate and up, kept here anyway, instead of the product.
    Double backward: yes (the backward is built from differentiable ops; a recomputed operand
               through its rule)
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
        keep = (a if need_b else None, b if need_a and ctx.number is None else None)
        lean = [_lean.recipe(t) for t in keep]   # None for None
        ctx.recompute = tuple(None if r is None else r[1] for r in lean)
        deps = [() if r is None else _lean.deps(t) for t, r in zip(keep, lean)]
        # the recipes' deps are saved too, so that an in-place change of them is caught in backward
        ctx.save_for_backward(*(t if r is None else r[0] for t, r in zip(keep, lean)), *deps[0], *deps[1])
        # y = f(h) * b (or a * f(h)): h kept by the rule that recorded the operand's recipe, the other
        # operand kept here (or a number)
        ra = _lean.recipe(a)
        if ra is not None and (ctx.number is not None or keep[1] is not None):
            _lean.record(output, ra[0], functools.partial(_mul_again, ra[1], b, False), *_lean.deps(a),
                         *keep[1:2])
        elif ctx.number is None and keep[0] is not None and (rb := _lean.recipe(b)) is not None:
            _lean.record(output, rb[0], functools.partial(_mul_again, rb[1], a, True), *_lean.deps(b), a)

    @staticmethod
    def backward(ctx, grad_y):
        a, b = ctx.saved_tensors[:2]
        fa, fb = ctx.recompute
        a = a if fa is None else fa(a)
        b = b if fb is None else fb(b)
        a_shape, b_shape = ctx.shapes
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = (grad_y * (ctx.number if ctx.number is not None else b)).sum_to_size(a_shape)
        if ctx.number is None and ctx.needs_input_grad[1]:
            grad_b = (grad_y * a).sum_to_size(b_shape)
        return grad_a, grad_b


def _mul_again(f, other, left: bool, h: torch.Tensor) -> torch.Tensor:
    """y = f(h) * other (``other * f(h)`` if ``left``) once more (a lean rule's recompute recipe): the
    forward's product of the same values, so y is bit-identical; through the rule under create_graph."""
    x = f(h)
    a, b = (other, x) if left else (x, other)
    return MulFunction.apply(a, b) if torch.is_grad_enabled() else a * b


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
