"""MultiheadAttention: torch.nn's class with forward routed through our linear and attention rules."""
from __future__ import annotations

import torch
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear as _TorchOutProj

from .. import functional as F


class NonDynamicallyQuantizableLinear(_TorchOutProj):
    """The out-projection of :class:`MultiheadAttention` (torch's class of that name, our linear rule)."""

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)


class MultiheadAttention(torch.nn.MultiheadAttention):
    r"""Drop-in :class:`torch.nn.MultiheadAttention`: in/out projections by
    :class:`torch_bp.ops.linear.LinearFunction`, attention by
    :class:`torch_bp.ops.attention.ScaledDotProductAttentionFunction` (``need_weights=False``:
    saves O(L + S) per head) or :class:`torch_bp.ops.attention.AttentionWeightsFunction`
    (``need_weights=True``: the weights are returned, so the (L, S) matrix is kept).

    Args, Shape, parameters (``in_proj_weight`` or ``q_proj_weight``/``k_proj_weight``/
    ``v_proj_weight``, ``in_proj_bias``, ``bias_k``, ``bias_v``, ``out_proj``): as
    :class:`torch.nn.MultiheadAttention`. torch's fused inference fast path is never taken:
    every call runs our rules. With dropout, our masks are not torch's (same distribution).

    Example::

        >>> mha = torch_bp.nn.MultiheadAttention(16, 4, batch_first=True)
        >>> x = torch.randn(2, 5, 16)
        >>> out, w = mha(x, x, x)
        >>> out.shape, w.shape
        (torch.Size([2, 5, 16]), torch.Size([2, 5, 5]))
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.out_proj.__class__ = NonDynamicallyQuantizableLinear

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        return F._multi_head_attention(
            query, key, value, self.embed_dim, self.num_heads, self.in_proj_weight, self.in_proj_bias,
            self.bias_k, self.bias_v, self.add_zero_attn, self.dropout, self.out_proj.weight, self.out_proj.bias,
            self.training, key_padding_mask, need_weights, attn_mask, not self._qkv_same_embed_dim,
            self.q_proj_weight, self.k_proj_weight, self.v_proj_weight, None, None, average_attn_weights,
            is_causal, batch_first=self.batch_first)


def _swap(module, cls):
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)
    return new


# MultiheadAttention's out-projection is torch's NonDynamicallyQuantizableLinear (a Linear
# subclass, so not matched by the Linear row's class swap): its converter is declared in
# torch_bp.registry.CONVERTERS with these two functions.
def convert_out_proj(module):
    return _swap(module, NonDynamicallyQuantizableLinear)


def revert_out_proj(module):
    return _swap(module, _TorchOutProj)
