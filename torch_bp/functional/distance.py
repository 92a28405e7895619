"""``torch_bp.functional``: pairwise_distance and cosine_similarity. See the package docstring."""
from __future__ import annotations

import torch

from ._checks import _real_only

from .._amp import autocast_inputs
from ..ops import distance as _dist


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    _real_only("pairwise_distance", x1, x2)
    torch.broadcast_shapes(x1.shape, x2.shape)  # RuntimeError naming the sizes, as torch
    if torch.bool in (x1.dtype, x2.dtype):
        raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not supported (pairwise_distance)")
    if max(x1.dim(), x2.dim()) == 0:  # as torch: the norm of a 0-d difference over no dim
        return _dist.PairwiseDistanceFunction.apply(x1.reshape(1), x2.reshape(1), float(p), float(eps), False)
    return _dist.PairwiseDistanceFunction.apply(x1, x2, float(p), float(eps), bool(keepdim))


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    x1, x2 = autocast_inputs("cosine_similarity", x1, x2)
    shape = torch.broadcast_shapes(x1.shape, x2.shape)
    nd = max(len(shape), 1)
    if not -nd <= dim < nd:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-nd}, {nd - 1}], but got {dim})")
    if not torch.promote_types(x1.dtype, x2.dtype).is_floating_point:
        raise RuntimeError(f"expected common dtype to be floating point, yet common dtype is "
                           f"{torch.promote_types(x1.dtype, x2.dtype)}")
    return _dist.CosineSimilarityFunction.apply(x1, x2, dim, float(eps))
