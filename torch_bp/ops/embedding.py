r"""Embedding: a lookup of rows of a weight matrix by index."""
from __future__ import annotations

import torch

from ._util import opmath


# --- Embedding ---
class EmbeddingFunction(torch.autograd.Function):
    r"""Rows of W selected by integer indices.

    Forward:   y[..., :] = W[i[...], :]                    i: (*) integer, W: (V, D), y: (*, D)
    Backward:  grad_W[v] = sum over positions n with i[n] = v of c_n * grad_y[n]
               with c_n = 0 where i[n] = padding_idx, else 1 / count(i[n]) under
               scale_grad_by_freq (count over this batch), else 1. No gradient for i.
    Saved:     i (W itself is not needed: the gradient is a scatter of grad_y rows)
    Double backward: yes (the backward is an index_add, linear in grad_y)
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(indices, weight, padding_idx, scale_grad_by_freq):
        flat = indices.reshape(-1)
        return weight.index_select(0, flat).reshape(*indices.shape, weight.shape[1])

    @staticmethod
    def setup_context(ctx, inputs, output):
        indices, weight, ctx.padding_idx, ctx.scale_grad_by_freq = inputs
        ctx.num_weights = weight.shape[0]
        ctx.save_for_backward(indices)

    @staticmethod
    def backward(ctx, grad_y):
        (indices,) = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return None, None, None, None
        flat = indices.reshape(-1)  # (n,)
        rows = opmath(grad_y.reshape(flat.shape[0], grad_y.shape[-1]))  # (n, D)
        if ctx.scale_grad_by_freq:
            counts = torch.bincount(flat, minlength=ctx.num_weights)  # (V,)
            rows = rows / counts.index_select(0, flat).unsqueeze(1).to(rows.dtype)
        if ctx.padding_idx is not None:
            rows = torch.where((flat == ctx.padding_idx).unsqueeze(1), 0, rows)
        grad_w = rows.new_zeros(ctx.num_weights, rows.shape[1]).index_add(0, flat, rows)
        return None, grad_w.to(grad_y.dtype), None, None
