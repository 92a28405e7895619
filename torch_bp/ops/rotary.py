r"""Rotary position embedding (RoPE), as Llama, Mistral, Qwen and GPT-NeoX apply it.

``rotate_half`` splits the last dim D at h = D // 2 (m = D - h) and swaps the halves with a sign:
R(x) = cat(-x[h:], x[:h]). It is linear, and its transpose is R^T(u) = cat(u[m:], -u[:m])
(= -R(u) for even D). One Function rotates the query and the key of a layer together.
"""
from __future__ import annotations

import torch
from ._util import first_order_only

from ._rule import Rule


def rotate_half(x):
    """R(x) = cat(-x[..., h:], x[..., :h]) with h = D // 2 (the Hugging Face ``rotate_half``)."""
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rotate_half_t(u):
    """R^T(u) = cat(u[..., m:], -u[..., :m]) with m = D - D // 2: the transpose of :func:`rotate_half`."""
    m = u.shape[-1] - u.shape[-1] // 2
    return torch.cat((u[..., m:], -u[..., :m]), dim=-1)


# --- RotaryEmbedding ---
class RotaryEmbeddingFunction(Rule):
    r"""Rotary position embedding of a query and a key, one Function for both.

    Forward:   q' = q * cos + R(q) * sin,     k' = k * cos + R(k) * sin
               (cos, sin broadcast against q and k, e.g. (B, 1, T, D) against (B, H, T, D))
    Backward:  grad_q = sum_to(q)(grad_q' * cos + R^T(grad_q' * sin))       (the same for k)
               grad_cos = sum_to(cos)(grad_q' * q + grad_k' * k)
               grad_sin = sum_to(sin)(grad_q' * R(q) + grad_k' * R(k))
    Saved:     cos, sin; q and k only when cos or sin needs a gradient (position tables computed
               from a buffer, as in every Hugging Face model, do not)
    Double backward: no (first_order_only: create_graph=True raises)
    """

    @staticmethod
    def forward(q, k, cos, sin):
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, cos, sin = inputs
        need = ctx.needs_input_grad
        for i, out in enumerate(output):  # as torch: q' needs no grad if neither q, cos nor sin does
            if not (need[i] or need[2] or need[3]):
                ctx.mark_non_differentiable(out)
        ctx.shapes = (q.shape, k.shape, cos.shape, sin.shape)
        qk = (q, k) if ctx.needs_input_grad[2] or ctx.needs_input_grad[3] else (None, None)
        ctx.save_for_backward(cos, sin, *qk)

    @staticmethod
    @first_order_only
    def backward(ctx, grad_q, grad_k):
        cos, sin, q, k = ctx.saved_tensors
        q_shape, k_shape, cos_shape, sin_shape = ctx.shapes
        grads = [None, None, None, None]
        for i, (g, shape) in enumerate(((grad_q, q_shape), (grad_k, k_shape))):
            if ctx.needs_input_grad[i] and g is not None:
                grads[i] = (g * cos + rotate_half_t(g * sin)).sum_to_size(shape)
        pairs = [(g, x) for g, x in ((grad_q, q), (grad_k, k)) if g is not None]
        if ctx.needs_input_grad[2]:
            grads[2] = sum(g * x for g, x in pairs).sum_to_size(cos_shape)
        if ctx.needs_input_grad[3]:
            grads[3] = sum(g * rotate_half(x) for g, x in pairs).sum_to_size(sin_shape)
        return tuple(grads)
