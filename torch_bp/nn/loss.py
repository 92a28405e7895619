"""Loss modules: torch.nn's classes with forward routed through torch_bp.functional.

Same constructors, ``reduction`` handling (incl. the legacy ``size_average``/``reduce``),
and buffers (``weight``, ``pos_weight``) as torch.nn's, so state_dicts load both ways.
"""
from __future__ import annotations

import torch

from .. import functional as F


class MSELoss(torch.nn.MSELoss):
    """Drop-in :class:`torch.nn.MSELoss` (rule: :class:`torch_bp.ops.loss.MSELossFunction`)."""

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(torch.nn.L1Loss):
    """Drop-in :class:`torch.nn.L1Loss` (rule: :class:`torch_bp.ops.loss.L1LossFunction`)."""

    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)


class HuberLoss(torch.nn.HuberLoss):
    """Drop-in :class:`torch.nn.HuberLoss` (rule: :class:`torch_bp.ops.loss.HuberLossFunction`)."""

    def forward(self, input, target):
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class SmoothL1Loss(torch.nn.SmoothL1Loss):
    """Drop-in :class:`torch.nn.SmoothL1Loss` (rule: :class:`torch_bp.ops.loss.HuberLossFunction`)."""

    def forward(self, input, target):
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    r"""Drop-in :class:`torch.nn.CrossEntropyLoss`: log-softmax and NLL fused in one rule
    (:class:`torch_bp.ops.loss.CrossEntropyFunction`, or ``SoftCrossEntropyFunction`` for
    class-probability targets).

    Args, Shape: as :class:`torch.nn.CrossEntropyLoss` (input (C), (N, C) or (N, C, d1, ...);
    target class indices or class probabilities).

    Example::

        >>> loss = torch_bp.nn.CrossEntropyLoss(label_smoothing=0.1)
        >>> loss(torch.randn(3, 5, requires_grad=True), torch.tensor([1, 0, 4])).backward()
    """

    def forward(self, input, target):
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(torch.nn.NLLLoss):
    """Drop-in :class:`torch.nn.NLLLoss` (rule: :class:`torch_bp.ops.loss.NLLLossFunction`)."""

    def forward(self, input, target):
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    """Drop-in :class:`torch.nn.BCEWithLogitsLoss` (rule: :class:`torch_bp.ops.loss.BCEWithLogitsFunction`)."""

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, pos_weight=self.pos_weight,
                                                  reduction=self.reduction)
