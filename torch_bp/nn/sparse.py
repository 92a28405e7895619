"""Embedding module: torch.nn's class with forward routed through torch_bp.functional."""
from __future__ import annotations

import torch

from .. import functional as F


class Embedding(torch.nn.Embedding):
    """Drop-in :class:`torch.nn.Embedding` (rule: :class:`torch_bp.ops.embedding.EmbeddingFunction`).

    Args, Shape, ``weight``, :meth:`from_pretrained`: as :class:`torch.nn.Embedding`
    (``from_pretrained`` is a classmethod, so it builds this class). ``sparse=True``
    raises ``NotImplementedError`` on forward: torch_bp gives dense gradients only.

    Example::

        >>> emb = torch_bp.nn.Embedding(10, 3, padding_idx=0)
        >>> emb(torch.tensor([[0, 2, 4]])).shape
        torch.Size([1, 3, 3])
    """

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)


class EmbeddingBag(torch.nn.EmbeddingBag):
    """Drop-in :class:`torch.nn.EmbeddingBag` (sum/mean/max, offsets, per_sample_weights, padding_idx; dense
    gradients). Backward: :class:`torch_bp.ops.embedding.EmbeddingBagFunction`."""

    def forward(self, input, offsets=None, per_sample_weights=None):
        return F.embedding_bag(input, self.weight, offsets, self.max_norm, self.norm_type, self.scale_grad_by_freq,
                               self.mode, self.sparse, per_sample_weights, self.include_last_offset,
                               self.padding_idx)
