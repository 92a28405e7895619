"""Distance modules: torch.nn's classes with forward routed through torch_bp.functional."""
from __future__ import annotations

import torch

from .. import functional as F


class PairwiseDistance(torch.nn.PairwiseDistance):
    """Drop-in :class:`torch.nn.PairwiseDistance` (rule: :class:`torch_bp.ops.distance.PairwiseDistanceFunction`)."""

    def forward(self, x1, x2):
        return F.pairwise_distance(x1, x2, self.norm, self.eps, self.keepdim)


class CosineSimilarity(torch.nn.CosineSimilarity):
    """Drop-in :class:`torch.nn.CosineSimilarity` (rule: :class:`torch_bp.ops.distance.CosineSimilarityFunction`)."""

    def forward(self, x1, x2):
        return F.cosine_similarity(x1, x2, self.dim, self.eps)
