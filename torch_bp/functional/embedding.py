"""``torch_bp.functional``: embedding. See the package docstring."""
from __future__ import annotations

import torch

from ..ops import embedding as _emb


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    if padding_idx is not None:  # as torch (which asserts)
        if padding_idx > 0 and padding_idx >= weight.size(0):
            raise AssertionError("Padding_idx must be within num_embeddings")
        if padding_idx < 0:
            if padding_idx < -weight.size(0):
                raise AssertionError("Padding_idx must be within num_embeddings")
            padding_idx = weight.size(0) + padding_idx
    if sparse:
        raise NotImplementedError("torch_bp embedding: sparse=True (sparse gradients) is not supported; "
                                  "use sparse=False for a dense gradient")
    if input.dtype not in (torch.int64, torch.int32):
        raise RuntimeError("Expected tensor for argument #1 'indices' to have one of the following scalar "
                           f"types: Long, Int; but got {input.dtype} instead")
    if weight.is_complex() and weight.requires_grad and torch.is_grad_enabled():  # as torch
        raise RuntimeError("embedding does not support automatic differentiation for outputs with complex dtype.")
    if weight.dim() != 2:
        raise RuntimeError(f"'weight' must be 2-D, got weight of size {list(weight.shape)}")
    if max_norm is not None:
        # As torch: the looked-up rows whose norm exceeds max_norm are rescaled in place,
        # outside autograd (the renorm is not part of the gradient).
        input = input.contiguous()
        with torch.no_grad():
            torch.embedding_renorm_(weight, input, max_norm, norm_type)
    return _emb.EmbeddingFunction.apply(input, weight, padding_idx, bool(scale_grad_by_freq))
