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


class LinearCrossEntropy(torch.nn.Module):
    r"""A language-model head and its loss in one: ``cross_entropy(linear(input), target)``
    computed over chunks of rows, never materialising the (N, num_classes) logits
    (rule: :class:`torch_bp.ops.loss.LinearCrossEntropyFunction`). torch_bp only.

    Its parameters are :class:`torch.nn.Linear`'s (``weight`` (num_classes, in_features),
    ``bias`` (num_classes,)), initialised alike, so the state_dict of a trained
    ``nn.Linear(in_features, num_classes)`` head loads into it and back.

    Args:
        in_features: size of each input row (d).
        num_classes: number of classes (vocabulary size V).
        bias: learn an additive bias (default True).
        ignore_index, reduction, label_smoothing: as :class:`torch.nn.CrossEntropyLoss`.
        chunk_size, mode: see :func:`torch_bp.functional.linear_cross_entropy`.

    Shape:
        - input: (*, in_features);  target: (*) class indices
        - output: scalar, or (*) with ``reduction="none"``

    Example::

        >>> head = torch_bp.nn.LinearCrossEntropy(64, 1000)
        >>> head.load_state_dict(torch.nn.Linear(64, 1000).state_dict())
        >>> loss = head(torch.randn(8, 16, 64), torch.randint(0, 1000, (8, 16)))
        >>> loss.backward()
    """

    def __init__(self, in_features, num_classes, bias=True, device=None, dtype=None, ignore_index=-100,
                 reduction="mean", label_smoothing=0.0, chunk_size=None, mode="fused"):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.num_classes = in_features, num_classes
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing
        self.chunk_size, self.mode = chunk_size, mode
        self.weight = torch.nn.Parameter(torch.empty((num_classes, in_features), **factory))
        if bias:
            self.bias = torch.nn.Parameter(torch.empty(num_classes, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    reset_parameters = torch.nn.Linear.reset_parameters  # the same initialisation as nn.Linear

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, **kwargs) -> "LinearCrossEntropy":
        """A head sharing ``linear``'s parameters (no copy)."""
        head = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta", **kwargs)
        head.weight, head.bias = linear.weight, linear.bias
        return head

    def forward(self, input, target):
        # (*, d) rows flattened to (N, d), the 2-d input of torch's linear_cross_entropy
        loss = F.linear_cross_entropy(input.reshape(-1, input.shape[-1]) if input.dim() > 2 else input,
                                      self.weight, target.reshape(-1) if input.dim() > 2 else target,
                                      linear_bias=self.bias, ignore_index=self.ignore_index,
                                      reduction=self.reduction, label_smoothing=self.label_smoothing,
                                      chunk_size=self.chunk_size, mode=self.mode)
        return loss.reshape(target.shape) if self.reduction == "none" else loss

    def extra_repr(self):
        return (f"in_features={self.in_features}, num_classes={self.num_classes}, bias={self.bias is not None}, "
                f"reduction={self.reduction!r}, mode={self.mode!r}")


# --- more pointwise losses (rules: the pointwise pattern of torch_bp.ops.loss) ---
class BCELoss(torch.nn.BCELoss):
    """Drop-in :class:`torch.nn.BCELoss` (rule: :class:`torch_bp.ops.loss.BCELossFunction`)."""

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class KLDivLoss(torch.nn.KLDivLoss):
    """Drop-in :class:`torch.nn.KLDivLoss` (rule: :class:`torch_bp.ops.loss.KLDivLossFunction`)."""

    def forward(self, input, target):
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class PoissonNLLLoss(torch.nn.PoissonNLLLoss):
    """Drop-in :class:`torch.nn.PoissonNLLLoss` (rule: :class:`torch_bp.ops.loss.PoissonNLLLossFunction`)."""

    def forward(self, log_input, target):
        return F.poisson_nll_loss(log_input, target, log_input=self.log_input, full=self.full, eps=self.eps,
                                  reduction=self.reduction)


class GaussianNLLLoss(torch.nn.GaussianNLLLoss):
    """Drop-in :class:`torch.nn.GaussianNLLLoss` (rule: :class:`torch_bp.ops.loss.GaussianNLLLossFunction`)."""

    def forward(self, input, target, var):
        return F.gaussian_nll_loss(input, target, var, full=self.full, eps=self.eps, reduction=self.reduction)


class SoftMarginLoss(torch.nn.SoftMarginLoss):
    """Drop-in :class:`torch.nn.SoftMarginLoss` (rule: :class:`torch_bp.ops.loss.SoftMarginLossFunction`)."""

    def forward(self, input, target):
        return F.soft_margin_loss(input, target, reduction=self.reduction)


class HingeEmbeddingLoss(torch.nn.HingeEmbeddingLoss):
    """Drop-in :class:`torch.nn.HingeEmbeddingLoss` (rule: :class:`torch_bp.ops.loss.HingeEmbeddingLossFunction`)."""

    def forward(self, input, target):
        return F.hinge_embedding_loss(input, target, margin=self.margin, reduction=self.reduction)


class MarginRankingLoss(torch.nn.MarginRankingLoss):
    """Drop-in :class:`torch.nn.MarginRankingLoss` (rule: :class:`torch_bp.ops.loss.MarginRankingLossFunction`)."""

    def forward(self, input1, input2, target):
        return F.margin_ranking_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


class MultiLabelSoftMarginLoss(torch.nn.MultiLabelSoftMarginLoss):
    """Drop-in :class:`torch.nn.MultiLabelSoftMarginLoss`
    (rule: :class:`torch_bp.ops.loss.MultiLabelSoftMarginLossFunction`)."""

    def forward(self, input, target):
        return F.multilabel_soft_margin_loss(input, target, weight=self.weight, reduction=self.reduction)


class LinearCrossEntropyLoss(torch.nn.LinearCrossEntropyLoss):
    """Drop-in :class:`torch.nn.LinearCrossEntropyLoss` (its ``linear`` submodule, ``weight`` buffer and
    ``options``, as torch's): :func:`torch_bp.functional.linear_cross_entropy`, chunked over rows
    (rule: :class:`torch_bp.ops.loss.LinearCrossEntropyFunction`; K-dimensional heads and
    probability targets: our linear and cross_entropy rules)."""

    def forward(self, input, target):
        linear_weight = self.linear.weight.reshape((self.num_classes, *self.out_features, self.linear.in_features))
        linear_bias = (None if self.linear.bias is None
                       else self.linear.bias.reshape((self.num_classes, *self.out_features)))
        return F.linear_cross_entropy(input, linear_weight, target, linear_bias=linear_bias, weight=self.weight,
                                      reduction=self.reduction, ignore_index=self.ignore_index,
                                      label_smoothing=self.label_smoothing, options=self.options)


# --- row losses ---
class CosineEmbeddingLoss(torch.nn.CosineEmbeddingLoss):
    """Drop-in :class:`torch.nn.CosineEmbeddingLoss` (rule: :class:`torch_bp.ops.loss.CosineEmbeddingLossFunction`)."""

    def forward(self, input1, input2, target):
        return F.cosine_embedding_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


class TripletMarginLoss(torch.nn.TripletMarginLoss):
    """Drop-in :class:`torch.nn.TripletMarginLoss` (our pairwise_distance, then
    :class:`torch_bp.ops.loss.TripletHingeFunction`)."""

    def forward(self, anchor, positive, negative):
        return F.triplet_margin_loss(anchor, positive, negative, margin=self.margin, p=self.p, eps=self.eps,
                                     swap=self.swap, reduction=self.reduction)


class TripletMarginWithDistanceLoss(torch.nn.TripletMarginWithDistanceLoss):
    """Drop-in :class:`torch.nn.TripletMarginWithDistanceLoss` (default distance: our pairwise_distance;
    the hinge: :class:`torch_bp.ops.loss.TripletHingeFunction`)."""

    def forward(self, anchor, positive, negative):
        return F.triplet_margin_with_distance_loss(anchor, positive, negative,
                                                   distance_function=self.distance_function, margin=self.margin,
                                                   swap=self.swap, reduction=self.reduction)


class MultiMarginLoss(torch.nn.MultiMarginLoss):
    """Drop-in :class:`torch.nn.MultiMarginLoss` (rule: :class:`torch_bp.ops.loss.MultiMarginLossFunction`)."""

    def forward(self, input, target):
        return F.multi_margin_loss(input, target, p=self.p, margin=self.margin, weight=self.weight,
                                   reduction=self.reduction)


class MultiLabelMarginLoss(torch.nn.MultiLabelMarginLoss):
    """Drop-in :class:`torch.nn.MultiLabelMarginLoss` (rule: :class:`torch_bp.ops.loss.MultiLabelMarginLossFunction`)."""

    def forward(self, input, target):
        return F.multilabel_margin_loss(input, target, reduction=self.reduction)


class CTCLoss(torch.nn.CTCLoss):
    """Drop-in :class:`torch.nn.CTCLoss` (rule: :class:`torch_bp.ops.loss.CTCLossFunction`)."""

    def forward(self, log_probs, targets, input_lengths, target_lengths):
        return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, self.blank, self.reduction,
                          self.zero_infinity)


class AdaptiveLogSoftmaxWithLoss(torch.nn.AdaptiveLogSoftmaxWithLoss):
    """Drop-in :class:`torch.nn.AdaptiveLogSoftmaxWithLoss`: the same parameters and state_dict (``head``,
    ``tail`` of ``Sequential(Linear, Linear)``); ``forward`` returns torch's ``_ASMoutput(output, loss)``.

    Rules: :class:`torch_bp.ops.loss.AdaptiveLogSoftmaxFunction` (forward: the head, the tail clusters of the
    rows that need them, the log-softmaxes and the loss in one rule) and
    :class:`torch_bp.ops.loss.AdaptiveLogProbFunction` (``log_prob``). ``predict`` is torch's (an argmax, no
    gradient). The head and tail Linear modules are read for their weights only (their forward does not run).
    """

    def _tail_weights(self):
        return [w for seq in self.tail for w in (seq[0].weight, seq[1].weight)]

    def forward(self, input_, target_):
        return F.adaptive_log_softmax_with_loss(input_, target_, self.head.weight, self._tail_weights(),
                                                self.cutoffs, self.head.bias)

    def log_prob(self, input):
        return F.adaptive_log_prob(input, self.head.weight, self._tail_weights(), self.cutoffs, self.head.bias)
