r"""Distances between rows: pairwise_distance (p-norm of a difference) and cosine_similarity.

Both broadcast x1 against x2; each gradient is summed back to its input's shape. Their
backwards are differentiable tensor ops of the saved inputs and output (double backward: yes).
"""
from __future__ import annotations

import math

import torch

from ._util import opmath, sum_to_size
from ._rule import Rule


# --- PairwiseDistance ---
def _norm_grad(d, y, g, p):
    """g * d||d||_p / dd, as torch's norm backward (0 where the norm is 0; p = inf: shared evenly
    among the entries of largest |d|)."""
    if p == 1:
        return torch.sgn(d) * g
    if math.isinf(p):  # the largest |d| found in d's own precision (y may be rounded to bfloat16)
        top = (d.abs() == d.abs().amax(-1, keepdim=True)).to(d.dtype)
        return torch.sgn(d) * top * (g / top.sum(-1, keepdim=True))
    if p < 1:
        scaled = torch.sgn(d) * d.abs().pow(p - 1).masked_fill(d == 0, 0)
        return scaled * g * y.pow(1 - p)
    scaled = torch.sgn(d) * d.abs().pow(p - 1) if p < 2 else d * d.abs().pow(p - 2)
    return scaled * (g / y.pow(p - 1)).masked_fill(y == 0, 0)


class PairwiseDistanceFunction(Rule):
    r"""Forward:   d = x1 - x2 + eps (broadcast),   y = ||d||_p over the last dim
    Backward:  grad_d = g d |d|^{p-2} / y^{p-1}   (0 where y = 0; p = 1: g sign(d); p = inf: g sign(d)
               on the entries of largest |d|, shared evenly; p = 0: none, as torch; 0 < p < 1: 0 where d = 0)
               grad_x1 = grad_d,   grad_x2 = -grad_d    (each summed to its shape)
    Saved:     x1, x2, y                 Double backward: yes
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x1, x2, p, eps, keepdim):
        d = opmath(x1) - opmath(x2) + eps
        dtype = torch.promote_types(x1.dtype, x2.dtype)
        return torch.linalg.vector_norm(d, p, -1, keepdim).to(dtype if dtype.is_floating_point else d.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x1, x2, ctx.p, ctx.eps, ctx.keepdim = inputs
        ctx.save_for_backward(x1, x2, output)

    @staticmethod
    def backward(ctx, g):
        x1, x2, y = ctx.saved_tensors
        if ctx.p == 0:  # a count of nonzero entries: no gradient, as torch (None, not zeros)
            return None, None, None, None, None
        d = opmath(x1) - opmath(x2) + ctx.eps
        yf, gf = opmath(y), opmath(g)
        if not ctx.keepdim:
            yf, gf = yf.unsqueeze(-1), gf.unsqueeze(-1)
        gd = _norm_grad(d, yf, gf, ctx.p)
        grad_x1 = sum_to_size(gd, x1.shape).to(x1.dtype) if ctx.needs_input_grad[0] else None
        grad_x2 = sum_to_size(-gd, x2.shape).to(x2.dtype) if ctx.needs_input_grad[1] else None
        return grad_x1, grad_x2, None, None, None


# --- CosineSimilarity ---
def _common(x1, x2):
    """x1, x2 in their common (floating) dtype, opmath, broadcast (torch accepts an integer side)."""
    dtype = torch.promote_types(x1.dtype, x2.dtype)
    return torch.broadcast_tensors(opmath(x1.to(dtype)), opmath(x2.to(dtype)))


class CosineSimilarityFunction(Rule):
    r"""Forward:   n_k = ||x_k|| over ``dim``,  c_k = max(n_k, eps) (a clamp without gradient, as torch),
               y = sum((x1 / c1) (x2 / c2)) over ``dim``
    Backward:  grad_x1 = g (x2 / (c1 c2) - y x1 / (n1 c1)),  grad_x2 = g (x1 / (c1 c2) - y x2 / (n2 c2))
               (the second term 0 where n_k = 0, as torch's norm backward); each summed to its shape
    Saved:     x1, x2, y                 Double backward: yes
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x1, x2, dim, eps):
        a, b = _common(x1, x2)
        c1 = torch.linalg.vector_norm(a, 2, dim, True).clamp_min(eps)
        c2 = torch.linalg.vector_norm(b, 2, dim, True).clamp_min(eps)
        return ((a / c1) * (b / c2)).sum(dim).to(torch.promote_types(x1.dtype, x2.dtype))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x1, x2, ctx.dim, ctx.eps = inputs
        ctx.save_for_backward(x1, x2, output)

    @staticmethod
    def backward(ctx, g):
        x1, x2, y = ctx.saved_tensors
        a, b = _common(x1, x2)
        n1, n2 = torch.linalg.vector_norm(a, 2, ctx.dim, True), torch.linalg.vector_norm(b, 2, ctx.dim, True)
        c1, c2 = n1.clamp_min(ctx.eps), n2.clamp_min(ctx.eps)
        gf, yf = opmath(g).unsqueeze(ctx.dim), opmath(y).unsqueeze(ctx.dim)
        grads = []
        for x, u, v, n, c, need in ((x1, a, b, n1, c1, ctx.needs_input_grad[0]),
                                    (x2, b, a, n2, c2, ctx.needs_input_grad[1])):
            if not need:
                grads.append(None)
                continue
            radial = (yf * u / (n * c)).masked_fill(n == 0, 0)
            grads.append(sum_to_size(gf * (v / (c1 * c2) - radial), x.shape).to(x.dtype))
        return grads[0], grads[1], None, None
