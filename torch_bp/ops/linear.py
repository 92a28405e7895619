"""Linear layer: y = x W^T + b."""
from __future__ import annotations

import torch


# --- Linear ---
class LinearFunction(torch.autograd.Function):
    r"""Affine map over the last dim.

    Forward:   y = x W^T + b                      x: (*, in), W: (out, in), b: (out,)
    Backward:  grad_x = grad_y W
               grad_W = grad_y^T x                (rows of all leading dims summed)
               grad_b = sum of grad_y over all leading dims
    Saved:     x, W                               Double backward: yes (matmuls are differentiable)
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias):
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        if bias is None:
            y = x2.matmul(weight.t())
        else:
            y = torch.addmm(bias, x2, weight.t())  # one rounding, as torch's addmm
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        g2 = grad_y.reshape(-1, grad_y.shape[-1])  # (N, out)
        if ctx.needs_input_grad[0]:
            grad_x = grad_y.matmul(weight)
        if ctx.needs_input_grad[1]:
            grad_w = g2.t().matmul(x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b
